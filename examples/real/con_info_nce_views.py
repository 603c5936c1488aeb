"""InfoNCE (SimCLR) as sthalles/SimCLR writes it in ``SimCLR.info_nce_loss`` (simclr.py): view
labels from a list comprehension ``torch.cat([torch.arange(batch_size) for i in
range(n_views)])``, a float equality matrix moved ``.to(self.args.device)``, the diagonal removed
with ``torch.eye(...).to(device)`` and ``[~mask].view(n, -1)`` on both the labels and the
similarities, positives and negatives split by boolean indexing and concatenated, and the
logits passed to ``nn.CrossEntropyLoss`` against zero labels."""
from types import SimpleNamespace

import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "2 views x 8 samples of dim 16", "bench": "2 views x 256 samples of dim 128"},
    "source": "sthalles/SimCLR:simclr.py",
    "field": "contrastive learning",
}

TEMPERATURE = 0.07


class SimCLR(object):
    def __init__(self, args):
        self.args = args
        self.criterion = torch.nn.CrossEntropyLoss().to(self.args.device)

    def info_nce_loss(self, features):
        labels = torch.cat([torch.arange(self.args.batch_size) for i in range(self.args.n_views)], dim=0)
        labels = (labels.unsqueeze(0) == labels.unsqueeze(1)).float()
        labels = labels.to(self.args.device)

        features = F.normalize(features, dim=1)
        similarity_matrix = torch.matmul(features, features.T)

        # discard the main diagonal from both: labels and similarities matrix
        mask = torch.eye(labels.shape[0], dtype=torch.bool).to(self.args.device)
        labels = labels[~mask].view(labels.shape[0], -1)
        similarity_matrix = similarity_matrix[~mask].view(similarity_matrix.shape[0], -1)

        # select and combine multiple positives
        positives = similarity_matrix[labels.bool()].view(labels.shape[0], -1)
        # select only the negatives
        negatives = similarity_matrix[~labels.bool()].view(similarity_matrix.shape[0], -1)

        logits = torch.cat([positives, negatives], dim=1)
        labels = torch.zeros(logits.shape[0], dtype=torch.long).to(self.args.device)

        logits = logits / self.args.temperature
        return logits, labels


def naive(features):
    args = SimpleNamespace(batch_size=features.shape[0] // 2, n_views=2, temperature=TEMPERATURE,
                           device=features.device)
    simclr = SimCLR(args)
    logits, labels = simclr.info_nce_loss(features)
    return simclr.criterion(logits, labels)


def expert(features):
    # Two views: each row's only positive sits half the batch away; the row without its diagonal
    # is the positive plus every negative.
    n = features.shape[0]
    z = F.normalize(features, dim=1)
    sim = (z @ z.T / TEMPERATURE).masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
    positives = sim[torch.arange(n), (torch.arange(n) + n // 2) % n]
    return (torch.logsumexp(sim, dim=1) - positives).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, d = {"small": (8, 16), "bench": (256, 128)}[size]
    base = torch.randn(n, d, generator=g, dtype=dtype)
    views = [base + 0.3 * torch.randn(n, d, generator=g, dtype=dtype) for _ in range(2)]
    features = torch.cat(views).requires_grad_()  # the model's features of torch.cat(images)
    return (features,)
