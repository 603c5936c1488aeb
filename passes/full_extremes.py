"""``x.max()`` / ``x.min()`` over all elements with eager's value and gradient, for generated code.

Eager's full ``max()`` (on the CPU) gives the gradient divided by their count to the elements
equal to the result, or to the NaN elements when the result is NaN, and exactly 0 to every other
element, whatever the gradient (a NaN gradient too: it fills, it does not multiply). ``amax`` over
dims counts the ties with ``==`` (at a NaN result no element ties: every element of that slice
gets a NaN gradient) and multiplies by its mask (a NaN gradient gives 0 * NaN = NaN to the
elements not picked). So the batched form (all items at once, the loop dim in front) and the
vmapped body call these instead of ``amax``/``amin``: per slice, ``amax`` (which propagates NaN)
for the value, and eager's backward: the picked elements, equal to the result or NaN (a slice
with a NaN has a NaN result), share the gradient, behind a ``where`` that fills exactly 0 for the
others. A custom operator (``torch.library``), not an autograd.Function: Dynamo inlines a custom
Function's forward under vmap and differentiates it, ignoring its backward; an operator is opaque
to Dynamo, batched by its own vmap rule, and its backward is differentiable ops, so double
backward is eager's too. Under torch.compile that backward is traced into AOTAutograd's joint
graph: the ties and the NaN elements are two masks, each read by its own ``where`` (``x != x``:
Inductor vectorizes it, not ``isnan``), so the partitioner finds saving the reduced values
cheaper than saving the masks and compares again in the backward's fused kernel (one mask,
``tie | nan``, was saved from the forward: bool stores, 3x chamfer's steady time). In the
forward AOTAutograd traces (under its ``FunctionalTensorMode``) the operator is the ``amax``/
``amin`` it computes, so Inductor fuses it with the ops around it (opaque, it was a library
call on a stored input: chamfer's compiled forward one kernel instead of two and two calls,
~5.5 -> ~3.4 ms at 2048x2048). ``start``
is the first dim reduced (1 batched, 0 in a vmapped body); a slice of one 0-d value is itself.
Integer and bool values hold no NaN and take no gradient: ``amax`` as before.
"""
from __future__ import annotations

import torch
from torch._subclasses.functional_tensor import FunctionalTensorMode


def _reduced(x: torch.Tensor, start: int, largest: bool) -> torch.Tensor:
    return (torch.amax if largest else torch.amin)(x, tuple(range(start, x.dim())))


@torch.library.custom_op("optimize_loss::full_extreme", mutates_args=())
def _full_extreme(x: torch.Tensor, start: int, largest: bool) -> torch.Tensor:
    return _reduced(x, start, largest)


@_full_extreme.register_fake
def _full_extreme_shape(x: torch.Tensor, start: int, largest: bool) -> torch.Tensor:
    return _reduced(x, start, largest)


def _save(ctx, inputs: tuple, output: torch.Tensor) -> None:
    ctx.start = inputs[1]
    ctx.save_for_backward(inputs[0], output)


def _backward(ctx, g: torch.Tensor):
    x, value = ctx.saved_tensors
    reduced = (None,) * (x.dim() - ctx.start)  # the result's shape, keeping the reduced dims
    tie, nan = x == value[(..., *reduced)], x != x
    share = g[(..., *reduced)] / (tie | nan).sum(tuple(range(ctx.start, x.dim())), keepdim=True)
    return torch.where(tie, share, torch.where(nan, share, 0)), None, None


_full_extreme.register_autograd(_backward, setup_context=_save)


@_full_extreme.register_torch_dispatch(FunctionalTensorMode)
def _traced(mode, func, types, args: tuple, kwargs: dict) -> torch.Tensor:
    """The forward AOTAutograd traces (below the autograd formula above, which it keeps): the
    ``amax``/``amin`` it stands for, which Inductor fuses with the ops around it."""
    x, start, largest = args
    with mode:
        return _reduced(x, start, largest)


@_full_extreme.register_vmap
def _batched(info, in_dims: tuple, x: torch.Tensor, start: int, largest: bool):
    if in_dims[0] is None:
        return _full_extreme(x, start, largest), None
    return _full_extreme(x.movedim(in_dims[0], 0), start + 1, largest), 0


def _extreme(x: torch.Tensor, start: int, largest: bool) -> torch.Tensor:
    if x.dim() == start:
        x = x.unsqueeze(-1)
    if not x.is_floating_point():
        return _reduced(x, start, largest)
    return _full_extreme(x, start, largest)


def max_of_all(x: torch.Tensor, start: int) -> torch.Tensor:
    """``x.max()`` of every slice ``x[i0, ..., i_start-1]``."""
    return _extreme(x, start, True)


def min_of_all(x: torch.Tensor, start: int) -> torch.Tensor:
    """``x.min()`` of every slice ``x[i0, ..., i_start-1]``."""
    return _extreme(x, start, False)

