"""Binary Lovasz hinge loss, per image, as bermanmaxim/LovaszSoftmax writes it in
pytorch/lovasz_losses.py: a generator over ``zip(logits, labels)`` fed to a hand-written
``mean`` (``iter``/``next``/``enumerate``), each image flattened with its void pixels removed
(ragged: a different number per image), the hinge errors sorted per image, and the Lovasz
gradient built with cumsums and an in-place ``jaccard[1:p] = ...`` under ``if p > 1``.
Paraphrased; ``.float()`` on labels becomes the logits' dtype so float64 runs stay float64."""
import torch
import torch.nn.functional as F
from torch.autograd import Variable

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "logits [3, 12, 12], ~10% void", "bench": "logits [16, 128, 128], ~10% void"},
    "source": "bermanmaxim/LovaszSoftmax:pytorch/lovasz_losses.py",
    "field": "segmentation",
    "target_args": ("labels",),
}

IGNORE = 255


def lovasz_grad(gt_sorted):
    """Gradient of the Lovasz extension w.r.t. sorted errors (Alg. 1 of the paper)."""
    p = len(gt_sorted)
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1. - intersection / union
    if p > 1:  # cover 1-pixel case
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
    return jaccard


def lovasz_hinge_flat(logits, labels):
    if len(labels) == 0:
        # only void pixels, the gradients should be 0
        return logits.sum() * 0.
    signs = 2. * labels.to(logits.dtype) - 1.
    errors = (1. - logits * Variable(signs))
    errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
    perm = perm.data
    gt_sorted = labels[perm].to(logits.dtype)
    grad = lovasz_grad(gt_sorted)
    loss = torch.dot(F.relu(errors_sorted), Variable(grad))
    return loss


def flatten_binary_scores(scores, labels, ignore=None):
    scores = scores.view(-1)
    labels = labels.view(-1)
    if ignore is None:
        return scores, labels
    valid = (labels != ignore)
    vscores = scores[valid]
    vlabels = labels[valid]
    return vscores, vlabels


def mean(values, empty=0):
    """nanmean-free mean that accepts generators."""
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


def lovasz_hinge(logits, labels, per_image=True, ignore=None):
    if per_image:
        loss = mean(lovasz_hinge_flat(*flatten_binary_scores(log.unsqueeze(0), lab.unsqueeze(0), ignore))
                    for log, lab in zip(logits, labels))
    else:
        loss = lovasz_hinge_flat(*flatten_binary_scores(logits, labels, ignore))
    return loss


def naive(logits, labels):
    return lovasz_hinge(logits, labels, per_image=True, ignore=IGNORE)


def expert(logits, labels):
    # Void pixels get error -inf: they sort last, add nothing to the valid prefix's cumsums, and
    # relu(-inf) = 0 removes them from the dot product (with a zero gradient).
    b = logits.shape[0]
    logits, labels = logits.reshape(b, -1), labels.reshape(b, -1)
    valid = labels != IGNORE
    gt = (labels == 1).to(logits.dtype)
    errors = torch.where(valid, 1. - logits * (2. * gt - 1.), float("-inf"))
    errors_sorted, perm = errors.sort(dim=1, descending=True)
    gt_sorted = gt.gather(1, perm)
    gts = gt_sorted.sum(dim=1, keepdim=True)
    jaccard = 1. - (gts - gt_sorted.cumsum(1)) / (gts + (1 - gt_sorted).cumsum(1))
    grad = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)
    return (F.relu(errors_sorted) * grad).sum(dim=1).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, hw = {"small": (3, 12), "bench": (16, 128)}[size]
    logits = torch.randn(b, hw, hw, generator=g, dtype=dtype).requires_grad_()
    labels = torch.randint(0, 2, (b, hw, hw), generator=g)
    labels[torch.rand(b, hw, hw, generator=g) < 0.1] = IGNORE  # void border pixels
    return logits, labels
