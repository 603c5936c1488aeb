"""Value regression on discounted returns (REINFORCE / actor-critic baselines): the return of
every step of a batch of episodes is computed backwards, ``G = r[:, t] + gamma * G`` with the
episode cut at terminal steps, and the value head is regressed on it. The recurrence is a
first-order linear one, so the rewrite computes every step's return with one parallel scan; the
expert writes the same sum as a matmul with the matrix of discount weights between steps (its
cost grows with T squared, the scan's with T log T).
"""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "rewards/dones [3, 10], values [3, 10] (envs, steps)",
              "bench": "rewards/dones [64, 512], values [64, 512]"},
}


def naive(values, rewards, dones, gamma=0.99):
    T = rewards.shape[1]
    G = torch.zeros_like(rewards[:, 0])
    returns = torch.zeros_like(rewards)
    for t in reversed(range(T)):
        G = rewards[:, t] + gamma * (1.0 - dones[:, t]) * G
        returns[:, t] = G
    return F.mse_loss(values, returns)


def expert(values, rewards, dones, gamma=0.99):
    T = rewards.shape[1]
    keep = gamma * (1.0 - dones)                       # [B, T]: factor carried from t+1 to t
    # weight of reward k in the return at t (k >= t): prod of keep[t..k-1]; cumulative sums of
    # logs would divide by zero at terminal steps, so the products are built by cumprod of a
    # [B, T, T] matrix whose entries below the diagonal are 1.
    idx = torch.arange(T)
    later = idx[None, :] > idx[:, None]                # [t, k]: k > t
    factors = torch.where(later[None], keep[:, None, :].roll(1, dims=2), torch.ones(()))
    weights = torch.where(later[None] | (idx[None, :] == idx[:, None])[None],
                          factors.cumprod(dim=2), torch.zeros(()))
    returns = (weights * rewards[:, None, :]).sum(-1)
    return F.mse_loss(values, returns)


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    shape = {"small": (3, 10), "bench": (64, 512)}[size]
    values = torch.randn(shape, generator=g, dtype=dtype).requires_grad_()
    rewards = torch.rand(shape, generator=g, dtype=dtype)
    dones = (torch.rand(shape, generator=g) < 0.05).to(dtype)
    return values, rewards, dones


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
