"""``x.select(d, i)`` at the loop index (a per-class dice written with ``select``): vmap calls
``.item()`` on a batched index, so the vectorized form raised on every call and the original ran
after a warning. A literal dim becomes the index ``x[:, i]`` (vectorized, views kept: a
``.view`` raises where the original's does); a dim known only at run time keeps the loop as
written, with the reason at the user's line."""
from __future__ import annotations

import warnings

import pytest
import torch

from tests.helpers import load_module, optimized_and_vectorized

DTYPES = [torch.float32, torch.float64]

USER_CODE = '''
import torch


def literal_dims(x, t):
    s = 0
    for c in range(x.shape[1]):
        s = s + ((x.select(1, c) - torch.select(t, 1, c)) ** 2).mean() * (c + 1)
    return s


def keyword_dims(x, t):
    losses = torch.zeros(x.shape[0], dtype=x.dtype)
    for c in range(x.shape[0]):
        a = x.select(dim=0, index=c).reshape(-1)
        b = torch.select(t, dim=0, index=c).reshape(-1)
        losses[c] = 1 - 2 * (a * b).sum() / (a.sum() + b.sum() + 1)
    return losses.mean()


def flat_view(x):
    s = 0
    for c in range(x.shape[1]):
        s = s + (x.select(1, c).view(-1) ** 2).sum()
    return s


def runtime_dim(x, t, dim=0):
    s = 0
    for c in range(x.shape[dim]):
        s = s + (x.select(dim, c) * t.select(dim, c)).sum()
    return s
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("selects"), USER_CODE)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["literal_dims", "keyword_dims"])
def test_a_select_at_the_index_along_a_literal_dim_runs_vectorized(user, name, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 5, generator=g, dtype=dtype).requires_grad_()
    t = torch.rand(4, 3, 5, generator=g, dtype=dtype)
    optimized_and_vectorized(getattr(user, name), x, t)


def test_a_view_of_the_selected_row_raises_the_originals_error(user):
    from rewrite import optimize_loss
    x = torch.randn(2, 3, 4, requires_grad=True)
    opt = optimize_loss(user.flat_view, compile=False, strict=True)
    with pytest.raises(RuntimeError) as want:
        user.flat_view(x)
    with pytest.raises(RuntimeError) as got:
        opt(x)
    assert str(got.value) == str(want.value)


def test_a_select_along_a_dim_known_at_run_time_keeps_the_loop_with_its_reason(user):
    from rewrite import assert_equivalent, optimize_loss
    opt = optimize_loss(user.runtime_dim, compile=False, strict=True)
    x, t = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the original runs with no fallback warning
        assert_equivalent(user.runtime_dim, opt, x, t)
    (loop,) = opt.report.loops
    assert not loop.vectorized
    assert "`x.select(dim, c)` selects at the loop index along a dim that is not a literal " \
           "int >= 0" in loop.reason
