"""Per-class losses that skip a class by its index (``if c != ignore:``, ``if c == ignore:
continue``) around a call not known to be total iterate only the selected classes: the same
values, every gradient and dtype as the loop (float32, float64), the loop as written when no
class is selected, and an assert failing at one class raises the original's exception."""
from __future__ import annotations

import pytest
import torch

from rewrite import optimize_loss
from tests.helpers import equivalent_report, load_module

LOSSES = """
import torch


def soft_dice(p, t):
    if p.dim() != t.dim():
        raise ValueError("ranks differ")
    inter = (p * t).sum()
    return 1 - (2 * inter + 1) / (p.sum() + t.sum() + 1)


def per_class(logits, onehot, ignore):
    probs = logits.softmax(1)
    loss = 0
    for c in range(onehot.shape[1]):
        if c != ignore:
            loss += soft_dice(probs[:, c], onehot[:, c])
    return loss / onehot.shape[1]


def skip_class(logits, onehot, ignore):
    probs = logits.softmax(1)
    total = 0
    for c in range(onehot.shape[1]):
        if c == ignore:
            continue
        assert (onehot[:, c] >= 0).all(), "negative target"
        total = total + soft_dice(probs[:, c], onehot[:, c]) * onehot[:, c].mean()
    return total
"""
LOOP_LINE = {"per_class": 15, "skip_class": 24}


def _inputs(dtype, classes=4):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, classes, 5, 5, generator=g, dtype=dtype).requires_grad_()
    labels = torch.randint(0, classes, (3, 5, 5), generator=g)
    onehot = torch.nn.functional.one_hot(labels, classes).permute(0, 3, 1, 2).to(dtype)
    return logits, onehot


def _loop(report, name):
    return next(lp for lp in report.loops if lp.lineno == LOOP_LINE[name])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ignore", [0, 2, None])
@pytest.mark.parametrize("name", ["per_class", "skip_class"])
def test_selected_classes_equivalent_and_vectorized(tmp_path, name, ignore, dtype):
    fn = getattr(load_module(tmp_path, LOSSES), name)
    report = equivalent_report(fn, *_inputs(dtype), ignore)
    loop = _loop(report, name)
    assert loop.vectorized and (loop.vectorized_runs, loop.original_runs) == (1, 0), loop.reason


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["per_class", "skip_class"])
def test_no_class_selected_runs_as_written(tmp_path, name, dtype):
    """One class, the ignored one: the original's Python 0 (``0 / 1`` a float), no gradient."""
    fn = getattr(load_module(tmp_path, LOSSES), name)
    logits, onehot = _inputs(dtype, classes=1)
    want, got = fn(logits, onehot, 0), optimize_loss(fn, compile=False)(logits, onehot, 0)
    assert type(got) is type(want) and got == want
    report = equivalent_report(fn, logits, onehot, 0)
    assert (_loop(report, name).vectorized_runs, _loop(report, name).original_runs) == (0, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_assert_failing_at_one_class_raises_the_originals_error(tmp_path, dtype):
    fn = load_module(tmp_path, LOSSES).skip_class
    logits, onehot = _inputs(dtype)
    onehot[1, 2, 0, 0] = -1.0
    with pytest.raises(AssertionError) as original:
        fn(logits, onehot, 0)
    with pytest.raises(AssertionError) as optimized:
        optimize_loss(fn, compile=False)(logits, onehot, 0)
    assert str(optimized.value) == str(original.value) == "negative target"
    assert optimized.traceback[-1].lineno == original.traceback[-1].lineno  # the user's line


@pytest.mark.parametrize("change", [
    ("if c != ignore:", "if c != ignore and logits.sum() > 0:"),   # the test reads data
    ("soft_dice(probs[:, c], onehot[:, c])", "soft_dice(probs[:, c], onehot[:, c]) * c"),
])
def test_other_forms_are_not_selected(tmp_path, change):
    fn = load_module(tmp_path, LOSSES.replace(*change)).per_class
    report = equivalent_report(fn, *_inputs(torch.float64), 1)
    assert "_selected" not in report.rewritten_source
