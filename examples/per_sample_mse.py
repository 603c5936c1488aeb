"""Per-sample MSE accumulator, the first loss many people write for a regression model (e.g. a
keypoint or embedding regressor): ``loss = 0; for i in range(B): loss += ((pred[i] -
target[i]) ** 2).mean(); return loss / B``. One small reduction per sample instead of one for the
batch."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "pred/target [16, 8]", "bench": "pred/target [4096, 128]"},
    "backend_rows": ["b64", "b256"],  # bench: through torch.compile's backend option at these B
}


def naive(pred, target):
    B = pred.shape[0]
    loss = 0
    for i in range(B):
        loss += ((pred[i] - target[i]) ** 2).mean()
    return loss / B


def expert(pred, target):
    # Equal-sized rows: the mean of per-row means is the global mean.
    return F.mse_loss(pred, target)


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    shape = {"small": (16, 8), "bench": (4096, 128)}[size]
    pred = torch.randn(shape, generator=g, dtype=dtype).requires_grad_()
    target = torch.randn(shape, generator=g, dtype=dtype)
    return pred, target


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
