"""reroll_unrolled_loops on class loops written the way training scripts write them (Dice, IoU,
Tversky): an add/subtract chain with numbers mixed in (``loss = loss + 1 - dice_c``) and the
class number compared with the labels (``(target == c).float()``). Golden node counts, values
and every gradient through ``rewrite.backend(inner="aot_eager")``, near-isomorphic loops that
stay unrolled, and a reason in the report (and the log, once) for every graph left alone."""
from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F

from examples._check import load
from passes import reroll_unrolled_loops
from passes.meta_keys import NOT_REROLLED_BECAUSE
from passes.report import Report
from rewrite import assert_equivalent, backend
from tests.test_reroll_unrolled_loops import rerolled

SMOOTH = 1e-5


def segmentation(b=2, c=5, hw=6, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, hw, hw, generator=g, dtype=dtype).requires_grad_()
    return logits, torch.randint(0, c, (b, hw, hw), generator=g)


# -- class loops as users write them -------------------------------------------------------------
def dice_one_hot_constant_in_chain(logits, target):
    probs = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    loss = 0.0
    for c in range(logits.shape[1]):
        inter = (probs[:, c] * onehot[:, c]).sum()
        dice_c = (2 * inter + 1) / (probs[:, c].sum() + onehot[:, c].sum() + 1)
        loss = loss + 1 - dice_c
    return loss / logits.shape[1]


def dice_class_compared_with_labels(logits, target):
    probs = logits.softmax(1)
    loss = 0
    for c in range(logits.shape[1]):
        mask = (target == c).float()
        inter = (probs[:, c] * mask).sum()
        loss = loss + 1 - (2 * inter + SMOOTH) / (probs[:, c].sum() + mask.sum() + SMOOTH)
    return loss / logits.shape[1]


def iou_per_class_stacked(logits, target):
    probs = torch.sigmoid(logits)
    scores = []
    for c in range(logits.shape[1]):
        mask = (target == c).to(probs.dtype)
        inter = (probs[:, c] * mask).sum()
        union = probs[:, c].sum() + mask.sum() - inter
        scores.append((inter + SMOOTH) / (union + SMOOTH))
    return 1 - torch.stack(scores).mean()


def tversky_subtracted_per_class(logits, target, alpha=0.3, beta=0.7):
    probs = logits.softmax(1)
    total = 0
    for c in range(1, logits.shape[1]):  # class 0 is background
        hit = (target == c).float()
        miss = (target != c).float()
        tp = (probs[:, c] * hit).sum()
        fp = (probs[:, c] * miss).sum()
        fn = ((1 - probs[:, c]) * hit).sum()
        total -= (tp + SMOOTH) / (tp + alpha * fp + beta * fn + SMOOTH)
    return 1 + total / (logits.shape[1] - 1)


# (function, calls in Dynamo's graph, calls after) at 5 classes.
REROLLED = [
    # softmax, one_hot, permute, float + 5 x 13 (two reads each of probs and onehot) + 9 links
    # (1.0 - dice_c, then + 1 and - dice_c) + div
    # -> softmax, one_hot, permute, float, vmap, sum, 5.0 - sum, div
    (dice_one_hot_constant_in_chain, 79, 8),
    # softmax + 5 x 13 (eq, float, two reads of probs, ...) + 9 links + div
    # -> softmax, arange(0, 5), vmap, sum, 5 - sum, div
    (dice_class_compared_with_labels, 76, 6),
    # sigmoid + 5 x 13 + stack, mean, 1 - mean -> sigmoid, arange, vmap (the stack), mean, 1 - mean
    (iou_per_class_stacked, 69, 5),
    # softmax + 4 x 21 (eq, ne, 2 float, 3 reads of probs, ...) + 4 links (0 - the first, -=)
    # + div, add -> softmax, arange(1, 5) for == and for !=, probs[:, 1:5] for each of the 3
    # reads, vmap, sum, 0 - sum, div, add
    (tversky_subtracted_per_class, 91, 11),
]


@pytest.mark.parametrize("fn, before, after", REROLLED, ids=lambda c: getattr(c, "__name__", ""))
def test_golden_node_counts_of_user_written_class_loops(fn, before, after):
    assert rerolled(fn, *segmentation())[:2] == (before, after)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fn", [c[0] for c in REROLLED], ids=lambda f: f.__name__)
def test_user_written_class_loops_keep_values_and_gradients(fn, dtype):
    report = Report(fn.__name__, __file__, 0)
    compiled = torch.compile(fn, backend=backend(inner="aot_eager", report=report))
    assert_equivalent(fn, compiled, *segmentation(dtype=dtype))
    assert [n for n in report.notes if n.startswith("re-rolled")], report.notes
    assert not [n for n in report.notes if "not re-rolled" in n or "failed" in n], report.notes


def test_absent_classes_nan_and_inf_keep_values_and_gradients():
    logits, target = segmentation(c=6)
    target = target % 4  # classes 4 and 5 never occur: their masks are all zero
    with torch.no_grad():
        logits[0, 1, 0, 0], logits[1, 2, 3, 3] = float("nan"), float("inf")
    for fn in (dice_class_compared_with_labels, iou_per_class_stacked):
        compiled = torch.compile(fn, backend=backend(inner="aot_eager"))
        assert_equivalent(fn, compiled, logits, target)


def test_a_new_batch_size_recompiles_with_a_dynamic_batch_and_stays_equal():
    report = Report("dice", __file__, 0)
    compiled = torch.compile(dice_class_compared_with_labels, backend=backend(inner="aot_eager", report=report))
    for b in (2, 3, 5):  # the second size makes Dynamo compile again, with a symbolic batch
        assert_equivalent(dice_class_compared_with_labels, compiled, *segmentation(b=b))
    assert not [n for n in report.notes if "not re-rolled" in n or "failed" in n], report.notes


def test_user_written_dice_example_is_rerolled():
    example = load("examples/dice_per_class.py")
    args = example.make_inputs("small")
    # softmax + 4 classes x 12 + 7 links + div -> softmax, arange, vmap, sum, 4 - sum, div
    assert rerolled(example.naive, *args)[:2] == (57, 6)
    compiled = torch.compile(example.naive, backend=backend(inner="aot_eager"))
    assert_equivalent(example.naive, compiled, *args)
    assert_equivalent(example.naive, example.expert, *args)


# -- loops left alone, and the reason for each --------------------------------------------------
def class_weighted_dice(logits, target):  # near-isomorphic: the class number also weighs
    probs = logits.softmax(1)
    loss = 0
    for c in range(logits.shape[1]):
        mask = (target == c).float()
        loss = loss + (c + 1) * (1 - 2 * (probs[:, c] * mask).sum() / (probs[:, c].sum() + mask.sum()))
    return loss


def squared_class_numbers(logits, target):  # the compared number is no arithmetic progression
    probs = logits.softmax(1)
    return sum((probs[:, c] * (target == c * c).float()).sum() for c in range(logits.shape[1]))


def alternating_signs(logits, target):  # even classes added, odd ones subtracted
    probs = logits.softmax(1)
    loss = 0
    for c in range(logits.shape[1]):
        term = (probs[:, c] * (target == c).float()).mean()
        loss = loss + term if c % 2 == 0 else loss - term
    return loss


def other_op_per_class(logits, target):  # sigmoid for even classes, tanh for odd ones
    loss = 0
    for c in range(logits.shape[1]):
        act = torch.sigmoid if c % 2 == 0 else torch.tanh
        loss = loss + 1 - act(logits[:, c]).mean()
    return loss


def other_input_per_class(logits, target):  # softmax for even classes, sigmoid for odd ones
    probs, odds = logits.softmax(1), logits.sigmoid()
    loss = 0
    for c in range(logits.shape[1]):
        loss = loss + (probs if c % 2 == 0 else odds)[:, c].mean()
    return loss


def three_classes(logits, target):
    return sum(1 - logits[:, c].sigmoid().mean() for c in range(3))


def three_stacked(logits, target):
    return torch.stack([logits[:, c].logsumexp(0).mean() for c in range(3)]).sum()


def no_loop(logits, target):
    return F.cross_entropy(logits, target)


# (function, part of the reason, the note is about a loop left alone: logged as a warning, not info)
LEFT_ALONE = [
    (class_weighted_dice, "the constant 4 (not 5): a number that changes per copy may only index", True),
    (squared_class_numbers, "not a fixed step", True),
    (alternating_signs, "adds some copies and subtracts others", True),
    (other_op_per_class, "in the op (tanh, not sigmoid)", True),
    (other_input_per_class, "argument 0: an input that is not the counterpart of probs", True),
    (three_classes, "only 3 copies of one subgraph: fewer than 4 copies", False),
    (three_stacked, "torch.stack of only 3 values: fewer than 4 copies", False),
    (no_loop, reroll_unrolled_loops.NO_LOOP, False),
]


@pytest.mark.parametrize("fn, reason, warned", LEFT_ALONE, ids=lambda c: getattr(c, "__name__", ""))
def test_every_graph_left_alone_says_why_in_the_report_and_once_in_the_log(fn, reason, warned, caplog):
    logits, target = segmentation()
    before, after, gm = rerolled(fn, logits, target)
    assert after == before
    for attempt in range(2):  # a second compile of the same graph logs nothing new
        torch._dynamo.reset()
        report = Report(fn.__name__, __file__, 0)
        compiled = torch.compile(fn, backend=backend(inner="aot_eager", report=report))
        with caplog.at_level(logging.INFO, logger="optimize_loss"):
            assert_equivalent(fn, compiled, logits, target)
        notes = [n for n in report.notes if n.startswith("not re-rolled")]
        assert len(notes) == 1 and reason in notes[0], report.notes
    logged = [r for r in caplog.records if r.name == "optimize_loss" and reason in r.getMessage()]
    assert [r.levelno for r in logged] == [logging.WARNING if warned else logging.INFO]


def test_graph_notes_are_only_for_the_backend_a_user_picked():
    gm = rerolled(no_loop, *segmentation())[2]
    assert gm.meta[NOT_REROLLED_BECAUSE] == reroll_unrolled_loops.NO_LOOP
    from rewrite.backend import reroll_notes
    assert reroll_notes(gm) == [] and len(reroll_notes(gm, graph_note=True)) == 1


# -- a training step compiled whole, as a user would ---------------------------------------------
def trained_parameters(compile_step, steps=3):
    """Parameters of a small segmentation model after ``steps`` SGD steps on the Dice example,
    the step run through ``compile_step``; and the report of the last one."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 5, 1)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    dice = load("examples/dice_per_class.py").naive
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (2, 8, 8), generator=g)

    def train_step(images, labels):
        opt.zero_grad()
        loss = dice(model(images), labels)
        loss.backward()
        opt.step()
        return loss.detach()

    step = compile_step(train_step)
    losses = [step(images, labels) for _ in range(steps)]
    return [p.detach().clone() for p in model.parameters()], losses


def test_a_compiled_training_step_trains_as_eager(recwarn):
    report = Report("train_step", __file__, 0)
    compiled = trained_parameters(lambda f: torch.compile(f, backend=backend(inner="aot_eager", report=report)))
    eager = trained_parameters(lambda f: f)
    # Dynamo's request to retrace the optimizer step (a Python float made a tensor) is passed on,
    # not taken for a failure of ours.
    assert not [w for w in recwarn if "backend failed" in str(w.message)]
    torch.testing.assert_close(compiled, eager)
    assert [n for n in report.notes if n.startswith("re-rolled") and "dice_per_class.py" in n], report.notes


def test_a_pass_failing_inside_a_training_step_falls_back_with_one_warning(monkeypatch):
    def broken(gm):
        raise RuntimeError("broken pass")

    monkeypatch.setattr(reroll_unrolled_loops, "run", broken)
    with pytest.warns(RuntimeWarning, match="broken pass") as warned:
        compiled = trained_parameters(lambda f: torch.compile(f, backend=backend(inner="aot_eager")))
    assert len([w for w in warned if "broken pass" in str(w.message)]) == 1
    torch.testing.assert_close(compiled, trained_parameters(lambda f: f))
