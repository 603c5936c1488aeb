"""Class-weighted cross entropy for imbalanced classification (medical imaging, long-tailed
datasets): the weight vector is normalised inside the loss and each sample's weight is looked up
with ``class_weights[int(target[i])]`` in a loop over the batch, accumulating the weighted
negative log-likelihood and the total weight to normalise by, as ``nn.CrossEntropyLoss(weight=...)``
does."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "target_preprocessing": True,  # bench: timed with and without hoisting
    "sizes": {"small": "logits [32, 5], 5 classes", "bench": "logits [8192, 100], 100 classes"},
}


def naive(logits, target, class_weights):
    class_weights = class_weights / class_weights.sum()
    log_probs = F.log_softmax(logits, dim=1)
    loss = 0.0
    total_weight = 0.0
    for i in range(logits.shape[0]):
        w = class_weights[int(target[i])]
        loss += -w * log_probs[i, int(target[i])]
        total_weight += w
    return loss / total_weight


def expert(logits, target, class_weights):
    return F.cross_entropy(logits, target, weight=class_weights / class_weights.sum())


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, c = {"small": (32, 5), "bench": (8192, 100)}[size]
    logits = torch.randn(n, c, generator=g, dtype=dtype).requires_grad_()
    target = torch.randint(0, c, (n,), generator=g)
    class_weights = torch.rand(c, generator=g, dtype=dtype) + 0.5  # e.g. inverse class frequencies
    return logits, target, class_weights


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
