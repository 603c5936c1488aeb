"""Running sums read in their own step (linear_recurrences_to_scans with ``a`` = 1): the Cox
partial likelihood of DeepSurv-style survival models, written as a loop over subjects sorted by
time, ``risk = risk + torch.exp(h[i])`` then ``h[i] - torch.log(risk)``. Every step's running sum
is one ``torch.cumsum`` (``linear_scan``'s running-sum path), the rest batched. Golden
before/after, equivalence (value, every gradient, dtype; float32 and float64; forward and
reversed; tied scores, NaN and inf), integer sums keeping their dtype, the kernel against the
loop (bit for bit in float64), and the shapes that stay loops (``+=`` in place)."""
from __future__ import annotations

import pytest
import torch

from passes.linear_scan import linear_scan
from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, normalise, strategies

DTYPES = [torch.float32, torch.float64]

COX = """
    def f(h, event):
        risk = torch.zeros((), dtype=h.dtype)
        loss = 0
        for i in range(h.shape[0]):
            risk = risk + torch.exp(h[i])
            loss = loss + event[i] * (h[i] - torch.log(risk))
        return -loss / event.sum()
    """

COX_GOLDEN = """
    def f(h, event):
        risk = torch.zeros((), dtype=h.dtype)
        loss = 0
        if isinstance(h, torch.Tensor) and h.shape[0] <= h.shape[0] and isinstance(h.shape[0], int) and (h.shape[0] > 0):
            'optimize_loss: loop at line 4 vectorized'
            _h_row = h if h.shape[0] == h.shape[0] else h[0:h.shape[0]:1]
            _risk_b_item = torch.exp(_h_row)
            _outs_1 = (_risk_b_item,)
            _risk_all = _linear_scan(1, _outs_1[0], risk, False, True, h.shape[0], False)
            if isinstance(_risk_all, torch.Tensor) and h.shape[0] <= _risk_all.shape[0] and isinstance(event, torch.Tensor) and (h.shape[0] <= event.shape[0]) and isinstance(h, torch.Tensor) and (h.shape[0] <= h.shape[0]) and isinstance(h.shape[0], int) and (h.shape[0] > 0):
                if _risk_all.dim() == h.dim() and h.dim() == event.dim():
                    _risk_all_row = _risk_all if h.shape[0] == _risk_all.shape[0] else _risk_all[0:h.shape[0]:1]
                    _event_row = event if h.shape[0] == event.shape[0] else event[0:h.shape[0]:1]
                    _h_row_1 = h if h.shape[0] == h.shape[0] else h[0:h.shape[0]:1]
                    _loss_part = 0
                    _risk_t = _risk_all_row
                    _loss_part = (_event_row * (_h_row_1 - torch.log(_risk_t))).sum(0)
                    _outs_2 = (_loss_part,)
                else:
                    _risk_all_row = _risk_all if h.shape[0] == _risk_all.shape[0] else _risk_all[0:h.shape[0]:1]
                    _event_row = event if h.shape[0] == event.shape[0] else event[0:h.shape[0]:1]
                    _h_row_1 = h if h.shape[0] == h.shape[0] else h[0:h.shape[0]:1]
                    _loss_part = 0
                    _risk_t = _risk_all_row
                    _t = torch.log(_risk_t)
                    _t_1 = _broadcast_item(_h_row_1, _t) - _broadcast_item(_t, _h_row_1)
                    _loss_part = (_broadcast_item(_event_row, _t_1) * _broadcast_item(_t_1, _event_row)).sum(0)
                    _outs_2 = (_loss_part,)
                loss = _outs_2[0]
            else:
                for i in range(h.shape[0]):
                    _risk_t = _risk_all[i]
                    loss = loss + event[i] * (h[i] - torch.log(_risk_t))
        else:
            for i in range(h.shape[0]):
                risk = risk + torch.exp(h[i])
                loss = loss + event[i] * (h[i] - torch.log(risk))
        return -loss / event.sum()
    """

# the risk set of subject i is i..n-1 (sorted by ascending time), the sum written second
COX_REVERSED = """
    def f(h, event):
        n = h.shape[0]
        acc = 0
        total = 0
        for i in reversed(range(n)):
            acc = torch.exp(h[i]) + acc
            total = total - event[i] * (h[i] - torch.log(acc))
        return total / n
    """

# several lists at once (rows), the running sum of a column per step, and its last value
COX_ROWS = """
    def f(h, event):
        risk = torch.zeros(h.shape[0], dtype=h.dtype)
        loss = 0
        for i in range(h.shape[1]):
            risk = risk + h[:, i].exp()
            loss = loss - (event[:, i] * (h[:, i] - risk.log())).sum()
        return loss, risk
    """


def scores(n, dtype, seed=0, ties=False):
    h = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    if ties:
        h[1::3] = h[0]
    return h.requires_grad_()


def events(*shape, dtype=torch.float32, seed=1):
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < 0.6).to(dtype)


def test_golden_cox():
    _, _, code, report = build(COX)
    assert code == normalise(COX_GOLDEN), code
    assert strategies(report) == {4: "scan"}
    assert "`risk` = `risk` + b, read in its step: every step's running sum by one cumsum" in \
        report.loops[0].reason


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("src", [COX, COX_REVERSED], ids=["forwards", "reversed"])
@pytest.mark.parametrize("ties", [False, True])
def test_cox_equivalent(dtype, src, ties):
    original, rewritten, _, report = build(src)
    assert set(strategies(report).values()) == {"scan"}
    assert_equivalent(original, rewritten, scores(23, dtype, ties=ties), events(23, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cox_rows_equivalent_with_the_last_sum(dtype):
    original, rewritten, _, report = build(COX_ROWS)
    assert strategies(report) == {4: "scan"}
    h = torch.randn(3, 11, dtype=dtype, generator=torch.Generator().manual_seed(4))
    assert_equivalent(original, rewritten, h.requires_grad_(), events(3, 11, dtype=dtype))


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("src", [COX, COX_REVERSED], ids=["forwards", "reversed"])
def test_cox_with_inf_and_nan_scores(bad, src):
    original, rewritten, _, report = build(src)
    assert set(strategies(report).values()) == {"scan"}
    h = scores(9, torch.float64).detach()
    h[4] = bad
    assert_equivalent(original, rewritten, h.requires_grad_(), events(9, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int64])
def test_an_integer_running_count_keeps_its_dtype(dtype):
    original, rewritten, _, report = build("""
        def f(x, counts):
            seen = 0
            out = 0
            for i in range(x.shape[0]):
                seen = seen + counts[i]
                out = out + x[i] * seen
            return out, seen
        """)
    assert strategies(report) == {4: "scan"}
    counts = torch.tensor([200, 100, 3, 90, 7], dtype=dtype)  # uint8 wraps, as the loop's steps
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert_equivalent(original, rewritten, x, counts)
    assert rewritten(x, counts)[1].dtype == original(x, counts)[1].dtype == dtype


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_running_sum_is_the_loops_additions(reverse, dtype):
    b = torch.randn(1000, 3, dtype=dtype, generator=torch.Generator().manual_seed(2))
    s0 = torch.randn(3, dtype=dtype)
    s, states = s0, {}
    for t in (reversed(range(1000)) if reverse else range(1000)):
        s = s + b[t]
        states[t] = s
    got = linear_scan(1, b, s0, False, True, 1000, reverse)
    want = torch.stack([states[t] for t in range(1000)])
    assert got.dtype == dtype
    if dtype == torch.float64:  # the loop's additions in its order
        assert torch.equal(got, want)
    else:  # CPU's float32 cumsum accumulates in double: within the loop's rounding
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("src, reason", [
    # `+=` changes the running sum in place: the loop's backward raises where log saved it
    ("""
    def f(h):
        acc = 0
        total = 0
        for i in range(h.shape[0]):
            acc += torch.exp(h[i])
            total = total + h[i] - torch.log(acc)
        return total
    """, "`acc += torch.exp(h[i])` changes `acc` in place"),
])
def test_running_sums_that_stay_loops(src, reason):
    _, _, code, report = build(src)
    assert code == normalise(src)
    assert strategies(report) == {4: "kept"}
    assert reason in report.loops[0].reason


def test_in_place_running_sum_raises_as_written():
    """The kept `+=` loop: its backward raises as the original's."""
    original, rewritten, _, _ = build("""
        def f(h):
            acc = 0
            total = 0
            for i in range(h.shape[0]):
                acc += torch.exp(h[i])
                total = total + h[i] - torch.log(acc)
            return total
        """)
    for fn in (original, rewritten):
        with pytest.raises(RuntimeError, match="inplace operation"):
            fn(scores(5, torch.float64)).backward()


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_running_sum_reset_at_episode_ends(dtype):
    """``if done[t]: s = 0`` before the sum: the scan's resets (an inf before a reset dropped
    as the loop drops it)."""
    original, rewritten, _, report = build("""
        def f(r, done):
            s = torch.zeros_like(r[0])
            out = 0
            for t in range(r.shape[0]):
                if done[t]:
                    s = 0
                s = s + r[t]
                out = out + (s * r[t]).sum()
            return out
        """)
    assert strategies(report) == {4: "scan"}
    r = torch.randn(40, 3, dtype=dtype, generator=torch.Generator().manual_seed(5))
    done = torch.rand(40, generator=torch.Generator().manual_seed(6)) < 0.2
    assert_equivalent(original, rewritten, r.clone().requires_grad_(), done)
    r[5, 1], done[7] = float("inf"), True
    assert_equivalent(original, rewritten, r.requires_grad_(), done)
