"""Batched form (no vmap) of a class loss per item with ``reduction='none'`` (a sequence's token
losses, reduced after the call: ``crit(logp[b], t[b]).mean(axis=0)``): one call on all rows,
each item's losses in its targets' shape (``row_losses.loss_of_rows``); and numpy's ``axis=``
for a reduction's ``dim=``. Golden lines (with a no-change case: the unreduced losses summed
over the loop keep vmap, as before), equivalence of values, every gradient and dtype (float32,
float64) with ignored rows, a class weight and one-row items."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from rewrite import assert_equivalent
from rewrite import optimize_loss
from tests.loop_helpers import build, rewrite_source, strategies

DTYPES = [torch.float32, torch.float64]

TOKENS = """
    def f(logp, t, w):
        out = []
        for b in range(logp.shape[0]):
            l = F.nll_loss(logp[b], t[b], ignore_index=0, reduction="none")
            out.append(l.mean(axis=0) * w[b])
        return torch.stack(out).sum() / w.sum()
    """


def module_tokens(logp, t, w):
    """The same with the loss a module the function makes, as sequence losses write it."""
    crit = nn.NLLLoss(reduction="none", ignore_index=0)
    out = []
    for b in range(logp.shape[0]):
        l = crit(logp[b], t[b])
        out.append(l.mean(axis=0) * w[b])
    return torch.stack(out).sum() / w.sum()


WEIGHTED = """
    def f(x, t, cw):
        out = []
        for b in range(x.shape[0]):
            out.append(F.cross_entropy(x[b], t[b], weight=cw, reduction="none"))
        return torch.stack(out)
    """
# the unreduced losses of the items summed over the loop: no one-call form (vmap, as before)
SUMMED = """
    def f(x, t):
        s = 0
        for b in range(x.shape[0]):
            s = s + F.cross_entropy(x[b], t[b], reduction="none")
        return s
    """


def test_unreduced_token_losses_are_one_call():
    code, report = rewrite_source(TOKENS)
    assert strategies(report) == {3: "batched"}
    assert "_loss_of_rows(F.nll_loss, _logp_row, _t_row, 'none', ignore_index=0)" in code
    assert ".mean(dim=1)" in code


def test_unreduced_losses_summed_over_the_loop_stay_vmapped():
    code, report = rewrite_source(SUMMED)
    assert strategies(report) == {3: "vmap"}
    assert "_loss_of_rows" not in code


def _tokens(dtype: torch.dtype, shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, 5, generator=g, dtype=dtype)
    t = torch.randint(0, 5, shape, generator=g)
    return x, t


@pytest.mark.parametrize("dtype", DTYPES)
def test_unreduced_token_loss_values_and_gradients(dtype):
    x, t = _tokens(dtype, (4, 6))
    t[2] = 0  # an item of ignored rows only: its mean is NaN as written
    w = torch.rand(4, dtype=dtype)
    original, optimized, _, report = build(TOKENS)
    assert strategies(report) == {3: "batched"}
    module_optimized = optimize_loss(module_tokens, compile=False)
    inputs = (x.log_softmax(-1).requires_grad_(), t, w.requires_grad_())
    assert_equivalent(original, optimized, *inputs)
    assert_equivalent(module_tokens, module_optimized, *inputs)
    assert set(strategies(module_optimized.report).values()) == {"batched"}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 6), (4,)])  # items of rows, items of one row
def test_unreduced_weighted_losses(dtype, shape):
    original, optimized, _, report = build(WEIGHTED)
    assert strategies(report) == {3: "batched"}
    x, t = _tokens(dtype, shape)
    cw = torch.linspace(0.5, 2.0, 5, dtype=dtype)
    assert_equivalent(original, optimized, x.requires_grad_(), t, cw)
