"""Batched forms (no vmap) of ``x.norm()`` / ``torch.norm(x, p, dim, keepdim)`` of loop items: the
vector norm torch.norm computes for a number ``p`` (or "fro" over at most two dims), over the
item's dims or its ``dim`` shifted by one; of ``torch.dist(a, b, p)`` (the norm of ``a - b``) and
of ``F.pairwise_distance`` and ``F.normalize`` (the same call on the batched operands, a dim
shifted by one). Golden lines (with a no-change case: the nuclear norm, a
matrix norm, keeps vmap), equivalence of values, every gradient and dtype (float32, float64) with
zero items (the norm's gradient there), NaN and inf."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent
from tests.loop_helpers import build, rewrite_source, strategies

DTYPES = [torch.float32, torch.float64]

NORMS = """
    def f(x, y):
        s, rows = 0, []
        for i in range(len(x)):
            s = s + (x[i] - y[i]).norm() + x[i].norm(p=3) + torch.norm(y[i] * x[i], 'fro', (0, 1))
            rows.append(torch.norm(x[i], 1, dim=-1, keepdim=True) + x[i].norm(dim=0).sum())
        return s, torch.stack(rows)
    """
# the batched lines (before: vmap, "`...norm(...)` has no batched form")
NORMS_BATCHED = [
    "torch.linalg.vector_norm(_t, 2, tuple(range(1, _t.dim()))) if _t.dim() > 1 else "
    "torch.linalg.vector_norm(_t.reshape(len(_t), -1), 2, 1)",
    "torch.linalg.vector_norm(_x_row, 3, tuple(range(1, _x_row.dim())))",
    "torch.linalg.vector_norm(_y_row * _x_row, 2, (1, 2), False)",
    "torch.linalg.vector_norm(_x_row, 1, (-1,), True)",
    "torch.linalg.vector_norm(_x_row, 2, (1,), False)"]
SCALARS = """
    def f(x):
        s = 0
        for i in range(len(x)):
            s = s + x[i].norm()
        return s
    """
DISTANCES = """
    def f(x, y, w):
        s, rows = 0, []
        for i in range(len(x)):
            s = s + torch.dist(x[i], y[i]) + x[i].dist(w, 1) + F.pairwise_distance(x[i], y[i]).sum()
            rows.append(F.pairwise_distance(x[i, 0], w[0], p=3, keepdim=True))
        return s, torch.stack(rows)
    """
NORMALIZED = """
    def f(x, y):
        s = 0
        for i in range(len(x)):
            s = s + (F.normalize(x[i]) * F.normalize(y[i], 1, -1, 1e-3)).sum() \
                + F.normalize(x[i, 0], p=2, dim=0).max()
        return s
    """
NUCLEAR = """
    def f(x):
        s = 0
        for i in range(len(x)):
            s = s + x[i].norm('nuc')
        return s
    """


def test_vector_norms_are_batched():
    code, report = rewrite_source(NORMS)
    assert strategies(report) == {3: "batched"}
    assert "_map_in_chunks(" in code  # vmap stays the check's else
    assert all(line in code for line in NORMS_BATCHED)


def test_nuclear_norm_stays_vmapped():
    code, report = rewrite_source(NUCLEAR)
    assert strategies(report) == {3: "vmap"}
    assert "vector_norm" not in code


def _items(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 4, generator=g, dtype=dtype)
    y = torch.randn(6, 3, 4, generator=g, dtype=dtype)
    x[1], y[1] = 0, 0            # a zero difference and a zero item: the norm's gradient is 0
    x[2, 1], y[2, 1] = 0, 0
    return x, y


@pytest.mark.parametrize("dtype", DTYPES)
def test_vector_norm_values_and_gradients(dtype):
    original, optimized, _, report = build(NORMS)
    assert strategies(report) == {3: "batched"}
    x, y = _items(dtype)
    assert_equivalent(original, optimized, x.requires_grad_(), y.requires_grad_())


@pytest.mark.parametrize("dtype", DTYPES)
def test_vector_norms_of_nan_and_inf(dtype):
    original, optimized, _, _ = build(NORMS)
    x, y = _items(dtype)
    x[3, 0, 0], x[4, 2, 1], y[5, 1, 3] = float("nan"), float("inf"), float("-inf")
    for got, want in zip(optimized(x, y), original(x, y)):
        assert got.dtype == want.dtype and torch.allclose(got, want, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_norms_of_0d_items(dtype):
    original, optimized, _, report = build(SCALARS)
    assert strategies(report) == {3: "batched"}
    x = torch.tensor([3.0, -4.0, 0.0, 2.5], dtype=dtype)
    assert_equivalent(original, optimized, x.requires_grad_())


@pytest.mark.parametrize("dtype", DTYPES)
def test_distances_are_batched(dtype):
    original, optimized, _, report = build(DISTANCES)
    assert strategies(report) == {3: "batched"}
    x, y = _items(dtype)
    w = torch.randn(3, 4, dtype=dtype)
    w[1] = x[2, 1]  # a zero difference
    assert_equivalent(original, optimized, x.requires_grad_(), y.requires_grad_(),
                      w.requires_grad_())


@pytest.mark.parametrize("dtype", DTYPES)
def test_normalize_is_batched(dtype):
    original, optimized, _, report = build(NORMALIZED)
    assert strategies(report) == {3: "batched"}
    x, y = _items(dtype)  # zero rows: their norm is clamped to eps
    assert_equivalent(original, optimized, x.requires_grad_(), y.requires_grad_())
