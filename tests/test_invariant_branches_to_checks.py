"""invariant_branches_to_checks: a Python condition every iteration shares, over a branch that
leaves the iteration early, is checked once and its branch taken for all iterations. Value, every
gradient and dtype against the original, float32 and float64; iterations taking the ``continue``,
all of them taking it, ties in the mined extremes; the other branch runs as written."""
from __future__ import annotations

import types

import pytest
import torch

from rewrite import assert_equivalent
from tests.loop_helpers import build, namespace

MINED = """
def f(sim, labels, cfg):
    loss = []
    skipped = 0
    for i in range(sim.shape[0]):
        pos = sim[i][(labels == labels[i]) & (sim[i] < 1)]
        neg = sim[i][labels != labels[i]]
        if cfg.margin is not None:
            neg = neg[neg + cfg.margin > pos.min()]
            if len(neg) < 1:
                skipped += 1
                continue
            hard = (8 * neg).exp().sum().log() / 8
        else:
            hard = neg.exp().mean()
        loss.append(hard - pos.mean())
    return sum(loss) / sim.shape[0], skipped
"""

DTYPES = [torch.float32, torch.float64]


def _sim(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(8, 4, dtype=dtype, generator=g), dim=1)
    return x @ x.T, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_branch_taken_is_equivalent(dtype):
    original, optimized, code, report = build(MINED)
    assert report.loops[0].vectorized, report.loops
    assert "cfg.margin is not None" in code.split("'optimize_loss")[0]  # in the check
    cfg = types.SimpleNamespace(margin=-0.4)
    sim, labels = _sim(dtype)
    assert_equivalent(original, optimized, sim.requires_grad_(), labels, cfg)
    assert optimized(sim, labels, cfg)[1] == original(sim, labels, cfg)[1] > 0  # some skipped
    ties = sim.detach().clone()
    ties[0, 2] = ties[0, 4] = ties[0, 1]  # negatives tied with the hardest positive
    assert_equivalent(original, optimized, ties.requires_grad_(), labels, cfg)
    far = torch.where(labels[:, None] == labels[None, :], 0.5, -1.0).to(dtype)
    assert original(far, labels, cfg)[1] == 8  # every anchor skips: the sum of none is 0
    assert_equivalent(original, optimized, far.requires_grad_(), labels, cfg)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_other_branch_runs_as_written(dtype):
    original, optimized, _, report = build(MINED)
    cfg = types.SimpleNamespace(margin=None)
    sim, labels = _sim(dtype, seed=1)
    assert_equivalent(original, optimized, sim.requires_grad_(), labels, cfg)


def test_a_condition_the_loop_may_change_is_not_taken():
    for src in (MINED.replace("skipped += 1", "cfg.margin = None"),  # written by the body
                MINED.replace("cfg.margin is not None", "cfg.margin[i] is not None")):
        _, _, code, report = build(src)
        assert not report.loops[0].vectorized
        assert "checked once" not in report.loops[0].reason
