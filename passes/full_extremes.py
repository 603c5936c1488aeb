"""``x.max()`` / ``x.min()`` over all elements with eager's value and gradient, for generated code.

Eager's full ``max()`` splits the gradient evenly between the elements equal to the result, and
between the NaN elements when the result is NaN. ``amax`` over dims counts the ties with ``==``:
at a NaN result no element ties, and every element of that slice gets a NaN gradient. So the
batched form (all items at once, the loop dim in front) and the vmapped body call these instead
of ``amax``/``amin``: where a slice holds a NaN, the mean of its NaNs (NaN, the gradient split
between them), else ``amax`` over its values with NaN masked to the far end (never picked, the
gradient split between ties as eager splits it). ``start`` is the first dim reduced (1 batched,
0 in a vmapped body); a slice of one 0-d value is itself. Integer and bool values hold no NaN:
``amax`` as before.
"""
from __future__ import annotations

import torch


def _extreme(x: torch.Tensor, start: int, largest: bool) -> torch.Tensor:
    if x.dim() == start:
        x = x.unsqueeze(-1)
    dims = tuple(range(start, x.dim()))
    reduce = torch.amax if largest else torch.amin
    if not x.is_floating_point():
        return reduce(x, dims)
    nan = x.isnan()
    top = reduce(torch.where(nan, -torch.inf if largest else torch.inf, x), dims)
    mean_of_nans = torch.where(nan, x, 0).sum(dims) / nan.sum(dims).clamp(min=1)
    return torch.where(nan.any(dims), mean_of_nans, top)


def max_of_all(x: torch.Tensor, start: int) -> torch.Tensor:
    """``x.max()`` of every slice ``x[i0, ..., i_start-1]``."""
    return _extreme(x, start, True)


def min_of_all(x: torch.Tensor, start: int) -> torch.Tensor:
    """``x.min()`` of every slice ``x[i0, ..., i_start-1]``."""
    return _extreme(x, start, False)
