"""``torch.tensor(data)`` under ``torch.vmap``, for generated code (the registry's
``OpSpec.vmap_fn`` of ``tensor``).

The rewrite makes some Python numbers of a loop body tensors (an item read, ``1 if a == b else
-1`` as ``torch.where``), and a body that then builds a tensor of one, ``torch.tensor(match,
device=...)``, hands ``torch.tensor`` a batched tensor: its copy construction detaches in place,
which vmap refuses for a view ("Can't detach views in-place"), at every call. A copy of a
tensor is what ``torch.tensor`` makes of it: detached, its dtype unless ``dtype`` is given, on
``device``. Other data (the numbers and lists the original passes) goes to ``torch.tensor``
itself, as does ``requires_grad=True`` (a leaf that vmap cannot make either way).
"""
from __future__ import annotations

import torch


def tensor(data, *, dtype=None, device=None, requires_grad: bool = False,
           pin_memory: bool = False):
    if not isinstance(data, torch.Tensor) or requires_grad or pin_memory:
        return torch.tensor(data, dtype=dtype, device=device, requires_grad=requires_grad,
                            pin_memory=pin_memory)
    copy = data.detach().clone()
    return copy if dtype is None and device is None else copy.to(device=device, dtype=dtype)
