"""module_caller_calls: a module handed to ``torch.func.functional_call`` runs its rewritten
``forward`` there, behind the same checks as a direct call; otherwise the call runs as written."""
from __future__ import annotations

import pytest
import torch

from passes import module_caller_calls, optimize_called_helpers
from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module, run_called_helpers_pass

SOURCE = '''
import torch
import torch.nn as nn

class Weighted(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.w = nn.Parameter(torch.ones(n))

    def forward(self, pred, target):
        total = 0
        for i in range(pred.shape[0]):
            total += (self.w * (pred[i] - target[i]).pow(2)).sum()
        return total

def functional(pred, target, w):
    criterion = Weighted(pred.shape[1])
    return torch.func.functional_call(criterion, {"w": w}, (pred, target))

def hooked(pred, target, w):
    criterion = Weighted(pred.shape[1])
    criterion.register_forward_hook(lambda module, args, out: out * 0)
    return torch.func.functional_call(criterion, {"w": w}, (pred, target))

def by_keyword(pred, target, w):  # the module by keyword: not taken, reported
    criterion = Weighted(pred.shape[1])
    return torch.func.functional_call(module=criterion, parameter_and_buffer_dicts={"w": w},
                                      args=(pred, target))

def plain(pred, target, w):
    return torch.func.functional_call(nn.MSELoss(), {}, (pred * w, target))
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("caller"), SOURCE)


def test_golden_functional_call(user):
    out, ctx = run_called_helpers_pass(user.functional)
    assert ("return _forward_during(torch.func.functional_call, criterion, _module_forward(criterion,"
            " _forward_original, _forward))(criterion, {'w': w}, (pred, target))") in out
    assert ctx.bindings["_forward_during"] is module_caller_calls.forward_during
    assert ctx.bindings["_module_forward"] is optimize_called_helpers.module_forward
    [loop] = ctx.report.loops
    assert loop.vectorized


def test_golden_keyword_module_is_reported_not_rewritten(user):
    out, ctx = run_called_helpers_pass(user.by_keyword)
    assert "_forward" not in out and not ctx.bindings
    [loop] = ctx.report.loops
    assert not loop.vectorized and "which is handed `criterion` and may call Weighted.forward" in loop.reason


def test_golden_unchanged_without_a_module_of_the_module(user):
    out, ctx = run_called_helpers_pass(user.plain)
    assert "_forward_during" not in out and not ctx.bindings


def _inputs(dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    pred = torch.rand(5, 3, generator=gen, dtype=dtype)
    target = torch.rand(5, 3, generator=gen, dtype=dtype)
    pred[1, 0], target[2, 1], target[3, 2] = float("nan"), float("inf"), pred[3, 2]  # NaN, inf, tie
    w = torch.rand(3, generator=gen, dtype=dtype)
    return pred.requires_grad_(), target, w.requires_grad_()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["functional", "hooked", "by_keyword"])
def test_equivalent(user, name, dtype):
    fn = getattr(user, name)
    fast = optimize_loss(fn, compile=False)
    for seed in range(3):
        assert_equivalent(fn, fast, *_inputs(dtype, seed))
    [loop] = fast.report.loops
    assert (loop.runs()["vectorized"] > 0) == (name == "functional")  # the checks decide


def test_the_module_keeps_no_forward_of_its_own(user):
    module = user.Weighted(3)
    picked = optimize_called_helpers.module_forward(module, user.Weighted.forward, _raising)
    call = module_caller_calls.forward_during(torch.func.functional_call, module, picked)
    with pytest.raises(ZeroDivisionError):
        call(module, {}, (torch.ones(2, 3), torch.ones(2, 3)))
    assert "forward" not in vars(module)


def test_another_caller_runs_as_written(user):
    module = user.Weighted(3)
    picked = optimize_called_helpers.module_forward(module, user.Weighted.forward, _raising)
    assert module_caller_calls.forward_during(print, module, picked) is print
    module.register_forward_pre_hook(lambda m, args: None)
    picked = optimize_called_helpers.module_forward(module, user.Weighted.forward, _raising)
    assert module_caller_calls.forward_during(torch.func.functional_call, module, picked) \
        is torch.func.functional_call


def _raising(module, pred, target):
    raise ZeroDivisionError
