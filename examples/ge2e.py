"""Generalized end-to-end (GE2E) softmax loss for speaker verification (Wan et al., ICASSP 2018;
the many PyTorch ports of it). Embeddings come as [N speakers, M utterances, D]; each utterance is
scored against every speaker centroid with ``w * cos + b`` (learnable scalars), where its own
speaker's centroid excludes the utterance itself, and the loss is a softmax over speakers summed
over utterances. The naive version loops over speakers, utterances and candidate centroids with
an ``if k == j:`` branch for the exclusive centroid and ``torch.stack`` of a list of scores."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "4 speakers x 5 utterances, dim 16", "bench": "64 speakers x 10 utterances, dim 256"},
}


def naive(embeddings, w, b):
    N, M, _ = embeddings.shape
    centroids = [embeddings[k].mean(dim=0) for k in range(N)]
    loss = 0
    for j in range(N):
        for i in range(M):
            e = embeddings[j, i]
            scores = []
            for k in range(N):
                if k == j:
                    centroid = (embeddings[j].sum(dim=0) - e) / (M - 1)
                else:
                    centroid = centroids[k]
                scores.append(w * F.cosine_similarity(e, centroid, dim=0) + b)
            scores = torch.stack(scores)
            loss += torch.logsumexp(scores, dim=0) - scores[j]
    return loss


def expert(embeddings, w, b):
    N, M, _ = embeddings.shape
    sums = embeddings.sum(dim=1)                               # [N, D]
    exclusive = (sums[:, None] - embeddings) / (M - 1)         # [N, M, D]: own centroid without e_ji
    unit = F.normalize(embeddings, dim=-1)
    cos = torch.einsum("jid,kd->jik", unit, F.normalize(sums / M, dim=-1))  # [N, M, N]
    own = (unit * F.normalize(exclusive, dim=-1)).sum(dim=-1)  # [N, M]
    is_own = torch.eye(N, dtype=torch.bool)[:, None, :]        # [N, 1, N]: k == j
    scores = w * torch.where(is_own, own[..., None], cos) + b
    return (torch.logsumexp(scores, dim=-1) - (w * own + b)).sum()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, m, d = {"small": (4, 5, 16), "bench": (64, 10, 256)}[size]
    # A per-speaker offset makes utterances of one speaker cluster, like a trained encoder's.
    speaker = torch.randn(n, 1, d, generator=g, dtype=dtype)
    embeddings = (speaker + 0.5 * torch.randn(n, m, d, generator=g, dtype=dtype)).requires_grad_()
    # The paper's initialisation of the learnable scale and bias.
    w = torch.tensor(10.0, dtype=dtype, requires_grad=True)
    b = torch.tensor(-5.0, dtype=dtype, requires_grad=True)
    return embeddings, w, b


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
