"""``for t in reversed(range(a, b))`` (RL returns and advantages walk steps backwards): the same
ints in the same order as ``range(b - 1, a - 1, -1)``, which the stages read as such, and a loop
kept for another reason says that reason, not the header's. A range with a step stays refused.

A range with a literal negative step (or start) whose rows are read by slices is kept, with
that reason: the check the slices need (``s > 0``) could never hold, and the loop was reported
vectorized while it always ran as written. A loop reading no rows, or writing ``out[t]`` at the
index, runs vectorized, its items in the same order (values, every gradient, dtype; NaN, inf)."""
from __future__ import annotations

import pytest
import torch

from tests.helpers import equivalent_report, load_module
from tests.loop_helpers import rewrite_source

USER_CODE = '''
import torch


def stacked_backwards(x, w, a):
    outs = []
    for t in reversed(range(a, x.shape[0])):
        outs.append((x[t] * w).exp().sum())
    return (torch.stack(outs) * torch.arange(len(outs))).sum()


def scaled_backwards(x, w, n):
    outs = []
    for t in reversed(range(n)):
        outs.append(((x * t - w) ** 2).sum())
    return (torch.stack(outs) * torch.arange(n)).sum()


def written_backwards(x, w):
    out = torch.zeros(x.shape[0], dtype=x.dtype)
    for t in reversed(range(x.shape[0])):
        out[t] = torch.log1p((x[t] - w) ** 2).sum()
    return (out * torch.linspace(0, 1, x.shape[0], dtype=x.dtype)).sum()
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("reversed_ranges"), USER_CODE)


def _inputs(dtype, special):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=g, dtype=dtype)
    w = torch.randn(3, generator=g, dtype=dtype)
    if special:
        x[2, 1] = float("nan")
        x[5, 0] = float("inf")
    return x.requires_grad_(), w.requires_grad_()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("special", [False, True])
def test_iterations_reading_no_rows_or_writing_rows_run_vectorized_in_order(user, dtype, special):
    x, w = _inputs(dtype, special)
    for report in (equivalent_report(user.scaled_backwards, x, w, 5),
                   equivalent_report(user.written_backwards, x, w)):
        loop, = report.loops
        assert loop.vectorized and (loop.vectorized_runs, loop.original_runs) == (1, 0), loop


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("special", [False, True])
def test_rows_read_backwards_are_kept_with_the_reason(user, dtype, special):
    x, w = _inputs(dtype, special)
    loop, = equivalent_report(user.stacked_backwards, x, w, 2).loops
    assert not loop.vectorized, loop
    assert "the range's step is -1: a slice reads rows in increasing order" in loop.reason


def test_a_literal_negative_step_as_written_is_kept_too():
    _, report = rewrite_source("""
        def f(x, n):
            outs = []
            for t in range(n - 1, -1, -1):
                outs.append(x[t].exp().sum())
            return torch.stack(outs)
        """)
    loop, = report.loops
    assert not loop.vectorized and "the range's step is -1" in loop.reason, loop.reason


def test_a_kept_loop_says_what_keeps_it():
    # a step reading a value carried from the step before, made of the state (not a shifted
    # read, which scan_step_values takes): the carried name keeps it, which the reason says
    # (was: "iterated value `reversed(range(n))` is not a plain name")
    _, report = rewrite_source("""
        def f(r, v, n):
            out = torch.zeros(n, 4)
            g = torch.zeros(4)
            vn = v[-1]
            for t in reversed(range(n)):
                d = r[t] + 0.9 * vn - v[t]
                g = d + 0.9 * g
                out[t] = g
                vn = v[t] * g.sum()
            return out.sum()
        """)
    loop, = report.loops
    assert "`vn` is carried from one iteration to the next" in loop.reason, loop.reason
    assert "reversed" not in loop.reason, loop.reason


def test_a_range_with_a_step_stays_refused():
    _, report = rewrite_source("""
        def f(x, n):
            s = 0
            for t in reversed(range(0, n, 2)):
                s = s + x[t].exp().sum()
            return s
        """)
    loop, = report.loops
    assert not loop.vectorized
    assert "iterated value `reversed(range(0, n, 2))`" in loop.reason, loop.reason
