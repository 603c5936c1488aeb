"""Multi-class soft Dice + Tversky loss for semantic segmentation (medical imaging: U-Net / nnU-Net
style). The loss one-hot encodes the label map itself, then loops over classes and calls
per-class helper functions ``dice(p, t)`` and ``tversky(p, t)`` on ``probs[:, c]`` /
``onehot[:, c]``, accumulating ``loss += ...`` and averaging over classes."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "logits [2, 4, 16, 16], 4 classes", "bench": "logits [8, 21, 128, 128], 21 classes"},
    "backend_rows": ["bench"],  # bench: through torch.compile's backend option at this size
}

SMOOTH = 1.0
ALPHA, BETA = 0.3, 0.7  # Tversky: weight of false positives / false negatives


def dice(p, t):
    inter = (p * t).sum()
    return 1 - (2 * inter + SMOOTH) / (p.sum() + t.sum() + SMOOTH)


def tversky(p, t):
    tp = (p * t).sum()
    fp = (p * (1 - t)).sum()
    fn = ((1 - p) * t).sum()
    return 1 - (tp + SMOOTH) / (tp + ALPHA * fp + BETA * fn + SMOOTH)


def naive(logits, target):
    num_classes = logits.shape[1]
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(target, num_classes).permute(0, 3, 1, 2).to(probs.dtype)
    loss = 0
    for c in range(num_classes):
        loss += dice(probs[:, c], onehot[:, c]) + tversky(probs[:, c], onehot[:, c])
    return loss / num_classes


def expert(logits, target):
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)  # reduce everything but the class axis
    tp = (probs * onehot).sum(dims)
    p_sum = probs.sum(dims)
    t_sum = onehot.sum(dims)
    dice = 1 - (2 * tp + SMOOTH) / (p_sum + t_sum + SMOOTH)
    # fp = sum(p * (1 - t)) = p_sum - tp and fn = sum((1 - p) * t) = t_sum - tp.
    tversky = 1 - (tp + SMOOTH) / (tp + ALPHA * (p_sum - tp) + BETA * (t_sum - tp) + SMOOTH)
    return (dice + tversky).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, c, hw = {"small": (2, 4, 16), "bench": (8, 21, 128)}[size]
    logits = torch.randn(b, c, hw, hw, generator=g, dtype=dtype).requires_grad_()
    target = torch.randint(0, c, (b, hw, hw), generator=g)
    return logits, target


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
