"""REINFORCE policy-gradient loss from pytorch/examples (reinforcement_learning/reinforce.py,
``finish_episode``): discounted returns are accumulated backwards over a Python list of float
rewards with ``R = r + gamma * R`` and ``deque.appendleft``, turned into a tensor with
``torch.tensor`` (always float32), standardised with ``eps`` from numpy, and every saved
``[1]``-shaped log-probability is multiplied by its return in a ``zip`` loop before ``torch.cat``
and a sum. The returns loop is a real recurrence, so it is kept."""
from collections import deque

import numpy as np
import torch

CASE = {
    "loops": "kept",
    "elementwise": False,
    "sizes": {"small": "episode of 12 steps", "bench": "episode of 1000 steps"},
    "source": "pytorch/examples:reinforcement_learning/reinforce.py",
    "field": "rl returns",
    "target_args": ("rewards",),
}

gamma = 0.99
eps = np.finfo(np.float32).eps.item()


def naive(saved_log_probs, rewards):
    R = 0
    policy_loss = []
    returns = deque()
    for r in rewards[::-1]:
        R = r + gamma * R
        returns.appendleft(R)
    returns = torch.tensor(returns)
    returns = (returns - returns.mean()) / (returns.std() + eps)
    for log_prob, R in zip(saved_log_probs, returns):
        policy_loss.append(-log_prob * R)
    policy_loss = torch.cat(policy_loss).sum()
    return policy_loss


def expert(saved_log_probs, rewards):
    r = torch.tensor(rewards, dtype=torch.float64)
    t = torch.arange(len(rewards))
    lag = (t[None, :] - t[:, None]).to(torch.float64)  # k - t
    weights = torch.where(lag >= 0, gamma ** lag.clamp(min=0), 0.0)
    returns = (weights @ r).float()  # the naive loss rounds the Python-float returns to float32
    returns = (returns - returns.mean()) / (returns.std() + eps)
    return -(torch.cat(saved_log_probs) * returns).sum()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    t = {"small": 12, "bench": 1000}[size]
    saved_log_probs = [(-torch.rand(1, generator=g, dtype=dtype) * 2).requires_grad_() for _ in range(t)]
    rewards = torch.randint(0, 2, (t,), generator=g).double().tolist()  # env.step() rewards: floats
    return saved_log_probs, rewards
