"""NT-Xent contrastive loss (SimCLR) as Spijkervet/SimCLR writes it in simclr/modules/nt_xent.py:
an ``nn.Module`` whose constructor builds the negatives mask with ``fill_diagonal_`` and a Python
loop zeroing the two positive entries of every pair in place (``mask[i, N + i] = 0``), then a
forward that takes cosine similarities of all 2N views with broadcasting, picks the positives off
two shifted diagonals, selects the negatives with the boolean mask, and applies a summed
``nn.CrossEntropyLoss`` against all-zero labels moved ``.to(device)``."""
import torch
import torch.nn as nn

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "2 x 8 views of dim 16", "bench": "2 x 128 views of dim 128"},
    "source": "Spijkervet/SimCLR:simclr/modules/nt_xent.py",
    "field": "contrastive learning",
}

TEMPERATURE = 0.5


class NT_Xent(nn.Module):
    def __init__(self, batch_size, temperature, world_size):
        super(NT_Xent, self).__init__()
        self.batch_size = batch_size
        self.temperature = temperature
        self.world_size = world_size

        self.mask = self.mask_correlated_samples(batch_size, world_size)
        self.criterion = nn.CrossEntropyLoss(reduction="sum")
        self.similarity_f = nn.CosineSimilarity(dim=2)

    def mask_correlated_samples(self, batch_size, world_size):
        N = 2 * batch_size * world_size
        mask = torch.ones((N, N), dtype=bool)
        mask = mask.fill_diagonal_(0)
        for i in range(batch_size * world_size):
            mask[i, batch_size * world_size + i] = 0
            mask[batch_size * world_size + i, i] = 0
        return mask

    def forward(self, z_i, z_j):
        N = 2 * self.batch_size * self.world_size
        z = torch.cat((z_i, z_j), dim=0)

        sim = self.similarity_f(z.unsqueeze(1), z.unsqueeze(0)) / self.temperature

        sim_i_j = torch.diag(sim, self.batch_size * self.world_size)
        sim_j_i = torch.diag(sim, -self.batch_size * self.world_size)

        # 2N samples: each has one positive and 2(N - 1) negatives
        positive_samples = torch.cat((sim_i_j, sim_j_i), dim=0).reshape(N, 1)
        negative_samples = sim[self.mask].reshape(N, -1)

        labels = torch.zeros(N).to(positive_samples.device).long()
        logits = torch.cat((positive_samples, negative_samples), dim=1)
        loss = self.criterion(logits, labels)
        loss /= N
        return loss


def naive(z_i, z_j):
    return NT_Xent(z_i.shape[0], TEMPERATURE, 1)(z_i, z_j)


def expert(z_i, z_j):
    # The row's logits without itself are the positive and every negative: a logsumexp over the
    # cosine matrix with the diagonal removed, minus the positive.
    n = z_i.shape[0]
    z = torch.nn.functional.normalize(torch.cat((z_i, z_j)), dim=1)
    sim = (z @ z.t()) / TEMPERATURE
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    positives = torch.cat((torch.diagonal(sim, n), torch.diagonal(sim, -n)))
    return (torch.logsumexp(sim, dim=1) - positives).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, d = {"small": (8, 16), "bench": (128, 128)}[size]
    base = torch.randn(n, d, generator=g, dtype=dtype)
    z_i = (base + 0.3 * torch.randn(n, d, generator=g, dtype=dtype)).requires_grad_()  # two augmented views
    z_j = (base + 0.3 * torch.randn(n, d, generator=g, dtype=dtype)).requires_grad_()
    return z_i, z_j
