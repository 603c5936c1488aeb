"""Per-class sorted-error losses (Lovasz style) whose class loop skips absent classes with a
data-dependent ``continue``: the sort unpacked into new names, ``.data``, a Python flag joined to
the tensor condition by ``and``, and a helper with an ``if`` and an in-place write, called inside
``Variable(...)`` under the mask. Value, every gradient, dtype, float32 and float64, ties in the
sort, a class with no foreground, no class present at all."""
from __future__ import annotations

import pytest
import torch

import rewrite
from rewrite.testing import assert_equivalent, outputs_and_gradients
from tests.helpers import load_module

SOURCE = """
import torch
from torch.autograd import Variable


def sorted_gain(gt_sorted):
    p = len(gt_sorted)
    total = gt_sorted.sum()
    inter = total - gt_sorted.cumsum(0)
    union = total + (1 - gt_sorted).cumsum(0)
    iou = 1. - inter / union
    if p > 1:
        iou[1:p] = iou[1:p] - iou[0:-1]
    return iou


def per_class(probas, labels, only_present=True):
    losses = []
    for c in range(probas.shape[1]):
        fg = (labels == c).to(probas.dtype)
        if only_present and fg.sum() == 0:
            continue
        errors = (fg - probas[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        perm = perm.data
        losses.append(torch.dot(errors_sorted, Variable(sorted_gain(fg[perm]))))
    return sum(losses) / len(losses)


def detached_order(x, w):
    total = 0
    for i in range(x.shape[0]):
        if x[i].sum() < 0:
            continue
        s, idx = x[i].sort()
        total = total + (s * w[idx].data).sum()
    return total
"""


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("sorted_errors"), SOURCE)


def check(fn, *inputs):
    """Same value, every gradient, dtype and Python type; the loop ran vectorized (``strict``:
    a failing vectorized form raises)."""
    opt = rewrite.optimize_loss(fn, compile=False, strict=True)
    assert_equivalent(fn, opt, *inputs)
    want, _ = outputs_and_gradients(fn, inputs, {})
    got, _ = outputs_and_gradients(opt, inputs, {})
    assert [getattr(v, "dtype", None) for v in got] == [getattr(v, "dtype", None) for v in want]
    assert all(loop.vectorized for loop in opt.report.loops), opt.report.loops
    assert all(loop.vectorized_runs and not loop.failed_runs for loop in opt.report.loops)
    return opt


def _inputs(dtype, present, ties=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    probas = torch.randn(60, 5, generator=g, dtype=dtype).softmax(1)
    if ties:  # many equal errors: the sort's order among them must not matter
        probas = (probas * 4).round() / 4
    labels = torch.randint(0, present, (60,), generator=g)
    return probas.requires_grad_(), labels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ties", [False, True])
def test_absent_classes_are_skipped(user, dtype, ties):
    check(user.per_class, *_inputs(dtype, present=3, ties=ties))  # classes 3, 4 never occur


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_class_kept_when_the_flag_is_off(user, dtype):
    probas, labels = _inputs(dtype, present=3)
    check(user.per_class, probas, labels, False)


def test_no_class_present_raises_as_written(user):
    probas, labels = _inputs(torch.float64, present=3)
    opt = rewrite.optimize_loss(user.per_class, compile=False)
    labels = torch.full_like(labels, 7)
    with pytest.raises(ZeroDivisionError):
        user.per_class(probas, labels)
    with pytest.raises(ZeroDivisionError):
        opt(probas, labels)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_data_read_under_a_mask(user, dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 7, generator=g, dtype=dtype).requires_grad_()
    w = torch.randn(7, generator=g, dtype=dtype).requires_grad_()
    check(user.detached_order, x, w)
