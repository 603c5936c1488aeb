"""``if not x[i].any(): break`` (``not t.all()``, ``not (x[i] > 0).any()``) is counted first and
distributed like ``if x[i].sum() == 0: break``: the stacked tests are ``e == 0``, whose truth is
``not``'s (NaN true, so ``not`` false; more than one element raises alike). Python's ``not`` of a
value that varies per iteration has no vectorized form, so the loop was kept. Equivalence of
the value, every gradient and the dtype in float32 and float64, breaking first, in the middle,
at a NaN row or never."""
from __future__ import annotations

import pytest
import torch

from rewrite import explain
from tests.helpers import equivalent_report
from tests.loop_helpers import assert_golden

SOURCES = {
    "none_left": """
        def f(x):
            total = 0
            for i in range(x.shape[0]):
                if not x[i].any():
                    break
                total = total + x[i].pow(2).sum()
            return total
        """,
    # the test reads a mask the loop carries: not counted first, kept
    "carried": """
        def f(x):
            alive = torch.ones(x.shape[0], dtype=torch.bool)
            total = x.new_zeros(())
            for t in range(x.shape[1]):
                if not alive.any():
                    break
                total = total + (x[:, t] * alive).sum()
                alive = alive & (x[:, t] > 0)
            return total
        """,
}
GOLDEN = {
    "none_left": '''
        def f(x):
            total = 0
            if isinstance(x, torch.Tensor) and x.shape[0] <= x.shape[0] and isinstance(x.shape[0], int) and (x.shape[0] > 0):
                'optimize_loss: loop at line 3 vectorized'
                _x_row = x if x.shape[0] == x.shape[0] else x[0:x.shape[0]:1]
                _stop = _x_row.reshape(len(_x_row), -1).any(1) == 0
                _tests_item = _stop
                _outs_1 = (_tests_item,)
                _n = _first_break(_outs_1[0])
                if not (isinstance(x, torch.Tensor) and _n <= x.shape[0] and isinstance(_n, int) and (_n > 0)):
                    'optimize_loss: as written, the loop at line 3: the runtime check of the iterations before the `break` failed'
                    for i in range(x.shape[0]):
                        if not x[i].any():
                            break
                        total = total + x[i].pow(2).sum()
                else:
                    _x_row_1 = x if _n == x.shape[0] else x[0:_n:1]
                    _total_part = 0

                    def _items_sum():
                        _t = _x_row_1.pow(2)
                        return (_t.sum(tuple(range(1, _t.dim()))) if _t.dim() > 1 else _t.reshape(len(_t), -1).sum(1)).sum(0)
                    _total_part = _summed_in_steps(_x_row_1.pow(2).sum(), _items_sum)
                    _outs_2 = (_total_part,)
                    if _outs_2[0].dtype in (torch.uint8, torch.int8, torch.int16, torch.int32) and torch.result_type(total, _outs_2[0]) != _outs_2[0].dtype or (isinstance(total, torch.Tensor) and total.dtype == torch.bool and (_outs_2[0].dtype == torch.int64)):
                        "optimize_loss: as written, the loop at line 3: a sum starts from a value of another dtype than its items': the original adds in the start's wider dtype (a sum of narrower integers may wrap around), or, for bools added to a bool, as a logical or"
                        for i in range(_n):
                            total = total + x[i].pow(2).sum()
                    else:
                        total = total + _outs_2[0]
            else:
                for i in range(x.shape[0]):
                    if not x[i].any():
                        break
                    total = total + x[i].pow(2).sum()
            return total
        ''',
    "carried": SOURCES["carried"],
}
EXPECTED = {"none_left": {3: "distributed"}, "carried": {4: "kept"}}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_golden(name):
    assert_golden(SOURCES[name], GOLDEN[name], EXPECTED[name])


def none_left(x):
    total = 0
    for i in range(x.shape[0]):
        if not x[i].any():
            break
        total = total + x[i].pow(2).sum()
    return total


def not_all_positive(x):
    total = 0
    for i in range(x.shape[0]):
        if not (x[i] > 0).all():
            break
        total = total + x[i].log().sum()
    return total


def no_positive(x):
    total = 0
    for i in range(x.shape[0]):
        if not (x[i] > 0).any():
            break
        total = total + x[i].exp().sum()
    return total


@pytest.mark.parametrize("fn", [none_left, not_all_positive, no_positive])
def test_negated_tests_are_distributed(fn):
    [loop] = explain(fn).loops
    assert loop.strategy == "distributed", loop.reason


def _rows(dtype, stop: int | None, nan: bool = False):
    g = torch.Generator().manual_seed(4)
    x = torch.rand(6, 3, generator=g, dtype=dtype) + 0.5
    if nan:
        x[2, 1] = float("nan")
    if stop is not None:
        x[stop] = 0.0
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stop", [0, 3, None])
@pytest.mark.parametrize("nan", [False, True])
@pytest.mark.parametrize("fn", [none_left, not_all_positive, no_positive])
def test_values_and_gradients(fn, dtype, stop, nan):
    x = _rows(dtype, stop, nan).requires_grad_()
    report = equivalent_report(fn, x)
    [loop] = report.loops
    # (breaking at the first iteration leaves none to vectorize: the loop runs as written)
    assert loop.vectorized_runs == (stop != 0) and not loop.failed_runs, loop.runs()
