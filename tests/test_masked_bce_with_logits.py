"""``F.binary_cross_entropy_with_logits`` under a tensor condition (a class-balanced per-class
loss, ``if pos[:, k].sum() > 0:``): total on finite operands (``OpSpec.total``), so it runs on
every iteration with both operands 0 where deselected, and no NaN/inf of a deselected iteration
reaches a value or gradient. Also through an ``nn.BCEWithLogitsLoss`` attribute, with weights.
Value, every gradient and dtype against the original (float32, float64; NaN/inf in deselected
and selected iterations, none selected)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from passes import ops
from rewrite import assert_equivalent
from rewrite import optimize_loss
from tests import masked_bce_sources as src
from tests.loop_helpers import build, strategies

INF, NAN = float("inf"), float("nan")

PER_CLASS = """
def f(x, t, w):
    pos = t > 0.5
    loss = x.new_zeros(())
    for k in range(x.shape[1]):
        if pos[:, k].sum() > 0:
            loss = loss + F.binary_cross_entropy_with_logits(x[:, k], t[:, k], reduction='sum')
    return loss
"""
# weights: the batched form behind a check that they are None (``CHECKED_LOSS_OPTIONS``); a
# tensor runs the vmap form, the operands zeroed alike
WEIGHTED = PER_CLASS.replace("reduction='sum'", "pos_weight=w, reduction='sum'")

def _inputs(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 4, dtype=dtype, generator=gen) * 3
    t = (torch.rand(6, 4, dtype=dtype, generator=gen) > 0.5).to(dtype)
    t[:, 1] = 0.0  # class 1 has no positive: deselected
    return x, t


def test_golden_masked_bce_is_batched():
    _, _, code, report = build(PER_CLASS)
    assert strategies(report) == {4: "batched"}, report.loops[0].reason
    batched = code[:code.index("def _body")]
    assert "F.binary_cross_entropy_with_logits(torch.where(" in batched
    assert batched.count("torch.where(_cond.reshape(") >= 2  # both operands zeroed


@pytest.mark.parametrize("src", [PER_CLASS, WEIGHTED], ids=["batched", "weighted"])
@pytest.mark.parametrize("special", [None, "deselected", "selected", "none_selected"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_bce_equivalent(src, special, dtype, monkeypatch):
    original, optimized, _, report = build(src)
    assert strategies(report) == {4: "batched"}
    x, t = _inputs(dtype)
    w = torch.tensor(2.0, dtype=dtype)
    if special == "deselected":
        x[0, 1], x[2, 1], t[3, 1] = NAN, INF, NAN  # t[3, 1] NaN: not > 0.5, still deselected
    elif special == "selected":
        x[0, 0], x[1, 2] = INF, -INF
    elif special == "none_selected":
        t.zero_()
    if src is PER_CLASS:
        monkeypatch.setattr(torch, "vmap", None)  # the batched code must not need it
    assert_equivalent(original, optimized, x.requires_grad_(), t.requires_grad_(), w)
    assert optimized(x, t, w).dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_module_attribute_under_a_tensor_condition(dtype):
    x, t = _inputs(dtype, 1)
    x[1, 1], x[3, 1] = NAN, INF  # class 1: deselected
    module = src.ClassBalancedBCE(weight=torch.rand(6, dtype=dtype) + 0.5)
    optimized = optimize_loss(module, compile=False)
    assert_equivalent(module, optimized, x.requires_grad_(), t.requires_grad_())
    assert_equivalent(module, optimized, x, torch.zeros_like(t))  # none selected
    loop = optimized.report.loops[0]
    # the module's weight fails the batched form's check: the vmap form ran
    assert loop.strategy == "batched" and loop.runs()["vectorized"] >= 1, loop.reason
    assert "(self.bce.weight is None)" in loop.reason


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_local_criterion_after_a_guarded_continue(dtype):
    x, t = _inputs(dtype, 2)
    y = torch.tensor([0, -100, 1, -100, 0, 2])
    x[1, 0], x[3, 2], t[1, 1] = NAN, INF, NAN  # skipped rows
    optimized = optimize_loss(src.skipped_rows, compile=False)
    assert_equivalent(src.skipped_rows, optimized, x.requires_grad_(), t.requires_grad_(), y)
    assert_equivalent(src.skipped_rows, optimized, x, t, torch.full((6,), -100))
    loop = optimized.report.loops[0]
    assert loop.strategy in ("batched", "vmap") and loop.runs()["vectorized"] >= 1, loop.reason


def test_total_on_finite_operands():
    """``OpSpec.total``: finite value and gradients on any finite logit, target and weights."""
    grid = torch.tensor([-100.0, -3.0, -0.5, 0.0, 0.5, 1.0, 3.0, 100.0], dtype=torch.float64)
    x = grid.repeat_interleave(len(grid)).requires_grad_()
    t = grid.repeat(len(grid)).requires_grad_()
    w = grid.abs().repeat(len(grid))
    assert ops.by_call("torch.nn.functional.binary_cross_entropy_with_logits", None).total
    for kw in ({}, {"weight": w}, {"pos_weight": w}):
        out = F.binary_cross_entropy_with_logits(x, t, reduction="none", **kw)
        grads = torch.autograd.grad(out.sum(), [x, t])  # (weights take none)
        assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
