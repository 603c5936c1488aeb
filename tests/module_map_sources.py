"""Losses calling an ``nn.Linear`` head per item (op_facts.MODULE_MAPS), for
test_module_map_calls: a probe read out of each sample's tokens, a classifier head per sequence,
and a ``nn.Sequential`` head (not a map the table knows: its call stays a vmapped call)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class ProbeLoss(nn.Module):
    """Squared error of a linear read-out of every sample's tokens."""

    def __init__(self, d=6, bias=True):
        super().__init__()
        self.proj = nn.Linear(d, d, bias=bias)

    def forward(self, z, target):
        loss = 0
        for b in range(z.shape[0]):
            pred = self.proj(z[b])
            loss = loss + ((pred - target[b]) ** 2).mean()
        return loss


class HeadPerSequence(nn.Module):
    """Cross entropy of a classifier head applied to each sequence's token features."""

    def __init__(self, d=6, k=4):
        super().__init__()
        self.head = nn.Linear(d, k)

    def forward(self, feat, y):
        total = 0
        for i in range(len(feat)):
            total = total + F.cross_entropy(self.head(feat[i]), y[i])
        return total / len(feat)


class SequentialHead(nn.Module):
    def __init__(self, d=6, k=4):
        super().__init__()
        self.head = nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.Linear(8, k))

    def forward(self, feat, y):
        total = 0
        for i in range(len(feat)):
            total = total + F.cross_entropy(self.head(feat[i]), y[i])
        return total
