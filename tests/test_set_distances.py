"""``passes.set_distances.squared_distances``: cdist's value, the per-row loop's gradients (also
at NaN/inf), and a double backward equal to the loop's."""
from __future__ import annotations

import pytest
import torch

from passes.set_distances import squared_distances


def _loop(x, w):
    return torch.stack([((w - x[i]) ** 2).sum(-1) for i in range(len(x))])


def _inputs(dtype, special):
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(5, 3, generator=g, dtype=dtype), torch.randn(4, 3, generator=g, dtype=dtype)
    if special is not None:
        x[1, 2] = special
        w[3, 0] = special
    return x.requires_grad_(), w.requires_grad_()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("special", [None, float("nan"), float("inf"), -float("inf")])
def test_gradients_are_the_loops(dtype, special):
    x, w = _inputs(dtype, special)
    weights = torch.rand(5, 4, dtype=dtype, generator=torch.Generator().manual_seed(1))
    weights[0, 0] = 0  # a zero cotangent next to an infinite difference: 0 * inf, as the loop
    want = torch.autograd.grad((_loop(x, w) * weights).sum(), (x, w))
    got = torch.autograd.grad((squared_distances(x, w) * weights).sum(), (x, w))
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_double_backward_is_the_loops(dtype):
    x, w = _inputs(dtype, None)
    results = []
    for f in (_loop, squared_distances):
        gx, = torch.autograd.grad(f(x, w).pow(2).sum(), x, create_graph=True)
        results.append(torch.autograd.grad(gx.sum(), (x, w)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)
