"""Online triplet loss with hardest-negative mining as adambielski/siamese-triplet writes it in
utils.py (the selector) and losses.py (``OnlineTripletLoss``): the selector moves distances and
labels to numpy, loops over ``set(labels)`` with ``continue`` when a class has fewer than two
samples, loops over every anchor-positive combination, picks the negative with the largest
positive hinge (or none), and falls back to the last pair when nothing was mined; the loss then
indexes the embeddings with the triplet tensor and averages ``relu(d_ap - d_an + margin)``."""
from itertools import combinations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "16 embeddings of dim 4, 5 classes", "bench": "256 embeddings of dim 64, 32 classes"},
    "source": "adambielski/siamese-triplet:utils.py",
    "field": "metric learning",
    "target_args": ("target",),
}

MARGIN = 1.0


def pdist(vectors):
    distance_matrix = -2 * vectors.mm(torch.t(vectors)) + vectors.pow(2).sum(dim=1).view(1, -1) + \
        vectors.pow(2).sum(dim=1).view(-1, 1)
    return distance_matrix


def hardest_negative(loss_values):
    hard_negative = np.argmax(loss_values)
    return hard_negative if loss_values[hard_negative] > 0 else None


class FunctionNegativeTripletSelector:
    def __init__(self, margin, negative_selection_fn, cpu=True):
        self.cpu = cpu
        self.margin = margin
        self.negative_selection_fn = negative_selection_fn

    def get_triplets(self, embeddings, labels):
        if self.cpu:
            embeddings = embeddings.cpu()
        distance_matrix = pdist(embeddings)
        distance_matrix = distance_matrix.cpu()

        labels = labels.cpu().data.numpy()
        triplets = []
        for label in set(labels):
            label_mask = (labels == label)
            label_indices = np.where(label_mask)[0]
            if len(label_indices) < 2:
                continue
            negative_indices = np.where(np.logical_not(label_mask))[0]
            anchor_positives = np.array(list(combinations(label_indices, 2)))

            ap_distances = distance_matrix[anchor_positives[:, 0], anchor_positives[:, 1]]
            for anchor_positive, ap_distance in zip(anchor_positives, ap_distances):
                loss_values = ap_distance - distance_matrix[torch.LongTensor(np.array([anchor_positive[0]])),
                                                            torch.LongTensor(negative_indices)] + self.margin
                loss_values = loss_values.data.cpu().numpy()
                hard_negative = self.negative_selection_fn(loss_values)
                if hard_negative is not None:
                    hard_negative = negative_indices[hard_negative]
                    triplets.append([anchor_positive[0], anchor_positive[1], hard_negative])

        if len(triplets) == 0:
            triplets.append([anchor_positive[0], anchor_positive[1], negative_indices[0]])

        return torch.LongTensor(np.array(triplets))


class OnlineTripletLoss(nn.Module):
    def __init__(self, margin, triplet_selector):
        super(OnlineTripletLoss, self).__init__()
        self.margin = margin
        self.triplet_selector = triplet_selector

    def forward(self, embeddings, target):
        triplets = self.triplet_selector.get_triplets(embeddings, target)
        if embeddings.is_cuda:
            triplets = triplets.cuda()
        ap_distances = (embeddings[triplets[:, 0]] - embeddings[triplets[:, 1]]).pow(2).sum(1)
        an_distances = (embeddings[triplets[:, 0]] - embeddings[triplets[:, 2]]).pow(2).sum(1)
        losses = F.relu(ap_distances - an_distances + self.margin)
        return losses.mean(), len(triplets)


def naive(embeddings, target):
    selector = FunctionNegativeTripletSelector(margin=MARGIN, negative_selection_fn=hardest_negative)
    loss, _ = OnlineTripletLoss(MARGIN, selector)(embeddings, target)
    return loss


def expert(embeddings, target):
    # Mining needs no gradient: for every pair a < p of one class, the negative with the largest
    # hinge on the same distance matrix (first one on ties, as np.argmax), kept when positive.
    # make_inputs always yields mined triplets, so the repository's empty fallback is not needed.
    with torch.no_grad():
        dist = pdist(embeddings)
        same = target[:, None] == target[None, :]
        a, p = (same & torch.ones_like(same).triu(diagonal=1)).nonzero(as_tuple=True)
        hinge = (dist[a, p][:, None] - dist[a] + MARGIN).masked_fill(same[a], float("-inf"))
        best, n = hinge.max(dim=1)
        a, p, n = a[best > 0], p[best > 0], n[best > 0]
    ap = (embeddings[a] - embeddings[p]).pow(2).sum(1)
    an = (embeddings[a] - embeddings[n]).pow(2).sum(1)
    return F.relu(ap - an + MARGIN).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, d, c = {"small": (16, 4, 5), "bench": (256, 64, 32)}[size]
    target = torch.randint(0, c, (n,), generator=g)
    embeddings = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    return embeddings, target
