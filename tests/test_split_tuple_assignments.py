"""``split_tuple_assignments``: ``p, t = a, b`` becomes one assignment per name, so a per-class
loop whose rest is under ``if c == ignore: continue`` is vectorized (the merge under a mask takes
one name at a time). Golden of the stage, the no-change cases, and value, every gradient and
dtype against the original, float32 and float64."""
from __future__ import annotations

import ast

import pytest
import torch

from passes.ast_tools import unparse
from passes.loops import split_tuple_assignments
from rewrite import assert_equivalent
from tests.loop_helpers import build, strategies
from tests.loop_stage_helpers import plan_before

DICE = """
def f(prob, onehot, ignore=1):
    ds = []
    for c in range(prob.size(1)):
        if c == ignore:
            continue
        p, t = prob[:, c], onehot[:, c]
        inter = (p * t).sum()
        ds.append(1 - (2 * inter + 1) / (p.sum() + t.sum() + 1))
    return sum(ds) / len(ds)
"""


def _body_after(src: str) -> str:
    plan, ctx = plan_before(src, split_tuple_assignments)
    return "\n".join(unparse(s) for s in split_tuple_assignments.stage(plan, ctx).body)


def test_a_tuple_of_values_becomes_one_assignment_per_name():
    body = _body_after(DICE)
    assert "p = prob[:, c]\n" in body and "t = onehot[:, c]\n" in body
    assert "p, t" not in body


@pytest.mark.parametrize("src", [
    "a, b = b, a",                      # the second value reads the name the first binds
    "a, a = x[i], x[i] * 2",            # one name bound twice
    "a, b = x[i], helper(x[i])",        # a closure of the loss could read `a`
    "a, b = x[i].chunk(2)",             # not a tuple of values
    "(a, b), c = (x[i], x[i]), x[i]",   # a nested target
])
def test_no_change(src):
    loop = f"""
def f(x, a, b):
    def helper(v):
        return v + a
    out = []
    for i in range(x.shape[0]):
        {src}
        out.append(a)
    return out
"""
    assert unparse(ast.parse(src).body[0]) in _body_after(loop)


def _dice_inputs(dtype):
    g = torch.Generator().manual_seed(0)
    prob = torch.rand(4, 3, 5, 5, dtype=dtype, generator=g).softmax(1).requires_grad_()
    labels = torch.randint(0, 3, (4, 5, 5), generator=g)
    onehot = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).to(dtype)
    return prob, onehot


@pytest.mark.parametrize("ignore", [1, 0, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_per_class_dice_with_an_ignored_class_is_vectorized_and_equal(ignore, dtype):
    naive, fast, _, report = build(DICE)
    assert strategies(report) == {3: "batched"}, report.loops[0].reason
    prob, onehot = _dice_inputs(dtype)
    assert_equivalent(naive, fast, prob, onehot, ignore)
    assert fast(prob, onehot, ignore).dtype == dtype


def test_a_swap_keeps_its_meaning():
    naive, fast, _, _ = build("""
def f(x):
    a, b = x[0], x[1]
    for i in range(x.shape[0]):
        a, b = b, a * x[i]
    return a + b
""")
    assert_equivalent(naive, fast, torch.randn(4, 3, dtype=torch.float64, requires_grad=True))
