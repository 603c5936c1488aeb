"""A value every iteration computes the same, with a derivative that may be infinite, under a
condition that varies with the iteration (lifted structure's ``(margin - dist[i][...]).exp()``
under ``if t_i == t_j``): the masked branch reads what it takes from before the loop per
iteration, so the loop runs vectorized while that takes a gradient, with the original's values
and gradients (float32 and float64; inf, NaN, ties); outside such a branch it still runs as
written while it does."""
from __future__ import annotations

import pytest
import torch

from tests.helpers import equivalent_report, load_module

USER_CODE = """
import torch


def under_mask(x, w, y):
    s = 0
    for i in range(x.shape[0]):
        if y[i] > 0:
            s = s + x[i] * torch.exp(w).sum()
    return s


def outside(x, w, y):
    s = 0
    for i in range(x.shape[0]):
        s = s + x[i] * torch.exp(w).sum() * y[i]
    return s


def detached_scale(x, log_t, base):
    scale = log_t.exp()
    s = 0
    for i in range(x.shape[0]):
        s = s + -(1.0 / (base * scale.detach())) * (x[i] * scale).logsumexp(0)
    return s


def gold_path(em, tags, mask, n):
    score = em[0, torch.arange(n), tags[0]]
    for t in range(1, tags.shape[0]):
        score = score + em[t, torch.arange(n), tags[t]] * mask[t]
    return score.sum()
"""


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("invariant_under_masks"), USER_CODE)


def _inputs(dtype, special):
    x = torch.tensor([1.0, 0.0, 2.0, 3.0, 2.0], dtype=dtype)
    w = torch.tensor([0.5, 1.5], dtype=dtype)
    y = torch.tensor([1.0, 1.0, -1.0, 0.0, 1.0], dtype=dtype)
    if special:  # exp(w) infinite: 0 * inf where a selected x is 0; deselected items ignore it
        w[1] = 1000.0
        x[2] = float("nan")
    return x.requires_grad_(), w.requires_grad_(), y


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("special", [False, True])
def test_under_a_varying_condition_it_runs_vectorized(user, dtype, special):
    report = equivalent_report(user.under_mask, *_inputs(dtype, special))
    loop, = report.loops
    assert (loop.vectorized_runs, loop.original_runs) == (1, 0), loop
    assert "no gradient" not in loop.reason, loop.reason


def test_outside_a_branch_it_runs_as_written_while_it_takes_a_gradient(user):
    report = equivalent_report(user.outside, *_inputs(torch.float64, True))
    loop, = report.loops
    assert "`w` takes no gradient" in loop.reason, loop.reason
    assert (loop.vectorized_runs, loop.original_runs) == (0, 1), loop


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("special", [False, True])
def test_a_range_takes_no_gradient(user, dtype, special):
    """A CRF's gold-path score: ``torch.arange(n)`` is the same in every iteration and no
    gradient flows through it, so nothing about ``n`` is checked (it may be a tensor)."""
    g = torch.Generator().manual_seed(0)
    em = torch.randn(6, 4, 5, generator=g, dtype=dtype)
    if special:
        em[2, 1, :] = float("inf")
        em[3, 0, :] = float("nan")
    tags = torch.randint(0, 5, (6, 4), generator=g)
    mask = torch.tensor([[1.0] * 4] * 4 + [[1.0, 0.0, 1.0, 0.0]] * 2, dtype=dtype)
    report = equivalent_report(user.gold_path, em.requires_grad_(), tags, mask, torch.tensor(4))
    loop, = report.loops
    assert (loop.vectorized_runs, loop.original_runs) == (1, 0), loop
    assert "no gradient" not in loop.reason, loop.reason


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("special", [False, True])
def test_a_detached_value_takes_no_gradient(user, dtype, special):
    """SupCon with a learnable temperature: ``1.0 / (base * scale.detach())`` is the same in
    every iteration, but no gradient flows into ``scale`` through it: only ``base`` is checked
    (the loop ran as written whenever ``scale`` required grad, that is, in every training step)."""
    x = torch.randn(5, 4, dtype=dtype, generator=torch.Generator().manual_seed(0))
    if special:
        x[1, 2], x[3, 0] = float("inf"), float("nan")
    log_t = torch.tensor(2.6, dtype=dtype)
    report = equivalent_report(user.detached_scale, x.requires_grad_(), log_t.requires_grad_(), 0.07)
    loop, = report.loops
    assert (loop.vectorized_runs, loop.original_runs) == (1, 0), loop
    assert "`base` takes no gradient" in loop.reason and "`scale`" not in loop.reason.split(
        "else the loop runs as written: ")[0].split("while")[-1], loop.reason
