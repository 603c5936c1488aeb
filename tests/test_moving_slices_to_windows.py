"""Slices of one width at a position moving with the loop index (``output[bs * v:bs * (v + 1)]``,
``x[:, t:t + k]``) are rows of one view of all the windows (``slice_windows``): the same values,
gradients (overlapping windows add up) and dtype as the loop; the loop as written when a window
would leave the tensor (Python's slice clamps it) or the bounds are no ints."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from passes.slice_windows import slice_windows
from rewrite.testing import assert_equivalent
from tests.helpers import equivalent_report, load_module
from tests.loop_helpers import build, strategies

# multi-crop self-supervised losses: each view's block of one concatenated batch
VIEWS = """
def f(output, q, bs, n):
    loss = 0
    for v in range(n):
        x = output[bs * v:bs * (v + 1)] / 0.1
        loss -= torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
    return loss / n
"""

# a window at each step of a sequence, overlapping
SLIDING = """
def f(x, k):
    T = x.shape[1]
    total = 0
    for t in range(T - k + 1):
        w = x[:, t:t + k]
        total = total + (w.softmax(-1) * w).sum()
    return total
"""

# an offset and a view skipped by a condition on the index
SKIPPED = """
def f(output, q, bs, skip):
    parts = []
    for v in range(4):
        if v == skip:
            continue
        x = output[2 + bs * v:2 + bs * v + bs, :]
        parts.append(-(q * F.log_softmax(x, dim=-1)).sum(-1).mean())
    return torch.stack(parts)
"""


def test_golden_views():
    _, _, code, report = build(VIEWS)
    assert strategies(report) == {3: "batched"}, (report, code)
    assert "_output_windows = _slice_windows(output, 0, lambda: (0, bs, bs, n))" in code, code
    assert "x = _output_windows_row / 0.1" in code, code
    assert "the slices `output[bs * v:bs * (v + 1)]` lie inside their tensor" in \
        report.loops[0].reason, report.loops[0].reason


def test_golden_sliding_window():
    _, _, code, report = build(SLIDING)
    assert strategies(report) == {4: "batched"}, (report, code)
    assert "_x_windows = _slice_windows(x, 1, lambda: (0, k, 1, T - k + 1))" in code, code
    assert "w = _x_windows_row" in code, code


@pytest.mark.parametrize("src", [
    VIEWS.replace("bs * (v + 1)", "bs * (2 * v + 1)"),     # the width grows with v
    VIEWS.replace("bs * v:bs * (v + 1)", "v * v:v * v + bs"),  # not evenly spaced
    VIEWS.replace("bs * v:bs * (v + 1)", "bs * v:bs * (v + 1):2"),  # a step
    VIEWS.replace("x = output", "bs = bs + 0\n        x = output"),  # a bound the body binds
    VIEWS.replace("loss -= ", "output = output * 1\n        loss -= "),  # the sliced tensor too
    VIEWS.replace("bs * v:bs * (v + 1)", "0:bs"),          # a fixed slice
])
def test_other_slices_are_unchanged(src):
    _, _, code, _ = build(src)
    assert "_slice_windows" not in code, code


def _views(dtype, special):
    g = torch.Generator().manual_seed(0)
    output = torch.randn(14, 5, dtype=dtype, generator=g)
    if special:  # NaN and inf in one view, a tie in another
        output[3, 1], output[7, 0], output[9, 2] = float("nan"), float("inf"), float("-inf")
        output[12, 3] = output[12, 4] = 1.5
    q = torch.softmax(torch.randn(3, 5, dtype=dtype, generator=g), -1)
    return output.requires_grad_(), q


@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equivalent(dtype, special):
    for src, args in ((VIEWS, (3, 4)), (SKIPPED, (3, 1)), (SKIPPED, (3, 7))):
        original, optimized, _, report = build(src)
        assert all(loop.vectorized for loop in report.loops), report
        output, q = _views(dtype, special)
        assert_equivalent(original, optimized, output, q, *args)
    original, optimized, _, _ = build(SLIDING)
    x = _views(dtype, special)[0].detach().reshape(2, 35)[:, :20].requires_grad_()
    assert_equivalent(original, optimized, x, 4)


def test_windows_leaving_the_tensor_run_as_written(tmp_path):
    """14 rows hold four views of 3 rows and seven of 2; four views of 4 need 16: the last
    slice is shorter (clamped, as written) and so is three of 5; a float tensor block size
    raises indexing's TypeError from the loop as written."""
    user = load_module(tmp_path, "import torch\nimport torch.nn.functional as F\n" + VIEWS)
    output, q = _views(torch.float64, False)
    q = q[:1]  # one row: broadcast over a view of any size
    for bs, n, runs in ((3, 4, (1, 0)), (2, 7, (1, 0)), (4, 4, (0, 1)), (5, 3, (0, 1))):
        report = equivalent_report(user.f, output, q, bs, n)
        assert (report.loops[0].vectorized_runs, report.loops[0].original_runs) == runs, (bs, n)
    with pytest.raises(TypeError, match="only integer tensors of a single element"):
        from rewrite import optimize_loss
        optimize_loss(user.f, compile=False)(output, q, torch.tensor(3.), 4)


def test_slice_windows_is_the_slices_or_none():
    x = torch.arange(24.).reshape(2, 12)
    w = slice_windows(x, 1, lambda: (1, 4, 3, 3))
    for j in range(3):
        assert torch.equal(w[:, j], x[:, 1 + 3 * j:1 + 3 * j + 4])
    assert w.data_ptr() == x[:, 1:].data_ptr()  # a view: no copy
    for bounds in ((1, 4, 3, 4), (-1, 2, 1, 2), (0, 0, 1, 2), (0, 2, 0, 2), (0, 2, 1, 0),
                   (0, 2.0, 1, 2), (0, True, 1, 2)):
        assert slice_windows(x, 1, lambda b=bounds: b) is None, bounds
    assert slice_windows(x, 2, lambda: (0, 1, 1, 1)) is None
    assert slice_windows([1, 2], 0, lambda: (0, 1, 1, 1)) is None
    assert slice_windows(x.to_sparse(), 1, lambda: (0, 1, 1, 1)) is None
    assert slice_windows(x, 0, lambda: (0, None + 1, 1, 1)) is None  # bounds that raise


PROPERTY = """
def f(x, d, k, w, n):
    parts = []
    for i in range(n):
        y = x[d + k * i:d + k * i + w]
        parts.append((y.softmax(0) * y).sum())
    return torch.stack(parts)
"""


@settings(max_examples=60, deadline=None)
@given(d=st.integers(-2, 3), k=st.integers(1, 3), w=st.integers(1, 4), n=st.integers(1, 4),
       rows=st.integers(1, 14), double=st.booleans())
def test_windows_property(tmp_path_factory, d, k, w, n, rows, double):
    """Any start, step, width, count and length: the loop's results; vectorized exactly when
    every window lies inside the tensor (else the slices clamp, or count from the end)."""
    user = load_module(tmp_path_factory.mktemp("w"), "import torch\n" + PROPERTY)
    dtype = torch.float64 if double else torch.float32
    x = torch.randn(rows, 2, dtype=dtype, generator=torch.Generator().manual_seed(rows))
    fits = d >= 0 and d + k * (n - 1) + w <= rows
    report = equivalent_report(user.f, x.requires_grad_(), d, k, w, n)
    assert report.loops[0].vectorized_runs == int(fits), (d, k, w, n, rows)
