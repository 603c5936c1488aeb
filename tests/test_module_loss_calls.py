"""module_loss_calls: calls of ``nn`` loss modules in loops become their functional op, which
distribution hoists. Golden generated code (with no-change cases), equivalence (value, every
gradient, float32 and float64, NaN/inf in skipped rows, printed lines) and the runtime check
(a subclass, a hook: the loop runs as written)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from passes.report import Report
from rewrite import optimize_loss
from rewrite.frontend import rewrite_function
from rewrite.testing import assert_equivalent
from tests import module_loss_sources as src
from tests.helpers import golden_text, load_module

GOLDEN = Path(__file__).parent / "golden" / "module_loss_calls"
DTYPES = [torch.float32, torch.float64]
CASES = {"hard_examples": (src.HardExamples.forward, {18: "batched"}),
         "logged_steps": (src.LoggedSteps.forward, {34: "distributed"}),
         "masked_steps": (src.MaskedSteps.forward, {50: "distributed"}),
         "local_criterion": (src.local_criterion, {62: "batched"}),
         "unknown_module": (src.UnknownModule.forward, {76: "kept"}),
         "mixed_attribute": (src.MixedAttribute.forward, {93: "kept"}),
         "part_losses": (src.part_losses, {116: "batched"}),
         "step_losses": (src.StepLosses.forward, {131: "batched"}),
         "joint_losses": (src.JointLosses.forward, {145: "batched"}),
         "padded_steps": (src.PaddedSteps.forward, {159: "batched"}),
         "normalized_weights": (src.normalized_weights, {168: "vmap"})}


def generated(fn) -> tuple[str, dict[int, str]]:
    report = Report(fn.__qualname__, "", 0)
    _, changed = rewrite_function(fn, report)
    return (report.rewritten_source if changed else "(unchanged)\n",
            {loop.lineno: loop.strategy for loop in report.loops})


def assert_case(fn, expected: dict[int, str], golden: Path) -> None:
    """``fn``'s rewritten source is the golden file's, its loops' strategies ``expected``."""
    code, strategies = generated(fn)
    assert code == golden_text(golden, code)
    assert strategies == expected


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    assert_case(*CASES[name], GOLDEN / f"{name}.txt")


def test_no_change_cases_keep_the_module_call():
    for name in ("unknown_module", "mixed_attribute"):
        assert "torch.nn.functional" not in generated(CASES[name][0])[0]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def class_inputs(dtype, seed, ignore=False):
    x = torch.randn(6, 5, 4, generator=gen(seed), dtype=dtype)
    y = torch.randint(0, 4, (6, 5), generator=gen(seed))
    if ignore:
        y[2] = -1  # a row of only ignored labels: its mean is NaN in both
        y[4, 1] = -1
    return x.requires_grad_(), y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("th", [0.5, 1.4, 100.0])  # most, some and none appended
def test_hard_examples_are_equivalent(dtype, th):
    module = src.HardExamples(th, ignore_index=-1)
    optimized = optimize_loss(module, compile=False)
    assert_equivalent(module, optimized, *class_inputs(dtype, 3, ignore=True))
    assert optimized.report.loops[0].runs()["vectorized"] >= 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_printed_lines_and_sum_are_the_same(dtype, capsys):
    module = src.LoggedSteps()
    optimized = optimize_loss(module, compile=False)
    x = torch.randn(3, 5, 4, generator=gen(1), dtype=dtype).requires_grad_()
    y = torch.randn(3, 5, 4, generator=gen(2), dtype=dtype)
    want = module(x, y)
    printed = capsys.readouterr().out
    got = optimized(x, y)
    assert capsys.readouterr().out == printed and printed.count("\n") == 5
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert_equivalent(module, optimized, x, y)


@pytest.mark.parametrize("dtype", DTYPES)
def test_skipped_rows_with_nan_and_inf_leave_no_trace(dtype, capsys):
    module = src.MaskedSteps()
    optimized = optimize_loss(module, compile=False)
    x = torch.randn(5, 3, generator=gen(4), dtype=dtype)
    x[1, 0], x[3, 2] = float("nan"), float("inf")  # rows the condition skips
    y = torch.randn(5, 3, generator=gen(5), dtype=dtype)
    m = torch.tensor([1.0, 0.0, 1.0, -1.0, 1.0], dtype=dtype)
    assert_equivalent(module, optimized, x.requires_grad_(), y, m)
    assert optimized.report.loops[0].strategy == "distributed"
    assert optimized.report.loops[0].runs()["vectorized"] >= 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_local_criterion_is_equivalent(dtype):
    x = torch.randn(4, 6, generator=gen(6), dtype=dtype).requires_grad_()
    y = torch.rand(4, 6, generator=gen(7), dtype=dtype)
    optimized = optimize_loss(src.local_criterion, compile=False)
    assert_equivalent(src.local_criterion, optimized, x, y)
    assert optimized.report.loops[0].runs()["vectorized"] >= 1


def test_a_subclass_runs_the_loop_as_written():
    module = src.HardExamples(0.5)
    module.ce = src.SubclassedLoss()
    optimized = optimize_loss(module, compile=False)
    assert_equivalent(module, optimized, *class_inputs(torch.float64, 8))
    runs = optimized.report.loops[0].runs()
    assert runs["vectorized"] == 0 and runs["as_written"] >= 1


def test_a_hook_runs_as_often_as_in_the_original():
    calls = []
    module = src.HardExamples(0.5)
    module.ce.register_forward_hook(lambda *_: calls.append(1))
    optimized = optimize_loss(module, compile=False)
    inputs = class_inputs(torch.float32, 9)
    module(*inputs)
    want, calls[:] = len(calls), []
    optimized(*inputs)
    assert len(calls) == want == 6
    assert optimized.report.loops[0].runs()["vectorized"] == 0


def test_a_module_out_of_sys_modules_is_read_through_its_methods(tmp_path):
    """Benchmarks load a file as a module that ``sys.modules`` does not keep: the attribute's
    class is still known (from the methods' globals), and the loop is vectorized."""
    user = load_module(tmp_path, Path(src.__file__).read_text())
    del sys.modules[user.__name__]
    module = user.HardExamples(0.5)
    optimized = optimize_loss(module, compile=False)
    assert_equivalent(module, optimized, *class_inputs(torch.float64, 8))
    assert optimized.report.loops[0].runs()["vectorized"] >= 1, optimized.report


# -- a loss module's settings read at run time (``CHECKED_LOSS_OPTIONS``) ----------------------

class _LossCalls(TorchFunctionMode):
    """The sizes of the inputs ``loss`` gets, call by call: the batched form's is all the
    items', the vmap form's (a per-item call) one item's."""

    def __init__(self, loss):
        super().__init__()
        self.loss, self.sizes = loss, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is self.loss:
            self.sizes.append(args[0].numel())
        return func(*args, **(kwargs or {}))


def batched_ran(optimized, loss, items: torch.Tensor, *inputs) -> bool:
    """Whether ``optimized(*inputs)``, its first call, called ``loss`` on all the loop's
    ``items`` at once (from the second call on, a loop whose vectorized form timed slower on a
    loaded machine may run as written: ``rewrite.loop_choice``)."""
    with _LossCalls(loss) as calls:
        optimized(*inputs)
    assert calls.sizes
    return items.numel() in calls.sizes


def test_no_check_on_an_expression_keeps_the_vmap_form():
    code, strategies = generated(src.normalized_weights)
    assert strategies == {168: "vmap"} and "_loss_of_items" not in code


@pytest.mark.parametrize("dtype", DTYPES)
def test_parts_against_one_label_vector_are_batched(dtype):
    parts = torch.randn(5, 8, 10, generator=gen(11), dtype=dtype).requires_grad_()
    labels = torch.randint(0, 10, (8,), generator=gen(12))
    optimized = optimize_loss(src.part_losses, compile=False)
    assert batched_ran(optimized, F.cross_entropy, parts[1:], parts, labels)
    assert_equivalent(src.part_losses, optimized, parts, labels)
    assert optimized.report.loops[0].strategy == "batched"


# the settings the batched form reproduces (True) and those whose check fails (False)
STEP_SETTINGS = {"default": ({}, True), "sum": ({"reduction": "sum"}, True),
                 "ignored": ({"ignore_index": 1}, True),
                 "smoothing_0": ({"label_smoothing": 0.0}, True),
                 # each step's mean over its own rows' class weights
                 "weighted": ({"weight": [0.5, 2.0, 1.0, 3.0]}, True),
                 "weighted_ignored": ({"weight": [0.5, 2.0, 1.0, 3.0], "ignore_index": 1}, True),
                 "weighted_sum": ({"weight": [0.5, 2.0, 1.0, 3.0], "reduction": "sum"}, True),
                 "weighted_zero": ({"weight": [0.0, 2.0, 1.0, 3.0]}, True),
                 "smoothing": ({"label_smoothing": 0.1}, False),
                 "none": ({"reduction": "none"}, False)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(STEP_SETTINGS))
def test_a_modules_settings_pick_the_batched_form_or_the_vmap_form(dtype, name):
    settings, batched = STEP_SETTINGS[name]
    if "weight" in settings:
        settings = {**settings, "weight": torch.tensor(settings["weight"], dtype=dtype)}
    module = src.StepLosses(**settings)
    optimized = optimize_loss(module, compile=False)
    x, y = class_inputs(dtype, 13)
    y[2] = 1  # ignored: a step of only ignored labels (its mean is NaN in both), and a hit
    y[4, 3] = 1
    with torch.no_grad():  # a -inf logit of another class than the target's: a finite loss
        x[3, 0, (y[3, 0] + 1) % 4] = float("-inf")
    assert batched_ran(optimized, F.cross_entropy, x, x, y) == batched
    assert_equivalent(module, optimized, x, y)
    assert optimized.report.loops[0].strategy == "batched"
    assert optimized.report.loops[0].runs()["vectorized"] >= 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_a_mse_module_per_joint_is_batched(dtype, reduction):
    module = src.JointLosses(reduction)
    optimized = optimize_loss(module, compile=False)
    pred = torch.randn(4, 5, 6, generator=gen(14), dtype=dtype).requires_grad_()
    gt = torch.rand(4, 5, 6, generator=gen(15), dtype=dtype)
    weight = (torch.rand(4, 5, 1, generator=gen(16)) > 0.3).to(dtype)
    assert batched_ran(optimized, F.mse_loss, pred, pred, gt, weight) == (reduction != "none")
    assert_equivalent(module, optimized, pred, gt, weight)
    assert optimized.report.loops[0].strategy == "batched"


@pytest.mark.parametrize("dtype", DTYPES)
def test_an_ignore_index_attribute_is_batched(dtype):
    module = src.PaddedSteps(-1)
    optimized = optimize_loss(module, compile=False)
    x, y = class_inputs(dtype, 17, ignore=True)
    assert batched_ran(optimized, F.cross_entropy, x, x, y)
    assert_equivalent(module, optimized, x, y)
    assert optimized.report.loops[0].strategy == "batched"


MODULE_STEPS = {src.nll_steps: F.nll_loss, src.smooth_l1_steps: F.smooth_l1_loss,
                src.huber_steps: F.huber_loss, src.l1_steps: F.l1_loss,
                src.bce_steps: F.binary_cross_entropy_with_logits}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", list(MODULE_STEPS), ids=lambda f: f.__name__)
def test_every_loss_module_class_is_batched(dtype, fn):
    x = torch.randn(5, 4, 6, generator=gen(18), dtype=dtype).requires_grad_()
    y = torch.randint(0, 6, (5, 4), generator=gen(19)) if fn is src.nll_steps \
        else torch.rand(5, 4, 6, generator=gen(20), dtype=dtype)
    optimized = optimize_loss(fn, compile=False)
    assert batched_ran(optimized, MODULE_STEPS[fn], x, x, y)
    assert_equivalent(fn, optimized, x, y)
    assert optimized.report.loops[0].strategy == "batched"
