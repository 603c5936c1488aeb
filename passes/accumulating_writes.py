"""``out[slots] += values`` where several items may hit one slot (``counts[t[i]] += 1`` batched),
for generated code: an accumulating ``index_put_`` of ``values`` cast to ``out``'s dtype.

``+=`` casts its result to ``out``'s dtype when ``torch.can_cast(torch.result_type(out, v),
out.dtype)``, and raises otherwise. Whatever the dims of the two, the result type's kind (bool <
integer < floating < complex) is the higher of their kinds, and a cast is allowed exactly when it
does not lower the kind: so the test is ``kind(v) <= kind(out)``. Read from dtype attributes, it
is a constant while Dynamo traces; ``torch.result_type`` and ``torch.can_cast`` each break the
compiled graph (they return a dtype and a bool). Where ``+=`` raises, ``values`` keep their dtype
and ``index_put_`` raises too (the dtypes differ).
"""
from __future__ import annotations

import torch


def _kind(dtype: torch.dtype) -> tuple[bool, bool, bool]:
    # Ordered as tuples: bool < integer < floating < complex.
    return dtype.is_complex, dtype.is_floating_point, dtype != torch.bool


def index_accumulate(out: torch.Tensor, slots: tuple, values: torch.Tensor) -> torch.Tensor:
    if _kind(values.dtype) <= _kind(out.dtype):
        values = values.to(out.dtype)
    return out.index_put_(slots, values, accumulate=True)
