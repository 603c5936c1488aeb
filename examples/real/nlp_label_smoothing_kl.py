"""Label-smoothed KL loss of the Annotated Transformer (harvardnlp/annotated-transformer,
the_annotated_transformer.py, ``LabelSmoothing`` and ``SimpleLossCompute``): the smoothed target
distribution is built by in-place ops on a clone of the log-probabilities (``fill_``,
``scatter_``, a zeroed padding column, and ``index_fill_`` on the rows found by
``torch.nonzero(target == padding_idx)`` behind an ``if mask.dim() > 0``), stored on
``self.true_dist``, and compared with a summed ``nn.KLDivLoss``; the loss computer applies the
generator (linear layer plus log-softmax), flattens, and divides by the token count ``norm``."""
import torch
import torch.nn as nn
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "x [3, 7, 16] (batch, time, d_model), vocab 11",
              "bench": "x [32, 64, 512], vocab 8000"},
    "source": "harvardnlp/annotated-transformer:the_annotated_transformer.py",
    "field": "nlp sequence",
    "target_args": ("y", "norm"),
}


class LabelSmoothing(nn.Module):
    def __init__(self, size, padding_idx, smoothing=0.0):
        super(LabelSmoothing, self).__init__()
        self.criterion = nn.KLDivLoss(reduction="sum")
        self.padding_idx = padding_idx
        self.confidence = 1.0 - smoothing
        self.smoothing = smoothing
        self.size = size
        self.true_dist = None

    def forward(self, x, target):
        assert x.size(1) == self.size
        true_dist = x.data.clone()
        true_dist.fill_(self.smoothing / (self.size - 2))
        true_dist.scatter_(1, target.data.unsqueeze(1), self.confidence)
        true_dist[:, self.padding_idx] = 0
        mask = torch.nonzero(target.data == self.padding_idx)
        if mask.dim() > 0:
            true_dist.index_fill_(0, mask.squeeze(), 0.0)
        self.true_dist = true_dist
        return self.criterion(x, true_dist.clone().detach())


class SimpleLossCompute:
    def __init__(self, generator, criterion):
        self.generator = generator
        self.criterion = criterion

    def __call__(self, x, y, norm):
        x = self.generator(x)
        sloss = self.criterion(x.contiguous().view(-1, x.size(-1)), y.contiguous().view(-1)) / norm
        return sloss.data * norm, sloss


def naive(x, proj_weight, proj_bias, y, norm):
    def generator(h):
        return F.log_softmax(F.linear(h, proj_weight, proj_bias), dim=-1)

    criterion = LabelSmoothing(size=proj_weight.size(0), padding_idx=0, smoothing=0.1)
    loss_compute = SimpleLossCompute(generator, criterion)
    _, loss_node = loss_compute(x, y, norm)
    return loss_node


def expert(x, proj_weight, proj_bias, y, norm):
    logp = F.log_softmax(F.linear(x, proj_weight, proj_bias), dim=-1).flatten(0, 1)  # [N, V]
    target = y.flatten()
    v = logp.shape[1]
    off, on = 0.1 / (v - 2), 0.9
    real = (target != 0).unsqueeze(1)
    # KL(true || p) summed: sum of t * (log t - log p) over the entries where t > 0.
    t = torch.full_like(logp, off).scatter(1, target.unsqueeze(1), on)
    t[:, 0] = 0
    t = torch.where(real, t, 0.0)
    kl = torch.where(t > 0, t * (torch.log(torch.where(t > 0, t, 1.0)) - logp), 0.0)
    return kl.sum() / norm


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, t, d, v = {"small": (3, 7, 16, 11), "bench": (32, 64, 512, 8000)}[size]
    x = torch.randn(b, t, d, generator=g, dtype=dtype).requires_grad_()
    proj_weight = (torch.randn(v, d, generator=g, dtype=dtype) / d ** 0.5).requires_grad_()
    proj_bias = torch.zeros(v, dtype=dtype).requires_grad_()
    y = torch.randint(1, v, (b, t), generator=g)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    y[torch.arange(t)[None, :] >= lengths[:, None]] = 0  # padding
    norm = (y != 0).sum()  # batch.ntokens
    return x, proj_weight, proj_bias, y, norm
