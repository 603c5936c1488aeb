"""Test helpers shared by the foundation tests: write user code to real files, inject passes."""
from __future__ import annotations

import ast
import importlib
import importlib.util
import itertools
import os
import pkgutil
import sys
import textwrap
import types
import warnings
from pathlib import Path
from typing import Any

import examples
import examples.real
from rewrite import frontend

# What the frontend puts in every PassContext; a test that builds a context by hand passes these.
FRONTEND = {"parse_function": frontend.parse_function, "rewrite_function": frontend.rewrite_function}

_counter = itertools.count()


def _discover(package: types.ModuleType, prefix: str = "") -> list[str]:
    return sorted(prefix + m.name for m in pkgutil.iter_modules(package.__path__)
                  if not m.ispkg and not m.name.startswith("_")
                  and m.name not in ("demo", "loop_classes"))


# Example modules, as names under ``examples.``: the seed suite, and the real-code corpus
# (losses paraphrased from public repositories, "real.<module>").
EXAMPLE_NAMES = _discover(examples)
REAL_EXAMPLE_NAMES = _discover(examples.real, "real.")


def load_module(directory: Path, source: str) -> types.ModuleType:
    """Import ``source`` from a real file, as user code is (so inspect.getsource works)."""
    name = f"user_code_{next(_counter)}"
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_called_helpers_pass(fn):
    """``optimize_called_helpers`` on ``fn`` alone: (its source after the pass, the context)."""
    from passes import optimize_called_helpers
    from passes.ast_tools import Namer, PassContext, unparse
    from rewrite import Report
    parsed = frontend.parse_function(fn)
    ctx = PassContext(parsed.filename, fn.__qualname__,
                      Namer.for_tree(parsed.tree, set(fn.__globals__)),
                      Report(fn.__qualname__, parsed.filename, parsed.lineno), fn.__globals__,
                      rewriting=frozenset({fn}), **FRONTEND)
    return unparse(optimize_called_helpers.transform(parsed.tree, ctx)), ctx


def equivalent_report(fn, *args):
    """``optimize_loss(fn, compile=False)`` checked equivalent to ``fn`` on ``args`` (value,
    every gradient, dtype); its report, with the run-time counts of that call."""
    from rewrite import assert_equivalent, optimize_loss
    optimized = optimize_loss(fn, compile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_equivalent(fn, optimized, *args)
    return optimized.report


def run_on_small(name: str) -> tuple[types.ModuleType, Any]:
    """The corpus module ``examples.<name>`` and its ``naive`` optimized (``compile=False``),
    called once on its small inputs (warnings silenced): its report holds the run's counts."""
    from rewrite import optimize_loss
    module = importlib.import_module(f"examples.{name}")
    fn = optimize_loss(module.naive, compile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn(*module.make_inputs("small"))
    return module, fn


def ast_pass(name: str, transformer: type[ast.NodeTransformer]) -> types.SimpleNamespace:
    """A pipeline entry named ``name`` that runs ``transformer`` once."""
    return types.SimpleNamespace(__name__=f"passes.{name}",
                                 transform=lambda tree, ctx: transformer().visit(tree))


class FlipAddToSub(ast.NodeTransformer):
    """A deliberately wrong rewrite: a + b becomes a - b."""

    def visit_BinOp(self, node: ast.BinOp) -> ast.BinOp:
        self.generic_visit(node)
        if isinstance(node.op, ast.Add):
            node.op = ast.Sub()
        return node


class Identity(ast.NodeTransformer):
    pass


class Explode(ast.NodeTransformer):
    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        raise ValueError("boom")


class AppendPass(ast.NodeTransformer):
    """A harmless rewrite (adds a trailing `pass`), so the rebuilt function is the one that runs."""

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        node.body.append(ast.Pass())
        return node


def golden_text(path: Path, text: str) -> str:
    """The golden file's text at ``path``, written from ``text`` first when OL_UPDATE_GOLDEN is
    set (``assert code == golden_text(path, code)`` shows the diff)."""
    if os.environ.get("OL_UPDATE_GOLDEN"):
        path.write_text(text)
    return path.read_text()


def optimized_and_vectorized(fn, *inputs):
    """``fn`` optimized (``strict``: a failing vectorized form raises), with the same value,
    every gradient and dtype as ``fn`` on ``inputs``, each of its loops having run vectorized."""
    from rewrite import optimize_loss
    from rewrite.testing import assert_equivalent, outputs_and_gradients
    opt = optimize_loss(fn, compile=False, strict=True)
    assert_equivalent(fn, opt, *inputs)
    want, _ = outputs_and_gradients(fn, inputs, {})
    got, _ = outputs_and_gradients(opt, inputs, {})
    assert [v.dtype for v in got] == [v.dtype for v in want]
    assert all(loop.vectorized_runs and not loop.failed_runs for loop in opt.report.loops)
    return opt
