"""distribute_loops on heavy work inside `if` branches: a heavy operand of a statement in a
branch of a residual `if` is computed for every iteration in the hoisted loop (where the
branch does not run, its operands are masked into the op's domain, as the vectorizer's
`torch.where` branches do), and the residual `if` reads it only where the branch runs.
Golden before/after (with no-change cases), equivalence of values, every gradient and dtype
(float32, float64) with NaN, inf and out-of-domain values in the iterations the branch skips,
printed lines, the exception at the same iteration, random draws in their order, and a
same-module helper whose body does the work."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module
from tests.loop_helpers import assert_golden, build, normalise, rewrite_source, strategies

DTYPES = [torch.float32, torch.float64]

SOURCES = {
    # the heavy value of an `if` body computed for every iteration at once; the residual `if`
    # prints and sums it where the branch runs
    "branch_print": """
        def f(x, y, m):
            total = 0
            for i in range(len(x)):
                if m[i] > 0:
                    l = F.mse_loss(x[i], y[i])
                    print(f"{i}: {l.item():.4f}")
                    total += l
            return total
        """,
    # a condition on pre-loop Python data (the index against an argument), the work in `else`
    "else_branch": """
        def f(x, y, skip):
            kept = []
            for i in range(len(x)):
                if i == skip:
                    print("skipped", i)
                else:
                    kept.append(F.mse_loss(x[i], y[i]))
            return torch.stack(kept).sum()
        """,
    # random draws stay in the residual loop, in their order; the hoisted loop draws nothing
    "random_in_branch": """
        def f(x, y, m):
            total = 0
            for i in range(len(x)):
                if m[i]:
                    h = F.mse_loss(x[i], y[i])
                    total = total + h * torch.rand(())
            return total
        """,
    # a weight read whole is not masked where the branch is skipped (an infinite one would
    # give a NaN gradient there): its branch stays whole
    "shared_weight_in_branch": """
        def f(x, W, m):
            total = 0
            for i in range(len(x)):
                if m[i]:
                    h = (x[i] @ W).sum()
                    total = total + h * torch.rand(())
            return total
        """,
    # the condition reads what the loop carries: its branch stays whole
    "carried_condition": """
        def f(x, y):
            total = 0
            for i in range(len(x)):
                if total < 1:
                    total = total + F.mse_loss(x[i], y[i])
                    print(i)
            return total
        """,
    # a class-index loss may raise on the iterations the branch skips: not run there
    "class_loss_in_branch": """
        def f(x, y, skip):
            total = 0
            for i in range(len(x)):
                if i != skip:
                    l = F.cross_entropy(x[i:i+1], y[i:i+1])
                    print(l.item())
                    total = total + l
            return total
        """,
    # more work stays than would be hoisted: not worth a split
    "residual_does_most": """
        def f(x, U, s, m):
            for i in range(len(x)):
                if m[i] > 0:
                    a = x[i].sum()
                    print(a.item())
                    s = (s @ U) / (s @ U).norm()
            return s
        """,
}

GOLDEN = {
    "branch_print": """
        def f(x, y, m):
            total = 0
            if isinstance(m, torch.Tensor) and len(x) <= m.shape[0] and isinstance(x, torch.Tensor) and (len(x) <= x.shape[0]) and isinstance(y, torch.Tensor) and (len(x) <= y.shape[0]) and isinstance(len(x), int) and (len(x) > 0):
                'optimize_loss: loop at line 3 vectorized'
                if y.dim() == x.dim() and 1 == m.dim():
                    _m_row = m if len(x) == m.shape[0] else m[0:len(x):1]
                    _x_row = x if len(x) == x.shape[0] else x[0:len(x):1]
                    _y_row = y if len(x) == y.shape[0] else y[0:len(x):1]
                    _cond = torch.ne(_m_row > 0, False)
                    _t = F.mse_loss(torch.where(_cond.reshape(_cond.shape[:1] + _branch_shape[_cond.shape[1:], _x_row.shape[1:]]), _x_row, False), torch.where(_cond.reshape(_cond.shape[:1] + _branch_shape[_cond.shape[1:], _y_row.shape[1:]]), _y_row, False), reduction='none')
                    _value = _t.reshape(len(_t), -1).mean(1)
                    _mask = torch.logical_not(_cond)
                    _value = torch.where(_mask, 0, _value)
                    _value_all_item = _value
                    _outs_1 = (_value_all_item,)
                else:

                    def _body(_m_row, _x_row, _y_row):
                        _cond = torch.ne(_m_row > 0, False)
                        _value = F.mse_loss(torch.where(_cond.reshape(_branch_shape[_cond.shape, _x_row.shape]), _x_row, False), torch.where(_cond.reshape(_branch_shape[_cond.shape, _y_row.shape]), _y_row, False))
                        _mask = torch.logical_not(_cond)
                        _value = torch.where(_mask, 0, _value)
                        _value_all_item = _value
                        return (torch.as_tensor(_value_all_item),)
                    _outs_1 = _map_in_chunks(_body, in_dims=(0, 0, 0))(m if len(x) == m.shape[0] else m[0:len(x):1], x if len(x) == x.shape[0] else x[0:len(x):1], y if len(x) == y.shape[0] else y[0:len(x):1])
                _value_all = _outs_1[0].unbind(0)
                for i in range(len(x)):
                    _value = _value_all[i]
                    if m[i] > 0:
                        l = _value
                        print(f'{i}: {l.item():.4f}')
                        total += l
            else:
                for i in range(len(x)):
                    if m[i] > 0:
                        l = F.mse_loss(x[i], y[i])
                        print(f'{i}: {l.item():.4f}')
                        total += l
            return total
        """,
    "else_branch": """
        def f(x, y, skip):
            kept = []
            if isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(y, torch.Tensor) and (len(x) <= y.shape[0]) and isinstance(len(x), int) and (len(x) > 0):
                'optimize_loss: loop at line 3 vectorized'
                if not isinstance(skip, torch.Tensor) and y.dim() == x.dim():
                    i = torch.arange(0, len(x), 1, device=x.device)
                    _x_row = x if len(x) == x.shape[0] else x[0:len(x):1]
                    _y_row = y if len(x) == y.shape[0] else y[0:len(x):1]
                    _cond = torch.ne(i == skip, False)
                    _value = 0
                    _mask = torch.logical_not(_cond)
                    _t = F.mse_loss(torch.where(_mask.reshape(_mask.shape[:1] + _branch_shape[_mask.shape[1:], _x_row.shape[1:]]), _x_row, False), torch.where(_mask.reshape(_mask.shape[:1] + _branch_shape[_mask.shape[1:], _y_row.shape[1:]]), _y_row, False), reduction='none')
                    _value = torch.where(_mask, _t.reshape(len(_t), -1).mean(1), _value)
                    _value_all_item = _value
                    _outs_1 = (_value_all_item,)
                else:

                    def _body(i, _x_row, _y_row):
                        _cond = torch.ne(i == skip, False)
                        _value = 0
                        _mask = torch.logical_not(_cond)
                        _value = torch.where(_mask, F.mse_loss(torch.where(_mask.reshape(_branch_shape[_mask.shape, _x_row.shape]), _x_row, False), torch.where(_mask.reshape(_branch_shape[_mask.shape, _y_row.shape]), _y_row, False)), _value)
                        _value_all_item = _value
                        return (torch.as_tensor(_value_all_item),)
                    _outs_1 = _map_in_chunks(_body, in_dims=(0, 0, 0))(torch.arange(0, len(x), 1, device=x.device), x if len(x) == x.shape[0] else x[0:len(x):1], y if len(x) == y.shape[0] else y[0:len(x):1])
                _value_all = _outs_1[0].unbind(0)
                for i in range(len(x)):
                    _value = _value_all[i]
                    if i == skip:
                        print('skipped', i)
                    else:
                        kept.append(_value)
            else:
                for i in range(len(x)):
                    if i == skip:
                        print('skipped', i)
                    else:
                        kept.append(F.mse_loss(x[i], y[i]))
            return torch.stack(kept).sum()
        """,
    "random_in_branch": """
        def f(x, y, m):
            total = 0
            if isinstance(m, torch.Tensor) and len(x) <= m.shape[0] and isinstance(x, torch.Tensor) and (len(x) <= x.shape[0]) and isinstance(y, torch.Tensor) and (len(x) <= y.shape[0]) and isinstance(len(x), int) and (len(x) > 0):
                'optimize_loss: loop at line 3 vectorized'
                if y.dim() == x.dim() and 1 == m.dim():
                    _m_row = m if len(x) == m.shape[0] else m[0:len(x):1]
                    _x_row = x if len(x) == x.shape[0] else x[0:len(x):1]
                    _y_row = y if len(x) == y.shape[0] else y[0:len(x):1]
                    _cond = torch.ne(_m_row, False)
                    _t = F.mse_loss(torch.where(_cond.reshape(_cond.shape[:1] + _branch_shape[_cond.shape[1:], _x_row.shape[1:]]), _x_row, False), torch.where(_cond.reshape(_cond.shape[:1] + _branch_shape[_cond.shape[1:], _y_row.shape[1:]]), _y_row, False), reduction='none')
                    _value = _t.reshape(len(_t), -1).mean(1)
                    _mask = torch.logical_not(_cond)
                    _value = torch.where(_mask, 0, _value)
                    _value_all_item = _value
                    _outs_1 = (_value_all_item,)
                else:

                    def _body(_m_row, _x_row, _y_row):
                        _cond = torch.ne(_m_row, False)
                        _value = F.mse_loss(torch.where(_cond.reshape(_branch_shape[_cond.shape, _x_row.shape]), _x_row, False), torch.where(_cond.reshape(_branch_shape[_cond.shape, _y_row.shape]), _y_row, False))
                        _mask = torch.logical_not(_cond)
                        _value = torch.where(_mask, 0, _value)
                        _value_all_item = _value
                        return (torch.as_tensor(_value_all_item),)
                    _outs_1 = _map_in_chunks(_body, in_dims=(0, 0, 0))(m if len(x) == m.shape[0] else m[0:len(x):1], x if len(x) == x.shape[0] else x[0:len(x):1], y if len(x) == y.shape[0] else y[0:len(x):1])
                _value_all = _outs_1[0].unbind(0)
                for i in range(len(x)):
                    _value = _value_all[i]
                    if m[i]:
                        h = _value
                        total = total + h * torch.rand(())
            else:
                for i in range(len(x)):
                    if m[i]:
                        h = F.mse_loss(x[i], y[i])
                        total = total + h * torch.rand(())
            return total
        """,
    "carried_condition": SOURCES["carried_condition"],
    "shared_weight_in_branch": SOURCES["shared_weight_in_branch"],
    "class_loss_in_branch": SOURCES["class_loss_in_branch"],
    "residual_does_most": SOURCES["residual_does_most"],
}

EXPECTED = {"branch_print": {3: "distributed"}, "else_branch": {3: "distributed"},
            "random_in_branch": {3: "distributed"}, "carried_condition": {3: "kept"},
            "class_loss_in_branch": {3: "kept"}, "residual_does_most": {2: "kept"},
            "shared_weight_in_branch": {3: "kept"}}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_golden(name):
    assert_golden(SOURCES[name], GOLDEN[name], EXPECTED[name])


def test_reasons_name_why_a_branch_stays():
    reasons = {name: rewrite_source(SOURCES[name])[1].loops[0].reason
               for name in ("branch_print", "carried_condition", "class_loss_in_branch",
                            "residual_does_most")}
    assert reasons["branch_print"].startswith("line 5 hoisted into one loop (batched); "
                                              "residual loop: <test>:4 `if m[i] > 0 ...`")
    assert "no statement left to hoist does real work" in reasons["carried_condition"]
    assert "<test>:5 `if i != skip ...`: `F.cross_entropy(...)` would also run on iterations " \
           "its tensor condition excludes" in reasons["class_loss_in_branch"]
    assert "not distributed: residual loop still does most of the work (2 ops doing real " \
           "work stay, 1 hoisted)" in reasons["residual_does_most"]


# ---------------------------------------------------------------------------------------------
# Equivalence. The rows the branch skips hold NaN, inf or values outside the op's domain: the
# original never touches them (their gradient is 0), nor may the rewritten.

def spoiled(dtype, skipped, *shape):
    """A leaf whose rows ``skipped`` hold NaN, inf and -inf."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(7), dtype=dtype)
    for k, row in enumerate(skipped):
        x[row] = (float("nan"), float("inf"), float("-inf"))[k % 3]
    return x.requires_grad_()


@pytest.mark.parametrize("dtype", DTYPES)
def test_branch_values_gradients_and_printed_lines(dtype, capsys):
    original, optimized, _, _ = build(SOURCES["branch_print"])
    m = torch.tensor([1.0, -1.0, 2.0, 0.0, 3.0, -2.0], dtype=dtype)
    x = spoiled(dtype, [1, 3, 5], 6, 4)
    y = torch.randn(6, 4, dtype=dtype)
    want = original(x, y, m)
    printed = capsys.readouterr().out
    got = optimized(x, y, m)
    assert capsys.readouterr().out == printed and printed.count("\n") == 3
    assert got.dtype == want.dtype == dtype
    assert_equivalent(original, optimized, x, y, m)
    grad, = torch.autograd.grad(optimized(x, y, m), x)
    assert torch.isfinite(grad).all() and (grad[[1, 3, 5]] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_else_branch_on_pre_loop_data(dtype):
    original, optimized, _, _ = build(SOURCES["else_branch"])
    x, y = spoiled(dtype, [2], 5, 3), torch.randn(5, 3, dtype=dtype)
    for skip in (2, 7):  # the spoiled row skipped; no row skipped (NaN then reaches the sum)
        assert_equivalent(original, optimized, x, y, skip)


@pytest.mark.parametrize("dtype", DTYPES)
def test_random_draws_keep_their_order(dtype):
    original, optimized, _, _ = build(SOURCES["random_in_branch"])
    x, y = spoiled(dtype, [0, 2], 5, 3), torch.randn(5, 3, dtype=dtype)
    m = torch.tensor([False, True, False, True, True])
    assert_equivalent(original, optimized, x, y, m)  # each side from the same seed
    torch.manual_seed(0)
    want = original(x, y, m)
    torch.manual_seed(0)
    got = optimized(x, y, m)
    torch.testing.assert_close(got, want)
    assert torch.isfinite(torch.autograd.grad(got, x)[0]).all()


def test_a_weight_read_whole_keeps_its_branch():
    # the branch's work is not hoisted, so an infinite weight cannot reach the skipped rows
    original, optimized, code, report = build(SOURCES["shared_weight_in_branch"])
    assert "not distributed" in report.loops[0].reason and code == normalise(
        SOURCES["shared_weight_in_branch"])
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    W = torch.randn(3, 2, dtype=torch.float64)
    W[0, 0] = float("inf")
    assert_equivalent(original, optimized, x, W.requires_grad_(), torch.tensor([1, 0, 1, 0]))


CHECKS = {"raise": 'if l.item() > th: raise ValueError(f"too large at {i}")',
          "assert": 'assert l.item() <= th, f"too large at {i}"'}
DOMAIN = """
    def f(x, m, th):
        total = 0
        for i in range(len(x)):
            if m[i]:
                l = torch.sqrt(x[i]).sum()
                print(round(l.item(), 3))
                {check}
                total = total + l
        return total
    """


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_out_of_domain_skipped_rows_and_the_same_exception(dtype, check, capsys):
    original, optimized, code, report = build(DOMAIN.replace("{check}", CHECKS[check]))
    assert strategies(report) == {3: "distributed"} and "torch.sqrt(torch.where(" in code
    x = torch.rand(6, 4, generator=torch.Generator().manual_seed(1), dtype=dtype) + 0.5
    x[[0, 3]] = -1.0  # sqrt is NaN there, and its derivative
    x[4] = 0.0        # the derivative is inf there
    x.requires_grad_()
    m = torch.tensor([False, True, True, False, False, True])
    assert_equivalent(original, optimized, x, m, 100.0)
    capsys.readouterr()
    outcomes = []
    for fn in (original, optimized):
        with pytest.raises((ValueError, AssertionError)) as err:
            fn(x, m, 1.9)
        outcomes.append((err.type, str(err.value), capsys.readouterr().out))
    assert outcomes[0] == outcomes[1] and outcomes[0][1] == "too large at 1"


HELPER_MODULE = """
import torch


def dice(p, t):
    inter = (p * t).sum()
    return 1 - (2 * inter + 1.0) / (p.sum() + t.sum() + 1.0)


def per_class(probs, onehot, ignore):
    total = 0
    for c in range(onehot.shape[1]):
        if c != ignore:
            d = dice(probs[:, c], onehot[:, c])
            print(f"class {c}: {d.item():.4f}")
            total = total + d
    return total / onehot.shape[1]
"""


@pytest.mark.parametrize("dtype", DTYPES)
def test_work_in_a_same_module_helper_is_hoisted(dtype, tmp_path, capsys):
    user = load_module(tmp_path, HELPER_MODULE)
    optimized = optimize_loss(user.per_class, compile=False)
    probs = spoiled(dtype, [], 8, 4).softmax(1).detach()
    probs[:, 0] = float("nan")  # the ignored class
    probs.requires_grad_()
    onehot = torch.nn.functional.one_hot(torch.arange(8) % 4, 4).to(dtype)
    want = user.per_class(probs, onehot, 0)
    printed = capsys.readouterr().out
    got = optimized(probs, onehot, 0)
    assert capsys.readouterr().out == printed and printed.count("\n") == 3
    torch.testing.assert_close(got, want)
    assert [loop.strategy for loop in optimized.report.loops] == ["distributed"]
    assert optimized.report.loops[0].vectorized_runs == 1
    assert_equivalent(user.per_class, optimized, probs, onehot, 0)
