"""``inplace_result(t, r)``: the value ``r`` of an in-place write into ``t`` (``t += v`` made
``t = inplace_result(t, t + v)`` by ``loops/inplace_writes_to_functional``), as the write leaves
it, for generated code.

An in-place op computes in the promoted dtype of its operands and stores the result in ``t``'s
dtype: ``m = torch.zeros(3); m += x64[i]`` keeps ``m`` float32, where ``m = m + x64[i]`` would
make it float64, and every later value and the loss's dtype with it. Where the result cannot be
cast to ``t``'s dtype (a float result into an integer tensor), the write raises; so does this,
with the write's own error (made by the same write on empty tensors of those dtypes).
"""
from __future__ import annotations

import torch


def inplace_result(t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    if r.dtype == t.dtype:
        return r
    if not torch.can_cast(r.dtype, t.dtype):
        torch.empty(0, dtype=t.dtype).add_(torch.empty(0, dtype=r.dtype))  # raises its error
    return r.to(t.dtype)
