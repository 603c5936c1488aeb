"""Two patterns that no longer keep a loop: an ``append`` in every branch of an ``if``/``else``
(``merge_branch_appends``: one item per iteration, the value merged from the branches) and a
name the code after the loop reads (``last_values_after_loop``: the last iteration's value).
Value, every gradient and dtype against the original, float32 and float64; the empty loop keeps
the original's previous value or its NameError."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent
from tests.loop_helpers import build, strategies

BRANCH_APPENDS = """
def f(x, t):
    out = []
    for i in range(x.shape[0]):
        if t[i] > 0:
            a = x[i] * 2
            out.append(a.sum())
        elif t[i] < -0.5:
            out.append(x[i].exp().sum())
        else:
            out.append(x[i].abs().mean())
    return torch.stack(out).sum()
"""

PYTHON_CONDITION = """
def f(x, weighted):
    out = []
    for i in range(x.shape[0]):
        if weighted:
            out.append((x[i] ** 2).sum() * 0.5)
        else:
            out.append(x[i].sum())
    return torch.stack(out).mean()
"""

LAST_VALUES = """
def f(x, y):
    total = 0
    for i in range(x.shape[0]):
        d = (x[i] - y[i]).abs()
        e = d.sum() * 2
        total = total + e
    return total + e + d.mean() + i
"""

LAST_ELEMENT = """
def f(xs):
    s = 0
    for k, v in enumerate(xs, 2):
        s = s + v.sum()
    return s / k + (v * v).sum()
"""

EMPTY_LOOP = """
def f(x, y, n):
    d = y.sum()
    for i in range(n):
        d = (x[i] - y[i]).abs().sum()
    return d
"""

UNBOUND = """
def f(x, n):
    for i in range(n):
        d = x[i].exp().sum()
    return d
"""


def _x(*shape, dtype, seed=0, grad=True):
    x = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    return x.requires_grad_(grad)


DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_appends_in_every_branch_under_a_tensor_condition(dtype):
    naive, fast, code, report = build(BRANCH_APPENDS)
    assert strategies(report) == {3: "batched"} and "torch.where" in code
    t = _x(7, dtype=dtype, seed=1, grad=False)
    t[2], t[3] = 0.0, float("nan")  # a tie at the threshold; NaN takes the else branch
    assert_equivalent(naive, fast, _x(7, 3, dtype=dtype), t)
    assert fast(_x(7, 3, dtype=dtype), t).dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_appends_in_every_branch_with_inf_in_a_deselected_branch(dtype):
    naive, fast, _, _ = build(BRANCH_APPENDS)
    x, t = _x(5, 3, dtype=dtype), _x(5, dtype=dtype, seed=2, grad=False)
    with torch.no_grad():
        x[1, 0] = 100.0  # exp overflows to inf in float32 in a branch the row does not take
    t[1] = 1.0
    assert_equivalent(naive, fast, x, t)


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_appends_in_every_branch_under_a_python_condition(weighted, dtype):
    naive, fast, _, report = build(PYTHON_CONDITION)
    assert report.loops[0].vectorized
    assert_equivalent(naive, fast, _x(6, 2, dtype=dtype), weighted)


def test_an_append_in_one_branch_only_keeps_the_items_of_the_iterations_that_append():
    # the sums computed at once, the appended ones taken by the stacked condition, in order
    naive, fast, _, report = build("""
def f(x, t):
    out = []
    for i in range(x.shape[0]):
        if t[i] > 0:
            out.append(x[i].sum())
    return out
""")
    assert report.loops[0].strategy == "batched", report.loops[0].reason
    x, t = _x(6, 3, dtype=torch.float64), torch.tensor([1.0, -1, 2, 0, 3, -2])
    assert len(fast(x, t)) == 3
    assert_equivalent(naive, fast, x, t)


@pytest.mark.parametrize("dtype", DTYPES)
def test_names_read_after_the_loop_get_the_last_iteration(dtype):
    naive, fast, code, report = build(LAST_VALUES)
    assert report.loops[0].vectorized and "d = _outs" in code
    assert_equivalent(naive, fast, _x(5, 3, dtype=dtype), _x(5, 3, dtype=dtype, seed=1))
    assert fast(_x(5, 3, dtype=dtype), _x(5, 3, dtype=dtype)).dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_last_element_and_index_of_enumerate(dtype):
    naive, fast, _, report = build(LAST_ELEMENT)
    assert report.loops[0].vectorized
    assert_equivalent(naive, fast, _x(4, 3, dtype=dtype))


def test_an_empty_loop_keeps_the_previous_value_or_the_name_error():
    naive, fast, _, report = build(EMPTY_LOOP)
    assert report.loops[0].vectorized
    x, y = _x(3, 2, dtype=torch.float64), _x(3, 2, dtype=torch.float64, seed=1)
    assert_equivalent(naive, fast, x, y, 0)
    assert_equivalent(naive, fast, x, y, 3)
    naive, fast, _, report = build(UNBOUND)
    assert report.loops[0].vectorized
    for fn in (naive, fast):
        with pytest.raises(NameError, match="'d'"):
            fn(x, 0)


SELECTION_AFTER = """
def f(x, labels):
    total = 0
    for i in range(x.shape[0]):
        neg = x[i][labels != labels[i]]
        total = total + neg.exp().sum()
    return total + neg.mean()
"""


SELECTION_AFTER_CONTINUE = """
def f(x, labels):
    total = 0
    for i in range(x.shape[0]):
        if labels[i] == 2:
            continue
        neg = x[i][labels != labels[i]]
        total = total + neg.exp().sum()
    return total + neg.mean()
"""


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_selection_read_after_the_loop_is_computed_again(dtype):
    # the vectorized body holds a dense stand-in of `neg` (zeros where deselected), not the last
    # iteration's selection: the statement binding it, first in the body, runs again after the
    # loop for the last index
    naive, fast, _, report = build(SELECTION_AFTER)
    assert report.loops[0].vectorized
    x, labels = _x(6, 6, dtype=dtype), torch.tensor([0, 1, 0, 1, 2, 2])
    assert_equivalent(naive, fast, x, labels)
    # bound after a `continue`, the last binding may be an earlier iteration's: kept
    naive, fast, _, report = build(SELECTION_AFTER_CONTINUE)
    assert not report.loops[0].vectorized
    assert "`neg` is read after the loop: the last iteration's selection" in report.loops[0].reason
    assert_equivalent(naive, fast, x, labels)


def test_a_python_number_read_after_the_loop_still_keeps_it():
    _, _, _, report = build("""
def f(x):
    total = 0
    for i in range(x.shape[0]):
        c = 3 * i
        total = total + x[i].sum()
    return total + c
""")
    # not vectorized whole; its heavy statement may still leave it (distribution)
    assert report.loops[0].strategy in ("kept", "distributed")
    assert "`c = 3 * i`: `c` is read by the residual loop or after" in report.loops[0].reason


CONTINUE_APPENDS = """
def f(x, t):
    out = []
    for i in range(x.shape[0]):
        if t[i] < 0:
            out.append(x[i].sum() * 0)
            continue
        d = (x[i] - t[i]).abs()
        out.append(d.sum() / 2)
    return torch.stack(out).mean()
"""

CONTINUE_WITHOUT_APPEND = """
def f(x, t):
    out = []
    for i in range(x.shape[0]):
        if t[i] < 0:
            continue
        out.append((x[i] - t[i]).abs().sum())
    return torch.stack(out).mean()
"""


@pytest.mark.parametrize("dtype", DTYPES)
def test_an_append_then_continue_and_an_append_after_is_one_item_per_iteration(dtype):
    # the detection form `if no positives: losses.append(zero); continue`, then the loss appended
    naive, fast, code, report = build(CONTINUE_APPENDS)
    assert strategies(report) == {3: "batched"} and "continue" not in code.split("else:")[0]
    t = _x(6, dtype=dtype, seed=3, grad=False)
    t[1], t[4] = 0.0, float("nan")  # a tie at the threshold; NaN is not below it
    x = _x(6, 3, dtype=dtype)
    with torch.no_grad():
        x[2, 1] = float("inf")
    assert_equivalent(naive, fast, x, t)


def test_a_continue_without_an_append_is_left_to_the_masked_continue():
    naive, fast, _, report = build(CONTINUE_WITHOUT_APPEND)
    assert "appended" not in report.loops[0].reason or not report.loops[0].vectorized
    t = torch.tensor([0.5, -1.0, 2.0])
    assert_equivalent(naive, fast, _x(3, 3, dtype=torch.float64), t)
