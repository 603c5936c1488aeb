"""Sequence cross entropy over time steps with a ``while`` loop that stops at the first step where
every sequence is padding, as in seq2seq decoders trained with teacher forcing on padded batches:
``t = 0; while t < T: if (targets[:, t] == PAD).all(): break; loss = loss +
F.cross_entropy(logits[:, t], targets[:, t], ignore_index=PAD, reduction="sum"); count = count +
(targets[:, t] != PAD).sum(); t += 1``, the summed loss divided by the number of real tokens.
Each step is a full cross-entropy kernel on a [B, V] slice; the ``while`` runs as a ``for`` over
a range and the steps before the one that stops are computed at once (loop distribution)."""
import torch
import torch.nn.functional as F

PAD = 0

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "logits [4, 6, 10] (batch, time, vocab)", "bench": "logits [32, 128, 1000]"},
}


def naive(logits, targets):
    T = logits.shape[1]
    loss = 0
    count = 0
    t = 0
    while t < T:
        if (targets[:, t] == PAD).all():
            break
        loss = loss + F.cross_entropy(logits[:, t], targets[:, t], ignore_index=PAD,
                                      reduction="sum")
        count = count + (targets[:, t] != PAD).sum()
        t += 1
    return loss / count


def expert(logits, targets):
    # the steps after the first all-padding step are all padding here (``make_inputs``): one
    # global mean over the real tokens
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=PAD)


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, t, v = {"small": (4, 6, 10), "bench": (32, 128, 1000)}[size]
    logits = torch.randn(b, t, v, generator=g, dtype=dtype).requires_grad_()
    lengths = torch.randint(t // 2, t - 1, (b,), generator=g)  # every batch ends padded
    targets = torch.randint(1, v, (b, t), generator=g)
    targets[torch.arange(t)[None, :] >= lengths[:, None]] = PAD
    return logits, targets


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
