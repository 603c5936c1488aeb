"""Stage: unit slices at the loop index become an index and an ``unsqueeze``.

vmap cannot slice at a batched offset, but it can index::

    x[:, i:i + 1]    ->    x[:, i].unsqueeze(1)

Only loads with slices before the unit slice; ``x[i:i + 2]`` and ``x[k:k + 1]`` (``k`` not the
index) stay.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, Transformer, is_int, is_name, replace
from .loop_dataflow import write_entries
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    unit = _UnitSlices(plan.iteration.index, ctx)
    plan.body = [unit.visit(s) for s in plan.body]
    return plan


class _UnitSlices(Transformer):
    def __init__(self, index: str, ctx: PassContext):
        self.index = index
        self.ctx = ctx

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        entries = write_entries(node)
        at = [k for k, x in enumerate(entries) if self._unit(x)]
        if not isinstance(node.ctx, ast.Load) or len(at) != 1 \
                or not all(isinstance(x, ast.Slice) for x in entries[:at[0]]):
            return node
        k = at[0]
        entries[k] = ast.Name(self.index, ast.Load())
        node.slice = ast.Tuple(entries, ast.Load()) if len(entries) > 1 else entries[0]
        return replace(f"x.unsqueeze({k})", loc=node, x=node)

    def _unit(self, x: ast.expr) -> bool:
        if not (isinstance(x, ast.Slice) and x.step is None and is_name(x.lower, self.index)):
            return False
        up = x.upper
        return isinstance(up, ast.BinOp) and isinstance(up.op, ast.Add) and (
            (is_name(up.left, self.index) and is_int(up.right, 1))
            or (is_int(up.left, 1) and is_name(up.right, self.index)))
