"""optimize_called_helpers: helpers with loops are rewritten too, the loss calls the rewritten one."""
from __future__ import annotations

import ast

import pytest
import torch

from passes import optimize_called_helpers
from passes.ast_tools import Namer, PassContext, unparse
from rewrite import Report, assert_equivalent, optimize_loss
from rewrite.frontend import parse_function
from tests.helpers import FRONTEND, load_module

SOURCE = '''
import torch

def dice(p, t):
    inter = 0
    for i in range(p.shape[0]):
        inter += (p[i] * t[i]).sum()
    return 1 - 2 * inter / (p.sum() + t.sum())

def plain(p, t):
    return (p - t).abs().mean()

def loss(pred, target):
    return dice(pred, target) + plain(pred, target)

def shadowing(pred, target, dice=plain):
    return dice(pred, target)

def class_loop(pred, target):
    total = 0
    for c in range(pred.shape[1]):
        total += dice(pred[:, c], target[:, c])
    return total

def recursive(x, n):
    return recursive(x * 2, n - 1) if n > 0 else dice(x, x)
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("helpers"), SOURCE)


def _run_pass(fn):
    parsed = parse_function(fn)
    ctx = PassContext(parsed.filename, fn.__name__, Namer.for_tree(parsed.tree, set(fn.__globals__)),
                      Report(fn.__name__, parsed.filename, parsed.lineno), fn.__globals__,
                      rewriting=frozenset({fn}), **FRONTEND)
    tree = optimize_called_helpers.transform(parsed.tree, ctx)
    return unparse(tree), ctx


def _golden(source: str) -> str:
    return ast.unparse(ast.parse(source))


def test_golden_call_redirected_to_rewritten_helper(user):
    out, ctx = _run_pass(user.loss)
    assert out == _golden("def loss(pred, target):\n    return _dice(pred, target) + plain(pred, target)")
    assert set(ctx.bindings) == {"_dice"}
    assert [(l.lineno, l.vectorized) for l in ctx.report.loops] == [(6, True)]  # the helper's loop


@pytest.mark.parametrize("name", ["plain", "shadowing"])
def test_golden_unchanged(user, name):
    fn = getattr(user, name)
    out, ctx = _run_pass(fn)
    assert out == _golden(parse_function(fn).source) and not ctx.bindings


def test_recursion_is_not_followed(user):
    out, ctx = _run_pass(user.recursive)
    assert "recursive(x * 2" in out and "_dice(x, x)" in out


def test_second_run_changes_nothing(user):
    parsed = parse_function(user.loss)
    ctx = PassContext(parsed.filename, "loss", Namer.for_tree(parsed.tree), Report("loss", "f", 1),
                      user.loss.__globals__, **FRONTEND)
    once = unparse(optimize_called_helpers.transform(parsed.tree, ctx))
    twice = unparse(optimize_called_helpers.transform(ast.parse(once), ctx))
    assert once == twice


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["loss", "class_loop", "recursive"])
def test_equivalent(user, name, dtype):
    fn = getattr(user, name)
    fast = optimize_loss(fn, compile=False)
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        pred = torch.rand(6, 4, generator=gen, dtype=dtype, requires_grad=True)
        args = (pred, 2) if name == "recursive" else (pred, torch.rand(6, 4, generator=gen, dtype=dtype))
        assert_equivalent(fn, fast, *args)
    assert any(l.lineno == 6 and l.vectorized for l in fast.report.loops)
    assert "optimize_called_helpers" in fast.report.passes_run
