"""A test of whether the loop's item is ``None`` (the Bayesian crowd-counting loss's ``if prob is
None:`` per image, in ``and``/``or`` and conditional expressions): decided in the vectorized
form, whose items are tensors (before: read as a condition on tensor values, the vectorized
form raised at every call and the original ran for good, with a warning). Equivalence of values,
every gradient and dtype (float32, float64), with the run-time counts; a list holding ``None``
runs the loop as written."""
from __future__ import annotations

import ast
import warnings

import pytest
import torch

from passes.loops.identity_tests_of_items import _Decided
from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module

SOURCE = """
import torch


def bayes(prob_list, target_list, density):
    loss = 0
    for idx, prob in enumerate(prob_list):
        if prob is None:
            count = torch.sum(density[idx])
            target = torch.zeros((1,), dtype=density.dtype)
        else:
            target = target_list[idx]
            count = torch.sum(density[idx].view((1, -1)) * prob, dim=1)
        loss += torch.sum(torch.abs(target - count))
    return loss / len(prob_list)


def tests_around(prob_list, density, flag):
    loss = 0
    for idx, prob in enumerate(prob_list):
        w = 2.0 if prob is not None and prob.sum() > 3 else 0.5
        kept = flag or prob is None
        if not (prob is None or prob.numel() == 0):
            loss = loss + w * (density[idx].view(1, -1) * prob).sum() + kept
    return loss
"""


def _inputs(dtype, none_at=None):
    g = torch.Generator().manual_seed(0)
    density = torch.rand(4, 1, 4, 4, generator=g, dtype=dtype).requires_grad_()
    probs = [torch.softmax(torch.randn(3, 16, generator=g, dtype=dtype), 0) for _ in range(4)]
    targets = [torch.ones(3, dtype=dtype) for _ in range(4)]
    if none_at is not None:
        probs[none_at] = None
    return probs, targets, density


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("identity"), SOURCE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_items_never_none_in_the_vectorized_form(user, dtype):
    fast = optimize_loss(user.bayes, compile=False, strict=True, keep_faster=False)
    assert_equivalent(user.bayes, fast, *_inputs(dtype))
    (loop,) = fast.report.loops
    assert loop.vectorized_runs > 0 and loop.original_runs == 0 and loop.failed_runs == 0


@pytest.mark.parametrize("flag", [0, 1, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_tests_in_and_or_not_and_conditional_expressions(user, dtype, flag):
    fast = optimize_loss(user.tests_around, compile=False, strict=True, keep_faster=False)
    probs, _, density = _inputs(dtype)
    assert_equivalent(user.tests_around, fast, probs, density, flag)
    (loop,) = fast.report.loops
    assert loop.vectorized_runs > 0 and loop.original_runs == 0 and loop.failed_runs == 0


def test_a_list_holding_none_runs_the_loop_as_written(user):
    fast = optimize_loss(user.bayes, compile=False, keep_faster=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: the check is false, no raise
        assert_equivalent(user.bayes, fast, *_inputs(torch.float64, none_at=2))
    (loop,) = fast.report.loops
    assert loop.original_runs > 0 and loop.vectorized_runs == 0 and loop.failed_runs == 0


@pytest.mark.parametrize("src, decided", [
    ("p is None or x", "x"),                      # `False or x` is x
    ("x or p is None", "x or False"),             # x itself where truthy, else False
    ("x or p is not None", "x or True"),          # x is still evaluated first
    ("p is not None or x", "True"),               # x is never evaluated
    ("p is None and x", "False"),
    ("not (p is None or q)", "not q"),
    ("p is None or q is None or r", "q is None or r"),
])
def test_and_or_keep_what_python_evaluates_and_returns(src, decided):
    # only the loop's item `p` is decided; an operand before it is still evaluated, and a
    # value other than a bool is still what `or`/`and` return
    out = _Decided({"p"}).statements(ast.parse(f"a = {src}").body)
    assert ast.unparse(out[0]) == f"a = {decided}"
