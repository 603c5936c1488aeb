"""Similarity-preserving distillation (Tung and Mori, ICCV 2019) as HobbitLong/RepDistiller writes
it (distiller_zoo/SP.py, used by train_student.py): ``Similarity.forward`` returns a list, one
entry per intermediate layer from ``zip(g_s, g_t)``, each comparing row-normalised ``[B, B]`` Gram
matrices of the flattened student and teacher features with a ``.view(-1, 1).sum(0) / (bsz *
bsz)`` that leaves a ``[1]``-shaped tensor; the training script slices ``feat[1:-1]``, sums the
list with the builtin ``sum`` and adds the temperature KD term ``DistillKL`` and cross entropy."""
import torch
import torch.nn as nn
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "batch 8, 5 feature maps [16..64 ch, 16x16..4x4], 10 classes",
              "bench": "batch 64, 5 feature maps [64..256 ch, 32x32..8x8], 100 classes"},
    "source": "HobbitLong/RepDistiller:distiller_zoo/SP.py",
    "field": "distillation",
    "target_args": ("feat_t", "logit_t", "target"),
}


class Similarity(nn.Module):
    """Similarity-preserving loss"""

    def __init__(self):
        super(Similarity, self).__init__()

    def forward(self, g_s, g_t):
        return [self.similarity_loss(f_s, f_t) for f_s, f_t in zip(g_s, g_t)]

    def similarity_loss(self, f_s, f_t):
        bsz = f_s.shape[0]
        f_s = f_s.view(bsz, -1)
        f_t = f_t.view(bsz, -1)

        G_s = torch.mm(f_s, torch.t(f_s))
        G_s = torch.nn.functional.normalize(G_s)
        G_t = torch.mm(f_t, torch.t(f_t))
        G_t = torch.nn.functional.normalize(G_t)

        G_diff = G_t - G_s
        loss = (G_diff * G_diff).view(-1, 1).sum(0) / (bsz * bsz)
        return loss


class DistillKL(nn.Module):
    """Distilling the Knowledge in a Neural Network"""

    def __init__(self, T):
        super(DistillKL, self).__init__()
        self.T = T

    def forward(self, y_s, y_t):
        p_s = F.log_softmax(y_s / self.T, dim=1)
        p_t = F.softmax(y_t / self.T, dim=1)
        loss = F.kl_div(p_s, p_t, reduction="sum") * (self.T ** 2) / y_s.shape[0]
        return loss


def naive(feat_s, logit_s, feat_t, logit_t, target):
    criterion_cls = nn.CrossEntropyLoss()
    criterion_div = DistillKL(4)
    criterion_kd = Similarity()

    loss_cls = criterion_cls(logit_s, target)
    loss_div = criterion_div(logit_s, logit_t)
    g_s = feat_s[1:-1]
    g_t = feat_t[1:-1]
    loss_group = criterion_kd(g_s, g_t)
    loss_kd = sum(loss_group)
    loss = 1.0 * loss_cls + 1.0 * loss_div + 3000.0 * loss_kd
    return loss.squeeze(0)  # the repository backpropagates the [1]-shaped sum directly


def expert(feat_s, logit_s, feat_t, logit_t, target):
    T = 4
    kl = (F.softmax(logit_t / T, 1) * (F.log_softmax(logit_t / T, 1) - F.log_softmax(logit_s / T, 1))).sum()
    loss = F.cross_entropy(logit_s, target) + kl * T ** 2 / logit_s.shape[0]
    b = logit_s.shape[0]
    # Zero-padding the flattened features to one width leaves every Gram matrix unchanged, so the
    # layers stack into one batched matmul.
    def grams(feats):
        flat = nn.utils.rnn.pad_sequence([f.reshape(b, -1).T for f in feats[1:-1]])  # [D, L, B]
        flat = flat.permute(1, 2, 0)  # [L, B, D]
        return F.normalize(flat @ flat.transpose(1, 2), dim=2)
    diff = grams(feat_t) - grams(feat_s)
    return loss + 3000.0 * diff.pow(2).sum() / (b * b)


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, width, side, k = {"small": (8, 16, 16, 10), "bench": (64, 64, 32, 100)}[size]
    shapes = [(b, 3, side, side)] + [(b, width * 2 ** min(i, 2), side // 2 ** min(i, 2),
                                      side // 2 ** min(i, 2)) for i in range(3)] + [(b, width * 4)]
    feat_s = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    for f in feat_s[1:-1]:  # the stem and the pooled features are sliced away by feat[1:-1]
        f.requires_grad_()
    feat_t = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    logit_s = torch.randn(b, k, generator=g, dtype=dtype).requires_grad_()
    logit_t = torch.randn(b, k, generator=g, dtype=dtype)
    target = torch.randint(0, k, (b,), generator=g)
    return feat_s, logit_s, feat_t, logit_t, target
