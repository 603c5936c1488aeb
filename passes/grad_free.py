"""``detached(value)``: what ``torch.no_grad()`` would have made of a value computed with
gradients enabled (``loops/no_grad_blocks_to_detach``): every tensor in it detached, in tuples,
lists and ``torch.return_types`` too; numbers and other leaves as they are. Same values, dtypes
and shapes; no gradient flows through it."""
from __future__ import annotations

import torch
from torch.utils import _pytree


def detached(value):
    return _pytree.tree_map(lambda v: v.detach() if isinstance(v, torch.Tensor) else v, value)
