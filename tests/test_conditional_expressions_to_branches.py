"""conditional_expressions_to_branches: `a if c else b` on values that vary per iteration is
vectorized as a mask (through tensor_branches_to_where). Behaviour: value, every gradient and
dtype equal the original's (float32 and float64), ties on the threshold, NaN conditions, NaN/inf
in the branch not picked, Python numbers picked per item keeping their weak-scalar dtype and
exact value, counters staying Python ints; what stays as written and why; run-time counts."""
from __future__ import annotations

import textwrap

import pytest
import torch

import rewrite
from rewrite.testing import assert_equivalent
from tests.helpers import load_module
from tests.loop_helpers import build, finite_grads, same_python_types

CASES = {
    "float_literals": """
        def f(p, t):
            loss = 0
            for i in range(p.shape[0]):
                w = 0.1 if t[i] > 0.5 else 0.3
                loss += w * torch.log(p[i])
            return loss
        """,
    "tensor_branches_outside_their_domain": """
        def f(p, t):
            loss = 0
            for i in range(p.shape[0]):
                loss = loss - (p[i].log() if t[i] > 0.5 else (1 - p[i]).log())
            return loss
        """,
    "python_float_arguments": """
        def f(p, t, alpha=0.25):
            loss = 0
            for i in range(p.shape[0]):
                a = alpha if t[i] > 0.5 else 1 - alpha
                loss = loss + a * (p[i] - t[i]) ** 2
            return loss
        """,
    "nested": """
        def f(p, t):
            loss = 0
            for i in range(p.shape[0]):
                loss = loss + (p[i] * 2 if t[i] > 0.5 else (p[i].sqrt() if t[i] > 0 else -p[i]))
            return loss
        """,
    "int_counter_and_tensor_sum": """
        def f(p, t):
            n = 0
            s = 0
            for i in range(p.shape[0]):
                n += 1 if t[i] > 0.5 else 0
                s = s + (p[i] if t[i] > 0.5 else 0.0)
            return s / max(n, 1), n
        """,
}


def inputs(dtype, seed):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(7, generator=g, dtype=dtype)
    p[0], p[1] = 0.0, 1.0                     # log(0) in the branch the condition does not pick
    t = torch.rand(7, generator=g, dtype=dtype)
    t[0], t[1], t[2], t[3] = 0.2, 0.9, 0.5, float("nan")  # a tie on the threshold, a NaN test
    return p.requires_grad_(), t


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", CASES)
def test_equivalent_value_gradients_dtype(name, dtype, seed):
    original, optimized, code, report = build(CASES[name])
    assert report.loops[0].vectorized, report.loops[0].reason
    args = inputs(dtype, seed)
    assert_equivalent(original, optimized, *args)
    assert same_python_types(original(*args), optimized(*args))
    if finite_grads(lambda *a: _first(original(*a)), *args):  # the unpicked branch stays out
        assert finite_grads(lambda *a: _first(optimized(*a)), *args), code


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def test_float_literals_keep_their_exact_value_in_float64():
    original, optimized, _, _ = build(CASES["float_literals"])
    p, t = inputs(torch.float64, 0)
    assert torch.equal(original(p, t), optimized(p, t)) or \
        torch.allclose(original(p, t), optimized(p, t), rtol=1e-15, atol=0)


def test_int_argument_in_a_float_pick_runs_the_loop_as_written(tmp_path):
    module = load_module(tmp_path, "import torch\n\n\n" + _dedent(CASES["python_float_arguments"]))
    p, t = inputs(torch.float64, 0)
    fn = rewrite.optimize_loss(module.f, compile=False)
    assert_equivalent(module.f, fn, p, t)             # alpha = 0.25: vectorized
    assert fn.report.loops[0].vectorized_runs > 0
    fn = rewrite.optimize_loss(module.f, compile=False)
    assert_equivalent(lambda a, b: module.f(a, b, 1), lambda a, b: fn(a, b, 1), p, t)
    loop = fn.report.loops[0]
    assert loop.vectorized_runs == 0 and loop.original_runs > 0, loop
    assert "isinstance(alpha, float)" in loop.last_failure


@pytest.mark.parametrize("body, reason", [
    ("loss = loss + sum((x if x > 0 else 0) for x in [p[i], t[i]])", ""),
    ("loss = loss + (1 if t[i] > 0.5 else 0.5) * p[i]", "conditional expression"),
    ("loss = loss + (1.0 if 0 < t[i] < 1 else 2.0) * p[i]", "conditional expression"),
    ("loss = loss + (t[i] > 0 and p[i] if t[i] > 0.5 else p[i])", ""),
])
def test_kept_forms_keep_the_loop_with_a_reason(body, reason):
    src = f"""
        def f(p, t):
            loss = 0
            for i in range(p.shape[0]):
                {body}
            return loss
        """
    original, optimized, _, report = build(src)
    assert not report.loops[-1].vectorized and reason in report.loops[-1].reason
    assert_equivalent(original, optimized, *inputs(torch.float64, 0))


def test_vectorized_branch_runs(tmp_path):
    module = load_module(tmp_path, "import torch\n\n\n" + _dedent(CASES["tensor_branches_outside_their_domain"]))
    fn = rewrite.optimize_loss(module.f, compile=False)
    for dtype in (torch.float32, torch.float64):
        assert_equivalent(module.f, fn, *inputs(dtype, 0))
    loop = fn.report.loops[0]
    assert loop.vectorized and loop.vectorized_runs > 0 and loop.original_runs == 0, loop
    assert not fn.report.fallbacks


def _dedent(src: str) -> str:
    return textwrap.dedent(src).strip("\n") + "\n"
