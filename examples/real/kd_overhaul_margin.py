"""Feature distillation with teacher-side margins (Heo et al., "A Comprehensive Overhaul of
Feature Distillation"), from clovaai/overhaul-distillation (CIFAR-100/distiller.py): in a loop over
the feature stages, the student's pre-ReLU map is rebound in the list (``s_feats[i] =
connector(s_feats[i])``), the teacher map is clamped from below by a per-channel margin fetched
with ``getattr(self, 'margin%d' % (i + 1))``, a partial L2 keeps only positions where ``(source >
target) | (target > 0)``, and each stage is summed and down-weighted by ``2 ** (feat_num - i -
1)``. Here the connector is the 1x1 convolution alone (the repository follows it with a BatchNorm). The
stages differ in shape and the loop rebinds list items, so it is kept; the expert loops too."""
import torch
import torch.nn as nn
import torch.nn.functional as F

CASE = {
    "loops": "kept",
    "elementwise": False,
    "sizes": {"small": "batch 2, 3 stages [8->16, 16x16] [16->32, 8x8] [32->64, 4x4]",
              "bench": "batch 64, 3 stages [32->64, 32x32] [64->128, 16x16] [128->256, 8x8]"},
    "source": "clovaai/overhaul-distillation:CIFAR-100/distiller.py",
    "field": "distillation",
    "target_args": ("t_feats", "margins"),
}


def distillation_loss(source, target, margin):
    target = torch.max(target, margin)
    loss = torch.nn.functional.mse_loss(source, target, reduction="none")
    loss = loss * ((source > target) | (target > 0)).float()
    return loss.sum()


class Distiller(nn.Module):
    def __init__(self, connector_weights, margins):
        super(Distiller, self).__init__()
        self.connector_weights = connector_weights
        for i, margin in enumerate(margins):
            setattr(self, "margin%d" % (i + 1), margin.unsqueeze(1).unsqueeze(2).unsqueeze(0).detach())

    def forward(self, s_feats, t_feats):
        s_feats = list(s_feats)  # extract_feature returns a fresh list that the loop rebinds
        feat_num = len(t_feats)
        loss_distill = 0
        for i in range(feat_num):
            s_feats[i] = F.conv2d(s_feats[i], self.connector_weights[i])
            loss_distill += distillation_loss(s_feats[i], t_feats[i].detach(),
                                              getattr(self, "margin%d" % (i + 1))) / 2 ** (feat_num - i - 1)
        return loss_distill


def naive(s_feats, connector_weights, t_feats, margins):
    distiller = Distiller(connector_weights, margins)
    batch_size = s_feats[0].size(0)
    return distiller(s_feats, t_feats).sum() / batch_size / 1000


def expert(s_feats, connector_weights, t_feats, margins):
    n = len(t_feats)
    total = 0
    for i, (s, w, t, m) in enumerate(zip(s_feats, connector_weights, t_feats, margins)):
        src = F.conv2d(s, w)
        tgt = torch.maximum(t, m.view(1, -1, 1, 1))
        keep = (src > tgt) | (tgt > 0)
        total = total + torch.where(keep, (src - tgt) ** 2, 0.0).sum() / 2 ** (n - i - 1)
    return total / s_feats[0].size(0) / 1000


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, c, side = {"small": (2, 8, 16), "bench": (64, 32, 32)}[size]
    s_feats, weights, t_feats, margins = [], [], [], []
    for i in range(3):
        cs, ct, hw = c * 2 ** i, 2 * c * 2 ** i, side // 2 ** i
        s_feats.append(torch.randn(b, cs, hw, hw, generator=g, dtype=dtype).requires_grad_())
        weights.append((torch.randn(ct, cs, 1, 1, generator=g, dtype=dtype) / cs ** 0.5).requires_grad_())
        t_feats.append(torch.randn(b, ct, hw, hw, generator=g, dtype=dtype))
        margins.append(-torch.rand(ct, generator=g, dtype=dtype))  # from the teacher's BN statistics
    return s_feats, weights, t_feats, margins
