"""invariant_branches_to_checks: a Python condition every iteration shares, over a branch that
leaves the iteration early, is checked once and its branch taken for all iterations. Value, every
gradient and dtype against the original, float32 and float64; iterations taking the ``continue``,
all of them taking it, ties in the mined extremes; the other branch runs as written."""
from __future__ import annotations

import types

import pytest
import torch

from rewrite import assert_equivalent
from tests.loop_helpers import build, namespace, normalise, rewrite_source

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


# An optional feature switched on by a Python condition, whose branch writes in place into what
# an opaque call returned (it may be a view of an argument: the write is refused).
SWITCHED = """
def f(x, t, score, weight, ignore):
    total = 0
    for i in range(x.shape[1]):
        if i != ignore:
            loss = score(x[:, i], t[:, i])
            if weight is not None:
                loss *= weight[i]
            total += loss
    return total / x.shape[1]
"""
GOLDEN_SWITCHED = """
def f(x, t, score, weight, ignore):
    total = 0
    _selected = torch.tensor(_run_eagerly(lambda: [i for i in range(x.shape[1]) if i != ignore]), dtype=torch.int64)
    if isinstance(_selected, torch.Tensor) and _selected.dim() > 0 and isinstance(x, torch.Tensor) and isinstance(t, torch.Tensor) and isinstance(len(_selected), int) and (len(_selected) > 0) and (weight is None) and (not _rounds_gradients(x, t, weight)):
        'optimize_loss: loop at line 3 vectorized'

        def _body(i):
            _total_part = 0
            loss = score(x[:, i], t[:, i])
            _total_part = _total_part + loss
            return (torch.as_tensor(_total_part),)
        _outs = _map_in_chunks(_body, in_dims=(0,))(_selected)
        _outs = (_outs[0].sum(0),)
        total = _outs[0]
    else:
        for i in range(x.shape[1]):
            if i != ignore:
                loss = score(x[:, i], t[:, i])
                if weight is not None:
                    loss *= weight[i]
                total += loss
    return total / x.shape[1]"""
# The branch refused sits in the `else`: the body's condition is checked.
SWITCHED_ELSE = """
def f(x, t, score, cfg):
    total = 0
    for i in range(x.shape[0]):
        loss = score(x[i], t[i])
        if cfg.plain:
            total = total + loss
        else:
            loss.mul_(cfg.scale)
            total = total + loss
    return total
"""
# No change: the write sits under a condition the loop varies.
VARIED = """
def f(x, t, score):
    total = 0
    for i in range(x.shape[0]):
        loss = score(x[i], t[i])
        if i > 0:
            loss *= 2
        total += loss
    return total
"""


def _score(a, b):
    return ((a - b) ** 2).mean()


def test_a_switched_write_golden():
    original, optimized, code, report = build(SWITCHED)
    assert code == normalise(GOLDEN_SWITCHED)
    assert "the `weight is None` branch for every iteration, its condition checked once (else " \
        "the loop runs as written); the other branch only as written: `loss *= weight[i]` " \
        "writes in place into `loss`, which may share memory" in report.loops[0].reason
    assert build(code)[2] == code


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_switched_write_switched_off_is_vectorized(dtype):
    original, optimized, code, report = build(SWITCHED)
    assert report.loops[0].vectorized
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(4, 5, 3, dtype=dtype, generator=g), torch.rand(4, 5, 3, dtype=dtype)
    for ignore in (0, 2, None):
        assert_equivalent(original, optimized, x.requires_grad_(), t.requires_grad_(), _score,
                          None, ignore)
    x = x.detach().clone()
    x[0, 1, 0], x[1, 2, 1] = float("nan"), float("inf")
    assert_equivalent(original, optimized, x.requires_grad_(), t, _score, None, 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_switched_write_switched_on_runs_as_written(dtype):
    original, optimized, code, report = build(SWITCHED)
    g = torch.Generator().manual_seed(4)
    x, t = torch.randn(4, 5, 3, dtype=dtype, generator=g), torch.rand(4, 5, 3, dtype=dtype)
    weight = torch.rand(5, dtype=dtype, generator=g)
    assert_equivalent(original, optimized, x.requires_grad_(), t, _score,
                      weight.requires_grad_(), 0)
    view = lambda a, b: a[0]  # noqa: E731 - the write goes through to x as written
    x0, x1 = x.detach().clone(), x.detach().clone()
    original(x0, t, view, weight.detach(), 0), optimized(x1, t, view, weight.detach(), 0)
    torch.testing.assert_close(x1, x0, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_switched_write_in_the_else(dtype):
    original, optimized, code, report = build(SWITCHED_ELSE)
    assert report.loops[0].vectorized
    assert "the `cfg.plain` branch for every iteration" in report.loops[0].reason
    x, t = torch.randn(6, 3, dtype=dtype), torch.rand(6, 3, dtype=dtype)
    for plain in (True, False):
        cfg = types.SimpleNamespace(plain=plain, scale=0.5)
        assert_equivalent(original, optimized, x.requires_grad_(), t, _score, cfg)


def test_a_write_under_a_varying_condition_keeps_the_loop():
    code, report = rewrite_source(VARIED)
    assert code == normalise(VARIED)
    assert not report.loops[0].vectorized
    assert "writes in place into `loss`" in report.loops[0].reason


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_write_under_a_tensor_condition_writes_through(dtype):
    """What ``score`` returns is a view of ``x``: the write under the condition changes ``x``
    (it was masked into a copy before: ``x`` silently unchanged)."""
    original, optimized, code, report = build(VARIED)
    view = lambda a, b: a[0]  # noqa: E731
    x, t = torch.randn(4, 3, dtype=dtype), torch.rand(4, 3, dtype=dtype)
    x0, x1 = x.clone(), x.clone()
    torch.testing.assert_close(optimized(x1, t, view), original(x0, t, view), rtol=0, atol=0)
    torch.testing.assert_close(x1, x0, rtol=0, atol=0)
    assert not torch.equal(x0, x)
