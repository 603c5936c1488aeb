"""New-user trials (session 16): losses written as public repositories write them, each a
discrepancy found by comparing ``optimize_loss`` with the original (value, every gradient,
dtype, input mutation, exceptions, and the report's vectorized claim)."""
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
    compile(tree, "<test>", "eval")  # raised "column 24-0 is not a valid range"
