"""The Dynamo backend: ``torch.compile(fn, backend="optimize_loss")`` and ``HoistingBackend``
(what ``@optimize_loss`` compiles through), and the factory ``rewrite.backend(...)``. Semantics on
the eager inner backends; Inductor tests for the registered entry point (one in a fresh
process). Loop re-rolling itself: tests/test_reroll_unrolled_loops.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import rewrite
from rewrite import assert_equivalent
from rewrite.backend import HoistingBackend
from passes import reroll_unrolled_loops
from passes.report import Report


def weighted_mse(pred, target, weights):
    w = weights / weights.sum()
    scaled = torch.log1p(target.clamp(min=0))
    return (w * (pred - scaled) ** 2).mean()


def compiled(fn, report=None):
    return torch.compile(fn, backend=HoistingBackend("eager", report=report))


def inputs(n=8):
    return torch.randn(n, 4, requires_grad=True), torch.rand(n, 4) * 5, torch.rand(4) + 0.5


def test_registered_backend_hoists_caches_and_compiles_with_inductor():
    fn = torch.compile(weighted_mse, backend="optimize_loss")
    pred, target, weights = inputs()
    assert_equivalent(weighted_mse, fn, pred, target, weights)
    target.mul_(2)  # cached target work must be recomputed
    torch.testing.assert_close(fn(pred, target, weights), weighted_mse(pred, target, weights))


def test_report_lists_what_the_backend_hoisted():
    report = Report("weighted_mse", __file__, 0)
    fn = compiled(weighted_mse, report)
    assert_equivalent(weighted_mse, fn, *inputs())
    assert [line.split(": ", 1)[1] for line in report.target_only] == [
        "w = weights / weights.sum() (sum_1, w)",
        "scaled = torch.log1p(target.clamp(min=0)) (clamp, scaled)"]


class StyleLoss(torch.nn.Module):
    """Frozen feature net (parameters without grad), one trainable weight per layer."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Conv2d(3, 4, 3).requires_grad_(False)
        self.mix = torch.nn.Parameter(torch.ones(4, 1, 1))

    def forward(self, image, style):
        return F.mse_loss(self.net(image) * self.mix, self.net(style))


def test_parameters_are_classified_from_dynamo_example_values():
    report = Report("forward", __file__, 0)
    module = StyleLoss()
    fn = torch.compile(module, backend=HoistingBackend("eager", report=report))
    image, style = torch.rand(1, 3, 8, 8, requires_grad=True), torch.rand(1, 3, 8, 8)
    assert_equivalent(module, fn, image, style)  # incl. the gradient of the trainable mix
    assert len(report.target_only) == 1 and "self.net(style)" in report.target_only[0]


def noisy(pred, target):
    return ((pred - (target + 0.1 * torch.randn_like(target))) ** 2).mean()


def test_random_ops_are_never_cached():
    report = Report("noisy", __file__, 0)
    fn = compiled(noisy, report)
    pred, target, _ = inputs()
    assert fn(pred, target) != fn(pred, target)
    torch.manual_seed(0)
    got = fn(pred, target)
    torch.manual_seed(0)
    torch.testing.assert_close(got, noisy(pred, target))
    assert any("random op" in note for note in report.notes)


def scales_target_in_place(pred, target, weights):
    target.mul_(2)
    return weighted_mse(pred, target, weights)


def test_in_place_writes_disable_hoisting_and_still_happen_every_call():
    report = Report("scales_target_in_place", __file__, 0)
    fn = compiled(scales_target_in_place, report)
    pred, target, weights = inputs()
    expected_target = target.clone()
    for _ in range(2):
        expected = scales_target_in_place(pred, expected_target, weights)
        torch.testing.assert_close(fn(pred, target, weights), expected)
        torch.testing.assert_close(target, expected_target)
    assert not report.target_only and any("in place" in note for note in report.notes)


def branches_on_target(pred, target, weights):
    if target.sum() > 20:  # data-dependent: Dynamo breaks the graph here
        target = target / 2
    return weighted_mse(pred, target, weights)


def test_graph_breaks_keep_hoisting_per_graph():
    fn = compiled(branches_on_target)
    pred, target, weights = inputs()
    for scale in (1.0, 0.01):
        assert_equivalent(branches_on_target, fn, pred, target * scale, weights)


def vmapped(pred, target):
    per_row = torch.vmap(lambda p, t: ((p - t) ** 2 * (t > 1)).sum())(pred, target)
    return per_row.mean()


def test_work_inside_a_vmap_stays_inside_it():
    fn = compiled(vmapped)
    pred, target, _ = inputs()
    assert_equivalent(vmapped, fn, pred, target)


class _RoundStraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return x.round()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad


def rounded_weighted_mse(pred, target, weights):
    w = weights / weights.sum()
    return (w * (_RoundStraightThrough.apply(pred) - target) ** 2).mean()


def test_autograd_functions_subgraphs_stay_with_their_calls():
    # Dynamo makes the apply a higher-order op reading its forward and backward as module
    # attributes: code, not values, they stay in the core with it; `w` is hoisted
    report = Report("rounded_weighted_mse", __file__, 0)
    fn = torch.compile(rounded_weighted_mse, backend=HoistingBackend("aot_eager", report=report))
    assert_equivalent(rounded_weighted_mse, fn, *inputs())
    assert [line.split(": ", 1)[1] for line in report.target_only] == [
        "w = weights / weights.sum() (sum_1, w)"]


# -- the factory rewrite.backend(...) and the entry point --------------------------------------
def per_sample_weighted_mse(pred, target, weights):
    loss = 0
    for i in range(pred.shape[0]):
        loss += (weights / weights.sum() * (pred[i] - target[i]) ** 2).mean()
    return loss / pred.shape[0]


@pytest.mark.parametrize("hoist, reroll", [(True, True), (False, True), (True, False), (False, False)])
def test_factory_runs_the_passes_it_is_asked_for(hoist, reroll):
    report = Report("per_sample_weighted_mse", __file__, 0)
    fn = torch.compile(per_sample_weighted_mse,
                       backend=rewrite.backend(inner="aot_eager", hoist=hoist, reroll=reroll, report=report))
    assert_equivalent(per_sample_weighted_mse, fn, *inputs())
    assert ("hoist_target_subgraph" in report.passes_run) == hoist
    assert ("reroll_unrolled_loops" in report.passes_run) == reroll
    assert any(n.startswith("re-rolled") for n in report.notes) == reroll
    # weights / weights.sum() is target-only; unrolled, the chain of += writes in place, which
    # keeps everything in the core.
    assert bool(report.target_only) == (hoist and reroll)


def test_a_failing_pass_falls_back_to_the_unmodified_graph_with_one_warning(monkeypatch, caplog):
    def broken(gm):  # leaves a graph that returns its first input: wrong if compiled
        first = next(n for n in gm.graph.nodes if n.op == "placeholder")
        next(n for n in gm.graph.nodes if n.op == "output").args = ((first,),)
        raise RuntimeError("broken pass")

    monkeypatch.setattr(reroll_unrolled_loops, "run", broken)
    fn = torch.compile(branches_on_target, backend=rewrite.backend(inner="eager"))
    pred, target, weights = inputs()
    with pytest.warns(RuntimeWarning, match="broken pass") as warned:
        for scale in (1.0, 0.01):  # both branches: more than one graph compiled
            assert_equivalent(branches_on_target, fn, pred, target * scale, weights)
    assert len([w for w in warned if "broken pass" in str(w.message)]) == 1
    assert [r.name for r in caplog.records if "broken pass" in r.getMessage()] == ["optimize_loss"]


def test_an_inner_compiler_failing_on_the_rerolled_graph_gets_the_unmodified_one(caplog):
    compiled_graphs = []

    def inner(gm, example_inputs):  # refuses what our passes made: a re-rolled loop
        if any(name.startswith("rerolled_loop") for name, _ in gm.named_children()):
            raise RuntimeError("inner refuses vmap")
        compiled_graphs.append(gm)
        return gm.forward

    fn = torch.compile(per_sample_weighted_mse, backend=rewrite.backend(inner=inner))
    with pytest.warns(RuntimeWarning, match="inner refuses vmap"):
        assert_equivalent(per_sample_weighted_mse, fn, *inputs())
    assert len(compiled_graphs) == 1 and [r.name for r in caplog.records
                                          if "inner refuses vmap" in r.getMessage()] == ["optimize_loss"]


def test_hoisting_backend_as_the_decorator_uses_it_still_raises(monkeypatch):
    monkeypatch.setattr(reroll_unrolled_loops, "run", lambda gm: 1 / 0)
    with pytest.raises(Exception, match="reroll_unrolled_loops"):
        compiled(weighted_mse)(*inputs())


ENTRY_POINT_SCRIPT = """
import sys, torch
def loss(pred, target):
    total = 0
    for i in range(pred.shape[0]):
        total += ((pred[i] - target[i]) ** 2).mean()
    return total
pred, target = torch.randn(6, 3, requires_grad=True), torch.randn(6, 3)
assert "rewrite" not in sys.modules
torch.testing.assert_close(torch.compile(loss, backend="optimize_loss")(pred, target), loss(pred, target))
print(sorted(m for m in sys.modules if m in ("rewrite.backend", "passes.reroll_unrolled_loops")))
"""


def test_entry_point_works_in_a_fresh_process_without_importing_rewrite():
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", ENTRY_POINT_SCRIPT], cwd=root, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "['passes.reroll_unrolled_loops', 'rewrite.backend']"


def per_sample_ce_with_item(logits, target):
    loss = 0
    for i in range(logits.shape[0]):
        loss = loss - logits[i].log_softmax(0)[target[i].item()]
    return loss / logits.shape[0]


def training_step(logits, target):
    scaled = logits * 2
    return per_sample_ce_with_item(scaled, target) + scaled.pow(2).mean()


def test_a_loop_dynamo_skips_for_item_is_reported_once_with_the_decorator_recommended(caplog):
    report = Report("training_step", __file__, 0)
    fn = torch.compile(training_step, backend=rewrite.backend(inner="eager", report=report))
    logits, target = torch.randn(6, 5, requires_grad=True), torch.randint(0, 5, (6,))
    for _ in range(2):
        assert_equivalent(training_step, fn, logits, target)
    told = [r for r in caplog.records if r.name == "optimize_loss" and "per_sample_ce_with_item" in r.getMessage()]
    assert len(told) == 1 and "@optimize_loss" in told[0].getMessage()
    assert any("per_sample_ce_with_item" in note for note in report.notes)
    later = Report("weighted_mse", __file__, 0)  # a backend made afterwards: not its business
    torch.compile(weighted_mse, backend=rewrite.backend(inner="eager", report=later))(*inputs())
    assert not any("per_sample_ce_with_item" in note for note in later.notes)


SKIPPED_LOOP = '''
import torch


@torch.no_grad()
def positives(x):  # a helper run as written: its loop breaks Dynamo's graph at `.item()`
    n = 0
    for v in x.reshape(-1):
        if v.item() > 0:
            n += 1
    return n


def loss(pred, target):
    return (pred - target).pow(2).sum() / max(positives(target), 1)
'''


def test_a_loop_dynamo_skipped_under_the_decorator_is_no_advice_to_decorate(tmp_path):
    # the loss is decorated already: the note says the loop was kept, not "decorate the loss"
    from tests.helpers import load_module
    user = load_module(tmp_path, SKIPPED_LOOP)
    fast = rewrite.optimize_loss(user.loss, backend="eager")
    pred, target = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4)
    for _ in range(2):
        fast(pred, target).backward()
    [note] = [n for n in fast.report.notes if n.startswith("Dynamo ran positives")]
    assert note.endswith("the rewrite kept that loop as written (its report's loops say why)")
    assert "decorate the loss" not in note
