"""``F.nll_loss`` with class weights under ``torch.vmap``, for generated code: the target entries
picked first, then weighted.

Under vmap, functorch runs a composite of its own for ``nll_loss``, which multiplies the whole
input by the class weights before picking each row's target entry: two full-size products
(forward and backward) where eager reads one entry per row. A loop of per-step losses over
``[B, V]`` log-probabilities with a large vocabulary spends most of its vectorized time there.
So the vmapped body calls this instead (the registry's ``OpSpec.vmap_fn``): the entry at each
target (``gather``), times its class weight, zero at ``ignore_index`` (a ``where``, never a
product: eager skips those rows, whatever they hold), summed or averaged over the total weight
of the rows kept, as eager does (NaN when every row is ignored). Calls it does not cover
(legacy ``size_average``/``reduce``, a weight that takes a gradient, a weight of the wrong
size, a non-``long`` target, mismatched shapes) go to ``F.nll_loss``, with its checks and errors,
and a target of a dtype eager refuses raises eager's error (``class_index_targets``: a ``uint8``
one is read as ``int64``), with or without a weight.
A target out of range fails in the ``gather`` (a RuntimeError, not eager's IndexError: the
runtime then runs the loop as written, which raises the original's).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .class_index_targets import index_target


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """``F.nll_loss``; with a class weight, the target entries picked before weighting."""
    target = index_target(target)  # functorch's form takes int32/bool targets, refuses uint8
    if weight is None or not _covered(input, target, weight, size_average, reduce, reduction):
        return F.nll_loss(input, target, weight, size_average, ignore_index, reduce, reduction)
    dim = 0 if input.dim() == 1 else 1
    keep = target != ignore_index
    safe = torch.where(keep, target, 0)
    picked = input.gather(dim, safe.unsqueeze(dim)).squeeze(dim)
    w = weight[safe]
    loss = torch.where(keep, -(picked * w), 0)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / torch.where(keep, w, 0).sum()


def _covered(input, target, weight, size_average, reduce, reduction) -> bool:
    """The calls this form covers; ``F.nll_loss`` raises or runs the others as eager does."""
    if size_average is not None or reduce is not None or reduction not in ("none", "sum", "mean"):
        return False
    if input.dim() < 1 or target.dtype != torch.long or not input.is_floating_point():
        return False
    dim = 0 if input.dim() == 1 else 1
    shape_ok = target.shape == input.shape[:dim] + input.shape[dim + 1:]
    return (shape_ok and weight.shape == (input.shape[dim],) and weight.dtype == input.dtype
            and not (weight.requires_grad and torch.is_grad_enabled()))
