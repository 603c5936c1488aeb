"""PPO loss with generalized advantage estimation (CleanRL / Stable-Baselines style): advantages
are computed backwards over the rollout, ``adv = delta[t] + gamma * lam * (1 - done[t]) * adv``,
from the detached values, then the clipped policy loss and the value loss use them. GAE is a
first-order linear recurrence with a per-step factor (zero at episode ends): the rewrite runs it
as one parallel scan. The expert solves the same recurrence as one upper bidiagonal triangular
system per environment (``(I - K) adv = delta``, ``K`` holding the factors above the diagonal).
"""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "logp/rewards/dones [3, 10], values [3, 11] (envs, steps)",
              "bench": "logp/rewards/dones [64, 512], values [64, 513]"},
}


def naive(logp, logp_old, values, rewards, dones, gamma=0.99, lam=0.95, clip=0.2):
    T = rewards.shape[1]
    v = values.detach()
    adv = torch.zeros_like(rewards[:, 0])
    advantages = torch.zeros_like(rewards)
    for t in reversed(range(T)):
        next_value = v[:, t + 1]
        delta = rewards[:, t] + gamma * next_value * (1.0 - dones[:, t]) - v[:, t]
        adv = delta + gamma * lam * (1.0 - dones[:, t]) * adv
        advantages[:, t] = adv
    returns = advantages + v[:, :-1]
    ratio = torch.exp(logp - logp_old)
    policy = -torch.min(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages).mean()
    return policy + 0.5 * F.mse_loss(values[:, :-1], returns)


def expert(logp, logp_old, values, rewards, dones, gamma=0.99, lam=0.95, clip=0.2):
    T = rewards.shape[1]
    v = values.detach()
    delta = rewards + gamma * v[:, 1:] * (1.0 - dones) - v[:, :-1]
    keep = gamma * lam * (1.0 - dones[:, :-1])           # links step t to t + 1
    system = torch.eye(T, dtype=delta.dtype) - torch.diag_embed(keep, offset=1)
    advantages = torch.linalg.solve_triangular(system, delta[..., None], upper=True)[..., 0]
    returns = advantages + v[:, :-1]
    ratio = torch.exp(logp - logp_old)
    policy = -torch.min(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages).mean()
    return policy + 0.5 * F.mse_loss(values[:, :-1], returns)


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    envs, steps = {"small": (3, 10), "bench": (64, 512)}[size]
    logp = (torch.randn(envs, steps, generator=g, dtype=dtype) * 0.1).requires_grad_()
    logp_old = torch.randn(envs, steps, generator=g, dtype=dtype) * 0.1
    values = torch.randn(envs, steps + 1, generator=g, dtype=dtype).requires_grad_()
    rewards = torch.rand(envs, steps, generator=g, dtype=dtype)
    dones = (torch.rand(envs, steps, generator=g) < 0.05).to(dtype)
    return logp, logp_old, values, rewards, dones


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
