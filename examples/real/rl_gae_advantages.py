"""PPO update with GAE advantages as Renzhenxuexidemaimai/DeepRL_Algorithms computes them
(Common/GAE.py, ``estimate_advantages``): ``deltas`` and ``advantages`` are preallocated
``[T, 1]`` tensors moved ``.to(device)``, filled by index assignment in a loop over
``reversed(range(T))`` that carries ``prev_value`` and ``prev_advantage`` as 0-d tensors picked
with ``values[i, 0]``; the advantages are then standardised. The surrounding loss (clipped
surrogate plus value regression onto ``values + advantages``) follows the repository's PPO step.
The recurrence is real: it runs as a parallel scan (``prev_value`` is the step before's
``values[i, 0]``, ``prev_advantage`` the state of the one-element rows of ``advantages``)."""
import torch

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "T=10 transitions", "bench": "T=4096 transitions"},
    "source": "Renzhenxuexidemaimai/DeepRL_Algorithms:Common/GAE.py",
    "field": "rl returns",
    "target_args": ("rewards", "masks", "old_values", "old_log_probs"),
}

device = torch.device("cpu")


def estimate_advantages(rewards, masks, values, gamma, tau):
    deltas = torch.zeros(rewards.size(0), 1, dtype=rewards.dtype).to(device)
    advantages = torch.zeros(rewards.size(0), 1, dtype=rewards.dtype).to(device)

    prev_value = 0
    prev_advantage = 0
    for i in reversed(range(rewards.size(0))):
        deltas[i] = rewards[i] + gamma * prev_value * masks[i] - values[i]
        advantages[i] = deltas[i] + gamma * tau * prev_advantage * masks[i]

        prev_value = values[i, 0]
        prev_advantage = advantages[i, 0]

    returns = values + advantages
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-10)
    return advantages, returns


def naive(log_probs, values, rewards, masks, old_values, old_log_probs):
    advantages, returns = estimate_advantages(rewards, masks, old_values, 0.99, 0.95)
    ratio = torch.exp(log_probs - old_log_probs)
    surr1 = ratio * advantages
    surr2 = torch.clamp(ratio, 1 - 0.2, 1 + 0.2) * advantages
    policy_loss = -torch.min(surr1, surr2).mean()
    value_loss = (values - returns).pow(2).mean()
    return policy_loss + 0.5 * value_loss


def expert(log_probs, values, rewards, masks, old_values, old_log_probs):
    gamma, tau = 0.99, 0.95
    r, m, v = rewards[:, 0], masks[:, 0], old_values[:, 0]
    next_v = torch.cat([v[1:], v.new_zeros(1)])
    delta = r + gamma * next_v * m - v
    # adv[i] = delta[i] + c[i] * adv[i+1] with c = gamma * tau * mask (the mask of step i scales
    # what step i+1 carries back), so adv = W @ delta with W[i, k] = prod_{i <= j < k} c[j].
    c = gamma * tau * m
    t = c.shape[0]
    upper = torch.ones(t, t, dtype=torch.bool).triu()
    prods = torch.where(upper, c[None, :], 1.0).cumprod(dim=1)
    w = torch.cat([torch.ones_like(prods[:, :1]), prods[:, :-1]], dim=1) * upper
    adv = (w @ delta)[:, None]
    returns = old_values + adv
    adv = (adv - adv.mean()) / (adv.std() + 1e-10)
    ratio = torch.exp(log_probs - old_log_probs)
    policy_loss = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
    return policy_loss + 0.5 * (values - returns).pow(2).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    t = {"small": 10, "bench": 4096}[size]
    old_log_probs = -torch.rand(t, 1, generator=g, dtype=dtype) * 2
    log_probs = (old_log_probs + 0.3 * torch.randn(t, 1, generator=g, dtype=dtype)).requires_grad_()
    values = torch.randn(t, 1, generator=g, dtype=dtype).requires_grad_()
    rewards = torch.randn(t, 1, generator=g, dtype=dtype)
    masks = (torch.rand(t, 1, generator=g) > 0.05).to(dtype)
    old_values = torch.randn(t, 1, generator=g, dtype=dtype)
    return log_probs, values, rewards, masks, old_values, old_log_probs
