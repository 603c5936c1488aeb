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
from tests.helpers import equivalent_report, load_module
from tests.loop_helpers import build, dedent, namespace, normalise, strategies

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
        if isinstance(x, torch.Tensor) and x.shape[1] <= x.shape[1] and isinstance(x.shape[1], int) and (x.shape[1] > 0) and (not _rounds_gradients(alpha)):
            'optimize_loss: loop at line 4 vectorized'
            if not isinstance(alpha, torch.Tensor) or (x.dim() >= 2 and x.dim() >= alpha.dim() + 1):
                _x_row = (x if x.shape[1] == x.shape[1] else x[:, 0:x.shape[1]:1]).movedim(1, 0)
                _s_b_item = (1 - alpha) * _x_row
                _outs_1 = (_s_b_item,)
            else:

                def _body(_x_row):
                    _s_b_item = (1 - alpha) * _x_row
                    return (torch.as_tensor(_s_b_item),)
                _outs_1 = _map_in_chunks(_body, in_dims=(1,))(x if x.shape[1] == x.shape[1] else x[:, 0:x.shape[1]:1])
            _s_all = _linear_scan(alpha, _outs_1[0], s, False, True, x.shape[1], False)
            if isinstance(_s_all, torch.Tensor) and x.shape[1] <= _s_all.shape[0] and isinstance(y, torch.Tensor) and (x.shape[1] <= y.shape[1]) and isinstance(x.shape[1], int) and (x.shape[1] > 0):
                if y.dim() == _s_all.dim():
                    _s_all_row = _s_all if x.shape[1] == _s_all.shape[0] else _s_all[0:x.shape[1]:1]
                    _y_row = (y if x.shape[1] == y.shape[1] else y[:, 0:x.shape[1]:1]).movedim(1, 0)
                    _loss_part = 0
                    _s_t = _s_all_row

                    def _items_sum():
                        _t = (_s_t - _y_row) ** 2
                        return (_t.sum(tuple(range(1, _t.dim()))) if _t.dim() > 1 else _t.reshape(len(_t), -1).sum(1)).sum(0)
                    _loss_part = _summed_in_steps(((_s_t - _y_row) ** 2).sum(), _items_sum)
                    _outs_2 = (_loss_part,)
                else:
                    _s_all_row = _s_all if x.shape[1] == _s_all.shape[0] else _s_all[0:x.shape[1]:1]
                    _y_row = (y if x.shape[1] == y.shape[1] else y[:, 0:x.shape[1]:1]).movedim(1, 0)
                    _loss_part = 0
                    _s_t = _s_all_row

                    def _items_sum_1():
                        _t_1 = (_broadcast_item(_s_t, _y_row) - _broadcast_item(_y_row, _s_t)) ** 2
                        return (_t_1.sum(tuple(range(1, _t_1.dim()))) if _t_1.dim() > 1 else _t_1.reshape(len(_t_1), -1).sum(1)).sum(0)
                    _loss_part = _summed_in_steps(((_broadcast_item(_s_t, _y_row) - _broadcast_item(_y_row, _s_t)) ** 2).sum(), _items_sum_1)
                    _outs_2 = (_loss_part,)
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


@pytest.mark.parametrize("dtype", DTYPES)
def test_vtrace_errors_written_in_a_reversed_loop_report_the_users_names(dtype):
    """The step loop stacks ``discount`` (a parameter may be a list of tensors): the report names
    it as the user's list, never by its stacked copy's generated name."""
    src = """
        def f(v, td, discount, c):
            err = 0.0
            errors = torch.zeros_like(v)
            for i in reversed(range(v.shape[0])):
                err = td[i] + discount[i] * c[i] * err
                errors[i] = err
            return ((errors.detach() + v) ** 2).mean()
        """
    original, rewritten, _, report = build(src)
    assert_equivalent(original, rewritten, randn(7, 3, dtype=dtype),
                      randn(7, 3, dtype=dtype, seed=2), 0.99 * (1 - dones(7, 3, dtype=dtype)),
                      randn(7, 3, dtype=dtype, seed=3).abs())
    assert strategies(report) == {4: "scan"}
    reason = report.loops[0].reason
    assert "`c`, `discount`, `td` are a tensor or a list or tuple of tensors" in reason
    assert "_stacked" not in reason


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
    FRONT_INSERTS.replace("returns.insert(0, R)", "returns.insert(0, R)\n            "
                          "returns.insert(0, R * 2)"),                 # two inserts
    FRONT_INSERTS.replace("returns.insert(0, R)", "returns.insert(0, R)\n            "
                          "returns.append(R)"),                        # two uses of the list
    FRONT_INSERTS.replace("returns.insert(0, R)", "returns.insert(1, R)"),  # not the front
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


# Lists that leave the function whole: the rest fills them in the original's order, with the
# original's items (tensors of every step), so the caller gets a list as before.
ESCAPING = """
    def f(rewards, masks, gamma):
        G = 0.0
        returns = []
        for t in reversed(range(len(rewards))):
            G = rewards[t] + gamma * G * masks[t]
            returns.insert(0, G)
        return returns
    """

ESCAPING_GOLDEN = """
    def f(rewards, masks, gamma):
        G = 0.0
        returns = []
        _masks_stacked = _stack_items(tuple(masks)) if (type(masks) is list or (isinstance(masks, tuple) and type(masks).__getitem__ is tuple.__getitem__ and (type(masks).__iter__ is tuple.__iter__) and (type(masks).__len__ is tuple.__len__))) and len(masks) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == masks[0].shape and (_v.dtype == masks[0].dtype) and (_v.device == masks[0].device) for _v in masks)) else masks
        _rewards_stacked = _stack_items(tuple(rewards)) if (type(rewards) is list or (isinstance(rewards, tuple) and type(rewards).__getitem__ is tuple.__getitem__ and (type(rewards).__iter__ is tuple.__iter__) and (type(rewards).__len__ is tuple.__len__))) and len(rewards) > 0 and all((isinstance(_v_1, torch.Tensor) and _v_1.shape == rewards[0].shape and (_v_1.dtype == rewards[0].dtype) and (_v_1.device == rewards[0].device) for _v_1 in rewards)) else rewards
        if (isinstance(_masks_stacked, torch.Tensor) and len(_rewards_stacked) <= _masks_stacked.shape[0] and isinstance(_rewards_stacked, torch.Tensor) and (len(_rewards_stacked) <= _rewards_stacked.shape[0]) and isinstance(len(_rewards_stacked), int) and (len(_rewards_stacked) > 0) and (not _rounds_gradients(gamma))) and type(returns) is list and _computed_alike(G, rewards, gamma, masks):
            'optimize_loss: loop at line 4 vectorized'
            if not isinstance(gamma, torch.Tensor) or (_masks_stacked.dim() >= 2 and _masks_stacked.dim() >= gamma.dim() + 1):
                _masks_row = _masks_stacked if len(_rewards_stacked) == _masks_stacked.shape[0] else _masks_stacked[0:len(_rewards_stacked):1]
                _rewards_row = _rewards_stacked if len(_rewards_stacked) == _rewards_stacked.shape[0] else _rewards_stacked[0:len(_rewards_stacked):1]
                _G_a_item = gamma * _masks_row
                _G_b_item = _rewards_row
                _outs_1 = (_G_a_item, _G_b_item)
            else:

                def _body(_masks_row, _rewards_row):
                    _G_a_item = gamma * _masks_row
                    _G_b_item = _rewards_row
                    return (torch.as_tensor(_G_a_item), torch.as_tensor(_G_b_item))
                _outs_1 = _map_in_chunks(_body, in_dims=(0, 0))(_masks_stacked if len(_rewards_stacked) == _masks_stacked.shape[0] else _masks_stacked[0:len(_rewards_stacked):1], _rewards_stacked if len(_rewards_stacked) == _rewards_stacked.shape[0] else _rewards_stacked[0:len(_rewards_stacked):1])
            _G_all = _linear_scan(_outs_1[0], _outs_1[1], G, True, True, len(rewards), True)
            _returns_front = []
            if isinstance(_G_all, torch.Tensor) and len(rewards) <= _G_all.shape[0] and (type(_returns_front) is list) and isinstance(len(rewards), int) and (len(rewards) > 0):
                _G_all_row = _G_all if len(rewards) == _G_all.shape[0] else _G_all[0:len(rewards):1]
                _G_t = _G_all_row
                _returns_front_item = _G_t
                _outs_2 = (_returns_front_item,)
                _returns_front.extend(_outs_2[0].unbind(0))
            else:
                for t in range(len(rewards)):
                    _G_t = _G_all[t]
                    _returns_front.append(_G_t)
            returns[0:0] = _returns_front
        else:
            for t in reversed(range(len(rewards))):
                G = rewards[t] + gamma * G * masks[t]
                returns.insert(0, G)
        return returns
    """


def test_golden_escaping_list():
    _, _, code, report = build(ESCAPING)
    assert code == normalise(ESCAPING_GOLDEN), code
    assert strategies(report) == {4: "scan"}
    assert "`returns` appends stacked" in report.loops[0].reason


def _same_list(want, got):
    assert type(got) is list and len(got) == len(want)
    for w, g in zip(want, got):
        assert type(g) is type(w) and g.shape == w.shape and g.dtype == w.dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [1, 9, 600])
@pytest.mark.parametrize("given", ["tensor", "list"])
def test_escaping_list_equivalent(dtype, T, given):
    original, rewritten, _, _ = build(ESCAPING)
    r, m = randn(T, 3, dtype=dtype), 1 - dones(T, 3, dtype=dtype)
    if given == "list":  # the rollout as lists of per-step tensors (stacked at run time)
        r, m = list(r.unbind(0)), list(m.unbind(0))
    assert_equivalent(original, rewritten, r, m, 0.99)
    _same_list(original(r, m, 0.99), rewritten(r, m, 0.99))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("consumer", ["torch.stack(returns)", "torch.cat(returns)",
                                      "torch.tensor(returns)"])
def test_escaping_list_handed_on(dtype, consumer):
    src = ESCAPING.replace("return returns", f"return {consumer}")
    original, rewritten, _, report = build(src)
    assert strategies(report) == {4: "scan"}
    shape = (13,) if consumer == "torch.tensor(returns)" else (13, 2)  # 0-d items for tensor()
    r = randn(*shape, dtype=dtype, grad=consumer != "torch.tensor(returns)")
    assert_equivalent(original, rewritten, r, 1 - dones(*shape, dtype=dtype), 0.9)


def test_escaping_list_with_no_steps_runs_the_loop():
    original, rewritten, _, _ = build(ESCAPING)
    assert rewritten(torch.zeros(0), torch.ones(0), 0.9) == original(torch.zeros(0),
                                                                     torch.ones(0), 0.9) == []


@pytest.mark.parametrize("dtype", DTYPES)
def test_front_inserts_into_a_list_that_holds_items(dtype):
    # T front inserts put the steps before the items already there: spliced in at the front
    src = ESCAPING.replace("returns = []", "returns = [rewards[0] * 0, rewards[0]]")
    original, rewritten, code, report = build(src)
    assert strategies(report) == {4: "scan"} and "returns[0:0] = _returns_front" in code
    r, m = randn(11, 3, dtype=dtype), 1 - dones(11, 3, dtype=dtype)
    assert_equivalent(original, rewritten, r, m, 0.99)
    _same_list(original(r, m, 0.99), rewritten(r, m, 0.99))


@pytest.mark.parametrize("dtype", DTYPES)
def test_appends_in_a_reversed_loop_keep_their_order(dtype):
    # appended backwards: the last step first, as the original's list holds them
    src = ESCAPING.replace("returns.insert(0, G)", "returns.append(G)")
    original, rewritten, code, report = build(src)
    assert strategies(report) == {4: "scan"} and "returns.extend(reversed(" in code
    r, m = randn(11, 3, dtype=dtype), 1 - dones(11, 3, dtype=dtype)
    assert_equivalent(original, rewritten, r, m, 0.99)
    _same_list(original(r, m, 0.99), rewritten(r, m, 0.99))


def test_a_list_like_object_runs_the_loop():
    # `insert` of another object than a list: the loop runs as written
    class Front(list):
        def insert(self, k, v):
            super().insert(k, v * 2)

    src = ESCAPING.replace("returns = []", "returns = Front()")
    original, rewritten, _, report = build(src, namespace(Front=Front))
    assert strategies(report) == {4: "scan"}
    r, m = randn(5, 3, grad=False), 1 - dones(5, 3)
    torch.testing.assert_close(torch.stack(rewritten(r, m, 0.9)), torch.stack(original(r, m, 0.9)))


# Recurrences kept in tensors: `x[t] = a * x[t + 1] + b` (a rollout storage's returns, written
# through `self.`), and an IIR filter written forwards.
class Storage:
    """A rollout storage: `[T+1, ...]` buffers held as attributes, as RL code keeps them."""

    def __init__(self, rewards, masks, next_value):
        self.rewards = rewards
        self.masks = torch.cat([torch.ones_like(masks[:1]), masks])
        self.returns = torch.zeros(len(rewards) + 1, *rewards.shape[1:], dtype=rewards.dtype)
        self.returns[-1] = next_value


STORED_RETURNS = """
    def f(rewards, masks, next_value, gamma):
        storage = Storage(rewards, masks, next_value)
        for step in reversed(range(storage.rewards.size(0))):
            storage.returns[step] = storage.returns[step + 1] * gamma * storage.masks[step + 1] + storage.rewards[step]
        return storage.returns
    """


def test_golden_stored_returns():
    _, _, code, report = build(STORED_RETURNS, namespace(Storage=Storage))
    # `_returns_1`: the whole-loop attempt before the scan, which reads `reversed(range(...))`
    # as a range with step -1 and is refused at its row slices, took `_returns` first
    assert "_returns_1 = getattr(storage, 'returns', None)" in code  # read only if it exists
    assert "_returns_state = storage.returns[storage.rewards.size(0) - 1 + 1].clone()" in code
    assert "_returns_1[0:storage.rewards.size(0):1] = " in code
    assert strategies(report) == {3: "scan"}
    assert report.loops[0].reason.startswith(
        "`storage.returns[step]` = a * `storage.returns[step]` + b")
    assert "the rest: `storage.returns` written as a slice" in report.loops[0].reason


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [1, 8, 700])
def test_stored_returns_equivalent(dtype, T):
    original, rewritten, _, _ = build(STORED_RETURNS, namespace(Storage=Storage))
    assert_equivalent(original, rewritten, randn(T, 4, 1, dtype=dtype),
                      1 - dones(T, 4, 1, dtype=dtype), randn(4, 1, dtype=dtype, seed=5), 0.99)


def test_stored_returns_written_in_place():
    # the buffer the storage holds is the one written, its version counter moved on
    src = """
        def f(storage, gamma):
            for step in reversed(range(storage.rewards.size(0))):
                storage.returns[step] = storage.returns[step + 1] * gamma * storage.masks[step + 1] + storage.rewards[step]
        """
    original, rewritten, _, report = build(src)
    assert strategies(report) == {2: "scan"}
    r, m, v = randn(9, 3, grad=False), 1 - dones(9, 3), randn(3, seed=4, grad=False)
    want, got = Storage(r, m, v), Storage(r, m, v)
    buffer, version = got.returns, got.returns._version
    assert original(want, 0.9) is None and rewritten(got, 0.9) is None
    assert got.returns is buffer and buffer._version > version
    torch.testing.assert_close(got.returns, want.returns)


GAE_STORAGE = """
    def f(rewards, masks, values, next_value, gamma, lam):
        storage = Storage(rewards, masks, next_value)
        gae = 0
        for step in reversed(range(storage.rewards.size(0))):
            delta = storage.rewards[step] + gamma * values[step + 1] * storage.masks[step + 1] - values[step]
            gae = delta + gamma * lam * storage.masks[step + 1] * gae
            storage.returns[step] = gae + values[step]
        return storage.returns[:-1].pow(2).mean()
    """


@pytest.mark.parametrize("dtype", DTYPES)
def test_gae_written_into_an_attribute(dtype):
    original, rewritten, _, report = build(GAE_STORAGE, namespace(Storage=Storage))
    assert strategies(report) == {4: "scan"}
    T = 17
    assert_equivalent(original, rewritten, randn(T, 3, dtype=dtype), 1 - dones(T, 3, dtype=dtype),
                      randn(T + 1, 3, dtype=dtype, seed=2), randn(3, dtype=dtype, seed=3),
                      0.99, 0.95)


IIR = """
    def f(x, alpha):
        y = torch.zeros_like(x)
        y[0] = x[0]
        for t in range(1, x.shape[0]):
            y[t] = alpha * y[t - 1] + (1 - alpha) * x[t]
        return y
    """


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [1, 2, 40, 900])
def test_iir_filter_written_forwards(dtype, T):
    original, rewritten, _, report = build(IIR)
    assert strategies(report) == {4: "scan"}
    assert_equivalent(original, rewritten, randn(T, 5, dtype=dtype), 0.7)
    # a learnable factor multiplying the sum: the loop saves no read of `y` for its backward
    src = IIR.replace("alpha * y[t - 1] + (1 - alpha) * x[t]", "alpha * (y[t - 1] + x[t])")
    original, rewritten, _, report = build(src)
    assert strategies(report) == {4: "scan"}
    alpha = torch.tensor(0.7, dtype=dtype, requires_grad=True)
    assert_equivalent(original, rewritten, randn(T, 5, dtype=dtype), alpha)


@pytest.mark.parametrize("src", [
    IIR.replace("alpha * y[t - 1]", "alpha * y[t - 2]"),              # not the step before
    IIR.replace("(1 - alpha) * x[t]", "y[t - 1]"),                      # read twice
    IIR.replace("return y", "return y + y[0]").replace(
        "(1 - alpha) * x[t]", "(1 - alpha) * x[t] * y.shape[0]"),     # read whole
])
def test_tensor_recurrences_that_stay_loops(src):
    original, rewritten, code, report = build(src)
    assert strategies(report) == {4: "kept"}
    x = randn(6, 2)
    assert_equivalent(original, rewritten, x, 0.5)


def test_an_attribute_of_an_object_whose_method_the_body_calls_stays_as_written():
    src = """
        def f(storage, gamma):
            for step in reversed(range(storage.rewards.size(0))):
                storage.returns[step] = storage.rewards[step] * gamma
                storage.touch()
        """
    _, _, code, report = build(src)
    assert strategies(report) == {2: "kept"} and code == normalise(src)


# A sequence walked backwards: `reversed(xs)`, `xs.flip(0)`
WALKED_BACK = """
    def f(rewards, gamma):
        G = 0.0
        returns = []
        for r in rewards.flip(0):
            G = r + gamma * G
            returns.append(G)
        return torch.stack(returns).flip(0)
    """


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("walk", ["rewards.flip(0)", "reversed(rewards)", "rewards.flip((0,))"])
@pytest.mark.parametrize("fill", ["append", "insert"])
@pytest.mark.parametrize("T", [1, 30, 800])
def test_returns_over_a_sequence_walked_backwards(dtype, walk, fill, T):
    src = WALKED_BACK.replace("rewards.flip(0):", f"{walk}:")
    if fill == "insert":
        src = src.replace("returns.append(G)", "returns.insert(0, G)").replace(
            "torch.stack(returns).flip(0)", "torch.stack(returns)")
    original, rewritten, _, report = build(src)
    assert strategies(report) == {4: "scan"}
    assert_equivalent(original, rewritten, randn(T, 3, dtype=dtype), 0.99)


def test_reversed_list_of_tensors_is_stacked(tmp_path):
    # through optimize_loss, whose report counts the runs of the vectorized branch
    user = load_module(tmp_path, "import torch\n" + dedent(
        WALKED_BACK.replace("rewards.flip(0)", "reversed(rewards)")))
    rewards = list(randn(12, 2).unbind(0))
    report = equivalent_report(user.f, rewards, 0.9)
    assert report.loops[0].strategy == "scan" and report.loops[0].vectorized_runs == 1


def test_flip_of_a_list_raises_as_written():
    original, rewritten, _, _ = build(WALKED_BACK)
    rewards = list(randn(4, 2).unbind(0))
    with pytest.raises(AttributeError, match="flip"):
        original(rewards, 0.9)
    with pytest.raises(AttributeError, match="flip"):
        rewritten(rewards, 0.9)


@pytest.mark.parametrize("walk", ["rewards.flip(1)", "rewards[::-1]"])
def test_sequences_walked_otherwise_stay_loops(walk):
    src = WALKED_BACK.replace("rewards.flip(0):", f"{walk}:")
    _, _, code, report = build(src)
    assert strategies(report) == {4: "kept"}


def test_reversed_dict_walks_its_keys_as_written():
    # `reversed` of a dict gives its keys, not `d[k]`: the loop runs as written
    src = """
        def f(d, w, gamma):
            G = 0.0
            for k in reversed(d):
                G = w[k] + gamma * G
            return G
        """
    original, rewritten, _, _ = build(src)
    d, w = {2: torch.ones(3), 0: torch.zeros(3), 1: torch.ones(3)}, randn(3, 2)
    assert_equivalent(original, rewritten, d, w, 0.9)


# The tensor written rounds every step's state to its dtype: the scan (which rounds once) agrees
# within float32/float64 rounding, not with a half-precision or integer tensor's per-step
# rounding (a state of 0.999-EMA in bfloat16 stagnates where the scan does not).
IIR_INTO = IIR.replace("y = torch.zeros_like(x)", "y = torch.zeros(x.shape, dtype=dt)").replace(
    "def f(x, alpha):", "def f(x, alpha, dt):")


@pytest.mark.parametrize("dt", DTYPES)
def test_wider_factors_written_into_a_float_tensor(dt):
    # float64 factor and inputs, the states stored in float32 (or float64): the scan's states
    # round once instead of every step, which is within the stored dtype's rounding
    original, rewritten, _, report = build(IIR_INTO)
    assert strategies(report) == {4: "scan"}
    # (a factor requiring grad would make the loop itself raise: it saves `y[t - 1]`)
    alpha = torch.tensor(0.999, dtype=torch.float64)
    x = (randn(2000, 3, dtype=torch.float64, seed=4, grad=False) * 10).requires_grad_()
    # x's float64 gradient passes through float32 at every step of the loop's backward: its
    # error (~1e-4 of gradients ~8, against float64's) is float32's, the scan's is smaller
    tol = {"rtol": 1e-5, "atol": 3e-4} if dt == torch.float32 else {}
    assert_equivalent(original, rewritten, x, alpha, dt, **tol)
    assert rewritten(x, alpha, dt).dtype == dt


@pytest.mark.parametrize("dt", [torch.float16, torch.bfloat16, torch.int64, torch.int32])
def test_a_narrow_or_integer_tensor_written_runs_the_loop(dt):
    original, rewritten, code, report = build(IIR_INTO)
    assert "_linear_scan" in code
    x = randn(3000, 3, dtype=torch.float32, seed=4, grad=False) * 10
    want = original(x, 0.999, dt)
    got = rewritten(x, 0.999, dt)
    assert got.dtype == want.dtype == dt
    assert torch.equal(got, want)  # the loop as written: every step rounded to `dt`


def test_python_float_rewards_into_a_float32_tensor():
    # per-step Python floats read from a list, the states kept in a float32 tensor
    src = """
        def f(rewards, gamma, v):
            returns = torch.zeros(len(rewards) + 1, dtype=v.dtype)
            returns[-1] = v
            for t in reversed(range(len(rewards))):
                returns[t] = returns[t + 1] * gamma + rewards[t]
            return returns
        """
    # a list of Python floats is not stacked (the original adds them in double): the loop runs
    original, rewritten, _, _ = build(src)
    rewards = [float(r) for r in torch.randn(50, generator=torch.Generator().manual_seed(0))]
    for dt in DTYPES:
        v = torch.tensor(0.5, dtype=dt, requires_grad=True)
        assert_equivalent(original, rewritten, rewards, 0.99, v)


# TD(lambda) returns, the factor multiplied out of `gamma * (1 - d) * (... + lam * ret)`: the
# loop computes `lam * ret` in the state's dtype, the scan `gamma * (1 - d) * lam` in the mask's.
TD_LAMBDA = """
    def f(rewards, values, dones, gamma, lam):
        ret = values[-1]
        out = []
        for t in reversed(range(rewards.shape[0])):
            ret = rewards[t] + gamma * (1 - dones[t]) * ((1 - lam) * values[t + 1] + lam * ret)
            out.append(ret)
        return torch.stack(out[::-1])
    """


@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float64, torch.float32),
                                    (torch.float64, torch.float32, torch.float32),
                                    (torch.float32, torch.float64, torch.int64),
                                    (torch.float64, torch.float64, torch.float32)])
def test_multiplied_out_factors_of_mixed_dtypes_run_the_loop(dtypes):
    # a float32 mask with float64 values: the scan's factors would round to float32, off by
    # ~1e-7 relative in the float64 returns; the loop runs as written, and the report says why
    original, rewritten, _, report = build(TD_LAMBDA)
    r_dt, v_dt, d_dt = dtypes
    rewards = randn(40, 3, dtype=r_dt, grad=False)
    values = randn(41, 3, dtype=v_dt, seed=2)
    d = dones(40, 3).to(d_dt)
    assert_equivalent(original, rewritten, rewards, values, d, 0.99, 0.9)
    assert strategies(report) == {4: "scan"}
    assert "`ret`: scanned when the tensors its step reads have one floating dtype" in \
        report.loops[0].reason


@pytest.mark.parametrize("conversion", ["dones[t].float()", "dones[t].to(torch.float32)",
                                        "torch.as_tensor(dones[t], dtype=torch.float32)"])
def test_multiplied_out_factors_of_a_converted_mask_run_the_loop(conversion):
    # every input float64, the mask converted to float32 in the step: the check counts the
    # dtype it is converted to
    original, rewritten, _, _ = build(TD_LAMBDA.replace("(1 - dones[t])", f"(1 - {conversion})"))
    assert_equivalent(original, rewritten, randn(40, 3, dtype=torch.float64, grad=False),
                      randn(41, 3, dtype=torch.float64, seed=2),
                      dones(40, 3, dtype=torch.float64), 0.99, 0.9)


def test_multiplied_out_factors_of_mixed_dtypes_say_why_the_loop_ran(tmp_path):
    user = load_module(tmp_path, "import torch\n" + dedent(TD_LAMBDA))
    report = equivalent_report(user.f, randn(40, 3, dtype=torch.float64, grad=False),
                               randn(41, 3, seed=2), dones(40, 3), 0.99, 0.9)
    (loop,) = report.loops
    assert (loop.vectorized_runs, loop.original_runs) == (0, 1)
    assert loop.last_failure.startswith("`ret`, `rewards`, `gamma`, `lam`, `dones`, `values` hold "
                                        "tensors of several dtypes"), loop.last_failure


# A reset to 0 (`if done: s = 0`) gives the loop's next state the dtype of the step's parts
# alone: float32 rewards after a float64 state before the loop make every state after the reset
# float32 (all of them, for a reset at the first step), where the scan kept float64.
@pytest.mark.parametrize("m_dtype", [torch.float32, torch.bool])
def test_a_reset_after_a_wider_state_runs_the_loop(m_dtype):
    original, rewritten, _, report = build("""
        def f(r, v, m, lam):
            s = v[0]
            out = []
            for t in range(r.shape[0]):
                if m[t].all():
                    s = 0
                s = lam * s + r[t]
                out.append(s)
            return torch.stack(out)
        """)
    assert strategies(report) == {4: "scan"}
    m = dones(20, 3).to(m_dtype)
    m[0] = 1  # a reset at the first step: every state of the loop is float32
    assert_equivalent(original, rewritten, randn(20, 3, grad=False),
                      randn(21, 3, dtype=torch.float64, seed=2), m, 0.9)
    for dtype in DTYPES:  # one dtype: scanned, a bool mask too
        assert_equivalent(original, rewritten, randn(20, 3, dtype=dtype, grad=False),
                          randn(21, 3, dtype=dtype, seed=2), m, 0.9)


# The factors multiplied out of `lam * (gamma * s - r) - m * (s + v)` and the negated one of
# `r - m * s` subtract or negate `m`: torch refuses that for a bool mask, which the loop only
# multiplies; the loop runs as written (it raised at every call, and ran as written after a
# warning).
@pytest.mark.parametrize("step", ["lam * (gamma * s - r[t]) - m[t] * (s + v[t])",
                                  "r[t] - m[t] * s"])
def test_multiplied_out_factors_of_a_bool_mask_run_the_loop(step):
    original, rewritten, _, report = build(f"""
        def f(r, v, m, gamma, lam):
            s = v[0]
            out = []
            for t in range(r.shape[0]):
                s = {step}
                out.append(s)
            return torch.stack(out)
        """)
    assert strategies(report) == {4: "scan"}
    m = dones(20, 3).bool()
    for dtype in DTYPES:
        assert_equivalent(original, rewritten, randn(20, 3, dtype=dtype, grad=False),
                          randn(21, 3, dtype=dtype, seed=2), m, 0.99, 0.9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_multiplied_out_factors_of_one_dtype_are_scanned(dtype, tmp_path):
    user = load_module(tmp_path, "import torch\n" + dedent(TD_LAMBDA))
    report = equivalent_report(user.f, randn(40, 3, dtype=dtype, grad=False),
                               randn(41, 3, dtype=dtype, seed=2), dones(40, 3, dtype=dtype),
                               0.99, 0.9)
    assert (report.loops[0].vectorized_runs, report.loops[0].original_runs) == (1, 0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("alpha", [0.9, 0.999])
def test_half_precision_states_are_rounded_every_step(dtype, alpha):
    # a 0.999-EMA in bfloat16 stagnates (a step's increment under half an ulp is lost): the
    # loop's result depends on every step's rounding, which a scan does not make
    src = """
        def f(x, alpha):
            s = x[:, 0]
            out = []
            for t in range(x.shape[1]):
                s = alpha * s + (1 - alpha) * x[:, t]
                out.append(s)
            return torch.stack(out, 1)
        """
    original, rewritten, _, report = build(src)
    assert strategies(report) == {4: "scan"}
    x = (randn(3, 3000, dtype=torch.float32, seed=4, grad=False) * 10).to(dtype)
    torch.testing.assert_close(rewritten(x, alpha), original(x, alpha), rtol=0, atol=0)
    x.requires_grad_()
    assert_equivalent(original, rewritten, x[:, :200], alpha)


# Sequences zipped and walked backwards: `zip(reversed(rewards), reversed(dones))`
ZIPPED = """
    def f(rewards, dones, gamma):
        G = 0.0
        returns = []
        for r, d in zip(reversed(rewards), reversed(dones)):
            G = r + gamma * (1 - d) * G
            returns.insert(0, G)
        return torch.stack(returns)
    """


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [1, 2, 30, 800])
def test_zipped_sequences_walked_backwards(dtype, T):
    original, rewritten, code, report = build(ZIPPED)
    assert strategies(report) == {4: "scan"}
    assert "len(dones) == len(rewards)" in code
    d = dones(T, 3, dtype=dtype)
    d[0], d[-1] = 1.0, 1.0  # terminals at the first and last steps
    assert_equivalent(original, rewritten, randn(T, 3, dtype=dtype), d, 0.99)
    assert_equivalent(original, rewritten, list(randn(T, 3, dtype=dtype).unbind(0)), d, 0.99)


def test_zipped_sequences_of_unequal_lengths_run_the_loop():
    # zip pairs the ends of both: rewards[-1] with dones[-1], not the same index
    original, rewritten, _, _ = build(ZIPPED)
    assert_equivalent(original, rewritten, randn(9, 3), dones(7, 3), 0.9)
    assert_equivalent(original, rewritten, randn(7, 3), dones(9, 3), 0.9)


@pytest.mark.parametrize("walk", [
    "zip(reversed(rewards), dones)",                      # one walked forwards
    "zip(reversed(rewards), reversed(dones), strict=True)",
    "zip(reversed(rewards), reversed(rewards[d]))",       # reads a name the loop binds
])
def test_zips_that_stay_loops(walk):
    _, _, _, report = build(ZIPPED.replace("zip(reversed(rewards), reversed(dones))", walk))
    assert strategies(report) == {4: "kept"}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_returns_reversed_with_a_learnable_factor(dtype):
    # reversed steps, a per-step factor, a factor requiring grad: step by step, as the loop
    src = """
        def f(rewards, dones, gamma):
            G = torch.zeros_like(rewards[:, 0])
            out = torch.zeros_like(rewards)
            for t in reversed(range(rewards.shape[1])):
                G = rewards[:, t] + gamma * (1.0 - dones[:, t]) * G
                out[:, t] = G
            return out
        """
    original, rewritten, _, report = build(src)
    assert strategies(report) == {4: "scan"}
    r, d = randn(2, 500, dtype=dtype, grad=False), dones(2, 500, dtype=dtype)
    gamma = torch.tensor(0.99, dtype=dtype)
    assert torch.equal(rewritten(r, d, gamma), original(r, d, gamma))
    assert_equivalent(original, rewritten, r[:, :40].requires_grad_(), d[:, :40],
                      gamma.requires_grad_())


# Episode ends written as a reset, `if done: G = 0`, right before the recurrence: the scan's
# resets (a zero factor would make `0 * inf` NaN where the loop starts again from 0)
RESETS = """
    def f(rewards, dones, gamma):
        G = 0.0
        returns = []
        for r, d in zip(reversed(rewards), reversed(dones)):
            if d:
                G = 0
            G = r + gamma * G
            returns.insert(0, G)
        return torch.stack(returns)
    """

RESETS_GOLDEN = """
    def f(rewards, dones, gamma):
        G = 0.0
        returns = []
        _dones_stacked = _stack_items(tuple(dones)) if (type(dones) is list or (isinstance(dones, tuple) and type(dones).__getitem__ is tuple.__getitem__ and (type(dones).__iter__ is tuple.__iter__) and (type(dones).__len__ is tuple.__len__))) and len(dones) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == dones[0].shape and (_v.dtype == dones[0].dtype) and (_v.device == dones[0].device) for _v in dones)) else dones
        _rewards_stacked = _stack_items(tuple(rewards)) if (type(rewards) is list or (isinstance(rewards, tuple) and type(rewards).__getitem__ is tuple.__getitem__ and (type(rewards).__iter__ is tuple.__iter__) and (type(rewards).__len__ is tuple.__len__))) and len(rewards) > 0 and all((isinstance(_v_1, torch.Tensor) and _v_1.shape == rewards[0].shape and (_v_1.dtype == rewards[0].dtype) and (_v_1.device == rewards[0].device) for _v_1 in rewards)) else rewards
        if (type(rewards) in (list, tuple) or isinstance(rewards, torch.Tensor)) and (type(dones) in (list, tuple) or isinstance(dones, torch.Tensor)) and (len(dones) == len(rewards)) and _computed_alike(rewards, dones, G, gamma, bools=True) and (isinstance(_rewards_stacked, torch.Tensor) and len(_rewards_stacked) <= _rewards_stacked.shape[0] and isinstance(_dones_stacked, torch.Tensor) and (len(_rewards_stacked) <= _dones_stacked.shape[0]) and isinstance(len(_rewards_stacked), int) and (len(_rewards_stacked) > 0) or _numbers_scan_pays(len(rewards), (rewards,), (dones,), (gamma, G))):
            'optimize_loss: loop at line 4 vectorized'
            if isinstance(_rewards_stacked, torch.Tensor) and len(_rewards_stacked) <= _rewards_stacked.shape[0] and isinstance(_dones_stacked, torch.Tensor) and (len(_rewards_stacked) <= _dones_stacked.shape[0]) and isinstance(len(_rewards_stacked), int) and (len(_rewards_stacked) > 0):
                _rewards_row = _rewards_stacked if len(_rewards_stacked) == _rewards_stacked.shape[0] else _rewards_stacked[0:len(_rewards_stacked):1]
                _dones_row = _dones_stacked if len(_rewards_stacked) == _dones_stacked.shape[0] else _dones_stacked[0:len(_rewards_stacked):1]
                r = _rewards_row
                d = _dones_row
                _G_reset = d
                _G_b_item = r
                _G_reset_1_item = _G_reset
                _outs_1 = (_G_b_item, _G_reset_1_item)
                _G_all = _linear_scan(gamma, _outs_1[0], G, False, True, len(rewards), True, _outs_1[1], True)
                if isinstance(_G_all, torch.Tensor) and len(rewards) <= _G_all.shape[0] and isinstance(len(rewards), int) and (len(rewards) > 0):
                    _G_all_row = _G_all if len(rewards) == _G_all.shape[0] else _G_all[0:len(rewards):1]
                    _G_t = _G_all_row
                    _returns_item = _G_t
                    _outs_2 = (_returns_item,)
                    returns = _outs_2[0]
                else:
                    for _k in range(len(rewards)):
                        _G_t = _G_all[_k]
                        returns.append(_G_t)
            else:
                _G_all = _scan_numbers(gamma, rewards, G, False, True, len(rewards), True, dones, True)
                for _k in range(len(rewards)):
                    _G_t = _G_all[_k]
                    returns.append(_G_t)
        else:
            for r, d in zip(reversed(rewards), reversed(dones)):
                if d:
                    G = 0
                G = r + gamma * G
                returns.insert(0, G)
        return returns if isinstance(returns, torch.Tensor) else torch.stack(returns)
    """


def test_golden_resets():
    _, _, code, report = build(RESETS)
    assert strategies(report) == {4: "scan"}
    assert code == normalise(RESETS_GOLDEN), code


def _terminals(T, where):
    d = torch.rand(T, generator=torch.Generator().manual_seed(T)) < 0.3
    if where == "first":
        d[0] = True
    elif where == "last":
        d[-1] = True
    elif where in ("all", "none"):
        d[:] = where == "all"
    return d


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [1, 2, 37, 800])
@pytest.mark.parametrize("where", ["first", "last", "all", "none", "random"])
def test_resets_equivalent(dtype, T, where):
    original, rewritten, _, report = build(RESETS)
    assert strategies(report) == {4: "scan"}
    r, d = randn(T, dtype=dtype), _terminals(T, where)
    assert_equivalent(original, rewritten, r, d, 0.99)
    assert_equivalent(original, rewritten, r, d.to(dtype), torch.tensor(0.9, dtype=dtype,
                                                                         requires_grad=True))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_resets_drop_inf_and_nan_before_them(bad):
    # a bad reward at a step run before an episode end (reversed: a later index): the loop starts
    # again cleanly, so must the scan; every gradient as the loop's (NaN where autograd's 0 * inf)
    original, rewritten, _, report = build(RESETS)
    assert strategies(report) == {4: "scan"}
    r, d = randn(40, dtype=torch.float64), torch.zeros(40, dtype=torch.bool)
    with torch.no_grad():
        r[30] = bad
    d[20], d[5] = True, True
    gamma = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    want, got = original(r, d, gamma), rewritten(r, d, gamma)
    torch.testing.assert_close(got, want, equal_nan=True)
    assert torch.isfinite(got[:21]).all()
    w = randn(40, dtype=torch.float64, seed=3, grad=False)
    # gamma's gradient through the infinite states sums infinities: their order decides inf or NaN
    for part, wrt in ((slice(0, 21), (r, gamma)), (slice(0, 40), (r,))):
        gw = torch.autograd.grad((want[part] * w[part]).sum(), wrt, retain_graph=True)
        gg = torch.autograd.grad((got[part] * w[part]).sum(), wrt, retain_graph=True)
        for x, y in zip(gw, gg):
            torch.testing.assert_close(y, x, equal_nan=True)


@pytest.mark.parametrize("src", [
    RESETS.replace("G = 0\n", "G = 1\n"),                     # not a reset to 0
    RESETS.replace("if d:\n                G = 0\n", "if d:\n                G = 0\n            else:\n                G = G * 2\n"),
    RESETS.replace("G = r + gamma * G", "G = r + gamma * G * G"),  # not linear
])
def test_resets_that_stay_loops(src):
    _, _, code, report = build(src)
    assert strategies(report) == {4: "kept"} and code == normalise(src)


def test_a_reset_of_several_elements_raises_as_written():
    original, rewritten, _, report = build(RESETS)
    assert strategies(report) == {4: "scan"}
    r, d = randn(5, 2, grad=False), torch.zeros(5, 2, dtype=torch.bool)
    for fn in (original, rewritten):
        with pytest.raises(RuntimeError, match="ambiguous"):
            fn(r, d, 0.9)


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 40), reverse=st.booleans(), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([torch.float64, torch.bfloat16]))
def test_kernel_with_resets_matches_the_loop(T, reverse, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    a = (torch.rand(T, 3, generator=g, dtype=torch.float64) * 1.5).to(dtype).requires_grad_()
    b = torch.randn(T, 3, generator=g, dtype=torch.float64).to(dtype)
    b[T // 2, 1] = float("inf")
    b.requires_grad_()
    resets = torch.rand(T, generator=g) < 0.3
    s0 = torch.tensor([float("inf"), 1.0, 2.0], dtype=dtype, requires_grad=True)
    s, states = s0, {}
    for t in (reversed(range(T)) if reverse else range(T)):
        s = a[t] * (0 if resets[t] else s) + b[t]
        states[t] = s
    want = torch.stack([states[t] for t in range(T)])
    got = linear_scan(a, b, s0, True, True, T, reverse, resets, True)
    tol = {"rtol": 2e-2, "atol": 2e-2} if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(got, want, equal_nan=True, **tol)
    w = torch.randn(T, 3, dtype=torch.float64).to(dtype)
    for x, y in zip(torch.autograd.grad(torch.nan_to_num(want).mul(w).sum(), (a, b, s0),
                                        allow_unused=True),
                    torch.autograd.grad(torch.nan_to_num(got).mul(w).sum(), (a, b, s0))):
        torch.testing.assert_close(y, torch.zeros_like(y) if x is None else x, equal_nan=True,
                                   **tol)
