"""distribute_loops on a loop that accumulates into attributes of an object
(``state.total += loss``, ``self.acc_loss += ...``): the heavy operand of such a statement is
hoisted (the attribute is stored after the value is evaluated), and a hoisted statement that
reads other attributes of the object than the residual loop writes (``state.scale``) stays
hoisted. Golden before/after (with the no-change case: the operand reads an attribute the
residual loop writes), equivalence of values, every gradient and dtype, the attributes after
the loop, printed lines and the exception at the same iteration."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rewrite import assert_equivalent
from tests.loop_helpers import assert_golden, build, rewrite_source

SOURCES = {
    "attribute_sums": """
        def f(state, x, y):
            for i in range(len(x)):
                state.total += F.mse_loss(x[i], y[i]) * state.scale
                state.n += 1
                assert state.n <= state.limit, "too many"
                print(i, state.n)
            return state.total
        """,
    # the operand reads `state.n`, which the residual loop changes: nothing is hoisted
    "reads_what_the_residual_writes": """
        def f(state, x, y):
            for i in range(len(x)):
                state.total += F.mse_loss(x[i], y[i]) * state.n
                state.n += 1
            return state.total
        """,
}
GOLDEN = {
    "attribute_sums": """
        def f(state, x, y):
            if isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(y, torch.Tensor) and (len(x) <= y.shape[0]) and isinstance(len(x), int) and (len(x) > 0) and (not _rounds_gradients(getattr(state, 'scale', None))):
                'optimize_loss: loop at line 2 vectorized'
                if y.dim() == x.dim() and (not isinstance(state.scale, torch.Tensor)):
                    _x_row = x if len(x) == x.shape[0] else x[0:len(x):1]
                    _y_row = y if len(x) == y.shape[0] else y[0:len(x):1]
                    _t = F.mse_loss(_x_row, _y_row, reduction='none')
                    _value = _t.reshape(len(_t), -1).mean(1) * state.scale
                    _value_all_item = _value
                    _outs_1 = (_value_all_item,)
                else:

                    def _body(_x_row, _y_row):
                        _value = F.mse_loss(_x_row, _y_row) * state.scale
                        _value_all_item = _value
                        return (torch.as_tensor(_value_all_item),)
                    _outs_1 = _map_in_chunks(_body, in_dims=(0, 0))(x if len(x) == x.shape[0] else x[0:len(x):1], y if len(x) == y.shape[0] else y[0:len(x):1])
                _value_all = _outs_1[0].unbind(0)
                for i in range(len(x)):
                    _value = _value_all[i]
                    state.total += _value
                    state.n += 1
                    assert state.n <= state.limit, 'too many'
                    print(i, state.n)
            else:
                for i in range(len(x)):
                    state.total += F.mse_loss(x[i], y[i]) * state.scale
                    state.n += 1
                    assert state.n <= state.limit, 'too many'
                    print(i, state.n)
            return state.total
        """,
    "reads_what_the_residual_writes": SOURCES["reads_what_the_residual_writes"],
}
EXPECTED = {"attribute_sums": {2: "distributed"}, "reads_what_the_residual_writes": {2: "kept"}}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_golden(name):
    assert_golden(SOURCES[name], GOLDEN[name], EXPECTED[name])


def test_reasons():
    split = rewrite_source(SOURCES["attribute_sums"])[1].loops[0].reason
    assert split.startswith("line 3 hoisted into one loop (batched); residual loop: <test>:3 "
                            "`state.total += F.mse_loss(x[i], y[i]) * state.scale`: assigns "
                            "`state.total`: mutates an object")
    kept = rewrite_source(SOURCES["reads_what_the_residual_writes"])[1].loops[0].reason
    assert "reads `state`, which line 4 (residual) changes in place" in kept


def fresh(fn, limit=10):
    """``fn`` on a new state each call: (its result, the state's attributes after it)."""
    def run(x, y):
        state = SimpleNamespace(total=0, n=0, scale=0.5, limit=limit)
        out = fn(state, x, y)
        return out, state.n, state.total
    return run


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_gradients_state_and_printed_lines(dtype, capsys):
    original, optimized, _, _ = build(SOURCES["attribute_sums"])
    x = torch.randn(5, 3, dtype=dtype)
    x[1, 0] = float("inf")
    x.requires_grad_()
    y = torch.randn(5, 3, dtype=dtype)
    assert_equivalent(fresh(original), fresh(optimized), x, y)
    capsys.readouterr()
    want, got = fresh(original)(x, y), fresh(optimized)(x, y)
    assert got[0].dtype == want[0].dtype == dtype and got[1] == want[1] == 5
    lines = capsys.readouterr().out.splitlines()
    assert lines[:5] == lines[5:]
    for fn in (original, optimized):  # the fourth iteration raises, after three printed lines
        with pytest.raises(AssertionError, match="too many"):
            fresh(fn, limit=3)(x, y)
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == lines[3:] and len(lines) == 6
