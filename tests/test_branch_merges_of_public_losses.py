"""Merges of names bound under tensor conditions, as public losses write them (an in-place
scale ``l *= w[i]``, a helper's ``a = a.sum()``, a fill of another shape): each a discrepancy a
new-user trial found by comparing ``optimize_loss`` with the original (value, every gradient,
dtype, and the report's vectorized claim)."""
from __future__ import annotations

import ast
import warnings

import pytest
import torch

from passes.ast_tools import replace
from rewrite import optimize_loss
from tests.helpers import equivalent_report, load_module

DTYPES = (torch.float32, torch.float64)

# `l *= w[i]` under a tensor condition: the where-merge located its templates at the generated,
# unlocated `l * w[i]`, so the rewritten source did not compile and the original ran although the
# report said "vectorized"
SCALED_UNDER_CONDITION = """
def weighted_sq(x, w):
    total = 0
    for i in range(x.size(0)):
        l = (x[i] ** 2).sum()
        if w[i] > 0:
            l *= w[i]
        total = total + l
    return total
"""


@pytest.mark.parametrize("dtype", DTYPES)
def test_inplace_scale_under_tensor_condition_runs_vectorized(tmp_path, dtype):
    fn = load_module(tmp_path, SCALED_UNDER_CONDITION).weighted_sq
    x = torch.randn(6, 3, dtype=dtype, requires_grad=True)
    w = torch.tensor([1., -1, 2, 0, 3, -2], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        report = equivalent_report(fn, x, w)
    (loop,) = report.loops
    assert loop.vectorized and loop.vectorized_runs == 1 and loop.original_runs == 0
    assert not report.fallbacks


def test_replace_at_an_unlocated_node_compiles():
    unlocated = ast.BinOp(ast.Name("a", ast.Load()), ast.Mult(), ast.Name("b", ast.Load()))
    expr = replace("torch.where(p, a, False)", loc=unlocated, p="c", a=unlocated)
    tree = ast.fix_missing_locations(ast.Expression(expr))
    code = compile(tree, "<test>", "eval")  # raised "column 24-0 is not a valid range"
    scope = {"torch": torch, "c": torch.tensor([True, False]), "a": torch.tensor(2.0), "b": 3}
    assert eval(code, scope).tolist() == [6.0, 0.0]


# A name bound again under a tensor condition to a value of another shape. Bound first under
# the same condition (a same-module helper reshaping its argument, inlined under `if k !=
# ignore_index:`, as mmsegmentation's tversky loss): the merge `torch.where(c, a.sum(), a)`
# broadcast the old shape into the new value (the loss came out of shape [3], wrong gradient);
# it now takes the new value as it is. Bound before the condition: the shapes differ by
# iteration in the original, the merge raises and the original runs, where it broadcast.
REBOUND = """
def _scaled_total(a):
    a = a.sum()
    return a * 2

def helper_under_index_test(x, skip):
    total = 0
    for k in range(x.size(0)):
        if k != skip:
            total = total + _scaled_total(x[k])
    return total

def rebound_in_branch(x, w):
    total = 0
    for k in range(x.size(0)):
        if w[k] > 0:
            v = x[k] * 2
            v = v.sum()
            total = total + v
    return total

def rebound_after_bound_before(x, w):
    total = 0
    for k in range(x.size(0)):
        v = x[k] * 2
        if w[k] > 0:
            v = v.sum()
        total = total + v.sum()
    return total

def rebound_same_shape(x, w):
    total = 0
    for k in range(x.size(0)):
        v = x[k] * 2
        if w[k] > 0:
            v = v.exp()
        total = total + v.sum()
    return total

def rebound_to_fixed(x, w, fill):
    total = 0
    for k in range(x.size(0)):
        v = x[k] * 2
        if w[k] > 0:
            v = fill
        total = total + v.sum()
    return total

def rebound_from_number(x, w):
    total = 0
    for k in range(x.size(0)):
        v = 0
        if w[k] > 0:
            v = x[k].exp()
        total = total + v
    return total
"""


def _rebound_inputs(dtype, nan):
    x = torch.rand(4, 3, dtype=dtype)
    if nan:  # in a deselected iteration
        x[1, 0] = float("nan")
    return x.requires_grad_(), torch.tensor([1., -1, 2, 3], dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nan", [False, True])
@pytest.mark.parametrize("name", ["helper_under_index_test", "rebound_in_branch",
                                  "rebound_same_shape", "rebound_from_number"])
def test_rebound_under_tensor_condition_vectorized_equal(tmp_path, dtype, nan, name):
    module = load_module(tmp_path, REBOUND)
    x, w = _rebound_inputs(dtype, nan)
    args = (x, 1) if name == "helper_under_index_test" else (x, w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        report = equivalent_report(getattr(module, name), *args)
    assert [(l.vectorized_runs, l.original_runs) for l in report.loops] == [(1, 0)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_rebound_to_another_shape_runs_the_original(tmp_path, dtype):
    fn = load_module(tmp_path, REBOUND).rebound_after_bound_before
    x, w = _rebound_inputs(dtype, False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = equivalent_report(fn, x, w)
    (loop,) = report.loops
    assert "shape depends on the condition" in loop.last_failure


# mmsegmentation's tversky loss, paraphrased: a per-class helper that reshapes its arguments,
# called under `if k != ignore_index:`. Its vectorized form raised (a merge broadcast [B, H, W]
# into [B, H*W]) and the whole function fell back to the original with a warning.
TVERSKY = """
import torch

def binary_tversky(pred, target, valid, alpha=0.3, beta=0.7, smooth=1):
    pred = pred.reshape(pred.shape[0], -1)
    target = target.reshape(target.shape[0], -1)
    valid = valid.reshape(valid.shape[0], -1)
    tp = torch.sum(torch.mul(pred, target) * valid, dim=1)
    fp = torch.sum(torch.mul(pred, 1 - target) * valid, dim=1)
    fn = torch.sum(torch.mul(1 - pred, target) * valid, dim=1)
    return 1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)

def tversky(pred, target, valid, ignore_index=255):
    total = 0
    for k in range(pred.shape[1]):
        if k != ignore_index:
            total += binary_tversky(pred[:, k], target[..., k], valid)
    return total / pred.shape[1]
"""


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ignore_index", [255, 2])
def test_tversky_per_class_helper_vectorized(tmp_path, dtype, ignore_index):
    fn = load_module(tmp_path, TVERSKY).tversky
    target = torch.randint(0, 4, (2, 5, 5))
    target[0, 0, :3] = 255
    pred = torch.softmax(torch.randn(2, 4, 5, 5, dtype=dtype), 1).requires_grad_()
    one_hot = torch.nn.functional.one_hot(target.clamp(0, 3), 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        report = equivalent_report(fn, pred, one_hot, (target != 255).long(), ignore_index)
    runs = [(l.vectorized_runs, l.failed_runs, l.original_runs) for l in report.loops]
    assert runs == [(1, 0, 0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fill_shape, vectorized", [((), False), ((1,), False), ((3,), True)])
def test_rebound_to_a_fixed_value_checks_its_shape(tmp_path, dtype, fill_shape, vectorized):
    fn = load_module(tmp_path, REBOUND).rebound_to_fixed
    x, w = _rebound_inputs(dtype, False)
    fill = torch.full(fill_shape, 5.0, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = equivalent_report(fn, x, w, fill)  # was 30 off: 5 broadcast into 3 elements
    (loop,) = report.loops
    assert (loop.failed_runs == 0) == vectorized and loop.vectorized_runs == 1
