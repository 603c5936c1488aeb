"""A class loss of every row of a batched ``x`` [A, B, C] against ``t`` [A, B] (or of every item
``x`` [A, C] against ``t`` [A]), for generated code.

The batched form of ``F.cross_entropy(x_i, t_i)`` over a loop flattens the loop dim and the batch
dim into one row dim. When the loop went over the batch's second dim (``logits[:, t]``), the
loop dim is in front as a moved dim (``movedim(1, 0)``), and ``flatten(0, 1)`` copies the whole
input, in eager and in a compiled graph alike (where the copy's index arithmetic also keeps
Inductor from fusing the row's max and exp-sum loops). The loss of a row does not depend on the
other rows, so the two dims are flattened in the order their memory has them (a view), and the
per-row losses (``reduction='none'``) are put back in ``t``'s shape. An item that is one row
``x_i`` [C] with a 0-d target is a row of ``x`` [A, C] as it is: one call on the batch, not a
vmap of the loss (which runs its unbatched form once per item).

``loss_of_items`` reduces each item's rows as the loop's call does: their sum, or their mean
over the rows whose target is not ``ignore_index`` (an item of one ignored row is ``0 / 0``,
NaN, as the call's mean of nothing; its gradient is zero, as the call's); with a class weight,
the weighted mean of each item's own rows: their weighted losses over the sum of their targets'
weights, as each call of the loop divides (not the weights of all items' rows).
"""
from __future__ import annotations

from typing import Callable

import torch


def loss_of_rows(loss: Callable, x: torch.Tensor, t: torch.Tensor, reduction: str,
                 **kwargs) -> torch.Tensor:
    if x.dim() == 2:  # one row per item: already the rows
        return loss(x, t, reduction=reduction, **kwargs)
    swap = x.stride(0) < x.stride(1)  # the first dim is the inner one in memory
    if swap:
        x, t = x.transpose(0, 1), t.transpose(0, 1)
    out = loss(x.flatten(0, 1), t.flatten(), reduction=reduction, **kwargs)
    if reduction != "none":
        return out
    out = out.view(t.shape)
    return out.transpose(0, 1) if swap else out


def loss_of_items(loss: Callable, x: torch.Tensor, t: torch.Tensor, reduction: str,
                  ignore_index: int, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``[A]``: ``loss(x[a], t[a], reduction=reduction, ignore_index=ignore_index,
    weight=weight)`` for each item ``a``, ``reduction`` "sum" or "mean"."""
    out = loss_of_rows(loss, x, t, "none", ignore_index=ignore_index, weight=weight)
    kept = t != ignore_index
    if weight is not None:  # the item's mean divides by its kept rows' class weights
        kept = weight[t.masked_fill(~kept, 0)] * kept  # (the call has checked the targets)
    if t.dim() == 2:  # items of several rows
        out, kept = out.sum(1), kept.sum(1)
    return out if reduction == "sum" else out / kept
