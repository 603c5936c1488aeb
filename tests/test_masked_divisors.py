"""masked_divisor: a divisor the loop does not change, under a tensor condition, is the Python
number itself where no quotient by it can pass a NaN derivative on (not 0, not NaN), else made
safe where the mask is off. Golden (with a divisor that varies: no helper), the helper's
answers, and equivalence of value, every gradient and dtype (float32, float64; NaN, inf, ties
with the threshold; 0 and NaN divisors no iteration selects; integer floor division and
remainder by 0 under a condition that never holds)."""
from __future__ import annotations

import math

import pytest
import torch

from passes.masked_divisors import masked_divisor
from rewrite import assert_equivalent
from tests.loop_helpers import build
from tests.test_traceable_dtype_queries import BRANCH as SMOOTH  # smooth L1 per element

DTYPES = [torch.float32, torch.float64]

GOLDEN_SMOOTH_BODY = "_out_item = torch.where(_cond, _t / _masked_divisor(_cond, _t, beta), "
# a divisor that varies with the iteration: made safe element by element, no helper
VARYING = """
def f(x, y):
    out = torch.zeros_like(x)
    for i in range(x.shape[0]):
        if x[i] > 0:
            out[i] = x[i] / y[i]
    return out.sum()
"""
INTEGER = """
def f(x, k):
    q = torch.zeros_like(x)
    r = torch.zeros_like(x)
    for i in range(x.shape[0]):
        if x[i] > 100:
            q[i] = x[i] // k
            r[i] = x[i] % k
    return q, r
"""


def test_golden():
    code = build(SMOOTH)[2]
    assert GOLDEN_SMOOTH_BODY in code
    assert "torch.result_type" not in code.split("else:\n        for i")[0]
    _, _, varying, report = build(VARYING)
    assert report.loops[0].vectorized and "_masked_divisor" not in varying


@pytest.mark.parametrize("a", [0.5, 3, -2.0, math.inf, -math.inf, 1e-300])
def test_a_python_number_that_divides_safely_is_itself(a):
    p = torch.tensor([True, False])
    assert masked_divisor(p, torch.ones(2), a) is a


@pytest.mark.parametrize("a", [0, 0.0, -0.0, math.nan, True, torch.tensor(0.0),
                               torch.tensor(2.0, dtype=torch.float64)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_other_divisors_are_one_where_the_mask_is_off(a, dtype):
    p = torch.tensor([True, False, True])
    x = torch.ones(3, dtype=dtype)
    d = masked_divisor(p, x, a)
    assert d.dtype == torch.result_type(x, a)  # the dtype the original's quotient has
    assert d[1] == 1
    torch.testing.assert_close(d[p], torch.full((2,), float(a), dtype=dtype), equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("beta", [1.0 / 9, 2, 0.0, math.nan, math.inf, -1.0])
def test_equivalent(dtype, beta):
    original, optimized, code, report = build(SMOOTH)
    assert report.loops[0].vectorized
    x = torch.tensor([0.05, -0.3, 0.0, 1.0 / 9, -1.0 / 9, float("nan"), float("inf"), 2.0,
                      -0.01, -float("inf")], dtype=dtype)
    assert_equivalent(original, optimized, x.requires_grad_(), beta)


@pytest.mark.parametrize("k", [3, -2, 0])
def test_integer_division_under_a_condition_that_never_holds(k):
    original, optimized, code, report = build(INTEGER)
    assert report.loops[0].vectorized
    x = torch.tensor([1, -5, 7, 0, 12])
    for want, got in zip(original(x, k), optimized(x, k)):  # k == 0: no iteration divides
        assert got.dtype == want.dtype and torch.equal(got, want)
    if k:
        x = x * 50
        for want, got in zip(original(x, k), optimized(x, k)):
            assert torch.equal(got, want)
