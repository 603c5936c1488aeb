"""A loop the report calls vectorized runs vectorized on the inputs it is written for (issue #13):
loops over dicts or records (DETR's targets, detectron2's instances) are kept at rewrite time with
the reason, and a list an ``isinstance`` test narrows (mmdetection's ``_parse_losses``) is
stacked in that branch, so its loop runs vectorized."""
from __future__ import annotations

import types
import warnings

import pytest
import torch

from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module

USER_CODE = '''
import torch
import torch.nn.functional as F


def count_boxes(targets, pred):
    num_boxes = sum(len(t["labels"]) for t in targets)
    return pred.sum() / max(num_boxes, 1)


def indexed_boxes(targets, pred):
    n = 0
    for i in range(len(targets)):
        n += targets[i]["boxes"].shape[0]
    return pred.sum() / n


def instance_classes(instances, logits):
    loss = 0
    for inst, lg in zip(instances, logits):
        loss = loss + F.cross_entropy(lg, inst.gt_classes)
    return loss


def tensor_attributes(preds):
    loss = 0
    for p in preds:
        loss = loss + (p.T @ p).sum() / p.shape[0]
    return loss


def elif_list(losses):
    log_vars = {}
    for name, value in losses.items():
        if isinstance(value, torch.Tensor):
            log_vars[name] = value.mean()
        elif isinstance(value, list):
            log_vars[name] = sum(_loss.mean() for _loss in value)
        else:
            raise TypeError(name)
    return sum(v for k, v in log_vars.items() if "loss" in k)


def is_list_of(seq, kind):
    return isinstance(seq, list) and all([isinstance(x, kind) for x in seq])


def else_of_tensor(losses):
    total = 0
    for name, value in losses.items():
        if isinstance(value, torch.Tensor):
            total = total + value.mean()
        elif is_list_of(value, torch.Tensor):
            total = total + sum([part.sum() for part in value])
    return total


def sequence_and_loop(losses):
    total = 0
    for value in losses.values():
        if isinstance(value, (list, tuple)) and len(value) > 0:
            for part in value:
                total = total + (part * part).mean()
        else:
            total = total + value.sum()
    return total


def grams(g_s, g_t):
    return sum([_gram_loss(f_s, f_t) for f_s, f_t in zip(g_s, g_t)])


def _gram_loss(f_s, f_t):
    b = f_s.shape[0]
    g_s = F.normalize(f_s.reshape(b, -1) @ f_s.reshape(b, -1).t())
    g_t = F.normalize(f_t.reshape(b, -1) @ f_t.reshape(b, -1).t())
    return ((g_t - g_s) ** 2).sum() / (b * b)


def negated(losses):
    total = 0
    for value in losses.values():
        if not isinstance(value, torch.Tensor):
            total = total + sum(part.pow(2).sum() for part in value)
        else:
            total = total + value.sum()
    return total


def dict_test(losses):
    total = 0
    for value in losses.values():
        if isinstance(value, dict):
            total = total + value["x"].sum()
        else:
            for part in value:
                total = total + part.sum()
    return total
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("claims"), USER_CODE)


def _run(fn, *args):
    """``fn`` and its rewrite agree (value, every gradient, dtype); the rewrite's report."""
    optimized = optimize_loss(fn, compile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_equivalent(fn, optimized, *args)
    assert optimized.report.fallbacks == []
    return optimized.report


def _loop(report, line_text: str, fn):
    import inspect
    lines, start = inspect.getsourcelines(fn)
    lineno = start + next(i for i, l in enumerate(lines) if line_text in l)
    [loop] = [loop for loop in report.loops if loop.lineno == lineno]
    return loop


def _rand(gen, dtype, *shape, grad=True):
    return torch.randn(shape, generator=gen, dtype=dtype).requires_grad_(grad)


def _targets(dtype):
    gen = torch.Generator().manual_seed(0)
    return [{"labels": torch.randint(0, 5, (n,), generator=gen),
             "boxes": torch.rand(n, 4, generator=gen, dtype=dtype)} for n in (3, 1, 4)]


# -- items that are dicts or records: kept at rewrite time, with the reason at the line ---------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name, line, reason", [
    ("count_boxes", "sum(len(", "its items are read at the key `'labels'`: dicts, not tensors"),
    ("indexed_boxes", "for i in", "its items are read at the key `'boxes'`: dicts, not tensors"),
])
def test_loops_over_dicts_are_kept_with_the_reason(user, dtype, name, line, reason):
    fn = getattr(user, name)
    pred = _rand(torch.Generator().manual_seed(1), dtype, 4, 3)
    loop = _loop(_run(fn, _targets(dtype), pred), line, fn)
    assert not loop.vectorized and loop.reason.startswith(reason + ";"), loop


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_loops_over_records_are_kept_with_the_reason(user, dtype):
    gen = torch.Generator().manual_seed(2)
    instances = [types.SimpleNamespace(gt_classes=torch.randint(0, 4, (n,), generator=gen))
                 for n in (2, 5)]
    logits = [_rand(gen, dtype, n, 4) for n in (2, 5)]
    loop = _loop(_run(user.instance_classes, instances, logits), "for inst", user.instance_classes)
    assert not loop.vectorized and loop.reason.startswith(
        "its items are read at `.gt_classes`, which tensors do not have: records, not tensors"), loop


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_items_read_at_tensor_attributes_are_still_vectorized(user, dtype):
    preds = [_rand(torch.Generator().manual_seed(3), dtype, 3, 2) for _ in range(4)]
    loop = _loop(_run(user.tensor_attributes, preds), "for p in", user.tensor_attributes)
    assert loop.vectorized and loop.vectorized_runs == 1 and not loop.original_runs, loop


# -- a list an `isinstance` test narrows: stacked in that branch, run vectorized ----------------
def _losses(dtype, shape):
    gen = torch.Generator().manual_seed(4)
    return {"loss_cls": [_rand(gen, dtype, *shape) for _ in range(3)],
            "loss_bbox": [_rand(gen, dtype, *shape) for _ in range(3)],
            "loss_aux": _rand(gen, dtype, 5), "acc": [_rand(gen, dtype, *shape, grad=False)]}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name, line, shape", [
    ("elif_list", "sum(_loss.mean()", ()),              # mmdetection 2.x: per-level 0-d losses
    ("elif_list", "sum(_loss.mean()", (6,)),
    ("else_of_tensor", "sum([part.sum()", (2, 3)),      # mmengine: `elif is_list_of(...)`
    ("sequence_and_loop", "for part in", (4,)),
    ("negated", "sum(part.pow(2)", (3, 2)),
])
def test_a_list_an_isinstance_test_narrows_runs_vectorized(user, dtype, name, line, shape):
    fn = getattr(user, name)
    losses = _losses(dtype, shape)
    if name == "sequence_and_loop":
        losses["loss_aux"] = tuple(_rand(torch.Generator(), dtype, *shape) for _ in range(2))
    loop = _loop(_run(fn, losses), line, fn)
    assert loop.vectorized and "a list or tuple of tensors of one shape" in loop.reason, loop
    assert loop.vectorized_runs >= 2 and not loop.original_runs and not loop.failed_runs, loop


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_narrowed_list_of_other_shapes_runs_as_written(user, dtype):
    gen = torch.Generator().manual_seed(5)
    losses = {"loss_cls": [_rand(gen, dtype, n) for n in (2, 3)]}
    loop = _loop(_run(user.elif_list, losses), "sum(_loss.mean()", user.elif_list)
    assert loop.vectorized and loop.original_runs == 1 and not loop.vectorized_runs, loop


def test_a_test_that_narrows_no_list_stacks_nothing(user):
    # `isinstance(value, dict)` says nothing of the `else`: its loop keeps the tensor check
    report = optimize_loss(user.dict_test, compile=False).report
    loop = _loop(report, "for part in", user.dict_test)
    assert loop.vectorized and loop.reason.endswith(
        "when `value` is a tensor, else the loop runs as written"), loop


# -- a loop the calls did not reach says so ------------------------------------------------------
BRANCHES = '''
import torch


def branches(x, use_sum):
    total = 0
    if use_sum:
        for row in x:
            total = total + row.sum()
    else:
        for row in x:
            total = total + row.abs().amax()
    return total
'''


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_loop_in_a_branch_not_taken_is_reported_not_reached(tmp_path, dtype):
    user = load_module(tmp_path, BRANCHES)
    fn = optimize_loss(user.branches, compile=False)
    assert "not reached" not in str(fn.report)  # before a call: nothing counted
    x = _rand(torch.Generator().manual_seed(6), dtype, 4, 3)
    assert_equivalent(user.branches, fn, x, True)
    taken, other = sorted((l for l in fn.report.loops if l.vectorized), key=lambda l: l.lineno)
    assert taken.vectorized_runs == 1 and not (other.vectorized_runs or other.original_runs)
    shown = {l.split(": loop")[0].rsplit(":", 1)[1]: l for l in str(fn.report).splitlines()
             if ": loop " in l}
    assert shown[str(other.lineno)].endswith("[not reached in the counted calls]")
    assert "not reached" not in shown[str(taken.lineno)]


# -- a list that did not stack: the report says what kept it --------------------------------------
@pytest.mark.parametrize("items, why", [
    ({"a": torch.ones(2)}, "it is a dict"),
    ([], "it is empty"),
    ([torch.ones(2), 1.0], "item 1 is a float"),
    ([torch.ones(8, 16, 4, 4), torch.ones(8, 16, 4, 4), torch.ones(8, 32, 2, 2)],
     "its items differ in shape: [8, 16, 4, 4] (item 0), [8, 32, 2, 2] (item 2)"),
    ((torch.ones(2), torch.ones(2, dtype=torch.float64)),
     "its items differ in dtype: torch.float32 (item 0), torch.float64 (item 1)"),
])
def test_why_a_list_did_not_stack(items, why):
    from passes.stacked_views import why_not_stacked
    assert why_not_stacked(items) == why


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_feature_maps_of_other_shapes_say_which_items_differ(user, dtype):
    # similarity-preserving distillation: one Gram loss per feature map, of other sizes each
    gen = torch.Generator().manual_seed(7)
    g_s = [_rand(gen, dtype, 4, c, s, s) for c, s in ((8, 4), (16, 2))]
    g_t = [_rand(gen, dtype, 4, c, s, s, grad=False) for c, s in ((8, 4), (16, 2))]
    loop = _loop(_run(user.grams, g_s, g_t), "return sum([", user.grams)
    assert (loop.vectorized_runs, loop.original_runs) == (0, 1)
    assert loop.last_failure.endswith(
        "dtype and device: its items differ in shape: [4, 8, 4, 4] (item 0), [4, 16, 2, 2] (item 1)")
    same = [_rand(gen, dtype, 4, 8, 4, 4) for _ in range(2)]
    loop = _loop(_run(user.grams, same, [s.detach() for s in same]), "return sum([", user.grams)
    assert (loop.vectorized_runs, loop.original_runs) == (1, 0)


FLAGGED = '''


def flagged(rewards, value_preds, masks, bad_masks, next_value, use_gae, proper):
    num_steps, num_processes = rewards.shape[:2]
    rollouts = RolloutStorage(num_steps, num_processes, rewards.dtype)
    rollouts.insert_all(rewards, value_preds, masks, bad_masks)
    rollouts.compute_returns(next_value, use_gae, 0.99, 0.95, proper)
    return rollouts.returns
'''


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("use_gae, proper", [(True, True), (True, False), (False, True),
                                             (False, False)])
def test_each_branch_of_a2c_returns_runs_its_scan_vectorized(tmp_path, dtype, use_gae, proper):
    # rl_a2c_gae_storage's `naive` takes one branch of `compute_returns` (lines 48, 56, 63 are
    # not reached, and the report says so); each of the others runs vectorized when taken
    import inspect
    import examples.real.rl_a2c_gae_storage as a2c
    user = load_module(tmp_path, inspect.getsource(a2c) + FLAGGED)
    _, _, _, *rollout = a2c.make_inputs("small", dtype)
    _run(user.flagged, *rollout, use_gae, proper)
    fn = optimize_loss(user.flagged, compile=False)
    fn(*rollout, use_gae, proper)
    ran = [l for l in fn.report.loops if l.vectorized and (l.vectorized_runs or l.original_runs)]
    assert [(l.vectorized_runs, l.original_runs, l.failed_runs) for l in ran] == [(1, 0, 0)]
    assert str(fn.report).count("[not reached in the counted calls]") == 3
