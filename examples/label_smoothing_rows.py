"""Label-smoothed cross entropy (Inception-v3 / transformer training recipes) in the variant that
spreads ``eps`` over the *other* classes: the soft target matrix is built inside the loss with
``torch.full(..., eps / (C - 1))`` and then filled row by row with ``smooth[i, int(target[i])] =
1 - eps`` before the soft-target cross entropy. The loop is pure target preprocessing."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "target_preprocessing": True,  # bench: timed with and without hoisting
    "sizes": {"small": "logits [32, 10]", "bench": "logits [4096, 1000]"},
}


def naive(logits, target, eps=0.1):
    n, c = logits.shape
    smooth = torch.full((n, c), eps / (c - 1), dtype=logits.dtype)
    for i in range(n):
        smooth[i, int(target[i])] = 1 - eps
    return (-smooth * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def expert(logits, target, eps=0.1):
    # PyTorch gives eps' / C to every class (the true one included), so eps' = eps * C / (C - 1)
    # puts eps / (C - 1) on the others and 1 - eps on the true class.
    c = logits.shape[1]
    return F.cross_entropy(logits, target, label_smoothing=eps * c / (c - 1))


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, c = {"small": (32, 10), "bench": (4096, 1000)}[size]
    logits = torch.randn(n, c, generator=g, dtype=dtype).requires_grad_()
    target = torch.randint(0, c, (n,), generator=g)
    return logits, target


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
