"""distribute_loops next to a call the registry does not know (a logger, a callback): the call
stays in the residual loop, in order; the loop index it is handed is a Python int, which no
call can change, so statements reading the index are still hoisted. A tensor it is handed may
be changed in place: the statement making it stays with the call. Golden before/after (with
the no-change case), equivalence of values, gradients and the calls' arguments in order."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent
from tests.loop_helpers import assert_golden, build, namespace, rewrite_source

SOURCES = {
    "index_and_number": """
        def f(x, y):
            total = 0
            for i in range(len(x)):
                l = F.mse_loss(x[i], y[i])
                record(i, l.item())
                total = total + l
            return total
        """,
    # the callback may change `l` in place: its statement stays, nothing heavy is left
    "tensor_handed": """
        def f(x, y):
            for i in range(len(x)):
                l = F.mse_loss(x[i], y[i])
                record(i, l)
            return x.sum()
        """,
}
GOLDEN = {
    "index_and_number": """
        def f(x, y):
            total = 0
            if isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(y, torch.Tensor) and (len(x) <= y.shape[0]) and isinstance(len(x), int) and (len(x) > 0):
                'optimize_loss: loop at line 3 vectorized'
                if y.dim() == x.dim():
                    _x_row = x if len(x) == x.shape[0] else x[0:len(x):1]
                    _y_row = y if len(x) == y.shape[0] else y[0:len(x):1]
                    _t = F.mse_loss(_x_row, _y_row, reduction='none')
                    l = _t.reshape(len(_t), -1).mean(1)
                    _l_all_item = l
                    _outs_1 = (_l_all_item,)
                else:

                    def _body(_x_row, _y_row):
                        l = F.mse_loss(_x_row, _y_row)
                        _l_all_item = l
                        return (torch.as_tensor(_l_all_item),)
                    _outs_1 = _map_in_chunks(_body, in_dims=(0, 0))(x if len(x) == x.shape[0] else x[0:len(x):1], y if len(x) == y.shape[0] else y[0:len(x):1])
                _l_all = _outs_1[0].unbind(0)
                for i in range(len(x)):
                    l = _l_all[i]
                    record(i, l.item())
                    total = total + l
            else:
                for i in range(len(x)):
                    l = F.mse_loss(x[i], y[i])
                    record(i, l.item())
                    total = total + l
            return total
        """,
    "tensor_handed": SOURCES["tensor_handed"],
}
EXPECTED = {"index_and_number": {3: "distributed"}, "tensor_handed": {2: "kept"}}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_golden(name):
    assert_golden(SOURCES[name], GOLDEN[name], EXPECTED[name])


def test_reasons():
    kept = rewrite_source(SOURCES["tensor_handed"])[1].loops[0].reason
    assert "<test>:3 `l = F.mse_loss(x[i], y[i])`: binds `l`, which line 4 (residual) hands to " \
           "`record(...)`, which may change it" in kept
    split = rewrite_source(SOURCES["index_and_number"])[1].loops[0].reason
    assert split.startswith("line 4 hoisted into one loop (batched); residual loop: "
                            "<test>:5 `record(i, l.item())`: `record(i, l.item())` is evaluated "
                            "for its side effects")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_calls_see_the_same_arguments_in_order(dtype):
    calls, stop = [], []

    def record(*args):
        calls.append(args)
        if len(calls) in stop:
            raise RuntimeError("stop")

    original, optimized, _, _ = build(SOURCES["index_and_number"], namespace(record=record))
    x = torch.randn(5, 3, dtype=dtype)
    x[2, 1] = float("inf")
    x.requires_grad_()
    y = torch.randn(5, 3, dtype=dtype)
    assert_equivalent(original, optimized, x, y)  # values and every gradient
    calls.clear()
    want = original(x, y)
    got = optimized(x, y)
    assert got.dtype == want.dtype == dtype
    assert calls[:5] == calls[5:] and [c[0] for c in calls[:5]] == list(range(5))
    assert all(type(c[1]) is float for c in calls)
    calls.clear()
    stop += [4, 8]  # the fourth call of each run raises
    for fn in (original, optimized):
        with pytest.raises(RuntimeError, match="stop"):
            fn(x, y)
    assert calls[:4] == calls[4:]
