"""Instrumentation: count which branch of each vectorized loop's runtime check runs.

Not a pipeline pass: the runtime applies it to a copy of the rewritten function that it calls
only on the first call of an input signature (never on the steady path, never compiled), with
``counter`` a closure binding to the function's ``Report``::

    if a and b:                                      if a and b:
        'optimize_loss: loop at line 7 vectorized'       'optimize_loss: loop at line 7 vectorized'
        <vectorized>                          ->         counter.loop_ran(7, True)
    else:                                                try:
        <the original loop>                                  <vectorized>
                                                         except Exception as error:
                                                             counter.loop_failed(7, error)
                                                             raise
                                                     else:
                                                         counter.loop_ran(7, False,
                                                             'check `a` was false' if not a else
                                                             'check `b` was false')
                                                         <the original loop>

The reason re-evaluates the check's conjuncts in order, each only when those before it held, as
the check itself did.
"""
from __future__ import annotations

import ast
import re

from .ast_tools import Transformer, clone, replace, unparse
from .loops.runtime_checks import MARKER, is_vectorized_guard

_LINE = re.compile(re.escape(MARKER).replace(re.escape("{}"), r"(\d+)"))
ERROR = "_optimize_loss_error"  # the caught exception, in the instrumented copy only
_SHOWN = 80  # characters of a conjunct quoted in the reason


def instrument(tree: ast.Module, counter: str) -> ast.Module:
    """Every vectorized guard of ``tree`` counts its runs into ``counter`` (see the docstring)."""
    return _Count(counter).visit(tree)


class _Count(Transformer):
    def __init__(self, counter: str):
        self.counter = counter

    def visit_If(self, node: ast.If) -> ast.If:
        self.generic_visit(node)  # inner loops first: in the vectorized body and in the original
        if not is_vectorized_guard(node):
            return node
        line = int(_LINE.fullmatch(node.body[0].value.value).group(1))
        marker, body = node.body[0], node.body[1:]
        ran = replace(f"c.loop_ran({line}, True)", loc=node, c=self.counter)
        guarded = replace(f"try:\n    pass\nexcept Exception as {ERROR}:\n"
                          f"    c.loop_failed({line}, {ERROR})\n    raise", loc=node, c=self.counter)
        guarded[0].body = body
        kept = replace(f"c.loop_ran({line}, False, reason)", loc=node, c=self.counter,
                       reason=_first_false(node.test))
        node.body = [marker, ast.Expr(ran)] + guarded
        node.orelse = [ast.Expr(kept)] + node.orelse
        return node


def _first_false(test: ast.expr) -> ast.expr:
    """An expression naming the first conjunct of ``test`` that is false (``test`` is false)."""
    conjuncts = test.values if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And) else [test]
    reason: ast.expr = ast.Constant(_why(conjuncts[-1]))
    for conjunct in reversed(conjuncts[:-1]):
        reason = ast.IfExp(ast.UnaryOp(ast.Not(), clone(conjunct)), ast.Constant(_why(conjunct)),
                           reason)
    return reason


def _why(conjunct: ast.expr) -> str:
    text = unparse(conjunct)
    return f"check `{text if len(text) <= _SHOWN else text[:_SHOWN - 3] + '...'}` was false"
