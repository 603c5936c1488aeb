"""Stage: a ``with torch.no_grad():`` block of plain assignments in a loop body becomes the same
assignments, each value detached::

    with torch.no_grad():                  w = torch.sigmoid(x[i]).mean()
        w = torch.sigmoid(x[i]).mean()  ->  w = _detached(w)

A value computed with gradients enabled and then detached has the same value, dtype and shape as
one computed under ``no_grad``, and no gradient flows through it either (``passes/grad_free.py``:
every tensor in it, in tuples and ``torch.return_types`` too; numbers stay numbers). Taken only
when the block is nothing but ``name = <expr>`` statements with no in-place method call
(``x.add_(...)``) and no ``out=``: under ``no_grad`` an in-place update of a leaf that requires
gradients (a running centre, a memory bank) is allowed, with gradients enabled it raises. The
``with`` must be ``torch.no_grad()`` itself, with no ``as``.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, Transformer, replace, walk
from ..grad_free import detached
from .loop_dataflow import resolve_call
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    plan.body = _Unwrap(ctx).statements(plan.body)
    return plan


class _Unwrap(Transformer):
    def __init__(self, ctx: PassContext):
        self.ctx = ctx

    def visit_For(self, node: ast.For) -> ast.For:
        return node  # an inner loop kept as written stays as written

    def visit_With(self, node: ast.With) -> ast.stmt | list[ast.stmt]:
        if not self._plain_no_grad(node):
            return node
        out = []
        for s in node.body:
            name = s.targets[0].id
            out += [s] + replace("v = f(v)", loc=s, v=name,
                                 f=self.ctx.bind(detached, "detached"))
        return out

    def _plain_no_grad(self, node: ast.With) -> bool:
        if len(node.items) != 1 or node.items[0].optional_vars is not None:
            return False
        item = node.items[0].context_expr
        if not (isinstance(item, ast.Call) and not item.args and not item.keywords
                and resolve_call(item.func, self.ctx) == "torch.no_grad"):
            return False
        return all(isinstance(s, ast.Assign) and len(s.targets) == 1
                   and isinstance(s.targets[0], ast.Name) and not _in_place(s.value)
                   for s in node.body)


def _in_place(value: ast.expr) -> bool:
    """A method call that writes its receiver, or a call with ``out=``."""
    return any(isinstance(n, ast.Call) and (
        isinstance(n.func, ast.Attribute) and n.func.attr.endswith("_")
        and not n.func.attr.startswith("_") or any(k.arg == "out" for k in n.keywords))
        for n in walk(value))
