"""A selection ``x[m]`` under a tensor condition that holds exactly when ``m`` selects something
(``if m.sum() == 0: continue``, ``if m.any():``): its dense stand-in ``torch.where(_keep, x,
False)`` reads ``x`` as it is, not ``x`` zeroed where the iteration is deselected (one
``torch.where`` per selection, not three). ``_keep`` is true only in
iterations the condition selects, so the stand-in is 0 wherever the zeroed read was, and
``x``'s gradient is 0 there either way."""
from __future__ import annotations

import pytest
import torch

from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, finite_grads

inf, nan = float("inf"), float("nan")

BODY = """
    d = pred[i][m] - target[i][m]
    s = s + (d ** 2).sum() + torch.log(pred[i][m].abs() + 1).sum()
"""


# ... under a branch: no local (a stand-in bound to a name under a condition keeps the loop)
BRANCH_BODY = """
    s = s + ((pred[i][m] - target[i][m]) ** 2).sum() + torch.log(pred[i][m].abs() + 1).sum()
"""


def loss(guard: str, body: str = BODY) -> str:
    """A masked loss with ``guard`` (a line, or a line ending in ``:`` the body goes under)."""
    inner = "    " if guard.endswith(":") else ""
    body = BRANCH_BODY if inner and body is BODY else body
    lines = [f"        {inner}{line.strip()}" for line in body.strip().splitlines()]
    return "\n".join([
        "def f(pred, target):",
        "    s = 0.0",
        "    n = 0",
        "    for i in range(pred.shape[0]):",
        "        m = target[i] > 0",
        *([] if inner else ["        n += m.sum().item()"]),  # (under a branch: distributed)
        *(f"        {g}" for g in guard.splitlines()),
        *lines,
        "    return s / max(n, 1)",
    ]) + "\n"


# guards under which each selection of ``m`` selects only in selected iterations
IMPLIED = {
    "sum_eq_0_continue": "if m.sum() == 0:\n    continue",
    "not_any_continue": "if not m.any():\n    continue",
    "sum_lt_1_continue": "if m.sum() < 1:\n    continue",
    "function_sum_continue": "if torch.sum(m) <= 0:\n    continue",
    "any_branch": "if m.any():",
    "sum_gt_0_branch": "if m.sum() > 0:",
}
# ... and under which it does not: the zeroed reads stay
NOT_IMPLIED = {
    "another_mask": "if (target[i] > 1).sum() == 0:\n    continue",
    "not_an_emptiness_test": "if m.sum() == 1:\n    continue",
    "inverted_test": "if m.sum() > 0:\n    continue",
    "and_another_condition": "if m.sum() == 0:\n    continue\nif target[i].sum() > 3:\n    continue",
}

DIRECT = "diff = torch.where(_keep, _pred_row, False) - torch.where(_keep, _target_row, False)"


def batched_line(code: str, start: str) -> str:
    """The first line of the batched form starting with ``start``."""
    return next(line.strip() for line in code.splitlines() if line.strip().startswith(start))


# ---------------------------------------------------------------------------------------------
# Golden

def test_golden_the_example_reads_its_rows_directly():
    _, _, code, report = build(loss("if m.sum() == 0:\n    continue", """
        diff = pred[i][m] - target[i][m]
        s = s + (diff ** 2).sum()
    """))
    assert report.loops[0].vectorized
    assert batched_line(code, "diff =") == DIRECT
    assert batched_line(code, "_t =") == "_t = torch.where(_keep, diff ** 2, 0)"


@pytest.mark.parametrize("name", IMPLIED)
def test_golden_implied_guards_read_the_selected_tensors_as_they_are(name):
    _, _, code, report = build(loss(IMPLIED[name]))
    assert report.loops[0].vectorized, report.loops[0].reason
    assert "torch.where(_keep, _pred_row, False) - torch.where(_keep, _target_row, False)" in code
    assert "]), _pred_row, False)" not in code


@pytest.mark.parametrize("name", NOT_IMPLIED)
def test_golden_other_guards_keep_the_zeroed_reads(name):
    _, _, code, report = build(loss(NOT_IMPLIED[name]))
    assert report.loops[0].vectorized, report.loops[0].reason
    assert "]), _pred_row, False)" in batched_line(code, "d =")


def test_golden_a_mask_bound_again_after_its_test_keeps_the_zeroed_reads():
    _, _, code, report = build(loss("if m.sum() == 0:\n    continue\nm = target[i] > 1"))
    if report.loops[0].vectorized:  # else the loop runs as written: nothing to compare
        assert "]), _pred_row, False)" in batched_line(code, "d =")


# ---------------------------------------------------------------------------------------------
# Behaviour: value, every gradient and dtype as the original's

def inputs(dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets about half valid, a row with none valid; NaN and inf in the predictions wherever
    the target is invalid (never selected), the empty row all NaN."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(5, 6, generator=g, dtype=dtype)
    target[1] = -1.0
    pred = torch.randn(5, 6, generator=g, dtype=dtype)
    pred = pred.masked_fill(target <= 0, nan)
    pred[0, :] = torch.where(target[0] <= 0, inf, pred[0])
    pred[3, :] = torch.where(target[3] <= 0, -inf, pred[3])
    return pred.requires_grad_(), target


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", list(IMPLIED) + list(NOT_IMPLIED))
def test_equivalent_with_nan_and_inf_where_nothing_selects(name, dtype, seed):
    original, optimized, code, report = build(loss({**IMPLIED, **NOT_IMPLIED}[name]))
    pred, target = inputs(dtype, seed)
    assert_equivalent(original, optimized, pred, target)
    want, got = original(pred, target), optimized(pred, target)
    assert type(got) is type(want)
    assert not isinstance(want, torch.Tensor) or got.dtype == want.dtype == dtype
    assert finite_grads(original, pred, target)
    assert finite_grads(optimized, pred, target), code


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", IMPLIED)
def test_nothing_selected_anywhere(name, dtype):
    original, optimized, _, _ = build(loss(IMPLIED[name]))
    pred = torch.full((3, 4), nan, dtype=dtype, requires_grad=True)
    target = -torch.ones(3, 4, dtype=dtype)
    want, got = original(pred, target), optimized(pred, target)
    assert type(got) is type(want) and got == want == 0.0  # the Python number, as written


def test_the_example_raises_as_written_when_no_pixel_is_valid():
    original, optimized, _, _ = build(loss("if m.sum() == 0:\n    continue", """
        diff = pred[i][m] - target[i][m]
        s = s + (diff ** 2).sum()
    """).replace("s / max(n, 1)", "s / n"))
    pred, target = torch.randn(2, 3, requires_grad=True), -torch.ones(2, 3)
    with pytest.raises(ZeroDivisionError):
        original(pred, target)
    with pytest.raises(ZeroDivisionError):
        optimized(pred, target)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_row_another_test_skips_keeps_nan_out_of_the_gradient(dtype):
    """Row 4: ``m`` selects NaN and inf predictions, but the test of another mask skips the
    row: its selected values must not reach the result or any gradient."""
    original, optimized, code, _ = build(loss(NOT_IMPLIED["another_mask"]))
    pred, target = inputs(dtype, 0)
    target[4] = 0.5
    pred = pred.detach().clone()
    pred[4] = torch.tensor([nan, inf, -inf, nan, 1.0, 2.0], dtype=dtype)
    pred.requires_grad_()
    assert_equivalent(original, optimized, pred, target)
    assert finite_grads(original, pred, target)
    assert finite_grads(optimized, pred, target), code
