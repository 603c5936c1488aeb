"""RetinaNet-style anchor-head loss as open-mmlab/mmdetection writes it (mmdet 2.x,
mmdet/models/anchor_heads/anchor_head.py with mmdet/core utilities and mmdet/models/losses):
per-image targets are split into per-level lists by ``images_to_levels`` (a loop slicing a
stacked tensor), ``multi_apply`` maps ``loss_single`` over the lists of per-level scores and
targets (``map`` + ``zip(*...)``), the losses are ``@weighted_loss``-decorated helpers with
``avg_factor``, and the detector's ``_parse_losses`` sums the per-level lists from a dict."""
from functools import partial, wraps

import torch
import torch.nn as nn
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "3 levels (8x8, 4x4, 2x2), 2 images, 9 anchors, 4 classes",
              "bench": "5 levels (64x64 .. 4x4), 2 images, 9 anchors, 80 classes"},
    "source": "open-mmlab/mmdetection:mmdet/models/anchor_heads/anchor_head.py",
    "field": "detection",
    "target_args": ("labels", "label_weights", "bbox_targets", "bbox_weights"),
}


NUM_ANCHORS = 9  # 3 scales x 3 ratios per location


def multi_apply(func, *args, **kwargs):
    pfunc = partial(func, **kwargs) if kwargs else func
    map_results = map(pfunc, *args)
    return tuple(map(list, zip(*map_results)))


def images_to_levels(target, num_levels):
    """[target_img0, target_img1] -> [target_level0, target_level1, ...]"""
    target = torch.stack(target, 0)
    level_targets = []
    start = 0
    for n in num_levels:
        end = start + n
        level_targets.append(target[:, start:end])
        start = end
    return level_targets


def weight_reduce_loss(loss, weight=None, reduction='mean', avg_factor=None):
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        loss = loss.mean() if reduction == 'mean' else loss.sum() if reduction == 'sum' else loss
    else:
        if reduction == 'mean':
            loss = loss.sum() / avg_factor
        elif reduction != 'none':
            raise ValueError('avg_factor can not be used with reduction="sum"')
    return loss


def weighted_loss(loss_func):
    """Turn an element-wise loss into one taking weight, reduction and avg_factor."""
    @wraps(loss_func)
    def wrapper(pred, target, weight=None, reduction='mean', avg_factor=None, **kwargs):
        loss = loss_func(pred, target, **kwargs)
        loss = weight_reduce_loss(loss, weight, reduction, avg_factor)
        return loss
    return wrapper


@weighted_loss
def smooth_l1_loss(pred, target, beta=1.0):
    assert beta > 0
    assert pred.size() == target.size() and target.numel() > 0
    diff = torch.abs(pred - target)
    loss = torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)
    return loss


def py_sigmoid_focal_loss(pred, target, weight=None, gamma=2.0, alpha=0.25, reduction='mean', avg_factor=None):
    pred_sigmoid = pred.sigmoid()
    target = target.type_as(pred)
    pt = (1 - pred_sigmoid) * target + pred_sigmoid * (1 - target)
    focal_weight = (alpha * target + (1 - alpha) * (1 - target)) * pt.pow(gamma)
    loss = F.binary_cross_entropy_with_logits(pred, target, reduction='none') * focal_weight
    if weight is not None:
        if weight.shape != loss.shape:
            if weight.size(0) == loss.size(0):
                # a per-anchor weight: broadcast over classes
                weight = weight.view(-1, 1)
            else:
                assert weight.numel() == loss.numel()
                weight = weight.view(loss.size(0), -1)
        assert weight.ndim == loss.ndim
    loss = weight_reduce_loss(loss, weight, reduction, avg_factor)
    return loss


class FocalLoss(nn.Module):
    def __init__(self, use_sigmoid=True, gamma=2.0, alpha=0.25, reduction='mean', loss_weight=1.0):
        super(FocalLoss, self).__init__()
        assert use_sigmoid is True, 'Only sigmoid focal loss supported now.'
        self.use_sigmoid = use_sigmoid
        self.gamma = gamma
        self.alpha = alpha
        self.reduction = reduction
        self.loss_weight = loss_weight

    def forward(self, pred, target, weight=None, avg_factor=None, reduction_override=None):
        assert reduction_override in (None, 'none', 'mean', 'sum')
        reduction = reduction_override if reduction_override else self.reduction
        num_classes = pred.size(1)
        target = F.one_hot(target, num_classes=num_classes + 1)
        target = target[:, :num_classes]  # the background column is dropped
        return self.loss_weight * py_sigmoid_focal_loss(pred, target, weight, gamma=self.gamma, alpha=self.alpha,
                                                        reduction=reduction, avg_factor=avg_factor)


class SmoothL1Loss(nn.Module):
    def __init__(self, beta=1.0, reduction='mean', loss_weight=1.0):
        super(SmoothL1Loss, self).__init__()
        self.beta = beta
        self.reduction = reduction
        self.loss_weight = loss_weight

    def forward(self, pred, target, weight=None, avg_factor=None, reduction_override=None, **kwargs):
        reduction = reduction_override if reduction_override else self.reduction
        return self.loss_weight * smooth_l1_loss(pred, target, weight, beta=self.beta, reduction=reduction,
                                                 avg_factor=avg_factor, **kwargs)


class AnchorHeadLoss(nn.Module):
    """The loss half of AnchorHead; targets come from its assigner (target-only, per image)."""
    def __init__(self, num_classes):
        super(AnchorHeadLoss, self).__init__()
        self.num_classes = num_classes
        self.cls_out_channels = num_classes
        self.background_label = num_classes
        self.loss_cls = FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0)
        self.loss_bbox = SmoothL1Loss(beta=0.11, loss_weight=1.0)

    def loss_single(self, cls_score, bbox_pred, labels, label_weights, bbox_targets, bbox_weights, num_total_samples):
        labels = labels.reshape(-1)
        label_weights = label_weights.reshape(-1)
        cls_score = cls_score.permute(0, 2, 3, 1).reshape(-1, self.cls_out_channels)
        loss_cls = self.loss_cls(cls_score, labels, label_weights, avg_factor=num_total_samples)
        bbox_targets = bbox_targets.reshape(-1, 4)
        bbox_weights = bbox_weights.reshape(-1, 4)
        bbox_pred = bbox_pred.permute(0, 2, 3, 1).reshape(-1, 4)
        loss_bbox = self.loss_bbox(bbox_pred, bbox_targets, bbox_weights, avg_factor=num_total_samples)
        return loss_cls, loss_bbox

    def forward(self, cls_scores, bbox_preds, all_labels, all_label_weights, all_bbox_targets, all_bbox_weights):
        num_level_anchors = [s.size(-2) * s.size(-1) * (s.size(1) // self.cls_out_channels) for s in cls_scores]
        num_total_pos = sum([max(int((labels != self.background_label).sum()), 1) for labels in all_labels])
        labels_list = images_to_levels(all_labels, num_level_anchors)
        label_weights_list = images_to_levels(all_label_weights, num_level_anchors)
        bbox_targets_list = images_to_levels(all_bbox_targets, num_level_anchors)
        bbox_weights_list = images_to_levels(all_bbox_weights, num_level_anchors)
        losses_cls, losses_bbox = multi_apply(self.loss_single, cls_scores, bbox_preds, labels_list,
                                              label_weights_list, bbox_targets_list, bbox_weights_list,
                                              num_total_samples=num_total_pos)
        return dict(loss_cls=losses_cls, loss_bbox=losses_bbox)


def parse_losses(losses):
    log_vars = {}
    for loss_name, loss_value in losses.items():
        if isinstance(loss_value, torch.Tensor):
            log_vars[loss_name] = loss_value.mean()
        elif isinstance(loss_value, list):
            log_vars[loss_name] = sum(_loss.mean() for _loss in loss_value)
        else:
            raise TypeError(f'{loss_name} is not a tensor or list of tensors')
    loss = sum(_value for _key, _value in log_vars.items() if 'loss' in _key)
    return loss, log_vars


def naive(cls_scores, bbox_preds, labels, label_weights, bbox_targets, bbox_weights):
    head = AnchorHeadLoss(num_classes=cls_scores[0].shape[1] // NUM_ANCHORS)
    losses = head(cls_scores, bbox_preds, list(labels), list(label_weights), list(bbox_targets), list(bbox_weights))
    loss, _ = parse_losses(losses)
    return loss


def expert(cls_scores, bbox_preds, labels, label_weights, bbox_targets, bbox_weights):
    # Every level flattened in the anchors' order (h, w, anchor) and concatenated: one focal and
    # one smooth-L1 over all anchors, divided once by the positive count.
    b = labels.shape[0]
    n_cls = cls_scores[0].shape[1] // NUM_ANCHORS
    score = torch.cat([s.permute(0, 2, 3, 1).reshape(b, -1, n_cls) for s in cls_scores], dim=1)
    pred = torch.cat([p.permute(0, 2, 3, 1).reshape(b, -1, 4) for p in bbox_preds], dim=1)
    avg = (labels != n_cls).sum(dim=1).clamp(min=1).sum()
    target = F.one_hot(labels, n_cls + 1)[..., :n_cls].to(score.dtype)
    p = score.sigmoid()
    pt = (1 - p) * target + p * (1 - target)
    focal = (0.25 * target + 0.75 * (1 - target)) * pt.pow(2.0)
    loss_cls = (F.binary_cross_entropy_with_logits(score, target, reduction='none') * focal
                * label_weights[..., None]).sum() / avg
    diff = (pred - bbox_targets).abs()
    smooth = torch.where(diff < 0.11, 0.5 * diff * diff / 0.11, diff - 0.5 * 0.11)
    return loss_cls + (smooth * bbox_weights).sum() / avg


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, n_cls, grids = {"small": (2, 4, ((8, 8), (4, 4), (2, 2))),
                       "bench": (2, 80, ((64, 64), (32, 32), (16, 16), (8, 8), (4, 4)))}[size]
    a = NUM_ANCHORS
    n_anchors = sum(h * w * a for h, w in grids)
    cls_scores = [(torch.randn(b, a * n_cls, h, w, generator=g, dtype=dtype) - 2).requires_grad_() for h, w in grids]
    bbox_preds = [(0.5 * torch.randn(b, a * 4, h, w, generator=g, dtype=dtype)).requires_grad_() for h, w in grids]
    # the assigner's output: a few positives, many negatives, some ignored (weight 0)
    r = torch.rand(b, n_anchors, generator=g)
    labels = torch.where(r < 0.05, torch.randint(0, n_cls, (b, n_anchors), generator=g), n_cls)
    label_weights = (r > 0.1).to(dtype) + (r < 0.05).to(dtype)
    pos = (labels < n_cls).to(dtype)[..., None].expand(-1, -1, 4)
    bbox_targets = 0.5 * torch.randn(b, n_anchors, 4, generator=g, dtype=dtype) * pos
    return cls_scores, bbox_preds, labels, label_weights, bbox_targets, pos.contiguous()
