"""Length-masked sequence cross entropy of the seq2seq chatbot realJustinLee/dumb-chatbot
(masked_cross_entropy.py): the batch's lengths arrive as a Python list and are turned into a
tensor inside the loss (``torch.tensor(length)``, moved to CUDA when a config flag says so), the
logits are flattened, log-softmaxed and gathered, and ``sequence_mask`` builds the validity mask
from an expanded ``arange`` compared against the expanded lengths (``.data.max()``,
``clone().detach()``); the masked sum is divided by the total length."""
import torch
from torch.nn import functional

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "logits [4, 9, 25] (batch, time, vocab), lengths list",
              "bench": "logits [64, 20, 20000], lengths list"},
    "source": "realJustinLee/dumb-chatbot:masked_cross_entropy.py",
    "field": "nlp sequence",
    "target_args": ("target", "length"),
}

USE_CUDA = False  # config['TRAIN']['CUDA'] in the repository


def sequence_mask(sequence_length, max_len=None):
    if max_len is None:
        max_len = sequence_length.data.max()
    batch_size = sequence_length.size(0)
    seq_range = torch.arange(0, max_len).long()
    seq_range_expand = seq_range.unsqueeze(0).expand(batch_size, max_len)
    seq_range_expand = seq_range_expand.clone().detach()
    if sequence_length.is_cuda:
        seq_range_expand = seq_range_expand.cuda()
    seq_length_expand = (sequence_length.unsqueeze(1).expand_as(seq_range_expand))
    return seq_range_expand < seq_length_expand


def naive(logic, target, length):
    length = torch.tensor(length)
    if USE_CUDA:
        length = length.cuda()
    logic_flat = logic.view(-1, logic.size(-1))
    log_probability_flat = functional.log_softmax(logic_flat, dim=1)
    target_flat = target.view(-1, 1)
    losses_flat = -torch.gather(log_probability_flat, dim=1, index=target_flat)
    losses = losses_flat.view(*target.size())
    mask = sequence_mask(sequence_length=length, max_len=target.size(1))
    losses = losses * mask.float()
    loss = losses.sum() / length.float().sum()
    return loss


def expert(logic, target, length):
    lengths = torch.tensor(length)
    mask = torch.arange(target.size(1)) < lengths[:, None]
    nll = functional.cross_entropy(logic.transpose(1, 2), target, reduction="none")  # [B, T]
    return torch.where(mask, nll, 0.0).sum() / lengths.sum()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, t, v = {"small": (4, 9, 25), "bench": (64, 20, 20000)}[size]
    logic = torch.randn(b, t, v, generator=g, dtype=dtype).requires_grad_()
    target = torch.randint(0, v, (b, t), generator=g)
    length = sorted(torch.randint(1, t + 1, (b,), generator=g).tolist(), reverse=True)  # pack order
    return logic, target, length
