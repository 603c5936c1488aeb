"""SI-SNR with utterance-level PIT over padded batches, from kaituoxu/Conv-TasNet
(src/pit_criterion.py, ``cal_loss``): a ``get_mask`` helper builds the padding mask with a
Python loop over the batch (``mask[i, :, source_lengths[i]:] = 0``), the zero-mean step divides
by the true lengths and re-masks temporaries in place (``*=``), pairwise SI-SNRs are built by
broadcasting, and the best permutation comes from an einsum against one-hot permutation matrices
made with ``scatter_``. The loss is the negated mean of the best per-utterance SI-SNR."""
from itertools import permutations

import torch

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "source/estimate [4, 2, 80] (batch, speakers, samples), ragged lengths",
              "bench": "source/estimate [8, 3, 32000], ragged lengths"},
    "source": "kaituoxu/Conv-TasNet:src/pit_criterion.py",
    "field": "speech separation",
    "target_args": ("source", "source_lengths"),
}

EPS = 1e-8


def get_mask(source, source_lengths):
    """source: [B, C, T]; source_lengths: [B]; returns mask [B, 1, T]."""
    B, _, T = source.size()
    mask = source.new_ones((B, 1, T))
    for i in range(B):
        mask[i, :, source_lengths[i]:] = 0
    return mask


def cal_si_snr_with_pit(source, estimate_source, source_lengths):
    assert source.size() == estimate_source.size()
    B, C, T = source.size()
    mask = get_mask(source, source_lengths)
    estimate_source = estimate_source * mask  # the repository does this in place on the network output

    num_samples = source_lengths.view(-1, 1, 1).float()  # [B, 1, 1]
    mean_target = torch.sum(source, dim=2, keepdim=True) / num_samples
    mean_estimate = torch.sum(estimate_source, dim=2, keepdim=True) / num_samples
    zero_mean_target = source - mean_target
    zero_mean_estimate = estimate_source - mean_estimate
    zero_mean_target *= mask
    zero_mean_estimate *= mask

    s_target = torch.unsqueeze(zero_mean_target, dim=1)  # [B, 1, C, T]
    s_estimate = torch.unsqueeze(zero_mean_estimate, dim=2)  # [B, C, 1, T]
    pair_wise_dot = torch.sum(s_estimate * s_target, dim=3, keepdim=True)  # [B, C, C, 1]
    s_target_energy = torch.sum(s_target ** 2, dim=3, keepdim=True) + EPS  # [B, 1, C, 1]
    pair_wise_proj = pair_wise_dot * s_target / s_target_energy  # [B, C, C, T]
    e_noise = s_estimate - pair_wise_proj
    pair_wise_si_snr = torch.sum(pair_wise_proj ** 2, dim=3) / (torch.sum(e_noise ** 2, dim=3) + EPS)
    pair_wise_si_snr = 10 * torch.log10(pair_wise_si_snr + EPS)  # [B, C, C]

    perms = source.new_tensor(list(permutations(range(C))), dtype=torch.long)
    index = torch.unsqueeze(perms, 2)
    perms_one_hot = source.new_zeros((*perms.size(), C)).scatter_(2, index, 1)
    # The repository casts the one-hot with .float(), which breaks einsum for float64 inputs.
    snr_set = torch.einsum("bij,pij->bp", [pair_wise_si_snr, perms_one_hot])
    max_snr_idx = torch.argmax(snr_set, dim=1)
    max_snr, _ = torch.max(snr_set, dim=1, keepdim=True)
    max_snr /= C
    return max_snr, perms, max_snr_idx


def naive(source, estimate_source, source_lengths):
    max_snr, perms, max_snr_idx = cal_si_snr_with_pit(source, estimate_source, source_lengths)
    loss = 0 - torch.mean(max_snr)
    return loss


def expert(source, estimate_source, source_lengths):
    b, c, t = source.shape
    mask = (torch.arange(t) < source_lengths[:, None]).to(source.dtype)[:, None, :]  # [B, 1, T]
    n = source_lengths.view(-1, 1, 1).to(source.dtype)
    est = estimate_source * mask
    target = (source - source.sum(2, keepdim=True) / n) * mask
    est = (est - est.sum(2, keepdim=True) / n) * mask
    s_target, s_est = target.unsqueeze(1), est.unsqueeze(2)
    proj = (s_est * s_target).sum(3, keepdim=True) * s_target / ((s_target ** 2).sum(3, keepdim=True) + EPS)
    ratio = (proj ** 2).sum(3) / (((s_est - proj) ** 2).sum(3) + EPS)
    pair = 10 * torch.log10(ratio + EPS)  # [B, C, C]
    perms = torch.tensor(list(permutations(range(c))))  # [P, C]
    snr_set = pair[:, torch.arange(c), perms].sum(-1)  # [B, P]
    return -(snr_set.max(dim=1).values / c).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, c, t = {"small": (4, 2, 80), "bench": (8, 3, 32000)}[size]
    source_lengths = torch.randint(t // 2, t + 1, (b,), generator=g)
    source_lengths[0] = t
    source = torch.randn(b, c, t, generator=g, dtype=dtype)
    source = source * (torch.arange(t) < source_lengths[:, None, None])  # padded with zeros
    estimate_source = (source.flip(1) + 0.5 * torch.randn(b, c, t, generator=g, dtype=dtype)).requires_grad_()
    return source, estimate_source, source_lengths
