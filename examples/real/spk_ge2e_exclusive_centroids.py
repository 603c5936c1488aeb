"""GE2E loss as clovaai/voxceleb_trainer writes it in loss/ge2e.py (its "fast re-implementation"):
an ``nn.Module`` with learnable ``self.w``/``self.b`` that loops over utterance positions, builds
the exclusive centroids from a Python index list with ``idx.remove(ii)``, overwrites the diagonal
of a fresh cosine matrix in place (``cos_sim[range(n), range(n)] = diag``), clamps, stacks and
hands the logits to ``nn.CrossEntropyLoss`` with labels made in numpy and moved ``.to(device)``."""
import numpy
import torch
import torch.nn as nn
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "4 speakers x 3 utterances, dim 16", "bench": "100 speakers x 2 utterances, dim 256"},
    "source": "clovaai/voxceleb_trainer:loss/ge2e.py",
    "field": "speaker/face verification",
}


class LossFunction(nn.Module):

    def __init__(self, w, b):
        super(LossFunction, self).__init__()
        self.test_normalize = True
        self.w = w  # the repository's nn.Parameter(init_w); here the caller's leaf
        self.b = b
        self.criterion = torch.nn.CrossEntropyLoss()

    def forward(self, x, label=None):
        assert x.size()[1] >= 2

        gsize = x.size()[1]
        centroids = torch.mean(x, 1)
        stepsize = x.size()[0]
        device = x.device

        cos_sim_matrix = []
        for ii in range(0, gsize):
            idx = [*range(0, gsize)]
            idx.remove(ii)
            exc_centroids = torch.mean(x[:, idx, :], 1)
            cos_sim_diag = F.cosine_similarity(x[:, ii, :], exc_centroids)
            cos_sim = F.cosine_similarity(x[:, ii, :].unsqueeze(-1), centroids.unsqueeze(-1).transpose(0, 2))
            cos_sim[range(0, stepsize), range(0, stepsize)] = cos_sim_diag
            cos_sim_matrix.append(torch.clamp(cos_sim, 1e-6))

        cos_sim_matrix = torch.stack(cos_sim_matrix, dim=1)

        torch.clamp(self.w, 1e-6)  # a no-op statement in the repository too
        cos_sim_matrix = cos_sim_matrix * self.w + self.b

        label = torch.from_numpy(numpy.asarray(range(0, stepsize))).to(device)
        nloss = self.criterion(cos_sim_matrix.view(-1, stepsize), torch.repeat_interleave(label, repeats=gsize, dim=0).to(device))
        return nloss


def naive(x, w, b):
    return LossFunction(w, b)(x)


def expert(x, w, b):
    n, m, _ = x.shape
    sums = x.sum(dim=1)
    exclusive = (sums[:, None] - x) / (m - 1)                                   # [N, M, D]
    # one matrix product of unit vectors instead of a broadcast cosine per utterance position
    cos = torch.einsum("nmd,kd->nmk", F.normalize(x, dim=-1), F.normalize(sums / m, dim=-1))
    own = F.cosine_similarity(x, exclusive, dim=-1)
    cos = torch.where(torch.eye(n, dtype=torch.bool)[:, None, :], own[..., None], cos)
    logits = cos.clamp(1e-6) * w + b
    return F.cross_entropy(logits.reshape(-1, n), torch.arange(n).repeat_interleave(m))


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, m, d = {"small": (4, 3, 16), "bench": (100, 2, 256)}[size]
    speaker = torch.randn(n, 1, d, generator=g, dtype=dtype)
    x = (speaker + 0.7 * torch.randn(n, m, d, generator=g, dtype=dtype)).requires_grad_()
    w = torch.tensor(10.0, dtype=dtype, requires_grad=True)
    b = torch.tensor(-5.0, dtype=dtype, requires_grad=True)
    return x, w, b
