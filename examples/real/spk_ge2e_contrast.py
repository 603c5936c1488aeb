"""GE2E loss with the paper's contrast variant, as cvqluu/GE2E-Loss writes it in ge2e.py: an
``nn.Module`` whose ``calc_new_centroids`` concatenates the speaker's other utterances and loops
over centroids with ``if i == spkr``, whose ``calc_cosine_sim`` loops over speakers and
utterances with a matrix product divided by norms, and whose ``embed_loss_contrast`` loops again
to take ``1 - sigmoid(own) + max(sigmoid(other centroids))`` per utterance, summed."""
import torch
import torch.nn as nn

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "3 speakers x 4 utterances, dim 8", "bench": "32 speakers x 8 utterances, dim 128"},
    "source": "cvqluu/GE2E-Loss:ge2e.py",
    "field": "speaker/face verification",
}


class GE2ELoss(nn.Module):

    def __init__(self, w, b, loss_method='contrast'):
        super(GE2ELoss, self).__init__()
        self.w = w  # nn.Parameter(torch.tensor(init_w)) in the repository
        self.b = b
        self.loss_method = loss_method
        assert self.loss_method in ['softmax', 'contrast']
        if self.loss_method == 'contrast':
            self.embed_loss = self.embed_loss_contrast

    def calc_new_centroids(self, dvecs, centroids, spkr, utt):
        excl = torch.cat((dvecs[spkr, :utt], dvecs[spkr, utt + 1:]))
        excl = torch.mean(excl, 0)
        new_centroids = []
        for i, centroid in enumerate(centroids):
            if i == spkr:
                new_centroids.append(excl)
            else:
                new_centroids.append(centroid)
        return torch.stack(new_centroids)

    def calc_cosine_sim(self, dvecs, centroids):
        cos_sim_matrix = []
        for spkr_idx, speaker in enumerate(dvecs):
            cs_row = []
            for utt_idx, utterance in enumerate(speaker):
                new_centroids = self.calc_new_centroids(dvecs, centroids, spkr_idx, utt_idx)
                dot = torch.mm(utterance.unsqueeze(1).transpose(0, 1), new_centroids.transpose(0, 1))
                cs_row.append(torch.clamp(dot / (torch.norm(utterance) * torch.norm(new_centroids, dim=1)), 1e-6))
            cs_row = torch.cat(cs_row, dim=0)
            cos_sim_matrix.append(cs_row)
        return torch.stack(cos_sim_matrix)

    def embed_loss_contrast(self, dvecs, cos_sim_matrix):
        N, M, _ = dvecs.shape
        L = []
        for j in range(N):
            L_row = []
            for i in range(M):
                centroids_sigmoids = torch.sigmoid(cos_sim_matrix[j, i])
                excl_centroids_sigmoids = torch.cat((centroids_sigmoids[:j], centroids_sigmoids[j + 1:]))
                L_row.append(1. - torch.sigmoid(cos_sim_matrix[j, i, j]) + torch.max(excl_centroids_sigmoids))
            L_row = torch.stack(L_row)
            L.append(L_row)
        return torch.stack(L)

    def forward(self, dvecs):
        centroids = torch.mean(dvecs, 1)
        cos_sim_matrix = self.calc_cosine_sim(dvecs, centroids)
        torch.clamp(self.w, 1e-6)
        cos_sim_matrix = cos_sim_matrix * self.w + self.b
        L = self.embed_loss(dvecs, cos_sim_matrix)
        return L.sum()


def naive(dvecs, w, b):
    return GE2ELoss(w, b, loss_method='contrast')(dvecs)


def expert(dvecs, w, b):
    n, m, _ = dvecs.shape
    sums = dvecs.sum(dim=1)
    exclusive = (sums[:, None] - dvecs) / (m - 1)                       # [N, M, D]
    centroids = torch.where(torch.eye(n, dtype=torch.bool)[:, None, :, None],
                            exclusive[:, :, None], (sums / m)[None, None])  # [N, M, N, D]
    cos = (dvecs[:, :, None] * centroids).sum(-1) / (dvecs.norm(dim=-1)[..., None] * centroids.norm(dim=-1))
    sig = torch.sigmoid(cos.clamp(1e-6) * w + b)
    own = torch.eye(n, dtype=torch.bool)[:, None, :].expand_as(sig)
    hardest = sig.masked_fill(own, float("-inf")).amax(dim=-1)
    return (1. - sig[own].view(n, m) + hardest).sum()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, m, d = {"small": (3, 4, 8), "bench": (32, 8, 128)}[size]
    speaker = torch.randn(n, 1, d, generator=g, dtype=dtype)
    dvecs = (speaker + 0.7 * torch.randn(n, m, d, generator=g, dtype=dtype)).requires_grad_()
    w = torch.tensor(10.0, dtype=dtype, requires_grad=True)
    b = torch.tensor(-5.0, dtype=dtype, requires_grad=True)
    return dvecs, w, b
