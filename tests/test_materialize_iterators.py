"""A loop over an iterator (``values = iter(values)``, a generator) iterates a list of its items
(``materialize_iterators``), stacked like any list of tensors: a generic ``mean`` helper (as the
Lovasz losses write one) over per-image losses runs vectorized, with the values, every gradient
and the dtype of the loop as written, on empty, one-item and NaN inputs too."""
from __future__ import annotations

import pytest
import torch

from rewrite import optimize_loss
from tests.helpers import equivalent_report, load_module

USER_CODE = '''
import torch



def average(items, default=0.):
    it = iter(items)
    try:
        total = next(it)
    except StopIteration:
        return default
    count = 1
    for count, item in enumerate(it, 2):
        total = total + item
    return total / count


def per_image(x):
    return average((img - img.mean()).pow(2).sum() for img in x)


def sum_of_squares(values):
    values = (v * v for v in values)
    total = 0
    for v in values:
        total = total + v.sum()
    return total


def read_after(values):
    values = iter(values)
    total = 0
    for v in values:
        total = total + v.sum()
    return total, list(values)
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("iterators"), USER_CODE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("batch", [4, 2, 1])
def test_a_mean_over_a_generator_runs_vectorized(user, dtype, batch):
    x = torch.randn(batch, 3, 3, dtype=dtype, generator=torch.Generator().manual_seed(batch))
    if batch == 4:
        x[1, 0, 0] = float("nan")
    report = equivalent_report(user.per_image, x.requires_grad_())
    [loop] = [loop for loop in report.loops if loop.vectorized]
    # one image: the loop over the rest has no iteration and runs as written
    assert (loop.vectorized_runs, loop.original_runs) == ((1, 0) if batch > 1 else (0, 1))


def test_an_empty_iterable_returns_the_empty_value(user):
    optimized = optimize_loss(user.average, compile=False)
    assert optimized([]) == user.average([]) == 0.
    assert optimized(iter([])) == 0.


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_generator_bound_in_the_function(user, dtype):
    gen = torch.Generator().manual_seed(5)
    values = [torch.randn(3, dtype=dtype, generator=gen).requires_grad_() for _ in range(4)]
    loop = max(equivalent_report(user.sum_of_squares, values).loops, key=lambda loop: loop.lineno)
    assert loop.vectorized and (loop.vectorized_runs, loop.original_runs) == (1, 0)


def test_an_iterator_read_after_the_loop_stays_an_iterator(user):
    values = [torch.randn(3, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    report = equivalent_report(user.read_after, values)
    [loop] = report.loops
    assert loop.original_runs == 1 and "values = list(values)" not in report.rewritten_source
