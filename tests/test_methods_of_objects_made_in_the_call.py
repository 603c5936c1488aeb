"""optimize_called_helpers: a method of an object the call itself makes (``Cls(k)(x)``,
``Cls(k).m(x)``, ``Cls`` a plain class of the module, not an ``nn.Module``), as real code calls
a loss object with ``__call__``: the object is made once and ``picked_method`` runs the
rewritten method when the object's class still has the original one (a subclass overriding it
runs as written). Golden (with a no-change case: a method without a loop), equivalence of value
and every gradient (float32, float64) and that the object is made once."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module

SOURCE = '''
import torch
import torch.nn.functional as F

MADE = []


class SoftDice:
    def __init__(self, smooth=1.0):
        MADE.append(self)
        self.smooth = smooth

    def __call__(self, p, t):
        s = torch.sigmoid(p)
        return 1 - (2 * (s * t).sum() + self.smooth) / (s.sum() + t.sum() + self.smooth)


class PerClass:
    def __init__(self, w=0.5):
        MADE.append(self)
        self.one = SoftDice()
        self.w = w

    def __call__(self, predict, target):
        loss = predict.new_zeros(1)
        for i in range(target.shape[1]):
            bce = F.binary_cross_entropy_with_logits(predict[:, i], target[:, i])
            loss += (1 - self.w) * bce + self.w * self.one(predict[:, i], target[:, i])
        return loss[0] / target.shape[1]

    def per_class(self, predict, target):
        return torch.stack([self.one(predict[:, i], target[:, i])
                            for i in range(target.shape[1])])


class Louder(PerClass):
    def __call__(self, predict, target):
        return 2 * super().__call__(predict, target)


def called(pred, target):
    return PerClass()(pred, target)


def method(pred, target):
    return PerClass(0.25).per_class(pred, target).sum()


def overridden(pred, target):
    return Louder()(pred, target)


def no_loop(pred, target):
    return SoftDice(2.0)(pred, target)
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("made_in_call"), SOURCE)


def test_golden(user):
    fast = optimize_loss(user.called, compile=False)
    assert fast.report.rewritten_source.splitlines()[1] == (
        "    return _picked_method(PerClass(), '__call__', _call___original, _call)(pred, target)")
    assert fast.report.loops[0].vectorized
    plain = optimize_loss(user.no_loop, compile=False)
    assert "_picked_method" not in plain.report.rewritten_source


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", ["called", "method", "overridden"])
def test_equivalent_and_made_once(user, name, dtype):
    fn = getattr(user, name)
    fast = optimize_loss(fn, compile=False, keep_faster=False)
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(4, 3, 8, generator=g, dtype=dtype, requires_grad=True)
    target = (torch.rand(4, 3, 8, generator=g) > 0.5).to(dtype)
    assert_equivalent(fn, fast, pred, target)
    user.MADE.clear()
    fast(pred, target)
    assert len(user.MADE) == 2  # the object and its SoftDice, once each
    if name == "overridden":  # the subclass's own __call__ runs as written, reaching no loop
        assert not fast.report.loops
        return
    assert fast.report.loops[0].vectorized and fast.report.loops[0].vectorized_runs > 0
