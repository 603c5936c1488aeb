"""Stage: numpy's ``newaxis`` in a loop body becomes ``None``, the object it is::

    o = o[np.newaxis, :]              ->    o = o[None, :]
    t = targets[np.newaxis, i]        ->    t = targets[None, i]

Older losses spell a new axis so. The later stages know ``None`` in an index (a new dim of
size 1; ``row_slices_to_params`` reads ``targets[None, i]`` as the row ``targets[i]`` with a
new dim in front), but an attribute there is a value they cannot read, which the runtime check
then requires to be an int: the loop always ran as written. Only an attribute ``newaxis`` of a
name bound to the numpy module in the function's globals.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, Transformer
from .loop_dataflow import resolve_call
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    plan.body = _NewAxis(ctx).statements(plan.body)
    return plan


class _NewAxis(Transformer):
    def __init__(self, ctx: PassContext):
        self.ctx = ctx

    def visit_Attribute(self, node: ast.Attribute) -> ast.expr:
        if node.attr == "newaxis" and isinstance(node.ctx, ast.Load) \
                and resolve_call(node, self.ctx) == "numpy.newaxis":
            return ast.copy_location(ast.Constant(None), node)
        return self.generic_visit(node)
