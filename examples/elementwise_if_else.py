"""Smooth L1 loss of Fast R-CNN box regression, written per element with a Python ``if``: quadratic
below ``beta``, linear above. Detection code that re-derives the formula loops over boxes and
coordinates, branches on ``diff.abs() < beta`` (a 0-d tensor used as a bool) and writes each
element into a preallocated output. Both branches have finite gradients everywhere, so the
vectorized ``torch.where`` form matches without NaN tricks."""
import torch

CASE = {
    "loops": "vectorize",
    "elementwise": True,
    "sizes": {"small": "box deltas [64, 4]", "bench": "box deltas [65536, 4]"},
}


def naive(pred, target, beta=1.0 / 9):
    out = torch.zeros_like(pred)
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            diff = pred[i, j] - target[i, j]
            if diff.abs() < beta:
                out[i, j] = 0.5 * diff ** 2 / beta
            else:
                out[i, j] = diff.abs() - 0.5 * beta
    return out.mean()


def expert(pred, target, beta=1.0 / 9):
    n = (pred - target).abs()
    return torch.where(n < beta, 0.5 * n ** 2 / beta, n - 0.5 * beta).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n = {"small": 64, "bench": 65536}[size]
    # Spread so that both branches are taken often (beta = 1/9).
    pred = (0.3 * torch.randn(n, 4, generator=g, dtype=dtype)).requires_grad_()
    target = 0.3 * torch.randn(n, 4, generator=g, dtype=dtype)
    return pred, target


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
