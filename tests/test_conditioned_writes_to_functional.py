"""``conditioned_writes_to_functional``: in-place writes into a tensor the iteration made, under a
tensor condition or after a guarded ``continue`` (label smoothing with an ignored label), are
their functional forms before the checks, so the loop is vectorized with the writes masked.
Value, every gradient and dtype against the original (float32, float64; NaN/inf in deselected
rows, deselected labels out of range, none selected); a selected label out of range raises the
original's ``IndexError``; writes into what the iteration did not make keep the loop."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent
from tests.loop_helpers import build, strategies

SMOOTHING = """
def f(x, target, eps, ignore_index):
    n, c = x.shape
    logp = torch.log_softmax(x, dim=-1)
    loss = x.new_zeros(())
    for i in range(n):
        if target[i] == ignore_index:
            continue
        row = torch.full((c,), eps / (c - 1), dtype=x.dtype)
        row[target[i]] = 1 - eps
        loss = loss - (row * logp[i]).sum()
    return loss
"""

# a write inside a tensor `if`, into a tensor made there (`zeros_like`), and an in-place method
BRANCH = """
def f(x, y):
    total = 0
    for i in range(x.shape[0]):
        if y[i] >= 0:
            hot = torch.zeros_like(x[i])
            hot[y[i]] += 2.0
            hot.mul_(0.5)
            total = total + (hot * x[i]).sum()
    return total
"""


def _x(n, c, dtype, seed=0):
    return torch.randn(n, c, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def test_golden_smoothing_row_is_vectorized():
    _, _, code, report = build(SMOOTHING)
    assert strategies(report) == {5: "vmap"}, report.loops[0].reason
    body = code[code.index("def _body"):code.index("_outs = ")]
    assert ".scatter(" in body and "row[" not in body
    # the label is read at 0 where the row is skipped (a -100 there indexes nothing)
    assert "[torch.where(_mask, _target_row, torch.zeros_like(_target_row))]" in body


@pytest.mark.parametrize("labels", ["some_ignored", "none_ignored", "all_ignored"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_smoothing_equivalent(labels, dtype):
    original, optimized, _, report = build(SMOOTHING)
    assert strategies(report) == {5: "vmap"}
    x = _x(6, 5, dtype)
    target = {"some_ignored": torch.tensor([0, -100, 4, 2, -100, 1]),
              "none_ignored": torch.tensor([0, 3, 4, 2, 4, 4]),  # ties of labels
              "all_ignored": torch.full((6,), -100)}[labels]
    if labels == "some_ignored":
        x[1, 2], x[4, 0] = float("nan"), float("inf")  # rows the loop skips
    assert_equivalent(original, optimized, x.requires_grad_(), target, 0.1, -100)
    assert optimized(x, target, 0.1, -100).dtype == dtype


def test_selected_label_out_of_range_raises_as_the_original():
    original, optimized, _, report = build(SMOOTHING)
    assert strategies(report) == {5: "vmap"}
    x, target = _x(6, 5, torch.float32), torch.tensor([0, -100, 7, 2, -100, 1])
    with pytest.raises(IndexError) as want:
        original(x, target, 0.1, -100)
    with pytest.raises(IndexError) as got:
        optimized(x, target, 0.1, -100)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_write_in_a_tensor_branch_equivalent(dtype):
    original, optimized, _, report = build(BRANCH)
    assert strategies(report) == {3: "vmap"}, report.loops[0].reason
    x, y = _x(5, 4, dtype, 1), torch.tensor([1, -1, 3, -7, 1])
    x[1, 0], x[3, 3] = float("nan"), float("-inf")
    assert_equivalent(original, optimized, x.requires_grad_(), y)
    assert optimized(x, y).dtype == dtype


@pytest.mark.parametrize("made", [
    "x[i]",                                               # a row of the input: a view
    "torch.full((x.shape[1],), 1.0, requires_grad=True)",  # a leaf: writing into it raises
])
def test_writes_into_what_the_iteration_did_not_make_keep_the_loop(made):
    original, optimized, _, report = build(f"""
def f(x, y):
    total = 0
    for i in range(x.shape[0]):
        if y[i] >= 0:
            row = {made}
            row[y[i]] = 0.0
            total = total + row.sum()
    return total
""")
    assert strategies(report) == {3: "kept"}
    assert "in-place write under a tensor condition" in report.loops[0].reason
