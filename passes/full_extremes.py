"""``x.max()`` / ``x.min()`` over all elements with eager's value and gradient, for generated code.

Eager's full ``max()`` (on the CPU) gives the gradient divided by their count to the elements
equal to the result, or to the NaN elements when the result is NaN, and exactly 0 to every other
element, whatever the gradient (a NaN gradient too: it fills, it does not multiply). ``amax`` over
dims counts the ties with ``==`` (at a NaN result no element ties: every element of that slice
gets a NaN gradient) and multiplies by its mask (a NaN gradient gives 0 * NaN = NaN to the
elements not picked). So the batched form (all items at once, the loop dim in front) and the
vmapped body call these instead of ``amax``/``amin``: per slice, where it holds a NaN, the mean
of its NaN elements (NaN; the gradient divided among them), else ``amax`` of its values with the
others replaced by -inf (the ties split the gradient evenly), each behind a ``where`` that fills
exactly 0 for the elements and the branch not picked. Plain differentiable ops, not an
autograd.Function: Dynamo inlines a custom Function's forward under vmap and differentiates it,
ignoring its backward, so ``torch.compile`` would not run eager's gradient; double backward is
eager's too. ``start`` is the first dim reduced (1 batched, 0 in a vmapped body); a slice of one
0-d value is itself. Integer and bool values hold no NaN: ``amax`` as before.
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
    nan, fill = x.detach().isnan(), -torch.inf if largest else torch.inf
    # in a slice with a NaN, `ties` are the largest others: that branch is not taken
    ties = x.detach() == reduce(torch.where(nan, fill, x.detach()), dims, keepdim=True)
    top = reduce(torch.where(ties, x, fill), dims)
    at_nan = torch.where(nan, x, 0).sum(dims) / nan.sum(dims).clamp(min=1)
    return torch.where(nan.any(dims), at_nan, top)


def max_of_all(x: torch.Tensor, start: int) -> torch.Tensor:
    """``x.max()`` of every slice ``x[i0, ..., i_start-1]``."""
    return _extreme(x, start, True)


def min_of_all(x: torch.Tensor, start: int) -> torch.Tensor:
    """``x.min()`` of every slice ``x[i0, ..., i_start-1]``."""
    return _extreme(x, start, False)
