"""Multi-class focal loss for segmentation as qubvel-org/segmentation_models.pytorch writes it in
segmentation_models_pytorch/losses/focal.py with _functional.py: a ``_Loss`` subclass holding a
``functools.partial`` of the binary focal helper, a loop over classes that builds a one-vs-rest
target with ``(y_true == cls).long()``, boolean-indexes away the ``ignore_index`` pixels, and adds
each class's mean (``loss += ...``); the helper casts the target with ``.type(output.type())`` and
scales by ``alpha`` in place (``loss *= ...``)."""
from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "logits [2, 4, 12, 12], ~10% ignored", "bench": "logits [8, 19, 128, 128], ~10% ignored"},
    "source": "qubvel-org/segmentation_models.pytorch:segmentation_models_pytorch/losses/focal.py",
    "field": "segmentation",
    "target_args": ("y_true",),
}

IGNORE_INDEX = 255
ALPHA, GAMMA = 0.25, 2.0


def focal_loss_with_logits(output, target, gamma=2.0, alpha: Optional[float] = 0.25, reduction="mean",
                           normalized=False, reduced_threshold: Optional[float] = None, eps=1e-6):
    target = target.type(output.type())

    logpt = F.binary_cross_entropy_with_logits(output, target, reduction="none")
    pt = torch.exp(-logpt)

    if reduced_threshold is None:
        focal_term = (1.0 - pt).pow(gamma)
    else:
        focal_term = ((1.0 - pt) / reduced_threshold).pow(gamma)
        focal_term[pt < reduced_threshold] = 1

    loss = focal_term * logpt

    if alpha is not None:
        loss *= alpha * target + (1 - alpha) * (1 - target)

    if normalized:
        norm_factor = focal_term.sum().clamp_min(eps)
        loss /= norm_factor

    if reduction == "mean":
        loss = loss.mean()
    if reduction == "sum":
        loss = loss.sum()
    if reduction == "batchwise_mean":
        loss = loss.sum(0)
    return loss


class FocalLoss(_Loss):
    def __init__(self, mode, alpha=None, gamma=2.0, ignore_index=None, from_logits=True, eps=1e-7,
                 reduction="mean", normalized=False, reduced_threshold=None):
        assert mode in {"binary", "multilabel", "multiclass"}
        super().__init__()
        self.mode = mode
        self.from_logits = from_logits
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.eps = eps
        self.focal_loss_fn = partial(focal_loss_with_logits, alpha=alpha, gamma=gamma,
                                     reduced_threshold=reduced_threshold, reduction=reduction,
                                     normalized=normalized)

    def forward(self, y_pred, y_true):
        if not self.from_logits:
            y_pred = torch.clamp(y_pred, self.eps, 1 - self.eps)
            y_pred = torch.log(y_pred)

        num_classes = y_pred.size(1)
        loss = 0

        # filter anchors with the ignore label from loss computation
        if self.ignore_index is not None:
            not_ignored = y_true != self.ignore_index

        for cls in range(num_classes):
            cls_y_true = (y_true == cls).long()
            cls_y_pred = y_pred[:, cls, ...]

            if self.ignore_index is not None:
                cls_y_true = cls_y_true[not_ignored]
                cls_y_pred = cls_y_pred[not_ignored]

            loss += self.focal_loss_fn(cls_y_pred, cls_y_true)
        return loss


def naive(y_pred, y_true):
    return FocalLoss("multiclass", alpha=ALPHA, gamma=GAMMA, ignore_index=IGNORE_INDEX)(y_pred, y_true)


def expert(y_pred, y_true):
    # Every class shares the same valid pixels, so the sum of per-class means is one masked sum
    # over classes and pixels divided by the valid count.
    c = y_pred.shape[1]
    valid = y_true != IGNORE_INDEX
    target = (y_true[:, None] == torch.arange(c)[:, None, None]).to(y_pred.dtype)    # [B, C, H, W]
    logpt = F.binary_cross_entropy_with_logits(y_pred, target, reduction="none")
    loss = (1.0 - torch.exp(-logpt)).pow(GAMMA) * logpt * (ALPHA * target + (1 - ALPHA) * (1 - target))
    return torch.where(valid[:, None], loss, 0).sum() / valid.sum()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, c, hw = {"small": (2, 4, 12), "bench": (8, 19, 128)}[size]
    y_pred = torch.randn(b, c, hw, hw, generator=g, dtype=dtype).requires_grad_()
    y_true = torch.randint(0, c, (b, hw, hw), generator=g)
    y_true[torch.rand(b, hw, hw, generator=g) < 0.1] = IGNORE_INDEX
    return y_pred, y_true
