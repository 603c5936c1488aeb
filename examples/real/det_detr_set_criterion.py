"""DETR set-prediction loss as facebookresearch/detr writes it in models/detr.py (``SetCriterion``
with util/box_ops.py): targets are a list of per-image dicts (ragged box counts), the matched
indices are gathered with per-image list comprehensions (``torch.full_like(src, i)`` and
``t["labels"][J]`` over ``zip(targets, indices)``), ``get_loss`` dispatches through a dict with an
``assert``, GIoU asserts on tensor values, and the auxiliary decoder layers are a loop over a list
of dicts whose losses are renamed ``k + f'_{i}'`` and summed through ``weight_dict``."""
import torch
import torch.nn.functional as F
from torch import nn

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "3 decoder layers, 2 images, 10 queries, 5 classes, 1-4 boxes",
              "bench": "6 decoder layers, 16 images, 100 queries, 91 classes, 1-20 boxes"},
    "source": "facebookresearch/detr:models/detr.py",
    "field": "detection",
    "target_args": ("targets", "indices"),
}

WEIGHTS = {'loss_ce': 1, 'loss_bbox': 5, 'loss_giou': 2}
EOS_COEF = 0.1


def box_cxcywh_to_xyxy(x):
    x_c, y_c, w, h = x.unbind(-1)
    b = [(x_c - 0.5 * w), (y_c - 0.5 * h), (x_c + 0.5 * w), (y_c + 0.5 * h)]
    return torch.stack(b, dim=-1)


def box_area(boxes):
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1, boxes2):
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    union = area1[:, None] + area2 - inter
    return inter / union, union


def generalized_box_iou(boxes1, boxes2):
    # degenerate boxes give inf / nan results, so do an early check
    assert (boxes1[:, 2:] >= boxes1[:, :2]).all()
    assert (boxes2[:, 2:] >= boxes2[:, :2]).all()
    iou, union = box_iou(boxes1, boxes2)
    lt = torch.min(boxes1[:, None, :2], boxes2[:, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[:, 2:])
    wh = (rb - lt).clamp(min=0)
    area = wh[:, :, 0] * wh[:, :, 1]
    return iou - (area - union) / area


@torch.no_grad()
def accuracy(output, target, topk=(1,)):
    if target.numel() == 0:
        return [torch.zeros([], device=output.device)]
    maxk = max(topk)
    batch_size = target.size(0)
    _, pred = output.topk(maxk, 1, True, True)
    pred = pred.t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    res = []
    for k in topk:
        correct_k = correct[:k].view(-1).float().sum(0)
        res.append(correct_k.mul_(100.0 / batch_size))
    return res


class PrecomputedMatcher:
    """Stands in for the Hungarian matcher (scipy's linear_sum_assignment, not installed here):
    returns the assignment of each call in turn, last decoder layer first as SetCriterion asks."""
    def __init__(self, indices):
        self.calls = iter(indices)

    def __call__(self, outputs, targets):
        return next(self.calls)


class SetCriterion(nn.Module):
    def __init__(self, num_classes, matcher, weight_dict, eos_coef, losses):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        self.losses = losses
        empty_weight = torch.ones(self.num_classes + 1)
        empty_weight[-1] = self.eos_coef
        self.register_buffer('empty_weight', empty_weight)

    def loss_labels(self, outputs, targets, indices, num_boxes, log=True):
        assert 'pred_logits' in outputs
        src_logits = outputs['pred_logits']
        idx = self._get_src_permutation_idx(indices)
        target_classes_o = torch.cat([t["labels"][J] for t, (_, J) in zip(targets, indices)])
        target_classes = torch.full(src_logits.shape[:2], self.num_classes, dtype=torch.int64, device=src_logits.device)
        target_classes[idx] = target_classes_o
        loss_ce = F.cross_entropy(src_logits.transpose(1, 2), target_classes, self.empty_weight.to(src_logits.dtype))
        losses = {'loss_ce': loss_ce}
        if log:
            losses['class_error'] = 100 - accuracy(src_logits[idx], target_classes_o)[0]
        return losses

    def loss_boxes(self, outputs, targets, indices, num_boxes):
        assert 'pred_boxes' in outputs
        idx = self._get_src_permutation_idx(indices)
        src_boxes = outputs['pred_boxes'][idx]
        target_boxes = torch.cat([t['boxes'][i] for t, (_, i) in zip(targets, indices)], dim=0)
        loss_bbox = F.l1_loss(src_boxes, target_boxes, reduction='none')
        losses = {}
        losses['loss_bbox'] = loss_bbox.sum() / num_boxes
        loss_giou = 1 - torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(target_boxes)))
        losses['loss_giou'] = loss_giou.sum() / num_boxes
        return losses

    def _get_src_permutation_idx(self, indices):
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for (src, _) in indices])
        return batch_idx, src_idx

    def get_loss(self, loss, outputs, targets, indices, num_boxes, **kwargs):
        loss_map = {'labels': self.loss_labels, 'boxes': self.loss_boxes}
        assert loss in loss_map, f'do you really want to compute {loss} loss?'
        return loss_map[loss](outputs, targets, indices, num_boxes, **kwargs)

    def forward(self, outputs, targets):
        outputs_without_aux = {k: v for k, v in outputs.items() if k != 'aux_outputs'}
        indices = self.matcher(outputs_without_aux, targets)

        num_boxes = sum(len(t["labels"]) for t in targets)
        num_boxes = torch.as_tensor([num_boxes], dtype=torch.float, device=next(iter(outputs.values())).device)
        num_boxes = torch.clamp(num_boxes, min=1).item()

        losses = {}
        for loss in self.losses:
            losses.update(self.get_loss(loss, outputs, targets, indices, num_boxes))

        if 'aux_outputs' in outputs:
            for i, aux_outputs in enumerate(outputs['aux_outputs']):
                indices = self.matcher(aux_outputs, targets)
                for loss in self.losses:
                    kwargs = {}
                    if loss == 'labels':
                        kwargs = {'log': False}  # logging only for the last layer
                    l_dict = self.get_loss(loss, aux_outputs, targets, indices, num_boxes, **kwargs)
                    l_dict = {k + f'_{i}': v for k, v in l_dict.items()}
                    losses.update(l_dict)
        return losses


def naive(pred_logits, pred_boxes, targets, indices):
    # the model's output dict: the last decoder layer, and the others as 'aux_outputs'
    outputs = {'pred_logits': pred_logits[-1], 'pred_boxes': pred_boxes[-1],
               'aux_outputs': [{'pred_logits': a, 'pred_boxes': b} for a, b in zip(pred_logits[:-1], pred_boxes[:-1])]}
    weight_dict = dict(WEIGHTS)
    for i in range(len(pred_logits) - 1):
        weight_dict.update({k + f'_{i}': v for k, v in WEIGHTS.items()})
    criterion = SetCriterion(pred_logits.shape[-1] - 1, PrecomputedMatcher(indices), weight_dict, EOS_COEF,
                             ['labels', 'boxes'])
    loss_dict = criterion({**outputs}, targets)
    return sum(loss_dict[k] * weight_dict[k] for k in loss_dict.keys() if k in weight_dict)


def expert(pred_logits, pred_boxes, targets, indices):
    # Every decoder layer at once: one scatter of the matched classes into [L, B, Q], one weighted
    # cross-entropy per layer from a single reduction, and the matched boxes' L1 and GIoU
    # (pairwise, not the diagonal of a full matrix) for all layers together.
    n_layers, _, _, n_cls1 = pred_logits.shape
    order = [n_layers - 1] + list(range(n_layers - 1))          # the matcher's call order
    layer, batch, src, labels, boxes = [], [], [], [], []
    for call, per_image in zip(order, indices):
        for i, ((s, j), t) in enumerate(zip(per_image, targets)):
            layer.append(torch.full_like(s, call))
            batch.append(torch.full_like(s, i))
            src.append(s)
            labels.append(t["labels"][j])
            boxes.append(t["boxes"][j])
    layer, batch, src, labels, boxes = (torch.cat(x) for x in (layer, batch, src, labels, boxes))
    target_classes = torch.full(pred_logits.shape[:3], n_cls1 - 1, dtype=torch.int64)
    target_classes[layer, batch, src] = labels
    weight = torch.ones(n_cls1, dtype=pred_logits.dtype)
    weight[-1] = EOS_COEF
    nll = F.cross_entropy(pred_logits.permute(0, 3, 1, 2), target_classes, reduction='none')
    w = weight[target_classes]
    loss_ce = ((nll * w).sum(dim=(1, 2)) / w.sum(dim=(1, 2))).sum()

    num_boxes = max(sum(len(t["labels"]) for t in targets), 1)
    src_boxes = pred_boxes[layer, batch, src]
    a, b = box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(boxes)
    area_a, area_b = box_area(a), box_area(b)
    inter = (torch.min(a[:, 2:], b[:, 2:]) - torch.max(a[:, :2], b[:, :2])).clamp(min=0).prod(dim=1)
    union = area_a + area_b - inter
    hull = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).clamp(min=0).prod(dim=1)
    giou = inter / union - (hull - union) / hull
    loss_bbox = (src_boxes - boxes).abs().sum() / num_boxes
    loss_giou = (1 - giou).sum() / num_boxes
    return WEIGHTS['loss_ce'] * loss_ce + WEIGHTS['loss_bbox'] * loss_bbox + WEIGHTS['loss_giou'] * loss_giou


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n_layers, b, q, c, max_boxes = {"small": (3, 2, 10, 5, 4), "bench": (6, 16, 100, 91, 20)}[size]
    pred_logits = torch.randn(n_layers, b, q, c + 1, generator=g, dtype=dtype).requires_grad_()
    centers = 0.2 + 0.6 * torch.rand(n_layers, b, q, 2, generator=g, dtype=dtype)
    sizes = 0.05 + 0.3 * torch.rand(n_layers, b, q, 2, generator=g, dtype=dtype)
    pred_boxes = torch.cat([centers, sizes], -1).requires_grad_()   # sigmoid outputs: cx, cy, w, h
    targets, counts = [], []
    for _ in range(b):
        n = int(torch.randint(1, max_boxes + 1, (1,), generator=g))
        counts.append(n)
        box = torch.cat([0.2 + 0.6 * torch.rand(n, 2, generator=g, dtype=dtype),
                         0.05 + 0.3 * torch.rand(n, 2, generator=g, dtype=dtype)], -1)
        targets.append({"labels": torch.randint(0, c, (n,), generator=g), "boxes": box})
    # one assignment per decoder layer (last layer first): sorted query rows, permuted targets,
    # the shape of linear_sum_assignment's answer
    indices = [[(torch.randperm(q, generator=g)[:n].sort().values, torch.randperm(n, generator=g)) for n in counts]
               for _ in range(n_layers)]
    return pred_logits, pred_boxes, targets, indices
