"""``x.max()`` / ``x.min()`` over all elements with eager's value and gradient, for generated code.

Eager's full ``max()`` (on the CPU) gives the gradient divided by their count to the elements
equal to the result, or to the NaN elements when the result is NaN, and exactly 0 to every other
element, whatever the gradient (a NaN gradient too: it fills, it does not multiply). ``amax`` over
dims counts the ties with ``==`` (at a NaN result no element ties: every element of that slice
gets a NaN gradient) and multiplies by its mask (a NaN gradient gives 0 * NaN = NaN to the
elements not picked). So the batched form (all items at once, the loop dim in front) and the
vmapped body call these instead of ``amax``/``amin``: an autograd.Function whose value is NaN
where a slice holds a NaN, else ``amax`` of its values, and whose backward is eager's masked fill
(``where``; differentiable again, so double backward is eager's too). Its vmap rule is derived
(``generate_vmap_rule``). ``start`` is the first dim reduced (1 batched, 0 in a vmapped body); a
slice of one 0-d value is itself. Integer and bool values hold no NaN: ``amax`` as before.
"""
from __future__ import annotations

import torch


class _Extreme(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, dims, largest):
        nan = x.isnan()
        reduce = torch.amax if largest else torch.amin
        top = reduce(torch.where(nan, -torch.inf if largest else torch.inf, x), dims)
        return torch.where(nan.any(dims), torch.nan, top)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.dims, _ = inputs
        ctx.save_for_backward(x, output)

    @staticmethod
    def backward(ctx, grad):
        x, value = ctx.saved_tensors
        for d in ctx.dims:  # the reduced dims back, in increasing order
            value, grad = value.unsqueeze(d), grad.unsqueeze(d)
        picked = torch.where(value.isnan(), x.isnan(), x == value)
        return torch.where(picked, grad / picked.sum(ctx.dims, keepdim=True), 0), None, None


def _extreme(x: torch.Tensor, start: int, largest: bool) -> torch.Tensor:
    if x.dim() == start:
        x = x.unsqueeze(-1)
    dims = tuple(range(start, x.dim()))
    if not x.is_floating_point():
        return (torch.amax if largest else torch.amin)(x, dims)
    return _Extreme.apply(x, dims, largest)


def max_of_all(x: torch.Tensor, start: int) -> torch.Tensor:
    """``x.max()`` of every slice ``x[i0, ..., i_start-1]``."""
    return _extreme(x, start, True)


def min_of_all(x: torch.Tensor, start: int) -> torch.Tensor:
    """``x.min()`` of every slice ``x[i0, ..., i_start-1]``."""
    return _extreme(x, start, False)
