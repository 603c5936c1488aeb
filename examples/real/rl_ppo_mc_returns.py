"""PPO clipped-surrogate loss with Monte Carlo returns, from nikhilbarhate99/PPO-PyTorch (PPO.py,
``PPO.update``): the rewards are walked backwards in a Python loop over
``zip(reversed(rewards), reversed(is_terminals))``, resetting the running return on an episode end
(``if is_terminal: discounted_reward = 0``) and inserting at the front of a list; the list becomes
a tensor, is standardised, and feeds the clipped ratio loss plus ``0.5 * MSELoss`` on the state
values minus an entropy bonus, all averaged. The returns loop is a real recurrence with a
data-dependent reset, so it is kept."""
import torch
import torch.nn as nn

CASE = {
    "loops": "kept",
    "elementwise": False,
    "sizes": {"small": "buffer of 16 steps", "bench": "buffer of 2000 steps (update_timestep)"},
    "source": "nikhilbarhate99/PPO-PyTorch:PPO.py",
    "field": "rl returns",
    "target_args": ("rewards", "is_terminals", "old_logprobs"),
}

device = torch.device("cpu")


class PPO:
    def __init__(self, gamma, eps_clip):
        self.gamma = gamma
        self.eps_clip = eps_clip
        self.MseLoss = nn.MSELoss()

    def loss(self, logprobs, state_values, dist_entropy, rewards_buffer, is_terminals, old_logprobs):
        # Monte Carlo estimate of returns
        rewards = []
        discounted_reward = 0
        for reward, is_terminal in zip(reversed(rewards_buffer), reversed(is_terminals)):
            if is_terminal:
                discounted_reward = 0
            discounted_reward = reward + (self.gamma * discounted_reward)
            rewards.insert(0, discounted_reward)

        # Normalizing the rewards
        rewards = torch.tensor(rewards, dtype=logprobs.dtype).to(device)
        rewards = (rewards - rewards.mean()) / (rewards.std() + 1e-7)

        # Finding the ratio (pi_theta / pi_theta__old)
        ratios = torch.exp(logprobs - old_logprobs.detach())

        # Finding Surrogate Loss
        advantages = rewards - state_values.detach()
        surr1 = ratios * advantages
        surr2 = torch.clamp(ratios, 1 - self.eps_clip, 1 + self.eps_clip) * advantages
        loss = -torch.min(surr1, surr2) + 0.5 * self.MseLoss(state_values, rewards) - 0.01 * dist_entropy
        return loss.mean()


def naive(logprobs, state_values, dist_entropy, rewards, is_terminals, old_logprobs):
    ppo = PPO(gamma=0.99, eps_clip=0.2)
    return ppo.loss(logprobs, state_values, dist_entropy, rewards, is_terminals, old_logprobs)


def expert(logprobs, state_values, dist_entropy, rewards, is_terminals, old_logprobs):
    # G[t] = r[t] + gamma * (1 - done[t]) * G[t+1]: weights W[t, k] = prod_{t <= j < k} c[j].
    c = 0.99 * (~is_terminals).to(torch.float64)
    t = c.shape[0]
    upper = torch.ones(t, t, dtype=torch.bool).triu()
    prods = torch.where(upper, c[None, :], 1.0).cumprod(dim=1)
    w = torch.cat([torch.ones(t, 1, dtype=torch.float64), prods[:, :-1]], dim=1) * upper
    # rewards are Python floats, summed in double before the tensor is made
    returns = (w @ torch.tensor(rewards, dtype=torch.float64)).to(logprobs.dtype)
    returns = (returns - returns.mean()) / (returns.std() + 1e-7)
    ratios = torch.exp(logprobs - old_logprobs)
    advantages = returns - state_values.detach()
    surrogate = torch.min(ratios * advantages, ratios.clamp(0.8, 1.2) * advantages)
    value = 0.5 * (state_values - returns).pow(2).mean()
    return (-surrogate + value - 0.01 * dist_entropy).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    t = {"small": 16, "bench": 2000}[size]
    old_logprobs = -torch.rand(t, generator=g, dtype=dtype) * 2
    logprobs = (old_logprobs + 0.3 * torch.randn(t, generator=g, dtype=dtype)).requires_grad_()
    state_values = torch.randn(t, generator=g, dtype=dtype).requires_grad_()
    dist_entropy = torch.rand(t, generator=g, dtype=dtype).requires_grad_()
    rewards = torch.randn(t, generator=g, dtype=torch.float64).tolist()  # memory.rewards: floats
    is_terminals = torch.rand(t, generator=g) < 0.1
    return logprobs, state_values, dist_entropy, rewards, is_terminals, old_logprobs
