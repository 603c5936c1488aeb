"""Cross entropy with all the target preprocessing done inside the loss, as in many Kaggle and
long-tail classification repos: class counts are tallied by iterating over the target tensor
(``for t in target: counts[t] += 1``), turned into "balanced" inverse-frequency weights
``n / (C * count)``, the target is one-hot encoded and label-smoothed, and the soft-target cross
entropy weights each class term, normalised like ``nn.CrossEntropyLoss(weight=...,
label_smoothing=...)`` by the total weight of the true classes."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "target_preprocessing": True,  # bench: timed with and without hoisting
    "sizes": {"small": "logits [32, 6]", "bench": "logits [8192, 100]"},
}


def naive(logits, target, eps=0.1):
    n, c = logits.shape
    counts = logits.new_zeros(c)
    for t in target:
        counts[t] += 1
    weights = n / (c * counts.clamp(min=1))  # classes absent from the batch get weight n / c
    smooth = F.one_hot(target, c).to(logits.dtype) * (1 - eps) + eps / c
    per_sample = -(smooth * weights * F.log_softmax(logits, dim=1)).sum(dim=1)
    return per_sample.sum() / weights[target].sum()


def expert(logits, target, eps=0.1):
    n, c = logits.shape
    counts = torch.bincount(target, minlength=c).to(logits.dtype)
    return F.cross_entropy(logits, target, weight=n / (c * counts.clamp(min=1)), label_smoothing=eps)


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, c = {"small": (32, 6), "bench": (8192, 100)}[size]
    logits = torch.randn(n, c, generator=g, dtype=dtype).requires_grad_()
    # Long-tailed labels: class k is drawn with probability proportional to 1 / (k + 1).
    target = torch.multinomial(1 / torch.arange(1.0, c + 1), n, replacement=True, generator=g)
    return logits, target


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
