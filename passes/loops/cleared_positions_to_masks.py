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
loop's index or a copy of it (``_h_k = i``, an inlined helper's parameter: a name the body binds
once, at its top level, to a name it does not bind; copies in the size are read as their
sources, which the check before the loop can read). They hold the same values when ``0 <= i < m``: the check requires the loop to
count up from 0 or more, ``range``'s stop to be ``m`` or less (past it, the original raises an
IndexError: the loop then runs as written) and ``m`` the same in every iteration.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, clone, is_pure, rename, replace, walk
from .loop_dataflow import loads, resolve_call, stores
from .plan import LoopPlan

# The filled value that makes a mask, the cleared value, and the comparison with the index.
_FILLS = {"torch.ones": (False, "!="), "torch.zeros": (True, "==")}


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    bound = {n for s in plan.body for n in stores(s)} | {it.index} | {
        name for name, _ in it.elements}
    copies = _copies(plan.body, bound - {it.index})
    body, made = [], False
    for s in plan.body:
        found = body and _cleared(body[-1], s, it.index, copies, ctx)
        size = found and rename(clone(found[0]), copies)  # read before the loop: the check
        if found and not loads(size) & bound and is_pure(size):
            _, device, op = found
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


def _copies(body: list[ast.stmt], bound: set[str]) -> dict[str, str]:
    """Names the body binds once, at its top level, to a name it does not bind (``_h_k = i``, an
    inlined helper's parameter): they hold that name's value wherever they are read."""
    counts: dict[str, int] = {}
    for s in body:
        for n in (n for m in walk(s) if isinstance(m, ast.stmt) for n in stores(m)):
            counts[n] = counts.get(n, 0) + 1
    return {s.targets[0].id: s.value.id for s in body
            if isinstance(s, ast.Assign) and len(s.targets) == 1
            and isinstance(s.targets[0], ast.Name) and isinstance(s.value, ast.Name)
            and counts.get(s.targets[0].id) == 1 and s.value.id not in bound}


def _cleared(made: ast.stmt, write: ast.stmt, index: str, copies: dict[str, str],
             ctx: PassContext) -> tuple[ast.expr, ast.keyword | None, str] | None:
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
            and isinstance(target.slice, ast.Name)
            and copies.get(target.slice.id, target.slice.id) == index
            and isinstance(write.value, ast.Constant) and write.value.value is cleared):
        return None
    return call.args[0], keywords.get("device"), op
