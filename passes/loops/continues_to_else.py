"""A top-level ``if`` of a loop body whose branch ends with ``continue`` becomes the ``if``/``else``
it equals, its other branch holding the statements after it::

    if c:                        if c:
        A                            A
        continue       ->        else:
    B                                B

The same statements run, in the same order, for every iteration. Used by loop distribution
(every such ``if``) and by ``merge_branch_appends`` (only those it can then merge); a
``continue`` elsewhere is left.
"""
from __future__ import annotations

import ast
from typing import Callable


def continues_to_else(stmts: list[ast.stmt],
                      wanted: Callable[[ast.If, list[ast.stmt]], bool] = lambda s, rest: True
                      ) -> list[ast.stmt]:
    """``stmts`` with each top-level ``if`` whose branch ends with ``continue`` and that
    ``wanted(if, statements after it)`` accepts (those statements already rewritten) as
    ``if``/``else`` (new nodes; ``stmts`` is not changed)."""
    for k, s in enumerate(stmts):
        if not isinstance(s, ast.If):
            continue
        rest = continues_to_else(stmts[k + 1:], wanted)
        if not wanted(s, rest):
            return stmts[:k + 1] + rest
        if s.body and isinstance(s.body[-1], ast.Continue):
            body, orelse = s.body[:-1], s.orelse + rest
        elif s.orelse and isinstance(s.orelse[-1], ast.Continue):
            body, orelse = s.body + rest, s.orelse[:-1]
        else:
            return stmts[:k + 1] + rest
        new = ast.If(test=s.test, body=body or [ast.copy_location(ast.Pass(), s)], orelse=orelse)
        return stmts[:k] + [ast.copy_location(new, s)]
    return stmts
