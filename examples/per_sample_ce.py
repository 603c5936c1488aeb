"""Cross entropy written from its definition, one sample at a time: ``logsumexp(logits[i]) -
logits[i, label]`` where the label is pulled out as a Python int with ``target[i].item()``.
Typical of tutorials and of code that later adds per-sample special cases; it forces a host sync
and a tiny kernel per sample."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "logits [24, 10]", "bench": "logits [4096, 1000] (ImageNet classes)"},
    # bench: through torch.compile's backend option (Dynamo skips the loop for its .item())
    "backend_rows": ["b64"],
}


def naive(logits, target):
    B = logits.size(0)
    loss = 0
    for i in range(B):
        label = target[i].item()
        loss += torch.logsumexp(logits[i], dim=0) - logits[i, label]
    return loss / B


def expert(logits, target):
    return F.cross_entropy(logits, target)


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, c = {"small": (24, 10), "bench": (4096, 1000)}[size]
    logits = torch.randn(n, c, generator=g, dtype=dtype).requires_grad_()
    target = torch.randint(0, c, (n,), generator=g)
    return logits, target


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
