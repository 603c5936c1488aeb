"""Hoisting at run time: equivalence through @optimize_loss, every cache-invalidation case,
bounded memory, split, stop_gradient, per-signature classification, recompiles, verify."""
from __future__ import annotations

import gc
import os
import pickle
import warnings
import weakref

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from examples._check import load
from passes import hoist_target_subgraph
from passes.pipeline import run_fx_pipeline
from rewrite import RewriteWarning, assert_equivalent, optimize_loss, split
from passes.errors import RewriteError
from rewrite.hoist import CACHE_SIZE, HoistedCall, TargetCache
from rewrite.offline_split import trace
from tests.helpers import load_module

SEED_000 = ["masked_mse", "target_scaling", "log1p_target", "class_weighted_ce"]


def smoothed_weighted_ce(logits, target, class_weights):
    w = class_weights / class_weights.sum()
    smooth = F.one_hot(target, logits.shape[1]).to(logits.dtype) * 0.9 + 0.1 / logits.shape[1]
    return -(w[target] * (smooth * logits.log_softmax(1)).sum(1)).mean()


def ce_inputs(n=16, c=5, dtype=torch.float32):
    return (torch.randn(n, c, dtype=dtype, requires_grad=True), torch.randint(0, c, (n,)),
            torch.rand(c, dtype=dtype) + 0.5)


# -- equivalence through the decorator -----------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", SEED_000 + ["perceptual_style", "onehot_smoothing_weights"])
def test_hoisted_examples_are_equivalent(name, dtype):
    example = load(f"examples/{name}.py")
    fn = optimize_loss(example.expert, backend="eager")
    inputs = example.make_inputs("small", dtype)
    for _ in range(2):  # the second call reads the cache
        assert_equivalent(example.expert, fn, *inputs)
    assert fn.report.target_only and not fn.report.fallbacks


def test_report_names_the_hoisted_lines():
    fn = optimize_loss(smoothed_weighted_ce, backend="eager")
    fn(*ce_inputs())
    assert any("w = class_weights / class_weights.sum()" in line for line in fn.report.target_only)
    assert "hoist_target_subgraph" in fn.report.passes_run


GDICE = '''
import torch

def generalized_dice(probs, onehot):
    num = 0
    den = 0
    for c in range(probs.shape[1]):
        t = onehot[:, c].reshape(-1)
        p = probs[:, c].reshape(-1).roll(0)  # (no batched form: vmap)
        w = 1.0 / (t.sum() ** 2).clamp(min=1e-6)
        num = num + w * (p * t).sum()
        den = den + w * (p + t).sum()
    return 1.0 - 2.0 * num / den
'''


def test_report_notes_name_the_users_lines_not_the_rewrites_helpers(tmp_path):
    """A loop mapped by ``torch.vmap`` (in ``passes/chunked_maps.py``): the notes on its nodes
    named that file of this package, not the user's loop."""
    user = load_module(tmp_path, GDICE)
    fn = optimize_loss(user.generalized_dice, backend="eager")
    probs = torch.softmax(torch.randn(2, 3, 4, 4), 1).requires_grad_()
    fn(probs, F.one_hot(torch.randint(0, 3, (2, 4, 4)), 3).permute(0, 3, 1, 2).float())
    assert fn.report.loops[0].strategy == "vmap" and fn.report.notes
    assert not any("passes" in note or "rewrite" in note for note in fn.report.notes)
    assert any(f"{user.__file__}:7: for c in range(probs.shape[1]):" in note
               for note in fn.report.notes)


# -- the cache, through the decorator: a stale value is a wrong result ---------------------------
def check(fn, *inputs):
    torch.testing.assert_close(fn(*inputs), smoothed_weighted_ce(*inputs), rtol=0, atol=0)


def test_in_place_changes_of_targets_recompute():
    fn = optimize_loss(smoothed_weighted_ce, backend="eager")
    logits, target, weights = ce_inputs()
    check(fn, logits, target, weights)
    weights.mul_(3)                        # in place
    check(fn, logits, target, weights)
    weights[1:3].add_(1)                   # in place, through a view
    check(fn, logits, target, weights)
    target.add_(1).remainder_(5)           # integer target
    check(fn, logits, target, weights)
    with torch.no_grad():                  # no_grad writes count too
        weights.copy_(torch.rand(5) + 0.5)
    check(fn, logits, target, weights)


def test_new_tensors_shapes_dtypes_and_strides_recompute():
    fn = optimize_loss(smoothed_weighted_ce, backend="eager")
    logits, target, weights = ce_inputs()
    check(fn, logits, target, weights)
    for _ in range(5):  # freed and reallocated: often the same address, sometimes the same id
        weights = torch.rand(5) + 0.5
        check(fn, logits, target, weights)
    check(fn, *ce_inputs(n=9))                                # shape
    check(fn, *ce_inputs(dtype=torch.float64))                # dtype
    strided = torch.rand(2, 5).t()[:, 0]                      # same shape, other stride
    check(fn, logits, target, strided)
    shared = torch.empty(0).set_(weights.untyped_storage(), 0, (5,), (1,))  # same storage
    check(fn, logits, target, shared)


def test_cache_key_covers_device_and_metadata_only_inputs():
    cache = TargetCache([False, True])
    runs = []
    compute = lambda a, b: runs.append(1) or (a * 2, b.new_zeros(3))
    a, b = torch.ones(3), torch.ones(4)
    cache.get([a, b], compute)
    cache.get([a, torch.zeros(4)], compute)   # b is read for its metadata only: a hit
    assert len(runs) == 1
    cache.get([a, torch.zeros(4, device="meta")], compute)
    cache.get([a.to("meta"), torch.zeros(4, device="meta")], compute)
    assert len(runs) == 3


def test_caller_writing_into_a_returned_target_value_does_not_corrupt_the_cache():
    def loss_and_weights(logits, target, class_weights):
        w = class_weights / class_weights.sum()
        return F.cross_entropy(logits, target, weight=w), w

    fn = optimize_loss(loss_and_weights, backend="eager")
    inputs = ce_inputs()
    _, first = fn(*inputs)
    first.mul_(100)
    _, second = fn(*inputs)
    assert second is not first
    torch.testing.assert_close(second, loss_and_weights(*inputs)[1])


def test_returned_inputs_keep_their_identity():
    def loss_and_target(logits, target, class_weights):
        return smoothed_weighted_ce(logits, target, class_weights), target

    fn = optimize_loss(loss_and_target, backend="eager")
    logits, target, weights = ce_inputs()
    assert fn(logits, target, weights)[1] is target


def test_inference_mode_values_are_not_cached():
    fn = optimize_loss(smoothed_weighted_ce, backend="eager")
    logits, target, weights = ce_inputs()
    with torch.inference_mode():
        check(fn, logits, target, weights)
        inference_weights = torch.rand(5) + 0.5  # no version counter: never a cache key
    check(fn, logits, target, inference_weights)
    fn(logits, target, weights).backward()  # training afterwards is unaffected
    assert not fn.report.fallbacks


def test_frozen_module_weights_are_cache_inputs():
    class Perceptual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Conv2d(3, 4, 3).requires_grad_(False)
            self.register_buffer("scale", torch.ones(4, 1, 1))

        def forward(self, image, style):
            return F.mse_loss(self.net(image) * self.scale, self.net(style) * self.scale)

    module = Perceptual()
    fn = optimize_loss(module, backend="eager")
    image, style = torch.rand(1, 3, 8, 8, requires_grad=True), torch.rand(1, 3, 8, 8)
    assert_equivalent(module, fn, image, style)
    assert fn.report.target_only
    with torch.no_grad():
        module.net.weight.mul_(2)   # frozen weights changed in place
    module.scale.add_(1)            # buffer changed in place
    torch.testing.assert_close(fn(image, style), module(image, style))


class TargetNormalized(torch.nn.Module):
    """Regression targets normalized by a BatchNorm of them: its running statistics, updated in
    train mode, normalize the target in eval mode (a target-only value)."""

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(4, affine=False)

    def forward(self, pred, target):
        t = self.norm(target)
        loss = 0
        for i in range(pred.shape[0]):
            loss = loss + ((pred[i] - t[i]) ** 2).sum()
        return loss / pred.shape[0]


def test_running_statistics_a_train_call_updates_are_read_by_the_next_eval_call():
    # batch_norm's train-mode kernel writes them without moving their version counters: the
    # eval graph's hoisted normalization, cached by versions, stayed the first eval call's
    # (43.9 for 24.1 after one train step, 46.4 for 18.4 after two); it is not hoisted now
    module, theirs = TargetNormalized(), TargetNormalized()
    fn = optimize_loss(module, backend="eager")
    target = torch.randn(8, 4) * 3 + 1  # a fixed target: the cache's hits
    for mode in ("eval", "train", "eval", "train", "eval"):
        module.train(mode == "train"), theirs.train(mode == "train")
        pred = torch.randn(8, 4, requires_grad=True)
        torch.testing.assert_close(fn(pred, target), theirs(pred, target))
    assert not fn.report.target_only


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["same", "add_", "view_write", "new", "shape", "dtype", "ints"]),
                min_size=1, max_size=12))
def test_cache_always_equals_a_fresh_computation(steps):
    call = hoisted_call(smoothed_weighted_ce, *ce_inputs())
    logits, target, weights = ce_inputs()
    for step in steps:
        if step == "add_":
            weights.add_(0.25)
        elif step == "view_write":
            weights[:2].mul_(2)
        elif step == "new":
            weights = torch.rand(5) + 0.5
        elif step == "shape":
            logits, target, _ = ce_inputs(n=int(torch.randint(2, 20, ())))
        elif step == "dtype":
            weights = weights.double() if weights.dtype == torch.float32 else weights.float()
        elif step == "ints":
            target.copy_(torch.randint(0, 5, target.shape))
        got = call(logits, target, weights)
        torch.testing.assert_close(got, smoothed_weighted_ce(logits, target, weights), rtol=0, atol=0)


def hoisted_call(fn, *inputs) -> HoistedCall:
    """The cached call the backend builds, on a torch.fx trace (no Dynamo: fast)."""
    gm = run_fx_pipeline(trace(fn, *inputs), "<test>", [])
    return HoistedCall(gm)


def test_cache_hits_when_nothing_changed_and_stays_bounded():
    call = hoisted_call(smoothed_weighted_ce, *ce_inputs())
    runs = []
    transform = call._transform
    call._transform = lambda *a: runs.append(1) or transform(*a)
    logits, target, weights = ce_inputs()
    for _ in range(3):
        call(logits, target, weights)
    assert len(runs) == 1
    kept = [ce_inputs() for _ in range(CACHE_SIZE + 3)]
    for inputs in kept:
        call(*inputs)
    assert len(call.cache) == CACHE_SIZE


def test_memory_does_not_grow_over_10000_calls_with_fresh_targets():
    fn = optimize_loss(smoothed_weighted_ce, backend="eager")
    logits, _, weights = ce_inputs(n=4)
    seen = []
    for i in range(10_000):
        target = torch.randint(0, 5, (4,))
        fn(logits, target, weights)
        if i % 100 == 0:
            seen.append(weakref.ref(target))
    del target
    gc.collect()
    assert sum(r() is not None for r in seen) == 0  # the cache kept no target alive
    call = hoisted_call(smoothed_weighted_ce, logits, torch.randint(0, 5, (4,)), weights)
    for _ in range(1000):
        call(logits, torch.randint(0, 5, (4,)), weights)
    assert len(call.cache) <= 1  # entries leave with their inputs


# -- per-signature classification, stop_gradient ---------------------------------------------------
def test_a_target_that_requires_grad_is_never_hoisted():
    fn = optimize_loss(smoothed_weighted_ce, backend="eager")
    logits, target, weights = ce_inputs()
    fn(logits, target, weights)  # hoists the weights
    weights.requires_grad_()
    assert_equivalent(smoothed_weighted_ce, fn, logits, target, weights)  # includes d/dweights
    weights.grad = None
    fn(logits, target, weights).backward()
    assert weights.grad is not None and weights.grad.abs().sum() > 0


def distill(student, teacher_logits, temperature):
    soft = (teacher_logits / temperature).softmax(1)
    return -(soft * (student / temperature).log_softmax(1)).sum(1).mean()


def test_stop_gradient_detaches_named_arguments_and_hoists_them():
    fn = optimize_loss(distill, backend="eager", stop_gradient=("teacher_logits",))
    student, teacher = torch.randn(8, 5, requires_grad=True), torch.randn(8, 5, requires_grad=True)
    fn(student, teacher, 2.0).backward()
    assert teacher.grad is None  # the opted-in semantic change: no gradient reaches the teacher
    expected = torch.autograd.grad(distill(student, teacher.detach(), 2.0), student)[0]
    torch.testing.assert_close(student.grad, expected)
    assert any("soft = " in line for line in fn.report.target_only)
    assert any("stop_gradient" in note for note in fn.report.notes)
    fn(student, teacher_logits=teacher, temperature=2.0).backward()  # by keyword too
    assert teacher.grad is None


def test_without_stop_gradient_nothing_is_detached():
    fn = optimize_loss(distill, backend="eager")
    student, teacher = torch.randn(8, 5, requires_grad=True), torch.randn(8, 5, requires_grad=True)
    fn(student, teacher, 2.0).backward()
    assert teacher.grad is not None and not fn.report.target_only


def test_stop_gradient_of_an_unknown_argument_is_an_error():
    with pytest.raises(TypeError, match="teacher"):
        optimize_loss(distill, stop_gradient=("teacher",))


# -- compile: recompiles, verify, debug_dir ---------------------------------------------------------
def test_batch_size_changes_recompile_once():
    compiles = []

    def counting(gm, example_inputs):
        compiles.append(gm)
        return gm.forward

    torch.compiler.reset()  # forget the dynamic dimensions earlier tests taught Dynamo
    fn = optimize_loss(smoothed_weighted_ce, backend=counting)
    for n in [32, 32, 64, 17, 64, 5, 32]:  # ... and a smaller last batch
        check(fn, *ce_inputs(n=n))
    assert len(compiles) == 2  # static first, then one graph with a dynamic batch dimension


def test_verify_covers_the_hoisted_implementation(monkeypatch):
    real = HoistedCall._run_transform
    monkeypatch.setattr(HoistedCall, "_run_transform",  # a broken hoist: verify must catch it
                        lambda self, *inputs: tuple(t + 1 for t in real(self, *inputs)))
    fn = optimize_loss(smoothed_weighted_ce, backend="eager", verify=True, verify_compiled=False)
    with pytest.warns(UserWarning, match="verification failed"):
        check(fn, *ce_inputs())  # the original ran instead


def test_a_failing_fx_pass_means_the_eager_rewrite_runs_after_one_warning(monkeypatch):
    def broken(gm):
        raise ValueError("a bug in the pass")

    monkeypatch.setattr(hoist_target_subgraph, "run", broken)
    fn = optimize_loss(smoothed_weighted_ce, backend="eager")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            check(fn, *ce_inputs())
    messages = [str(w.message) for w in caught if issubclass(w.category, RewriteWarning)]
    assert len(messages) == 1 and "a bug in the pass" in messages[0]


def test_debug_dir_gets_the_graph_after_every_fx_pass(tmp_path):
    fn = optimize_loss(smoothed_weighted_ce, backend="eager", debug_dir=str(tmp_path))
    fn(*ce_inputs())
    names = sorted(p.name for p in tmp_path.iterdir())
    assert any(n.endswith("_fx_hoist_target_subgraph.py") for n in names), names
    assert any(n.endswith("_fx_annotate_grad_dependence.py") for n in names), names


# -- split ------------------------------------------------------------------------------------------
def test_split_round_trip_with_a_dataloader():
    transform, core = split(smoothed_weighted_ce, *ce_inputs())
    transform = pickle.loads(pickle.dumps(transform))  # DataLoader workers get it by pickle
    weights = torch.rand(5) + 0.5
    targets = torch.randint(0, 5, (40,))

    def collate(batch):
        target = torch.stack(batch)
        return (target, *transform(target, weights))

    loader = torch.utils.data.DataLoader(list(targets), batch_size=16, collate_fn=collate)
    for i, (target, *transformed) in enumerate(loader):
        logits = torch.randn(len(target), 5, requires_grad=True)
        assert_equivalent(lambda l: smoothed_weighted_ce(l, target, weights),
                          lambda l: core(l, *transformed), logits)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_split_perceptual_style(dtype):
    example = load("examples/perceptual_style.py")
    inputs = example.make_inputs("small", dtype)
    transform, core = split(example.naive, *inputs)
    fixed = transform(*inputs[1:])
    assert_equivalent(example.naive, lambda image, *rest: core(image, *fixed), *inputs)


def test_split_refuses_when_nothing_is_target_only():
    with pytest.raises(RewriteError, match="nothing to split off"):
        split(distill, torch.randn(8, 5, requires_grad=True), torch.randn(8, 5, requires_grad=True), 2.0)


def per_row_ce(logits, target):
    total = 0
    for i in range(logits.shape[0]):
        total = total + F.cross_entropy(logits[i:i + 1], target[i:i + 1])
    return total / logits.shape[0]


def test_report_names_the_users_lines_not_the_runtime_helpers():
    # the vectorized loop's sums call `loop_sums_keep_dtypes.loop_sum`: its nodes were reported
    # at that helper's file:line, which the user never wrote
    fn = optimize_loss(per_row_ce, backend="eager")
    fn(torch.randn(6, 4, requires_grad=True), torch.randint(0, 4, (6,)))
    lines = fn.report.target_only + fn.report.notes
    package = os.path.dirname(hoist_target_subgraph.__file__)
    assert lines and not [line for line in lines if line.startswith(package)], lines
