"""Loops mapped over their index hand it to a module helper as a 0-d integer tensor, which the
helper takes where it reads it only as an index, in a comparison with its own loop's index or as
a cut (GE2E's ``for spk: for utt: for centroid: if spk == c: centroid = get_centroid(emb, spk,
utt)``, the helper excluding utterance ``utt`` in its own loop): every loop runs vectorized, with
the original's values, gradients and dtype (float32, float64, ties, NaN, inf). A helper testing
the index in Python keeps the loop that would hand it a tensor."""
from __future__ import annotations

import pytest
import torch

from rewrite import optimize_loss
from tests.helpers import equivalent_report, load_module

LOSS = """
import torch
import torch.nn.functional as F


def own(x, s, k):
    acc = 0
    for j, row in enumerate(x[s]):
        if j == k:
            continue
        acc = acc + row
    return acc / (len(x[s]) - 1)


def f(x, c):
    out = x.new_zeros(x.shape[0], x.shape[1], c.shape[0])
    for s, spk in enumerate(x):
        for u, utt in enumerate(spk):
            for k, cen in enumerate(c):
                if s == k:
                    cen = own(x, s, u)
                out[s][u][k] = F.cosine_similarity(utt, cen, dim=0)
    return out.sum()


def rows(x, w):
    out = x.new_zeros(x.shape[0], x.shape[1])
    for i, row in enumerate(x):
        for j, v in enumerate(row):
            out[i, j] = (v * w).sum()
    return out.sum()
"""
OUTER, MIDDLE, INNER = 17, 18, 19


def _inputs(dtype, kind="plain"):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, generator=g, dtype=dtype)
    if kind == "ties":  # equal utterances: equal centroids and cosines
        x[:, 1] = x[:, 0]
    elif kind in ("nan", "inf"):
        x[1, 2, 3] = float(kind)
    return x.requires_grad_(), torch.randn(3, 5, generator=g, dtype=dtype).requires_grad_()


def _loop(report, line):
    return next(lp for lp in report.loops if lp.lineno == line)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["plain", "ties", "nan", "inf"])
def test_loops_around_a_helper_taking_index_tensors_run_vectorized(tmp_path, dtype, kind):
    user = load_module(tmp_path, LOSS)
    report = equivalent_report(user.f, *_inputs(dtype, kind))
    for line in (OUTER, MIDDLE, INNER):
        assert _loop(report, line).vectorized, _loop(report, line).reason
    outer = _loop(report, OUTER)
    assert (outer.vectorized_runs, outer.failed_runs, outer.original_runs) == (1, 0, 0)


@pytest.mark.parametrize("helper_loop", [
    # `range(k)` needs the int
    "        if j == k:\n            continue\n        acc = acc + row * len(range(k))",
    # whether some row is selected is not known on the host for a tensor `k`
    "        if j == k:\n            acc = acc + row",
])
def test_a_helper_testing_the_index_in_python_keeps_the_loop_handing_it(tmp_path, helper_loop):
    """The loop over ``u`` stays, its inner loop vectorized in each iteration."""
    src = LOSS.replace("        if j == k:\n            continue\n        acc = acc + row",
                       helper_loop)
    assert src != LOSS
    user = load_module(tmp_path, src)
    report = equivalent_report(user.f, *_inputs(torch.float64))
    shift = src.count("\n") - LOSS.count("\n")  # lines the helper's loop gained
    middle = _loop(report, MIDDLE + shift)
    assert not middle.vectorized and "type(u) is int" in middle.reason, middle.reason
    assert _loop(report, INNER + shift).vectorized_runs == 12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [0, 2, 7])
def test_an_exclusion_by_a_tensor_index_gives_the_originals_value(tmp_path, dtype, k):
    """Called with a 0-d tensor, the helper's test whether some row passes reads no tensor."""
    user = load_module(tmp_path, LOSS)
    x, _ = _inputs(dtype)
    report = equivalent_report(user.own, x, 1, torch.tensor(k))
    loop = _loop(report, 8)
    assert (loop.vectorized_runs, loop.failed_runs) == (1, 0), loop.reason


def test_one_row_excluded_by_a_tensor_index_raises_the_originals_error(tmp_path):
    user = load_module(tmp_path, LOSS)
    x = torch.randn(2, 1, 5, dtype=torch.float64)
    with pytest.raises(ZeroDivisionError) as original:
        user.own(x, 0, torch.tensor(0))
    with pytest.raises(ZeroDivisionError) as optimized:
        optimize_loss(user.own, compile=False)(x, 0, torch.tensor(0))
    assert str(optimized.value) == str(original.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_inner_write_bounded_by_the_outer_item_runs_vectorized(tmp_path, dtype):
    """The inner loop writes ``out[i, 0:len(row):1]``: over all rows, ``0:x.shape[1]:1``."""
    user = load_module(tmp_path, LOSS)
    x, c = _inputs(dtype)
    report = equivalent_report(user.rows, x, c[0])
    outer = _loop(report, 28)
    assert (outer.vectorized_runs, outer.failed_runs) == (1, 0), outer.reason


SELECTING = """
def picked(x, s, k):
    acc = x[s, 0] * 0
    for j in range(x.shape[1]):
        if j == k:
            acc = acc + x[s, j]
    return acc


def indexed(x, s, k):
    return x[s, k] * 2


def f_direct(x):
    out = 0
    for s in range(x.shape[0]):
        for u in range(x.shape[1]):
            out = out + picked(x, s, u).pow(2).sum()
    return out


def f_indexed(x):
    out = 0
    for s in range(x.shape[0]):
        for u in range(x.shape[1]):
            out = out + indexed(x, s, u).pow(2).sum()
    return out
"""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_mapped_body_handing_its_index_to_a_helper_testing_it_keeps_the_loop(tmp_path, dtype):
    """``picked`` compares the index in Python (an equality selection): under vmap it would get a
    tensor and raise on every call, so the loops stay loops, with the reason at the call, and
    the original's result comes without a fallback; ``indexed`` only indexes with it, and its
    loops run vectorized."""
    user = load_module(tmp_path, SELECTING)
    x, _ = _inputs(dtype, "ties")
    optimized = optimize_loss(user.f_direct, compile=False, strict=True)
    torch.testing.assert_close(optimized(x), user.f_direct(x), rtol=0, atol=0)
    lines = SELECTING.splitlines()
    direct = lines.index("def f_direct(x):") + 1  # 1-based line of the def
    inner = next(lp for lp in optimized.report.loops if lp.lineno == direct + 3)
    assert not inner.vectorized and "`picked(x, s, u)` gets the loop index `u`" in inner.reason
    assert not optimized.report.fallbacks
    report = equivalent_report(user.f_indexed, *_inputs(dtype, "nan")[:1])
    outer = next(lp for lp in report.loops if lp.lineno == lines.index("def f_indexed(x):") + 3)
    assert (outer.vectorized_runs, outer.failed_runs) == (1, 0), outer.reason
