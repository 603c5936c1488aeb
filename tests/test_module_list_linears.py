"""module_list_linears: ``self.heads[i](x)`` over a list of ``nn.Linear`` becomes ``F.linear``
of the stacked weights and biases; the same values, gradients (of every module's parameters)
and dtype; anything but plain ``nn.Linear`` modules with biases runs the loop as written."""
from __future__ import annotations

import pytest
import torch

from passes.loops.module_list_linears import linear_parameters
from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module

SOURCE = '''
import torch
import torch.nn as nn

class Heads(nn.Module):
    def __init__(self, steps, c, z, bias=True):
        super().__init__()
        self.Wk = nn.ModuleList([nn.Linear(c, z, bias=bias) for _ in range(steps)])

    def forward(self, c_t, target):
        pred = torch.empty((len(self.Wk), c_t.shape[0], target.shape[-1]), dtype=c_t.dtype)
        for i in range(len(self.Wk)):
            linear = self.Wk[i]
            pred[i] = linear(c_t)
        loss = 0
        for i in range(len(self.Wk)):
            loss = loss + (self.Wk[i](c_t) - target[i]).pow(2).sum()
        return loss + pred.sum()

class ReadsTheModule(Heads):
    def forward(self, c_t, target):
        loss = 0
        for i in range(len(self.Wk)):
            linear = self.Wk[i]
            loss = loss + linear(c_t).sum() * linear.weight.shape[0]
        return loss
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("linears"), SOURCE)


def test_golden(user):
    fast = optimize_loss(user.Heads(3, 4, 2), compile=False)
    code = fast.report.rewritten_source
    assert "_Wk_weight, _Wk_bias = _linear_parameters(self.Wk)" in code, code
    assert "torch.nn.functional.linear(c_t, _Wk_weight_row, _Wk_bias_row)" in code, code
    assert "linear = self.Wk[i]" in code.split("else:")[1], code  # only the loop as written
    assert all(loop.vectorized for loop in fast.report.loops), fast.report


def test_golden_unchanged_when_the_item_is_read_otherwise(user):
    fast = optimize_loss(user.ReadsTheModule(3, 4, 2), compile=False)
    assert "_linear_parameters" not in fast.report.rewritten_source


def _inputs(dtype, special):
    gen = torch.Generator().manual_seed(0)
    c_t = torch.randn(5, 4, generator=gen, dtype=dtype)
    target = torch.randn(3, 5, 2, generator=gen, dtype=dtype)
    if special:
        c_t[1, 2], c_t[3, 0], target[0, 0, 0] = float("nan"), float("inf"), float("-inf")
    return c_t.requires_grad_(), target


@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equivalent(user, dtype, special):
    module = user.Heads(3, 4, 2).to(dtype)
    fast = optimize_loss(module, compile=False)
    assert_equivalent(module, fast, *_inputs(dtype, special))  # the parameters' gradients too
    assert fast.report.loops[0].runs()["vectorized"] == 1


@pytest.mark.parametrize("change", ["no bias", "a hook", "a subclass", "another shape"])
def test_other_modules_run_as_written(user, change):
    module = user.Heads(3, 4, 2, bias=change != "no bias").double()
    if change == "a hook":
        module.Wk[1].register_forward_hook(lambda m, args, out: out * 2)
    elif change == "a subclass":
        module.Wk[2] = type("MyLinear", (torch.nn.Linear,), {})(4, 2).double()
    elif change == "another shape":
        module.Wk[0] = torch.nn.Linear(4, 3).double()
        module.Wk[1] = torch.nn.Linear(4, 3).double()
        module.Wk[2] = torch.nn.Linear(4, 3).double()
        module.Wk.append(torch.nn.Linear(4, 2).double())
    assert linear_parameters(module.Wk) == (None, None)
    if change != "another shape":
        fast = optimize_loss(module, compile=False)
        assert_equivalent(module, fast, *_inputs(torch.float64, False))
        assert fast.report.loops[0].runs()["vectorized"] == 0


def test_parameters_of_other_containers():
    assert linear_parameters([torch.nn.Linear(2, 2)]) == (None, None)  # a list: not a module
    assert linear_parameters(torch.nn.ModuleList()) == (None, None)
    weight, bias = linear_parameters(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(2, 3)))
    assert weight.shape == (2, 3, 2) and bias.shape == (2, 3)


def _swapped_in(module, weight, bias):
    """``functional_call``'s parameters of ``module``: rows of one weight and one bias tensor."""
    return {f"Wk.{i}.{name}": p[i] for i in range(len(module.Wk))
            for name, p in (("weight", weight), ("bias", bias))}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rows_of_one_tensor_are_stacked_as_a_view_of_it(user, dtype):
    # the heads of a functional_call with every step's weights in one tensor (an ensemble's
    # stacked state): a view of it, no copy forward nor gradients split by rows backward
    module = user.Heads(3, 4, 2).to(dtype)
    weight = torch.randn(3, 2, 4, dtype=dtype, requires_grad=True)
    bias = torch.randn(3, 2, dtype=dtype, requires_grad=True)
    with torch.nn.utils.stateless._reparametrize_module(module, _swapped_in(module, weight, bias)):
        w, b = linear_parameters(module.Wk)
    assert w._base is weight and b._base is bias
    assert torch.equal(w, weight) and torch.equal(b, bias)

    def loss(c, t, wt, bs):
        return torch.func.functional_call(module, _swapped_in(module, wt, bs), (c, t))
    fast = optimize_loss(loss, compile=False)
    assert_equivalent(loss, fast, *_inputs(dtype, False), weight, bias)


def test_separate_parameters_are_copied(user):
    module = user.Heads(3, 4, 2)
    w, b = linear_parameters(module.Wk)
    assert w._base is None and torch.equal(w[1], module.Wk[1].weight)
