"""Shared by the loop-pass tests: run ``vectorize_loops`` on a source snippet and build both
functions (original and rewritten) in the same namespace."""
from __future__ import annotations

import ast
import itertools
import math
import textwrap
from typing import Callable

import numpy
import torch
import torch.nn.functional as F

from passes.loops import vectorize_loops
from passes.ast_tools import Namer, PassContext, unparse
from passes.report import Report
from tests.helpers import FRONTEND


def dedent(src: str) -> str:
    """Snippet source with the ``def`` on line 1 (test sources start with a newline)."""
    return textwrap.dedent(src).strip("\n") + "\n"


def namespace(**extra) -> dict:
    return {"torch": torch, "F": F, "math": math, "itertools": itertools, "np": numpy, **extra}


def context(tree: ast.Module, ns: dict) -> PassContext:
    return PassContext("<test>", tree.body[0].name, Namer.for_tree(tree, set(ns)),
                       Report(tree.body[0].name, "<test>", 1), ns, **FRONTEND)


def rewrite_source(src: str, ns: dict | None = None) -> tuple[str, Report]:
    """The rewritten source (normalised by ast.unparse) and the pass's report."""
    code, ctx = _rewrite(src, namespace() if ns is None else ns)
    return code, ctx.report


def _rewrite(src: str, ns: dict) -> tuple[str, PassContext]:
    tree = ast.parse(dedent(src))
    ctx = context(tree, ns)
    tree = vectorize_loops.transform(tree, ctx)
    return unparse(tree), ctx


def normalise(src: str) -> str:
    return ast.unparse(ast.parse(dedent(src)))


def build(src: str, ns: dict | None = None) -> tuple[Callable, Callable, str, Report]:
    """(original function, rewritten function, rewritten source, report)."""
    ns = namespace() if ns is None else ns
    code, ctx = _rewrite(src, ns)
    report = ctx.report
    name = ast.parse(dedent(src)).body[0].name
    before, after = dict(ns), {**ns, **ctx.bindings}  # the objects generated code names
    exec(compile(dedent(src), "<original>", "exec"), before)
    exec(compile(code, "<rewritten>", "exec"), after)
    return before[name], after[name], code, report


def strategies(report: Report) -> dict[int, str]:
    return {loop.lineno: loop.strategy for loop in report.loops}


def same_python_types(a, b) -> bool:
    """Python numbers stay Python numbers of the same type; tensors stay tensors."""
    if isinstance(a, tuple):
        return isinstance(b, tuple) and all(same_python_types(x, y) for x, y in zip(a, b))
    return type(a) is type(b) or (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor))


def finite_grads(fn: Callable, *inputs) -> bool:
    """Gradients of ``fn`` w.r.t. its float inputs are all finite."""
    leaves = [x.detach().clone().requires_grad_() if isinstance(x, torch.Tensor)
              and x.is_floating_point() else x for x in inputs]
    out = fn(*leaves)
    if not out.requires_grad:
        return True
    wrt = [x for x in leaves if isinstance(x, torch.Tensor) and x.requires_grad]
    grads = torch.autograd.grad(out.sum(), wrt, allow_unused=True)
    return all(g is None or bool(torch.isfinite(g).all()) for g in grads)



def assert_golden(src: str, golden: str, expected: dict[int, str]) -> None:
    """``src`` rewrites to ``golden`` with the loop strategies ``expected``, and a second run
    over the rewritten code changes nothing."""
    code, report = rewrite_source(src)
    assert code == normalise(golden)
    assert strategies(report) == expected
    assert rewrite_source(code)[0] == code
