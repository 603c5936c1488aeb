"""Slices at a loop element (a label): ``P[y:y + 1]`` becomes ``P[y].unsqueeze(0)`` and
``torch.cat((w[i, :y], w[i, y + 1:]))`` a gather of the ``n - 1`` other positions; the same
values, gradients and dtype as the loop, the loop as written when a label is out of ``[0, n)``
or not an int64/int32 tensor."""
from __future__ import annotations

import pytest
import torch

from rewrite.testing import assert_equivalent
from tests.helpers import equivalent_report, load_module
from tests.loop_helpers import build, strategies

OWN_ROW = """
def f(w, labels):
    rows = []
    for y in labels:
        rows.append(w[y:y + 1, :] * 2)
    return torch.stack(rows).sum()
"""

SUMMED_ROWS = """
def f(w, labels):
    loss = 0
    for y in labels:
        loss = loss + w[y:y + 1, :].pow(2).sum()
    return loss
"""

OTHERS = """
def f(w, labels):
    loss = 0
    for i, y in enumerate(labels):
        others = torch.cat((w[i, :y], w[i, y + 1:]))
        loss = loss + torch.logsumexp(others, 0) - w[i, y]
    return loss
"""

# the proxies as metric losses gather them: every class but the sample's own, then its rows
CLASSES = """
def f(w, labels):
    classes = torch.arange(w.shape[0])
    neg = torch.stack([torch.cat([classes[:c], classes[c + 1:]]) for c in labels])
    return torch.stack([w[n, :] for n in neg]).pow(2).sum()
"""

# tuples of rows as N-pair losses sample them: anchor, positive, then negatives
TUPLES = """
def f(w, tuples):
    return torch.stack([(w[t[0]:t[0] + 1, :] @ (w[t[2:], :] - w[t[1]:1 + t[1], :]).T).sum()
                        for t in tuples]).exp().mean()
"""


def test_golden_unit_slice():
    _, _, code, report = build(OWN_ROW)
    assert strategies(report) == {3: "vmap"}, (report, code)
    assert "_rows_item = w[y, :].unsqueeze(0) * 2" in code, code
    assert "bool(((_labels_stacked >= 0) & (_labels_stacked < w.shape[0])).all())" in code, code


def test_golden_cut():
    _, _, code, report = build(OTHERS)
    assert strategies(report) == {3: "vmap"}, (report, code)
    assert "_q = torch.arange(_w_stacked.shape[1] - 1, device=_w_stacked.device)" in code, code
    assert "_others = _q + (_q >= y)\n            others = _w_row[_others]" in code, code
    assert "_labels_stacked.dtype in (torch.int64, torch.int32)" in code, code
    # (the loop as written follows the vectorized form: for 16-bit items added twice an iteration)
    assert "torch.cat" not in code.split("optimize_loss: as written")[0].split("else:")[0], code


def test_golden_unit_slice_at_an_element_column():
    _, _, code, report = build(TUPLES)
    assert strategies(report) == {2: "vmap"}, (report, code)
    assert "w[_t[0], :].unsqueeze(0) @ (w[_t[2:], :] - w[_t[1], :].unsqueeze(0)).T" in code, code
    assert ("_tuples_stacked.dim() == 2 and (_tuples_stacked.shape[1] > 1) and "
            "isinstance(_tuples_stacked[:, 1], torch.Tensor)") in code, code
    assert "bool(((_tuples_stacked[:, 0] >= 0) & (_tuples_stacked[:, 0] < w.shape[0])).all())" in code, code


@pytest.mark.parametrize("src", [
    TUPLES.replace("t[1]:1 + t[1]", "t[1]:1 + t[0]"),              # bounds at two columns
    TUPLES.replace("t[0]:t[0] + 1", "t[-1]:t[-1] + 1"),            # a column from the end
    OTHERS.replace("w[i, y + 1:]", "w[i, y + 2:]"),                 # not the complement of one item
    OTHERS.replace("w[i, :y], w[i, y + 1:]", "w[i, y + 1:], w[i, :y]"),  # rotated
    OTHERS.replace("torch.cat((w[i, :y], w[i, y + 1:]))", "torch.cat((w[i, :y], w[i, y + 1:]), -1)"),
    OWN_ROW.replace("w[y:y + 1, :]", "w[y:y + 2, :]"),              # two rows: not a unit slice
])
def test_other_forms_are_unchanged(src):
    _, _, code, report = build(src)
    assert "unsqueeze" not in code and "_others" not in code, code
    assert not any(l.vectorized for l in report.loops), report


def _table(dtype, special):
    w = torch.randn(5, 4, dtype=dtype, generator=torch.Generator().manual_seed(0))
    if special:  # NaN and inf off and on the labels' entries, a tie
        w[0, 3], w[2, 0], w[4, 1], w[1, 1] = float("nan"), float("inf"), float("-inf"), float("nan")
        w[3, 2] = w[3, 3] = 2.0
    return w.requires_grad_()


@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("src", [OWN_ROW, SUMMED_ROWS, OTHERS, CLASSES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equivalent(src, dtype, special):
    original, optimized, _, report = build(src)
    assert all(loop.vectorized for loop in report.loops), report
    for labels in (torch.tensor([3, 0, 1, 3, 2]), torch.tensor([0, 3, 2], dtype=torch.int32)):
        assert_equivalent(original, optimized, _table(dtype, special), labels)


@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equivalent_at_element_columns(dtype, special):
    original, optimized, _, report = build(TUPLES)
    assert all(loop.vectorized for loop in report.loops), report
    for tuples in (torch.tensor([[3, 0, 1, 2], [0, 4, 2, 2], [4, 4, 0, 1]]),
                   torch.tensor([[1, 2, 3]], dtype=torch.int32)):
        assert_equivalent(original, optimized, _table(dtype, special), tuples)


def test_element_columns_out_of_range_or_narrow_run_as_written(tmp_path):
    """A negative bound (``w[-1:0]`` is empty) or a bound past the end (an empty row): the loop
    as written, with its own result; rows without negatives are vectorized (an empty gather);
    rows too short for the columns raise the loop's IndexError, not one of the check."""
    from rewrite import optimize_loss
    user = load_module(tmp_path, "import torch\n" + TUPLES)
    w = _table(torch.float64, False)
    for tuples, runs in ((torch.tensor([[3, 0, 1], [0, 4, 2]]), (1, 0)),
                         (torch.tensor([[3, -1, 1], [0, 4, 2]]), (0, 1)),
                         (torch.tensor([[3, 0, 1], [5, 4, 2]]), (0, 1)),
                         (torch.tensor([[3, 0], [0, 4]]), (1, 0))):
        report = equivalent_report(user.f, w, tuples)
        assert (report.loops[0].vectorized_runs, report.loops[0].original_runs) == runs, tuples
    with pytest.raises(IndexError, match="index 1 is out of bounds"):
        optimize_loss(user.f, compile=False)(w, torch.tensor([[3], [0]]))
