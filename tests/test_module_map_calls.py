"""module_loss_calls on modules mapping over their input's leading dims (``op_facts.MODULE_MAPS``:
``nn.Linear``): ``self.head(feat[i])`` becomes ``F.linear`` with the module's weight and bias,
batched as one ``F.linear`` of every item (``batch_calls``' "linear" form) instead of a vmapped
module call. Golden generated code (with a no-change case), equivalence (value, every gradient,
the module's parameters' included, dtype; float32 and float64; NaN and inf in an item) and the
runtime check (a hook, a subclass with its own forward: the loop runs as written)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from rewrite import optimize_loss
from rewrite.testing import assert_equivalent
from tests import module_map_sources as src
from tests.test_module_loss_calls import assert_case, gen, generated

GOLDEN = Path(__file__).parent / "golden" / "module_map_calls"
DTYPES = [torch.float32, torch.float64]


def test_golden_linear_head():
    assert_case(src.HeadPerSequence.forward, {33: "batched"}, GOLDEN / "head_per_sequence.txt")


def test_a_sequential_head_stays_a_module_call():
    code, strategies = generated(src.SequentialHead.forward)
    assert "torch.nn.functional.linear" not in code and strategies == {45: "vmap"}


def inputs(dtype, seed, bad=None):
    z = torch.randn(5, 3, 6, generator=gen(seed), dtype=dtype)
    if bad is not None:
        z[2, 1, 0] = bad
    return z.requires_grad_(), torch.randn(5, 3, 6, generator=gen(seed + 1), dtype=dtype)


def parameter_grads(module, fn, *args):
    return torch.autograd.grad(fn(*args), list(module.parameters()), allow_unused=True)


def vectorized(optimized) -> int:
    return optimized.report.loops[0].runs()["vectorized"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("bad", [None, float("nan"), float("inf")])
def test_probe_is_equivalent_with_the_parameters_gradients(dtype, bias, bad):
    module = src.ProbeLoss(bias=bias).to(dtype)
    optimized = optimize_loss(module, compile=False)
    assert_equivalent(module, optimized, *inputs(dtype, 0, bad))
    for want, got in zip(parameter_grads(module, module, *inputs(dtype, 0, bad)),
                         parameter_grads(module, optimized, *inputs(dtype, 0, bad))):
        torch.testing.assert_close(got, want, equal_nan=True)
    assert optimized(*inputs(dtype, 0)).dtype == dtype
    assert vectorized(optimized) >= 1, optimized.report
    assert "batched" in optimized.report.loops[0].strategy


@pytest.mark.parametrize("dtype", DTYPES)
def test_head_per_sequence_is_equivalent(dtype):
    module = src.HeadPerSequence().to(dtype)
    optimized = optimize_loss(module, compile=False)
    feat = torch.randn(4, 5, 6, generator=gen(3), dtype=dtype).requires_grad_()
    y = torch.randint(0, 4, (4, 5), generator=gen(4))
    assert_equivalent(module, optimized, feat, y)
    for want, got in zip(parameter_grads(module, module, feat, y),
                         parameter_grads(module, optimized, feat, y)):
        torch.testing.assert_close(got, want)
    assert vectorized(optimized) >= 1, optimized.report


class OwnForward(nn.Linear):
    def forward(self, x):
        return super().forward(x) * 2


@pytest.mark.parametrize("change", ["hook", "subclass"])
def test_a_hooked_or_subclassed_head_runs_the_loop_as_written(change):
    module = src.ProbeLoss().double()
    calls = []
    if change == "hook":
        module.proj.register_forward_hook(lambda m, a, out: calls.append(1))
    else:
        module.proj = OwnForward(6, 6).double()
    optimized = optimize_loss(module, compile=False)
    assert_equivalent(module, optimized, *inputs(torch.float64, 5))
    assert vectorized(optimized) == 0
    if change == "hook":
        calls.clear()
        optimized(*inputs(torch.float64, 5))
        assert len(calls) == 5  # once per item, as the original
