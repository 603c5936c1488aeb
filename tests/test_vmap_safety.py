"""Generated code runs as the report claims: nested loops read the rows of the right loop, and
every loop reported vectorized runs vectorized."""
from __future__ import annotations

import ast
import importlib
import inspect

import pytest
import torch

from passes.errors import RewriteError, Unsupported
from passes.report import Report
from rewrite import assert_equivalent, optimize_loss
from rewrite.frontend import rewrite_function
from tests.helpers import EXAMPLE_NAMES, REAL_EXAMPLE_NAMES, load_module, run_on_small

NESTED = '''
import torch

def twice_indexed(x, n, m):
    total = 0
    for j in range(n):
        for i in range(m):
            total = total + x[j, i, j] * x[j, i].sum()
    return total
'''


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_an_outer_index_after_the_inner_one_reads_per_item_rows(tmp_path, dtype):
    # x[j, i, j] depends on i: the inner body reads it from its own row, never a per-j row
    user = load_module(tmp_path, NESTED)
    fn = optimize_loss(user.twice_indexed, compile=False)
    x = torch.randn(3, 4, 3, dtype=dtype, generator=torch.Generator().manual_seed(0),
                    requires_grad=True)
    assert_equivalent(user.twice_indexed, fn, x, 3, 4)
    assert "_row_row" not in fn.report.rewritten_source
    outer = min(fn.report.loops, key=lambda loop: loop.lineno)
    assert (outer.vectorized, outer.vectorized_runs, outer.failed_runs) == (True, 1, 0)


HINGE = '''
import torch

def multiclass_hinge(scores, target, margin=1.0):
    loss = 0
    for i in range(scores.shape[0]):
        c = target[i]
        margins = torch.clamp(scores[i] - scores[i, c] + margin, min=0)
        margins[c] = 0
        loss = loss + margins.sum()
    return loss / scores.shape[0]

def inplace_on_new_tensors(x, eps):
    loss = 0
    for i in range(x.shape[0]):
        t = x[i] * 2
        t.clamp_(min=0)
        t += (x[i].exp().sum() + eps).log_()
        t[0] -= 1
        loss = loss + t.sum()
    return loss
'''


def _functions(module):
    """Every function a module defines, methods of its classes included."""
    for value in vars(module).values():
        if inspect.isclass(value) and value.__module__ == module.__name__:
            yield from (f for f in vars(value).values() if inspect.isfunction(f))
        elif inspect.isfunction(value) and value.__module__ == module.__name__:
            yield value


def _inplace_writes_in_vmapped_bodies(source: str) -> list[str]:
    """The in-place writes inside functions handed to ``torch.vmap`` (``map_in_chunks``: their
    nested ones too)."""
    tree = ast.parse(source)
    mapped = {c.args[0].id for c in ast.walk(tree) if isinstance(c, ast.Call)
              and ast.unparse(c.func) in ("torch.vmap", "_map_in_chunks") and isinstance(c.args[0], ast.Name)}
    found = []
    for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name in mapped):
        for n in ast.walk(fn):
            targets = n.targets if isinstance(n, ast.Assign) else [getattr(n, "target", None)]
            if isinstance(n, ast.AugAssign) or any(isinstance(t, ast.Subscript) for t in targets) \
                    or isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) \
                    and n.func.attr.endswith("_") and not n.func.attr.startswith("__"):
                found.append(f"{fn.name}: {ast.unparse(n)}")
    return found


def _rewritten(fn) -> str:
    report = Report(fn.__qualname__, "", 0)
    try:
        rewrite_function(fn, report)
    except (Unsupported, RewriteError):
        return ""
    return report.rewritten_source


@pytest.mark.parametrize("name", EXAMPLE_NAMES + REAL_EXAMPLE_NAMES)
def test_no_vmapped_body_of_an_example_writes_in_place(name):
    module = importlib.import_module(f"examples.{name}")
    for fn in _functions(module):
        assert _inplace_writes_in_vmapped_bodies(_rewritten(fn)) == [], fn.__qualname__


def test_in_place_writes_on_new_tensors_become_functional(tmp_path):
    user = load_module(tmp_path, HINGE)
    for fn in (user.multiclass_hinge, user.inplace_on_new_tensors):
        source = _rewritten(fn)
        assert "_map_in_chunks(" in source and _inplace_writes_in_vmapped_bodies(source) == []
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert_equivalent(user.inplace_on_new_tensors,
                      optimize_loss(user.inplace_on_new_tensors, compile=False), x, 1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_multiclass_hinge_under_inductor(tmp_path, dtype):
    # Inductor miscompiled the in-place `margins[c] = 0` of the vmapped body (gradients off)
    user = load_module(tmp_path, HINGE)
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(8, 5, generator=gen, dtype=dtype, requires_grad=True)
    target = torch.randint(0, 5, (8,), generator=gen)
    eager = optimize_loss(user.multiclass_hinge, compile=False)
    assert_equivalent(user.multiclass_hinge, eager, scores, target)
    assert_equivalent(eager, optimize_loss(user.multiclass_hinge, verify_compiled=False),
                      scores, target)


# Examples with a loop reported vectorized that does not run vectorized on their inputs, and why.
NOT_YET = {
    "multi_head_list": "heads of different shapes: the list is not stacked, the loop runs as written",
    "real.kd_similarity_preserving": "feature maps of different shapes: the returned list's "
                                     "comprehension is not stacked, it runs as written (the report "
                                     "says which items differ); no rewrite-time fact tells",
    "real.rl_ppo_mc_returns": "its rewards are a list of Python floats, scanned in float64 from "
                              "1024 steps (a shorter scan is slower than the loop): the small "
                              "inputs' 16 steps run as written",
}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=NOT_YET[n])) if n in NOT_YET
    else n for n in EXAMPLE_NAMES + REAL_EXAMPLE_NAMES])
def test_every_loop_reported_vectorized_runs_vectorized(name):
    module, fn = run_on_small(name)
    assert fn.report.fallbacks == []  # a vectorized branch that raised falls back
    lines, start = inspect.getsourcelines(module.naive)
    for loop in (loop for loop in fn.report.loops if loop.vectorized):
        assert loop.failed_runs == 0, str(loop)
        if not (loop.vectorized_runs or loop.original_runs) and not (
                start <= loop.lineno < start + len(lines)):
            continue  # a loop of a helper the call did not reach
        assert fn.report.ran_vectorized(loop), str(loop)  # by itself or in its outer loop



@pytest.mark.parametrize("name", sorted(NOT_YET))
def test_report_says_which_loops_ran_as_written(name):
    # a loop reported vectorized that ran as written (or raised) says so after a call, with the
    # reason: the check that was false, or the error
    module, fn = run_on_small(name)
    shown = str(fn.report)
    not_run = [loop for loop in fn.report.loops if loop.vectorized and not loop.vectorized_runs]
    assert not_run or any(loop.failed_runs for loop in fn.report.loops)
    for loop in fn.report.loops:
        if loop.vectorized and (loop.original_runs or loop.failed_runs):
            line = next(l for l in shown.splitlines() if f":{loop.lineno}: loop vectorized" in l)
            assert "[ran: vectorized" in line and "; last: " in line, line


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_ge2e_contrast_runs_the_loop_slicing_at_an_outer_index_vectorized(dtype):
    # `torch.cat((cs[:j], cs[j + 1:]))` at the outer loop's index: masks in the inner loop, so
    # the outer loop maps over it too (its inner empty-max checks raise after the outer loop)
    from examples.real.spk_ge2e_contrast import GE2ELoss
    dvecs, w, b = importlib.import_module("examples.real.spk_ge2e_contrast").make_inputs(
        "small", dtype)
    module = GE2ELoss(w, b)
    cos = module.calc_cosine_sim(dvecs, dvecs.mean(1)) * w + b
    fn = optimize_loss(GE2ELoss.embed_loss_contrast, compile=False)
    assert_equivalent(GE2ELoss.embed_loss_contrast, fn, module, dvecs, cos)
    outer, inner = sorted(fn.report.loops, key=lambda loop: loop.lineno)
    assert outer.vectorized and outer.vectorized_runs and not outer.original_runs, outer
    assert inner.vectorized and not inner.failed_runs and fn.report.fallbacks == []


TIES = '''
import torch

def hardest(x):
    loss = 0
    for i in range(x.shape[0]):
        loss = loss + torch.max(torch.cat((x[i, :1], x[i, 1:]))) - x[i].min()
    return loss
'''


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_ties_of_a_full_max_or_min_share_the_gradient_under_vmap(tmp_path, dtype):
    user = load_module(tmp_path, TIES)
    fn = optimize_loss(user.hardest, compile=False)
    x = torch.tensor([[1., 3., 3., 2.], [5., 5., 0., 0.]], dtype=dtype, requires_grad=True)
    assert_equivalent(user.hardest, fn, x)
    assert [loop.strategy for loop in fn.report.loops] == ["vmap"]


MASK = '''
import torch

def positives(dist, labels):
    mask = labels[:, None] == labels[None, :]
    out = []
    for i in range(dist.shape[0]):
        out.append(dist[i][mask[i]].clamp(min=1e-12))
    return torch.cat(out).mean()
'''


def test_a_boolean_mask_made_before_the_loop_selects_as_a_mask(tmp_path):
    # its rows select (appended stand-ins, each item taken by its row), never index
    user = load_module(tmp_path, MASK)
    fn = optimize_loss(user.positives, compile=False, keep_faster=False)
    [loop] = fn.report.loops
    assert loop.vectorized, loop.reason
    assert_equivalent(user.positives, fn, torch.rand(4, 4, requires_grad=True),
                      torch.tensor([0, 1, 0, 1]))
    assert loop.vectorized_runs > 0 and loop.original_runs == 0, loop
