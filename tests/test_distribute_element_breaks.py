"""distribute_loops on a loop over elements (``enumerate``, ``zip``) a data-dependent ``break``
or ``return`` ends (``distribute_breaks``): the hoisted loop iterates the first ``_n`` items of
each sequence (``x[:_n]``), the residual loop every item, breaking at the same one. Golden
before/after (with a no-change case: a list, whose slice the runtime check sends to the loop
as written), equivalence of values, every gradient and dtype (float32, float64) with log(0),
NaN and inf rows after the ``break``, printed lines."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent
from tests.loop_helpers import assert_golden, build
from tests.test_distribute_break import outcome

DTYPES = [torch.float32, torch.float64]
NAN, INF = float("nan"), float("inf")

ZIPPED = """
    def f(x, y, m):
        total = 0
        for a, b, c in zip(x, y, m):
            if c == 0:
                break
            l = F.mse_loss(a, b)
            print(f"{l.item():.4f}")
            total = total + torch.log(l)
        return total
    """
GOLDEN = """
        def f(x, y, m):
            total = 0
            if isinstance(x, torch.Tensor) and x.dim() > 0 and isinstance(y, torch.Tensor) and (y.dim() > 0) and isinstance(m, torch.Tensor) and (m.dim() > 0) and isinstance(min(len(x), len(y), len(m)), int) and (min(len(x), len(y), len(m)) > 0):
                'optimize_loss: loop at line 3 vectorized'
                a = x if len(x) == min(len(x), len(y), len(m)) else x[:min(len(x), len(y), len(m))]
                b = y if len(y) == min(len(x), len(y), len(m)) else y[:min(len(x), len(y), len(m))]
                c = m if len(m) == min(len(x), len(y), len(m)) else m[:min(len(x), len(y), len(m))]
                _stop = c == 0
                _tests_item = _stop
                _outs_2 = (_tests_item,)
                _n = _first_break(_outs_2[0])
                _stops = _outs_2[0].unbind(0)
                if not (isinstance(x[:_n], torch.Tensor) and x[:_n].dim() > 0 and isinstance(y[:_n], torch.Tensor) and (y[:_n].dim() > 0) and isinstance(m[:_n], torch.Tensor) and (m[:_n].dim() > 0) and isinstance(min(len(x[:_n]), len(y[:_n]), len(m[:_n])), int) and (min(len(x[:_n]), len(y[:_n]), len(m[:_n])) > 0)):
                    'optimize_loss: as written, the loop at line 3: the runtime check of the iterations before the `break` failed'
                    for a, b, c in zip(x, y, m):
                        if c == 0:
                            break
                        l = F.mse_loss(a, b)
                        print(f'{l.item():.4f}')
                        total = total + torch.log(l)
                else:
                    if y[:_n].dim() == x[:_n].dim():
                        a = x[:_n] if len(x[:_n]) == min(len(x[:_n]), len(y[:_n]), len(m[:_n])) else x[:_n][:min(len(x[:_n]), len(y[:_n]), len(m[:_n]))]
                        b = y[:_n] if len(y[:_n]) == min(len(x[:_n]), len(y[:_n]), len(m[:_n])) else y[:_n][:min(len(x[:_n]), len(y[:_n]), len(m[:_n]))]
                        c = m[:_n] if len(m[:_n]) == min(len(x[:_n]), len(y[:_n]), len(m[:_n])) else m[:_n][:min(len(x[:_n]), len(y[:_n]), len(m[:_n]))]
                        _t = F.mse_loss(a, b, reduction='none')
                        l = _t.reshape(len(_t), -1).mean(1)
                        _l_all_item = l
                        _outs_1 = (_l_all_item,)
                    else:
        
                        def _body(a, b, c):
                            l = F.mse_loss(a, b)
                            _l_all_item = l
                            return (torch.as_tensor(_l_all_item),)
                        _outs_1 = _map_in_chunks(_body, in_dims=(0, 0, 0))(x[:_n] if len(x[:_n]) == min(len(x[:_n]), len(y[:_n]), len(m[:_n])) else x[:_n][:min(len(x[:_n]), len(y[:_n]), len(m[:_n]))], y[:_n] if len(y[:_n]) == min(len(x[:_n]), len(y[:_n]), len(m[:_n])) else y[:_n][:min(len(x[:_n]), len(y[:_n]), len(m[:_n]))], m[:_n] if len(m[:_n]) == min(len(x[:_n]), len(y[:_n]), len(m[:_n])) else m[:_n][:min(len(x[:_n]), len(y[:_n]), len(m[:_n]))])
                    _l_all = _outs_1[0].unbind(0)
                    for _k, (a, b, c) in enumerate(zip(x, y, m)):
                        if _k == _n:
                            if _stops[_k]:
                                break
                        l = _l_all[_k]
                        print(f'{l.item():.4f}')
                        total = total + torch.log(l)
            else:
                for a, b, c in zip(x, y, m):
                    if c == 0:
                        break
                    l = F.mse_loss(a, b)
                    print(f'{l.item():.4f}')
                    total = total + torch.log(l)
            return total
        """
# a `break` under a nested condition: not split
NESTED = """
    def f(x, y):
        total = 0
        for k, row in enumerate(x):
            l = F.mse_loss(row, y[k])
            if k > 0:
                if l.item() > 1:
                    break
            total = total + l
        return total
    """


def test_golden():
    assert_golden(ZIPPED, GOLDEN, {3: "distributed"})
    assert_golden(NESTED, NESTED, {3: "kept"})


ENUMERATED = """
    def f(x, y, th):
        total = 0
        for k, row in enumerate(x):
            l = F.mse_loss(row, y[k])
            if l.item() > th:
                print("return at", k)
                return total / (k + 1)
            total = total + torch.log(l)
        return total
    """


def assert_same(src, capsys, *inputs):
    """Value, dtype, printed lines and every gradient of the original's, exactly 0 at the
    rows it never differentiates."""
    original, optimized, _, report = build(src)
    assert report.loops[0].strategy == "distributed", report.loops[0].reason
    want, got = outcome(original, capsys, *inputs), outcome(optimized, capsys, *inputs)
    assert got[1] == want[1]
    if not isinstance(want[0], torch.Tensor):  # a break at the first row: the number 0
        assert got[0] == want[0] and type(got[0]) is type(want[0])
        return want
    assert got[0].dtype == want[0].dtype
    torch.testing.assert_close(got[0], want[0], equal_nan=True)
    for g, w in zip(got[2], want[2]):
        torch.testing.assert_close(g, w, equal_nan=True)
        assert torch.equal(g == 0, w == 0)
    assert_equivalent(original, optimized, *inputs)
    return want


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_after_the_break_take_no_gradient(dtype, capsys):
    x = torch.rand(7, 3, dtype=dtype, generator=torch.Generator().manual_seed(1)) + 0.5
    y = torch.rand(7, 3, dtype=dtype, generator=torch.Generator().manual_seed(2))
    x[4:], y[4:] = torch.tensor([[1.0, 1, 1], [NAN, 1, 1], [INF, 1, 1]], dtype=dtype), 1.0
    want = assert_same(ZIPPED, capsys, x, y, torch.tensor([1, 2, 1, 1, 0, 1, 1]))
    assert want[1].count("\n") == 4 and (want[2][0][4:] == 0).all()
    for m in ([1] * 7, [0] + [1] * 6):
        x[4:] = 1.5
        assert_same(ZIPPED, capsys, x, y, torch.tensor(m))
    x = y + 0.1  # losses 0.01, then row 4 returns; after it a loss of 0 (log: -inf) and NaN
    x[4], x[5], x[6] = y[4] + 1, y[5], NAN
    want = assert_same(ENUMERATED, capsys, x, y, 0.05)
    assert want[1] == "return at 4\n" and (want[2][0][4:] == 0).all()
    assert_same(ENUMERATED, capsys, x[:4], y, 0.05)  # no row returns


def test_a_list_runs_the_loop_as_written(capsys):
    x = list(torch.rand(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))
    y = torch.rand(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    original, optimized, _, _ = build(ZIPPED)
    m = torch.tensor([1, 1, 0, 1, 1])
    want, got = outcome(original, capsys, x, y, m), outcome(optimized, capsys, x, y, m)
    assert got[1] == want[1] and want[1].count("\n") == 2
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    for g, w in zip(got[2], want[2]):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_an_index_by_an_elements_value_keeps_the_loop(capsys):
    """`w[c]` by a label of the loop: the runtime check bounds the loop's index, not the values
    of its elements; label 9 after the break would raise if every test came first."""
    src = """
        def f(x, labels, w):
            total = 0
            for c, row in zip(labels, x):
                if w[c] == 0:
                    break
                l = (row * row).sum()
                print(l.item())
                total = total + l
            return total
        """
    original, optimized, _, report = build(src)
    assert report.loops[0].reason.endswith(
        "not distributed: <test>:4 `w[c]` may raise on the iterations after the `break`, and the "
        "`break` test needs it in every iteration to count them first")
    x = torch.rand(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    labels, w = torch.tensor([0, 1, 2, 9, 1]), torch.tensor([1.0, 1.0, 0.0])
    want, got = (outcome(fn, capsys, x.requires_grad_(), labels, w)
                 for fn in (original, optimized))
    assert got[1] == want[1] and want[1].count("\n") == 2
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
