"""Multi-class N-pair loss as Confusezius/Deep-Metric-Learning-Baselines writes it in losses.py:
the sampler draws one anchor-positive pair per class with numpy and gives each pair the other
pairs' positives as negatives; the loss is a list comprehension over the sampled tuples slicing
``batch[a:a+1]``, ``batch[p:p+1]`` and ``batch[tuple[2:]]``, each scored by
``log(1 + sum(exp(a @ (negatives - p).T)))``, plus a second comprehension for the L2 penalty on
anchors and positives. The sampled tuples (numpy RNG in the repository) are an input here."""
import numpy as np
import torch

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "16 embeddings of dim 8, 6 classes", "bench": "256 embeddings of dim 128, 64 classes"},
    "source": "Confusezius/Deep-Metric-Learning-Baselines:losses.py",
    "field": "metric learning",
    "target_args": ("npairs",),
}

L2 = 0.02


class GivenSampler:
    """The repository's Sampler.npairsampling draws with np.random; here its draw is fixed."""
    def __init__(self, npairs):
        self.npairs = npairs

    def give(self, batch, labels):
        return self.npairs


class NPairLoss(torch.nn.Module):
    def __init__(self, sampler, l2=0.02):
        super(NPairLoss, self).__init__()
        self.sampler = sampler
        self.l2 = l2

    def npair_distance(self, anchor, positive, negatives):
        return torch.log(1 + torch.sum(torch.exp(anchor.mm((negatives - positive).transpose(0, 1)))))

    def weightsum(self, anchor, positive):
        # only anchors and positives: the negatives are other pairs' positives
        return torch.sum(anchor ** 2 + positive ** 2)

    def forward(self, batch, labels):
        sampled_npairs = self.sampler.give(batch, labels)
        loss = torch.stack([self.npair_distance(batch[npair[0]:npair[0] + 1, :], batch[npair[1]:npair[1] + 1, :],
                                                batch[npair[2:], :]) for npair in sampled_npairs])
        loss = loss + self.l2 * torch.mean(torch.stack([self.weightsum(batch[npair[0], :], batch[npair[1], :])
                                                        for npair in sampled_npairs]))
        return torch.mean(loss)


def naive(batch, labels, npairs):
    return NPairLoss(GivenSampler(npairs), l2=L2)(batch, labels)


def expert(batch, labels, npairs):
    anchor, positive, negatives = batch[npairs[:, 0]], batch[npairs[:, 1]], batch[npairs[:, 2:]]
    logits = torch.einsum("pd,pkd->pk", anchor, negatives - positive[:, None])
    penalty = (anchor ** 2 + positive ** 2).sum(dim=1).mean()
    return torch.log(1 + torch.exp(logits).sum(dim=1)).mean() + L2 * penalty


def npair_sampling(labels, rng):
    """The repository's npairsampling, with a seeded generator: one pair per class that has two
    samples, and every other pair's positive as a negative."""
    label_set, count = np.unique(labels, return_counts=True)
    label_set = label_set[count >= 2]
    pos_pairs = np.array([rng.choice(np.where(labels == x)[0], 2, replace=False) for x in label_set])
    neg = [pos_pairs[np.delete(np.arange(len(pos_pairs)), idx), 1] for idx in range(len(pos_pairs))]
    return torch.tensor(np.concatenate([pos_pairs, np.array(neg)], axis=1))


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, d, c = {"small": (16, 8, 6), "bench": (256, 128, 64)}[size]
    labels = torch.arange(c).repeat(n // c + 1)[:n]
    labels = labels[torch.randperm(n, generator=g)]
    batch = (0.3 * torch.randn(n, d, generator=g, dtype=dtype)).requires_grad_()
    npairs = npair_sampling(labels.numpy(), np.random.default_rng(seed))
    return batch, labels, npairs
