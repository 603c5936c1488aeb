"""SSD MultiBox loss as amdegroot/ssd.pytorch writes it in layers/modules/multibox_loss.py with
layers/box_utils.py: the targets arrive as a list with one ``[num_objs, 5]`` tensor per image
(ragged), and a loop over images calls ``match``, which writes into preallocated ``loc_t`` and
``conf_t`` in place, uses ``squeeze_``/``index_fill_`` on its own temporaries and a Python loop
``best_truth_idx[best_prior_idx[j]] = j``; then hard negative mining zeroes positives in place,
sorts twice, and sums smooth-L1 and cross-entropy over the selected priors."""
import torch
import torch.nn as nn
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "2 images, 117 priors, 4 classes, 1-3 objects",
              "bench": "16 images, 5820 priors, 21 classes, 1-8 objects"},
    "source": "amdegroot/ssd.pytorch:layers/modules/multibox_loss.py",
    "field": "detection",
    "target_args": ("priors", "targets"),
}

VARIANCE = [0.1, 0.2]


def point_form(boxes):
    return torch.cat((boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2), 1)


def intersect(box_a, box_b):
    A = box_a.size(0)
    B = box_b.size(0)
    max_xy = torch.min(box_a[:, 2:].unsqueeze(1).expand(A, B, 2), box_b[:, 2:].unsqueeze(0).expand(A, B, 2))
    min_xy = torch.max(box_a[:, :2].unsqueeze(1).expand(A, B, 2), box_b[:, :2].unsqueeze(0).expand(A, B, 2))
    inter = torch.clamp((max_xy - min_xy), min=0)
    return inter[:, :, 0] * inter[:, :, 1]


def jaccard(box_a, box_b):
    inter = intersect(box_a, box_b)
    area_a = ((box_a[:, 2] - box_a[:, 0]) * (box_a[:, 3] - box_a[:, 1])).unsqueeze(1).expand_as(inter)
    area_b = ((box_b[:, 2] - box_b[:, 0]) * (box_b[:, 3] - box_b[:, 1])).unsqueeze(0).expand_as(inter)
    union = area_a + area_b - inter
    return inter / union


def encode(matched, priors, variances):
    g_cxcy = (matched[:, :2] + matched[:, 2:]) / 2 - priors[:, :2]
    g_cxcy /= (variances[0] * priors[:, 2:])
    g_wh = (matched[:, 2:] - matched[:, :2]) / priors[:, 2:]
    g_wh = torch.log(g_wh) / variances[1]
    return torch.cat([g_cxcy, g_wh], 1)


def match(threshold, truths, priors, variances, labels, loc_t, conf_t, idx):
    overlaps = jaccard(truths, point_form(priors))
    # best prior for each ground truth, best ground truth for each prior
    best_prior_overlap, best_prior_idx = overlaps.max(1, keepdim=True)
    best_truth_overlap, best_truth_idx = overlaps.max(0, keepdim=True)
    best_truth_idx.squeeze_(0)
    best_truth_overlap.squeeze_(0)
    best_prior_idx.squeeze_(1)
    best_prior_overlap.squeeze_(1)
    best_truth_overlap.index_fill_(0, best_prior_idx, 2)  # ensure best prior
    # ensure every gt matches with its prior of max overlap
    for j in range(best_prior_idx.size(0)):
        best_truth_idx[best_prior_idx[j]] = j
    matches = truths[best_truth_idx]
    conf = labels[best_truth_idx] + 1
    conf[best_truth_overlap < threshold] = 0  # background
    loc = encode(matches, priors, variances)
    loc_t[idx] = loc
    conf_t[idx] = conf


def log_sum_exp(x):
    x_max = x.data.max()
    return torch.log(torch.sum(torch.exp(x - x_max), 1, keepdim=True)) + x_max


class MultiBoxLoss(nn.Module):
    def __init__(self, num_classes, overlap_thresh, prior_for_matching, bkg_label, neg_mining, neg_pos,
                 neg_overlap, encode_target, use_gpu=False):
        super(MultiBoxLoss, self).__init__()
        self.use_gpu = use_gpu
        self.num_classes = num_classes
        self.threshold = overlap_thresh
        self.background_label = bkg_label
        self.encode_target = encode_target
        self.use_prior_for_matching = prior_for_matching
        self.do_neg_mining = neg_mining
        self.negpos_ratio = neg_pos
        self.neg_overlap = neg_overlap
        self.variance = VARIANCE

    def forward(self, predictions, targets):
        loc_data, conf_data, priors = predictions
        num = loc_data.size(0)
        priors = priors[:loc_data.size(1), :]
        num_priors = (priors.size(0))
        num_classes = self.num_classes

        # match priors and ground truth boxes; the repository's torch.Tensor(...) is float32
        loc_t = loc_data.new_empty(num, num_priors, 4)
        conf_t = torch.LongTensor(num, num_priors)
        for idx in range(num):
            truths = targets[idx][:, :-1].data
            labels = targets[idx][:, -1].data
            defaults = priors.data
            match(self.threshold, truths, defaults, self.variance, labels, loc_t, conf_t, idx)
        if self.use_gpu:
            loc_t = loc_t.cuda()
            conf_t = conf_t.cuda()
        loc_t.requires_grad_(False)

        pos = conf_t > 0
        num_pos = pos.sum(dim=1, keepdim=True)

        # localization loss (smooth L1) over positives
        pos_idx = pos.unsqueeze(pos.dim()).expand_as(loc_data)
        loc_p = loc_data[pos_idx].view(-1, 4)
        loc_t = loc_t[pos_idx].view(-1, 4)
        loss_l = F.smooth_l1_loss(loc_p, loc_t, reduction='sum')

        # max conf across batch for hard negative mining
        batch_conf = conf_data.view(-1, self.num_classes)
        loss_c = log_sum_exp(batch_conf) - batch_conf.gather(1, conf_t.view(-1, 1))

        # hard negative mining
        loss_c[pos.view(-1, 1)] = 0  # filter out pos boxes for now
        loss_c = loss_c.view(num, -1)
        _, loss_idx = loss_c.sort(1, descending=True)
        _, idx_rank = loss_idx.sort(1)
        num_pos = pos.long().sum(1, keepdim=True)
        num_neg = torch.clamp(self.negpos_ratio * num_pos, max=pos.size(1) - 1)
        neg = idx_rank < num_neg.expand_as(idx_rank)

        # confidence loss over positives and mined negatives
        pos_idx = pos.unsqueeze(2).expand_as(conf_data)
        neg_idx = neg.unsqueeze(2).expand_as(conf_data)
        conf_p = conf_data[(pos_idx + neg_idx).gt(0)].view(-1, self.num_classes)
        targets_weighted = conf_t[(pos + neg).gt(0)]
        loss_c = F.cross_entropy(conf_p, targets_weighted, reduction='sum')

        N = num_pos.data.sum()
        loss_l /= N.float()
        loss_c /= N.float()
        return loss_l, loss_c


def naive(loc_data, conf_data, priors, targets):
    criterion = MultiBoxLoss(conf_data.shape[-1], 0.5, True, 0, True, 3, 0.5, False)
    loss_l, loss_c = criterion((loc_data, conf_data, priors), targets)
    return loss_l + loss_c


def expert(loc_data, conf_data, priors, targets):
    # Matching for all images at once on zero-padded truths (padding gets overlap -1, never a
    # best match); the mining and the losses are the repository's, on the same targets.
    num, num_priors, num_classes = conf_data.shape
    counts = torch.tensor([len(t) for t in targets])
    truths = torch.nn.utils.rnn.pad_sequence(list(targets), batch_first=True)   # [B, M, 5]
    valid = torch.arange(truths.shape[1]) < counts[:, None]
    corners = point_form(priors)
    lo = torch.max(truths[:, :, None, :2], corners[None, None, :, :2])
    hi = torch.min(truths[:, :, None, 2:4], corners[None, None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(dim=-1)                                    # [B, M, P]
    area_t = ((truths[..., 2] - truths[..., 0]) * (truths[..., 3] - truths[..., 1]))[..., None]
    area_p = (corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1])
    overlaps = torch.where(valid[..., None], inter / (area_t + area_p - inter), -1.0)
    best_prior_idx = overlaps.argmax(dim=2)                                        # [B, M]
    best_truth_overlap, best_truth_idx = overlaps.max(dim=1)                       # [B, P]
    b, j = valid.nonzero(as_tuple=True)
    best_truth_overlap[b, best_prior_idx[b, j]] = 2
    best_truth_idx[b, best_prior_idx[b, j]] = j
    matches = truths.gather(1, best_truth_idx[..., None].expand(-1, -1, 5))        # [B, P, 5]
    conf_t = torch.where(best_truth_overlap < 0.5, 0, matches[..., 4].long() + 1)
    g_cxcy = ((matches[..., :2] + matches[..., 2:4]) / 2 - priors[:, :2]) / (VARIANCE[0] * priors[:, 2:])
    g_wh = torch.log((matches[..., 2:4] - matches[..., :2]) / priors[:, 2:]) / VARIANCE[1]
    loc_t = torch.cat([g_cxcy, g_wh], dim=-1)

    pos = conf_t > 0
    num_pos = pos.sum(dim=1, keepdim=True)
    loss_l = F.smooth_l1_loss(loc_data[pos], loc_t[pos], reduction='sum')
    with torch.no_grad():
        batch_conf = conf_data.reshape(-1, num_classes)
        mined = log_sum_exp(batch_conf) - batch_conf.gather(1, conf_t.view(-1, 1))
        mined = mined.masked_fill(pos.view(-1, 1), 0).view(num, -1)
        idx_rank = mined.sort(1, descending=True)[1].sort(1)[1]
        neg = idx_rank < torch.clamp(3 * num_pos, max=num_priors - 1)
    keep = pos | neg
    loss_c = F.cross_entropy(conf_data[keep], conf_t[keep], reduction='sum')
    n = num_pos.sum().to(loc_data.dtype)
    return loss_l / n + loss_c / n


def make_priors(grids, sizes):
    out = []
    for grid, s in zip(grids, sizes):
        c = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
        cy, cx = torch.meshgrid(c, c, indexing="ij")
        for w, h in ((s, s), (s * 1.4, s / 1.4), (s / 1.4, s * 1.4)):
            out.append(torch.stack((cx, cy, torch.full_like(cx, w), torch.full_like(cx, h)), -1).reshape(-1, 4))
    return torch.cat(out).clamp(max=1)


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, c, max_objs, grids, sizes = {
        "small": (2, 4, 3, (5, 3, 2, 1), (0.2, 0.4, 0.6, 0.9)),
        "bench": (16, 21, 8, (38, 19, 10, 5, 3, 1), (0.1, 0.2, 0.37, 0.54, 0.71, 0.88)),
    }[size]
    priors = make_priors(grids, sizes).to(dtype)
    p = priors.shape[0]
    targets = []
    for _ in range(b):
        n = int(torch.randint(1, max_objs + 1, (1,), generator=g))
        xy = 0.1 + 0.5 * torch.rand(n, 2, generator=g, dtype=dtype)
        wh = 0.1 + 0.3 * torch.rand(n, 2, generator=g, dtype=dtype)
        label = torch.randint(0, c - 1, (n, 1), generator=g).to(dtype)
        targets.append(torch.cat([xy, xy + wh, label], dim=1))   # [n, 5]: corners and class
    loc_data = (0.5 * torch.randn(b, p, 4, generator=g, dtype=dtype)).requires_grad_()
    conf_data = torch.randn(b, p, c, generator=g, dtype=dtype).requires_grad_()
    return loc_data, conf_data, priors, targets
