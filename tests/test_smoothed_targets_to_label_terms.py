"""smoothed_targets_to_label_terms: a smoothed one-hot target filled, written at each row's label
and read once in a row sum with log-probabilities becomes the sum's two terms, behind a guard;
same values (within rounding), gradients and dtype, NaN/inf rows alike."""
from __future__ import annotations

import ast
import functools

import pytest
import torch

from passes import smoothed_targets_to_label_terms
from passes.ast_tools import Namer, PassContext, unparse
from rewrite import Report, assert_equivalent, optimize_loss
from tests.helpers import FRONTEND, load_module

SOURCE = '''
import torch
import torch.nn.functional as F

def rows(logits, target, eps=0.1):
    n, c = logits.shape
    smooth = torch.full((n, c), eps / (c - 1), dtype=logits.dtype)
    for i in range(n):
        smooth[i, int(target[i])] = 1 - eps
    return (-smooth * F.log_softmax(logits, dim=1)).sum(dim=1).mean()

def vectorized_write(lp, y, lo, hi):
    n, c = lp.shape
    t = torch.full((n, c), lo, dtype=lp.dtype, device=lp.device)
    t[torch.arange(n), y] = hi
    loss = -(t * lp).sum(-1)
    return loss.sum()

def item_labels(x, y):
    n, c = x.shape
    t = torch.full((n, c), 0.05, dtype=x.dtype)
    for i in range(n):
        t[i, y[i].item()] = 0.8
    return (x.log_softmax(dim=1) * t).sum(1)

def target_returned(logits, target, eps=0.1):
    n, c = logits.shape
    smooth = torch.full((n, c), eps / (c - 1), dtype=logits.dtype)
    for i in range(n):
        smooth[i, int(target[i])] = 1 - eps
    return (-smooth * F.log_softmax(logits, dim=1)).sum(dim=1).mean(), smooth

def index_read_after(logits, target, eps=0.1):
    n, c = logits.shape
    smooth = torch.full((n, c), eps / (c - 1), dtype=logits.dtype)
    for i in range(n):
        smooth[i, int(target[i])] = 1 - eps
    return (-smooth * F.log_softmax(logits, dim=1)).sum(dim=1).mean() * i

def value_per_row(logits, target, eps=0.1):
    n, c = logits.shape
    smooth = torch.full((n, c), eps / (c - 1), dtype=logits.dtype)
    for i in range(n):
        smooth[i, int(target[i])] = 1 - eps * i
    return (-smooth * F.log_softmax(logits, dim=1)).sum(dim=1).mean()

def column_sum(logits, target, eps=0.1):
    n, c = logits.shape
    smooth = torch.full((n, c), eps / (c - 1), dtype=logits.dtype)
    for i in range(n):
        smooth[i, int(target[i])] = 1 - eps
    return (-smooth * F.log_softmax(logits, dim=1)).sum(dim=0).mean()

def statement_between(logits, target, eps=0.1):
    n, c = logits.shape
    smooth = torch.full((n, c), eps / (c - 1), dtype=logits.dtype)
    for i in range(n):
        smooth[i, int(target[i])] = 1 - eps
    target = target.flip(0)
    return (-smooth * F.log_softmax(logits, dim=1)).sum(dim=1).mean()

def use_calls_unknown(logits, target, eps=0.1):
    n, c = logits.shape
    smooth = torch.full((n, c), eps / (c - 1), dtype=logits.dtype)
    for i in range(n):
        smooth[i, int(target[i])] = 1 - eps
    return (-smooth * F.log_softmax(logits, dim=1)).sum(dim=1).mean() + print()
'''
REWRITTEN = ["rows", "vectorized_write", "item_labels"]
UNCHANGED = ["target_returned", "index_read_after", "value_per_row", "column_sum",
             "statement_between", "use_calls_unknown"]


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("smoothed"), SOURCE)


def _source(fn_name: str) -> ast.Module:
    module = ast.parse(SOURCE)
    return ast.Module([f for f in module.body if getattr(f, "name", None) == fn_name], [])


def _run_pass(tree: ast.Module) -> str:
    ctx = PassContext("user.py", "f", Namer.for_tree(tree), Report("f", "user.py", 1), **FRONTEND)
    return unparse(smoothed_targets_to_label_terms.transform(tree, ctx))


def _golden(source: str) -> str:
    return ast.unparse(ast.parse(source))


_LABELS = ("not torch.compiler.is_compiling() and isinstance(target, torch.Tensor) and target.dtype in (torch.int64, torch.int32)"
           " and target.dim() == 1 and isinstance(n, int) and isinstance(c, int)")
_LOG_PROBS = ("isinstance(logits, torch.Tensor) and logits.dim() == 2 and logits.shape[0] == n"
              " and logits.shape[1] == c and logits.dtype == logits.dtype"
              " and logits.dtype in (torch.float32, torch.float64)")
_VALUES = ("isinstance(eps / (c - 1), (int, float)) and isinstance(1 - eps, (int, float))"
           " and 0 < eps / (c - 1) < 1 - eps")
WRITTEN = """        smooth = torch.full((n, c), eps / (c - 1), dtype=logits.dtype)
        for i in range(n):
            smooth[i, int(target[i])] = 1 - eps
        return (-smooth * F.log_softmax(logits, dim=1)).sum(dim=1).mean()"""


def test_golden_rows():
    guard = (f"{_LABELS} and target.shape[0] >= n and {_LOG_PROBS}"
             f" and logits.device == torch.empty(0).device and {_VALUES} and F is torch.nn.functional")
    assert _run_pass(_source("rows")) == _golden(
        f"def rows(logits, target, eps=0.1):\n    n, c = logits.shape\n    if {guard}:\n"
        "        return (-_label_terms(F.log_softmax(logits, dim=1), _labels(target[:n], c),"
        " eps / (c - 1), 1 - eps)).mean()\n"
        f"    else:\n{WRITTEN}")


def test_golden_vectorized_write():
    guard = ("not torch.compiler.is_compiling() and isinstance(y, torch.Tensor) and y.dtype in (torch.int64, torch.int32) and y.dim() == 1"
             " and isinstance(n, int) and isinstance(c, int) and y.shape[0] == n"
             " and isinstance(lp, torch.Tensor) and lp.dim() == 2 and lp.shape[0] == n"
             " and lp.shape[1] == c and lp.dtype == lp.dtype and lp.dtype in (torch.float32, torch.float64)"
             " and lp.device == lp.device and isinstance(lo, (int, float)) and isinstance(hi, (int, float))"
             " and 0 < lo < hi")
    assert _run_pass(_source("vectorized_write")) == _golden(
        f"def vectorized_write(lp, y, lo, hi):\n    n, c = lp.shape\n    if {guard}:\n"
        "        loss = -_label_terms(lp, _labels(y, c), lo, hi)\n"
        "    else:\n        t = torch.full((n, c), lo, dtype=lp.dtype, device=lp.device)\n"
        "        t[torch.arange(n), y] = hi\n        loss = -(t * lp).sum(-1)\n"
        "    return loss.sum()")


@pytest.mark.parametrize("name", UNCHANGED)
def test_golden_unchanged(name):
    assert _run_pass(_source(name)) == _golden(unparse(_source(name)))


@pytest.mark.parametrize("name", REWRITTEN + UNCHANGED)
def test_second_run_changes_nothing(name):
    once = _run_pass(_source(name))
    assert _run_pass(ast.parse(once)) == once


@functools.cache
def _fast(user, name):
    fast = optimize_loss(getattr(user, name), compile=False, keep_faster=False)
    assert any("smoothed one-hot target" in note for note in fast.report.notes)
    return fast


INF, NAN = float("inf"), float("nan")


class _Calls(torch.overrides.TorchFunctionMode):
    """The torch functions a call made, by name."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def _ran_terms(fn, *args) -> bool:
    """``fn`` took the terms (a gather at the labels), not the target matrix (``torch.full``)."""
    with _Calls() as calls:
        fn(*args)
    return "gather" in calls.names and "full" not in calls.names


def _logits(dtype, n=6, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=dtype)
    x[1, 0] = INF      # a +inf logit (NaN log-probabilities in its row)
    x[2, 4] = -INF     # a -inf logit at the row's label (-inf log-probability there)
    x[3, 1] = -INF     # a -inf logit off the label
    x[4, 2] = NAN
    return x.requires_grad_()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", REWRITTEN)
def test_same_values_and_gradients(user, name, dtype):
    labels = torch.tensor([0, 4, 4, 2, 1, 3])  # labels at 0 and C - 1
    g = torch.Generator().manual_seed(1)
    finite = torch.randn(6, 5, generator=g, dtype=dtype).requires_grad_()
    for x in (finite, _logits(dtype)):
        args = {"rows": (x, labels), "item_labels": (x, labels),
                "vectorized_write": (torch.log_softmax(x.detach(), 1).requires_grad_(), labels, 0.02, 0.9)}[name]
        assert_equivalent(getattr(user, name), _fast(user, name), *args)
        assert _fast(user, name)(*args).dtype == dtype
        assert _ran_terms(_fast(user, name), *args)


@pytest.mark.parametrize("labels", [[-1, -5, 0, 4, 2, 3], [0, 1, 2, 3, 4, 0, 1, 2]])
def test_negative_and_extra_labels_read_as_written(user, labels):
    # negative labels wrap as the write's indexing does; labels past the n rows are not read
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    assert_equivalent(user.rows, _fast(user, "rows"), x, torch.tensor(labels))
    assert _ran_terms(_fast(user, "rows"), x, torch.tensor(labels))


@pytest.mark.parametrize("eps", [0.0, 0.8, 0.9])  # lo == 0, lo == hi, lo > hi: as written
def test_guard_keeps_the_target_where_terms_differ(user, eps):
    x = _logits(torch.float32)
    labels = torch.tensor([0, 4, 4, 2, 1, 3])
    assert_equivalent(user.rows, _fast(user, "rows"), x, labels, eps)
    assert not _ran_terms(_fast(user, "rows"), x, labels, eps)


def test_label_out_of_range_raises(user):
    with pytest.raises((IndexError, RuntimeError)):
        _fast(user, "rows")(torch.randn(2, 5), torch.tensor([0, 5]))


def test_compiled_runs_the_target_as_written(user):
    # under torch.compile the target is cached target-only work: the guard takes the else branch
    graphs = []

    def backend(gm, _):
        graphs.append(gm)
        return gm

    compiled = optimize_loss(user.rows, compile=True, backend=backend, keep_faster=False, hoist=False)
    x, labels = _logits(torch.float32), torch.tensor([0, 4, 4, 2, 1, 3])
    assert_equivalent(user.rows, compiled, x, labels)
    ops = {str(n.target) for gm in graphs for n in gm.graph.nodes}
    assert any("full" in op for op in ops) and not any("gather" in op for op in ops)
