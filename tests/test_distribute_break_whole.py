"""distribute_loops on a loop over a ``range`` a data-dependent ``break`` (or ``return``) ends,
whose other statements are one vectorizable loop body (``_counted_whole``): the ``break`` test of
every iteration first, then the whole body without the ``if`` vectorized over the iterations
before the one that breaks (accumulators folded: no residual loop, no per-step Python), then
that iteration as written. Golden before/after (with a no-change case), equivalence of values,
every gradient (exactly 0 at the rows the original never reaches: log of 0, NaN, inf there) and
dtype (float32, float64), the break at the first, a middle, the last step and never, the index
after the loop, a ``return``, the original's exception."""
from __future__ import annotations

import pytest
import torch

from tests.loop_helpers import assert_golden, rewrite_source
from tests.test_distribute_break import assert_same

DTYPES = [torch.float32, torch.float64]
NAN, INF = float("nan"), float("inf")
WHOLE = "vectorized as one loop"  # the report's reason of this form

SOURCES = {
    # a counted `while` loop ending at the first all-padding step (seq2seq teacher forcing)
    "eos_while": """
        def f(logits, targets):
            loss, count, t = 0, 0, 0
            while t < logits.shape[1]:
                if (targets[:, t] == 0).all():
                    break
                loss = loss + F.cross_entropy(logits[:, t], targets[:, t], ignore_index=0,
                                              reduction="sum")
                count = count + (targets[:, t] != 0).sum()
                t += 1
            return loss / count
        """,
    # the iteration that breaks runs its branch; the index is read after the loop
    "index_after": """
        def f(x, m):
            total = 0
            for i in range(len(x)):
                if m[i] == 0:
                    total = total * 2
                    break
                total = total + torch.log(x[i]).sum()
            return total * (i + 1)
        """,
    # the test reads what the loop accumulates: its iterations cannot be counted first
    "carried_test": """
        def f(x):
            total = 0
            for i in range(len(x)):
                if total > 3:
                    break
                total = total + F.mse_loss(x[i], x[i] * 2)
            return total
        """,
}
GOLDEN = {
    "eos_while": """
def f(logits, targets):
    loss, count, t = (0, 0, 0)
    if type(t) is int and type(logits.shape[1]) is int:
        'optimize_loss: the counted `while` loop at line 3 runs as a `for` loop'
        if t >= 0 and isinstance(targets, torch.Tensor) and (logits.shape[1] <= targets.shape[1]) and isinstance(t, int) and isinstance(logits.shape[1], int) and (logits.shape[1] > t):
            'optimize_loss: loop at line 3 vectorized'
            _targets_row = (targets if logits.shape[1] == targets.shape[1] and t == 0 else targets[:, t:logits.shape[1]:1]).movedim(1, 0)
            _t = _targets_row == 0
            _stop = _t.reshape(len(_t), -1).all(1)
            _tests_item = _stop
            _outs_1 = (_tests_item,)
            _n = _first_break(_outs_1[0])
            if not (t >= 0 and isinstance(logits, torch.Tensor) and (t + _n <= logits.shape[1]) and isinstance(targets, torch.Tensor) and (t + _n <= targets.shape[1]) and isinstance(t, int) and isinstance(t + _n, int) and (t + _n > t)):
                'optimize_loss: as written, the loop at line 3: the runtime check of the iterations before the `break` failed'
                for t in range(t, logits.shape[1]):
                    if (targets[:, t] == 0).all():
                        break
                    loss = loss + F.cross_entropy(logits[:, t], targets[:, t], ignore_index=0, reduction='sum')
                    count = count + (targets[:, t] != 0).sum()
            else:
                if logits.dim() == targets.dim() + 1 and 2 >= targets.dim() and (targets.dtype in (torch.int64, torch.int32)):
                    _logits_row = (logits if t + _n == logits.shape[1] and t == 0 else logits[:, t:t + _n:1]).movedim(1, 0)
                    _targets_row_1 = (targets if t + _n == targets.shape[1] and t == 0 else targets[:, t:t + _n:1]).movedim(1, 0)
                    _loss_part = 0
                    _count_part = 0
                    _loss_part = _summed_in_steps(_loss_of_rows(F.cross_entropy, _logits_row, _targets_row_1, 'sum', ignore_index=0), lambda: _loss_of_items(F.cross_entropy, _logits_row, _targets_row_1, 'sum', ignore_index=0).sum(0))

                    def _items_sum():
                        _t_1 = _targets_row_1 != 0
                        return (_t_1.sum(tuple(range(1, _t_1.dim()))) if _t_1.dim() > 1 else _t_1.reshape(len(_t_1), -1).sum(1)).sum(0)
                    _count_part = _summed_in_steps((_targets_row_1 != 0).sum(), _items_sum)
                    _outs_2 = (_loss_part, _count_part)
                else:

                    def _body_1(_logits_row, _targets_row_1):
                        _loss_part = 0
                        _count_part = 0
                        _loss_part = _loss_part + _cross_entropy(_logits_row, _targets_row_1, ignore_index=0, reduction='sum')
                        _count_part = _count_part + (_targets_row_1 != 0).sum()
                        return (torch.as_tensor(_loss_part), torch.as_tensor(_count_part))
                    _outs_2 = _map_in_chunks(_body_1, in_dims=(1, 1))(logits if t + _n == logits.shape[1] and t == 0 else logits[:, t:t + _n:1], targets if t + _n == targets.shape[1] and t == 0 else targets[:, t:t + _n:1])
                    _outs_2 = (_outs_2[0].sum(0), _outs_2[1].sum(0))
                if (_outs_2[0].dtype in (torch.uint8, torch.int8, torch.int16, torch.int32) and torch.result_type(loss, _outs_2[0]) != _outs_2[0].dtype or (isinstance(loss, torch.Tensor) and loss.dtype == torch.bool and (_outs_2[0].dtype == torch.int64))) or (_outs_2[1].dtype in (torch.uint8, torch.int8, torch.int16, torch.int32) and torch.result_type(count, _outs_2[1]) != _outs_2[1].dtype or (isinstance(count, torch.Tensor) and count.dtype == torch.bool and (_outs_2[1].dtype == torch.int64))):
                    "optimize_loss: as written, the loop at line 3: a sum starts from a value of another dtype than its items': the original adds in the start's wider dtype (a sum of narrower integers may wrap around), or, for bools added to a bool, as a logical or"
                    for t in range(t, t + _n):
                        loss = loss + F.cross_entropy(logits[:, t], targets[:, t], ignore_index=0, reduction='sum')
                        count = count + (targets[:, t] != 0).sum()
                else:
                    loss = loss + _outs_2[0]
                    count = count + _outs_2[1]
        else:
            for t in range(t, logits.shape[1]):
                if (targets[:, t] == 0).all():
                    break
                loss = loss + F.cross_entropy(logits[:, t], targets[:, t], ignore_index=0, reduction='sum')
                count = count + (targets[:, t] != 0).sum()
    else:
        while t < logits.shape[1]:
            if (targets[:, t] == 0).all():
                break
            loss = loss + F.cross_entropy(logits[:, t], targets[:, t], ignore_index=0, reduction='sum')
            count = count + (targets[:, t] != 0).sum()
            t += 1
    return loss / count
""",
    "index_after": """
def f(x, m):
    total = 0
    if isinstance(m, torch.Tensor) and len(x) <= m.shape[0] and isinstance(len(x), int) and (len(x) > 0):
        'optimize_loss: loop at line 3 vectorized'
        _m_row = m if len(x) == m.shape[0] else m[0:len(x):1]
        _stop = _m_row == 0
        _tests_item = _stop
        _outs_1 = (_tests_item,)
        _n = _first_break(_outs_1[0])
        _at = _n
        if not (isinstance(x, torch.Tensor) and _n <= x.shape[0] and isinstance(_n, int) and (_n > 0)):
            'optimize_loss: as written, the loop at line 3: the runtime check of the iterations before the `break` failed'
            for i in range(len(x)):
                if m[i] == 0:
                    total = total * 2
                    break
                total = total + torch.log(x[i]).sum()
        else:
            _x_row = x if _n == x.shape[0] else x[0:_n:1]
            _total_part = 0

            def _items_sum():
                _t = torch.log(_x_row)
                return (_t.sum(tuple(range(1, _t.dim()))) if _t.dim() > 1 else _t.reshape(len(_t), -1).sum(1)).sum(0)
            _total_part = _summed_in_steps(torch.log(_x_row).sum(), _items_sum)
            _outs_2 = (_total_part,)
            if _outs_2[0].dtype in (torch.uint8, torch.int8, torch.int16, torch.int32) and torch.result_type(total, _outs_2[0]) != _outs_2[0].dtype or (isinstance(total, torch.Tensor) and total.dtype == torch.bool and (_outs_2[0].dtype == torch.int64)):
                "optimize_loss: as written, the loop at line 3: a sum starts from a value of another dtype than its items': the original adds in the start's wider dtype (a sum of narrower integers may wrap around), or, for bools added to a bool, as a logical or"
                for i in range(_n):
                    total = total + torch.log(x[i]).sum()
            else:
                i = _n - 1
                total = total + _outs_2[0]
            if _n < len(_outs_1[0]):
                i = _at
                total = total * 2
    else:
        for i in range(len(x)):
            if m[i] == 0:
                total = total * 2
                break
            total = total + torch.log(x[i]).sum()
    return total * (i + 1)
""",
    "carried_test": """
        def f(x):
            total = 0
            for i in range(len(x)):
                if total > 3:
                    break
                total = total + F.mse_loss(x[i], x[i] * 2)
            return total
        """,
}
EXPECTED = {"eos_while": {3: "distributed"}, "index_after": {3: "distributed"},
            "carried_test": {3: "kept"}}
RETURNS = """
    def f(x, m):
        total = 0
        for i in range(len(x)):
            if m[i] == 0:
                return total * (i + 2)
            total = total + torch.log(x[i]).sum()
        return total
    """


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_golden(name):
    assert_golden(SOURCES[name], GOLDEN[name], EXPECTED[name])


def assert_whole(src, capsys, *inputs):
    """``src``'s loop takes this form, and runs as the original does (``assert_same``)."""
    assert WHOLE in rewrite_source(src)[1].loops[0].reason
    return assert_same(src, capsys, *inputs)


def sequences(dtype, stop):
    """Logits [3, 6, 5] and targets with every step from ``stop`` on all padding (0); None:
    no such step."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 6, 5, generator=g, dtype=dtype)
    targets = torch.randint(1, 5, (3, 6), generator=g)
    targets[0, 1] = 0  # padding before the stop, ignored
    if stop is not None:
        targets[:, stop:] = 0
    return logits, targets


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stop", [1, 3, 5, None])
def test_padding_at_a_middle_or_the_last_step_or_never(dtype, stop, capsys):
    assert_whole(SOURCES["eos_while"], capsys, *sequences(dtype, stop))


@pytest.mark.parametrize("dtype", DTYPES)
def test_padding_at_the_first_step_raises_as_the_original(dtype, capsys):
    want = assert_whole(SOURCES["eos_while"], capsys, *sequences(dtype, 0))
    assert want[0][0] is ZeroDivisionError


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("src", ["index_after", "returns"])
def test_rows_after_the_break_take_no_gradient(dtype, src, capsys):
    """The break row and the rows after it hold 0 (log: -inf, an infinite derivative), NaN,
    inf and -1; the value reads the index after the loop (the breaking one's), or is returned
    there."""
    x = torch.rand(7, 3, dtype=dtype, generator=torch.Generator().manual_seed(1)) + 0.5
    x[3:] = torch.tensor([[0.0, 1, 1], [NAN, 1, 1], [INF, 1, 1], [-1.0, 1, 1]], dtype=dtype)
    m = torch.tensor([1, 2, 1, 0, 1, 1, 1])
    want = assert_whole(SOURCES["index_after"] if src == "index_after" else RETURNS, capsys, x, m)
    assert (want[2][0][3:] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("src", ["index_after", "returns"])
def test_no_break_leaves_the_last_index(dtype, src, capsys):
    x = torch.rand(5, 3, dtype=dtype, generator=torch.Generator().manual_seed(3)) + 0.5
    assert_whole(SOURCES["index_after"] if src == "index_after" else RETURNS, capsys,
                 x, torch.ones(5, dtype=torch.long))
