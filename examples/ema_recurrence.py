"""Temporal-consistency loss for per-frame predictions (video keypoints, streaming speech
enhancement): the predictions are smoothed online with an exponential moving average ``s = alpha
* s + (1 - alpha) * x[:, t]`` and the smoothed state is supervised at every step. The loop carries
a real dependency between iterations, a first-order linear one: the rewrite computes every
step's state with one parallel scan, then the per-step losses at once. The expert uses the closed
form ``s_t = sum_k (1 - alpha) alpha^(t - k) x_k`` as one matmul with a lower-triangular weight
matrix (stable, unlike the cumsum of ``x_k / alpha^k``, which overflows for long sequences)."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "x/target [2, 12, 3] (batch, time, dim)", "bench": "x/target [32, 512, 64]"},
}


def naive(x, target, alpha=0.9):
    T = x.shape[1]
    s = torch.zeros_like(x[:, 0])
    loss = 0
    for t in range(T):
        s = alpha * s + (1 - alpha) * x[:, t]
        loss = loss + F.mse_loss(s, target[:, t])
    return loss / T


def expert(x, target, alpha=0.9):
    t = torch.arange(x.shape[1])
    lag = (t[:, None] - t[None, :]).to(x.dtype)  # [T, T]: t - k
    weights = torch.where(lag >= 0, (1 - alpha) * alpha ** lag.clamp(min=0), 0.0)
    return F.mse_loss(weights @ x, target)  # [T, T] @ [B, T, D] -> all states at once


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    shape = {"small": (2, 12, 3), "bench": (32, 512, 64)}[size]
    x = torch.randn(shape, generator=g, dtype=dtype).requires_grad_()
    target = torch.randn(shape, generator=g, dtype=dtype).cumsum(dim=1) * 0.1  # a smooth trajectory
    return x, target


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
