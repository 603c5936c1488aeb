"""Batch-hard triplet loss for person re-identification as KaiyangZhou/deep-person-reid writes it
in torchreid/losses/hard_mine_triplet_loss.py (imported there from open-reid): an ``nn.Module``
that builds the squared-distance matrix with an in-place ``addmm_`` on a fresh tensor, clamps
and takes the root, then loops over anchors boolean-indexing each row with the identity mask for
the hardest positive (``max``) and hardest negative (``min``), and feeds the two concatenated
lists to ``nn.MarginRankingLoss``."""
import torch
import torch.nn as nn

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "16 features of dim 8 (4 ids x 4)", "bench": "128 features of dim 2048 (32 ids x 4)"},
    "source": "KaiyangZhou/deep-person-reid:torchreid/losses/hard_mine_triplet_loss.py",
    "field": "re-identification",
    "target_args": ("targets",),
}


class TripletLoss(nn.Module):

    def __init__(self, margin=0.3):
        super(TripletLoss, self).__init__()
        self.margin = margin
        self.ranking_loss = nn.MarginRankingLoss(margin=margin)

    def forward(self, inputs, targets):
        n = inputs.size(0)

        # pairwise distance: |a|^2 + |b|^2 - 2 a.b, accumulated in place
        dist = torch.pow(inputs, 2).sum(dim=1, keepdim=True).expand(n, n)
        dist = dist + dist.t()
        dist.addmm_(inputs, inputs.t(), beta=1, alpha=-2)
        dist = dist.clamp(min=1e-12).sqrt()

        # for each anchor, the hardest positive and the hardest negative
        mask = targets.expand(n, n).eq(targets.expand(n, n).t())
        dist_ap, dist_an = [], []
        for i in range(n):
            dist_ap.append(dist[i][mask[i]].max().unsqueeze(0))
            dist_an.append(dist[i][mask[i] == 0].min().unsqueeze(0))
        dist_ap = torch.cat(dist_ap)
        dist_an = torch.cat(dist_an)

        y = torch.ones_like(dist_an)
        return self.ranking_loss(dist_an, dist_ap, y)


def naive(inputs, targets):
    return TripletLoss(margin=0.3)(inputs, targets)


def expert(inputs, targets):
    sq = inputs.pow(2).sum(dim=1, keepdim=True)
    dist = torch.addmm(sq + sq.t(), inputs, inputs.t(), beta=1, alpha=-2).clamp(min=1e-12).sqrt()
    same = targets[:, None] == targets[None, :]
    dist_ap = dist.masked_fill(~same, float("-inf")).amax(dim=1)
    dist_an = dist.masked_fill(same, float("inf")).amin(dim=1)
    return (dist_ap - dist_an + 0.3).clamp(min=0).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    ids, per_id, d = {"small": (4, 4, 8), "bench": (32, 4, 2048)}[size]
    targets = torch.arange(ids).repeat_interleave(per_id)
    targets = targets[torch.randperm(len(targets), generator=g)]
    inputs = torch.randn(ids * per_id, d, generator=g, dtype=dtype).requires_grad_()
    return inputs, targets
