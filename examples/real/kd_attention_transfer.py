"""Attention transfer plus temperature knowledge distillation, the CIFAR training loss of
szagoruyko/attention-transfer (utils.py: ``distillation``, ``at``, ``at_loss``): each student and
teacher feature map is squashed to a spatial attention map (channel mean of squares, flattened,
L2-normalised), a list comprehension over ``zip(g_s, g_t)`` gives one squared-difference mean per
network group, and ``beta / 2 * sum(loss_groups)`` is added to the Hinton KD term (summed KL of
the temperature-softened distributions scaled by ``T**2 / batch``, mixed with cross entropy by
``alpha``). The groups have different shapes, so the per-layer loop is short and shape-bound."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "batch 4, groups [16, 16x16] [32, 8x8] [64, 4x4], 10 classes",
              "bench": "batch 128, groups [160, 32x32] [320, 16x16] [640, 8x8], 100 classes"},
    "source": "szagoruyko/attention-transfer:utils.py",
    "field": "distillation",
    "target_args": ("g_t", "y_t", "labels"),
}


def distillation(y, teacher_scores, labels, T, alpha):
    p = F.log_softmax(y / T, dim=1)
    q = F.softmax(teacher_scores / T, dim=1)
    l_kl = F.kl_div(p, q, reduction="sum") * (T ** 2) / y.shape[0]
    l_ce = F.cross_entropy(y, labels)
    return l_kl * alpha + l_ce * (1. - alpha)


def at(x):
    return F.normalize(x.pow(2).mean(1).view(x.size(0), -1))


def at_loss(x, y):
    return (at(x) - at(y)).pow(2).mean()


def naive(y_s, g_s, y_t, g_t, labels):
    loss_groups = [at_loss(x, y) for x, y in zip(g_s, g_t)]
    loss_groups = [v.sum() for v in loss_groups]
    return distillation(y_s, y_t, labels, 4, 0.9) + 1e3 / 2 * sum(loss_groups)


def expert(y_s, g_s, y_t, g_t, labels):
    T, alpha, beta = 4, 0.9, 1e3
    kl = (F.softmax(y_t / T, 1) * (F.log_softmax(y_t / T, 1) - F.log_softmax(y_s / T, 1))).sum()
    kd = kl * T ** 2 / y_s.shape[0] * alpha + F.cross_entropy(y_s, labels) * (1 - alpha)
    # One normalised map per group; each group's mean becomes a weight, then one reduction.
    diffs = [F.normalize(s.pow(2).mean(1).flatten(1)) - F.normalize(t.pow(2).mean(1).flatten(1))
             for s, t in zip(g_s, g_t)]
    weights = torch.cat([d.new_full((d.shape[1],), 1.0 / d.numel()) for d in diffs])
    return kd + beta / 2 * (torch.cat(diffs, dim=1).pow(2) * weights).sum()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, width, side, k = {"small": (4, 16, 16, 10), "bench": (128, 160, 32, 100)}[size]
    shapes = [(b, width * 2 ** i, side // 2 ** i, side // 2 ** i) for i in range(3)]
    g_s = [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]
    g_t = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    y_s = torch.randn(b, k, generator=g, dtype=dtype).requires_grad_()
    y_t = torch.randn(b, k, generator=g, dtype=dtype)
    labels = torch.randint(0, k, (b,), generator=g)
    return y_s, g_s, y_t, g_t, labels
