"""Batch-hard triplet loss (Hermans et al., "In Defense of the Triplet Loss", person re-ID and
face embedding repos): for every anchor, the hardest positive is the farthest sample with the same
label and the hardest negative the closest sample with another label; the loss is
``relu(d_pos - d_neg + margin)`` averaged over anchors. The naive version loops over anchors,
recomputes that anchor's distance row, boolean-indexes it with the label mask and appends to a
list that is stacked at the end. The distance is clamped before the square root so that the
anchor's zero distance to itself has a zero (not NaN) gradient."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "16 embeddings of dim 8 (4 ids x 4)",
              "bench": "256 embeddings of dim 128 (64 ids x 4)"},
}


def naive(embeddings, labels, margin=0.3):
    losses = []
    for i in range(len(embeddings)):
        dist = (embeddings - embeddings[i]).pow(2).sum(dim=1).clamp(min=1e-12).sqrt()
        same = labels == labels[i]
        hardest_pos = dist[same].max()
        hardest_neg = dist[~same].min()
        losses.append(F.relu(hardest_pos - hardest_neg + margin))
    return torch.stack(losses).mean()


def expert(embeddings, labels, margin=0.3):
    # The direct (not matmul-based) cdist is exact enough that the arg-max/min picks match; its
    # gradient at the zero diagonal is 0 and the diagonal is never the hardest positive because
    # every id has several samples.
    dist = torch.cdist(embeddings, embeddings, compute_mode="donot_use_mm_for_euclid_dist")
    same = labels[:, None] == labels[None, :]
    hardest_pos = dist.masked_fill(~same, float("-inf")).amax(dim=1)
    hardest_neg = dist.masked_fill(same, float("inf")).amin(dim=1)
    return F.relu(hardest_pos - hardest_neg + margin).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    ids, per_id, d = {"small": (4, 4, 8), "bench": (64, 4, 128)}[size]
    # P x K sampling, as in the paper: P identities with K images each, shuffled.
    labels = torch.arange(ids).repeat_interleave(per_id)
    labels = labels[torch.randperm(len(labels), generator=g)]
    embeddings = torch.randn(ids * per_id, d, generator=g, dtype=dtype).requires_grad_()
    return embeddings, labels


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
