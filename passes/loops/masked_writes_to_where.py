"""Stage: a boolean mask's write of a number into a tensor the iteration made becomes a
``torch.where``.

Per-item code clears entries of a fresh tensor by a mask (``d = x[i].clone(); d[d < 0] = 0``,
``w[t == ignore] = 0.0``). In place, the write selects as many entries as the mask holds, which
varies per iteration: no batched form, and the selection stages would read it as a selection
that is not reduced. Functionally it is the tensor rebound::

    d = x[i].clone()                       d = x[i].clone()
    d[d < 0] = 0                   ->      _d_keep = (d < 0).reshape(_written_mask[(d < 0).shape, d.shape])
                                           d = torch.where(_d_keep, 0, d)

The same values (a Python number keeps the tensor's dtype) and the same gradients (none at the
written entries). ``_written_mask`` (``masked_selections_to_where.WRITTEN_MASK``) raises the
original's ``IndexError`` for a mask that cannot index the tensor, and pads a mask of the
leading dims with 1s as indexing reads it (a 0-d mask writes everything or nothing; a comparison
of Python values, a Python bool, is made a tensor first). Only where the functional form is exact: the tensor an
op of the iteration made, sharing memory with nothing (``inplace_writes_to_functional.Writes``
decides, as it does for the other in-place writes); anything else stays for that stage, which
runs on the final body and refuses what it cannot rewrite.
"""
from __future__ import annotations

from ..ast_tools import PassContext
from ..errors import Unsupported
from .inplace_writes_to_functional import Writes
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    writes = Writes(plan, ctx, {r.param for r in plan.row_slices.values()}
                    | {name for name, _ in it.elements}, masked_only=True)
    try:
        writes.block(plan.init, rewrite=False)
        plan.body = writes.block(plan.body)
    except Unsupported:  # a write into shared memory: inplace_writes_to_functional's refusal
        pass
    return plan
