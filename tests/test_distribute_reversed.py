"""distribute_loops on a loop over ``reversed(range(n))`` (``reversed_ranges``): the hoisted
loop runs forwards over ``range(n)``, the residual loop counts down as written, reading step
``t``'s values at ``t``. Golden before/after (with a no-change case: a ``break``), equivalence
of values, every gradient and dtype (float32, float64) with NaN and inf rows, printed lines,
the loop variable after the loop."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent
from tests.loop_helpers import assert_golden, build, rewrite_source
from tests.test_distribute_break import outcome

DTYPES = [torch.float32, torch.float64]
NAN, INF = float("nan"), float("inf")

# a per-step contraction, then a recurrence counting down (discounted returns of its outputs)
RETURNS = """
    def f(x, W, gamma):
        g = 0
        out = []
        for t in reversed(range(len(x))):
            h = torch.tanh(x[t] @ W).sum()
            g = h + gamma * g
            print(f"{t} {g.item():.4f}")
            out.append(g)
        return torch.stack(out), t
    """
GOLDEN = """
        def f(x, W, gamma):
            g = 0
            out = []
            if isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(len(x), int) and (len(x) > 0) and (not _rounds_gradients(W)):
                'optimize_loss: loop at line 4 vectorized'
                if x.dim() >= 2 and (isinstance(W, torch.Tensor) and W.dim() == 2):
                    _x_row = x if len(x) == x.shape[0] else x[0:len(x):1]
                    _t = torch.tanh(_x_row @ W)
                    h = _t.sum(tuple(range(1, _t.dim()))) if _t.dim() > 1 else _t.reshape(len(_t), -1).sum(1)
                    _h_all_item = h
                    _outs_1 = (_h_all_item,)
                else:

                    def _body(_x_row):
                        h = torch.tanh(_x_row @ W).sum()
                        _h_all_item = h
                        return (torch.as_tensor(_h_all_item),)
                    _outs_1 = _map_in_chunks(_body, in_dims=(0,))(x if len(x) == x.shape[0] else x[0:len(x):1])
                _h_all = _outs_1[0].unbind(0)
                for t in reversed(range(len(x))):
                    h = _h_all[t]
                    g = h + gamma * g
                    print(f'{t} {g.item():.4f}')
                    out.append(g)
            else:
                for t in reversed(range(len(x))):
                    h = torch.tanh(x[t] @ W).sum()
                    g = h + gamma * g
                    print(f'{t} {g.item():.4f}')
                    out.append(g)
            return (torch.stack(out), t)
        """
# a `break` counting down: its iterations would be counted first in another order; not split
STOPPED = """
    def f(x, W, m):
        g = 0
        for t in reversed(range(len(x))):
            h = torch.tanh(x[t] @ W).sum()
            if m[t] == 0:
                break
            g = h + 0.9 * g
        return g
    """


def test_golden():
    assert_golden(RETURNS, GOLDEN, {4: "distributed"})
    assert_golden(STOPPED, STOPPED, {3: "kept"})
    assert rewrite_source(STOPPED)[1].loops[0].reason.endswith(
        "not distributed: a `break` or `return` ends a loop over `reversed(range(...))`: its "
        "iterations are counted first only in the order they run")


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_residual_loop_counts_down_with_the_same_values(dtype, capsys):
    original, optimized, _, report = build(RETURNS)
    assert report.loops[0].strategy == "distributed"
    g = torch.Generator().manual_seed(1)
    x, W = torch.randn(6, 3, dtype=dtype, generator=g), torch.randn(3, 4, dtype=dtype, generator=g)
    for spoiled in (None, NAN, INF):
        if spoiled is not None:
            x[2, 0] = spoiled
        want, got = (outcome(fn, capsys, x, W, 0.9) for fn in (original, optimized))
        assert got[1] == want[1] and want[1].startswith("5 ")  # the same lines, counting down
        assert got[0][1] == want[0][1] == 0  # the loop variable after the loop
        assert got[0][0].dtype == want[0][0].dtype
        torch.testing.assert_close(got[0][0], want[0][0], equal_nan=True)
        assert_equivalent(original, optimized, x, W, 0.9)


# over the elements of a sequence counting down, `reversed(xs)`: the hoisted loop over `xs`, the
# residual loop as written reading its k-th iteration's values at -1 - k
ROWS = """
    def f(x, t):
        total = 0
        for r in reversed(x):
            l = F.mse_loss(r, t, reduction='sum')
            print(f'{l.item():.4f}')
            total = total * 0.5 + l
        return total, r
    """
ROWS_GOLDEN_TAIL = """
        _l_all = _outs_1[0].unbind(0)
        for _k, r in enumerate(reversed(x)):
            l = _l_all[-1 - _k]
            print(f'{l.item():.4f}')
            total = total * 0.5 + l
    else:
        for r in reversed(x):
            l = F.mse_loss(r, t, reduction='sum')
            print(f'{l.item():.4f}')
            total = total * 0.5 + l
    return (total, r)"""
ROWS_STOPPED = ROWS.replace("            print(", "            if l.item() > 9:\n"
                                         "                break\n            print(")


def test_golden_rows_counting_down():
    code, report = rewrite_source(ROWS)
    assert code.endswith(ROWS_GOLDEN_TAIL) and "_x_stacked" in code
    assert report.loops[0].strategy == "distributed"
    assert rewrite_source(code)[0] == code
    assert_golden(ROWS_STOPPED, ROWS_STOPPED, {3: "kept"})
    assert rewrite_source(ROWS_STOPPED)[1].loops[0].reason.endswith(
        "not distributed: a `break` or `return` ends a loop over `reversed(x)`: its "
        "iterations are counted first only in the order they run")


@pytest.mark.parametrize("as_list", [False, True], ids=["tensor", "list"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_counting_down_have_the_same_values(dtype, as_list, capsys):
    original, optimized, _, report = build(ROWS)
    assert report.loops[0].strategy == "distributed"
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(5, 3, dtype=dtype, generator=g), torch.randn(3, dtype=dtype, generator=g)
    for spoiled in (None, NAN, INF):
        if spoiled is not None:
            x[1, 2] = spoiled
        rows = list(x.unbind(0)) if as_list else x
        want, got = (outcome(fn, capsys, rows, t) for fn in (original, optimized))
        assert got[1] == want[1] and want[1].count("\n") == 5  # the same lines, in order
        torch.testing.assert_close(got[0][1], want[0][1])  # the loop variable after the loop
        assert got[0][0].dtype == want[0][0].dtype
        torch.testing.assert_close(got[0][0], want[0][0], equal_nan=True)
        leaves = x.clone().requires_grad_(), t.clone().requires_grad_()
        inputs = (list(leaves[0].unbind(0)) if as_list else leaves[0], leaves[1])
        assert_equivalent(lambda *a: original(*a)[0], lambda *a: optimized(*a)[0], *inputs)
