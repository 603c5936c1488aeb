"""distribute_loops when the residual loop changes a hoisted value in place (``l *= w[i]``
after ``l = <the stacked value>``): it reads a copy of the stacked value, when the original's
value had memory of its own (else the split is not made). Golden before/after with a kept
case, equivalence (value, every gradient, float32 and float64, NaN/inf in skipped rows, the
printed lines)."""
from __future__ import annotations

import pytest
import torch

from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, normalise, rewrite_source, strategies

DTYPES = [torch.float32, torch.float64]

SOURCES = {
    # the loss of a selected row, weighted in place and printed
    "weighted_in_place": """
        def f(x, y, m, w):
            total = 0
            for i in range(len(x)):
                if m[i] > 0:
                    l = F.mse_loss(x[i], y[i])
                    l *= w[i]
                    print(f"{i}: {l.item():.4f}")
                    total += l
            return total
        """,
    # a view (`.view(-1)`) of the value: a copy would not be changed where the original is
    "view_changed_in_place": """
        def f(x, m, w):
            total = 0
            for i in range(len(x)):
                if m[i] > 0:
                    l = x[i].sum(1).view(-1)
                    l *= w[i]
                    print(l)
                    total += l
            return total
        """,
}
EXPECTED = {"weighted_in_place": {3: "distributed"}, "view_changed_in_place": {3: "kept"}}

GOLDEN = {
    "weighted_in_place": """
        def f(x, y, m, w):
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
                    _value = _value_all[i].clone()
                    if m[i] > 0:
                        l = _value
                        l *= w[i]
                        print(f'{i}: {l.item():.4f}')
                        total += l
            else:
                for i in range(len(x)):
                    if m[i] > 0:
                        l = F.mse_loss(x[i], y[i])
                        l *= w[i]
                        print(f'{i}: {l.item():.4f}')
                        total += l
            return total
        """,
    "view_changed_in_place": SOURCES["view_changed_in_place"],
}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_golden(name):
    code, report = rewrite_source(SOURCES[name])
    assert code == normalise(GOLDEN[name])
    assert strategies(report) == EXPECTED[name]
    assert rewrite_source(code)[0] == code  # a second run changes nothing


def test_a_view_changed_in_place_is_not_copied():
    reason = rewrite_source(SOURCES["view_changed_in_place"])[1].loops[0].reason
    assert "changes in place a value made in the iteration, which may share memory" in reason


@pytest.mark.parametrize("dtype", DTYPES)
def test_weighted_in_place_is_equivalent(dtype, capsys):
    original, optimized, _, report = build(SOURCES["weighted_in_place"])
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, generator=g, dtype=dtype)
    x[1, 2], x[4, 0] = float("nan"), float("inf")  # rows the condition skips
    y = torch.randn(6, 4, generator=g, dtype=dtype)
    m = torch.tensor([1.0, -1.0, 2.0, 1.0, 0.0, 3.0], dtype=dtype)
    w = torch.rand(6, generator=g, dtype=dtype).requires_grad_()
    inputs = (x.requires_grad_(), y, m, w)
    want = original(*inputs)
    printed = capsys.readouterr().out
    got = optimized(*inputs)
    assert capsys.readouterr().out == printed and printed.count("\n") == 4
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert_equivalent(original, optimized, *inputs)
    assert report.loops[0].strategy == "distributed"
