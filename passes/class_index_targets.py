"""Class-index targets under ``torch.vmap``, for generated code: eager's check of their dtype.

Eager ``F.nll_loss`` and ``F.cross_entropy`` refuse a class-index target that is neither
``int64`` nor ``uint8`` ("expected target dtype to be Long or Byte, but got Int"), and a
``uint8`` one of more than one dim (their spatial form: "expected scalar type Long"); functorch's
composites of them, which a vmapped body runs, take an ``int32`` or ``bool`` target and return a
loss, and refuse a ``uint8`` one eager takes (their ``gather`` wants int32/int64: the call fell
back to the original, with a warning). So a vmapped body calls ``cross_entropy`` here (the
registry's ``OpSpec.vmap_fn``), and ``gathered_nll_loss.nll_loss`` reads its target the same way:
a target eager refuses raises eager's error (the runtime then runs the loop as written, which
raises the original's from the user's line), a ``uint8`` one is read as the ``int64`` of the same
values. A floating target (class probabilities) and every other argument go to
``F.cross_entropy`` unchanged.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def index_target(target: Any) -> Any:
    """``target`` as eager's kernels read it: eager's error for a class-index dtype it refuses,
    ``int64`` for ``uint8``, anything else as it is."""
    if not isinstance(target, torch.Tensor) or target.is_floating_point():
        return target
    if target.dtype == torch.long or (target.dtype == torch.uint8 and target.dim() <= 1):
        return target.long()
    raise RuntimeError(f"class-index target of dtype {target.dtype} and {target.dim()} dims: "
                       "eager's nll_loss refuses it")


def cross_entropy(input, target, *args, **kwargs):
    """``F.cross_entropy`` with eager's reading of a class-index target's dtype."""
    return F.cross_entropy(input, index_target(target), *args, **kwargs)
