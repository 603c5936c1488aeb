"""Checks of the rule tables and the passes that read them which the mutation score
(tests/mutation_score.py) found missing: each test kills mutants that every other fast test let
survive."""
from __future__ import annotations

import ast
import operator

import pytest
import torch.fx

import rewrite

from passes import op_facts
from rewrite.testing import differences
from tests.helpers import load_module
from tests.test_fuse_loss_idioms import _run_pass


def _call(target, *args, **kwargs) -> torch.fx.Node:
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    return graph.call_function(target, (x, *args), kwargs)


def test_is_mutating_sees_writes_by_operator_by_name_and_by_keyword():
    assert op_facts.is_mutating(_call(operator.setitem, 0, 1.0))
    assert op_facts.is_mutating(_call(torch.relu_))
    assert op_facts.is_mutating(_call(torch.nn.functional.relu, inplace=True))
    assert not op_facts.is_mutating(_call(operator.getitem, 0))
    # `a & b` is traced as operator.and_: a trailing `_` there is Python's keyword rule
    assert not op_facts.is_mutating(_call(operator.and_, 1))
    assert not op_facts.is_mutating(_call(operator.or_, 1))
    assert op_facts.is_mutating(_call(operator.iand, 1))
    assert not op_facts.is_mutating(_call(torch.nn.functional.relu, inplace=False))


def test_a_temporary_is_not_trusted_next_to_an_in_place_torch_function():
    """``torch.relu_(b)`` changes an operand after the temporary was computed: the guard would
    re-read another ``b``, so the idiom stays as written."""
    source = "def f(a, b):\n    t = (a - b) ** 2\n    return t.mean() + torch.relu_(b).sum()\n"
    assert _run_pass(ast.parse(source)) == ast.unparse(ast.parse(source))


@pytest.mark.parametrize("operand, fused", [
    ("a[1:3]", True), ("a[0, 1:]", True), ("a.detach()", True), ("a[len(b):]", True),
    ("a[torch.randint(2, ()):]", False), ("g(a)", False), ("a.long(1)", False)])
def test_operands_the_guard_may_evaluate_again(operand, fused):
    """The fused form's guard evaluates the operands a second time: only indexing, slices,
    builtins and ``.long()``/``.detach()`` of names are trusted to give the same value."""
    source = f"def f(a, b, g):\n    return (({operand} - b) ** 2).mean()\n"
    assert ("mse_loss" in _run_pass(ast.parse(source))) is fused


LOOPS = {
    "chained_comparison": """
def f(x):
    s = 0
    for i in range(x.shape[0]):
        if 0.0 < x[i].sum() < 1.0:
            s = s + x[i].exp().sum()
    return s
""",
    "list_read_by_enumerate": """
def f(x):
    lst = []
    for i in range(x.shape[0]):
        lst.append(x[i] * 2)
    total = 0
    for k, v in enumerate(lst):
        total = total + k * v.sum()
    return total
""",
}


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_loops_vectorize_with_the_same_result(tmp_path, name):
    original = load_module(tmp_path, "import torch\n" + LOOPS[name]).f
    fast = rewrite.optimize_loss(original, compile=False, strict=True)
    x = torch.tensor([[0.1, 0.2], [0.5, 0.7], [-0.3, 0.1], [0.4, 0.4]], dtype=torch.float64,
                     requires_grad=True)
    assert not differences(original, fast, (x,), {})
    assert fast.report.loops[0].vectorized, fast.report.loops[0]


@pytest.mark.parametrize("read", ["max(lst)", "min(lst)", "len(lst)"])
def test_a_list_read_whole_after_its_loop_is_bound_to_the_stacked_items(tmp_path, read):
    """``max``/``min``/``len`` of the list answer the same on the stacked tensor: the list name is
    bound to it, no list of its rows is made."""
    source = f"""
def f(x):
    lst = []
    for i in range(x.shape[0]):
        lst.append(x[i].sum() * 2)
    return {read}
"""
    original = load_module(tmp_path, "import torch\n" + source).f
    fast = rewrite.optimize_loss(original, compile=False, strict=True)
    x = torch.tensor([[0.1, 0.2], [0.5, 0.7], [-0.3, 0.1]], dtype=torch.float64, requires_grad=True)
    assert not differences(original, fast, (x,), {})
    assert "unbind" not in fast.report.rewritten_source


WHOLE_READS = {  # a list read only whole: by a reader of every item, or iterated by zip/enumerate
    "stack": "xs = [torch.sqrt(x[i]) * 2 for i in range(x.shape[0])]\n    return torch.stack(xs).sum()",
    "cat": "xs = [torch.sqrt(x[i]) * 2 for i in range(x.shape[0])]\n    return torch.cat(xs).sum()",
    "tensor": "xs = [torch.sqrt(x[i]).sum() * 2 for i in range(x.shape[0])]\n    return torch.tensor(xs)",
    "sum": "xs = [torch.sqrt(x[i]).sum() * 2 for i in range(x.shape[0])]\n    return sum(xs)",
    "len": "xs = [torch.sqrt(x[i]) * 2 for i in range(x.shape[0])]\n"
           "    return len(xs) * torch.cat(xs).sum()",
    "enumerate": "lst = []\n    for i in range(x.shape[0]):\n        lst.append(x[i] * 2)\n"
                 "    total = 0\n    for k, v in enumerate(lst):\n        total = total + k * v.sum()\n"
                 "    return total",
    "zip": "lst = []\n    for i in range(x.shape[0]):\n        lst.append(x[i] * 2)\n"
           "    total = 0\n    for v, w in zip(lst, x):\n        total = total + (v * w).sum()\n"
           "    return total",
}


@pytest.mark.parametrize("name", sorted(WHOLE_READS))
def test_a_list_read_whole_is_the_stacked_items(tmp_path, name):
    """The comprehension or appending loop vectorizes although its items may have a NaN/inf
    derivative (every item is read), and the name is bound to the stacked tensor, not to a list
    of its rows."""
    original = load_module(tmp_path, f"import torch\ndef f(x):\n    {WHOLE_READS[name]}\n").f
    fast = rewrite.optimize_loss(original, compile=False, strict=True)
    x = torch.tensor([[0.1, 0.2], [0.5, 0.7], [0.3, 0.1]], dtype=torch.float64, requires_grad=True)
    assert not differences(original, fast, (x,), {})
    assert all(loop.vectorized for loop in fast.report.loops), fast.report.loops
    assert "unbind" not in fast.report.rewritten_source
