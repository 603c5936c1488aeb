"""share_common_subexpressions: a value an earlier assignment of the block holds is read by name,
only where recomputing it could not give another result; same value, gradients and dtype."""
from __future__ import annotations

import ast

import pytest
import torch

from passes import share_common_subexpressions
from passes.ast_tools import Namer, PassContext, unparse
from rewrite import Report, assert_equivalent, optimize_loss
from tests.helpers import FRONTEND, load_module

SOURCE = '''
import torch

def two_helpers(probs, onehot):
    p = probs
    t = onehot
    a = p * t
    inter = a.sum(1) if a.dim() > 1 else a.reshape(len(a), -1).sum(1)
    q = probs
    u = onehot
    b = q * u
    tp = b.sum(1) if b.dim() > 1 else b.reshape(len(b), -1).sum(1)
    return (1 - (2 * inter + 1) / (p.sum(1) + t.sum(1) + 1) + tp / (tp + 0.5 * (q * (1 - u)).sum(1))).sum()

def rebound_between(p, t):
    a = p * t
    p = p + 1
    b = p * t
    return a.sum() + b.sum()

def written_between(p, t):
    a = p * t
    p.mul_(2)
    b = p * t
    return a.sum() + b.sum()

def random_value(p):
    a = torch.rand_like(p) * p
    b = torch.rand_like(p) * p
    return a.sum() + b.sum()

def escapes_into_tuple(p, t):
    a = p * t
    b = p * t
    out = (a, b)
    out[0].add_(1)
    return out[1].sum()

def augmented(p, t):
    a = p * t
    b = p * t
    a += 1
    return a.sum() + b.sum()

def view_escapes(p, t):
    a = p * t
    b = p * t
    v = a.reshape(-1)
    v.add_(1)
    return a.sum() + b.sum()

def walrus_alias(p, t):
    a = p * t
    b = p * t
    w = (v := a).sum()
    v.add_(1)
    return a.sum() + b.sum() + w

def constants(p):
    s = 0.0
    r = 0.0
    return p.sum() + s + r

def in_branches(p, t):
    if p.sum() > 0:
        a = p * t
    else:
        a = p
    b = p * t
    return a.sum() + b.sum()
'''

UNCHANGED = ["rebound_between", "written_between", "random_value", "escapes_into_tuple", "augmented",
             "view_escapes", "walrus_alias", "constants", "in_branches"]


def _source(fn_name: str) -> ast.Module:
    module = ast.parse(SOURCE)
    return ast.Module([f for f in module.body if getattr(f, "name", None) == fn_name], [])


def _run_pass(tree: ast.Module) -> str:
    ctx = PassContext("user.py", "f", Namer.for_tree(tree), Report("f", "user.py", 1),
                      torch_name="torch", **FRONTEND)
    return unparse(share_common_subexpressions.transform(tree, ctx))


def test_golden_shared_through_copies():
    out = _run_pass(_source("two_helpers"))
    before = unparse(_source("two_helpers"))
    assert out == before.replace("b = q * u", "b = a").replace(
        "tp = b.sum(1) if b.dim() > 1 else b.reshape(len(b), -1).sum(1)", "tp = inter"), out
    assert "(q * (1 - u)).sum(1)" in out  # another value: kept


@pytest.mark.parametrize("name", UNCHANGED)
def test_golden_unchanged(name):
    assert _run_pass(_source(name)) == unparse(_source(name))


@pytest.mark.parametrize("name", ["two_helpers", *UNCHANGED])
def test_second_run_changes_nothing(name):
    once = _run_pass(_source(name))
    assert _run_pass(ast.parse(once)) == once


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("cse"), SOURCE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_equivalent(user, dtype):
    fast = optimize_loss(user.two_helpers, compile=False)
    assert "b = a" in fast.report.rewritten_source and "tp = inter" in fast.report.rewritten_source
    gen = torch.Generator().manual_seed(0)
    for shape in [(4, 3, 5), (4, 3)]:
        probs = torch.rand(shape, generator=gen, dtype=dtype).requires_grad_()
        onehot = (torch.rand(shape, generator=gen, dtype=dtype) > 0.5).to(dtype).requires_grad_()
        assert_equivalent(user.two_helpers, fast, probs, onehot)
    nan = torch.tensor([[0.5, float("nan")], [float("inf"), 0.0]], dtype=dtype, requires_grad=True)
    assert_equivalent(user.two_helpers, fast, nan, torch.ones(2, 2, dtype=dtype))
