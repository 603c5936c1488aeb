"""Regression on raw-unit targets (house prices, QM9 molecular properties) where the loss
standardises the targets itself: per-column mean and std of the target batch are computed inside
the loss, then each sample's standardised target is compared to the prediction with an MSE
accumulated in a Python loop over samples (``loss += F.mse_loss(pred[i], z)``)."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "target_preprocessing": True,  # bench: timed with and without hoisting
    "sizes": {"small": "pred/target [32, 3]", "bench": "pred/target [16384, 8]"},
}


def naive(pred, target):
    mean = target.mean(dim=0)
    std = target.std(dim=0)
    loss = 0
    for i in range(len(pred)):
        z = (target[i] - mean) / std
        loss += F.mse_loss(pred[i], z)
    return loss / len(pred)


def expert(pred, target):
    # Every row has the same number of columns, so the mean of per-row MSEs is the global MSE.
    return F.mse_loss(pred, (target - target.mean(dim=0)) / target.std(dim=0))


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, k = {"small": (32, 3), "bench": (16384, 8)}[size]
    pred = torch.randn(n, k, generator=g, dtype=dtype).requires_grad_()
    # Columns in very different units, which is why the loss standardises them.
    scale = torch.logspace(0, 4, k, dtype=dtype)
    target = 3 * scale + scale * torch.randn(n, k, generator=g, dtype=dtype)
    return pred, target


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
