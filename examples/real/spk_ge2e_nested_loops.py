"""GE2E softmax loss for speaker verification as HarryVolek/PyTorch_Speaker_Verification writes it
in utils.py: centroids by a ``for speaker in embeddings: for utterance in speaker:`` running sum,
an exclusive centroid rebuilt per utterance by a loop with ``continue`` on its own index, a
three-deep loop writing each cosine into a zero tensor (``cossim[j][i][k] = ...``), then a
second double loop filling a per-embedding loss tensor with an in-place ``.log_()``. Paraphrased;
the repository allocates float32 zeros, here ``new_zeros`` keeps float64 runs in float64."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "3 speakers x 4 utterances, dim 8", "bench": "16 speakers x 6 utterances, dim 64"},
    "source": "HarryVolek/PyTorch_Speaker_Verification:utils.py",
    "field": "speaker/face verification",
}


def get_centroids(embeddings):
    centroids = []
    for speaker in embeddings:
        centroid = 0
        for utterance in speaker:
            centroid = centroid + utterance
        centroid = centroid / len(speaker)
        centroids.append(centroid)
    return torch.stack(centroids)


def get_centroid(embeddings, speaker_num, utterance_num):
    centroid = 0
    for utterance_id, utterance in enumerate(embeddings[speaker_num]):
        if utterance_id == utterance_num:
            continue
        centroid = centroid + utterance
    return centroid / (len(embeddings[speaker_num]) - 1)


def get_cossim(embeddings, centroids):
    # (N, M, N): every utterance against every centroid, its own speaker's without itself
    cossim = embeddings.new_zeros(embeddings.size(0), embeddings.size(1), centroids.size(0))
    for speaker_num, speaker in enumerate(embeddings):
        for utterance_num, utterance in enumerate(speaker):
            for centroid_num, centroid in enumerate(centroids):
                if speaker_num == centroid_num:
                    centroid = get_centroid(embeddings, speaker_num, utterance_num)
                output = F.cosine_similarity(utterance, centroid, dim=0) + 1e-6
                cossim[speaker_num][utterance_num][centroid_num] = output
    return cossim


def calc_loss(sim_matrix):
    per_embedding_loss = sim_matrix.new_zeros(sim_matrix.size(0), sim_matrix.size(1))
    for j in range(len(sim_matrix)):
        for i in range(sim_matrix.size(1)):
            per_embedding_loss[j][i] = -(sim_matrix[j][i][j] - ((torch.exp(sim_matrix[j][i]).sum() + 1e-6).log_()))
    loss = per_embedding_loss.sum()
    return loss, per_embedding_loss


def naive(embeddings, w, b):
    centroids = get_centroids(embeddings)
    cossim = get_cossim(embeddings, centroids)
    sim_matrix = w * cossim + b
    loss, _ = calc_loss(sim_matrix)
    return loss


def expert(embeddings, w, b):
    N, M, _ = embeddings.shape
    sums = embeddings.sum(dim=1)
    exclusive = (sums[:, None] - embeddings) / (M - 1)                          # [N, M, D]
    cos = F.cosine_similarity(embeddings[:, :, None], (sums / M)[None, None], dim=-1)  # [N, M, N]
    own = F.cosine_similarity(embeddings, exclusive, dim=-1)                   # [N, M]
    is_own = torch.eye(N, dtype=torch.bool)[:, None, :]
    sim = w * (torch.where(is_own, own[..., None], cos) + 1e-6) + b
    target = w * (own + 1e-6) + b
    return -(target - torch.log(sim.exp().sum(dim=-1) + 1e-6)).sum()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, m, d = {"small": (3, 4, 8), "bench": (16, 6, 64)}[size]
    speaker = torch.randn(n, 1, d, generator=g, dtype=dtype)
    embeddings = (speaker + 0.5 * torch.randn(n, m, d, generator=g, dtype=dtype)).requires_grad_()
    w = torch.tensor(10.0, dtype=dtype, requires_grad=True)
    b = torch.tensor(-5.0, dtype=dtype, requires_grad=True)
    return embeddings, w, b
