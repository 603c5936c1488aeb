"""``F.binary_cross_entropy_with_logits`` with eager's value and gradients under ``torch.vmap``,
for generated code.

Under vmap, functorch does not run the op: it runs a composite of its own (``max_val =
(-x).clamp_min(0)``, then ``log(exp(-max_val) + exp(-x - max_val))``), and autograd
differentiates that composite. At an infinite logit ``-x - max_val`` is ``inf - inf``: a NaN
gradient where eager's (``sigmoid(x) - target``) is finite. So the vmapped body calls this
instead (the registry's ``OpSpec.vmap_fn``): the same arguments, checks and errors as the
functional form, eager's formulas for the value and for both gradients, in an autograd.Function
whose vmap rule torch derives from them (``generate_vmap_rule``). Dynamo turns an
autograd.Function into an op without a vmap rule, so under ``torch.compile`` the call runs
outside the graph (a graph break: the vmap around it runs eagerly, with eager's gradients).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn import _reduction

_MEAN, _SUM = _reduction.get_enum("mean"), _reduction.get_enum("sum")


class _Loss(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, target, weight, pos_weight, reduction):
        log_weight = 1 if pos_weight is None else (pos_weight - 1) * target + 1
        loss = (1 - target) * x - log_weight * F.logsigmoid(x)
        if weight is not None:
            loss = loss * weight
        return loss.mean() if reduction == _MEAN else loss.sum() if reduction == _SUM else loss

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, target, weight, pos_weight, ctx.reduction = inputs
        ctx.save_for_backward(x, target, weight, pos_weight)

    @staticmethod
    def backward(ctx, grad):
        x, target, weight, pos_weight = ctx.saved_tensors
        if pos_weight is None:
            dx, dt = x.sigmoid() - target, -x
        else:
            t = pos_weight * target
            dx = (t + 1 - target) * x.sigmoid() - t
            dt = F.logsigmoid(-x) - F.logsigmoid(x) * pos_weight
        return (_scaled(dx, grad, weight, ctx.reduction) if ctx.needs_input_grad[0] else None,
                _scaled(dt, grad, weight, ctx.reduction) if ctx.needs_input_grad[1] else None,
                None, None, None)


def _scaled(d: torch.Tensor, grad: torch.Tensor, weight, reduction: int) -> torch.Tensor:
    """Eager's chain rule, in eager's order (the same rounding)."""
    d = d * grad
    if weight is not None:
        d = d * weight
    return d / d.numel() if reduction == _MEAN else d


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """``F.binary_cross_entropy_with_logits``, its gradients eager's under vmap too."""
    for name, w in (("weight", weight), ("pos_weight", pos_weight)):
        if w is not None and w.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(f"The function 'binary_cross_entropy_with_logits' is not "
                               f"differentiable with respect to argument '{name}'. This input "
                               "cannot have requires_grad True.")
    if size_average is not None or reduce is not None:
        reduction = _reduction.legacy_get_string(size_average, reduce)
    if target.size() != input.size():
        raise ValueError(f"Target size ({target.size()}) must be the same as input size "
                         f"({input.size()})")
    if input.dtype != target.dtype:  # eager rounds to the target's dtype after every step
        return F.binary_cross_entropy_with_logits(input, target, weight, reduction=reduction,
                                                  pos_weight=pos_weight)
    if torch.compiler.is_compiling():
        return _eager_apply(input, target, weight, pos_weight, _reduction.get_enum(reduction))
    return _Loss.apply(input, target, weight, pos_weight, _reduction.get_enum(reduction))


@torch.compiler.disable
def _eager_apply(*args):
    """``_Loss.apply`` run by Python, not traced by Dynamo."""
    return _Loss.apply(*args)
