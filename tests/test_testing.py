"""assert_equivalent must be able to fail: on values, on gradients, on parameters."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent


def _pred(dtype=torch.float32):
    return torch.randn(6, 2, dtype=dtype, requires_grad=True, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equal_functions_pass(dtype):
    assert_equivalent(lambda p, t: (p - t).pow(2).sum(), lambda p, t: ((p - t) * (p - t)).sum(),
                      _pred(dtype), torch.randn(6, 2, dtype=dtype))


def test_wrong_value_fails():
    with pytest.raises(AssertionError, match="output 0"):
        assert_equivalent(lambda p: p.sum(), lambda p: p.sum() + 1e-2, _pred())


def test_wrong_gradient_with_same_value_fails():
    with pytest.raises(AssertionError, match="gradient of argument 0") as info:
        assert_equivalent(lambda p: (p * p).sum(), lambda p: (p * p.detach()).sum(), _pred())
    assert "output 0" not in str(info.value)


def test_missing_gradient_fails():
    with pytest.raises(AssertionError, match="gradient of argument 'w'"):
        assert_equivalent(lambda p, w: (p * w).sum(), lambda p, w: (p * w.detach()).sum(),
                          _pred(), w=torch.ones(6, 2, requires_grad=True))


def test_module_parameter_gradient_fails():
    lin = torch.nn.Linear(2, 1)
    with pytest.raises(AssertionError, match="parameter weight"):
        assert_equivalent(lambda m, x: m(x).sum(), lambda m, x: (x @ m.weight.detach().T + m.bias).sum(),
                          lin, _pred())


def test_inputs_are_not_shared_between_runs():
    def mutates(p, t):
        t.add_(1)
        return (p * t).sum()
    target = torch.zeros(6, 2)
    assert_equivalent(mutates, mutates, _pred(), target)
    assert torch.equal(target, torch.zeros(6, 2))


def test_random_ops_see_the_same_seed():
    assert_equivalent(lambda p: torch.nn.functional.dropout(p, 0.5).sum(),
                      lambda p: torch.nn.functional.dropout(p, 0.5).sum(), _pred())
