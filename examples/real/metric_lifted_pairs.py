"""Lifted structured embedding loss (Song et al., CVPR 2016) as bkj/pmet writes it in
losses/pytorch_lifted_loss.py: a double loop over sample pairs ``i < j`` reading both labels with
``.item()``, an ``if t_i == t_j`` branch for positive pairs, and per pair the log of both anchors'
summed ``exp(margin - d)`` over negatives (boolean row indexing), a squared hinge and a pair
counter. Paraphrased with one change: the distance is clamped before the square root (the
repository's ``relu(d).sqrt()`` has a NaN gradient on the unused zero diagonal)."""
import torch

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "12 embeddings of dim 4, 3 classes", "bench": "128 embeddings of dim 64, 32 classes"},
    "source": "bkj/pmet:losses/pytorch_lifted_loss.py",
    "field": "metric learning",
    "target_args": ("target",),
}


def lifted_loss(score, target, margin=1):
    loss = 0
    counter = 0

    bsz = score.size(0)
    mag = (score ** 2).sum(1).expand(bsz, bsz)
    sim = score.mm(score.transpose(0, 1))

    dist = (mag + mag.transpose(0, 1) - 2 * sim)
    dist = torch.nn.functional.relu(dist).clamp(min=1e-12).sqrt()

    for i in range(bsz):
        t_i = target[i].item()

        for j in range(i + 1, bsz):
            t_j = target[j].item()

            if t_i == t_j:
                # negative component
                l_ni = (margin - dist[i][target != t_i]).exp().sum()
                l_nj = (margin - dist[j][target != t_j]).exp().sum()
                l_n = (l_ni + l_nj).log()

                # positive component
                l_p = dist[i, j]

                loss += torch.nn.functional.relu(l_n + l_p) ** 2
                counter += 1

    return loss / (2 * counter)


def naive(score, target):
    return lifted_loss(score, target, margin=1)


def expert(score, target):
    sq = score.pow(2).sum(1)
    dist = (sq[None, :] + sq[:, None] - 2 * score @ score.t()).clamp(min=0).clamp(min=1e-12).sqrt()
    same = target[:, None] == target[None, :]
    l_n_row = ((1 - dist).exp() * ~same).sum(dim=1)                     # each anchor's negatives
    pairs = same & torch.ones_like(same).triu(diagonal=1)                # i < j, same label
    hinge = torch.relu((l_n_row[:, None] + l_n_row[None, :]).log() + dist) ** 2
    return torch.where(pairs, hinge, 0).sum() / (2 * pairs.sum())


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, d, c = {"small": (12, 4, 3), "bench": (128, 64, 32)}[size]
    target = torch.arange(c).repeat(n // c)
    target = target[torch.randperm(n, generator=g)]
    score = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    return score, target
