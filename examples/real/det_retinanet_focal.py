"""RetinaNet focal + smooth-L1 loss as yhenon/pytorch-retinanet writes it in retinanet/losses.py:
an ``nn.Module`` looping over the images of the batch, dropping the ``-1`` padding rows of each
image's annotations (ragged), taking a ``continue`` branch for images without boxes, assigning
anchors by IoU with in-place writes into a fresh ``targets`` tensor, the ``torch.cuda`` branches,
and per-image regression targets for the positive anchors only, stacked and averaged at the end.
Paraphrased; the empty-image branch's ``append(x, min=1.0)`` (a TypeError) is a plain append."""
import torch
import torch.nn as nn
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "3 images, 192 anchors, 4 classes, <= 3 boxes (one image empty)",
              "bench": "8 images, 5184 anchors, 80 classes, <= 20 boxes"},
    "source": "yhenon/pytorch-retinanet:retinanet/losses.py",
    "field": "detection",
    "target_args": ("anchors", "annotations"),
}


def calc_iou(a, b):
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iw = torch.min(torch.unsqueeze(a[:, 2], dim=1), b[:, 2]) - torch.max(torch.unsqueeze(a[:, 0], 1), b[:, 0])
    ih = torch.min(torch.unsqueeze(a[:, 3], dim=1), b[:, 3]) - torch.max(torch.unsqueeze(a[:, 1], 1), b[:, 1])
    iw = torch.clamp(iw, min=0)
    ih = torch.clamp(ih, min=0)
    ua = torch.unsqueeze((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]), dim=1) + area - iw * ih
    ua = torch.clamp(ua, min=1e-8)
    intersection = iw * ih
    IoU = intersection / ua
    return IoU


class FocalLoss(nn.Module):

    def forward(self, classifications, regressions, anchors, annotations):
        alpha = 0.25
        gamma = 2.0
        batch_size = classifications.shape[0]
        classification_losses = []
        regression_losses = []

        anchor = anchors[0, :, :]
        anchor_widths = anchor[:, 2] - anchor[:, 0]
        anchor_heights = anchor[:, 3] - anchor[:, 1]
        anchor_ctr_x = anchor[:, 0] + 0.5 * anchor_widths
        anchor_ctr_y = anchor[:, 1] + 0.5 * anchor_heights

        for j in range(batch_size):
            classification = classifications[j, :, :]
            regression = regressions[j, :, :]

            bbox_annotation = annotations[j, :, :]
            bbox_annotation = bbox_annotation[bbox_annotation[:, 4] != -1]

            classification = torch.clamp(classification, 1e-4, 1.0 - 1e-4)

            if bbox_annotation.shape[0] == 0:
                targets = torch.zeros(classification.shape)
                alpha_factor = torch.ones(targets.shape) * alpha
                if torch.cuda.is_available():
                    alpha_factor = alpha_factor.cuda()
                alpha_factor = 1. - alpha_factor
                focal_weight = classification
                focal_weight = alpha_factor * torch.pow(focal_weight, gamma)
                bce = -((1.0 - targets) * torch.log(1.0 - classification))
                cls_loss = focal_weight * bce
                classification_losses.append(cls_loss.sum())
                regression_losses.append(torch.tensor(0).float())
                continue

            IoU = calc_iou(anchors[0, :, :], bbox_annotation[:, :4])  # num_anchors x num_annotations
            IoU_max, IoU_argmax = torch.max(IoU, dim=1)

            # classification targets: -1 ignore, 0 negative, 1 positive
            targets = torch.ones(classification.shape) * -1
            if torch.cuda.is_available():
                targets = targets.cuda()
            targets[torch.lt(IoU_max, 0.4), :] = 0
            positive_indices = torch.ge(IoU_max, 0.5)
            num_positive_anchors = positive_indices.sum()
            assigned_annotations = bbox_annotation[IoU_argmax, :]
            targets[positive_indices, :] = 0
            targets[positive_indices, assigned_annotations[positive_indices, 4].long()] = 1

            alpha_factor = torch.ones(targets.shape) * alpha
            alpha_factor = torch.where(torch.eq(targets, 1.), alpha_factor, 1. - alpha_factor)
            focal_weight = torch.where(torch.eq(targets, 1.), 1. - classification, classification)
            focal_weight = alpha_factor * torch.pow(focal_weight, gamma)

            bce = -(targets * torch.log(classification) + (1.0 - targets) * torch.log(1.0 - classification))
            cls_loss = focal_weight * bce
            cls_loss = torch.where(torch.ne(targets, -1.0), cls_loss, torch.zeros(cls_loss.shape))
            classification_losses.append(cls_loss.sum() / torch.clamp(num_positive_anchors.float(), min=1.0))

            # regression, positives only
            if positive_indices.sum() > 0:
                assigned_annotations = assigned_annotations[positive_indices, :]

                anchor_widths_pi = anchor_widths[positive_indices]
                anchor_heights_pi = anchor_heights[positive_indices]
                anchor_ctr_x_pi = anchor_ctr_x[positive_indices]
                anchor_ctr_y_pi = anchor_ctr_y[positive_indices]

                gt_widths = assigned_annotations[:, 2] - assigned_annotations[:, 0]
                gt_heights = assigned_annotations[:, 3] - assigned_annotations[:, 1]
                gt_ctr_x = assigned_annotations[:, 0] + 0.5 * gt_widths
                gt_ctr_y = assigned_annotations[:, 1] + 0.5 * gt_heights

                # clip widths to 1
                gt_widths = torch.clamp(gt_widths, min=1)
                gt_heights = torch.clamp(gt_heights, min=1)

                targets_dx = (gt_ctr_x - anchor_ctr_x_pi) / anchor_widths_pi
                targets_dy = (gt_ctr_y - anchor_ctr_y_pi) / anchor_heights_pi
                targets_dw = torch.log(gt_widths / anchor_widths_pi)
                targets_dh = torch.log(gt_heights / anchor_heights_pi)

                targets = torch.stack((targets_dx, targets_dy, targets_dw, targets_dh))
                targets = targets.t()
                targets = targets / torch.Tensor([[0.1, 0.1, 0.2, 0.2]])

                regression_diff = torch.abs(targets - regression[positive_indices, :])
                regression_loss = torch.where(
                    torch.le(regression_diff, 1.0 / 9.0),
                    0.5 * 9.0 * torch.pow(regression_diff, 2),
                    regression_diff - 0.5 / 9.0
                )
                regression_losses.append(regression_loss.mean())
            else:
                regression_losses.append(torch.tensor(0).float())

        return torch.stack(classification_losses).mean(dim=0, keepdim=True), \
            torch.stack(regression_losses).mean(dim=0, keepdim=True)


def naive(classifications, regressions, anchors, annotations):
    classification_loss, regression_loss = FocalLoss()(classifications, regressions, anchors, annotations)
    return classification_loss.mean() + regression_loss.mean()


def expert(classifications, regressions, anchors, annotations):
    # All images at once: padded annotations get IoU -1, so they are never an arg-max and an
    # image without boxes has every anchor negative, which is the repository's empty branch.
    anchor = anchors[0]
    aw, ah = anchor[:, 2] - anchor[:, 0], anchor[:, 3] - anchor[:, 1]
    ax, ay = anchor[:, 0] + 0.5 * aw, anchor[:, 1] + 0.5 * ah
    valid = annotations[..., 4] != -1                                         # [B, M]
    boxes = annotations[..., :4]
    iw = (torch.min(anchor[None, :, None, 2], boxes[:, None, :, 2])
          - torch.max(anchor[None, :, None, 0], boxes[:, None, :, 0])).clamp(min=0)
    ih = (torch.min(anchor[None, :, None, 3], boxes[:, None, :, 3])
          - torch.max(anchor[None, :, None, 1], boxes[:, None, :, 1])).clamp(min=0)
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    ua = ((aw * ah)[None, :, None] + area[:, None, :] - iw * ih).clamp(min=1e-8)
    iou = torch.where(valid[:, None, :], iw * ih / ua, -1.0)                  # [B, A, M]
    iou_max, iou_argmax = iou.max(dim=2)
    assigned = annotations.gather(1, iou_argmax[..., None].expand(-1, -1, 5))  # [B, A, 5]
    pos = iou_max >= 0.5
    ignored = (iou_max >= 0.4) & ~pos

    p = classifications.clamp(1e-4, 1.0 - 1e-4)
    is_one = F.one_hot(assigned[..., 4].long().clamp(min=0), p.shape[2]).bool() & pos[..., None]
    focal = torch.where(is_one, 0.25 * (1. - p) ** 2 * -torch.log(p), 0.75 * p ** 2 * -torch.log(1.0 - p))
    focal = torch.where(ignored[..., None], 0, focal)
    num_pos = pos.sum(dim=1)
    cls_loss = focal.sum(dim=(1, 2)) / num_pos.clamp(min=1)

    gw = assigned[..., 2] - assigned[..., 0]
    gh = assigned[..., 3] - assigned[..., 1]
    gx, gy = assigned[..., 0] + 0.5 * gw, assigned[..., 1] + 0.5 * gh
    target = torch.stack(((gx - ax) / aw, (gy - ay) / ah,
                          torch.log(gw.clamp(min=1) / aw), torch.log(gh.clamp(min=1) / ah)), dim=-1)
    target = target / torch.tensor([0.1, 0.1, 0.2, 0.2])  # float32 constants, as the repository's
    diff = (target - regressions).abs()
    smooth = torch.where(diff <= 1.0 / 9.0, 0.5 * 9.0 * diff ** 2, diff - 0.5 / 9.0)
    reg_loss = torch.where(pos[..., None], smooth, 0).sum(dim=(1, 2)) / (4 * num_pos).clamp(min=1)
    return cls_loss.mean() + reg_loss.mean()


def make_anchors(grid, stride, sizes):
    c = (torch.arange(grid, dtype=torch.float64) + 0.5) * stride
    cy, cx = torch.meshgrid(c, c, indexing="ij")
    out = [torch.stack((cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2), dim=-1).reshape(-1, 4) for s in sizes]
    return torch.cat(out)


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, grid, n_cls, max_boxes = {"small": (3, 8, 4, 3), "bench": (8, 24, 80, 20)}[size]
    anchor = make_anchors(grid, 16, (24, 32, 48)).to(dtype)                        # [A, 4]
    a = anchor.shape[0]
    annotations = -torch.ones(b, max_boxes, 5, dtype=dtype)
    for j in range(1, b):  # image 0 has no boxes
        n = int(torch.randint(1, max_boxes + 1, (1,), generator=g))
        picked = anchor[torch.randperm(a, generator=g)[:n]]
        jitter = 4 * torch.randn(n, 4, generator=g, dtype=dtype)  # boxes near anchors: some IoU >= 0.5
        annotations[j, :n, :4] = picked + jitter
        annotations[j, :n, 4] = torch.randint(0, n_cls, (n,), generator=g).to(dtype)
    classifications = torch.rand(b, a, n_cls, generator=g, dtype=dtype).requires_grad_()
    regressions = (0.1 * torch.randn(b, a, 4, generator=g, dtype=dtype)).requires_grad_()
    return classifications, regressions, anchor[None], annotations
