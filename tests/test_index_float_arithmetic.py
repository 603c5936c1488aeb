"""The loop index is a Python int in the original: its float arithmetic (``gamma ** t``,
``(i + 1) / n``, ``i / len(x)``, ``0.5 ** level``, ``math.exp(-i / tau)``) is a Python float, computed in double
precision, which the tensor it meets then takes in its own dtype (a weak scalar). The vectorized
forms compute it from the index tensor in float64 and cast it to that dtype: not in float32 (an
int64 tensor's quotient or power), which lost precision next to float64 values and made a
float32 result of float16/bfloat16 ones. Value, every gradient and dtype against the original."""
from __future__ import annotations

import pytest
import torch

import rewrite
from rewrite.testing import assert_equivalent
from tests.helpers import load_module

SOURCE = """
import math
import torch
import torch.nn.functional as F


def discounted(r, gamma=0.99):
    G = 0.0
    for t in range(r.shape[0]):
        G = G + gamma ** t * r[t]
    return G


def time_weighted(x, y):
    n = x.shape[0]
    loss = 0
    for i in range(n):
        loss = loss + (i + 1) / n * ((x[i] - y[i]) ** 2).sum()
    return loss


def decayed(x, tau=3.0):
    loss = 0
    for i in range(x.shape[0]):
        loss = loss + math.exp(-i / tau) * x[i].abs().sum()
    return loss


def sized(x):
    loss = 0
    for i in range(x.shape[0]):
        loss = loss + (i + 1) / len(x) * x[i].sum() + i / x.shape[0] * x[i].mean()
    return loss


def halved(x):
    loss = 0
    for level in range(x.shape[0]):
        loss = loss + 0.5 ** level * torch.flip(x[level], [0]).sum()
    return loss
"""
NAMES = ["discounted", "time_weighted", "decayed", "sized", "halved"]


def _args(name: str, dtype: torch.dtype, n: int = 300):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(n, 3, generator=gen).to(dtype)
    if name == "discounted":
        return (x[:, 0].contiguous().requires_grad_(),)
    if name == "time_weighted":
        return x.requires_grad_(), torch.randn(n, 3, generator=gen).to(dtype)
    return (x.requires_grad_(),)


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("index_floats"), SOURCE)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_index_floats_in_double_precision(module, name, dtype):
    original = getattr(module, name)
    fast = rewrite.optimize_loss(original, compile=False, keep_faster=False)
    args = _args(name, dtype)
    want, got = original(*args), fast(*args)
    assert got.dtype == want.dtype == dtype
    if dtype == torch.float64:  # float32 index arithmetic was ~1e-6 off
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    assert_equivalent(original, fast, *args)
    assert fast.report.loops[0].vectorized


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_keep_their_dtype(module, name, dtype):
    original = getattr(module, name)
    fast = rewrite.optimize_loss(original, compile=False, keep_faster=False)
    args = [a.detach() for a in _args(name, dtype, n=40)]
    want, got = original(*args), fast(*args)
    assert got.dtype == want.dtype == dtype
    # (16-bit additions in another order: only roughly the same value)
    torch.testing.assert_close(got.float(), want.float(), rtol=0.1, atol=0.5)


@pytest.mark.parametrize("gamma", [torch.tensor(0.9, dtype=torch.float64), 2, 0.5])
def test_a_discount_that_is_no_python_float(module, gamma):
    """``gamma ** t`` is a Python float only for a float ``gamma`` (the loop's check): a tensor
    or an int runs the loop as written."""
    original = module.discounted
    fast = rewrite.optimize_loss(original, compile=False, keep_faster=False)
    r = torch.randn(20, dtype=torch.float32, requires_grad=True)
    want, got = original(r, gamma), fast(r, gamma)
    assert got.dtype == want.dtype
    assert_equivalent(original, fast, r, gamma)
    assert (fast.report.loops[0].original_runs > 0) == (not isinstance(gamma, float))
