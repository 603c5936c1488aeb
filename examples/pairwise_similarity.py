"""CLIP / SimCLR-style symmetric InfoNCE between two batches of embeddings (image-text pairs or two
augmented views). The naive version fills the temperature-scaled cosine-similarity matrix entry by
entry with ``sim[i, j] = F.cosine_similarity(z1[i], z2[j], dim=0) / temperature`` in a double loop,
then applies cross entropy in both directions with the diagonal as the positives."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "two batches [8, 16]", "bench": "two batches [256, 128]"},
}


def naive(z1, z2, temperature=0.1):
    n = z1.shape[0]
    sim = z1.new_zeros(n, n)
    for i in range(n):
        for j in range(n):
            sim[i, j] = F.cosine_similarity(z1[i], z2[j], dim=0) / temperature
    labels = torch.arange(n)
    return (F.cross_entropy(sim, labels) + F.cross_entropy(sim.t(), labels)) / 2


def expert(z1, z2, temperature=0.1):
    sim = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).t() / temperature
    labels = torch.arange(z1.shape[0])
    return (F.cross_entropy(sim, labels) + F.cross_entropy(sim.t(), labels)) / 2


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, d = {"small": (8, 16), "bench": (256, 128)}[size]
    z1 = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    z2 = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    return z1, z2


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
