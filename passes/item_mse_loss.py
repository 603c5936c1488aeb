"""``F.mse_loss`` of one item, for vmapped generated code: reduced over the item's dims, no copy.

Under ``torch.vmap`` functorch's batching rule of ``mse_loss`` (and of its backward) flattens
each batched operand to ``[batch, -1]`` with ``reshape``. Items stacked as a view of a tensor
split along an inner dim (``heatmaps.split(1, 1)``, one heatmap per joint) have the loop dim
outside the item's dims in memory, so every flatten is a full-size copy, forward and backward:
more than the loop saved. The loss written as ``(input - target).square()`` reduced by
``mean()``/``sum()`` batches elementwise and reduces over the item's dims where they lie. It is
what ATen computes (the squared difference, then the reduction), so the same values within
rounding of the reduction, the same gradients within rounding (``2 (x - t) g / n`` in another
order), NaN and inf alike. Anything else (broadcasting, other dtypes, integer or complex
operands, ``reduction="none"``, ``weight=``, the deprecated ``size_average``/``reduce``) is the
op itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mse_loss(input, target, *args, **kwargs):
    """``F.mse_loss(input, target, ...)``; for operands of one shape and floating dtype with
    ``reduction`` ``"mean"`` or ``"sum"`` (no other argument), the squared difference reduced."""
    reduction = kwargs.get("reduction", "mean")
    if args or set(kwargs) - {"reduction"} or reduction not in ("mean", "sum") \
            or not (isinstance(input, torch.Tensor) and isinstance(target, torch.Tensor)
                    and input.shape == target.shape and input.dtype == target.dtype
                    and input.is_floating_point()):
        return F.mse_loss(input, target, *args, **kwargs)
    squared = torch.sub(input, target).square()
    return squared.mean() if reduction == "mean" else squared.sum()
