"""Iterations a guarded ``continue`` skips get no gradient from the masked dense form: the
masks are ``torch.where`` on both sides of what the body computes (what is read where
deselected, and what is added), so the gradient reaching a value computed before the loop
is exactly 0 at the skipped items, as the original's (which never reads them), NaN/inf values
there included. Value, every gradient and dtype against the original, float32 and float64.

Known, documented limit (``fold_accumulators``): with every iteration skipped, a sum that
starts from a tensor still has the loop's (all-zero) sum added, so its graph reaches the value
computed before the loop, which the original's does not; where that value's own backward makes
NaN from a zero gradient (``log_softmax`` of a NaN row: ``0 - NaN * 0``), the rewrite's
gradient is NaN where the original has none. Cutting the graph there needs to know on the
host whether any iteration was selected: a sync (a graph break under torch.compile) on every
call, for a case only all-skipped calls meet. A Python-number start has that sync already
(its type must stay), and matches."""
from __future__ import annotations

import pytest
import torch

import rewrite
from rewrite.testing import assert_equivalent
from tests.helpers import load_module

SOURCE = """
import torch
import torch.nn.functional as F


def f(x, w, t, keep):
    logp = F.log_softmax(x, dim=1)
    total = {start}
    for i in range(x.shape[0]):
        if keep[i] == 0:
            continue
        total = total + -logp[i, t[i]] * {factor}
    return total
"""
STARTS = {"number": "0.0", "tensor": "(w * 2).sum()"}
FACTORS = {"batched": "1.0", "mapped": "torch.flip(x[i], [0])[0].detach().sign().abs()"}


def _inputs(dtype: torch.dtype, keep: list[int], nan_row: int | None):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 5, dtype=dtype, generator=gen)
    if nan_row is not None:
        x[nan_row, 2] = float("nan")
    w = torch.randn(3, dtype=dtype, generator=gen)
    return x.requires_grad_(), w.requires_grad_(), torch.tensor([0, 1, 2, 3]), torch.tensor(keep)


def _build(tmp_path, start: str, form: str):
    fn = load_module(tmp_path, SOURCE.format(start=STARTS[start], factor=FACTORS[form])).f
    return fn, rewrite.optimize_loss(fn, compile=False, strict=True)


@pytest.mark.parametrize("form", sorted(FACTORS))
@pytest.mark.parametrize("start", sorted(STARTS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("keep, nan_row", [
    ([1, 0, 1, 0], 1),        # the NaN row skipped: log_softmax's backward is NaN there in both
    ([1, 0, 1, 0], None),
    ([1, 1, 1, 1], 3),
    ([0, 0, 0, 0], None),     # every row skipped, all finite: zero gradients
])
def test_skipped_items_take_the_original_gradient(tmp_path, form, start, dtype, keep, nan_row):
    original, fast = _build(tmp_path, start, form)
    inputs = _inputs(dtype, keep, nan_row)
    if start == "number" and not any(keep):  # the original's 0.0: nothing to differentiate
        assert fast(*inputs) == original(*inputs) == 0.0
        return
    assert_equivalent(original, fast, *inputs)
    assert fast(*inputs).dtype == dtype
    assert fast.report.loops[0].vectorized


@pytest.mark.parametrize("form", sorted(FACTORS))
def test_every_row_skipped_with_a_number_start_stays_that_number(tmp_path, form):
    original, fast = _build(tmp_path, "number", form)
    inputs = _inputs(torch.float64, [0, 0, 0, 0], 1)
    assert fast(*inputs) == original(*inputs) == 0.0
    assert type(fast(*inputs)) is float


@pytest.mark.xfail(strict=True, reason="documented: every iteration skipped, a tensor start, "
                   "a NaN before the loop: NaN gradient where the original has none")
def test_every_row_skipped_with_a_tensor_start_and_a_nan_before_the_loop(tmp_path):
    original, fast = _build(tmp_path, "tensor", "batched")
    x, w, t, keep = _inputs(torch.float64, [0, 0, 0, 0], 1)
    fast(x, w, t, keep).backward()
    assert x.grad is None or not x.grad.isnan().any()
