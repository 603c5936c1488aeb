"""Every item but the iteration's own, ``torch.cat((x[:j], x[j + 1:]))`` (GE2E's centroids but
the utterance's own speaker's): a selection by ``arange != j``, then masked dense ops; the same
values, gradients and dtype as the loop, the loop as written when the index may be negative."""
from __future__ import annotations

import pytest
import torch

from rewrite.testing import assert_equivalent
from tests.helpers import equivalent_report, load_module
from tests.loop_helpers import build, strategies

HARDEST = """
def f(cos, a, w):
    L = []
    for j in range(a, cos.shape[0]):
        cs = torch.sigmoid(cos[j])
        excl = torch.cat((cs[:j], cs[j + 1:]))
        L.append(1. - torch.sigmoid(cos[j, j]) + torch.max(excl))
    return torch.stack(L).sum()
"""

CENTROIDS = """
def f(d, a, w):
    loss = 0
    for j in range(d.shape[0]):
        others = torch.cat([d[:j], d[j + 1:]], dim=0)
        loss = loss + ((d[j] - others.mean(0)) ** 2).sum()
    return loss
"""

# the row picked in the same subscript as the slices: `sim[j, :j]` is `sim[j][:j]`
ROW_IN_SUBSCRIPT = """
def f(sim, a, margin):
    tot = 0
    for j in range(a, sim.shape[0]):
        row = torch.cat([sim[j, :j], sim[j, j + 1:]])
        tot = tot + torch.relu(row.max() - sim[j, j] + margin)
    return tot
"""


def _sims(dtype, special, shape=(5, 5)):
    x = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
    if special:  # NaN and inf off the diagonal, a tie for the maximum
        flat = x.view(len(x), -1)
        flat[0, 3], flat[2, 0], flat[4, 1] = float("nan"), float("inf"), float("-inf")
        flat[1, 2] = flat[1, 3] = 3.0
    return x.requires_grad_()


def test_golden():
    _, _, code, report = build(HARDEST)
    assert strategies(report) == {3: "vmap"}, (report, code)
    assert "_pos = torch.arange(cs.shape[0], device=cs.device)" in code
    assert "_in = _pos != j" in code and "torch.cat" not in code.split("else:")[0], code
    assert "a >= 0" in code, code  # the index counts from 0 or more


@pytest.mark.parametrize("src", [
    HARDEST.replace("cs[j + 1:]", "cs[j + 2:]"),              # not the complement of one item
    HARDEST.replace("cs[:j], cs[j + 1:]", "cs[j + 1:], cs[:j]"),  # rotated, not excluded
    HARDEST.replace("torch.cat((cs[:j], cs[j + 1:]))", "torch.cat((cs[:j], cs[j + 1:]), -1)"),
    # a slice before the cut: `x[:, :j]` is no row of x
    ROW_IN_SUBSCRIPT.replace("sim[j, :j], sim[j, j + 1:]", "sim[:, :j], sim[:, j + 1:]")
    .replace("row.max()", "row.max(0).values.sum()"),
    # a tensor of indices before the cut gathers rows: not `x[t][:j]`
    ROW_IN_SUBSCRIPT.replace("sim[j, :j], sim[j, j + 1:]", "sim[margin, :j], sim[margin, j + 1:]"),
])
def test_other_forms_stay_kept(src):
    _, _, code, report = build(src)
    assert strategies(report) == {3: "kept"}, (report, code)
    assert "varies per iteration" in report.loops[0].reason


@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("src", [HARDEST, CENTROIDS, ROW_IN_SUBSCRIPT])
def test_equivalent(src, special):
    original, optimized, _, report = build(src)
    assert report.loops[0].vectorized, report.loops[0].reason
    for dtype in (torch.float32, torch.float64):
        x = _sims(dtype, special, (5, 3, 2) if src is CENTROIDS else (5, 5))
        for a in (0, 2):
            assert_equivalent(original, optimized, x, a, 0.2 if src is ROW_IN_SUBSCRIPT else None)


NEGATIVE = """
def f(x, a, w):
    L = []
    for j in range(a, 3):
        L.append(torch.max(torch.cat((x[:j], x[j + 1:]))))
    return torch.stack(L).sum()
"""


def test_a_negative_start_runs_as_written(tmp_path):
    """``x[:-2]`` and ``x[-1:]`` leave out item 3 (of 5), ``x[:-1]`` and ``x[0:]`` overlap."""
    user = load_module(tmp_path, "import torch\n" + NEGATIVE)
    x = torch.tensor([1.0, 2.0, 3.0, 10.0, 4.0], dtype=torch.float64, requires_grad=True)
    for a, runs in ((-2, (0, 1)), (0, (1, 0))):
        report = equivalent_report(user.f, x, a, None)
        assert (report.loops[0].vectorized_runs, report.loops[0].original_runs) == runs


# cvqluu/GE2E-Loss's contrast loss: the excluded item is the outer loop's index, the inner list
# is fresh in each outer iteration (`L_row = []`), so both loops run vectorized.
OUTER = """
def f(cos, a, w):
    L = []
    for j in range(cos.shape[0]):
        L_row = []
        for i in range(cos.shape[1]):
            cs = torch.sigmoid(cos[j, i])
            excl = torch.cat((cs[:j], cs[j + 1:]))
            L_row.append(1. - torch.sigmoid(cos[j, i, j]) + torch.max(excl))
        L_row = torch.stack(L_row)
        L.append(L_row)
    return torch.stack(L).sum()
"""


def test_golden_outer_index():
    _, _, code, report = build(OUTER)
    assert strategies(report) == {3: "vmap", 5: "vmap"}, (report, code)
    vectorized = code.split("else:")[0]
    assert "_in = _pos != j" in vectorized and "torch.cat" not in vectorized, code
    assert "type(L_row) is list" not in vectorized, code  # bound to [] in every iteration


@pytest.mark.parametrize("src", [
    OUTER.replace("range(cos.shape[0])", "range(a, cos.shape[0])"),  # may start below 0
    OUTER.replace("L_row = []\n", "L_row = w\n"),                    # not a fresh list
])
def test_outer_forms_that_stay_kept(src):
    _, _, code, report = build(src)
    assert strategies(report)[3] == "kept", (report, code)


@pytest.mark.parametrize("special", [False, True])
def test_equivalent_outer_index(special):
    original, optimized, _, _ = build(OUTER)
    for dtype in (torch.float32, torch.float64):
        for n in (5, 1):  # one speaker: nothing left to take the max of, raises as the original
            x = _sims(dtype, special, (5, 3, 5))[:n, :, :n]
            if n == 1:
                with pytest.raises(RuntimeError, match="max"):
                    original(x, 0, None)
                with pytest.raises(RuntimeError, match="max"):
                    optimized(x, 0, None)
                continue
            assert_equivalent(original, optimized, x, 0, None)


# a straight-line helper inlined in the body binds its parameter to the index (`_drop_j = j`)
DROP = """
import torch


def drop_mean(x, j):
    return torch.cat([x[:j], x[j + 1:]], 0).mean(0)


def f(x, steps):
    out = []
    for j in range(steps):
        out.append(drop_mean(x, j) * 2)
    return torch.stack(out).sum()
"""


def test_golden_index_through_an_inlined_helper(tmp_path):
    user = load_module(tmp_path, DROP)
    report = equivalent_report(user.f, torch.randn(4, 3, dtype=torch.float64, requires_grad=True), 4)
    assert [(l.strategy, l.vectorized_runs) for l in report.loops] == [("vmap", 1)], report
    code = report.rewritten_source.split("else:")[0]
    assert "_drop_mean_j = j" in code and "_in = _pos != _drop_mean_j" in code, code
    assert "torch.cat" not in code, code


@pytest.mark.parametrize("before, after", [
    ("out.append(drop_mean(x, j) * 2)", "j = j + 1\n        out.append(drop_mean(x, j) * 2)"),
    ("return torch.cat([x[:j], x[j + 1:]], 0).mean(0)",
     "j = j + 0\n    return torch.cat([x[:j], x[j + 1:]], 0).mean(0)"),
])
def test_index_copies_rebound_stay_kept(tmp_path, before, after):
    """The index rebound before the copy (the copy is not the index), or the copy rebound (an
    assignment in the helper: not inlined)."""
    user = load_module(tmp_path, DROP.replace(before, after))
    report = equivalent_report(user.f, torch.randn(5, 3, dtype=torch.float64, requires_grad=True), 4)
    assert "_in = _pos != _drop_mean_j" not in report.rewritten_source, report.rewritten_source


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("special", [False, True])
def test_equivalent_index_through_an_inlined_helper(tmp_path, dtype, special):
    user = load_module(tmp_path, DROP)
    x = _sims(dtype, special)
    for steps in (5, 7):  # past the end: every row, as `x[:j]` keeps them all
        report = equivalent_report(user.f, x, steps)
        assert report.loops[0].vectorized_runs == 1 and not report.fallbacks, report
