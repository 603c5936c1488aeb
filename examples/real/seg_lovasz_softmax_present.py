"""Multi-class Lovasz-Softmax loss as bermanmaxim/LovaszSoftmax writes it in
pytorch/lovasz_losses.py (``only_present=True``, batch-wide): probabilities permuted and
flattened to ``[P, C]``, void pixels removed with ``valid.nonzero().squeeze()``, then a loop over
classes that skips absent classes with ``continue`` on ``fg.sum() == 0``, sorts each class's
absolute errors, and dots them with the Lovasz gradient; the kept losses go through a
hand-written ``mean``. Paraphrased; the float32 ``.float()`` masks follow the input dtype."""
import torch
from torch.autograd import Variable

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "probas [2, 5, 10, 10], classes 0-3 present", "bench": "probas [8, 21, 80, 80], 19 present"},
    "source": "bermanmaxim/LovaszSoftmax:pytorch/lovasz_losses.py",
    "field": "segmentation",
    "target_args": ("labels",),
}

IGNORE = 255


def lovasz_grad(gt_sorted):
    p = len(gt_sorted)
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1. - intersection / union
    if p > 1:  # cover 1-pixel case
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
    return jaccard


def mean(values, empty=0):
    values = iter(values)
    try:
        n = 1
        acc = next(values)
    except StopIteration:
        return empty
    for n, v in enumerate(values, 2):
        acc += v
    if n == 1:
        return acc
    return acc / n


def lovasz_softmax_flat(probas, labels, only_present=False):
    if probas.numel() == 0:
        # only void pixels, the gradients should be 0
        return probas * 0.
    C = probas.size(1)

    losses = []
    for c in range(C):
        fg = (labels == c).to(probas.dtype)  # foreground for class c
        if only_present and fg.sum() == 0:
            continue
        errors = (Variable(fg) - probas[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        perm = perm.data
        fg_sorted = fg[perm]
        losses.append(torch.dot(errors_sorted, Variable(lovasz_grad(fg_sorted))))
    return mean(losses)


def flatten_probas(probas, labels, ignore=None):
    B, C, H, W = probas.size()
    probas = probas.permute(0, 2, 3, 1).contiguous().view(-1, C)  # B * H * W, C = P, C
    labels = labels.view(-1)
    if ignore is None:
        return probas, labels
    valid = (labels != ignore)
    vprobas = probas[valid.nonzero().squeeze()]
    vlabels = labels[valid]
    return vprobas, vlabels


def lovasz_softmax(probas, labels, only_present=False, per_image=False, ignore=None):
    if per_image:
        loss = mean(lovasz_softmax_flat(*flatten_probas(prob.unsqueeze(0), lab.unsqueeze(0), ignore),
                                        only_present=only_present)
                    for prob, lab in zip(probas, labels))
    else:
        loss = lovasz_softmax_flat(*flatten_probas(probas, labels, ignore), only_present=only_present)
    return loss


def naive(logits, labels):
    probas = logits.softmax(dim=1)
    return lovasz_softmax(probas, labels, only_present=True, ignore=IGNORE)


def expert(logits, labels):
    # All classes at once: one column sort of the [P, C] error matrix, cumsums down the columns.
    c = logits.shape[1]
    probas = logits.softmax(dim=1).permute(0, 2, 3, 1).reshape(-1, c)
    labels = labels.reshape(-1)
    valid = labels != IGNORE
    probas, labels = probas[valid], labels[valid]
    fg = (labels[:, None] == torch.arange(c)).to(probas.dtype)       # [P, C]
    errors_sorted, perm = (fg - probas).abs().sort(dim=0, descending=True)
    fg_sorted = fg.gather(0, perm)
    gts = fg_sorted.sum(dim=0)
    jaccard = 1. - (gts - fg_sorted.cumsum(0)) / (gts + (1 - fg_sorted).cumsum(0))
    grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]], dim=0)
    per_class = (errors_sorted * grad).sum(dim=0)
    present = gts > 0
    return per_class[present].sum() / present.sum()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, c, hw, present = {"small": (2, 5, 10, 4), "bench": (8, 21, 80, 19)}[size]
    logits = torch.randn(b, c, hw, hw, generator=g, dtype=dtype).requires_grad_()
    labels = torch.randint(0, present, (b, hw, hw), generator=g)  # the last classes never occur
    labels[torch.rand(b, hw, hw, generator=g) < 0.1] = IGNORE
    return logits, labels
