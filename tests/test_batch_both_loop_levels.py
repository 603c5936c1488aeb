"""batch_both_loop_levels: a nested loop whose inner loop is batched runs batched over both loop
dims (no torch.vmap at all) with the same value, every gradient and dtype (float32, float64; ties,
NaN and inf under tensor conditions), the same exception where the original raises, and keeps the
outer vmap where the inner body reads the outer item otherwise."""
from __future__ import annotations

import pytest
import torch

from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, namespace, strategies

DTYPES = [torch.float32, torch.float64]


def randn(*shape, dtype, seed, grad=True):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return x.requires_grad_() if grad else x


def with_specials(x):
    """``x`` with a NaN, infinities and exact ties with beta (1/8) in its first row."""
    x = x.detach().clone()
    x.view(-1)[:4] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.125])
    return x.requires_grad_()


# (source, inputs(dtype, seed))
BATCHED = {
    "add_items_of_rank_1": ("""
        def f(a, b):
            out = torch.zeros_like(a)
            for i in range(a.shape[0]):
                for j in range(a.shape[1]):
                    out[i, j] = a[i, j] * b[i, j] + 1
            return out
        """, lambda dt, s: (randn(4, 5, 3, dtype=dt, seed=s),
                            randn(4, 5, 3, dtype=dt, seed=s + 1))),
    "masked_writes_keep_what_is_there": ("""
        def f(pred, target, beta=0.125):
            out = torch.full_like(pred, 7.0)
            for i in range(pred.shape[0]):
                for j in range(pred.shape[1]):
                    diff = pred[i, j] - target[i, j]
                    if diff.abs() < beta:
                        out[i, j] = 0.5 * diff ** 2 / beta
                    elif diff > 1:
                        out[i, j] = diff.abs() - 0.5 * beta
            return out.sum(), out
        """, lambda dt, s: (with_specials(randn(6, 4, dtype=dt, seed=s)),
                            randn(6, 4, dtype=dt, seed=s + 1, grad=False) * 0)),
    "part_of_the_rows_and_the_inner_index": ("""
        def f(x, out, n, m):
            out = out.clone()
            for i in range(n):
                for j in range(m):
                    out[i, j] = x[i, j] * j + out[i, j]
            return out
        """, lambda dt, s: (randn(5, 6, dtype=dt, seed=s), randn(7, 8, dtype=dt, seed=s + 1),
                            3, 4)),
    "outer_elements_and_their_shape": ("""
        def f(x, y):
            out = torch.zeros_like(x)
            for i, row in enumerate(x):
                for j in range(row.shape[0]):
                    out[i, j] = row[j].sin() * y[i, j] * j
            return out
        """, lambda dt, s: (randn(3, 4, dtype=dt, seed=s), randn(3, 5, dtype=dt, seed=s + 1))),
}


def outer(report) -> str:
    """The outer loop's strategy (the first line of the report's loops)."""
    found = strategies(report)
    return found[min(found)]


def _no_vmap(*args, **kwargs):
    raise AssertionError("torch.vmap ran")


@pytest.mark.parametrize("name", sorted(BATCHED))
def test_both_levels_batched_without_vmap(name, monkeypatch):
    src, make = BATCHED[name]
    original, optimized, code, report = build(src, namespace())
    assert outer(report) == "batched", report
    for dtype in DTYPES:
        for seed in range(2):
            assert_equivalent(original, optimized, *make(dtype, seed))
    monkeypatch.setattr(torch, "vmap", _no_vmap)  # the batched form ran: no vmap at all
    got = optimized(*make(torch.float64, 0))
    for x in got if isinstance(got, tuple) else (got,):
        assert x.dtype == torch.float64


def test_picked_rows_beyond_the_written_tensor_raise_as_the_original():
    src = """
        def f(x, out):
            for i in range(x.shape[0]):
                for j in range(x.shape[1]):
                    if x[i, j] > 0:
                        out[i, j] = x[i, j]
            return out
        """
    original, optimized, _, report = build(src, namespace())
    assert outer(report) == "batched"
    x = torch.ones(3, 4)
    for fn in (original, optimized):
        with pytest.raises(IndexError):
            fn(x, torch.zeros(3, 2))


def test_an_outer_item_read_in_the_inner_body_keeps_the_outer_vmap():
    src = """
        def f(a, w):
            out = torch.zeros_like(a)
            for i in range(a.shape[0]):
                for j in range(a.shape[1]):
                    out[i, j] = a[i, j] * w[i]
            return out
        """
    original, optimized, code, report = build(src, namespace())
    assert outer(report) == "vmap" and "unflatten" not in code
    for dtype in DTYPES:
        assert_equivalent(original, optimized, randn(3, 4, dtype=dtype, seed=0),
                          randn(3, dtype=dtype, seed=1))
