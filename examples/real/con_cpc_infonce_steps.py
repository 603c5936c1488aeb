"""Contrastive Predictive Coding InfoNCE as jefflai108/Contrastive-Predictive-Coding-PyTorch
writes it in src/model/model.py (``CDCK2.forward``, the loss half): a random time ``t_samples``
drawn inside the forward, ``torch.empty`` buffers filled row by row in a loop over future steps
(``encode_samples[i-1] = z[:, t+i, :]``, ``pred[i] = self.Wk[i](c_t)``), then a loop over steps
scoring every batch pair with ``torch.mm`` and adding the log-softmax diagonal to ``nce``, with an
``argmax`` accuracy and in-place ``nce /= -1.*batch*timestep``. Paraphrased: the buffers take the
input dtype (the repository's are float32) and the encoder/GRU outputs are inputs."""
import numpy as np
import torch
import torch.nn as nn

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "batch 4, 20 frames, 3 steps, z 16 / c 8", "bench": "batch 64, 128 frames, 12 steps, z 512 / c 256"},
    "source": "jefflai108/Contrastive-Predictive-Coding-PyTorch:src/model/model.py",
    "field": "contrastive learning",
}


class CPCLoss(nn.Module):
    def __init__(self, timestep, seq_len, z_dim, c_dim):
        super(CPCLoss, self).__init__()
        self.seq_len = seq_len
        self.timestep = timestep
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.Wk = nn.ModuleList([nn.Linear(c_dim, z_dim) for i in range(timestep)])
        self.softmax = nn.Softmax(dim=1)
        self.lsoftmax = nn.LogSoftmax(dim=1)

    def forward(self, z, context):
        batch = z.size()[0]
        t_samples = torch.randint(self.seq_len - self.timestep, size=(1,)).long()  # random time stamp
        nce = 0
        encode_samples = torch.empty((self.timestep, batch, self.z_dim), dtype=z.dtype)
        for i in np.arange(1, self.timestep + 1):
            encode_samples[i - 1] = z[:, t_samples + i, :].view(batch, self.z_dim)
        c_t = context[:, t_samples, :].view(batch, self.c_dim)
        pred = torch.empty((self.timestep, batch, self.z_dim), dtype=z.dtype)
        for i in np.arange(0, self.timestep):
            linear = self.Wk[i]
            pred[i] = linear(c_t)
        for i in np.arange(0, self.timestep):
            total = torch.mm(encode_samples[i], torch.transpose(pred[i], 0, 1))
            correct = torch.sum(torch.eq(torch.argmax(self.softmax(total), dim=0), torch.arange(0, batch)))
            nce += torch.sum(torch.diag(self.lsoftmax(total)))
        nce /= -1. * batch * self.timestep
        accuracy = 1. * correct.item() / batch
        return accuracy, nce


def naive(z, context, weight, bias):
    timestep, z_dim, c_dim = weight.shape
    with torch.device("meta"):  # the trained weights come from the caller: build without initialising
        head = CPCLoss(timestep, z.shape[1], z_dim, c_dim)
    params = {f"Wk.{i}.{name}": p[i] for i in range(timestep) for name, p in (("weight", weight), ("bias", bias))}
    _, nce = torch.func.functional_call(head, params, (z, context))
    return nce


def expert(z, context, weight, bias):
    # All steps at once: [T, B, Z] future codes against [T, B, Z] predictions in one bmm.
    timestep = weight.shape[0]
    batch = z.shape[0]
    t = int(torch.randint(z.shape[1] - timestep, size=(1,)))  # the same draw as the original's
    future = z[:, t + 1:t + 1 + timestep].transpose(0, 1)                  # [T, B, Z]
    pred = torch.einsum("bc,tzc->tbz", context[:, t], weight) + bias[:, None]
    total = torch.bmm(future, pred.transpose(1, 2))                         # [T, B, B]
    return -torch.diagonal(total.log_softmax(dim=2), dim1=1, dim2=2).sum() / (batch * timestep)


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, frames, steps, z_dim, c_dim = {"small": (4, 20, 3, 16, 8), "bench": (64, 128, 12, 512, 256)}[size]
    z = torch.randn(b, frames, z_dim, generator=g, dtype=dtype).requires_grad_()       # encoder output
    # A GRU's output is tanh-bounded. Unbounded randn context made the logits so spread that
    # ~6% of the softmax underflowed to float32 denormals, whose arithmetic is slow on some CPUs.
    context = torch.tanh(torch.randn(b, frames, c_dim, generator=g, dtype=dtype)).requires_grad_()
    weight = (torch.randn(steps, z_dim, c_dim, generator=g, dtype=dtype) / c_dim ** 0.5).requires_grad_()
    bias = (0.1 * torch.randn(steps, z_dim, generator=g, dtype=dtype)).requires_grad_()
    return z, context, weight, bias
