"""Per-step NLL accumulated on a stateful loss object, from IBM/pytorch-seq2seq
(seq2seq/loss/loss.py, ``Loss.eval_batch`` and ``NLLLoss``): the decoder returns a list of
``[B, V]`` log-probability tensors, ``eval_batch`` walks them with ``enumerate`` and scores step
``step`` against column ``step + 1`` of the target (column 0 is the start symbol), and each call
adds a class-weighted ``nn.NLLLoss`` (the padding index has weight 0, set in place on the weight
vector) into ``self.acc_loss`` while counting ``self.norm_term``; the trainer backpropagates
``acc_loss``, the sum over steps of the per-step weighted means."""
import torch
import torch.nn as nn

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "6 steps x [4, 30] log-probs", "bench": "50 steps x [64, 10000] log-probs"},
    "source": "IBM/pytorch-seq2seq:seq2seq/loss/loss.py",
    "field": "nlp sequence",
    "target_args": ("target_variable",),
}

PAD = 1


class Loss(object):
    def __init__(self, name, criterion):
        self.name = name
        self.criterion = criterion
        if not issubclass(type(self.criterion), nn.modules.loss._Loss):
            raise ValueError("Criterion has to be a subclass of torch.nn._Loss")
        self.acc_loss = 0
        self.norm_term = 0

    def reset(self):
        self.acc_loss = 0
        self.norm_term = 0

    def eval_batch(self, outputs, target_variable):
        for step, step_output in enumerate(outputs):
            batch_size = target_variable.size(0)
            target = target_variable[:, step + 1]
            self._eval_batch(step_output.contiguous().view(batch_size, -1), target)

    def _eval_batch(self, output, target):
        raise NotImplementedError


class NLLLoss(Loss):
    _NAME = "Avg NLLLoss"

    def __init__(self, weight=None, mask=None, reduction="mean"):
        self.mask = mask
        self.reduction = reduction
        if mask is not None:
            if weight is None:
                raise ValueError("Must provide weight with a mask.")
            weight[mask] = 0
        super(NLLLoss, self).__init__(self._NAME, nn.NLLLoss(weight=weight, reduction=reduction))

    def _eval_batch(self, outputs, target):
        self.acc_loss += self.criterion(outputs, target)
        self.norm_term += 1


def naive(decoder_outputs, target_variable):
    weight = torch.ones(decoder_outputs[0].size(1), dtype=decoder_outputs[0].dtype)
    loss = NLLLoss(weight, PAD)
    loss.reset()
    loss.eval_batch(decoder_outputs, target_variable)
    return loss.acc_loss


def expert(decoder_outputs, target_variable):
    logp = torch.stack(decoder_outputs)  # [T, B, V]
    target = target_variable[:, 1:logp.shape[0] + 1].T  # [T, B]
    keep = target != PAD
    nll = -logp.gather(2, target.unsqueeze(2)).squeeze(2)
    return (torch.where(keep, nll, 0.0).sum(1) / keep.sum(1)).sum()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    t, b, v = {"small": (6, 4, 30), "bench": (50, 64, 10000)}[size]
    decoder_outputs = [torch.randn(b, v, generator=g, dtype=dtype).log_softmax(1).requires_grad_()
                       for _ in range(t)]
    target_variable = torch.randint(3, v, (b, t + 1), generator=g)
    target_variable[:, 0] = 2  # <sos>
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0] = t
    target_variable[:, 1:][torch.arange(t)[None, :] >= lengths[:, None]] = PAD
    return decoder_outputs, target_variable
