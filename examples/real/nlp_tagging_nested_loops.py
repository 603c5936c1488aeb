"""Masked token-tagging NLL written as two nested Python loops, from the address element tagger
frankhjh/Address_Element_Analysis (loss.py, ``my_loss``): an ``nn.Module`` keeps the padding tag
in ``self.mask_idx``; ``forward`` visits every (sentence, position) pair, skips padding with an
``if`` on a tensor comparison, reads the gold tag back to Python with ``int(target[i][j])`` to index
the softmax output, accumulates ``-torch.log`` of that probability and counts the real tokens in a
Python int; the loss is the sum divided by the count. A CRF-free sequence labelling loss."""
import torch
from torch import nn

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "output [3, 8, 6] (batch, seq_len, tags)", "bench": "output [32, 64, 12]"},
    "source": "frankhjh/Address_Element_Analysis:loss.py",
    "field": "nlp sequence",
    "target_args": ("target",),
}


class my_loss(nn.Module):
    def __init__(self, mask_idx):
        super(my_loss, self).__init__()
        self.mask_idx = mask_idx

    def forward(self, output, target):
        # output: (batch_size, seq_len, output_size) probabilities; target: (batch_size, seq_len)
        loss = 0
        count = 0
        batch_size = target.size(0)
        seq_len = target.size(1)

        for i in range(batch_size):
            for j in range(seq_len):
                if target[i][j] != self.mask_idx:
                    loss += -torch.log(output[i][j][int(target[i][j])])
                    count += 1

        return loss / count


def naive(output, target):
    criterion = my_loss(mask_idx=0)
    return criterion(output, target)


def expert(output, target):
    keep = target != 0
    picked = output.gather(2, target.unsqueeze(2)).squeeze(2)
    nll = -torch.log(torch.where(keep, picked, 1.0))
    return nll.sum() / keep.sum()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, t, k = {"small": (3, 8, 6), "bench": (32, 64, 12)}[size]
    output = torch.randn(b, t, k, generator=g, dtype=dtype).softmax(-1).requires_grad_()
    target = torch.randint(1, k, (b, t), generator=g)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    target[torch.arange(t)[None, :] >= lengths[:, None]] = 0  # padding tag
    return output, target
