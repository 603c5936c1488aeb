"""Stage: unit slices and ``select`` at the loop index become an index.

vmap cannot slice at a batched offset, nor ``select`` at one (it calls ``.item()`` on the
index: the vectorized form would raise on every call), but it can index::

    x[:, i:i + 1]    ->    x[:, i].unsqueeze(1)
    x.select(1, i)   ->    x[:, i]          (``torch.select(x, 1, i)``, keywords too)

the same values, gradients and views (``x[:, i].view(-1)`` raises where the original does); ints
before the unit slice (an int literal, an enclosing loop's index) take their dims away first::

    x[b, t:t + 1]    ->    x[b, t].unsqueeze(0)     (``b`` the outer loop's index)

A
``select`` at the index along a dim that is not a literal int >= 0 (``x.select(d, i)``, ``d`` a
parameter) keeps the loop as written, with the reason. Only loads with slices and such ints
before the unit slice (another name there may be a tensor of indices, which moves the dims);
``x[i:i + 2]``, ``x[k:k + 1]`` and ``x.select(0, k)`` (``k`` not the index) stay.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, Transformer, is_int, is_name, replace, unparse
from ..errors import Unsupported
from .loop_dataflow import method_name, resolve_call, write_entries
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    unit = _UnitSlices(plan.iteration.index, plan.outer_indices, ctx)
    plan.body = [unit.visit(s) for s in plan.body]
    return plan


class _UnitSlices(Transformer):
    def __init__(self, index: str, ints: set[str], ctx: PassContext):
        self.index = index
        self.ints = ints  # the enclosing loops' indices: Python ints
        self.ctx = ctx

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        entries = write_entries(node)
        at = [k for k, x in enumerate(entries) if self._unit(x)]
        if not isinstance(node.ctx, ast.Load) or len(at) != 1 \
                or not all(isinstance(x, ast.Slice) or self._int(x) for x in entries[:at[0]]):
            return node
        k = at[0]
        entries[k] = ast.Name(self.index, ast.Load())
        node.slice = ast.Tuple(entries, ast.Load()) if len(entries) > 1 else entries[0]
        dim = sum(isinstance(x, ast.Slice) for x in entries[:k])  # ints before take no dim
        return replace(f"x.unsqueeze({dim})", loc=node, x=node)

    def _int(self, x: ast.expr) -> bool:
        return (isinstance(x, ast.Constant) and type(x.value) is int) \
            or isinstance(x, ast.Name) and x.id in self.ints

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        picked = _select_operands(node, self.ctx)
        if picked is None or not is_name(picked[2], self.index):
            return node
        x, d, i = picked
        if not (isinstance(d, ast.Constant) and type(d.value) is int and d.value >= 0):
            # vmap calls .item() on a batched index, and a gather would copy (a view of the
            # copy succeeds where the original's view raises)
            raise Unsupported(f"`{unparse(node)}` selects at the loop index along a dim that is "
                              "not a literal int >= 0: it has no vectorized form", node.lineno)
        return replace("x[" + ":, " * d.value + "i]", loc=node, x=x, i=i)

    def _unit(self, x: ast.expr) -> bool:
        if not (isinstance(x, ast.Slice) and x.step is None and is_name(x.lower, self.index)):
            return False
        up = x.upper
        return isinstance(up, ast.BinOp) and isinstance(up.op, ast.Add) and (
            (is_name(up.left, self.index) and is_int(up.right, 1))
            or (is_int(up.left, 1) and is_name(up.right, self.index)))


def _select_operands(call: ast.Call, ctx: PassContext) -> tuple | None:
    """(tensor, dim, index) of ``x.select(d, i)`` or ``torch.select(x, d, i)`` (keywords too)."""
    if method_name(call, ctx) == "select":
        args = [call.func.value] + list(call.args)
    elif resolve_call(call.func, ctx) == "torch.select":
        args = list(call.args)
    else:
        return None
    named = {k.arg: k.value for k in call.keywords}
    if len(args) + len(named) != 3 or any(k not in ("input", "dim", "index") for k in named):
        return None
    args += [named[k] for k in ("input", "dim", "index")[len(args):] if k in named]
    return tuple(args) if len(args) == 3 else None
