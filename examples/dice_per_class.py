"""Multi-class soft Dice written out class by class, as many training scripts have it: the mask
of class c is ``(target == c).float()``, the probabilities ``probs[:, c]``, and the loss
accumulates ``loss = loss + 1 - dice_c``, then averages over classes. Dynamo unrolls the loop
into one copy per class that differs from the others in the index and the compared class number;
the ``optimize_loss`` backend re-rolls it (``dice_tversky`` is the tidier one-hot form)."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "logits [2, 4, 16, 16], 4 classes", "bench": "logits [8, 21, 128, 128], 21 classes"},
    "backend_rows": ["bench"],  # bench: through torch.compile's backend option at this size
}

SMOOTH = 1e-5


def naive(logits, target):
    probs = logits.softmax(dim=1)
    n_classes = logits.shape[1]
    loss = 0
    for c in range(n_classes):
        p = probs[:, c]
        t = (target == c).float()
        inter = (p * t).sum()
        dice_c = (2 * inter + SMOOTH) / (p.sum() + t.sum() + SMOOTH)
        loss = loss + 1 - dice_c
    return loss / n_classes


def expert(logits, target):
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)  # reduce everything but the class axis
    inter = (probs * onehot).sum(dims)
    dice = (2 * inter + SMOOTH) / (probs.sum(dims) + onehot.sum(dims) + SMOOTH)
    return (1 - dice).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, c, hw = {"small": (2, 4, 16), "bench": (8, 21, 128)}[size]
    logits = torch.randn(b, c, hw, hw, generator=g, dtype=dtype).requires_grad_()
    target = torch.randint(0, c, (b, hw, hw), generator=g)
    return logits, target


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
