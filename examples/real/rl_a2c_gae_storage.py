"""A2C loss on a rollout whose targets come from generalized advantage estimation, paraphrasing
``RolloutStorage.compute_returns`` in ikostrikov/pytorch-a2c-ppo-acktr-gail
(a2c_ppo_acktr/storage.py) and the A2C update that consumes it: the storage object keeps
``[T+1, N, 1]`` buffers as ``self.`` attributes, writes the bootstrap value into
``self.value_preds[-1]``, then runs ``gae = delta + gamma * lambda * mask * gae`` over
``reversed(range(T))`` with time-limit masks, writing ``self.returns[step]`` in place. The loop is
a linear recurrence: a scan, written into ``self.returns`` in one slice (expert: a triangle)."""
import torch

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "T=6 steps x N=3 envs", "bench": "T=128 steps x N=64 envs"},
    "source": "ikostrikov/pytorch-a2c-ppo-acktr-gail:a2c_ppo_acktr/storage.py",
    "field": "rl returns",
    "target_args": ("rewards", "value_preds", "masks", "bad_masks", "next_value"),
}


class RolloutStorage(object):
    def __init__(self, num_steps, num_processes, dtype):
        self.rewards = torch.zeros(num_steps, num_processes, 1, dtype=dtype)
        self.value_preds = torch.zeros(num_steps + 1, num_processes, 1, dtype=dtype)
        self.returns = torch.zeros(num_steps + 1, num_processes, 1, dtype=dtype)
        self.masks = torch.ones(num_steps + 1, num_processes, 1, dtype=dtype)
        self.bad_masks = torch.ones(num_steps + 1, num_processes, 1, dtype=dtype)
        self.num_steps = num_steps

    def insert_all(self, rewards, value_preds, masks, bad_masks):
        self.rewards.copy_(rewards)
        self.value_preds[:-1].copy_(value_preds)
        self.masks[1:].copy_(masks)
        self.bad_masks[1:].copy_(bad_masks)

    def compute_returns(self, next_value, use_gae, gamma, gae_lambda, use_proper_time_limits=True):
        if use_proper_time_limits:
            if use_gae:
                self.value_preds[-1] = next_value
                gae = 0
                for step in reversed(range(self.rewards.size(0))):
                    delta = self.rewards[step] + gamma * self.value_preds[step + 1] * self.masks[step + 1] \
                        - self.value_preds[step]
                    gae = delta + gamma * gae_lambda * self.masks[step + 1] * gae
                    gae = gae * self.bad_masks[step + 1]
                    self.returns[step] = gae + self.value_preds[step]
            else:
                self.returns[-1] = next_value
                for step in reversed(range(self.rewards.size(0))):
                    self.returns[step] = (self.returns[step + 1] * gamma * self.masks[step + 1]
                                          + self.rewards[step]) * self.bad_masks[step + 1] \
                        + (1 - self.bad_masks[step + 1]) * self.value_preds[step]
        else:
            if use_gae:
                self.value_preds[-1] = next_value
                gae = 0
                for step in reversed(range(self.rewards.size(0))):
                    delta = self.rewards[step] + gamma * self.value_preds[step + 1] * self.masks[step + 1] \
                        - self.value_preds[step]
                    gae = delta + gamma * gae_lambda * self.masks[step + 1] * gae
                    self.returns[step] = gae + self.value_preds[step]
            else:
                self.returns[-1] = next_value
                for step in reversed(range(self.rewards.size(0))):
                    self.returns[step] = self.returns[step + 1] * gamma * self.masks[step + 1] + self.rewards[step]


def naive(values, action_log_probs, entropy, rewards, value_preds, masks, bad_masks, next_value):
    num_steps, num_processes = rewards.shape[:2]
    rollouts = RolloutStorage(num_steps, num_processes, rewards.dtype)
    rollouts.insert_all(rewards, value_preds, masks, bad_masks)
    rollouts.compute_returns(next_value, True, 0.99, 0.95, True)

    advantages = rollouts.returns[:-1] - values
    value_loss = advantages.pow(2).mean()
    action_loss = -(advantages.detach() * action_log_probs).mean()
    dist_entropy = entropy.mean()
    return value_loss * 0.5 + action_loss - dist_entropy * 0.01


def expert(values, action_log_probs, entropy, rewards, value_preds, masks, bad_masks, next_value):
    gamma, lam = 0.99, 0.95
    v = torch.cat([value_preds, next_value.unsqueeze(0)])[..., 0]  # [T+1, N]
    m, b, r = masks[..., 0], bad_masks[..., 0], rewards[..., 0]  # masks/bad_masks: steps 1..T
    # gae[t] = b[t] * delta[t] + c[t] * gae[t+1]: a linear recurrence, solved by weights
    # W[t, k] = prod_{t <= j < k} c[j] on the upper triangle.
    x = b * (r + gamma * v[1:] * m - v[:-1])
    c = gamma * lam * m * b
    t = x.shape[0]
    upper = torch.ones(t, t, dtype=torch.bool).triu()
    prods = torch.where(upper, c.T[:, None, :], 1.0).cumprod(dim=2)  # [N, T, T]
    w = torch.cat([torch.ones_like(prods[..., :1]), prods[..., :-1]], dim=2) * upper
    returns = torch.einsum("ntk,kn->tn", w, x) + v[:-1]
    advantages = returns.unsqueeze(-1) - values
    action_loss = -(advantages.detach() * action_log_probs).mean()
    return advantages.pow(2).mean() * 0.5 + action_loss - entropy.mean() * 0.01


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    t, n = {"small": (6, 3), "bench": (128, 64)}[size]
    values = torch.randn(t, n, 1, generator=g, dtype=dtype).requires_grad_()
    action_log_probs = (-torch.rand(t, n, 1, generator=g, dtype=dtype) * 2).requires_grad_()
    entropy = torch.rand(t, n, 1, generator=g, dtype=dtype).requires_grad_()
    rewards = torch.randn(t, n, 1, generator=g, dtype=dtype)
    value_preds = torch.randn(t, n, 1, generator=g, dtype=dtype)
    masks = (torch.rand(t, n, 1, generator=g) > 0.1).to(dtype)  # 0 where the episode ended
    bad_masks = (torch.rand(t, n, 1, generator=g) > 0.05).to(dtype)  # 0 on a time-limit cut
    next_value = torch.randn(n, 1, generator=g, dtype=dtype)
    return values, action_log_probs, entropy, rewards, value_preds, masks, bad_masks, next_value
