"""Rows read with a new dim in front, spelled ``np.newaxis`` as older losses do (a per-sample
cross entropy of ``preds[i, :][np.newaxis, :]`` against ``targets[np.newaxis, i]``, weighted by
a per-sample probability): batched (before: the runtime check required ``np.newaxis`` to be an
int, and the loop always ran as written). Equivalence of values, every gradient and dtype
(float32, float64), with the run-time counts showing the vectorized form ran."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rewrite import assert_equivalent, optimize_loss
from tests.loop_helpers import build, strategies


class CroppedLoss:
    """Per-sample loss weighted by the sample's probability, each sample a batch of one."""

    def __init__(self):
        self.loss_function = nn.CrossEntropyLoss()

    def __call__(self, preds, targets, probability):
        loss = 0
        for i in range(0, preds.shape[0]):
            row = preds[i, :]
            row = row[np.newaxis, :]
            target = targets[np.newaxis, i]
            loss += self.loss_function(row, target) * probability[i]
        return loss / preds.shape[0]


def cropped(preds, targets, probability):
    return CroppedLoss()(preds, targets, probability)


NEW_AXES = """
    def f(x, y):
        s = 0
        for i in range(len(x)):
            s = s + (x[np.newaxis, i] * y[i][np.newaxis]).sum(1).mean()
        return s
    """


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_new_axes_of_rows_are_batched(dtype):
    g = torch.Generator().manual_seed(0)
    preds = torch.randn(12, 7, generator=g, dtype=dtype).requires_grad_()
    targets = torch.randint(0, 7, (12,), generator=g)
    probability = torch.rand(12, generator=g, dtype=dtype).requires_grad_()
    optimized = optimize_loss(cropped, compile=False)
    assert_equivalent(cropped, optimized, preds, targets, probability)
    assert set(strategies(optimized.report).values()) == {"batched"}
    assert "[ran: vectorized 1, as written 0]" in str(optimized.report)

    original, rewritten, _, report = build(NEW_AXES)
    assert strategies(report) == {3: "batched"}
    x, y = torch.randn(5, 3, 4, dtype=dtype), torch.randn(5, 3, 4, dtype=dtype)
    assert_equivalent(original, rewritten, x.requires_grad_(), y.requires_grad_())
