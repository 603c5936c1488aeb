"""scan_python_numbers: a scanned loop over lists of Python floats (PPO's rollout buffers) scans
them in float64 and gives Python floats. Golden before/after (and a loop that gets no such
branch), equivalence (values within the documented float64 tolerance, the outputs' types and
order, the loss's value, dtype and gradients), resets of every kind, empty and one-step lists,
items that make the loop run as written, and the trip count below which it runs as written."""
from __future__ import annotations

import importlib
import math
import warnings

import pytest
import torch

from passes import linear_scan
from rewrite import optimize_loss
from rewrite.testing import assert_equivalent
from tests.helpers import load_module
from tests.loop_helpers import build, normalise

PPO = """
    def returns(rewards_buffer, is_terminals, gamma):
        rewards = []
        discounted_reward = 0
        for reward, is_terminal in zip(reversed(rewards_buffer), reversed(is_terminals)):
            if is_terminal:
                discounted_reward = 0
            discounted_reward = reward + (gamma * discounted_reward)
            rewards.insert(0, discounted_reward)
        return rewards
    """

# the tensor branch as before; on lists of floats the scan of numbers, the rest as written
PPO_GOLDEN = """
    def returns(rewards_buffer, is_terminals, gamma):
        rewards = []
        discounted_reward = 0
        _is_terminals_stacked = _stack_items(tuple(is_terminals)) if (type(is_terminals) is list or (isinstance(is_terminals, tuple) and type(is_terminals).__getitem__ is tuple.__getitem__ and (type(is_terminals).__iter__ is tuple.__iter__) and (type(is_terminals).__len__ is tuple.__len__))) and len(is_terminals) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == is_terminals[0].shape and (_v.dtype == is_terminals[0].dtype) and (_v.device == is_terminals[0].device) for _v in is_terminals)) else is_terminals
        _rewards_buffer_stacked = _stack_items(tuple(rewards_buffer)) if (type(rewards_buffer) is list or (isinstance(rewards_buffer, tuple) and type(rewards_buffer).__getitem__ is tuple.__getitem__ and (type(rewards_buffer).__iter__ is tuple.__iter__) and (type(rewards_buffer).__len__ is tuple.__len__))) and len(rewards_buffer) > 0 and all((isinstance(_v_1, torch.Tensor) and _v_1.shape == rewards_buffer[0].shape and (_v_1.dtype == rewards_buffer[0].dtype) and (_v_1.device == rewards_buffer[0].device) for _v_1 in rewards_buffer)) else rewards_buffer
        if type(rewards) is list and (type(rewards_buffer) in (list, tuple) or isinstance(rewards_buffer, torch.Tensor)) and (type(is_terminals) in (list, tuple) or isinstance(is_terminals, torch.Tensor)) and (len(is_terminals) == len(rewards_buffer)) and _computed_alike(rewards_buffer, is_terminals, discounted_reward, gamma, bools=True) and (isinstance(_rewards_buffer_stacked, torch.Tensor) and len(_rewards_buffer_stacked) <= _rewards_buffer_stacked.shape[0] and isinstance(_is_terminals_stacked, torch.Tensor) and (len(_rewards_buffer_stacked) <= _is_terminals_stacked.shape[0]) and isinstance(len(_rewards_buffer_stacked), int) and (len(_rewards_buffer_stacked) > 0) or _numbers_scan_pays(len(rewards_buffer), (rewards_buffer,), (is_terminals,), (gamma, discounted_reward))):
            'optimize_loss: loop at line 4 vectorized'
            if isinstance(_rewards_buffer_stacked, torch.Tensor) and len(_rewards_buffer_stacked) <= _rewards_buffer_stacked.shape[0] and isinstance(_is_terminals_stacked, torch.Tensor) and (len(_rewards_buffer_stacked) <= _is_terminals_stacked.shape[0]) and isinstance(len(_rewards_buffer_stacked), int) and (len(_rewards_buffer_stacked) > 0):
                _rewards_buffer_row = _rewards_buffer_stacked if len(_rewards_buffer_stacked) == _rewards_buffer_stacked.shape[0] else _rewards_buffer_stacked[0:len(_rewards_buffer_stacked):1]
                _is_terminals_row = _is_terminals_stacked if len(_rewards_buffer_stacked) == _is_terminals_stacked.shape[0] else _is_terminals_stacked[0:len(_rewards_buffer_stacked):1]
                reward = _rewards_buffer_row
                is_terminal = _is_terminals_row
                _discounted_reward_reset = is_terminal
                _discounted_reward_b_item = reward
                _discounted_reward_reset_1_item = _discounted_reward_reset
                _outs_1 = (_discounted_reward_b_item, _discounted_reward_reset_1_item)
                _discounted_reward_all = _linear_scan(gamma, _outs_1[0], discounted_reward, False, True, len(rewards_buffer), True, _outs_1[1], True)
                _rewards_front = []
                if isinstance(_discounted_reward_all, torch.Tensor) and len(rewards_buffer) <= _discounted_reward_all.shape[0] and (type(_rewards_front) is list) and isinstance(len(rewards_buffer), int) and (len(rewards_buffer) > 0):
                    _discounted_reward_all_row = _discounted_reward_all if len(rewards_buffer) == _discounted_reward_all.shape[0] else _discounted_reward_all[0:len(rewards_buffer):1]
                    _discounted_reward_t = _discounted_reward_all_row
                    _rewards_front_item = _discounted_reward_t
                    _outs_2 = (_rewards_front_item,)
                    _rewards_front.extend(_outs_2[0].unbind(0))
                else:
                    for _k in range(len(rewards_buffer)):
                        _discounted_reward_t = _discounted_reward_all[_k]
                        _rewards_front.append(_discounted_reward_t)
                rewards[0:0] = _rewards_front
            else:
                _discounted_reward_all = _scan_numbers(gamma, rewards_buffer, discounted_reward, False, True, len(rewards_buffer), True, is_terminals, True)
                _rewards_front = []
                for _k in range(len(rewards_buffer)):
                    _discounted_reward_t = _discounted_reward_all[_k]
                    _rewards_front.append(_discounted_reward_t)
                rewards[0:0] = _rewards_front
        else:
            for reward, is_terminal in zip(reversed(rewards_buffer), reversed(is_terminals)):
                if is_terminal:
                    discounted_reward = 0
                discounted_reward = reward + gamma * discounted_reward
                rewards.insert(0, discounted_reward)
        return rewards
    """


@pytest.fixture
def short_scans(monkeypatch):
    """Every trip count pays: the branch's values at small lengths."""
    monkeypatch.setitem(linear_scan.NUMBERS_SCAN_MIN_TRIPS, "tensor", 1)
    monkeypatch.setitem(linear_scan.NUMBERS_SCAN_MIN_TRIPS, "numbers", 1)


def test_golden_ppo_returns():
    _, _, code, _ = build(PPO)
    assert code == normalise(PPO_GOLDEN), code
    # no such branch for `reward * 2`: a float64 tensor's product is the double product, but a
    # walked item's own value is all the branch takes (no arithmetic of Python numbers judged
    # as tensors')
    _, _, code, _ = build(PPO.replace("reward + (gamma", "reward * 2 + (gamma"))
    assert "_linear_scan" in code and "_scan_numbers" not in code


def _run(tmp_path, *args, src=PPO):
    """(original's list, the optimized one's, the loop's run counts)."""
    fn = load_module(tmp_path, src).returns
    optimized = optimize_loss(fn, compile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = optimized(*args)
    (loop,) = optimized.report.loops
    return fn(*args), got, (loop.vectorized_runs, loop.original_runs)


def _magnitudes(rewards, flags, gamma):
    """Every state's sum of the magnitudes of its terms (the loop on absolute values)."""
    out, s = [], 0.0
    for r, f in zip(reversed(rewards), reversed(flags)):
        s = abs(r) + abs(gamma) * (0.0 if f else s)
        out.insert(0, s)
    return out


def _assert_close_floats(got, want, rewards, flags, gamma):
    """The documented tolerance: |scan - loop| <= 4 (trips + 1) 2**-52 * sum |terms|."""
    assert type(got) is list and len(got) == len(want)
    assert all(type(g) is float for g in got)
    bound = 4 * (len(want) + 1) * 2.0 ** -52
    for g, w, m in zip(got, want, _magnitudes(rewards, flags, gamma)):
        assert g == w or math.isnan(g) and math.isnan(w) or abs(g - w) <= bound * m, (g, w)


def _rewards(T, seed=0):
    return torch.randn(T, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64).tolist()


def _flags(T, kind, where="random"):
    d = torch.rand(T, generator=torch.Generator().manual_seed(T)) < 0.3
    if where in ("first", "last"):
        d[0 if where == "first" else -1] = True
    elif where in ("all", "none"):
        d[:] = where == "all"
    return {"tensor": d, "bools": d.tolist(), "ints": d.int().tolist(),
            "floats": d.double().tolist(), "tuple": tuple(d.tolist())}[kind]


@pytest.mark.parametrize("kind", ["tensor", "bools", "ints", "floats", "tuple"])
@pytest.mark.parametrize("T", [1, 2, 37, 300])
@pytest.mark.parametrize("where", ["first", "last", "all", "none", "random"])
def test_returns_equivalent_with_resets(tmp_path, short_scans, kind, T, where):
    rewards, flags = _rewards(T), _flags(T, kind, where)
    want, got, runs = _run(tmp_path, rewards, flags, 0.99)
    assert runs == (1, 0)
    _assert_close_floats(got, want, rewards, flags, 0.99)


def test_float_flags_nan_is_a_reset_and_inf_rewards_propagate(tmp_path, short_scans):
    rewards = _rewards(20)
    rewards[3], rewards[12] = math.inf, math.nan
    flags = [0.0] * 20
    flags[2], flags[8], flags[15] = math.nan, 1.0, -0.5  # `if c`: true for each
    want, got, runs = _run(tmp_path, rewards, flags, 0.9)
    assert runs == (1, 0)
    _assert_close_floats(got, want, rewards, flags, 0.9)


def test_state_before_the_loop_and_float_gamma_types(tmp_path, short_scans):
    # a float state before the loop, read until the first reset; an int gamma gives floats too
    src = PPO.replace("discounted_reward = 0\n        for", "discounted_reward = 2.5\n        for")
    for gamma in (0.5, 1):
        rewards, flags = _rewards(9), [False] * 9
        want, got, runs = _run(tmp_path, rewards, flags, gamma, src=src)
        assert runs == (1, 0)
        _assert_close_floats(got, want, rewards, flags, gamma)


def test_empty_lists_run_the_loop(tmp_path, short_scans):
    want, got, runs = _run(tmp_path, [], [], 0.99)
    assert got == want == [] and runs == (0, 1)


@pytest.mark.parametrize("case", ["int rewards", "numpy rewards", "a tensor among rewards",
                                  "numpy flags", "big int flag", "numpy gamma",
                                  "tensor gamma", "list subclass"])
def test_other_items_run_the_loop_as_written(tmp_path, short_scans, case):
    np = pytest.importorskip("numpy")
    rewards, flags, gamma = _rewards(12), [False] * 12, 0.99
    _, got, runs = _run(tmp_path, rewards, flags, gamma)
    assert runs == (1, 0)  # the branch's own inputs: scanned
    if case == "int rewards":
        rewards = [int(10 * r) for r in rewards]
    elif case == "numpy rewards":
        rewards = [np.float64(r) for r in rewards]
    elif case == "a tensor among rewards":
        rewards[4] = torch.tensor(rewards[4], dtype=torch.float64)
    elif case == "numpy flags":
        flags = [np.bool_(f) for f in flags]
    elif case == "big int flag":
        flags[3] = 2 ** 70
    elif case == "numpy gamma":
        gamma = np.float64(gamma)
    elif case == "tensor gamma":
        gamma = torch.tensor(gamma, dtype=torch.float64)
    elif case == "list subclass":
        rewards = type("Rewards", (list,), {})(rewards)
    want, got, runs = _run(tmp_path, rewards, flags, gamma)
    assert runs == (0, 1)
    assert [type(x) for x in got] == [type(x) for x in want]
    assert all(bool(g == w) for g, w in zip(got, want))


def test_below_the_paying_trip_count_the_loop_runs(tmp_path):
    flags = {"tensor": _flags(1024, "tensor"), "bools": _flags(8192, "bools")}
    for kind, at in linear_scan.NUMBERS_SCAN_MIN_TRIPS.items():
        walked = flags["tensor" if kind == "tensor" else "bools"]
        for T, runs in ((at - 1, (0, 1)), (at, (1, 0))):
            rewards = _rewards(T)
            want, got, ran = _run(tmp_path, rewards, walked[:T], 0.99)
            assert ran == runs, (kind, T)
            _assert_close_floats(got, want, rewards, walked[:T], 0.99)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.usefixtures("keep_faster_on")  # per band: a later signature is decided and counted
def test_ppo_example_at_a_paying_length(dtype):
    # the buffers as PPO keeps them (rewards a list of floats): value, gradients, dtype
    module = importlib.import_module("examples.real.rl_ppo_mc_returns")
    args = list(module.make_inputs("bench", dtype))
    optimized = optimize_loss(module.naive, compile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_equivalent(module.naive, optimized, *args)
        args[4] = args[4].tolist()  # the terminal flags as Python bools
        args[3] = args[3] * 5  # 10000 steps: the list of bools pays too
        args[4] = args[4] * 5
        args[:3] = [torch.cat([a.detach()] * 5).requires_grad_() for a in args[:3]]
        args[5] = torch.cat([args[5]] * 5)
        assert_equivalent(module.naive, optimized, *args)
    (loop,) = optimized.report.loops
    assert (loop.vectorized_runs, loop.original_runs) == (2, 0)
