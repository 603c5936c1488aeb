"""Center loss (Wen et al., ECCV 2016, face recognition): pulls each deep feature towards the
learnable center of its class, ``0.5 * |x_i - c_{y_i}|^2`` averaged over the batch. The centers
are a parameter trained with the loss. The naive version looks each center up with
``centers[int(labels[i])]`` in a loop over samples, so the centers' gradient is built from one
row-indexing node per sample."""
import torch

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "features [32, 8], 5 classes", "bench": "features [1024, 512], 1000 classes"},
}


def naive(features, labels, centers):
    loss = 0
    for i in range(features.size(0)):
        center = centers[int(labels[i])]
        loss = loss + 0.5 * (features[i] - center).pow(2).sum()
    return loss / features.size(0)


def expert(features, labels, centers):
    # Indexing with the label tensor gathers all centers at once; its backward is one index_add.
    return 0.5 * (features - centers[labels]).pow(2).sum() / features.size(0)


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, d, c = {"small": (32, 8, 5), "bench": (1024, 512, 1000)}[size]
    features = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    labels = torch.randint(0, c, (n,), generator=g)
    centers = torch.randn(c, d, generator=g, dtype=dtype).requires_grad_()
    return features, labels, centers


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
