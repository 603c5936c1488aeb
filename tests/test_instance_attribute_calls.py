"""Calls through an attribute of ``self`` reach the loops they run: a loss that picks its
per-image method in ``__init__`` (as Lovász hinge losses do), a module function kept on the
object, a module of the module made in ``__init__``; what cannot be resolved is noted, never
silently absent."""
from __future__ import annotations

import ast

import pytest
import torch

from passes import instance_attribute_calls
from rewrite import assert_equivalent, optimize_loss
from rewrite.frontend import parse_function
from tests.helpers import load_module, run_called_helpers_pass

SOURCE = '''
import torch
import torch.nn as nn
import torch.nn.functional as F

def per_row(p, t):
    total = 0
    for i in range(p.shape[0]):
        total = total + (p[i] - t[i]).abs().sum()
    return total / p.shape[0]

class PerImage(nn.Module):
    def __init__(self, per_image=True):
        super().__init__()
        self.loss_fn = self._per_image if per_image else self._flat

    def _per_image(self, logits, labels):
        total = 0
        for i in range(logits.shape[0]):
            total = total + (logits[i] - labels[i]).pow(2).mean()
        return total / logits.shape[0]

    def _flat(self, logits, labels):
        return (logits - labels).pow(2).mean()

    def forward(self, logits, labels):
        return self.loss_fn(logits, labels)

class Private(PerImage):
    def __init__(self):
        super().__init__()
        self.__fn = self._per_image

    def forward(self, logits, labels):
        return self.__fn(logits, labels)

class Kept(nn.Module):
    def __init__(self):
        super().__init__()
        self.reduce = per_row
        self.ce = nn.MSELoss()

    def forward(self, p, t):
        return self.reduce(p, t) + self.ce(p, t)

class Inner(nn.Module):
    def forward(self, p, t):
        total = 0
        for i in range(p.shape[0]):
            total = total + (p[i] - t[i]).pow(2).sum()
        return total

class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Inner()

    def forward(self, p, t):
        return self.inner(p, t) * 0.5

class ByName(nn.Module):
    def __init__(self, mode="per_image", fn=None):
        super().__init__()
        self.loss_fn = getattr(self, "_" + mode)
        self.extra = fn

    def _per_image(self, logits, labels):
        total = 0
        for i in range(logits.shape[0]):
            total = total + (logits[i] - labels[i]).pow(2).mean()
        return total

    def forward(self, logits, labels):
        return self.loss_fn(logits, labels)

class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.crit = nn.L1Loss()
        self.act = F.relu

    def forward(self, p, t):
        return self.crit(self.act(p), t)

class Selector:
    def pick(self, p):
        rows = []
        for i in range(p.shape[0]):
            rows.append(p[i].max())
        return torch.stack(rows)

class Mined(nn.Module):
    def __init__(self, selector=None):
        super().__init__()
        self.selector = selector
        self.own = Selector()

    def forward(self, p, t):
        return (self.own.pick(p) - t.sum(1)).pow(2).mean() + self.selector.pick(t).sum()

def with_param(p, t, fn):
    return fn(p, t)

class Clamp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp(0, 1)

    @staticmethod
    def backward(ctx, grad):
        out = grad.clone()
        for i in range(out.shape[0]):
            out[i] = out[i] * 1.0
        return out

def clamped(p, t):
    return (Clamp.apply(p) - t).pow(2).sum()
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("attrs"), SOURCE)


_run_pass = run_called_helpers_pass


def _loop_line(fn) -> int:
    return next(n.lineno for n in ast.walk(parse_function(fn).tree) if isinstance(n, ast.For))


def test_golden_bound_method_picked_in_init(user):
    out, ctx = _run_pass(user.PerImage.forward)
    assert out == ast.unparse(ast.parse(
        "def forward(self, logits, labels):\n"
        "    return _picked_helper(self.loss_fn, (_per_image_original, _per_image))(logits, labels)"))
    assert ctx.bindings["_picked_helper"] is instance_attribute_calls.picked_helper
    assert ctx.bindings["_per_image_original"] is user.PerImage._per_image
    [loop] = ctx.report.loops
    assert (loop.lineno, loop.vectorized) == (_loop_line(user.PerImage._per_image), True)


def test_golden_private_attribute(user):
    out, ctx = run_called_helpers_pass(user.Private.forward)
    assert "_picked_helper(self.__fn, (_per_image_original, _per_image))(logits, labels)" in out
    assert not ctx.report.notes


def test_golden_report_lists_the_helper_loop(user):
    fast = optimize_loss(user.PerImage(), compile=False)
    line = _loop_line(user.PerImage._per_image)
    text = str(fast.report)
    assert f"{fast.report.filename}:{line}: loop vectorized" in text
    assert "no loops" not in text


def test_golden_module_function_and_module_attributes(user):
    out, ctx = _run_pass(user.Kept.forward)
    assert "_picked_helper(self.reduce, (_per_row_original, _per_row))(p, t) + self.ce(p, t)" in out
    assert [l.lineno for l in ctx.report.loops] == [_loop_line(user.per_row)]
    out, ctx = _run_pass(user.Outer.forward)
    assert "_module_forward(self.inner, _forward_original, _forward)(p, t)" in out
    assert [l.lineno for l in ctx.report.loops] == [_loop_line(user.Inner.forward)]


def test_golden_unchanged(user):
    out, ctx = _run_pass(user.Plain.forward)
    assert out == ast.unparse(ast.parse(parse_function(user.Plain.forward).source))
    assert not ctx.bindings and not ctx.report.loops and not ctx.report.notes


def test_unresolved_attribute_is_noted_with_its_candidates(user):
    out, ctx = _run_pass(user.ByName.forward)
    assert "self.loss_fn(logits, labels)" in out and not ctx.bindings
    [note] = ctx.report.notes
    call_line = parse_function(user.ByName.forward).lineno + 1
    assert note == (f"{ctx.filename}:{call_line}: `self.loss_fn(...)` runs as written: called through"
                    " `self.loss_fn`, resolved at run time (it may hold `getattr(self, '_' + mode)`)")
    [loop] = ctx.report.loops
    assert loop.lineno == _loop_line(user.ByName._per_image) and not loop.vectorized
    assert loop.reason == "not rewritten: called through `self.loss_fn`, resolved at run time; " \
        "not distributed: `ByName._per_image` and the helpers it calls run as written"


def test_golden_method_of_an_attribute(user):
    out, ctx = _run_pass(user.Mined.forward)
    assert ("_pick(self.own, p) if getattr(type(self.own), 'pick', None) is _pick_original"
            " else self.own.pick(p)") in out
    assert "self.selector.pick(t)" in out
    call_line = parse_function(user.Mined.forward).lineno + 1
    assert ctx.report.notes == [
        f"{ctx.filename}:{call_line}: `self.selector.pick(...)` runs as written: called through"
        " `self.selector.pick`, resolved at run time (it may hold `selector`)"]
    [loop] = ctx.report.loops  # reached by self.own.pick first: reported vectorized
    assert loop.lineno == _loop_line(user.Selector.pick) and loop.vectorized


@pytest.mark.parametrize("name, how", [
    ("with_param", "(it may hold `fn` as the caller or a loop binds it)"),
])
def test_call_through_a_parameter_is_noted(user, name, how):
    out, ctx = _run_pass(getattr(user, name))
    [note] = ctx.report.notes
    assert note.endswith(f"`fn(...)` runs as written: called through `fn`, resolved at run time {how}")


def test_autograd_function_loops_are_reported(user):
    out, ctx = _run_pass(user.clamped)
    assert out == ast.unparse(ast.parse(parse_function(user.clamped).source))
    [loop] = ctx.report.loops
    assert loop.lineno == _loop_line(user.Clamp.backward) and not loop.vectorized
    assert loop.reason == "not rewritten: called through `Clamp.apply(...)`, which autograd " \
        "runs; not distributed: `Clamp.backward` and the helpers it calls run as written"


def _inputs(dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    p = torch.rand(5, 3, generator=gen, dtype=dtype).requires_grad_()
    return p, torch.rand(5, 3, generator=gen, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("make", [lambda u: u.PerImage(True), lambda u: u.PerImage(False),
                                  lambda u: u.Kept(), lambda u: u.Outer(), lambda u: u.ByName(),
                                  lambda u: u.Plain(), lambda u: u.Mined(u.Selector()),
                                  lambda u: u.Private()])
def test_equivalent(user, make, dtype):
    module = make(user)
    fast = optimize_loss(module, compile=False)
    for seed in range(3):
        assert_equivalent(module, fast, *_inputs(dtype, seed))


def _elsewhere(logits, labels):  # a function of another module than the loss's
    return (logits - labels).sum() * 3


@pytest.mark.parametrize("rebind", [
    lambda m, u: setattr(m, "loss_fn", _elsewhere),              # a function of another module
    lambda m, u: setattr(m, "loss_fn", m._flat),                 # another method, after a call
    lambda m, u: setattr(m, "loss_fn", u.PerImage(False)._flat),  # a method of another object
])
def test_rebound_attribute_runs_what_it_holds(user, rebind):
    module = user.PerImage(True)
    fast = optimize_loss(module, compile=False)
    p, t = _inputs(torch.float64, 0)
    assert_equivalent(module, fast, p, t)  # first call: the rewritten per-image loop
    rebind(module, user)
    assert torch.equal(fast(p, t), module.loss_fn(p, t))
    assert_equivalent(module, fast, p, t)


def test_picked_helper_checks_the_function_and_binds_its_object(user):
    class Half(user.PerImage):
        def _per_image(self, logits, labels):
            return (logits - labels).pow(2).mean() / 2
    original, rewritten = user.PerImage._per_image, lambda self, x, y: (self, x, y)
    overridden = Half(True)  # its loss_fn is Half._per_image: runs as written
    pick = instance_attribute_calls.picked_helper
    assert pick(overridden.loss_fn, (original, rewritten)) == overridden.loss_fn
    module = user.PerImage(True)
    assert pick(module.loss_fn, (original, rewritten))(1, 2) == (module, 1, 2)
    assert pick(original, (original, rewritten)) is rewritten
    assert pick(_elsewhere, (original, rewritten)) is _elsewhere


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equivalent_functions(user, dtype):
    for seed in range(3):
        p, t = _inputs(dtype, seed)
        assert_equivalent(user.clamped, optimize_loss(user.clamped, compile=False), p, t)
        fast = optimize_loss(user.with_param, compile=False)
        assert_equivalent(user.with_param, fast, p, t, user.per_row)
