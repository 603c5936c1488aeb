"""``torch.stack`` of a sequence of tensors, for generated code: a view instead of a copy when the
items are evenly spaced views of one tensor (``stack_tensor_lists``).

Real losses split a tensor into a tuple and loop over it (``heatmaps.split(1, 1)``, one heatmap per
joint; ``x.unbind(0)``). Stacking the chunks again copies them, forward and backward, which can
cost the vectorized loop more than the loop saved. Chunks that view one tensor at offsets
``start + k * step``, in one layout, sharing no memory, are that tensor seen through
``as_strided``: the same values, and the same gradients, which reach the viewed tensor either
way. When the chunks cover all of a contiguous tensor (``split(1, d)`` of a whole reshaped
tensor), that layout is its dims reordered: a ``view`` and a ``permute`` of it, whose backward
is one reshape of the gradient where ``as_strided``'s zero-fills a full-size tensor and then
copies into it. Anything else (copies, overlapping windows,
``.detach()``-ed chunks, which view nothing by ``_base``, other dtypes or conj/neg bits,
functorch's wrapped tensors) is stacked as before; so is everything Dynamo traces, where
Inductor fuses the stack.
"""
from __future__ import annotations

from typing import Any

import torch


def stack_items(items: tuple) -> torch.Tensor:
    """``torch.stack(items)`` of tensors of one shape, dtype and device; a view instead of a copy
    when they are views of one tensor at evenly spaced offsets, with its dtype, conj/neg bits
    and requires_grad (differentiable views of it)."""
    first = items[0]
    base = first._base if type(first) is torch.Tensor and len(items) > 1 \
        and not torch.compiler.is_compiling() else None
    if base is None or torch._C._functorch.is_functorch_wrapped_tensor(first) \
            or not _same_view_kind(first, base):
        return torch.stack(items)
    start, stride = first.storage_offset(), first.stride()
    step = items[1].storage_offset() - start
    shape = (len(items), *first.shape)
    if step <= 0 or not _apart(shape, (step, *stride)) or not all(
            v._base is base and v.stride() == stride and _same_view_kind(v, base)
            and v.storage_offset() == start + k * step for k, v in enumerate(items)):
        return torch.stack(items)
    permuted = _permuted_view(base, shape, (step, *stride), start)
    return permuted if permuted is not None else base.as_strided(shape, (step, *stride), start)


def why_not_stacked(items: Any) -> str:
    """Why ``stack_tensor_lists.STACKED`` leaves ``items`` as they are (the loop then runs as
    written): what it is, or the first item that is not a tensor or differs from the first in
    shape, dtype or device (multi-scale feature maps: in shape)."""
    if not isinstance(items, (list, tuple)):
        return f"it is a {type(items).__name__}"
    if not items:
        return "it is empty"
    kinds = [k for k, v in enumerate(items) if not isinstance(v, torch.Tensor)]
    if kinds:
        return f"item {kinds[0]} is a {type(items[kinds[0]]).__name__}"
    for what in ("shape", "dtype", "device"):
        seen = [_shown(getattr(v, what)) for v in items]
        other = next((k for k, v in enumerate(seen) if v != seen[0]), None)
        if other is not None:
            return f"its items differ in {what}: {seen[0]} (item 0), {seen[other]} (item {other})"
    return f"a {type(items).__name__} whose item access is its own"


def _shown(value: Any) -> str:
    return str(list(value)) if isinstance(value, torch.Size) else str(value)


def _permuted_view(base: torch.Tensor, shape: tuple, strides: tuple, start: int):
    """``base.as_strided(shape, strides, start)`` as ``base.view(...).permute(...).view(shape)``
    when that layout is all of contiguous ``base`` with its dims reordered; else None."""
    if start != base.storage_offset() or not base.is_contiguous() \
            or base.numel() != torch.Size(shape).numel():
        return None
    dims = sorted((d for d in range(len(shape)) if shape[d] != 1), key=lambda d: -strides[d])
    sizes = [shape[d] for d in dims]
    if [strides[d] for d in dims] != list(torch.empty(sizes, device="meta").stride()):
        return None
    order = sorted(range(len(dims)), key=lambda k: dims[k])  # back to the dims' own order
    return base.view(sizes).permute(order).view(shape)


def _apart(shape: tuple, strides: tuple) -> bool:
    """No two elements of the layout share memory (sufficient test: each stride, in increasing
    order, beyond the reach of the smaller ones). Overlapping windows would sum their gradients
    in another order than the stack's backward, off by rounding."""
    reach = 0
    for size, stride in sorted(((n, s) for n, s in zip(shape, strides) if n > 1), key=lambda d: d[1]):
        if stride <= reach:
            return False
        reach += (size - 1) * stride
    return True


def _same_view_kind(v: torch.Tensor, base: Any) -> bool:
    return (type(base) is torch.Tensor and v.dtype == base.dtype
            and v.requires_grad == base.requires_grad
            and v.is_conj() == base.is_conj() and v.is_neg() == base.is_neg())
