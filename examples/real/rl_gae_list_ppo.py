"""PPO actor-critic loss over a rollout kept as Python lists of per-step ``[N, 1]`` tensors, as
in NitishNaineni/Multi-Agent-Flocking (ppo.py, ``PPO.compute_gae`` and the update after it, the
RL-Adventure-2 pattern): ``values = values + [next_value]`` extends the list, the GAE recurrence
runs over ``reversed(range(len(rewards)))`` with ``returns.insert(0, gae + values[step])``, and the
lists are ``torch.cat``-ed into flat targets for the clipped actor loss, the squared critic loss
and an entropy bonus. The linear recurrence runs as a scan; ``returns`` leaves as a list."""
import torch

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "8 steps x 4 agents", "bench": "256 steps x 64 agents"},
    "source": "NitishNaineni/Multi-Agent-Flocking:ppo.py",
    "field": "rl returns",
    "target_args": ("rewards", "masks", "values", "next_value", "old_log_probs"),
}


class PPO:
    def __init__(self):
        self.gamma = 0.99
        self.tau = 0.95

    def compute_gae(self, next_value, rewards, masks, values):
        values = values + [next_value]
        gae = 0
        returns = []
        for step in reversed(range(len(rewards))):
            delta = rewards[step] + self.gamma * values[step + 1] * masks[step] - values[step]
            gae = delta + self.gamma * self.tau * masks[step] * gae
            returns.insert(0, gae + values[step])
        return returns


def naive(new_log_probs, new_values, entropy, rewards, masks, values, next_value, old_log_probs):
    ppo = PPO()
    returns = ppo.compute_gae(next_value, rewards, masks, values)
    returns = torch.cat(returns).detach()
    values = torch.cat(values).detach()
    advantage = returns - values

    ratio = (new_log_probs - old_log_probs).exp()
    surr1 = ratio * advantage
    surr2 = torch.clamp(ratio, 1.0 - 0.2, 1.0 + 0.2) * advantage
    actor_loss = -torch.min(surr1, surr2).mean()
    critic_loss = (returns - new_values).pow(2).mean()
    return 0.5 * critic_loss + actor_loss - 0.001 * entropy.mean()


def expert(new_log_probs, new_values, entropy, rewards, masks, values, next_value, old_log_probs):
    gamma, tau = 0.99, 0.95
    r, m = torch.stack(rewards)[..., 0], torch.stack(masks)[..., 0]  # [T, N]
    v = torch.stack(values + [next_value])[..., 0]  # [T+1, N]
    delta = r + gamma * v[1:] * m - v[:-1]
    c = gamma * tau * m  # gae[t] = delta[t] + c[t] * gae[t+1]
    t = c.shape[0]
    upper = torch.ones(t, t, dtype=torch.bool).triu()
    prods = torch.where(upper, c.T[:, None, :], 1.0).cumprod(dim=2)  # [N, T, T]
    w = torch.cat([torch.ones_like(prods[..., :1]), prods[..., :-1]], dim=2) * upper
    gae = torch.einsum("ntk,kn->tn", w, delta)
    returns = (gae + v[:-1]).reshape(-1, 1)
    advantage = gae.reshape(-1, 1)
    ratio = (new_log_probs - old_log_probs).exp()
    actor_loss = -torch.min(ratio * advantage, ratio.clamp(0.8, 1.2) * advantage).mean()
    return 0.5 * (returns - new_values).pow(2).mean() + actor_loss - 0.001 * entropy.mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    t, n = {"small": (8, 4), "bench": (256, 64)}[size]
    rewards = [torch.randn(n, 1, generator=g, dtype=dtype) for _ in range(t)]
    masks = [(torch.rand(n, 1, generator=g) > 0.1).to(dtype) for _ in range(t)]
    values = [torch.randn(n, 1, generator=g, dtype=dtype) for _ in range(t)]
    next_value = torch.randn(n, 1, generator=g, dtype=dtype)
    old_log_probs = -torch.rand(t * n, 1, generator=g, dtype=dtype) * 2
    new_log_probs = (old_log_probs + 0.3 * torch.randn(t * n, 1, generator=g, dtype=dtype)).requires_grad_()
    new_values = torch.randn(t * n, 1, generator=g, dtype=dtype).requires_grad_()
    entropy = torch.rand(t * n, 1, generator=g, dtype=dtype).requires_grad_()
    return new_log_probs, new_values, entropy, rewards, masks, values, next_value, old_log_probs
