"""Vectorized loops keep Python's semantics: builtin max/min picks (ties, NaN), host numbers'
dtype and precision, and the exceptions of host math. Functions are written to real files and
rewritten by ``optimize_loss(..., compile=False, strict=True)``."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rewrite
from rewrite.testing import assert_equivalent, outputs_and_gradients
from tests.helpers import load_module

NAN, INF = float("nan"), float("inf")
DTYPES = (torch.float32, torch.float64)

SOURCE = """
import math
import torch


def running_max(d):
    m = d[0]
    for i in range(1, len(d)):
        m = max(m, d[i])
    return m


def running_min_from_inf(d):
    m = float("inf")
    for i in range(len(d)):
        m = min(m, d[i] * 2)
    return m


def row_max(x):
    total = 0
    for i in range(len(x)):
        total = total + max(x[i]) - min(x[i])
    return total


def exp_scores(s):
    t = 0
    for i in range(len(s)):
        t += math.exp(s[i].item())
    return t


def guarded_logs(s):
    t = 0
    for i in range(len(s)):
        if s[i] > -5:
            t = t + math.log(s[i] + 6) * math.sqrt(s[i].item() + 4)
    return t


def host_sum(x):
    total = 0
    for i in range(len(x)):
        total += x[i].item()
    return total


def host_float_sum(x):
    total = 0.5
    for i in range(len(x)):
        total = total - float(x[i])
    return total


def host_joined_sum(x, y):
    total = 0
    for i in range(len(x)):
        total = total + x[i].item() - y[i].item()
    return total


def host_joined_augmented_sum(x, y):
    total = 0.0
    for i in range(len(x)):
        total += x[i].item() + 2 * y[i].item()
    return total


def host_math_sum(s):
    t = 0
    for i in range(len(s)):
        t += math.exp(s[i].item())
    return t


def weighted(x, w):
    s = 0
    for i in range(len(x)):
        s = s + x[i] * w[i].item()
        s = s + (x[i] + float(w[i]) * 2)
    return s


def weighted_by_name(x, w):
    s = 0
    for i in range(len(x)):
        k = w[i].item() / 2
        if x[i] > k:
            s = s + (x[i] - k)
    return s


def smooth_l1_rows(x, y, beta=0.5):
    s = 0
    for i in range(x.shape[0]):
        d = (x[i] - y[i]).sum()
        if d.abs() < beta:
            s = s + 0.5 * d ** 2 / beta
        else:
            s = s + d.abs() - 0.5 * beta
    return s


def picked_by_int(x, labels):
    s = 0
    for i in range(x.shape[0]):
        s = s + x[i, int(labels[i])]
    return s


def scaled_by_int(x, w):
    s = 0
    for i in range(x.shape[0]):
        s = s + x[i] * int(w[i].sum())
    return s


def above_threshold(x, th):
    s = 0
    n = 0
    for i in range(x.shape[0]):
        v = x[i].sum()
        if v.item() > th:
            s = s + v
            n += 1
    return s, n


def between_host_floats(x, y):
    s = 0
    for i in range(x.shape[0]):
        if float(x[i]) <= y[i].item():
            s = s + x[i] * 2
    return s


def running_tensor_max(d):
    m = d[0]
    for i in range(1, len(d)):
        m = torch.maximum(m, d[i])
    return m
"""


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("semantics"), SOURCE)


def optimized(fn):
    return rewrite.optimize_loss(fn, compile=False, strict=True)


def vectorized(opt) -> bool:
    return all(loop.vectorized for loop in opt.report.loops)


def check(fn, *inputs):
    """Same value, every gradient, dtype and Python type, and the loop was vectorized."""
    opt = optimized(fn)
    assert_equivalent(fn, opt, *inputs)
    want, _ = outputs_and_gradients(fn, inputs, {})
    got, _ = outputs_and_gradients(opt, inputs, {})
    assert [type(v) for v in got] == [type(v) for v in want]
    assert [getattr(v, "dtype", None) for v in got] == [getattr(v, "dtype", None) for v in want]
    return opt


def grad_of(fn, x):
    x = x.detach().clone().requires_grad_()
    return torch.autograd.grad(fn(x), x)[0]


# -- builtin max/min: Python's pick ---------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("values", [[1, 3, 3], [1, NAN, 3, 2], [3, 3, 3, 1], [1, INF, INF],
                                    [NAN, 1, 2], [-INF, -INF], [2, NAN, NAN]])
def test_running_builtin_max_picks_the_first_largest(user, values, dtype):
    d = torch.tensor(values, dtype=dtype, requires_grad=True)
    opt = check(user.running_max, d)
    assert vectorized(opt)
    assert torch.equal(grad_of(opt, d), grad_of(user.running_max, d))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("values", [[1, 1, 2], [NAN, 0, 0], [NAN, NAN], [INF, 5, INF]])
def test_running_builtin_min_from_a_python_float(user, values, dtype):
    d = torch.tensor(values, dtype=dtype, requires_grad=True)
    opt = check(user.running_min_from_inf, d)
    assert vectorized(opt)


def test_running_builtin_max_of_all_nan_keeps_the_start(user):
    # every comparison with NaN is false: the original keeps d[0]
    assert optimized(user.running_max)(torch.tensor([1.0, NAN, NAN])).item() == 1.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [[[1, 3, 3], [NAN, 1, 2]], [[2, NAN, 1], [0, 0, 0]],
                                  [[INF, 1, INF], [-INF, NAN, -INF]]])
def test_builtin_max_min_of_a_row_iterate_as_python(user, rows, dtype):
    x = torch.tensor(rows, dtype=dtype, requires_grad=True)
    opt = check(user.row_max, x)
    assert vectorized(opt)
    assert torch.equal(grad_of(opt, x).isnan(), grad_of(user.row_max, x).isnan())


def test_running_torch_maximum_is_kept(user):
    # torch.maximum splits the gradient at each tie: 1/4, 1/4, 1/2 over three equal values
    opt = optimized(user.running_tensor_max)
    d = torch.tensor([1.0, 3.0, 3.0, 3.0], requires_grad=True)
    assert not vectorized(opt) and "ties" in opt.report.loops[0].reason
    assert torch.equal(grad_of(opt, d), torch.tensor([0.0, 0.25, 0.25, 0.5]))


# -- host math raises as the original --------------------------------------------------------
def raised(fn, file, *inputs):
    """(exception type, message, line in the user's ``file``) of ``fn(*inputs)``."""
    with pytest.raises(Exception) as info:
        fn(*inputs)
    frame = next(f for f in reversed(info.traceback) if f.path == Path(file))
    return type(info.value), str(info.value), frame.lineno


@pytest.mark.parametrize("fn, values", [
    ("exp_scores", [1.0, 1000.0]),        # OverflowError: float64 exp overflows
    ("exp_scores", [-INF, 710.0]),
    ("guarded_logs", [1.0, -4.5]),         # ValueError: sqrt of a negative number
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_host_math_raises_the_original_exception_at_its_line(user, fn, values, dtype):
    fn = getattr(user, fn)
    opt = optimized(fn)
    s = torch.tensor(values, dtype=dtype)
    file = fn.__code__.co_filename
    assert raised(opt, file, s) == raised(fn, file, s)
    assert vectorized(opt)


@pytest.mark.parametrize("fn", ["picked_by_int", "scaled_by_int"])
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
@pytest.mark.parametrize("dtype", DTYPES)
def test_int_of_a_nonfinite_value_raises_the_original_exception(user, fn, bad, dtype):
    fn = getattr(user, fn)
    opt = optimized(fn)
    x = torch.randn(3, 4, dtype=dtype, requires_grad=True)
    labels = torch.tensor([1.0, bad, 3.0], dtype=dtype)
    file = fn.__code__.co_filename
    assert raised(opt, file, x, labels) == raised(fn, file, x, labels)
    assert vectorized(opt)


def test_int_of_integer_elements_checks_nothing_on_the_host(user):
    # int() of an integer tensor's element cannot meet NaN/inf: no counter of raising
    # iterations (reading it is a host sync); floating labels run the loop as written
    opt = check(user.picked_by_int, torch.randn(3, 4, requires_grad=True), torch.tensor([1, 2, 3]))
    assert vectorized(opt)
    source = opt.report.rewritten_source
    assert ".is_floating_point()) and" in source and "_raises" not in source


@pytest.mark.parametrize("values", [[1.0, 80.0, INF, NAN], [-INF, 0.5]])
def test_host_math_in_range_does_not_raise(user, values):
    s = torch.tensor(values, dtype=torch.float64)
    opt = optimized(user.exp_scores)
    assert opt(s) == pytest.approx(user.exp_scores(s), nan_ok=True)


def test_host_math_deselected_by_a_condition_does_not_raise(user):
    s = torch.tensor([-7.0, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    opt = optimized(user.guarded_logs)
    assert_equivalent(user.guarded_logs, opt, s)
    assert vectorized(opt)


# -- host sums: Python floats, in double precision -------------------------------------------
@pytest.mark.parametrize("fn", ["host_sum", "host_float_sum"])
@pytest.mark.parametrize("dtype", DTYPES + (torch.float16,))
def test_host_sums_are_python_floats_in_double_precision(user, fn, dtype):
    fn = getattr(user, fn)
    x = torch.tensor([1e4 if dtype == torch.float16 else 1e8] + [1.0] * 63, dtype=dtype)
    opt = check(fn, x)
    assert vectorized(opt) and opt(x) == fn(x)  # float32 sums would lose the ones


@pytest.mark.parametrize("fn", ["host_joined_sum", "host_joined_augmented_sum"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_joined_host_terms_are_added_in_double_precision(user, fn, dtype):
    # each term a Python float: 1e8 + 0.5 in float32 would be 1e8 (the twin widened the sum of
    # the terms, not each term)
    fn = getattr(user, fn)
    x = torch.tensor([1e8] + [1.0] * 63, dtype=dtype)
    y = torch.tensor([0.5] + [0.0] * 62 + [-0.25], dtype=dtype)
    opt = check(fn, x, y)
    assert vectorized(opt) and opt(x, y) == fn(x, y)


@pytest.mark.parametrize("values", [[1, 2, 3], [True, False, True]])
def test_host_sums_of_integers_stay_ints(user, values):
    x = torch.tensor(values)
    assert vectorized(check(user.host_sum, x))


def test_host_math_sums_in_double_precision(user):
    s = torch.tensor([100.0, 1.0, -INF])  # exp(100) overflows float32, not float64
    opt = check(user.host_math_sum, s)
    assert vectorized(opt) and opt(s) == user.host_math_sum(s)


# -- dtype: host numbers are weak scalars next to tensors ------------------------------------
@pytest.mark.parametrize("fn", ["weighted", "weighted_by_name"])
@pytest.mark.parametrize("x_dtype, w_dtype", [
    (torch.float32, torch.float64), (torch.float16, torch.float32),
    (torch.float64, torch.float32), (torch.bfloat16, torch.float64)])
def test_host_numbers_keep_the_tensor_dtype(user, fn, x_dtype, w_dtype):
    fn = getattr(user, fn)
    x = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=x_dtype, requires_grad=True)
    w = torch.tensor([0.1, 3.0, -2.0, 0.2], dtype=w_dtype)
    assert vectorized(check(fn, x, w))


def test_integer_host_numbers_keep_the_tensor_dtype(user):
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float16, requires_grad=True)
    assert vectorized(check(user.weighted, x, torch.tensor([1, 2, 3])))


@pytest.mark.parametrize("dtype", DTYPES + (torch.float16, torch.bfloat16))
def test_python_numbers_under_a_tensor_condition_keep_the_dtype(user, dtype):
    # `d ** 2 / beta` under the condition: the masked divisor is where(cond, beta, 1), which
    # alone would be a float32 tensor and promote float16/bfloat16 items
    x = torch.tensor([[0.1, 0.2], [1.0, 2.0], [-0.3, 0.1]], dtype=dtype, requires_grad=True)
    y = torch.tensor([[0.0, 0.1], [0.5, -1.0], [0.0, 0.0]], dtype=dtype)
    opt = check(user.smooth_l1_rows, x, y)
    assert opt.report.loops[0].strategy == "batched"


# -- comparisons of host floats: Python compares in double precision ------------------------
@pytest.mark.parametrize("th", [0.1, 0.2, 0.25, 0, -1.5])
def test_host_float_compared_with_a_python_number_in_double(user, th):
    x = torch.tensor([[0.1], [0.2], [0.3]], dtype=torch.float32)  # 0.1f > 0.1 in Python
    assert vectorized(check(user.above_threshold, x, th))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_host_float_compared_with_a_tensor_compares_as_written(user, dtype):
    x = torch.tensor([[0.1], [0.2], [0.3]], dtype=torch.float64)
    th = torch.tensor(0.2, dtype=dtype)  # 0.2 as float16 is below the float64 0.2
    opt = optimized(user.above_threshold)
    assert_equivalent(user.above_threshold, opt, x, th)
    assert opt.report.loops[0].original_runs >= 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_two_host_floats_compared_in_double(user, dtype):
    x = torch.tensor([0.1, 0.2, NAN, 1.0], dtype=dtype)
    y = torch.tensor([0.1, 0.1, 1.0, INF], dtype=torch.float64)  # 0.1f <= 0.1 is False
    assert vectorized(check(user.between_host_floats, x, y))
