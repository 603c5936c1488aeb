"""optimize_called_helpers reaches loops two calls deep, in methods, and behind a name picked at
run time; what it cannot reach is reported. The losses paraphrase how repositories write them:
a dice built on an intersection helper, a loss picked by a flag or a registry, OHKM as a method
of an ``nn.Module``, returns computed by a method of a small object made in the loss."""
from __future__ import annotations

import ast
import importlib

import pytest
import torch

from passes import optimize_called_helpers
from passes.ast_tools import unparse
from rewrite import assert_equivalent, explain, optimize_loss
from rewrite.frontend import parse_function
from tests.helpers import load_module, run_called_helpers_pass

SOURCE = '''
import dataclasses

import torch
import torch.nn as nn

def inter(p, t):
    total = 0
    for i in range(p.shape[0]):
        total += (p[i] * t[i]).sum()
    return total

def dice(p, t):
    return 1 - 2 * inter(p, t) / (p.sum() + t.sum())

def soft_dice(p, t):
    q = p.softmax(-1)
    return 1 - 2 * inter(q, t) / (q.sum() + t.sum())

def nested(pred, target):
    return dice(pred, target)

def picked(pred, target, multiclass):
    fn = soft_dice if multiclass else dice
    return fn(pred, target)

def picked_by_statement(pred, target, multiclass):
    if multiclass:
        fn = soft_dice
    else:
        fn = dice
    return fn(pred, target)

LOSSES = {"dice": dice, "soft": soft_dice}

def registry(pred, target, kind):
    fn = LOSSES[kind]
    return fn(pred, target)

@dataclasses.dataclass
class Weighted:  # eq=True makes its objects unhashable
    w: float

    def __call__(self, p, t):
        return self.w * (p - t).pow(2).mean()

WEIGHTED = Weighted(2.0)
MIXED = {"weighted": WEIGHTED, "dice": dice}

def unhashable(pred, target, kind):
    fn = MIXED[kind]
    return fn(pred, target) + WEIGHTED(pred, target)

def plain(p, t):
    return (p - t).abs().mean()

def lambda_parameter(pred, target):
    apply = lambda dice, p: dice(p, target)  # `dice` here is the parameter, not the helper
    return apply(plain, pred)

def no_helper_loop(pred, target, flag):
    fn = plain if flag else torch.sub
    return fn(pred, target).sum() + plain(pred, target)

class OHKM(nn.Module):
    def __init__(self, topk=2):
        super().__init__()
        self.topk = topk

    def ohkm(self, loss):
        total = 0
        for i in range(loss.shape[0]):
            total += loss[i].topk(self.topk).values.sum()
        return total / loss.shape[0]

    def forward(self, pred, target):
        return self.ohkm((pred - target).pow(2))

class MeanOHKM(OHKM):
    def ohkm(self, loss):
        return loss.mean()

class Typed(OHKM):
    def forward(self, pred, target, type="l2"):
        return self.ohkm((pred - target).pow(2) if type == "l2" else (pred - target).abs())

class PrivateOHKM(nn.Module):
    def __hardest(self, loss):
        total = 0
        for i in range(loss.shape[0]):
            total += loss[i].max()
        return total

    def forward(self, pred, target):
        return self.__hardest((pred - target).pow(2))

class Countdown(nn.Module):
    def forward(self, x, n):
        return self.forward(x * 2, n - 1) if n > 0 else inter(x, x)

def module_call(pred, target):
    return OHKM()(pred, target)

def named_module_call(pred, target):
    criterion = OHKM()
    return criterion(pred, target)

CRITERION = OHKM()  # a loss module made at import, the loss function calling it

def global_module_call(pred, target):
    return CRITERION(pred, target)

def method_of_local(pred, target):
    criterion = OHKM()
    return criterion.forward(pred, target)

class Lambdas:
    def __init__(self):
        self.ohkm = lambda loss: loss.sum()

def rebound(pred, target, plain):
    criterion = OHKM()
    if plain:
        criterion = Lambdas()  # its class has no `ohkm`: the call runs as written
    return criterion.ohkm((pred - target).pow(2))

class Masked(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.mask = torch.ones(n, n)
        for i in range(n):
            self.mask[i, i] = 0

    def forward(self, pred, target):
        return ((pred - target) * self.mask[: pred.shape[0], : pred.shape[1]]).pow(2).sum()

def constructed(pred, target):
    return Masked(8)(pred, target)

def either(pred, target, typed):
    criterion = OHKM()
    if typed:
        criterion = Typed()
    return criterion(pred, target)

def same_forward(pred, target, mean):
    criterion = OHKM()
    if mean:
        criterion = MeanOHKM()  # forward inherited: rewritten, its self.ohkm runs as written
    return criterion(pred, target)

def hooked(pred, target):
    criterion = OHKM()
    criterion.register_forward_hook(lambda module, args, out: out * 0)
    return criterion(pred, target)

def own_forward(pred, target):
    criterion = OHKM()
    criterion.forward = lambda p, t: (p - t).sum()
    return criterion(pred, target)

def functional(pred, target):
    criterion = OHKM()  # handed by keyword: the call is not taken
    return torch.func.functional_call(module=criterion, parameter_and_buffer_dicts={},
                                      args=(pred, target))

COUNT = 0

def counted(p, t):
    global COUNT
    COUNT += 1
    total = 0
    for i in range(p.shape[0]):
        total += (p[i] - t[i]).pow(2).sum()
    return total

def calls_counted(pred, target):
    return counted(pred, target)
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("reach"), SOURCE)


_run_pass = run_called_helpers_pass


def _body(source: str) -> str:
    return ast.unparse(ast.parse(source))


def _loop_line(user, qualname: str) -> int:
    """The line of the first loop of ``qualname`` in the user's file."""
    fn = user
    for part in qualname.split("."):
        fn = getattr(fn, part)
    return next(n.lineno for n in ast.walk(parse_function(fn).tree) if isinstance(n, ast.For))


def test_golden_helper_two_calls_deep(user):
    out, ctx = _run_pass(user.nested)
    assert out == _body("def nested(pred, target):\n    return _dice(pred, target)")
    assert [l.lineno for l in ctx.report.loops] == [_loop_line(user, "inter")]
    assert "_inter(" in _run_pass(user.dice)[0]


def test_golden_name_picked_at_run_time(user):
    out, ctx = _run_pass(user.picked)
    assert out == _body(
        "def picked(pred, target, multiclass):\n"
        "    fn = soft_dice if multiclass else dice\n"
        "    return (_soft_dice if fn is _soft_dice_original else"
        " _dice if fn is _dice_original else fn)(pred, target)")
    assert ctx.bindings["_dice_original"] is user.dice
    assert ctx.bindings["_soft_dice_original"] is user.soft_dice


def test_golden_method_of_self(user):
    out, ctx = _run_pass(user.OHKM.forward)
    assert out == _body(
        "def forward(self, pred, target):\n"
        "    return _ohkm(self, (pred - target).pow(2))"
        " if getattr(type(self), 'ohkm', None) is _ohkm_original"
        " else self.ohkm((pred - target).pow(2))")
    assert ctx.bindings["_ohkm_original"] is user.OHKM.ohkm
    assert [l.lineno for l in ctx.report.loops] == [_loop_line(user, "OHKM.ohkm")]


def test_golden_private_method(user):
    # `self.__hardest` is mangled the same way in the generated check and in the class.
    out, ctx = _run_pass(user.PrivateOHKM.forward)
    assert "_hardest(self, (pred - target).pow(2)) if getattr(type(self), '_PrivateOHKM__hardest'," \
           " None) is _hardest_original" in out
    assert ctx.bindings["_hardest_original"] is user.PrivateOHKM._PrivateOHKM__hardest


def test_golden_method_of_an_object_made_in_the_loss(user):
    out, _ = _run_pass(user.method_of_local)
    assert "_forward(criterion, pred, target) if getattr(type(criterion), 'forward', None) is" \
           " _forward_original else criterion.forward(pred, target)" in out


@pytest.mark.parametrize("name", ["no_helper_loop", "plain", "lambda_parameter"])
def test_golden_unchanged(user, name):
    fn = getattr(user, name)
    out, ctx = _run_pass(fn)
    assert out == _body(parse_function(fn).source) and not ctx.bindings and not ctx.report.loops


@pytest.mark.parametrize("name, module", [("module_call", "OHKM()"), ("named_module_call", "criterion"),
                                          ("global_module_call", "CRITERION")])
def test_golden_module_call(user, name, module):
    out, ctx = _run_pass(getattr(user, name))
    assert f"return _module_forward({module}, _forward_original, _forward)(pred, target)" in out
    assert ctx.bindings["_module_forward"] is optimize_called_helpers.module_forward
    assert ctx.bindings["_forward_original"] is user.OHKM.forward
    [loop] = ctx.report.loops
    assert (loop.lineno, loop.vectorized) == (_loop_line(user, "OHKM.ohkm"), True)


@pytest.mark.parametrize("name, helper, how", [
    ("functional", "OHKM.ohkm", "which is handed `criterion` and may call OHKM.forward"),
    ("either", "OHKM.ohkm", "an object of one of several classes with different forwards"),
])
def test_loops_run_out_of_reach_are_reported(user, name, helper, how):
    fn = getattr(user, name)
    out, ctx = _run_pass(fn)
    assert out == _body(parse_function(fn).source) and not ctx.bindings
    assert [l.lineno for l in ctx.report.loops] == [_loop_line(user, helper)]
    assert how in ctx.report.loops[0].reason and not ctx.report.loops[0].vectorized


def test_helper_that_cannot_be_rewritten_has_its_loop_reported(user):
    out, ctx = _run_pass(user.calls_counted)
    assert "counted(pred, target)" in out and not ctx.bindings
    [loop] = ctx.report.loops
    assert loop.lineno == _loop_line(user, "counted") and not loop.vectorized
    assert "helper counted is called as written" in loop.reason


def test_shadowed_type_reports_instead_of_rewriting(user):
    out, ctx = _run_pass(user.Typed.forward)
    assert "_ohkm" not in out and not ctx.bindings
    assert "`type` is not the builtin here" in ctx.report.loops[0].reason


def test_recursive_method_is_not_followed(user):
    out, ctx = _run_pass(user.Countdown.forward)
    assert "self.forward(x * 2, n - 1)" in out and "_inter(x, x)" in out
    assert "_forward" not in out


def test_second_run_changes_nothing(user):
    once, ctx = _run_pass(user.picked)
    twice = unparse(optimize_called_helpers.transform(ast.parse(once), ctx))
    assert once == twice


def _inputs(dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    pred = torch.rand(6, 4, generator=gen, dtype=dtype)
    pred[0, 1] = pred[0, 2]  # a tie for topk
    return pred.requires_grad_(), torch.rand(6, 4, generator=gen, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name, extra", [("nested", ()), ("picked", (True,)), ("picked", (False,)),
                                         ("picked_by_statement", (True,)),
                                         ("picked_by_statement", (False,)),
                                         ("registry", ("dice",)), ("registry", ("soft",)),
                                         ("method_of_local", ()), ("module_call", ()),
                                         ("constructed", ()), ("functional", ()),
                                         ("rebound", (True,)), ("rebound", (False,)),
                                         ("unhashable", ("weighted",)), ("unhashable", ("dice",)),
                                         ("either", (True,)), ("either", (False,)),
                                         ("same_forward", (True,)), ("same_forward", (False,)),
                                         ("hooked", ()), ("own_forward", ()),
                                         ("global_module_call", ())])
def test_equivalent_functions(user, name, extra, dtype):
    fn = getattr(user, name)
    fast = optimize_loss(fn, compile=False)
    for seed in range(3):
        assert_equivalent(fn, fast, *_inputs(dtype, seed), *extra)
    assert fast.report.loops


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls", ["OHKM", "MeanOHKM", "Typed", "PrivateOHKM"])
def test_equivalent_modules(user, cls, dtype):
    module = getattr(user, cls)()
    fast = optimize_loss(module, compile=False)
    for seed in range(3):
        assert_equivalent(module, fast, *_inputs(dtype, seed))
    # the rewritten method runs behind its check (not where `type` is a parameter)
    assert ("_original else self." in fast.report.rewritten_source) == (cls != "Typed")


def test_module_call_under_a_hook_of_every_module_runs_as_written(user):
    fast = optimize_loss(user.named_module_call, compile=False)
    assert "_module_forward(criterion" in fast.report.rewritten_source
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, args, out: out + 1)
    try:
        assert_equivalent(user.named_module_call, fast, *_inputs(torch.float64, 0))
    finally:
        handle.remove()


def test_a_global_module_rebound_later_runs_what_it_holds(user, monkeypatch):
    # the rewrite reads the global at every call: another module there runs its own forward
    fast = optimize_loss(user.global_module_call, compile=False)
    pred, target = _inputs(torch.float64, 0)
    assert_equivalent(user.global_module_call, fast, pred, target)
    assert (fast.report.loops[0].vectorized_runs, fast.report.loops[0].original_runs) == (1, 0)
    for other in (user.MeanOHKM(), lambda p, t: (p - t).sum()):
        monkeypatch.setattr(user, "CRITERION", other)
        assert_equivalent(user.global_module_call, fast, pred, target)


def test_subclass_override_runs_as_written(user):
    # MeanOHKM inherits forward (rewritten for OHKM) and overrides ohkm: the check sends the call
    # to MeanOHKM.ohkm, whose value differs from OHKM's.
    fast = optimize_loss(user.MeanOHKM(), compile=False)
    pred, target = _inputs(torch.float64, 0)
    assert torch.equal(fast(pred, target), ((pred - target).pow(2)).mean())
    assert "getattr(type(self), 'ohkm', None) is _ohkm_original" in fast.report.rewritten_source


@pytest.mark.parametrize("module, helper", [
    ("sep_sisnr_pit_mask", "get_mask"),                      # naive -> cal_si_snr_with_pit -> get_mask
    ("depth_monodepth_photometric", "Trainer.compute_losses"),  # trainer.compute_losses(...)
    ("rl_ppo_mc_returns", "PPO.loss"),                        # ppo.loss(...)
    ("pose_ohkm_mse", "JointsOHKMMSELoss.ohkm"),              # Cls(...)(x) -> forward -> self.ohkm
])
def test_real_losses_report_their_helpers_loops(module, helper):
    mod = importlib.import_module(f"examples.real.{module}")
    lines = {(l.filename, l.lineno) for l in explain(mod.naive).loops}
    fn = mod
    for part in helper.split("."):
        fn = getattr(fn, part)
    parsed = parse_function(fn)
    loops = [n.lineno for n in ast.walk(parsed.tree) if isinstance(n, ast.For)]
    assert (parsed.filename, loops[0]) in lines
