"""distribute_loops on a ``continue`` that ends a branch of a top-level ``if``: the statements
after the ``if`` become its other branch (``continues_to_else``), so the loop is split like any
loop with a residual ``if``. Golden before/after (with a no-change case: a ``continue`` nested
deeper), equivalence of values, every gradient and dtype (float32, float64) with NaN and inf in
the skipped rows, printed lines, the exception at the same iteration, and random bodies."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rewrite import assert_equivalent
from tests.loop_helpers import assert_golden, build, rewrite_source, strategies

DTYPES = [torch.float32, torch.float64]

SOURCES = {
    # rows skipped by a Python condition on a tensor: the loss of the rows kept computed at
    # once, the printing and the sum in the residual loop
    "skip_rows": """
        def f(x, y, m):
            total = 0
            for i in range(len(x)):
                if m[i] < 0:
                    continue
                l = F.mse_loss(x[i], y[i])
                print(f"{i}: {l.item():.4f}")
                total += l
            return total
        """,
    # a `continue` under a condition inside a branch, statements after it there: not split
    "nested_continue": """
        def f(x, y, m):
            total = 0
            for i in range(len(x)):
                if m[i] > 0:
                    if m[i] > 1:
                        print(i)
                        continue
                    print(m[i].item())
                l = F.mse_loss(x[i], y[i])
                print(f"{i}: {l.item():.4f}")
                total += l
            return total
        """,
}
GOLDEN = {
    "skip_rows": """
        def f(x, y, m):
            total = 0
            if isinstance(m, torch.Tensor) and len(x) <= m.shape[0] and isinstance(x, torch.Tensor) and (len(x) <= x.shape[0]) and isinstance(y, torch.Tensor) and (len(x) <= y.shape[0]) and isinstance(len(x), int) and (len(x) > 0):
                'optimize_loss: loop at line 3 vectorized'
                if y.dim() == x.dim() and 1 == m.dim():
                    _m_row = m if len(x) == m.shape[0] else m[0:len(x):1]
                    _x_row = x if len(x) == x.shape[0] else x[0:len(x):1]
                    _y_row = y if len(x) == y.shape[0] else y[0:len(x):1]
                    _cond = torch.ne(_m_row < 0, False)
                    _value = 0
                    _mask = torch.logical_not(_cond)
                    _t = F.mse_loss(torch.where(_mask.reshape(_mask.shape[:1] + _branch_shape[_mask.shape[1:], _x_row.shape[1:]]), _x_row, False), torch.where(_mask.reshape(_mask.shape[:1] + _branch_shape[_mask.shape[1:], _y_row.shape[1:]]), _y_row, False), reduction='none')
                    _value = torch.where(_mask, _t.reshape(len(_t), -1).mean(1), _value)
                    _value_all_item = _value
                    _outs_1 = (_value_all_item,)
                else:

                    def _body(_m_row, _x_row, _y_row):
                        _cond = torch.ne(_m_row < 0, False)
                        _value = 0
                        _mask = torch.logical_not(_cond)
                        _value = torch.where(_mask, F.mse_loss(torch.where(_mask.reshape(_branch_shape[_mask.shape, _x_row.shape]), _x_row, False), torch.where(_mask.reshape(_branch_shape[_mask.shape, _y_row.shape]), _y_row, False)), _value)
                        _value_all_item = _value
                        return (torch.as_tensor(_value_all_item),)
                    _outs_1 = _map_in_chunks(_body, in_dims=(0, 0, 0))(m if len(x) == m.shape[0] else m[0:len(x):1], x if len(x) == x.shape[0] else x[0:len(x):1], y if len(x) == y.shape[0] else y[0:len(x):1])
                _value_all = _outs_1[0].unbind(0)
                for i in range(len(x)):
                    _value = _value_all[i]
                    if m[i] < 0:
                        pass
                    else:
                        l = _value
                        print(f'{i}: {l.item():.4f}')
                        total += l
            else:
                for i in range(len(x)):
                    if m[i] < 0:
                        continue
                    l = F.mse_loss(x[i], y[i])
                    print(f'{i}: {l.item():.4f}')
                    total += l
            return total
        """,
    "nested_continue": SOURCES["nested_continue"],
}
EXPECTED = {"skip_rows": {3: "distributed"}, "nested_continue": {3: "kept"}}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_golden(name):
    assert_golden(SOURCES[name], GOLDEN[name], EXPECTED[name])


def test_reasons():
    reasons = {name: rewrite_source(src)[1].loops[0].reason for name, src in SOURCES.items()}
    assert reasons["skip_rows"].startswith(
        "line 6 hoisted into one loop (batched); residual loop: <test>:4 `if m[i] < 0 ...`")
    assert reasons["nested_continue"].endswith(
        "not distributed: <test>:7 `continue` leaves the iteration early")


def spoiled(dtype, skipped, *shape):
    """A leaf whose rows ``skipped`` hold NaN, inf and -inf."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(7), dtype=dtype)
    for k, row in enumerate(skipped):
        x[row] = (float("nan"), float("inf"), float("-inf"))[k % 3]
    return x.requires_grad_()


@pytest.mark.parametrize("dtype", DTYPES)
def test_skipped_rows_values_gradients_and_printed_lines(dtype, capsys):
    original, optimized, _, _ = build(SOURCES["skip_rows"])
    m = torch.tensor([1.0, -1.0, 2.0, -0.5, 3.0, -2.0], dtype=dtype)
    x, y = spoiled(dtype, [1, 3, 5], 6, 4), torch.randn(6, 4, dtype=dtype)
    want = original(x, y, m)
    printed = capsys.readouterr().out
    got = optimized(x, y, m)
    assert capsys.readouterr().out == printed and printed.count("\n") == 3
    assert got.dtype == want.dtype == dtype
    assert_equivalent(original, optimized, x, y, m)
    grad, = torch.autograd.grad(optimized(x, y, m), x)
    assert torch.isfinite(grad).all() and (grad[[1, 3, 5]] == 0).all()


ELSE_CONTINUE = """
    def f(x, y, m, th):
        total = 0
        for i in range(len(x)):
            if m[i] > 0:
                l = F.mse_loss(x[i], y[i])
            else:
                print("skipped", i)
                continue
            print(round(l.item(), 3))
            assert l.item() <= th, "too large"
            total = total + l
        return total
    """


@pytest.mark.parametrize("dtype", DTYPES)
def test_continue_ending_the_else_branch_raises_at_the_same_iteration(dtype, capsys):
    original, optimized, _, report = build(ELSE_CONTINUE)
    assert strategies(report) == {3: "distributed"}
    m = torch.tensor([1, 0, 1, 1, 0, 1])
    x, y = spoiled(dtype, [1, 4], 6, 3), torch.randn(6, 3, dtype=dtype)
    assert_equivalent(original, optimized, x, y, m, 1e9)
    th = sorted(torch.nn.functional.mse_loss(x[k], y[k]).item() for k in (0, 2, 3, 5))[1]
    capsys.readouterr()
    for fn in (original, optimized):  # the first loss above the second smallest raises
        with pytest.raises(AssertionError, match="too large"):
            fn(x, y, m, th)
    lines = capsys.readouterr().out.splitlines()
    assert lines[:len(lines) // 2] == lines[len(lines) // 2:]


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 3), st.booleans(), st.lists(st.integers(-1, 1), min_size=5, max_size=5))
def test_a_continue_anywhere_in_a_mixed_body_is_equivalent(at, in_else, signs):
    stmts = ["a = F.mse_loss(x[i], y[i])", "print(round(a.item(), 3))", "b = (x[i] * y[i]).sum()",
             "total = total + a * b"]
    skip = ["if m[i] > 0:", "    pass", "else:", "    continue"] if in_else else \
        ["if m[i] < 0:", "    print('skip', i)", "    continue"]
    body = stmts[:at] + skip + stmts[at:]
    src = "def f(x, y, m):\n    total = 0\n    for i in range(len(x)):\n" + "".join(
        f"        {line}\n" for line in body) + "    return total\n"
    original, optimized, _, _ = build(src)
    # a NaN row only when no value is computed before the `continue`: a value computed before
    # a tensor condition and unread where it skips is the pinned bug of test_known_bugs
    # (test_value_computed_before_a_tensor_condition_at_a_nan_row), with or without `continue`
    x = spoiled(torch.float64, [1] if at == 0 else [], 5, 3)
    y = torch.randn(5, 3, dtype=torch.float64)
    assert_equivalent(original, optimized, x, y, torch.tensor(signs, dtype=torch.float64))
