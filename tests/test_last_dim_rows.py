"""Rows along the last dim, ``y_pred[..., i]`` (a per-quantile or per-channel loop, as forecasting
losses write it): a row parameter of ``y_pred`` moved to the front (before: "index without a
batched form", a vmap slower than the loop). Golden (with a no-change case: inside an outer loop
the rows stay indexed), equivalence of values, every gradient and dtype (float32, float64), for
predictions of rank 2 and 3; a 1-D prediction's items are 0-d."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent
from tests.loop_helpers import build, rewrite_source, strategies

PINBALL = """
    def f(y_pred, target):
        tot = 0
        for i in range(y_pred.shape[-1]):
            e = target - y_pred[..., i]
            tot = tot + torch.max(0.3 * e, -0.7 * e).mean()
        return tot
    """
NESTED = """
    def f(y_pred, target):
        tot = 0
        for b in range(len(y_pred)):
            for i in range(y_pred.shape[-1]):
                tot = tot + (target[b] - y_pred[b][..., i]).abs().mean()
        return tot
    """


def test_last_dim_rows_are_batched():
    code, report = rewrite_source(PINBALL)
    assert strategies(report) == {3: "batched"}
    assert "(y_pred.dim() >= 1 and y_pred.shape[-1] <= y_pred.shape[-1])" in code
    assert "y_pred[..., 0:y_pred.shape[-1]:1]).movedim(-1, 0)" in code


def test_last_dim_rows_of_an_inner_loop_stay_indexed():
    code, _ = rewrite_source(NESTED)
    assert ".movedim(-1, 0)" not in code


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(5, 7, 3), (5, 3), (3,)])
def test_last_dim_rows_values_and_gradients(dtype, shape):
    original, optimized, _, report = build(PINBALL)
    assert strategies(report) == {3: "batched"}
    g = torch.Generator().manual_seed(0)
    y_pred = torch.randn(*shape, generator=g, dtype=dtype)
    target = torch.randn(shape[:-1], generator=g, dtype=dtype)
    y_pred[..., 1] = target  # ties of the two slopes at zero error
    assert_equivalent(original, optimized, y_pred.requires_grad_(), target.requires_grad_())
