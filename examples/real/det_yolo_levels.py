"""YOLOv3 loss as eriklindernoren/PyTorch-YOLOv3 writes it in pytorchyolo/utils/loss.py (after
ultralytics): ``build_targets`` loops over the model's YOLO layers writing ``gain[2:6]`` in place,
filters targets by anchor ratio and clamps grid indices with ``clamp_``; ``compute_loss`` loops
over the list of per-level predictions (different grid sizes) with ``if num_targets:``, CIoU
box loss, objectness targets written in place from ``iou.detach()``, a side effect on
``model.gr``, and float32 ``torch.zeros(1)`` accumulators updated with ``+=`` and ``*=``.
Paraphrased; ``clamp_`` gets ``int`` bounds (torch 2 refuses float tensor bounds on a long tensor)."""
import math
from types import SimpleNamespace

import torch
import torch.nn as nn

CASE = {
    "loops": "kept",
    "elementwise": False,
    "sizes": {"small": "3 levels (4x4, 2x2, 1x1 grids), 2 images, 4 classes, 6 targets",
              "bench": "3 levels (52, 26, 13 grids), 8 images, 80 classes, 64 targets"},
    "source": "eriklindernoren/PyTorch-YOLOv3:pytorchyolo/utils/loss.py",
    "field": "detection",
    "target_args": ("targets",),
}

ANCHORS = [((10, 13), (16, 30), (33, 23)), ((30, 61), (62, 45), (59, 119)), ((116, 90), (156, 198), (373, 326))]
STRIDES = [8, 16, 32]
BALANCE = [4.0, 1.0, 0.4, 0.1]


def bbox_iou(box1, box2, x1y1x2y2=True, GIoU=False, DIoU=False, CIoU=False, eps=1e-9):
    # box1 is 4 x n, box2 is n x 4
    box2 = box2.T
    if x1y1x2y2:
        b1_x1, b1_y1, b1_x2, b1_y2 = box1[0], box1[1], box1[2], box1[3]
        b2_x1, b2_y1, b2_x2, b2_y2 = box2[0], box2[1], box2[2], box2[3]
    else:  # xywh -> xyxy
        b1_x1, b1_x2 = box1[0] - box1[2] / 2, box1[0] + box1[2] / 2
        b1_y1, b1_y2 = box1[1] - box1[3] / 2, box1[1] + box1[3] / 2
        b2_x1, b2_x2 = box2[0] - box2[2] / 2, box2[0] + box2[2] / 2
        b2_y1, b2_y2 = box2[1] - box2[3] / 2, box2[1] + box2[3] / 2

    inter = (torch.min(b1_x2, b2_x2) - torch.max(b1_x1, b2_x1)).clamp(0) * \
            (torch.min(b1_y2, b2_y2) - torch.max(b1_y1, b2_y1)).clamp(0)
    w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1 + eps
    w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1 + eps
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if GIoU or DIoU or CIoU:
        cw = torch.max(b1_x2, b2_x2) - torch.min(b1_x1, b2_x1)  # enclosing box
        ch = torch.max(b1_y2, b2_y2) - torch.min(b1_y1, b2_y1)
        if CIoU or DIoU:
            c2 = cw ** 2 + ch ** 2 + eps
            rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4
            if DIoU:
                return iou - rho2 / c2
            elif CIoU:
                v = (4 / math.pi ** 2) * torch.pow(torch.atan(w2 / h2) - torch.atan(w1 / h1), 2)
                with torch.no_grad():
                    alpha = v / ((1 + eps) - iou + v)
                return iou - (rho2 / c2 + v * alpha)
        else:
            c_area = cw * ch + eps
            return iou - (c_area - union) / c_area
    else:
        return iou


def smooth_BCE(eps=0.1):
    return 1.0 - 0.5 * eps, 0.5 * eps


def build_targets(p, targets, model):
    # targets are (image, class, x, y, w, h), normalised
    na, nt = 3, targets.shape[0]
    tcls, tbox, indices, anch = [], [], [], []
    gain = torch.ones(7, device=targets.device)
    ai = torch.arange(na, device=targets.device).float().view(na, 1).repeat(1, nt)
    targets = torch.cat((targets.repeat(na, 1, 1), ai[:, :, None]), 2)  # append anchor indices

    g = 0.5
    off = torch.tensor([[0, 0]], device=targets.device).float() * g

    for i, yolo_layer in enumerate(model.yolo_layers):
        anchors = yolo_layer.anchors / yolo_layer.stride
        gain[2:6] = torch.tensor(p[i].shape)[[3, 2, 3, 2]]  # xyxy gain
        t = targets * gain
        if nt:
            r = t[:, :, 4:6] / anchors[:, None]  # wh ratio
            j = torch.max(r, 1. / r).max(2)[0] < 4
            t = t[j]
            gxy = t[:, 2:4]
            gxi = gain[[2, 3]] - gxy
            j, k = ((gxy % 1. < g) & (gxy > 1.)).T
            l, m = ((gxi % 1. < g) & (gxi > 1.)).T
            j = torch.stack((torch.ones_like(j),))
            t = t.repeat((off.shape[0], 1, 1))[j]
            offsets = (torch.zeros_like(gxy)[None] + off[:, None])[j]
        else:
            t = targets[0]
            offsets = 0

        b, c = t[:, :2].long().T  # image, class
        gxy = t[:, 2:4]
        gwh = t[:, 4:6]
        gij = (gxy - offsets).long()
        gi, gj = gij.T
        a = t[:, 6].long()
        indices.append((b, a, gj.clamp_(0, int(gain[3]) - 1), gi.clamp_(0, int(gain[2]) - 1)))
        tbox.append(torch.cat((gxy - gij, gwh), 1))
        anch.append(anchors[a])
        tcls.append(c)
    return tcls, tbox, indices, anch


def compute_loss(predictions, targets, model):
    device = targets.device
    lcls, lbox, lobj = torch.zeros(1, device=device), torch.zeros(1, device=device), torch.zeros(1, device=device)
    tcls, tbox, indices, anchors = build_targets(predictions, targets, model)

    BCEcls = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0], device=device))
    BCEobj = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0], device=device))
    cp, cn = smooth_BCE(eps=0.0)

    for layer_index, layer_predictions in enumerate(predictions):
        b, anchor, grid_j, grid_i = indices[layer_index]
        tobj = torch.zeros_like(layer_predictions[..., 0], device=device)
        num_targets = b.shape[0]
        if num_targets:
            ps = layer_predictions[b, anchor, grid_j, grid_i]
            pxy = ps[:, :2].sigmoid() * 2. - 0.5
            pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anchors[layer_index]
            pbox = torch.cat((pxy, pwh), 1)
            iou = bbox_iou(pbox.T, tbox[layer_index], x1y1x2y2=False, CIoU=True)
            lbox += (1.0 - iou).mean()

            model.gr = 1
            tobj[b, anchor, grid_j, grid_i] = (1.0 - model.gr) + model.gr * iou.detach().clamp(0).type(tobj.dtype)

            t = torch.full_like(ps[:, 5:], cn, device=device)
            t[range(num_targets), tcls[layer_index]] = cp
            lcls += BCEcls(ps[:, 5:], t)

        lobj += BCEobj(layer_predictions[..., 4], tobj) * BALANCE[layer_index]

    lbox *= 0.05 * (3. / 2)
    lobj *= (3. / 2)
    lcls *= 0.31
    batch_size = tobj.shape[0]
    loss = lbox + lobj + lcls
    return loss * batch_size, torch.cat((lbox, lobj, lcls, loss)).detach().cpu()


def make_model():
    layers = [SimpleNamespace(anchors=torch.tensor(a, dtype=torch.float32), stride=s) for a, s in zip(ANCHORS, STRIDES)]
    return SimpleNamespace(yolo_layers=layers, gr=1.0)


def naive(predictions, targets):
    loss, _ = compute_loss(predictions, targets, make_model())
    return loss[0]


def expert(predictions, targets):
    # The matched cells of all levels in one batch: one CIoU and one classification BCE over the
    # concatenation, each level's mean as per-element weights. Objectness keeps one fused BCE per
    # level (the grids differ; concatenating them would copy every prediction). The target
    # assignment (a loop over 3 anchor sets, target-only) is the repository's.
    tcls, tbox, indices, anchors = build_targets(predictions, targets, make_model())
    ps = torch.cat([p[b, a, gj, gi] for p, (b, a, gj, gi) in zip(predictions, indices)])
    counts = [len(b) for b, _, _, _ in indices]
    n_cls = predictions[0].shape[-1] - 5
    per_target = torch.cat([torch.full((n,), 1.0 / max(n, 1), dtype=ps.dtype) for n in counts])
    pbox = torch.cat((ps[:, :2].sigmoid() * 2. - 0.5, (ps[:, 2:4].sigmoid() * 2) ** 2 * torch.cat(anchors)), 1)
    iou = bbox_iou(pbox.T, torch.cat(tbox), x1y1x2y2=False, CIoU=True)
    t = torch.zeros_like(ps[:, 5:])
    t[torch.arange(len(ps)), torch.cat(tcls)] = 1.0
    bce = nn.functional.binary_cross_entropy_with_logits
    obj = 0
    for level, (p, (b, a, gj, gi), level_iou) in enumerate(zip(predictions, indices, iou.detach().split(counts))):
        tobj = torch.zeros_like(p[..., 0])
        tobj[b, a, gj, gi] = level_iou.clamp(0).type(tobj.dtype)
        obj = obj + bce(p[..., 4], tobj) * BALANCE[level]
    lbox, lobj, lcls = torch.zeros(1), torch.zeros(1), torch.zeros(1)   # float32, as the repository's
    lbox += ((1.0 - iou) * per_target).sum()
    lobj += obj
    lcls += (bce(ps[:, 5:], t, reduction="none").sum(dim=1) * per_target).sum() / n_cls
    lbox *= 0.05 * (3. / 2)
    lobj *= (3. / 2)
    lcls *= 0.31
    return ((lbox + lobj + lcls) * predictions[0].shape[0])[0]


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, img, n_cls, nt = {"small": (2, 32, 4, 6), "bench": (8, 416, 80, 64)}[size]
    predictions = [(0.5 * torch.randn(b, 3, img // s, img // s, 5 + n_cls, generator=g, dtype=dtype)).requires_grad_()
                   for s in STRIDES]
    image = torch.randint(0, b, (nt, 1), generator=g).to(dtype)
    cls = torch.randint(0, n_cls, (nt, 1), generator=g).to(dtype)
    xy = 0.05 + 0.9 * torch.rand(nt, 2, generator=g, dtype=dtype)
    wh = 0.05 + 0.5 * torch.rand(nt, 2, generator=g, dtype=dtype)
    targets = torch.cat((image, cls, xy, wh), 1)
    return predictions, targets
