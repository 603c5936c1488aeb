"""Batched form (no vmap) of ``F.one_hot(t, n)`` of per-item class indices: the same call on
the batched indices. Golden line (with a no-change case: without ``num_classes`` each item's
width would be its own, so vmap stays), equivalence of values, every gradient and dtype
(float32, float64), for 0-d and 1-D items."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent
from tests.loop_helpers import build, rewrite_source, strategies

ONE_HOT = """
    def f(x, labels, C):
        s = 0
        for i in range(len(x)):
            s = s + (F.one_hot(labels[i], C).to(x.dtype) * x[i]).sum()
        return s
    """
# each item's own width: no batched form
INFERRED = """
    def f(x, labels):
        s = 0
        for i in range(len(x)):
            s = s + F.one_hot(labels[i]).sum()
        return s
    """


def test_one_hot_is_batched():
    code, report = rewrite_source(ONE_HOT)
    assert strategies(report) == {3: "batched"}
    assert "F.one_hot(_labels_row, C)" in code


def test_one_hot_without_a_class_count_stays_vmapped():
    _, report = rewrite_source(INFERRED)
    assert strategies(report) == {3: "vmap"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [(), (6,)])  # a label per item, a row of labels per item
def test_one_hot_values_and_gradients(dtype, rows):
    original, optimized, _, report = build(ONE_HOT)
    assert strategies(report) == {3: "batched"}
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (5, *rows), generator=g)
    x = torch.randn(5, *rows, 4, generator=g, dtype=dtype)
    assert_equivalent(original, optimized, x.requires_grad_(), labels, 4)
