"""``passes.loop_products``: the product of stacked factors with the gradient of multiplying
them one by one, at NaN, inf and zero factors, float32 and float64, under vmap, double backward."""
from __future__ import annotations

import itertools

import pytest
import torch

from passes.loop_products import product

INF, NAN = float("inf"), float("nan")


def _one_by_one(v: torch.Tensor) -> torch.Tensor:
    p = torch.ones_like(v[0])
    for x in v:
        p = p * x
    return p


def _exact(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("factors", list(itertools.product([2., 0., NAN, INF, -0.5], repeat=3)))
def test_value_and_gradient_are_the_one_by_one_products(factors, dtype):
    # the factors along dim 0, next to a column of finite ones
    v = torch.tensor([[f, 3.] for f in factors], dtype=dtype, requires_grad=True)
    want, got = _one_by_one(v), product(v)
    assert got.dtype == want.dtype
    _exact(got, want)
    g = torch.tensor([1.5, -2.], dtype=dtype)
    _exact(torch.autograd.grad(got, v, g)[0], torch.autograd.grad(want, v, g)[0])


def test_under_vmap_and_for_integers():
    v = torch.tensor([[[2., NAN], [3., 1.]], [[INF, 1.], [0.5, 2.]]], requires_grad=True)
    want = torch.stack([_one_by_one(r) for r in v])
    got = torch.vmap(product)(v)
    _exact(got, want)
    _exact(torch.autograd.grad(got.sum(), v)[0], torch.autograd.grad(want.sum(), v)[0])
    assert product(torch.tensor([2, 3, 4])).item() == 24


def test_double_backward_is_the_one_by_ones():
    v = torch.tensor([2., -3., 0.5, 4.], dtype=torch.float64, requires_grad=True)
    grads = []
    for fn in (_one_by_one, product):
        first, = torch.autograd.grad(fn(v), v, create_graph=True)
        grads.append(torch.autograd.grad((first * torch.arange(4.)).sum(), v)[0])
    torch.testing.assert_close(*grads)
