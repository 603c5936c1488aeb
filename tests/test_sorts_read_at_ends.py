"""A per-item sort of a selection read only at its ends in comparisons and by order-free ops
(``passes/loops/sorts_read_at_ends.py``), and the last iteration's selection read after the loop
(``last_values_after_loop``): hard-mining losses against the original (value, every gradient,
dtype, float32/float64; ties, NaN, inf, an empty selection), a no-change case, and the
lifted-structure corpus loss with all four of its outputs. The golden cases are in
``test_loop_stages``."""
from __future__ import annotations

import math

import pytest
import torch

import rewrite
from examples.real import metric_lifted_hard_mining as lifted
from rewrite.testing import assert_equivalent
from tests.helpers import equivalent_report, load_module

SOURCE = '''
import torch


def hard_mining(sim, labels):
    total = 0
    skipped = 0
    for i in range(sim.shape[0]):
        pos = torch.masked_select(sim[i], labels == labels[i])
        pos = torch.sort(pos)[0]
        neg = torch.sort(torch.masked_select(sim[i], labels != labels[i]))[0]
        hard_neg = torch.masked_select(neg, neg + 0.1 > pos[0])
        hard_pos = torch.masked_select(pos, pos - 0.1 < neg[-1])
        if len(hard_neg) < 1 or len(hard_pos) < 1:
            skipped += 1
            continue
        total = total + torch.log(torch.exp(-2 * hard_pos).sum()) + torch.exp(hard_neg).sum()
    return total / sim.shape[0], skipped, neg.mean()


def descending(sim, labels):
    total = 0
    for i in range(sim.shape[0]):
        neg = sim[i].masked_select(labels != labels[i]).sort(descending=True).values
        hard = neg.masked_select(neg > neg[-1] + 0.2)
        total = total + hard.sum() + (neg[0] > 0.5)
    return total


def weighted(sim, labels, w):
    total = 0
    for i in range(sim.shape[0]):
        neg = torch.sort(torch.masked_select(sim[i], labels != labels[i]))[0]
        total = total + (neg * w).sum()
    return total


def end_with_gradient(sim, labels):
    total = 0
    for i in range(sim.shape[0]):
        pos = torch.sort(torch.masked_select(sim[i], labels == labels[i]))[0]
        total = total + pos[0]
    return total
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("sorted_ends"), SOURCE)


def check(fn, *inputs, vectorized=True):
    report = equivalent_report(fn, *inputs)
    runs = [(loop.vectorized, loop.vectorized_runs > 0, loop.failed_runs) for loop in report.loops]
    assert runs == [(vectorized, vectorized, 0)], report.loops


def _sim(dtype, n=12, classes=3, seed=0, grid=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, 6, generator=g, dtype=dtype), dim=1)
    sim = x @ x.t()
    if grid:  # values on a grid: ties within every row
        sim = (sim / grid).round() * grid
    return sim, torch.arange(classes).repeat_interleave(n // classes)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grid", [None, 0.25])
def test_hard_mining(user, dtype, grid):
    sim, labels = _sim(dtype, grid=grid)
    check(user.hard_mining, sim.requires_grad_(), labels)
    check(user.descending, sim, labels)
    _, skipped, _ = rewrite.optimize_loss(user.hard_mining, compile=False)(sim, labels)
    assert type(skipped) is int and skipped == user.hard_mining(sim, labels)[1]


def test_nan_and_inf(user):
    sim, labels = _sim(torch.float64)
    sim[0, 5] = sim[5, 0] = math.nan         # a NaN among the negatives: sorted last
    sim[1, 2] = math.nan                     # ... among the positives: the first is the least other
    sim[7, 6] = sim[7, 7] = sim[7, 8] = math.nan   # every positive NaN: the first is NaN
    sim[3, 9] = math.inf
    sim[10, 2] = -math.inf
    check(user.hard_mining, sim.requires_grad_(), labels)
    check(user.descending, sim, labels)


def test_an_empty_selection_raises_as_the_original(user):
    sim, _ = _sim(torch.float64)
    labels = torch.zeros(len(sim), dtype=torch.int64)  # no negatives: `neg[-1]` raises
    with pytest.raises(IndexError):
        user.hard_mining(sim, labels)
    with pytest.raises(IndexError):
        rewrite.optimize_loss(user.hard_mining, compile=False)(sim, labels)


def test_an_end_the_gradient_flows_through_keeps_the_sort(user):
    # the sort's choice among tied values decides which element gets the gradient: not taken
    sim, labels = _sim(torch.float64, grid=0.25)
    check(user.end_with_gradient, sim.requires_grad_(), labels, vectorized=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lifted_structure_all_outputs(dtype):
    # loss, the skipped share and the last anchor's mean similarities (`.item()` of the last
    # iteration's selections, computed again after the loop)
    forward = lifted.LiftedStructureLoss.forward
    opt = rewrite.optimize_loss(forward, compile=False, strict=True)
    module = lifted.LiftedStructureLoss(hard_mining=True)
    inputs = (module, *lifted.make_inputs("small", dtype))
    assert_equivalent(forward, opt, *inputs)
    (loop,) = opt.report.loops
    assert loop.vectorized and loop.vectorized_runs and not loop.failed_runs


def test_an_operand_the_body_does_not_bind_must_be_0d(user):
    # `neg * w` pairs the sorted values with `w`'s: a number scales them all (the sort can go),
    # a vector of their length would pair them in another order (the loop runs as written)
    sim, labels = _sim(torch.float64)
    check(user.weighted, sim.requires_grad_(), labels, 0.5)
    w = torch.linspace(0, 1, int((labels != 0).sum()), dtype=torch.float64)
    opt = rewrite.optimize_loss(user.weighted, compile=False, strict=True)
    assert_equivalent(user.weighted, opt, sim, labels, w)
    assert opt.report.loops[0].vectorized and opt.report.loops[0].original_runs
