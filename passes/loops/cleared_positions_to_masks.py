"""Stage: a boolean tensor made in the body and written at the iteration's own position becomes
a comparison of positions with the loop index, a mask ``masked_selections_to_where`` takes.

Contrastive losses written per row (NT-Xent) drop the row's own item with a fresh mask: made
as all true, cleared at ``i``, it is true at the positions ``p != i``. Written in place, the
mask has no batch dimension to hold each iteration's position (vmap's ``index_put_`` raises on
every call), and a selection by it is no mask the selection stage knows::

    keep = torch.ones(2 * n, dtype=torch.bool)     ->     _pos = torch.arange(2 * n)
    keep[i] = False                                       keep = _pos != i

and ``torch.zeros(m, dtype=torch.bool)`` set ``True`` at ``i`` becomes ``_pos == i``. Taken:
the two statements adjacent at the body's top level, one size argument, ``dtype=torch.bool``
and at most a ``device`` keyword (passed on to ``torch.arange``: the same device), ``i`` the
loop's index. They hold the same values when ``0 <= i < m``: the check requires the loop to
count up from 0 or more, ``range``'s stop to be ``m`` or less (past it, the original raises an
IndexError: the loop then runs as written) and ``m`` the same in every iteration.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, is_pure, replace
from .loop_dataflow import loads, resolve_call, stores
from .plan import LoopPlan

# The filled value that makes a mask, the cleared value, and the comparison with the index.
_FILLS = {"torch.ones": (False, "!="), "torch.zeros": (True, "==")}


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    bound = {n for s in plan.body for n in stores(s)} | {it.index} | {
        name for name, _ in it.elements}
    body, made = [], False
    for s in plan.body:
        found = body and _cleared(body[-1], s, it.index, ctx)
        if found and not loads(found[0]) & bound and is_pure(found[0]):
            size, device, op = found
            pos = ctx.namer.new("pos")
            body[-1:] = replace(f"p = torch.arange(m)\nk = p {op} j", loc=body[-1],
                                torch_name=ctx.torch_name, p=pos, m=size, k=s.targets[0].value.id,
                                j=ast.Name(it.index, ast.Load()))
            if device is not None:
                body[-2].value.keywords.append(device)
            if ast.dump(it.stop) != ast.dump(size):
                plan.check("b <= m", b=it.stop, m=size)
            made = True
            continue
        body.append(s)
    if made:
        plan.need_plain_range()
        plan.body = body
    return plan


def _cleared(made: ast.stmt, write: ast.stmt, index: str, ctx: PassContext
             ) -> tuple[ast.expr, ast.keyword | None, str] | None:
    """(size, device keyword or None, comparison) of ``k = torch.ones(m, dtype=torch.bool)``
    followed by ``k[index] = False`` (or zeros and True), else None."""
    if not (isinstance(made, ast.Assign) and len(made.targets) == 1
            and isinstance(made.targets[0], ast.Name) and isinstance(made.value, ast.Call)
            and isinstance(write, ast.Assign) and len(write.targets) == 1
            and isinstance(write.targets[0], ast.Subscript)):
        return None
    call, target = made.value, write.targets[0]
    fill = _FILLS.get(resolve_call(call.func, ctx))
    keywords = {k.arg: k for k in call.keywords}
    if fill is None or len(call.args) != 1 or isinstance(call.args[0], (ast.Starred, ast.Tuple)) \
            or "dtype" not in keywords or set(keywords) - {"dtype", "device"} \
            or resolve_call(keywords["dtype"].value, ctx) != "torch.bool":
        return None
    cleared, op = fill
    if not (isinstance(target.value, ast.Name) and target.value.id == made.targets[0].id
            and isinstance(target.slice, ast.Name) and target.slice.id == index
            and isinstance(write.value, ast.Constant) and write.value.value is cleared):
        return None
    return call.args[0], keywords.get("device"), op
