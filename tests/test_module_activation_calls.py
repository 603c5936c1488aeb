"""module_loss_calls on activation modules: ``self.soft_plus(z)`` (``nn.Softplus``, ``nn.ReLU``,
... of ``op_facts.MODULE_ACTIVATIONS``) under a tensor condition becomes its total functional op
with the module's settings, so the loop is masked instead of kept. Golden generated code (with a
no-change case), equivalence (value, every gradient, dtype; float32 and float64; NaN and inf in
rows the condition excludes) and the runtime check (a hook, a subclass, an in-place module: the
loop runs as written)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from rewrite import optimize_loss
from rewrite.testing import assert_equivalent
from tests import module_activation_sources as src
from tests.test_module_loss_calls import assert_case, gen, generated

GOLDEN = Path(__file__).parent / "golden" / "module_activation_calls"
DTYPES = [torch.float32, torch.float64]
CASES = {"circle_loss": (src.CircleLoss.forward, {20: "vmap"}),
         "activations": (src.Activations.forward, {49: "batched"}),
         "module_name": (src.masked_log_likelihood, {59: "batched"}),
         "softmax_rows": (src.SoftmaxRows.forward, {81: "kept"})}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    assert_case(*CASES[name], GOLDEN / f"{name}.txt")


def test_no_change_case_keeps_the_module_call():
    code = generated(src.SoftmaxRows.forward)[0]
    assert "self.sm(x[i])" in code and "torch.nn.functional" not in code


def test_the_loop_as_written_keeps_the_module_call():
    code = generated(src.CircleLoss.forward)[0]
    assert "self.soft_plus(torch.logsumexp" in code  # the fallback, as written
    assert "_plain_loss_module(self.soft_plus, torch.nn.Softplus)" in code


def circle_inputs(dtype, seed):
    sim = torch.randn(7, 7, generator=gen(seed), dtype=dtype)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3])  # two classes of one anchor
    return sim.requires_grad_(), labels


def vectorized(optimized) -> int:
    return optimized.report.loops[0].runs()["vectorized"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_circle_loss_is_equivalent(dtype):
    module = src.CircleLoss()
    optimized = optimize_loss(module, compile=False)
    out = optimized(*circle_inputs(dtype, 1))
    assert out.dtype == dtype
    assert_equivalent(module, optimized, *circle_inputs(dtype, 1))
    assert vectorized(optimized) >= 1, optimized.report


def vectorizing(module, inputs):
    """``module`` optimized, its loop vectorized on ``inputs`` (counted on the first calls only:
    what later calls run, the values and the hooks' calls tell)."""
    optimized = optimize_loss(module, compile=False)
    assert_equivalent(module, optimized, *inputs)
    assert vectorized(optimized) >= 1, optimized.report
    return optimized


def test_circle_loss_with_every_anchor_excluded_raises_as_the_original():
    module = src.CircleLoss()
    optimized = vectorizing(module, circle_inputs(torch.float64, 2))
    sim, labels = circle_inputs(torch.float64, 2)
    with pytest.raises(RuntimeError) as want:
        module(sim, torch.zeros_like(labels))  # no negatives anywhere: nothing to stack
    with pytest.raises(RuntimeError) as got:
        optimized(sim, torch.zeros_like(labels))
    assert str(got.value) == str(want.value)


def activation_inputs(dtype, seed):
    x = torch.randn(6, 5, generator=gen(seed), dtype=dtype) * 3
    keep = torch.tensor([1.0, 0.0, 1.0, -1.0, 1.0, 0.0], dtype=dtype)
    x[1, 0], x[3, 2], x[5, 4] = float("nan"), float("inf"), -float("inf")  # excluded rows
    return x.requires_grad_(), keep


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_activation_is_equivalent_with_nan_and_inf_in_excluded_rows(dtype):
    module = src.Activations()
    optimized = optimize_loss(module, compile=False)
    assert_equivalent(module, optimized, *activation_inputs(dtype, 3))
    assert optimized(*activation_inputs(dtype, 3)).dtype == dtype
    assert torch.isfinite(optimized(*activation_inputs(dtype, 3)))
    assert vectorized(optimized) >= 1, optimized.report


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_module_of_the_module_is_equivalent(dtype):
    x, keep = activation_inputs(dtype, 4)
    y = torch.rand(6, 5, generator=gen(5), dtype=dtype)
    optimized = optimize_loss(src.masked_log_likelihood, compile=False)
    assert_equivalent(src.masked_log_likelihood, optimized, x, y, keep > 0)
    assert vectorized(optimized) >= 1, optimized.report


def test_a_hooked_module_runs_as_written_as_often():
    module = src.CircleLoss()
    optimized = vectorizing(module, circle_inputs(torch.float64, 6))
    calls = []
    module.soft_plus.register_forward_hook(lambda *_: calls.append(1))
    module(*circle_inputs(torch.float64, 6))
    want, calls[:] = len(calls), []
    assert_equivalent(module, optimized, *circle_inputs(torch.float64, 6))
    calls[:] = []
    optimized(*circle_inputs(torch.float64, 6))
    assert len(calls) == want == 7


@pytest.mark.parametrize("replacement", [src.Scaled(beta=2.0, threshold=5.0),
                                         nn.Softplus(beta=0.5), nn.Identity()])
def test_a_subclass_or_another_module_reads_its_own_forward(replacement):
    """A subclass overriding forward (twice the value) and another class run as written; a
    Softplus of other settings has them read at run time."""
    module = src.CircleLoss()
    optimized = vectorizing(module, circle_inputs(torch.float32, 7))
    module.soft_plus = replacement
    assert_equivalent(module, optimized, *circle_inputs(torch.float32, 7))


def test_an_in_place_module_runs_as_written():
    module = src.Activations()
    optimized = vectorizing(module, activation_inputs(torch.float64, 8))
    module.relu = nn.ReLU(inplace=True)  # writes the row of x: x takes no gradient
    x, keep = activation_inputs(torch.float64, 8)
    assert_equivalent(module, optimized, x.detach(), keep)
    written, got = x.detach().clone(), x.detach().clone()
    module(written, keep)
    optimized(got, keep)
    torch.testing.assert_close(got, written, rtol=0, atol=0, equal_nan=True)
    assert not torch.equal(got.nan_to_num(), x.detach().nan_to_num())  # the rows were written
