"""Lifted structure loss with hard mining as bnu-wangxun/Deep_Metric writes it in
losses/LiftedStructure.py: an ``nn.Module`` looping over anchors, ``torch.masked_select`` of the
similarity row by label, ``pos < 1`` to drop the anchor itself, per-anchor ``torch.sort``, hard
mining against the hardest pair of the other kind, ``continue`` (with a skip counter) when a mined
set is empty, soft-max margins ``2/beta * log(sum(exp(-beta*pos)))``, ``sum(list) / n``, and
``.item()`` statistics returned next to the loss. Inputs are unit-norm embeddings."""
import torch
from torch import nn

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "16 unit embeddings of dim 8, 4 classes", "bench": "256 unit embeddings of dim 512, 64 classes"},
    "source": "bnu-wangxun/Deep_Metric:losses/LiftedStructure.py",
    "field": "metric learning",
    "target_args": ("targets",),
}


class LiftedStructureLoss(nn.Module):
    def __init__(self, alpha=40, beta=2, margin=0.5, hard_mining=None, **kwargs):
        super(LiftedStructureLoss, self).__init__()
        self.margin = margin
        self.alpha = alpha
        self.beta = beta
        self.hard_mining = hard_mining

    def forward(self, inputs, targets):
        n = inputs.size(0)
        sim_mat = torch.matmul(inputs, inputs.t())
        loss = list()
        c = 0

        for i in range(n):
            pos_pair_ = torch.masked_select(sim_mat[i], targets == targets[i])
            # drop the anchor itself
            pos_pair_ = torch.masked_select(pos_pair_, pos_pair_ < 1)
            neg_pair_ = torch.masked_select(sim_mat[i], targets != targets[i])

            pos_pair_ = torch.sort(pos_pair_)[0]
            neg_pair_ = torch.sort(neg_pair_)[0]

            if self.hard_mining is not None:
                neg_pair = torch.masked_select(neg_pair_, neg_pair_ + 0.1 > pos_pair_[0])
                pos_pair = torch.masked_select(pos_pair_, pos_pair_ - 0.1 < neg_pair_[-1])

                if len(neg_pair) < 1 or len(pos_pair) < 1:
                    c += 1
                    continue

                pos_loss = 2.0 / self.beta * torch.log(torch.sum(torch.exp(-self.beta * pos_pair)))
                neg_loss = 2.0 / self.alpha * torch.log(torch.sum(torch.exp(self.alpha * neg_pair)))
            else:
                pos_pair = pos_pair_
                neg_pair = neg_pair_
                pos_loss = 2.0 / self.beta * torch.log(torch.sum(torch.exp(-self.beta * pos_pair)))
                neg_loss = 2.0 / self.alpha * torch.log(torch.sum(torch.exp(self.alpha * neg_pair)))

            if len(neg_pair) == 0:
                c += 1
                continue

            loss.append(pos_loss + neg_loss)
        loss = sum(loss) / n
        prec = float(c) / n
        mean_neg_sim = torch.mean(neg_pair_).item()
        mean_pos_sim = torch.mean(pos_pair_).item()
        return loss, prec, mean_pos_sim, mean_neg_sim


def naive(inputs, targets):
    loss, _, _, _ = LiftedStructureLoss(hard_mining=True)(inputs, targets)
    return loss


ALPHA, BETA = 40, 2  # the module defaults


def expert(inputs, targets):
    n = inputs.size(0)
    sim = inputs @ inputs.t()
    same = targets[:, None] == targets[None, :]
    pos = same & (sim < 1)
    neg = ~same
    hardest_pos = sim.masked_fill(~pos, float("inf")).amin(dim=1, keepdim=True)
    hardest_neg = sim.masked_fill(~neg, float("-inf")).amax(dim=1, keepdim=True)
    neg = neg & (sim + 0.1 > hardest_pos)
    pos = pos & (sim - 0.1 < hardest_neg)
    kept = pos.any(dim=1) & neg.any(dim=1)
    # skipped anchors get a sum of 1 (log 0 = 0) so their masked-out terms have zero gradient
    pos_sum = torch.where(pos, torch.exp(-BETA * sim), 0).sum(dim=1)
    neg_sum = torch.where(neg, torch.exp(ALPHA * sim), 0).sum(dim=1)
    per_anchor = (2.0 / BETA * torch.where(kept, pos_sum, 1).log()
                  + 2.0 / ALPHA * torch.where(kept, neg_sum, 1).log())
    return torch.where(kept, per_anchor, 0).sum() / n


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, d, c = {"small": (16, 8, 4), "bench": (256, 512, 64)}[size]
    noise = {"small": 1.5, "bench": 1.8}[size]  # some anchors mined, some skipped
    targets = torch.arange(c).repeat_interleave(n // c)
    centers = torch.randn(c, d, generator=g, dtype=dtype)
    x = centers[targets] + noise * torch.randn(n, d, generator=g, dtype=dtype)
    # the repository's models end with an L2 normalisation: hand it unit vectors
    inputs = torch.nn.functional.normalize(x, dim=1).requires_grad_()
    return inputs, targets
