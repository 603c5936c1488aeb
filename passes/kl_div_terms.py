"""``F.kl_div`` as its pointwise terms under ``torch.vmap``, for generated code.

PyTorch has no batching rule for ``aten::kl_div``: under vmap it runs the op once per item
(functorch's fallback, with a performance warning from inside ``torch.nn.functional``, not at
the user's line). Its terms are two elementwise ops, the ones ATen computes (``xlogy(t, t) - t
* x``, or ``exp(t) * (t - x)`` for a log target), so the vmapped body calls this instead (the
registry's ``OpSpec.vmap_fn``): the same values and gradients, NaN and inf included, reduced as
the functional form reduces (``"batchmean"``: the sum over the item's first dim's size). The
legacy ``size_average``/``reduce`` arguments and ``"mean"`` (which the functional form warns
about on every call) go to ``F.kl_div`` itself, as do values that are not real tensors and
unknown reductions (its checks and errors).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_div(input, target, size_average=None, reduce=None, reduction: str = "mean",
           log_target: bool = False):
    """``F.kl_div(input, target, ...)``: its terms for ``reduction`` "none", "sum" and
    "batchmean" of real tensors; the functional form otherwise."""
    if size_average is not None or reduce is not None \
            or reduction not in ("none", "sum", "batchmean") \
            or not (isinstance(input, torch.Tensor) and isinstance(target, torch.Tensor)) \
            or input.is_complex() or target.is_complex():
        return F.kl_div(input, target, size_average, reduce, reduction, log_target)
    terms = torch.exp(target) * (target - input) if log_target \
        else torch.xlogy(target, target) - target * input
    if reduction == "none":
        return terms
    total = terms.sum()
    return total / input.size(0) if reduction == "batchmean" and input.dim() != 0 else total
