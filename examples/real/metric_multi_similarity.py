"""Multi-similarity loss as msight-tech/research-ms-loss writes it in
ret_benchmark/losses/multi_similarity_loss.py (and the many forks that copy it): an ``nn.Module``
with its scales read from a config, an ``assert`` on the batch sizes, a loop over anchors taking
the similarity row's positives and negatives by boolean masks, ``< 1 - epsilon`` to drop the
anchor itself, hard mining against Python's builtin ``min()``/``max()`` of the other kind's
selection (which iterate the tensor element by element), ``continue`` when a mined set is empty,
soft-plus weightings ``1/scale * log(1 + sum(exp(...)))`` appended to a list, and a zero loss
that requires grad when every anchor was skipped. Inputs are unit-norm embeddings."""
import torch
from torch import nn

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "16 unit embeddings of dim 8, 4 classes",
              "bench": "256 unit embeddings of dim 512, 64 classes"},
    "source": "msight-tech/research-ms-loss:ret_benchmark/losses/multi_similarity_loss.py",
    "field": "metric learning",
    "target_args": ("labels",),
}


class MultiSimilarityLoss(nn.Module):
    def __init__(self, cfg):
        super(MultiSimilarityLoss, self).__init__()
        self.thresh = 0.5
        self.margin = 0.1
        self.scale_pos = cfg["SCALE_POS"]
        self.scale_neg = cfg["SCALE_NEG"]

    def forward(self, feats, labels):
        assert feats.size(0) == labels.size(0), \
            f"feats.size(0): {feats.size(0)} is not equal to labels.size(0): {labels.size(0)}"
        batch_size = feats.size(0)
        sim_mat = torch.matmul(feats, torch.t(feats))

        epsilon = 1e-5
        loss = list()
        for i in range(batch_size):
            pos_pair_ = sim_mat[i][labels == labels[i]]
            pos_pair_ = pos_pair_[pos_pair_ < 1 - epsilon]
            neg_pair_ = sim_mat[i][labels != labels[i]]

            neg_pair = neg_pair_[neg_pair_ + self.margin > min(pos_pair_)]
            pos_pair = pos_pair_[pos_pair_ - self.margin < max(neg_pair_)]

            if len(neg_pair) < 1 or len(pos_pair) < 1:
                continue

            # weighting step
            pos_loss = 1.0 / self.scale_pos * torch.log(
                1 + torch.sum(torch.exp(-self.scale_pos * (pos_pair - self.thresh))))
            neg_loss = 1.0 / self.scale_neg * torch.log(
                1 + torch.sum(torch.exp(self.scale_neg * (neg_pair - self.thresh))))
            loss.append(pos_loss + neg_loss)

        if len(loss) == 0:
            return torch.zeros([], requires_grad=True)

        loss = sum(loss) / batch_size
        return loss


CONFIG = {"SCALE_POS": 2.0, "SCALE_NEG": 40.0}  # the repository's default config


def naive(feats, labels):
    return MultiSimilarityLoss(CONFIG)(feats, labels)


def expert(feats, labels):
    n = feats.size(0)
    sim = feats @ feats.t()
    same = labels[:, None] == labels[None, :]
    pos = same & (sim < 1 - 1e-5)
    neg = ~same
    # the mining thresholds take no gradient: only the comparisons read them
    hardest_pos = sim.detach().masked_fill(~pos, float("inf")).amin(dim=1, keepdim=True)
    hardest_neg = sim.detach().masked_fill(~neg, float("-inf")).amax(dim=1, keepdim=True)
    hard_neg = neg & (sim + 0.1 > hardest_pos)
    hard_pos = pos & (sim - 0.1 < hardest_neg)
    kept = hard_pos.any(dim=1) & hard_neg.any(dim=1)
    sp, sn = CONFIG["SCALE_POS"], CONFIG["SCALE_NEG"]
    pos_sum = torch.where(hard_pos, torch.exp(-sp * (sim - 0.5)), 0).sum(dim=1)
    neg_sum = torch.where(hard_neg, torch.exp(sn * (sim - 0.5)), 0).sum(dim=1)
    per_anchor = 1.0 / sp * torch.log1p(pos_sum) + 1.0 / sn * torch.log1p(neg_sum)
    if not bool(kept.any()):
        return torch.zeros([], requires_grad=True)
    return torch.where(kept, per_anchor, 0).sum() / n


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, d, c = {"small": (16, 8, 4), "bench": (256, 512, 64)}[size]
    noise = {"small": 1.5, "bench": 1.8}[size]  # some anchors mined, some skipped
    labels = torch.arange(c).repeat_interleave(n // c)  # a P x K sampler: K >= 2 per class
    centers = torch.randn(c, d, generator=g, dtype=dtype)
    x = centers[labels] + noise * torch.randn(n, d, generator=g, dtype=dtype)
    feats = torch.nn.functional.normalize(x, dim=1).requires_grad_()
    return feats, labels
