"""``logsumexp(x, 1) - x[rows, labels]`` per row with the original's value and gradients, at the
cost of ``F.cross_entropy`` plus two row maxima and one pass into its buffer, for generated code.

``F.cross_entropy`` is the fast form of this difference but differs where a row holds ``+inf``:
its log-softmax is NaN everywhere in that row, where the original is ``inf`` (NaN at an ``+inf``
label) with NaN gradients at the ``+inf`` logits only. Choosing between both forms per row would
compute both. This autograd.Function takes ``lse`` from the fused log-softmax (``max(x) -
max(log_softmax(x))``; ``inf`` at a row holding ``+inf``, as ``logsumexp``), keeps eager's ``x -
lse`` in the log-softmax's buffer, and backpropagates through log-softmax's fused backward, which
computes eager's ``g * exp(x - lse)`` (logsumexp's backward) plus ``-g`` at the label (the
gather's): every row, finite or not, gets the original's arithmetic. A double backward runs the
same formulas with differentiable ops; the vmap rule is derived (``generate_vmap_rule``).
"""
from __future__ import annotations

import torch


class _LogsumexpCrossEntropy(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(logits: torch.Tensor, labels: torch.Tensor):
        shifted = torch.log_softmax(logits, 1)  # the fused kernel: x - max - log(sum(exp(x - max)))
        top = logits.amax(1)
        # At the max, log_softmax is -log(sum) exactly (its largest value): lse is max + log(sum),
        # logsumexp's value. A row holding +inf has a NaN log_softmax: its lse is inf (logsumexp's).
        lse = torch.where(top == torch.inf, top, top - shifted.amax(1))
        if torch._C._functorch.is_batchedtensor(logits):  # under vmap: no out= (no batching rule)
            shifted.copy_(logits).sub_(lse[:, None])
        else:  # eager's x - lse, in log_softmax's buffer (one pass, no new allocation)
            torch.sub(logits, lse[:, None], out=shifted)
        return lse - logits.gather(1, labels[:, None])[:, 0], shifted

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.mark_non_differentiable(output[1])  # only the loss is returned to the caller
        ctx.set_materialize_grads(False)  # no [N, C] zeros as the gradient of that second output
        ctx.save_for_backward(inputs[0], inputs[1], output[1])

    @staticmethod
    def backward(ctx, g: torch.Tensor, _):
        logits, labels, shifted = ctx.saved_tensors
        if g is None or not ctx.needs_input_grad[0]:
            return None, None
        g = g[:, None]
        if torch.is_grad_enabled():  # a double backward: differentiable ops only
            softmax = (logits - torch.logsumexp(logits, 1, keepdim=True)).exp()
            return (g * softmax).scatter_add(1, labels[:, None], -g), None
        # log_softmax's fused backward, go - exp(shifted) * go.sum(1) with go the gather's
        # gradient (-g at the label): g * exp(x - lse) - g at the label, eager's sum.
        at_label = torch.zeros_like(shifted).scatter_add_(1, labels[:, None], -g)
        return torch._log_softmax_backward_data(at_label, shifted, 1, shifted.dtype), None


def logsumexp_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[N]``: ``logsumexp(logits[i]) - logits[i, labels[i]]`` for ``logits`` [N, C] and int64
    ``labels`` [N] in ``[0, C)``."""
    return _LogsumexpCrossEntropy.apply(logits, labels)[0]
