"""Nested loops whose inner loop's operands the outer body computes from the outer items first
(``p = scores.gather(0, index)[0]``): the inner loop's checks on them are evaluated on the first
item in front of the outer loop (``passes/loops/first_item_checks.py``), and the outer loop maps
over the inner's vectorized form. Golden (the DKT loss of pydaxing/Deep-Knowledge-Tracing-DKT-
Pytorch's eval.lossFunc, paraphrased) with no-change cases (a check on a per-item value: a
range bound from ``.item()``, a data-dependent selection length), equivalence (value, every
gradient, dtype; float32 and float64; skipped zeros and negatives), the outer loop ran vectorized,
and a failing first-item check or bad inputs running the loop as written, silently or with the
original's error.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from rewrite import optimize_loss
from rewrite.testing import assert_equivalent, outputs_and_gradients
from tests.helpers import golden_text
from tests.loop_helpers import build, namespace, strategies

GOLDEN = Path(__file__).parent / "golden" / "derived_inner_checks_dkt.txt"
Q, STEPS = 5, 8

DKT = """
def dkt(pred, batch):
    loss = torch.Tensor([0.0]).to(pred.dtype)
    for s in range(pred.shape[0]):
        onehot = batch[s][:, 0:Q] + batch[s][:, Q:]
        scores = pred[s][:STEPS - 1].mm(onehot[1:].t())
        index = torch.LongTensor([[i for i in range(STEPS - 1)]])
        p = scores.gather(0, index)[0]
        a = (((batch[s][:, 0:Q] - batch[s][:, Q:]).sum(1) + 1) // 2)[1:]
        for i in range(len(p)):
            if p[i] > 0:
                loss = loss - (a[i] * torch.log(p[i]) + (1 - a[i]) * torch.log(1 - p[i]))
    return loss
"""

# the inner range bound is a per-item Python number: its value, not only a shape, is checked
BY_COUNT = """
def by_count(x, counts):
    loss = 0
    for s in range(x.shape[0]):
        n = counts[s].item()
        row = x[s] * 2
        for i in range(n):
            loss = loss + row[i]
    return loss
"""

# the inner loop's length is the count of a per-item selection
POSITIVES = """
def positives(x):
    loss = 0
    for s in range(x.shape[0]):
        q = x[s][x[s] > 0]
        for i in range(len(q)):
            loss = loss + q[i] ** 2
    return loss
"""


def dkt(pred, batch):
    loss = torch.Tensor([0.0]).to(pred.dtype)
    for s in range(pred.shape[0]):
        onehot = batch[s][:, 0:Q] + batch[s][:, Q:]
        scores = pred[s][:STEPS - 1].mm(onehot[1:].t())
        index = torch.LongTensor([[i for i in range(STEPS - 1)]])
        p = scores.gather(0, index)[0]
        a = (((batch[s][:, 0:Q] - batch[s][:, Q:]).sum(1) + 1) // 2)[1:]
        for i in range(len(p)):
            if p[i] > 0:
                loss = loss - (a[i] * torch.log(p[i]) + (1 - a[i]) * torch.log(1 - p[i]))
    return loss.sum()


def trimmed(x, y, k):
    loss = 0
    for s in range(x.shape[0]):
        p = x[s][k:]
        a = y[s][1:]
        for i in range(len(p)):
            if p[i] > 0:
                loss = loss + p[i] * a[i]
    return loss


def _dkt_inputs(dtype, b=4):
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, Q, (b, STEPS), generator=g)
    right = torch.rand(b, STEPS, generator=g) > 0.4
    batch = torch.zeros(b, STEPS, 2 * Q, dtype=dtype)
    batch.scatter_(2, (q + Q * (~right).long()).unsqueeze(-1), 1.0)
    batch[1, 5:] = 0  # padding: no question, p = 0, skipped
    # p in (-1, 1): negatives skipped, as are the zeros of the padding
    pred = torch.tanh(torch.randn(b, STEPS, Q, generator=g, dtype=dtype)).requires_grad_()
    return pred, batch


def _optimized(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: the loop ran as the check chose
        return optimize_loss(fn, compile=False, strict=True)


def _loop(opt, line):
    return next(loop for loop in opt.report.loops if loop.lineno == line)


def test_golden_dkt_outer_loop_maps_over_the_inner_vectorized_form():
    _, _, code, report = build(DKT, namespace(Q=Q, STEPS=STEPS))
    assert strategies(report) == {9: "batched", 3: "vmap", 6: "kept"}, report
    outer = next(loop for loop in report.loops if loop.lineno == 3)
    assert "the inner loops' checks on `a`, `p` evaluated on the first item" in outer.reason
    assert code == golden_text(GOLDEN, code)


@pytest.mark.parametrize("src, inner, why", [
    (BY_COUNT, 6, "n <= row.shape[0] (it reads the value of `n`, not only its type and shape)"),
    (POSITIVES, 5, "isinstance(q, torch.Tensor) (`q = x[s][x[s] > 0]`: its shape may differ "
                   "per iteration"),
])
def test_golden_a_check_on_a_per_item_value_keeps_the_outer_loop(src, inner, why):
    _, _, code, report = build(src)
    assert strategies(report) == {inner: "batched", 3: "kept"}, report
    outer = next(loop for loop in report.loops if loop.lineno == 3)
    assert f"needs a per-iteration runtime check: {why}" in outer.reason, outer.reason
    assert "first_item" not in code


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dkt_equivalent_and_the_outer_loop_runs_vectorized(dtype):
    pred, batch = _dkt_inputs(dtype)
    opt = _optimized(dkt)
    assert_equivalent(dkt, opt, pred, batch)
    want, grads = outputs_and_gradients(dkt, (pred, batch), {})
    got, _ = outputs_and_gradients(opt, (pred, batch), {})
    assert [v.dtype for v in got] == [v.dtype for v in want]
    assert all(torch.isfinite(g).all() for g in grads.values())  # so both are NaN-free
    outer = _loop(opt, dkt.__code__.co_firstlineno + 2)
    assert outer.vectorized and outer.vectorized_runs == 1, outer  # the first call's, counted
    assert outer.original_runs == 0 and outer.failed_runs == 0, outer


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_failing_first_item_check_runs_the_loop_as_written_without_warning(dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 8, generator=g, dtype=dtype)
    x[:, 5:] = -1.0  # p longer than a: the original never reads a there (skipped)
    y = torch.randn(3, 5, generator=g, dtype=dtype, requires_grad=True)
    x.requires_grad_()
    line = trimmed.__code__.co_firstlineno + 2
    # len(p) <= a.shape[0] fails (k=1), or len(p) > 0 (k=8, p empty): the loop runs as written
    for args, ran in [((x, y, 1), "original_runs"), ((x, y, 8), "original_runs"),
                      ((x[:, :6], y, 2), "vectorized_runs")]:  # the checks hold
        opt = _optimized(trimmed)
        assert_equivalent(trimmed, opt, *args)
        loop = _loop(opt, line)
        assert loop.vectorized and getattr(loop, ran) == 1 and not loop.failed_runs, loop
        assert loop.vectorized_runs + loop.original_runs == 1, loop


@pytest.mark.parametrize("bad", ["list_batch", "short_batch"])
def test_bad_inputs_raise_the_original_error(bad):
    pred, batch = _dkt_inputs(torch.float32)
    batch = batch.tolist() if bad == "list_batch" else batch[:, :3]
    with pytest.raises(Exception) as want:
        dkt(pred, batch)
    opt = _optimized(dkt)
    with pytest.raises(type(want.value)) as got:
        opt(pred, batch)
    assert str(got.value) == str(want.value)
    assert _loop(opt, dkt.__code__.co_firstlineno + 2).vectorized  # it ran as written


# the outer loop iterates elements, or binds values two inner loops share
ELEMENTS = """
def f(emb, w):
    loss = 0
    for spk in emb:
        p = (spk * w).sum(1)
        for i in range(len(p)):
            if p[i] > 0:
                loss = loss + p[i]
    return loss
"""
SHARED = """
def f(x, y):
    loss = 0
    l2 = 0
    for s in range(1, x.shape[0]):
        p = x[s].sum(1)
        q = y[s][1:]
        for i in range(len(p)):
            loss = loss + p[i] * q[i]
        for j in range(len(q)):
            l2 = l2 + q[j] ** 2
    return loss + l2
"""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("src, outer, args", [
    (ELEMENTS, 3, lambda d: (torch.randn(4, 5, 3, dtype=d, requires_grad=True),
                             torch.randn(3, dtype=d))),
    (SHARED, 4, lambda d: (torch.randn(4, 6, 3, dtype=d, requires_grad=True),
                           torch.randn(4, 7, dtype=d, requires_grad=True))),
])
def test_elements_and_shared_values_map_the_outer_loop(src, outer, args, dtype):
    f, g, code, report = build(src)
    assert strategies(report)[outer] == "vmap", report
    assert code.count("isinstance(_q, torch.Tensor)") <= 1  # the inner loops' checks, once
    torch.manual_seed(0)
    assert_equivalent(f, g, *args(dtype))
