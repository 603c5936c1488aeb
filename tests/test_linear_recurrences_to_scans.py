"""linear_recurrences_to_scans and linear_scan: first-order linear recurrences as parallel scans.
Golden before/after (and loops that must stay loops), equivalence (value, every gradient, dtype;
float32 and float64; forward and reversed loops, per-step factors that are zero, NaN and inf),
the kernel against the sequential loop on long sequences, and a randomised test."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from passes.linear_scan import linear_scan
from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, normalise, strategies

DTYPES = [torch.float32, torch.float64]


def randn(*shape, dtype=torch.float32, seed=0, grad=True):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return x.requires_grad_() if grad else x


def dones(*shape, dtype=torch.float32, seed=1):
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < 0.3).to(dtype)


EMA = """
    def f(x, y, alpha):
        s = torch.zeros_like(x[:, 0])
        loss = 0
        for t in range(x.shape[1]):
            s = alpha * s + (1 - alpha) * x[:, t]
            loss = loss + ((s - y[:, t]) ** 2).sum()
        return loss
    """

EMA_GOLDEN = """
    def f(x, y, alpha):
        s = torch.zeros_like(x[:, 0])
        loss = 0
        if isinstance(x, torch.Tensor) and x.shape[1] <= x.shape[1] and isinstance(x.shape[1], int) and (x.shape[1] > 0):
            'optimize_loss: loop at line 4 vectorized'
            if not isinstance(alpha, torch.Tensor) or (x.dim() >= 2 and x.dim() >= alpha.dim() + 1):
                _x_row = (x if x.shape[1] == x.shape[1] else x[:, 0:x.shape[1]:1]).movedim(1, 0)
                _s_b_item = (1 - alpha) * _x_row
                _outs_1 = (_s_b_item,)
            else:

                def _body(_x_row):
                    _s_b_item = (1 - alpha) * _x_row
                    return (torch.as_tensor(_s_b_item),)
                _outs_1 = torch.vmap(_body, in_dims=(1,))(x if x.shape[1] == x.shape[1] else x[:, 0:x.shape[1]:1])
            _s_all = _linear_scan(alpha, _outs_1[0], s, False, True, x.shape[1], False)
            if isinstance(_s_all, torch.Tensor) and x.shape[1] <= _s_all.shape[0] and isinstance(y, torch.Tensor) and (x.shape[1] <= y.shape[1]) and isinstance(x.shape[1], int) and (x.shape[1] > 0):
                if y.dim() == _s_all.dim():
                    _s_all_row = _s_all if x.shape[1] == _s_all.shape[0] else _s_all[0:x.shape[1]:1]
                    _y_row = (y if x.shape[1] == y.shape[1] else y[:, 0:x.shape[1]:1]).movedim(1, 0)
                    _loss_part = 0
                    _s_t = _s_all_row
                    _loss_part = ((_s_t - _y_row) ** 2).sum()
                    _outs_2 = (_loss_part,)
                else:

                    def _body_1(_s_all_row, _y_row):
                        _loss_part = 0
                        _s_t = _s_all_row
                        _loss_part = _loss_part + ((_s_t - _y_row) ** 2).sum()
                        return (torch.as_tensor(_loss_part),)
                    _outs_2 = torch.vmap(_body_1, in_dims=(0, 1))(_s_all if x.shape[1] == _s_all.shape[0] else _s_all[0:x.shape[1]:1], y if x.shape[1] == y.shape[1] else y[:, 0:x.shape[1]:1])
                    _outs_2 = (_outs_2[0].sum(0),)
                loss = _outs_2[0]
            else:
                for t in range(x.shape[1]):
                    _s_t = _s_all[t]
                    loss = loss + ((_s_t - y[:, t]) ** 2).sum()
        else:
            for t in range(x.shape[1]):
                s = alpha * s + (1 - alpha) * x[:, t]
                loss = loss + ((s - y[:, t]) ** 2).sum()
        return loss
    """


def test_golden_ema():
    _, _, code, report = build(EMA)
    assert code == normalise(EMA_GOLDEN), code
    assert strategies(report) == {4: "scan"}
    assert "one parallel scan" in report.loops[0].reason


@pytest.mark.parametrize("src, reason", [
    # not linear in the state: a real recurrence, kept with the vectorizer's reason
    ("""
    def f(x):
        s = torch.zeros_like(x[0])
        for t in range(len(x)):
            s = torch.tanh(s + x[t])
        return s.sum()
    """, "recurrence"),
    ("""
    def f(x):
        s = torch.ones_like(x[0])
        for t in range(len(x)):
            s = s * s + x[t]
        return s.sum()
    """, "recurrence"),
    # two coupled states: neither is a recurrence of its own
    ("""
    def f(x):
        p = torch.zeros_like(x[0])
        q = torch.zeros_like(x[0])
        for t in range(len(x)):
            p = 0.5 * p + q
            q = 0.5 * q + x[t]
        return (p + q).sum()
    """, "recurrence"),
    # a print in the rest: the rest does not vectorize, so the scan would gain nothing
    ("""
    def f(x):
        s = torch.zeros_like(x[0])
        for t in range(len(x)):
            s = 0.9 * s + x[t]
            print(t)
        return s.sum()
    """, ""),
])
def test_loops_that_stay_loops(src, reason):
    _, _, code, report = build(src)
    assert code == normalise(src)
    assert strategies(report) == {3: "kept"} or strategies(report) == {4: "kept"}
    assert reason in report.loops[0].reason


@pytest.mark.parametrize("dtype", DTYPES)
def test_ema_equivalent_and_final_state(dtype):
    src = """
        def f(x, alpha):
            s = torch.zeros_like(x[:, 0])
            for t in range(x.shape[1]):
                s = alpha * s + (1 - alpha) * x[:, t]
            return s
        """
    original, rewritten, _, report = build(src)
    x = randn(3, 17, 4, dtype=dtype)
    assert_equivalent(original, rewritten, x, 0.9)
    alpha = torch.tensor(0.8, dtype=dtype, requires_grad=True)  # a learnable factor
    assert_equivalent(original, rewritten, x, alpha)
    assert strategies(report) == {3: "scan"}


@pytest.mark.parametrize("dtype", DTYPES)
def test_discounted_returns_reversed_with_terminal_steps(dtype):
    src = """
        def f(values, rewards, dones, gamma):
            G = 0
            returns = torch.zeros_like(rewards)
            for t in reversed(range(rewards.shape[1])):
                G = rewards[:, t] + gamma * (1.0 - dones[:, t]) * G
                returns[:, t] = G
            return ((values - returns) ** 2).mean() + G.sum()
        """
    original, rewritten, _, report = build(src)
    r = randn(4, 21, dtype=dtype, grad=False)
    assert_equivalent(original, rewritten, randn(4, 21, dtype=dtype, seed=2), r,
                      dones(4, 21, dtype=dtype), 0.99)
    assert strategies(report) == {4: "scan"}


FRONT_INSERTS = """
    def f(values, rewards, gamma):
        T = rewards.shape[0]
        R = torch.zeros_like(rewards[0])
        returns = []
        for t in reversed(range(T)):
            R = rewards[t] + gamma * R
            returns.insert(0, R)
        return ((values - torch.stack(returns)[:T]) ** 2).mean() + t
    """


@pytest.mark.parametrize("dtype", DTYPES)
def test_returns_inserted_at_the_front_of_a_reversed_loop(dtype):
    # the REINFORCE form: the list ends in increasing step order, `t` ends at 0
    original, rewritten, code, report = build(FRONT_INSERTS)
    assert strategies(report) == {5: "scan"} and "returns.append(" in code
    r = randn(23, 3, dtype=dtype, grad=False)
    assert_equivalent(original, rewritten, randn(23, 3, dtype=dtype, seed=2), r, 0.99)
    assert rewritten(randn(23, 3, dtype=dtype), r, 0.99).dtype == dtype


@pytest.mark.parametrize("src", [
    FRONT_INSERTS.replace("returns = []", "returns = [rewards[0]]"),  # not empty at the start
    FRONT_INSERTS.replace("returns.insert(0, R)", "returns.insert(0, R)\n            "
                          "returns.insert(0, R * 2)"),                 # two inserts
    FRONT_INSERTS.replace("returns.insert(0, R)", "returns.append(R)"),  # appended backwards
])
def test_front_inserts_that_keep_the_loop(src):
    original, rewritten, _, report = build(src)
    assert strategies(report) == {5: "kept"}
    r = randn(5, 3, grad=False)
    assert_equivalent(original, rewritten, randn(5, 3, seed=2), r, 0.99)


GAE_IN_TWO_STEPS = """
    def f(rewards, vp, masks, bad, gamma, lam):
        returns = torch.zeros_like(vp)
        gae = 0
        for step in reversed(range(rewards.size(0))):
            delta = rewards[step] + gamma * vp[step + 1] * masks[step + 1] - vp[step]
            gae = delta + gamma * lam * masks[step + 1] * gae
            gae = gae * bad[step + 1]
            returns[step] = gae + vp[step]
        return returns[:-1].pow(2).mean() + gae.sum()
    """


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_recurrence_rebound_in_two_steps_is_one(dtype):
    # the time-limit form of GAE: `gae = gae * bad_masks[step + 1]` after the recurrence
    original, rewritten, _, report = build(GAE_IN_TWO_STEPS)
    assert strategies(report) == {4: "scan"}, report.loops[0].reason
    T = 19
    masks, bad = dones(T + 1, 3, dtype=dtype), dones(T + 1, 3, dtype=dtype, seed=4)
    assert_equivalent(original, rewritten, randn(T, 3, dtype=dtype, grad=False),
                      randn(T + 1, 3, dtype=dtype, seed=2), 1 - masks, 1 - bad, 0.99, 0.95)


@pytest.mark.parametrize("second", [
    "gae = bad[step + 1] * gae",        # read after another operand: evaluation order differs
    "gae = gae * gae",                  # read twice
])
def test_rebinds_that_are_not_merged(second):
    src = GAE_IN_TWO_STEPS.replace("gae = gae * bad[step + 1]", second)
    original, rewritten, _, report = build(src)
    assert strategies(report) == {4: "kept"}
    T = 7
    assert_equivalent(original, rewritten, randn(T, 3, grad=False), randn(T + 1, 3, seed=2),
                      dones(T + 1, 3), dones(T + 1, 3, seed=4), 0.99, 0.95)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gae_with_a_prelude_statement(dtype):
    src = """
        def f(values, rewards, dones, gamma, lam):
            adv = torch.zeros_like(rewards[:, 0])
            out = torch.zeros_like(rewards)
            for t in reversed(range(rewards.shape[1])):
                delta = rewards[:, t] + gamma * values[:, t + 1] * (1 - dones[:, t]) - values[:, t]
                out[:, t] = adv = delta + gamma * lam * (1 - dones[:, t]) * adv
            return (out ** 2).mean()
        """
    original, rewritten, code, report = build(src)
    assert_equivalent(original, rewritten, randn(3, 12, dtype=dtype), randn(3, 11, dtype=dtype),
                      dones(3, 11, dtype=dtype), 0.99, 0.95)
    assert strategies(report) == {4: "scan"}


@pytest.mark.parametrize("dtype", DTYPES)
def test_range_from_one_and_state_from_the_first_step(dtype):
    src = """
        def f(x):
            s = x[0]
            total = 0
            for t in range(1, len(x)):
                s = 0.5 * s - x[t] / 3
                total = total + s.abs().sum()
            return total
        """
    original, rewritten, _, report = build(src)
    assert_equivalent(original, rewritten, randn(9, 5, dtype=dtype))
    assert strategies(report) == {4: "scan"}


def test_float16_state_keeps_its_dtype():
    original, rewritten, _, _ = build(EMA)
    x, y = randn(2, 7, 3).half(), randn(2, 7, 3, seed=3).half()
    assert rewritten(x, y, 0.9).dtype == original(x, y, 0.9).dtype == torch.float16


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_inf_propagate_as_in_the_loop(bad):
    original, rewritten, _, _ = build("""
        def f(rewards, dones):
            G = torch.zeros_like(rewards[:, 0])
            out = torch.zeros_like(rewards)
            for t in reversed(range(rewards.shape[1])):
                G = rewards[:, t] + 0.9 * (1.0 - dones[:, t]) * G
                out[:, t] = G
            return out
        """)
    r = randn(2, 10, grad=False)
    r[0, 4] = bad
    d = dones(2, 10)
    d[0, 2] = 1.0
    torch.testing.assert_close(rewritten(r, d), original(r, d), equal_nan=True)


def test_per_step_python_numbers_keep_the_loop():
    original, rewritten, _, report = build("""
        def f(rewards):
            G = 0.0
            for r in reversed(range(len(rewards))):
                G = rewards[r] + 0.5 * G
            return G
        """)
    rewards = [1.0, 2.0, 3.0]
    assert rewritten(rewards) == original(rewards)
    assert type(rewritten(rewards)) is float


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float64, 1e-12)])
def test_kernel_long_sequence_with_zeros_and_tiny_factors(dtype, tol):
    T = 3000
    a = torch.full((T, 5), 0.999, dtype=dtype)
    a[::97] = 0.0                    # episode ends: a division by cumprod(a) would be 0/0
    a[1::13] = 1e-30                 # products underflow
    b = randn(T, 5, dtype=dtype, grad=False)
    s, states = torch.zeros(5, dtype=dtype), []
    for t in range(T):
        s = a[t] * s + b[t]
        states.append(s)
    torch.testing.assert_close(linear_scan(a, b, torch.zeros(5, dtype=dtype), True, True, T, False),
                               torch.stack(states), rtol=tol, atol=tol)


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 40), reverse=st.booleans(), a_steps=st.booleans(),
       b_steps=st.booleans(), seed=st.integers(0, 2**16))
def test_kernel_matches_the_loop(T, reverse, a_steps, b_steps, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand((T, 3) if a_steps else (3,), generator=g, dtype=torch.float64) * 1.5
    b = torch.randn((T, 2, 3) if b_steps else (2, 3), generator=g, dtype=torch.float64)
    s0 = torch.randn(3, generator=g, dtype=torch.float64)
    s, states = s0, {}
    for t in (reversed(range(T)) if reverse else range(T)):
        s = (a[t] if a_steps else a) * s + (b[t] if b_steps else b)
        states[t] = s
    torch.testing.assert_close(linear_scan(a, b, s0, a_steps, b_steps, T, reverse),
                               torch.stack([states[t] for t in range(T)]))
