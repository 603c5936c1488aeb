"""Stage: in-place writes into a tensor the iteration made, under a condition, become their
functional forms before the body is checked.

Per-item code builds a row and writes into it under a condition on the data: label smoothing
with an ignored label (``if target[i] == ignore: continue``, then ``row = torch.full(...)``,
``row[target[i]] = 1 - eps``), a target row filled only where a box matched. Under a tensor
condition an in-place write cannot be masked (the checks refuse it: masking a write into a
value that shares memory would write a copy); into a tensor an op of the iteration made, sharing
memory with nothing, it is the tensor rebound, as ``inplace_writes_to_functional`` writes it::

    if target[i] == ignore:                  if target[i] == ignore:
        continue                                 continue
    row = torch.full((c,), e)          ->    row = torch.full((c,), e)
    row[target[i]] = 1 - eps                 _row_at = torch.arange(row.numel(), device=row.device).view(row.shape)[target[i]]
                                             row = row.flatten().scatter(0, _row_at.flatten(), ...).view(row.shape)

which ``tensor_branches_to_where`` then masks like any assignment: the index reads 0 where the
iteration is deselected (a label out of range there, ``-100``, indexes nothing the original did
not), and an out-of-range label of a selected iteration raises the original's ``IndexError``.
Rewritten are the writes (``loop_dataflow.mutates_local``) in an ``if``'s branches and after a
guarded ``continue``; the other statements are walked as written (``Writes`` tracks what they
make). A write ``Writes`` refuses (into a value that may share memory) leaves the whole body as
it was: the checks then refuse the loop with their reason.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, clone
from ..errors import Unsupported
from .inplace_writes_to_functional import Writes
from .loop_dataflow import is_guarded_continue, mutates_local
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    writes = Writes(plan, ctx, {name for name, _ in plan.iteration.elements}, only=mutates_local)
    body, out, guarded = clone(plan.body), [], False
    try:
        writes.block(plan.init, rewrite=False)
        for s in body:
            out += writes.block([s], rewrite=guarded or isinstance(s, ast.If))
            guarded = guarded or is_guarded_continue(s)
    except Unsupported:  # refused again, with its reason, by the checks
        return plan
    plan.body = out
    return plan
