"""Masked MSE for dense depth regression (KITTI / NYU-style depth completion): pixels without
ground truth are stored as 0 in the target, so the loss builds its validity mask ``target > 0``
itself. Research code typically loops over the images of the batch, boolean-indexes the valid
pixels of each one, skips images with no valid pixel (``if mask.sum() == 0: continue``) and counts
valid pixels with ``.item()`` to normalise once at the end."""
import torch

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "target_preprocessing": True,  # bench: timed with and without hoisting
    "sizes": {"small": "pred/target [4, 16, 16]", "bench": "pred/target [16, 240, 320] (KITTI crops)"},
}


def naive(pred, target):
    total = 0.0
    n_valid = 0
    for i in range(pred.shape[0]):
        mask = target[i] > 0
        if mask.sum() == 0:
            continue
        diff = pred[i][mask] - target[i][mask]
        total = total + (diff ** 2).sum()
        n_valid += mask.sum().item()
    return total / n_valid


def expert(pred, target):
    mask = target > 0
    # Zeroing the difference (not the prediction) keeps the gradient at invalid pixels exactly 0.
    diff = torch.where(mask, pred - target, 0.0)
    return diff.pow(2).sum() / mask.sum()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    shape = {"small": (4, 16, 16), "bench": (16, 240, 320)}[size]
    pred = (torch.rand(shape, generator=g, dtype=dtype) * 80).requires_grad_()
    depth = torch.rand(shape, generator=g, dtype=dtype) * 80
    # LiDAR ground truth is sparse: about a third of the pixels have no measurement.
    missing = torch.rand(shape, generator=g) < 0.3
    target = depth.masked_fill(missing, 0.0)
    return pred, target


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
