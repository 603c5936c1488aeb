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

``x[m].max()`` of a boolean selection (``masked_selections_to_where``) is ``max_of_selected(x,
m, start)``: the same value and backward over the elements ``m`` selects, 0 where it selects
nothing (the original raises there; the loop counts those items and raises after it, and a 0
keeps NaN out of the gradients of items a tensor condition deselects). The value is ``amax``
over the selection (Inductor fuses it), detached; the gradient comes from adding ``-0.0`` by an
operator whose backward is eager's split (in the forward AOTAutograd traces, the
``-0.0`` fill itself, as for the full extremes: no opaque call between Inductor's kernels).
Spelled with ops (NaN test, fill, ties, mean of the ties), Inductor stored five bool masks of the distance matrix for their backward, and the
batch-hard triplet loss took 1.4x the expert's ``masked_fill(...).amax(1)``. Integers and bools: ``amax`` over the selection, the
slice's minimum where nothing is selected.
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


@torch.library.custom_op("optimize_loss::selected_ties", mutates_args=())
def _selected_ties(x: torch.Tensor, mask: torch.Tensor, value: torch.Tensor,
                   start: int) -> torch.Tensor:
    return x.new_full(x.shape[:start], -0.0)  # adding -0.0 changes no value, not even 0's sign


@_selected_ties.register_fake
def _selected_ties_shape(x: torch.Tensor, mask: torch.Tensor, value: torch.Tensor,
                         start: int) -> torch.Tensor:
    return x.new_empty(x.shape[:start])


def _save_selected(ctx, inputs: tuple, output: torch.Tensor) -> None:
    ctx.start = inputs[3]
    ctx.save_for_backward(*inputs[:3])


def _selected_backward(ctx, g: torch.Tensor):
    x, mask, value = ctx.saved_tensors
    reduced = (None,) * (x.dim() - ctx.start)
    tie, nan = x == value[(..., *reduced)], x != x
    picked = mask & (tie | nan)
    share = g[(..., *reduced)] / picked.sum(tuple(range(ctx.start, x.dim())), keepdim=True)
    return torch.where(mask, torch.where(tie, share, torch.where(nan, share, 0)), 0), \
        None, None, None


_selected_ties.register_autograd(_selected_backward, setup_context=_save_selected)


@_selected_ties.register_torch_dispatch(FunctionalTensorMode)
def _selected_traced(mode, func, types, args: tuple, kwargs: dict) -> torch.Tensor:
    """The forward AOTAutograd traces, as ``_traced``: the ``-0.0`` fill it computes, which
    Inductor folds into the sum. Opaque, each call was a library call between the kernels it
    split (the batch-hard triplet loss's compiled forward: 4 kernels, each one more C++ compile
    at the first call, instead of 2)."""
    x, mask, value, start = args
    with mode:
        return x.new_full(x.shape[:start], -0.0)


@_selected_ties.register_vmap
def _selected_batched(info, in_dims: tuple, x: torch.Tensor, mask: torch.Tensor,
                      value: torch.Tensor, start: int):
    if all(d is None for d in in_dims[:3]):
        return _selected_ties(x, mask, value, start), None
    # every operand batched alike (an unbatched one expanded: its gradient sums over the items)
    x, mask, value = (t.movedim(d, 0) if d is not None else t.expand(info.batch_size, *t.shape)
                      for t, d in zip((x, mask, value), in_dims[:3]))
    return _selected_ties(x, mask, value, start + 1), 0


def _of_selected(x: torch.Tensor, mask: torch.Tensor, start: int,
                 largest: bool) -> torch.Tensor:
    if x.dim() == start:
        x, mask = x.unsqueeze(-1), mask.unsqueeze(-1)
    dims = tuple(range(start, x.dim()))
    reduce = torch.amax if largest else torch.amin
    if not x.is_floating_point():
        other = (torch.amin if largest else torch.amax)(x, dims, keepdim=True)
        return reduce(torch.where(mask, x, other), dims)
    mask = mask.expand_as(x)
    value = reduce(torch.where(mask, x, -torch.inf if largest else torch.inf), dims)
    value = torch.where(mask.any(dims), value, 0).detach()
    return value + _selected_ties(x, mask, value, start)


def max_of_selected(x: torch.Tensor, mask: torch.Tensor, start: int) -> torch.Tensor:
    """``x[i0, ..., i_start-1][m[i0, ...]].max()`` of every slice (0 where none is selected)."""
    return _of_selected(x, mask, start, True)


def min_of_selected(x: torch.Tensor, mask: torch.Tensor, start: int) -> torch.Tensor:
    """``x[...][m[...]].min()`` of every slice, as ``max_of_selected``."""
    return _of_selected(x, mask, start, False)


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



def _first_of_selected(x: torch.Tensor, mask: torch.Tensor, start: int,
                       largest: bool) -> torch.Tensor:
    if x.dim() == start:
        x, mask = x.unsqueeze(-1), mask.unsqueeze(-1)
    flat, sel = x.flatten(start), mask.expand_as(x).flatten(start)
    first = sel.int().argmax(-1, keepdim=True)  # argmax: the first of equal values
    if x.is_floating_point():
        key = torch.where(sel & (flat == flat), flat, -torch.inf if largest else torch.inf)
    else:  # the deselected ones at the far end of the slice's own values
        key = torch.where(sel, flat, (flat.amin if largest else flat.amax)(-1, keepdim=True))
    best = (key.amax if largest else key.amin)(-1, keepdim=True)
    at = (sel & (key == best)).int().argmax(-1, keepdim=True)
    if x.is_floating_point():
        lead = flat.gather(-1, first)
        at = torch.where(lead != lead, first, at)
    return torch.where(sel.any(-1), flat.gather(-1, at).squeeze(-1), 0)


def first_max_of_selected(x: torch.Tensor, mask: torch.Tensor, start: int) -> torch.Tensor:
    """Python's ``max(x[...][m[...]])`` of every slice (1-D selections): the first selected
    item unless a later one compares greater, so a NaN first item stays and later NaNs are
    skipped; the item picked by index takes the whole gradient (no split between ties, unlike
    ``max_of_selected``). 0 where nothing is selected (the original raises ``ValueError``)."""
    return _first_of_selected(x, mask, start, True)


def first_min_of_selected(x: torch.Tensor, mask: torch.Tensor, start: int) -> torch.Tensor:
    """Python's ``min(x[...][m[...]])`` of every slice, as ``first_max_of_selected``."""
    return _first_of_selected(x, mask, start, False)
