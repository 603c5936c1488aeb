"""masked_writes_to_where: a boolean mask's write of a number into a tensor the iteration made
becomes a ``torch.where``. Behaviour through optimize_loss (value, every gradient, dtype; float32
and float64; NaN/inf; masks of the leading dims; the original's IndexError; inputs unchanged);
the golden rewrites are in test_loop_stages."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module

USER = '''
import torch

def clipped(x):
    total = 0
    for i in range(x.shape[0]):
        d = x[i].clone()
        d[d < 0] = 0
        total = total + d.sum() + (d * d).mean()
    return total

def ignored_rows(x, t, ignore):
    total = 0
    for i in range(x.shape[0]):
        w = torch.ones_like(x[i])
        w[t[i] == ignore] = 0.0
        total = total + (w * x[i] ** 2).sum()
    return total

def all_or_nothing(x, k):
    total = 0
    for i in range(x.shape[0]):
        d = x[i].clone() * 2
        d[d.sum() > 0] = 0       # a 0-d mask: the whole row or nothing
        d[k == 1] = -1.0         # a Python bool
        total = total + (d * x[i]).sum()
    return total

def of_an_input_row(x):
    total = 0
    for i in range(x.shape[0]):
        d = x[i]
        d[d < 0] = 0
        total = total + d.sum()
    return total
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("masked_writes"), USER)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_clipped_copy_equivalent_and_vectorized(user, dtype):
    fn = optimize_loss(user.clipped, compile=False)
    x = torch.randn(4, 3, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0], x[1, 1, 1], x[2, 2, 2] = float("nan"), float("inf"), -float("inf")
    assert_equivalent(user.clipped, fn, x.requires_grad_())
    [loop] = fn.report.loops
    assert loop.vectorized and loop.vectorized_runs == 1 and not loop.original_runs, loop


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_mask_of_the_leading_dims_clears_whole_rows(user, dtype):
    fn = optimize_loss(user.ignored_rows, compile=False)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 4, dtype=dtype, generator=gen).requires_grad_()  # square rows
    t = torch.randint(0, 3, (3, 4), generator=gen)
    assert_equivalent(user.ignored_rows, fn, x, t, 2)
    assert fn.report.loops[0].vectorized_runs == 1


@pytest.mark.parametrize("k", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_0d_and_python_masks_write_everything_or_nothing(user, dtype, k):
    fn = optimize_loss(user.all_or_nothing, compile=False)
    x = torch.randn(5, 3, dtype=dtype, generator=torch.Generator().manual_seed(3))
    assert_equivalent(user.all_or_nothing, fn, x.requires_grad_(), k)
    assert fn.report.loops[0].vectorized_runs == 1


def test_a_mask_that_cannot_index_raises_the_original_error(user):
    fn = optimize_loss(user.ignored_rows, compile=False)
    x, t = torch.randn(3, 4, 4), torch.zeros(3, 5, dtype=torch.long)
    with pytest.raises(IndexError) as original:
        user.ignored_rows(x, t, 0)
    with pytest.raises(IndexError) as optimized:
        fn(x, t, 0)
    assert str(optimized.value) == str(original.value)


def test_a_write_into_an_input_row_still_writes_the_input(user):
    fn = optimize_loss(user.of_an_input_row, compile=False)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    mine, theirs = x.clone(), x.clone()
    assert torch.equal(user.of_an_input_row(mine), fn(theirs))
    assert torch.equal(mine, theirs) and (mine >= 0).all()
    assert not fn.report.loops[0].vectorized
