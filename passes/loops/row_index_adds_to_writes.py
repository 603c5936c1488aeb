"""Stage: ``index_add_`` into the loop's row of an outer tensor becomes a write of that row.

Distributional RL losses project each sample's atoms onto the support row by row (C51: ``m[i]``
gets each atom's mass at its lower and upper neighbours ``l[i]``, ``u[i]``)::

    for i in range(B):                                  for i in range(B):
        m[i].index_add_(0, l[i], p[i] * (u[i] - b[i]))  ->  m[i] = m[i].index_add(0, l[i], p[i] *
        m[i].index_add_(0, u[i], p[i] * (b[i] - l[i]))      (u[i] - b[i])).index_add(0, u[i],
                                                             p[i] * (b[i] - l[i]))

``m[i]`` of a tensor at the loop's int index is a view: the in-place adds change that row only,
and writing the added row back changes the same elements to the same values, with the same
gradients (``index_add``'s, through the row's copy into ``m``). A later iteration never reads the
row (the body reads ``m`` nowhere else), so the rows are the loop's writes at its index, which
``effects_to_outputs`` places in one slice write. Consecutive adds into the same row chain in their
order; their arguments may not read ``m`` (the adds before would have changed what they read).
The row's dtype and the sources' must agree, or the index be out of range: ``index_add`` raises
as ``index_add_`` does. Taken for statements ``x[i].index_add_(d, index, source)`` (``alpha=`` too)
with ``x`` a name the loop does not bind; anything else stays, for ``check_body`` to refuse.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, clone, is_name, unparse
from .loop_dataflow import loads, stores_in
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    index = plan.iteration.index
    adds = [_row_add(s, index, stores_in(plan.body)) for s in plan.body]
    if all(row is None for row in adds):
        return plan
    # the body reads the written tensors only in those adds' receivers
    tensors = {row.value.id for row in adds if row is not None}
    others = [s for s, row in zip(plan.body, adds) if row is None]
    if loads(ast.Module(others, [])) & tensors or any(
            loads(ast.Module(s.value.args + [k.value for k in s.value.keywords], []))
            & tensors for s, row in zip(plan.body, adds) if row is not None):
        return plan
    body, k = [], 0
    while k < len(plan.body):
        if adds[k] is None:
            body.append(plan.body[k])
            k += 1
            continue
        row, value = adds[k], clone(adds[k])
        while k < len(plan.body) and adds[k] is not None and unparse(adds[k]) == unparse(row):
            call = plan.body[k].value
            value = ast.copy_location(ast.Call(ast.Attribute(value, "index_add", ast.Load()),
                                               call.args, call.keywords), call)
            k += 1
        target = clone(row)
        target.ctx = ast.Store()
        body.append(ast.copy_location(ast.Assign([target], value), row))
    plan.body = body
    return plan


def _row_add(s: ast.stmt, index: str, bound: set[str]) -> ast.Subscript | None:
    """``x[i]`` of a statement ``x[i].index_add_(...)`` (``x`` a name the loop does not bind,
    ``i`` its index), else None."""
    call = s.value if isinstance(s, ast.Expr) else None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and call.func.attr == "index_add_" and len(call.args) == 3
            and not any(isinstance(a, ast.Starred) for a in call.args)
            and all(k.arg == "alpha" for k in call.keywords)):
        return None
    row = call.func.value
    if isinstance(row, ast.Subscript) and isinstance(row.value, ast.Name) \
            and row.value.id not in bound and is_name(row.slice, index):
        return row
    return None
