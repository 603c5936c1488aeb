"""tensor_branches_to_where: tensor if/elif/else and guarded continue as masks, with the
double-where that keeps NaN/inf of deselected branches out of the gradients."""
from __future__ import annotations

import inspect
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import examples.elementwise_if_else
from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, finite_grads, rewrite_source

# (op on the selected values, the condition under which it is finite with finite gradients)
DOMAIN_OPS = [
    ("torch.log(x[i])", "x[i] > 0"), ("x[i].sqrt()", "x[i] > 0"), ("1 / x[i]", "x[i] != 0"),
    ("x[i] ** 0.5", "x[i] > 0"), ("torch.rsqrt(x[i])", "x[i] > 0"),
    ("torch.acos(x[i])", "x[i].abs() < 0.99"), ("torch.exp(x[i] * 200)", "x[i] < 0.1"),
    ("x[i].log1p()", "x[i] > -0.9"), ("torch.div(1.0, x[i])", "x[i] != 0"),
    ("torch.atanh(x[i])", "(x[i] > -0.9) & (x[i] < 0.9)"),
]


@settings(max_examples=30, deadline=None)
@given(op=st.sampled_from(DOMAIN_OPS), other=st.sampled_from(DOMAIN_OPS),
       values=st.lists(st.sampled_from([-3.0, -1.0, -0.5, 0.0, 0.25, 0.5, 2.0, 50.0]),
                       min_size=1, max_size=6),
       form=st.sampled_from(["if", "ifelse", "continue", "elif"]),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_deselected_branches_never_poison_gradients(op, other, values, form, dtype):
    (expr, cond), (expr2, cond2) = op, other
    body = {
        "if": [f"if {cond}:", f"    s = s + {expr}"],
        "ifelse": [f"if {cond}:", f"    s = s + {expr}", "else:", "    s = s - x[i] * 2"],
        "continue": [f"if not ({cond}):", "    continue", f"s = s + {expr}"],
        "elif": [f"if {cond}:", f"    t = {expr}", f"elif {cond2}:", f"    t = {expr2}",
                 "else:", "    t = x[i] * 0.5", "s = s + t"],
    }[form]
    src = "\n".join(["def f(x):", "    s = 0", "    for i in range(x.shape[0]):"]
                    + ["        " + line for line in body] + ["    return s", ""])
    original, optimized, code, report = build(src)
    assert report.loops[0].vectorized, report
    x = torch.tensor(values, dtype=dtype)
    if torch.is_tensor(original(x)) and finite_grads(original, x):
        assert finite_grads(optimized, x), code
        assert_equivalent(original, optimized, x.requires_grad_())


def test_elif_chain_and_locals_merge_in_order():
    original, optimized, code, _ = build("""
        def f(x, y):
            s = 0
            for i in range(x.shape[0]):
                t = x[i]
                if y[i] > 0.6:
                    t = t * 3
                elif y[i] > 0.3 and x[i] > 0:
                    t = t - 1
                    u = t * t
                    t = u
                else:
                    pass
                s = s + t
            return s
        """)
    assert "torch.logical_and" in code
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        assert_equivalent(original, optimized, torch.randn(8, generator=g, requires_grad=True),
                          torch.rand(8, generator=g))


def test_python_conditions_stay_python():
    code, report = rewrite_source("""
        def f(x, reduction):
            s = 0
            for i in range(x.shape[0]):
                if reduction == "sum":
                    s = s + x[i].sum()
                else:
                    s = s + x[i].mean()
            return s
        """)
    assert report.loops[0].vectorized and "if reduction == 'sum':" in code.split("else:")[0]


@pytest.mark.parametrize("call", ["F.cross_entropy(x[i:i+1], t[i:i+1])", "helper(x[i])",
                                  "F.one_hot(t[i], 3).sum()"])
def test_unknown_calls_under_a_condition_keep_the_loop(call):
    src = f"""
        def f(x, t):
            s = 0
            for i in range(x.shape[0]):
                if t[i] >= 0:
                    s = s + {call}
            return s
        """
    _, report = rewrite_source(src)
    assert not report.loops[0].vectorized
    assert "would also run on iterations its tensor condition excludes" in report.loops[0].reason


# Ops whose facts had drifted apart between tables (batched, yet neither made safe nor known
# total under a tensor condition, so the loop was kept): each now vectorizes, its risky operand
# made safe where the condition deselects (the batched statement as generated), the iteration's
# values it reads zero there.
X, Y = (f"torch.where(_cond.reshape(_cond.shape[:1] + _branch_shape[_cond.shape[1:], "
        f"{row}.shape[1:]]), {row}, False)" for row in ("_x_row", "_y_row"))
DRIFTED = [
    ("x[i].div(y[i])", f"{X}.div(torch.where(_cond, {Y}, 1))"),
    ("torch.logaddexp(x[i], y[i])", f"torch.logaddexp({X}, {Y})"),
    ("x[i].clamp_min(0)", f"{X}.clamp_min(0)"),
    ("x[i].clamp_max(0)", f"{X}.clamp_max(0)"),
    ("torch.where((x[i] > y[i]).logical_not(), x[i], y[i])",
     f"torch.where(({X} > {Y}).logical_not(), {X}, {Y})"),
]


def _under_condition(expr: str) -> str:
    return f"""
        def f(x, y, t):
            s = 0
            for i in range(x.shape[0]):
                if t[i] > 0:
                    s = s + {expr}
            return s
        """


@pytest.mark.parametrize("expr, batched", DRIFTED)
def test_drifted_ops_under_a_tensor_condition_are_batched(expr, batched):
    code, report = rewrite_source(_under_condition(expr))
    assert report.loops[0].vectorized, report.loops[0].reason
    assert f"_s_part = torch.where(_cond, {batched}, 0).sum(0)" in [
        line.strip() for line in code.splitlines()]


@pytest.mark.parametrize("expr", [expr for expr, _ in DRIFTED])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_drifted_ops_under_a_tensor_condition_are_equivalent(expr, dtype):
    original, optimized, _, report = build(_under_condition(expr))
    assert report.loops[0].vectorized, report.loops[0].reason
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0, 1.0], dtype=dtype)
    y = torch.tensor([0.5, 0.0, 2.0, -1.0, 0.0, 0.25], dtype=dtype)  # 0 only where deselected
    t = torch.tensor([1.0, -1.0, 1.0, 1.0, 0.0, 1.0], dtype=dtype)
    assert finite_grads(optimized, x, y, t)
    assert_equivalent(original, optimized, x.requires_grad_(), y.requires_grad_(), t)


TRUTH = """
def f(x, m):
    s = 0
    for i in range(len(x)):
        if m[i] and not m[i] == 2:
            s = s + x[i] * 2
        else:
            s = s - x[i]
    return s
"""


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int64, torch.float16,
                                   torch.float32, torch.float64, torch.complex64])
def test_the_truth_of_a_condition_in_every_dtype(dtype):
    """``torch.ne(c, False)`` is the truth of ``c`` in every dtype: 0, -0.0 false; NaN, inf,
    tiny values true (a bool ``c`` stays bool, not compared as int64)."""
    original, optimized, code, _ = build(TRUTH)
    assert "torch.ne(_m_row, False)" in code and not re.search(r"torch\.ne\([^()]*, 0\)", code)
    values = [0.0, -0.0, float("nan"), float("inf"), 1e-30, 1.0, 2.0, 1.0]
    m = torch.tensor([v != 0 for v in values]) if dtype == torch.bool \
        else torch.tensor([v if v == v and abs(v) < 3 else 5.0 for v in values]).to(dtype) \
        if not (dtype.is_floating_point or dtype.is_complex) else torch.tensor(values).to(dtype)
    x = torch.randn(len(values), dtype=torch.float64, requires_grad=True)
    assert_equivalent(original, optimized, x, m)


FIXED_NUMBERS = """
    def f(x, t, beta):
        s = 0
        for i in range(x.shape[0]):
            if t[i] > 0:
                s = s + 1.0 / beta * torch.exp(x[i]).sum() + beta ** -1
        return s
    """


def test_operations_of_fixed_numbers_stay_python_arithmetic():
    """``1.0 / beta`` of Python numbers under a tensor condition: a Python float (double
    precision, weak against the tensors), as in the original; made safe as tensors, it was a
    float32 tensor, off by 1e-8 relative in a float64 loss."""
    original, optimized, code, report = build(FIXED_NUMBERS)
    assert report.loops[0].vectorized, report
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1., -1., 1., 1., -1., 1.])
    a, b = original(x, t, 40.0), optimized(x, t, 40.0)
    # to the rounding of sums in another order (a float32 1 / 40 is 1.5e-8 off)
    assert a.dtype == b.dtype == torch.float64 and torch.allclose(a, b, rtol=1e-14, atol=0)
    grads = [torch.autograd.grad(v, x)[0] for v in (a, b)]
    assert torch.allclose(*grads, rtol=1e-14, atol=0)
    y = x.detach().float().requires_grad_()
    assert optimized(y, t, 40.0).dtype == torch.float32  # still weak against float32


def test_a_fixed_python_zero_divisor_raises_only_where_the_original_does():
    original, optimized, _, _ = build(FIXED_NUMBERS)
    x = torch.randn(6, 5, dtype=torch.float64)
    with pytest.raises(ZeroDivisionError):
        optimized(x, torch.tensor([1., -1., 1., 1., -1., 1.]), 0.0)
    none = torch.full((6,), -1.0)
    assert original(x, none, 0.0) == optimized(x, none, 0.0) == 0


@pytest.mark.parametrize("value", [0.0, 40.0])
def test_a_fixed_learnable_divisor_keeps_its_gradient_safe(value):
    original, optimized, _, _ = build(FIXED_NUMBERS)
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    beta = torch.tensor(value, dtype=torch.float64, requires_grad=True)
    for t in (torch.tensor([1., -1., 1., 1., -1., 1.]), torch.full((6,), -1.0)):
        if value or not t.gt(0).any():  # (a selected 1 / 0 is inf in both)
            assert_equivalent(original, optimized, x, t, beta)


# the example as written: a fixed divisor under the condition of an inner loop
DIVIDED_UNDER_CONDITION = inspect.getsource(examples.elementwise_if_else.naive)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("beta", ["number", "tensor"])
def test_a_fixed_divisor_keeps_its_precision_under_the_mask(dtype, beta):
    # Before: `torch.where(_cond, beta, 1).to(...)` made the Python float a float32 tensor, so
    # in float64 the quotient and its gradient were off in the 8th digit.
    original, optimized, code, report = build(DIVIDED_UNDER_CONDITION)
    assert all(loop.vectorized for loop in report.loops), report
    inf, nan = float("inf"), float("nan")
    values = [[0.01, -0.05, inf, nan], [0.02, 0.3, -inf, 0.0], [1.0 / 9, -0.1, 1e-3, 7.0]]
    if beta == "number":
        args = [1.0 / 9]
    else:  # a tensor divisor that takes a gradient: masked where deselected
        args = [torch.tensor(1.0 / 9, dtype=dtype, requires_grad=True)]
    results = []
    for fn in (original, optimized):
        pred = torch.tensor(values, dtype=dtype, requires_grad=True)
        target = torch.full((3, 4), 0.001, dtype=dtype)
        out = fn(pred, target, *args)
        leaves = [pred] + [a for a in args if torch.is_tensor(a)]
        results.append((out, torch.autograd.grad(out, leaves, allow_unused=True)))
    (want, want_grads), (got, got_grads) = results
    assert got.dtype == want.dtype == dtype
    assert torch.equal(got, want) or (got.isnan() and want.isnan())
    for g, w in zip(got_grads, want_grads):
        assert g.dtype == dtype and torch.equal(g.isnan(), w.isnan())
        assert torch.equal(g.nan_to_num(), w.nan_to_num()), (g, w)


# A value read under a mask is 0 where deselected through ``torch.where(p, x, False)``: no
# zeros of the batched value's size allocated and filled (``zeros_like``, before), and ``False``
# is 0 in every dtype without promoting (a Python ``0`` would turn a bool value into int64).
MASKED_READ = """
def f(x, y, t):
    s = 0
    c = 0
    for i in range(x.shape[0]):
        if t[i] > 0:
            s = s + torch.log(x[i]) * 2
            c = c + y[i]
    return s, c
"""


def test_masked_reads_allocate_no_full_size_zeros():
    code, report = rewrite_source(MASKED_READ)
    assert report.loops[0].vectorized, report.loops[0].reason
    assert "zeros_like" not in code
    assert re.search(r"torch\.where\(_cond\.reshape\([^\n]*, _x_row, False\)", code)
    assert re.search(r"torch\.where\(_cond\.reshape\([^\n]*, _y_row, False\)", code)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ydtype", [torch.bool, torch.int64, torch.float16,
                                    torch.float64])
def test_masked_reads_keep_values_gradients_and_dtypes(dtype, ydtype):
    """Deselected rows hold 0, -inf, NaN (a log of them would poison the gradient without
    the zero); the masked value of every dtype keeps it."""
    original, optimized, _, report = build(MASKED_READ)
    assert report.loops[0].vectorized, report.loops[0].reason
    x = torch.tensor([[0.0, 1.0], [2.0, 0.5], [float("-inf"), 3.0], [float("nan"), 1.0],
                      [1.5, 2.5]], dtype=dtype)
    t = torch.tensor([0.0, 1.5, -1.0, 0.0, 3.0], dtype=dtype)
    y = (torch.arange(10).reshape(5, 2) % 3).to(ydtype)
    assert finite_grads(lambda *args: optimized(*args)[0], x, y, t)
    assert_equivalent(original, optimized, x.requires_grad_(), y, t)
