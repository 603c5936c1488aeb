"""Instrumentation: a copy of the rewritten function in which the vectorized loops at given lines
run as written.

Not a pipeline pass: the runtime applies it to make more forms for ``rewrite.keep_faster`` to
time, when a vectorized loop ran its vectorized form more than once in one call (inside a loop
that stays a loop, or in a helper called from one): each run pays the runtime check and the
``torch.vmap`` set-up again, which for a few iterations can cost more than the loop::

    if <check>:
        'optimize_loss: loop at line 7 vectorized'      ->    <the original loop>
        <vectorized>
    else:
        <the original loop>
"""
from __future__ import annotations

import ast

from .ast_tools import Transformer
from .loops.runtime_checks import guard_line, is_vectorized_guard


def as_written(tree: ast.Module, lines: frozenset[int]) -> ast.Module:
    """``tree`` with the vectorized guards of the loops at ``lines`` replaced by their loops."""
    return _AsWritten(lines).visit(tree)


class _AsWritten(Transformer):
    def __init__(self, lines: frozenset[int]):
        self.lines = lines

    def visit_If(self, node: ast.If) -> ast.stmt | list[ast.stmt]:
        self.generic_visit(node)
        if is_vectorized_guard(node) and guard_line(node) in self.lines:
            return node.orelse
        return node
