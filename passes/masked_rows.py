"""``x[mask]`` in a vmapped body, for generated code: the selected rows as an ``index_select`` of
the mask's positions when the mask is one the loop does not change (``outline_body``).

Under ``torch.vmap`` a boolean index of a batched tensor is an advanced index of every masked dim
with the positions of the mask, forward, and an accumulating ``index_put`` into zeros, backward:
a per-class loop's ``pred[valid]`` over [C, B, H, W] runs several times slower than the gather of
the same positions along the flattened masked dims (``index_select``, whose backward is an
``index_add`` into zeros). Both copy each selected element once: the same values, dtype and
layout (contiguous), and each element's gradient is the one gradient of its copy (zeros where
deselected). Anything else is indexed as written, raising indexing's own errors: a mask that is
not a bool tensor (uint8's deprecated mask, integer positions), a 0-d one, one on another device,
one whose shape is not that of ``x``'s leading dims, or one that is itself mapped (an outer
loop's value, in an inner loop's body: its positions differ per item); so is everything Dynamo
traces, where the compiler picks the form.
"""
from __future__ import annotations

import torch


def masked_rows(x, mask):
    """``x[mask]``."""
    if torch.compiler.is_compiling() or not (isinstance(x, torch.Tensor) and isinstance(mask, torch.Tensor)
            and mask.dtype == torch.bool and 1 <= mask.dim() <= x.dim()
            and x.shape[:mask.dim()] == mask.shape and mask.device == x.device
            and not torch._C._functorch.is_functorch_wrapped_tensor(mask)):
        return x[mask]
    positions = mask.reshape(-1).nonzero().squeeze(1)
    return x.flatten(0, mask.dim() - 1).index_select(0, positions)
