"""``passes.logsumexp_cross_entropy``: the per-row ``logsumexp(x[i]) - x[i, y[i]]`` value and
gradients at finite, +inf, -inf and NaN logits and at zero, NaN and infinite cotangents; its
double backward and its vmap."""
from __future__ import annotations

import pytest
import torch

from passes.logsumexp_cross_entropy import logsumexp_cross_entropy

INF, NAN = float("inf"), float("nan")


def _loop(x, y):
    return torch.stack([torch.logsumexp(x[i], 0) - x[i, y[i]] for i in range(len(x))])


def _inputs(dtype):
    x = torch.tensor([[0.5, INF, 0.0], [1.0, 1.0, -INF], [INF, 0.2, INF], [NAN, INF, 0.0],
                      [-INF, -INF, -INF], [0.3, -0.1, 2.0], [100.0, INF, -3.0],
                      [1e4, -1e4, 5.0], [-INF, 2.0, -INF]], dtype=dtype)
    return x.requires_grad_(), torch.tensor([0, 1, 2, 1, 0, 2, 0, 1, 0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cotangent", [1.0, 0.0, NAN, INF])
def test_value_and_gradient_are_the_loops(dtype, cotangent):
    x, y = _inputs(dtype)
    weights = torch.linspace(-1, 2, len(x), dtype=dtype)
    weights[3] = weights[6] = cotangent  # at a NaN row and at a +inf row
    weights[5] = cotangent  # at a finite row
    results = []
    for f in (_loop, logsumexp_cross_entropy):
        value = f(x, y)
        results.append((value, *torch.autograd.grad((value * weights).sum(), x)))
    for got, want in zip(*reversed(results)):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_double_backward_is_the_loops(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, generator=g, dtype=dtype, requires_grad=True)
    y = torch.randint(0, 4, (5,), generator=g)
    results = []
    for f in (_loop, logsumexp_cross_entropy):
        gx, = torch.autograd.grad(f(x, y).pow(2).sum(), x, create_graph=True)
        results.append(torch.autograd.grad((gx * gx).sum(), x))
    torch.testing.assert_close(*results)


def test_vmap_is_the_loops():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (3, 5), generator=g)
    got = torch.vmap(logsumexp_cross_entropy)(x, y)
    want = torch.stack([_loop(x[b], y[b]) for b in range(3)])
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(*(torch.autograd.grad(v.sum(), x) for v in (got, want)))
