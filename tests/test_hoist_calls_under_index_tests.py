"""Work the loop does not vary under an ``if`` on loop indices only (GE2E's own-speaker centroid,
``if speaker == c: centroid = get_centroid(...)``) runs once before the vectorized form, when an
iteration meets the test; the loop as written when none does. Same values, every gradient and
dtype as the loop, float32 and float64."""
from __future__ import annotations

import pytest
import torch

from rewrite import optimize_loss
from tests.helpers import equivalent_report, load_module

LOSS = """
import torch
import torch.nn.functional as F


def own(x, k):
    acc = 0
    for j in range(len(x)):
        if j == k:
            continue
        acc = acc + x[j]
    return acc / (len(x) - 1)


def f(x, k, w):
    out = x.new_zeros(len(x))
    for c, row in enumerate(x):
        if c == k:
            row = own(x, k)
        out[c] = F.cosine_similarity(row, w, dim=0) + 1e-6
    return out.sum()
"""


def _inputs(dtype, rows=5):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 3, generator=g, dtype=dtype).requires_grad_()
    return x, torch.randn(3, generator=g, dtype=dtype).requires_grad_()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [0, 3])
def test_selected_iteration_equivalent_and_vectorized(tmp_path, dtype, k):
    user = load_module(tmp_path, LOSS)
    x, w = _inputs(dtype)
    report = equivalent_report(user.f, x, k, w)
    loop = next(lp for lp in report.loops if lp.lineno == 17)
    assert loop.vectorized and (loop.vectorized_runs, loop.original_runs) == (1, 0), loop.reason


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [9, -1])
def test_no_iteration_meets_the_test_runs_as_written(tmp_path, dtype, k):
    user = load_module(tmp_path, LOSS)
    x, w = _inputs(dtype)
    report = equivalent_report(user.f, x, k, w)
    loop = next(lp for lp in report.loops if lp.lineno == 17)
    assert (loop.vectorized_runs, loop.original_runs) == (0, 1)


def test_the_hoisted_call_raises_the_originals_exception(tmp_path):
    """On one row ``own`` adds nothing and divides the int 0 by 0, as the original does."""
    user = load_module(tmp_path, LOSS)
    x, w = _inputs(torch.float64, rows=1)
    with pytest.raises(ZeroDivisionError) as original:
        user.f(x, 0, w)
    with pytest.raises(ZeroDivisionError) as optimized:
        optimize_loss(user.f, compile=False)(x, 0, w)
    assert str(optimized.value) == str(original.value)


@pytest.mark.parametrize("test", ["c == k + w.sum()", "c == len(x) - 1"])
def test_tests_reading_values_or_calls_stay_masked_or_kept(tmp_path, test):
    user = load_module(tmp_path, LOSS.replace("if c == k:", f"if {test}:"))
    x, w = _inputs(torch.float64)
    report = equivalent_report(user.f, x, 2, w)
    loop = next(lp for lp in report.loops if lp.lineno == 17)
    assert not loop.vectorized and "would also run on iterations" in loop.reason, loop.reason


ELSE = LOSS.replace("""        if c == k:
            row = own(x, k)
""", """        if c == k:
            row = own(x, k)
        else:
            row = row * 2
""")


PICK = LOSS.replace("""        if c == k:
            row = own(x, k)
""", """        row = own(x, k) if c == k else row * 2
""")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["plain", "nan", "inf"])
@pytest.mark.parametrize("k", [0, 3, 9])
@pytest.mark.parametrize("source", ["else", "pick"])
def test_an_else_branch_stays_masked_and_the_if_branch_runs_once(tmp_path, dtype, kind, k, source):
    """``if c == k: row = own(x, k)`` / ``else: row = row * 2``, or the conditional expression
    (GE2E's ``own(...) if k == j else cents[k]``): the call runs once, the ``else`` on every
    iteration under the mask; none meeting the test (k = 9) runs the loop as written."""
    src = {"else": ELSE, "pick": PICK}[source]
    assert src != LOSS
    user = load_module(tmp_path, src)
    x, w = _inputs(dtype)
    if kind != "plain":
        x.data[1, 2] = float(kind)
    report = equivalent_report(user.f, x, k, w)
    loop = next(lp for lp in report.loops if lp.lineno == 17)
    assert loop.vectorized, loop.reason
    assert (loop.vectorized_runs, loop.original_runs) == ((0, 1) if k == 9 else (1, 0))
