"""Stage: ``x.data`` read in a loop body becomes ``x.detach()``::

    perm = perm.data    ->    perm = perm.detach()

``torch.vmap`` refuses ``.data`` ("accessing `data` under vmap transform is not allowed"); both
give a tensor with the same values, dtype and shape, sharing ``x``'s memory, with no gradient.
They differ only in what autograd sees of in-place writes through them, so a ``.data`` that is
written through (``x.data[k] = v``, ``x.data.mul_(2)``, ``x.data += 1``) stays as written; a
name bound to ``x.detach()`` is a view to the later stages, which refuse writes into views.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, Transformer, replace
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    plan.body = _Detach(_written_through(plan.body)).statements(plan.body)
    return plan


class _Detach(Transformer):
    def __init__(self, written: set[ast.expr]):
        self.written = written

    def visit_For(self, node: ast.For) -> ast.For:
        return node  # an inner loop kept as written stays as written

    def visit_Attribute(self, node: ast.Attribute) -> ast.expr:
        self.generic_visit(node)
        if node.attr != "data" or not isinstance(node.ctx, ast.Load) or node in self.written:
            return node
        return replace("x.detach()", loc=node, x=node.value)


def _written_through(body: list[ast.stmt]) -> set[ast.expr]:
    """The ``x.data`` nodes an in-place method, a subscript or augmented assignment writes
    through."""
    written = set()
    for stmt in body:
        for n in ast.walk(stmt):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) \
                    and n.func.attr.endswith("_") and not n.func.attr.startswith("_"):
                written.add(n.func.value)
            targets = n.targets if isinstance(n, ast.Assign) else \
                [n.target] if isinstance(n, ast.AugAssign) else []
            for t in targets:
                written.add(t.value if isinstance(t, ast.Subscript) else t)
    return written
