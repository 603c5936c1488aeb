"""Batched forms (no vmap) of ``var`` / ``std`` of loop items: over the item's dims, or ``dim``
shifted by one, the options (``unbiased``, ``correction``, ``keepdim``) passed by keyword.
Golden lines (with a no-change case: an option that varies with the loop keeps vmap),
equivalence of values, every gradient and dtype (float32, float64) with constant items (a zero
standard deviation: NaN gradients, as written) and NaN."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent
from tests.loop_helpers import build, rewrite_source, strategies

DTYPES = [torch.float32, torch.float64]

VARIANCES = """
    def f(x, y):
        s, rows = 0, []
        for i in range(len(x)):
            s = s + x[i].var() + torch.var(x[i] - y[i], unbiased=False) + y[i].std(0, False).sum()
            rows.append(x[i].std(dim=(0, 1), keepdim=True) + torch.var(y[i], -1, correction=0).sum())
        return s, torch.stack(rows)
    """
VARIANCES_BATCHED = [
    "_x_row.var(tuple(range(1, _x_row.dim()))) if _x_row.dim() > 1 else "
    "_x_row.reshape(len(_x_row), -1).var(1)",
    "_y_row.std((1,), unbiased=False)",
    "_x_row.std((1, 2), keepdim=True)",
    "_y_row.var((-1,), correction=0)"]
# the correction differs per item: no batched form
PER_ITEM = """
    def f(x):
        s = 0
        for i in range(len(x)):
            s = s + x[i].var(correction=i % 2)
        return s
    """


def test_variances_are_batched():
    code, report = rewrite_source(VARIANCES)
    assert strategies(report) == {3: "batched"}
    assert all(line in code for line in VARIANCES_BATCHED)


def test_a_correction_varying_with_the_loop_stays_vmapped():
    code, report = rewrite_source(PER_ITEM)
    assert strategies(report) == {3: "vmap"}


@pytest.mark.parametrize("dtype", DTYPES)
def test_variance_values_and_gradients(dtype):
    original, optimized, _, report = build(VARIANCES)
    assert strategies(report) == {3: "batched"}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 4, generator=g, dtype=dtype)
    y = torch.randn(5, 3, 4, generator=g, dtype=dtype)
    x[1] = 2.0                   # a constant item: zero spread, NaN gradients of its std
    y[3, 0, 1] = float("nan")
    assert_equivalent(original, optimized, x.requires_grad_(), y.requires_grad_())
