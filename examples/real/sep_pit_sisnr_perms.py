"""Permutation-invariant SI-SNR training loss for speech separation, as the funcwj/conv-tasnet
trainer computes it (nnet/libs/trainer.py, ``SiSnrTrainer.compute_loss``): the separated and the
reference signals arrive as lists of ``[N, S]`` tensors, one per speaker; a nested helper averages
``sisnr(ests[s], refs[t])`` over ``enumerate(permute)`` with the builtin ``sum`` of a list, a
list comprehension runs it for every ``itertools.permutations`` order, ``torch.stack`` and a max
over permutations keep the best assignment per utterance, and the loss is its negated mean."""
from itertools import permutations

import torch

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "3 speakers x [4, 64] (utterances, samples)",
              "bench": "3 speakers x [8, 32000] (4 s at 8 kHz)"},
    "source": "funcwj/conv-tasnet:nnet/libs/trainer.py",
    "field": "speech separation",
    "target_args": ("refs",),
}


def sisnr(x, s, eps=1e-8):
    """x: separated signal, N x S; s: reference signal, N x S; returns N SI-SNRs in dB."""

    def l2norm(mat, keepdim=False):
        return torch.norm(mat, dim=-1, keepdim=keepdim)

    if x.shape != s.shape:
        raise RuntimeError("Dimention mismatch when calculate si-snr, {} vs {}".format(x.shape, s.shape))
    x_zm = x - torch.mean(x, dim=-1, keepdim=True)
    s_zm = s - torch.mean(s, dim=-1, keepdim=True)
    t = torch.sum(x_zm * s_zm, dim=-1, keepdim=True) * s_zm / (l2norm(s_zm, keepdim=True) ** 2 + eps)
    return 20 * torch.log10(eps + l2norm(t) / (l2norm(x_zm - t) + eps))


def naive(ests, refs):
    num_spks = len(refs)

    def sisnr_loss(permute):
        # for one permute
        return sum([sisnr(ests[s], refs[t]) for s, t in enumerate(permute)]) / len(permute)

    N = ests[0].size(0)
    sisnr_mat = torch.stack([sisnr_loss(p) for p in permutations(range(num_spks))])
    max_perutt, _ = torch.max(sisnr_mat, dim=0)
    return -torch.sum(max_perutt) / N


def expert(ests, refs):
    eps = 1e-8
    x = torch.stack(ests)  # [C, N, S]
    s = torch.stack(refs)
    c, n = x.shape[:2]
    x_zm = (x - x.mean(dim=-1, keepdim=True)).unsqueeze(1)  # [C, 1, N, S]: estimate i
    s_zm = (s - s.mean(dim=-1, keepdim=True)).unsqueeze(0)  # [1, C, N, S]: reference j
    t = (x_zm * s_zm).sum(-1, keepdim=True) * s_zm / (s_zm.norm(dim=-1, keepdim=True) ** 2 + eps)
    pair = 20 * torch.log10(eps + t.norm(dim=-1) / ((x_zm - t).norm(dim=-1) + eps))  # [C, C, N]
    perms = torch.tensor(list(permutations(range(c))))  # [P, C]
    per_perm = pair[torch.arange(c), perms].sum(dim=1) / c  # [P, N]
    return -per_perm.max(dim=0).values.sum() / n


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    c, n, s = {"small": (3, 4, 64), "bench": (3, 8, 32000)}[size]
    refs = [torch.randn(n, s, generator=g, dtype=dtype) for _ in range(c)]
    # Estimates: a noisy, shuffled version of the references, so one permutation clearly wins.
    ests = [(refs[(k + 1) % c] + 0.5 * torch.randn(n, s, generator=g, dtype=dtype)).requires_grad_()
            for k in range(c)]
    return ests, refs
