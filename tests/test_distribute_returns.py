"""distribute_loops on a loop a data-dependent ``return`` ends (``distribute_breaks``, as a
``break``): the ``return`` test of every iteration is computed first, the hoisted loop runs only
over the iterations before the one that returns, which runs as written and returns the same
value. Golden before/after (with a no-change case), equivalence of values, every gradient and
dtype (float32, float64) with log(0), NaN and inf rows after the ``return``, a class index out
of range there (no exception), printed lines, the exception at the same iteration, refusals
with their reasons."""
from __future__ import annotations

import pytest
import torch

from tests.loop_helpers import assert_golden, build, rewrite_source
from tests.test_distribute_break import assert_same, outcome

DTYPES = [torch.float32, torch.float64]
NAN, INF = float("nan"), float("inf")

# the value returned reads the hoisted loss of the iteration that returns (computed as written)
# and the residual accumulator
FALLBACK = """
    def f(x, y, m):
        total = 0
        for i in range(len(x)):
            l = F.mse_loss(x[i], y[i])
            if m[i] == 0:
                print("fallback at", i)
                return total * 2 + l
            print(f"{i}: {l.item():.4f}")
            total = total + torch.log(l)
        return total
    """
# a `return` under a nested condition: not split
NESTED = """
    def f(x, y, m):
        total = 0
        for i in range(len(x)):
            l = F.mse_loss(x[i], y[i])
            if m[i] > 0:
                if m[i] > 1:
                    return total
            total = total + torch.log(l)
        return total
    """
GOLDEN = """
        def f(x, y, m):
            total = 0
            if isinstance(m, torch.Tensor) and len(x) <= m.shape[0] and isinstance(len(x), int) and (len(x) > 0):
                'optimize_loss: loop at line 3 vectorized'
                _m_row = m if len(x) == m.shape[0] else m[0:len(x):1]
                _stop = _m_row == 0
                _tests_item = _stop
                _outs_2 = (_tests_item,)
                _n = _first_break(_outs_2[0])
                _stops = _outs_2[0].unbind(0)
                if not (isinstance(x, torch.Tensor) and _n <= x.shape[0] and isinstance(y, torch.Tensor) and (_n <= y.shape[0]) and isinstance(_n, int) and (_n > 0)):
                    'optimize_loss: as written, the loop at line 3: the runtime check of the iterations before the `return` failed'
                    for i in range(len(x)):
                        l = F.mse_loss(x[i], y[i])
                        if m[i] == 0:
                            print('fallback at', i)
                            return total * 2 + l
                        print(f'{i}: {l.item():.4f}')
                        total = total + torch.log(l)
                else:
                    if y.dim() == x.dim():
                        _x_row = x if _n == x.shape[0] else x[0:_n:1]
                        _y_row = y if _n == y.shape[0] else y[0:_n:1]
                        _t = F.mse_loss(_x_row, _y_row, reduction='none')
                        l = _t.reshape(len(_t), -1).mean(1)
                        _l_all_item = l
                        _outs_1 = (_l_all_item,)
                    else:
        
                        def _body(_x_row, _y_row):
                            l = F.mse_loss(_x_row, _y_row)
                            _l_all_item = l
                            return (torch.as_tensor(_l_all_item),)
                        _outs_1 = _map_in_chunks(_body, in_dims=(0, 0))(x if _n == x.shape[0] else x[0:_n:1], y if _n == y.shape[0] else y[0:_n:1])
                    _l_all = _outs_1[0].unbind(0)
                    for i in range(len(x)):
                        if i == _n:
                            l = F.mse_loss(x[i], y[i])
                            if _stops[i]:
                                print('fallback at', i)
                                return total * 2 + l
                        l = _l_all[i]
                        print(f'{i}: {l.item():.4f}')
                        total = total + torch.log(l)
            else:
                for i in range(len(x)):
                    l = F.mse_loss(x[i], y[i])
                    if m[i] == 0:
                        print('fallback at', i)
                        return total * 2 + l
                    print(f'{i}: {l.item():.4f}')
                    total = total + torch.log(l)
            return total
        """


def test_golden():
    assert_golden(FALLBACK, GOLDEN, {3: "distributed"})
    assert_golden(NESTED, NESTED, {3: "kept"})


def test_reasons():
    assert rewrite_source(FALLBACK)[1].loops[0].reason.startswith(
        "line 4 hoisted into one loop (batched, over the iterations before the `return` at line "
        "5, counted first); residual loop: <test>:5 `if m[i] == 0 ...`: `return` inside the loop")
    assert rewrite_source(NESTED)[1].loops[0].reason.endswith(
        "not distributed: <test>:7 `return total` leaves the iteration early")


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_after_the_return_take_no_gradient(dtype, capsys):
    """Rows after the one that returns hold 0 (log: -inf, an infinite derivative), NaN and inf:
    computed and differentiated there, a zero cotangent would make their gradient NaN."""
    x = torch.rand(7, 3, dtype=dtype, generator=torch.Generator().manual_seed(1)) + 0.5
    y = torch.rand(7, 3, dtype=dtype, generator=torch.Generator().manual_seed(2))
    x[4:], y[4:] = torch.tensor([[NAN, 1, 1], [INF, 1, 1], [1.0, 1, 1]], dtype=dtype), 1.0
    want = assert_same(FALLBACK, capsys, x, y, torch.tensor([1, 2, 1, 0, 1, 1, 1]))
    assert want[1].endswith("fallback at 3\n") and (want[2][0][4:] == 0).all()
    for m in ([1] * 7, [0] + [1] * 6, [1] * 6 + [0]):  # no return, the first row, the last
        x[4:] = 1.0
        assert_same(FALLBACK, capsys, x, y, torch.tensor(m))


CLASSES_AFTER = """
    def f(x, y, m):
        total = 0
        for i in range(len(x)):
            if m[i] < 0.5:
                return total / (i + 1)
            l = F.cross_entropy(x[i:i+1], y[i:i+1])
            total += l
        return total
    """


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_class_index_out_of_range_after_the_return_raises_nowhere(dtype, capsys):
    x = torch.randn(6, 4, dtype=dtype, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 3, 1, 99, -5, 2])
    assert_same(CLASSES_AFTER, capsys, x, y, torch.tensor([1.0, 1, 1, 0, 1, 1], dtype=dtype))
    err = assert_same(CLASSES_AFTER, capsys, x, y,  # NaN returns nowhere: the original raises
                      torch.tensor([1.0, 1, 1, NAN, 1, 1], dtype=dtype))[0]
    assert err[0] is IndexError


def test_the_residual_loop_raises_at_the_same_iteration(capsys):
    src = """
        def f(x, m, th):
            total = 0
            for i in range(len(x)):
                l = (x[i] ** 2).sum()
                if m[i] == 0:
                    return l
                print(i)
                assert l.item() < th, f"row {i}"
                total = total + l
            return total
        """
    x = torch.arange(12, dtype=torch.float64).reshape(6, 2)
    m = torch.tensor([1, 1, 1, 1, 0, 1])
    err, printed, _ = assert_same(src, capsys, x, m, 50.0)  # row 3: 36 + 49 > 50
    assert err == (AssertionError, "row 3") and printed == "0\n1\n2\n3\n"
    value, printed, _ = assert_same(src, capsys, x, m, 1e9)  # the return first: row 4's value
    assert value.item() == 64 + 81 and printed == "0\n1\n2\n3\n"


@pytest.mark.parametrize("stop", ["break", "return total"])
def test_an_index_the_runtime_check_does_not_bound_keeps_the_loop(stop, capsys):
    """`y[i - 1]` in the test is out of range after the iteration that stops (y is shorter):
    computed for every iteration first it would raise where the original stops before. The rule
    is on the index's form: the first such subscript (`x[i - 1]`) is named."""
    src = f"""
        def f(x, y, th):
            total = 0
            for i in range(1, len(x) + 1):
                l = F.mse_loss(x[i - 1], y[i - 1])
                if l.item() > th:
                    {stop}
                print(i, l.item())
                total = total + torch.log(l)
            return total
        """
    original, optimized, _, report = build(src)
    assert report.loops[0].reason.endswith(
        f"not distributed: <test>:4 `x[i - 1]` may raise on the iterations after the "
        f"`{stop.split()[0]}`, and the `{stop.split()[0]}` test needs it in every iteration to "
        "count them first")
    x = torch.rand(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    y = x[:4] + 0.1  # losses 0.01; row 2's is 1: stops there, before y runs out
    y[2] += 0.9
    want, got = (outcome(fn, capsys, x.requires_grad_(), y, 0.5) for fn in (original, optimized))
    assert got[1] == want[1] and want[1].count("\n") == 2
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
