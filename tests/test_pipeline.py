"""The pass manager: checker, ordering, failure messages, debug dumps, report."""
from __future__ import annotations

import ast

import pytest
import torch

import passes.pipeline
from passes.ast_tools import Namer, PassContext
from rewrite import Report, RewriteError, assert_equivalent, optimize_loss
from tests.helpers import FRONTEND, AppendPass, Explode, Identity, ast_pass, load_module


def _ctx(tree, filename="user.py"):
    return PassContext(filename, "loss", Namer.for_tree(tree), Report("loss", filename, 1), **FRONTEND)


@pytest.mark.parametrize("source, reason", [
    ("def f(x):\n    global g\n    return x", "`global` statement"),
    ("def f(x):\n    y = 1\n    def g():\n        nonlocal y\n    return x", None),
    ("def f(x):\n    return locals()", "calls `locals()`"),
    ("def f(x):\n    return eval('x')", "calls `eval()`"),
    ("def f(x):\n    def g():\n        yield 1\n    return x", None),  # nested generator is fine
    ("def f(x):\n    return [v for v in x]", None),
])
def test_checker(source, reason):
    tree = ast.parse(source)
    if reason is None:
        passes.pipeline.CHECKER.check(tree, _ctx(tree))
        return
    with pytest.raises(Exception) as info:
        passes.pipeline.run_ast_pipeline(tree, _ctx(tree))
    assert isinstance(info.value, RewriteError) and reason in str(info.value)
    assert info.value.pass_name == "check_supported" and info.value.lineno == 2


def test_passes_run_in_order_and_failures_name_the_done_ones(monkeypatch):
    monkeypatch.setattr(passes.pipeline, "AST_PIPELINE", [
        ast_pass("first", Identity), ast_pass("second", AppendPass), ast_pass("third", Explode)])
    tree = ast.parse("def f(x):\n    return x\n")
    ctx = _ctx(tree)
    with pytest.raises(RewriteError, match=r"pass third failed after \[first, second\]") as info:
        passes.pipeline.run_ast_pipeline(tree, ctx)
    assert isinstance(info.value.__cause__, ValueError)
    assert ctx.report.passes_run == ["first", "second"]


def test_debug_dir_dumps_source_after_every_pass(monkeypatch, tmp_path):
    monkeypatch.setattr(passes.pipeline, "AST_PIPELINE",
                        [ast_pass("identity", Identity), ast_pass("append_pass", AppendPass)])
    module = load_module(tmp_path, "def loss(pred, target):\n    return (pred * target).sum()\n")
    out = tmp_path / "dumps"
    fn = optimize_loss(module.loss, compile=False, debug_dir=str(out))
    pred, target = torch.randn(3, requires_grad=True), torch.randn(3)
    assert_equivalent(module.loss, fn, pred, target)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["00_parsed.py", "01_identity.py", "02_append_pass.py"]
    last = (out / "02_append_pass.py").read_text()
    assert "def loss(pred, target):" in last and last.rstrip().endswith("pass")
    compile(last, "dump", "exec")  # readable, valid Python


def test_debug_dir_dumps_the_helpers_code_too(tmp_path):
    """A helper the loss calls is rewritten by the same pipeline: its code after every pass is
    dumped too, each step named after the helper."""
    module = load_module(tmp_path, (
        "import torch\n"
        "def per_row(p, t):\n    total = 0\n    for i in range(p.shape[0]):\n"
        "        total = total + ((p[i] - t[i]) ** 2).sum()\n    return total\n"
        "def loss(pred, target):\n    return per_row(pred, target) / pred.shape[0]\n"))
    out = tmp_path / "dumps"
    fn = optimize_loss(module.loss, compile=False, debug_dir=str(out))
    assert_equivalent(module.loss, fn, torch.randn(4, 3, requires_grad=True), torch.randn(4, 3))
    helper = sorted(p.name for p in out.iterdir() if "_per_row." in p.name)
    assert helper and any(n.endswith("per_row.vectorize_loops.py") for n in helper), helper
    last = (out / helper[-1]).read_text()
    assert "def per_row(p, t):" in last and "vectorized" in last


def test_report_lists_passes_and_rewritten_source(monkeypatch, tmp_path):
    monkeypatch.setattr(passes.pipeline, "AST_PIPELINE", [ast_pass("append_pass", AppendPass)])
    module = load_module(tmp_path, "\ndef loss(pred, target):\n    return (pred * target).sum()\n")
    fn = optimize_loss(module.loss, compile=False)
    report = fn.report
    assert report.passes_run == ["append_pass"]
    assert report.lineno == 2 and report.filename == module.__file__
    assert report.rewritten_source.endswith("pass")
    assert "return (pred * target).sum()" in report.original_source
    text = str(report)
    assert f"{module.__file__}:2" in text and "append_pass" in text


def test_unchanged_function_with_compile_off_runs_the_original(monkeypatch, tmp_path):
    monkeypatch.setattr(passes.pipeline, "AST_PIPELINE", [ast_pass("identity", Identity)])
    module = load_module(tmp_path, "def loss(pred, target):\n    return (pred * target).sum()\n")
    fn = optimize_loss(module.loss, compile=False)
    pred, target = torch.randn(3), torch.randn(3)
    fn(pred, target)
    assert list(fn._impls.values()) == [module.loss]  # no rebuilt function, no extra cost
