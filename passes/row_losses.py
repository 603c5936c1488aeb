"""A class loss of every row of a batched ``x`` [A, B, C] against ``t`` [A, B], for generated code.

The batched form of ``F.cross_entropy(x_i, t_i)`` over a loop flattens the loop dim and the batch
dim into one row dim. When the loop went over the batch's second dim (``logits[:, t]``), the
loop dim is in front as a moved dim (``movedim(1, 0)``), and ``flatten(0, 1)`` copies the whole
input, in eager and in a compiled graph alike (where the copy's index arithmetic also keeps
Inductor from fusing the row's max and exp-sum loops). The loss of a row does not depend on the
other rows, so the two dims are flattened in the order their memory has them (a view), and the
per-row losses (``reduction='none'``) are put back in ``t``'s shape.
"""
from __future__ import annotations

from typing import Callable

import torch


def loss_of_rows(loss: Callable, x: torch.Tensor, t: torch.Tensor, reduction: str,
                 **kwargs) -> torch.Tensor:
    swap = x.stride(0) < x.stride(1)  # the first dim is the inner one in memory
    if swap:
        x, t = x.transpose(0, 1), t.transpose(0, 1)
    out = loss(x.flatten(0, 1), t.flatten(), reduction=reduction, **kwargs)
    if reduction != "none":
        return out
    out = out.view(t.shape)
    return out.transpose(0, 1) if swap else out
