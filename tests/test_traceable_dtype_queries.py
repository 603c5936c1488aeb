"""The dtype queries of vectorized code (``traceable_dtype_queries``): the bound helpers give
torch's answers, in eager and by the Python reference Dynamo traces, and the compiled rewrite
is one graph with the original's values, gradients and dtypes (float16/bfloat16 weak scalars,
NaN, inf, a zero divisor no iteration selects)."""
from __future__ import annotations

import ast
import importlib
import itertools

import pytest
import torch

from passes import traceable_dtype_queries
from passes.ast_tools import unparse
from passes.loops import vectorize_loops
from passes.report import Report
from rewrite.frontend import rewrite_function
from rewrite.testing import assert_equivalent
from tests.loop_helpers import context, dedent, namespace

DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
          torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64,
          torch.complex128]

# quadratic below beta, linear above: beta, a number or a tensor, divides under the condition
BRANCH = """
def f(x, beta):
    out = torch.zeros_like(x)
    for i in range(x.shape[0]):
        if x[i].abs() < beta:
            out[i] = 0.5 * x[i] ** 2 / beta
        else:
            out[i] = x[i].abs() - 0.5 * beta
    return out.sum()
"""

# a fixed base under the condition: its masked safe value is cast to the original's dtype
POWER = """
def f(x, base):
    out = torch.zeros_like(x)
    for i in range(x.shape[0]):
        if x[i] > 0:
            out[i] = base ** x[i]
    return out.sum()
"""

NO_LOOP = """
def f(x, y):
    return x.to(torch.result_type(x, y)) + y
"""


def _operands():
    """Every kind of operand promotion tells apart: dimensioned and 0-d tensors of every dtype,
    Python bool, int, float and complex numbers."""
    for d in DTYPES:
        yield torch.ones(2, dtype=d)
        yield torch.ones((), dtype=d)
    yield from (True, 3, 0.5, 1j)


def _rewritten(src: str) -> tuple:
    """(original, rewritten function, rewritten source): vectorize_loops, then this pass."""
    ns = namespace()
    tree = ast.parse(dedent(src))
    ctx = context(tree, ns)
    tree = traceable_dtype_queries.transform(vectorize_loops.transform(tree, ctx), ctx)
    code = unparse(tree)
    before, after = dict(ns), {**ns, **ctx.bindings}
    exec(compile(dedent(src), "<original>", "exec"), before)
    exec(compile(code, "<rewritten>", "exec"), after)
    return before["f"], after["f"], code


@pytest.mark.parametrize("default", [torch.float32, torch.float64])
def test_the_traced_rules_are_torchs(monkeypatch, default):
    """Under Dynamo the helpers answer from torch's Python reference: the same dtype as
    ``torch.result_type`` for every pair of operand kinds (Python floats take the default
    dtype), the same answer as ``torch.can_cast`` for every pair of dtypes."""
    pairs = list(itertools.product(_operands(), repeat=2))
    casts = list(itertools.product(DTYPES, repeat=2))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        expected = [torch.result_type(a, b) for a, b in pairs]
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        assert [traceable_dtype_queries.result_type(a, b) for a, b in pairs] == expected
    finally:
        torch.set_default_dtype(previous)
    assert [traceable_dtype_queries.can_cast(a, b) for a, b in casts] == \
        [torch.can_cast(a, b) for a, b in casts]


def test_vectorized_forms_call_the_helper_and_the_original_loop_is_as_written():
    _, _, code = _rewritten(POWER)
    vectorized, original = code.split("else:\n        for i in range")
    assert "_result_type(" in vectorized and "torch.result_type" not in vectorized
    assert "torch.result_type" not in original and "_result_type" not in original


def test_code_outside_vectorized_forms_is_unchanged():
    _, _, code = _rewritten(NO_LOOP)
    assert code == ast.unparse(ast.parse(dedent(NO_LOOP)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("beta", [1.0 / 9, 0.0, "tensor"])
def test_compiled_rewrite_is_one_graph_and_equivalent(dtype, beta):
    """A Python number ``beta`` keeps float16 float16 (a weak scalar); 0 is a divisor no
    iteration selects, whose gradient stays finite; a learnable 0-d ``beta`` runs the vmapped
    body (``_fixed_operand``)."""
    original, optimized, _ = _rewritten(BRANCH)
    x = torch.tensor([0.05, -0.3, 0.0, float("nan"), float("inf"), -float("inf"), 2.0, -0.01],
                     dtype=dtype).requires_grad_()
    if beta == "tensor":
        beta = torch.tensor(0.25, dtype=dtype, requires_grad=True)
        if dtype in (torch.float16, torch.bfloat16):
            # every selected iteration adds a part of a 16-bit beta's gradient: the loop runs as
            # written (rounded_gradients_run_as_written), its data-dependent `if` too
            assert_equivalent(original, optimized, x, beta, rtol=0, atol=0)
            return
    torch._dynamo.reset()
    explained = torch._dynamo.explain(optimized)(x, beta)
    assert explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(optimized, backend="eager", fullgraph=True)
    assert compiled(x, beta).dtype == original(x, beta).dtype == dtype
    assert_equivalent(original, compiled, x, beta)


@pytest.mark.parametrize("name", ["elementwise_if_else", "onehot_smoothing_weights"])
def test_examples_with_dtype_queries_compile_to_one_graph(name):
    module = importlib.import_module(f"examples.{name}")
    optimized, changed = rewrite_function(module.naive, Report("naive", "", 0))
    assert changed
    torch._dynamo.reset()
    explained = torch._dynamo.explain(optimized)(*module.make_inputs("small"))
    assert explained.graph_break_count == 0, explained.break_reasons
