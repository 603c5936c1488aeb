"""scan_step_values: what a scanned loop's steps read from the step before and from arrays the
body writes (GAE as DeepRL_Algorithms writes it: ``prev_value = values[i, 0]``,
``prev_advantage = advantages[i, 0]``, ``deltas[i]`` read after its write). Golden generated code
(with a no-change case), equivalence (value, every gradient, dtype; float32 and float64; forward
and reversed loops, NaN), and the runtime checks that run the loop as written (a row of two
elements, a factor of another dtype, a tensor as the first carried value)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from passes.linear_scan import previous_states
from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, strategies

GOLDEN = Path(__file__).parent / "golden" / "scan_step_values"
DTYPES = [torch.float32, torch.float64]

DEEPRL_GAE = """
    def f(rewards, masks, values, gamma, tau):
        deltas = torch.zeros(rewards.size(0), 1, dtype=rewards.dtype)
        advantages = torch.zeros(rewards.size(0), 1, dtype=rewards.dtype)
        prev_value = 0
        prev_advantage = 0
        for i in reversed(range(rewards.size(0))):
            deltas[i] = rewards[i] + gamma * prev_value * masks[i] - values[i]
            advantages[i] = deltas[i] + gamma * tau * prev_advantage * masks[i]
            prev_value = values[i, 0]
            prev_advantage = advantages[i, 0]
        returns = values + advantages
        return (advantages * values).mean() + returns.pow(2).mean() + deltas.sum()
    """

# an array written and then read by the recurrence at the same step (the step loop read it as it
# was before the loop)
WRITTEN_DELTAS = """
    def f(values, rewards, dones, gamma, lam):
        adv = torch.zeros_like(rewards[:, 0])
        out = torch.zeros_like(rewards)
        deltas = torch.zeros_like(rewards)
        for t in reversed(range(rewards.shape[1])):
            deltas[:, t] = rewards[:, t] + gamma * values[:, t + 1] * (1 - dones[:, t]) - values[:, t]
            adv = deltas[:, t] + gamma * lam * (1 - dones[:, t]) * adv
            out[:, t] = adv
        return (out ** 2).mean() + deltas.sum()
    """

# the carried value's next one reads the carried value itself: no value of the step alone
NO_CHANGE = DEEPRL_GAE.replace("prev_value = values[i, 0]", "prev_value = values[i, 0] * prev_value")

CASES = {"deeprl_gae": (DEEPRL_GAE, {6: "scan"}), "written_deltas": (WRITTEN_DELTAS, {5: "scan"}),
         "no_change": (NO_CHANGE, {6: "kept"})}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    src, expected = CASES[name]
    _, _, code, report = build(src)
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("OL_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(code)
    assert code == path.read_text()
    assert strategies(report) == expected


def gae_inputs(dtype, T=37, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, 1, generator=g, dtype=dtype).requires_grad_(grad)
    masks = (torch.rand(T, 1, generator=g) > 0.15).to(dtype)
    values = torch.randn(T, 1, generator=g, dtype=dtype).requires_grad_(grad)
    return rewards, masks, values, 0.99, 0.95


@pytest.mark.parametrize("dtype", DTYPES)
def test_deeprl_gae_equivalent(dtype):
    original, rewritten, _, report = build(DEEPRL_GAE)
    assert strategies(report) == {6: "scan"}
    for T in (1, 2, 37, 300):
        assert_equivalent(original, rewritten, *gae_inputs(dtype, T))
    assert rewritten(*gae_inputs(dtype)).dtype == dtype


def test_deeprl_gae_nan_reward_propagates_as_in_the_loop():
    original, rewritten, _, report = build(DEEPRL_GAE)
    assert strategies(report) == {6: "scan"}
    rewards, masks, values, gamma, tau = gae_inputs(torch.float64, grad=False)
    rewards[20] = float("nan")
    masks[5] = 0
    expected = original(rewards, masks, values, gamma, tau)
    assert torch.isnan(expected) and torch.isnan(rewritten(rewards, masks, values, gamma, tau))


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_loop_with_a_value_from_the_step_before(dtype):
    src = """
        def f(x, c):
            out = torch.zeros_like(x)
            prev = 0.5
            s = 0
            for t in range(x.shape[0]):
                out[t] = s = c * s + x[t] * prev
                prev = x[t, 0] * 2
            return out.pow(2).sum()
        """
    original, rewritten, code, report = build(src)
    assert strategies(report) == {5: "scan"} and "_previous_states" in code
    x = torch.randn(23, 3, dtype=dtype, requires_grad=True)
    assert_equivalent(original, rewritten, x, 0.9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_an_array_written_before_the_recurrence_reads_it(dtype):
    original, rewritten, _, report = build(WRITTEN_DELTAS)
    assert strategies(report) == {5: "scan"}
    g = torch.Generator().manual_seed(3)
    values = torch.randn(3, 12, generator=g, dtype=dtype, requires_grad=True)
    rewards = torch.randn(3, 11, generator=g, dtype=dtype, requires_grad=True)
    dones = (torch.rand(3, 11, generator=g) < 0.3).to(dtype)
    assert_equivalent(original, rewritten, values, rewards, dones, 0.99, 0.95)


def test_an_array_read_at_another_step_keeps_the_loop():
    src = WRITTEN_DELTAS.replace("adv = deltas[:, t] +", "adv = deltas[:, t - 1] +")
    original, rewritten, _, report = build(src)
    assert strategies(report) == {5: "kept"}
    g = torch.Generator().manual_seed(3)
    assert_equivalent(original, rewritten, torch.randn(3, 12, generator=g, requires_grad=True),
                      torch.randn(3, 11, generator=g), (torch.rand(3, 11, generator=g) < 0.3) * 1.0,
                      0.99, 0.95)


ROWS_LIKE = DEEPRL_GAE.replace("torch.zeros(rewards.size(0), 1, dtype=rewards.dtype)",
                               "torch.zeros_like(rewards)")


@pytest.mark.parametrize("src, change", [
    (ROWS_LIKE, lambda r, m, v: (r.expand(-1, 2) + 0, m, v.expand(-1, 2) + 0)),  # 2-wide rows
    (DEEPRL_GAE, lambda r, m, v: (r, m.double(), v)),  # a factor of another dtype than the row's
])
def test_rows_the_pick_does_not_cover_run_the_loop_as_written(src, change):
    original, rewritten, _, report = build(src)
    assert strategies(report) == {6: "scan"}
    rewards, masks, values, gamma, tau = gae_inputs(torch.float32, grad=False)
    assert_equivalent(original, rewritten, rewards, masks, values, gamma, tau)  # [T, 1]: scanned
    args = (*change(rewards, masks, values), gamma, tau)
    assert torch.equal(original(*args), rewritten(*args))  # bit for bit: the loop ran


def test_a_tensor_first_value_runs_the_loop_as_written():
    src = DEEPRL_GAE.replace("prev_value = 0\n", "prev_value = torch.zeros(())\n")
    original, rewritten, _, report = build(src)
    assert strategies(report) == {6: "scan"}
    args = gae_inputs(torch.float32, grad=False)
    assert torch.equal(original(*args), rewritten(*args))


@pytest.mark.parametrize("reverse", [False, True])
def test_previous_states(reverse):
    states = torch.arange(1.0, 5.0)
    got = previous_states(states, 7, reverse)
    assert got.tolist() == ([2.0, 3.0, 4.0, 7.0] if reverse else [7.0, 1.0, 2.0, 3.0])
    assert got.dtype == states.dtype


def test_an_array_the_rest_reads_at_a_later_step_keeps_the_loop():
    # written first, the rest would see step t + 1's row before the original writes it
    src = WRITTEN_DELTAS.replace("out[:, t] = adv", "out[:, t] = adv + deltas[:, t + 1]").replace(
        "reversed(range(rewards.shape[1]))", "range(rewards.shape[1] - 1)")
    original, rewritten, _, report = build(src)
    assert strategies(report) == {5: "kept"}
    g = torch.Generator().manual_seed(3)
    assert_equivalent(original, rewritten, torch.randn(3, 12, generator=g, requires_grad=True),
                      torch.randn(3, 11, generator=g), (torch.rand(3, 11, generator=g) < 0.3) * 1.0,
                      0.99, 0.95)
