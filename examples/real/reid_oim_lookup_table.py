"""Online instance matching (OIM) loss for person search / re-ID as Cysu/open-reid writes it in
reid/loss/oim.py: a custom ``autograd.Function`` scores features against a lookup table of
identity features, and its backward loops over the batch updating the table in place,
``lut[y] = 0.5 * (lut[y] + x)`` one sample at a time (a recurrence when an identity repeats);
the ``nn.Module`` keeps the table as a buffer, scales the scores in place (``inputs *=
scalar``) and applies cross-entropy. Paraphrased: the repository's legacy non-static Function
is written in the ``ctx`` style torch 2 requires."""
import torch
import torch.nn.functional as F
from torch import nn, autograd

CASE = {
    "loops": "kept",
    "elementwise": False,
    "sizes": {"small": "12 features of dim 8, 5 identities", "bench": "128 features of dim 256, 5532 identities"},
    "source": "Cysu/open-reid:reid/loss/oim.py",
    "field": "re-identification",
    "target_args": ("targets", "lut"),
}

SCALAR = 30.0


class OIM(autograd.Function):
    @staticmethod
    def forward(ctx, inputs, targets, lut):
        ctx.save_for_backward(inputs, targets)
        ctx.lut = lut
        outputs = inputs.mm(lut.t())
        return outputs

    @staticmethod
    def backward(ctx, grad_outputs):
        inputs, targets = ctx.saved_tensors
        grad_inputs = None
        if ctx.needs_input_grad[0]:
            grad_inputs = grad_outputs.mm(ctx.lut)
        # memory update, in batch order: a later sample of the same identity sees the earlier one
        for x, y in zip(inputs, targets):
            ctx.lut[y] = 0.5 * (ctx.lut[y] + x)
        return grad_inputs, None, None


def oim(inputs, targets, lut):
    return OIM.apply(inputs, targets, lut)


class OIMLoss(nn.Module):
    def __init__(self, num_features, num_classes, scalar=1.0, weight=None, size_average=True):
        super(OIMLoss, self).__init__()
        self.num_features = num_features
        self.num_classes = num_classes
        self.scalar = scalar
        self.weight = weight
        self.size_average = size_average
        self.register_buffer('lut', torch.zeros(num_classes, num_features))

    def forward(self, inputs, targets):
        inputs = oim(inputs, targets, self.lut)
        inputs *= self.scalar
        loss = F.cross_entropy(inputs, targets, weight=self.weight, reduction='mean' if self.size_average else 'sum')
        return loss, inputs


def naive(inputs, targets, lut):
    criterion = OIMLoss(inputs.shape[1], lut.shape[0], scalar=SCALAR)
    criterion.lut = lut  # the trained lookup table (a buffer, updated by every backward)
    loss, _ = criterion(inputs, targets)
    return loss


class BatchedOIM(autograd.Function):
    """The same scores and gradient; the sequential halving is closed-form: an identity seen k
    times ends at 0.5**k * lut[y] plus each sample weighted 0.5**(k - its rank among them)."""
    @staticmethod
    def forward(ctx, inputs, targets, lut):
        ctx.save_for_backward(inputs, targets)
        ctx.lut = lut
        return inputs.mm(lut.t())

    @staticmethod
    def backward(ctx, grad_outputs):
        inputs, targets = ctx.saved_tensors
        lut = ctx.lut
        grad_inputs = grad_outputs.mm(lut) if ctx.needs_input_grad[0] else None
        same = targets[:, None] == targets[None, :]
        earlier = same.tril(diagonal=-1).sum(dim=1)                  # rank among the same identity
        count = same.sum(dim=1)
        weight = 0.5 ** (count - earlier).to(inputs.dtype)
        seen = torch.bincount(targets, minlength=lut.shape[0]).to(lut.dtype)
        lut.mul_((0.5 ** seen)[:, None]).index_add_(0, targets, (weight[:, None] * inputs).to(lut.dtype))
        return grad_inputs, None, None


def expert(inputs, targets, lut):
    return F.cross_entropy(BatchedOIM.apply(inputs, targets, lut) * SCALAR, targets)


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, d, c = {"small": (12, 8, 5), "bench": (128, 256, 5532)}[size]
    inputs = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1).requires_grad_()
    targets = torch.randint(0, c, (n,), generator=g)
    lut = F.normalize(torch.randn(c, d, generator=g, dtype=dtype), dim=1)
    return inputs, targets, lut
