"""A module of the module made and moved in one expression, ``crit = Dice().to(p.dtype)`` (a local)
or ``self.dice = Dice().to(dtype).eval()`` (an attribute set in ``__init__``), is the module
``Dice()`` made: ``nn.Module``'s ``to``, ``cuda``, ``double``, ``eval``, ... return it
(``op_facts.MODULE_SELF_METHODS``), so its ``forward`` is rewritten and the call picks it behind
``module_forward``'s check, as for ``crit = Dice()``. Found on a JDE-style tracking ID loss
(``FPNId(n, d).to(dtype)``), whose loop the report did not list at all. A class that overrides
such a method (its ``to`` may return another object) is not followed: the call is a note, as
before. Golden after the pass (with the no-change case), the report, and equivalence of the value,
every gradient and dtype in float32 and float64."""
from __future__ import annotations

import ast

import pytest
import torch

from passes import op_facts
from tests.helpers import equivalent_report, load_module, run_called_helpers_pass

SOURCE = '''
import torch
import torch.nn as nn


class PerClassDice(nn.Module):
    def forward(self, p, t):
        loss = 0
        for c in range(p.shape[1]):
            loss = loss + (p[:, c] * t[:, c]).sum() / (p[:, c].sum() + t[:, c].sum() + 1)
        return loss


class OwnTo(PerClassDice):
    def to(self, *args, **kwargs):  # another module: not the one made
        return PerClassDice()


class Outer(nn.Module):
    def __init__(self, dtype):
        super().__init__()
        self.dice = PerClassDice().to(dtype).eval()

    def forward(self, p, t):
        return self.dice(p, t)


def local_to(p, t):
    crit = PerClassDice().to(p.dtype)
    return crit(p, t)


def own_to(p, t):
    crit = OwnTo().to(p.dtype)
    return crit(p, t)


def attribute_to(p, t):
    return Outer(p.dtype)(p, t)
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("self_methods"), SOURCE)


def _unparsed(src: str) -> str:
    return ast.unparse(ast.parse(src))


def test_the_methods_return_the_module():
    m = torch.nn.Linear(2, 2)
    for name in sorted(op_facts.MODULE_SELF_METHODS - {"cuda"}):
        args = (torch.float64,) if name == "to" else ()
        assert getattr(m, name)(*args) is m, name


def test_golden_local(user):
    out, ctx = run_called_helpers_pass(user.local_to)
    assert out == _unparsed("def local_to(p, t):\n"
                            "    crit = PerClassDice().to(p.dtype)\n"
                            "    return _module_forward(crit, _forward_original, _forward)(p, t)")
    assert [loop.vectorized for loop in ctx.report.loops] == [True] and not ctx.report.notes


def test_golden_attribute(user):
    out, ctx = run_called_helpers_pass(user.Outer.forward)
    assert out == _unparsed("def forward(self, p, t):\n"
                            "    return _module_forward(self.dice, _forward_original, _forward)(p, t)")
    assert [loop.vectorized for loop in ctx.report.loops] == [True] and not ctx.report.notes


def test_golden_unchanged_when_the_class_overrides_the_method(user):
    out, ctx = run_called_helpers_pass(user.own_to)
    assert out == _unparsed("def own_to(p, t):\n"
                            "    crit = OwnTo().to(p.dtype)\n"
                            "    return crit(p, t)")
    [note] = ctx.report.notes
    assert note.endswith("`crit(...)` runs as written: called through `crit`, resolved at run "
                         "time (it may hold `OwnTo().to(p.dtype)`)")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["local_to", "attribute_to", "own_to"])
def test_equivalent(user, name, dtype):
    p = torch.rand(3, 4, 5, dtype=dtype)
    p[0, 1] = 0.0
    t = (torch.rand(3, 4, 5, dtype=dtype) > 0.5).to(dtype)
    report = equivalent_report(getattr(user, name), p.requires_grad_(), t)
    if name != "own_to":
        [loop] = report.loops
        assert loop.vectorized and loop.vectorized_runs == 1 and not loop.failed_runs
