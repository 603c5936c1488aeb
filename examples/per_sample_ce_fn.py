"""Per-sample cross entropy through the library function: ``loss += F.cross_entropy(logits[i],
target[i])`` for each sample, then ``loss / B``. Common in code that started from a per-sample
special case (a weight, a skip) and kept the loop when the case went away. Unlike the ``.item()``
version (``per_sample_ce``), Dynamo traces it without a graph break: ``torch.compile`` unrolls
it into one copy of the body per sample, which the ``optimize_loss`` backend re-rolls."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "logits [24, 10]", "bench": "logits [4096, 1000] (ImageNet classes)"},
    "backend_rows": ["b64", "b256"],  # bench: through torch.compile's backend option at these B
}


def naive(logits, target):
    B = logits.shape[0]
    loss = 0
    for i in range(B):
        loss += F.cross_entropy(logits[i], target[i])
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
