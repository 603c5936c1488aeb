"""Sequence cross entropy looping over time steps, as in RNN language models, captioning decoders
and CTC-free speech models trained with teacher forcing: ``for t in range(T): loss +=
F.cross_entropy(logits[:, t], targets[:, t])``, averaged over steps. Each step is a full
cross-entropy kernel on a [B, V] slice."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "logits [4, 6, 10] (batch, time, vocab)", "bench": "logits [32, 128, 1000]"},
}


def naive(logits, targets):
    T = logits.shape[1]
    loss = 0
    for t in range(T):
        loss += F.cross_entropy(logits[:, t], targets[:, t])
    return loss / T


def expert(logits, targets):
    # Every step has the same batch size, so the mean over steps of batch means is one global mean.
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, t, v = {"small": (4, 6, 10), "bench": (32, 128, 1000)}[size]
    logits = torch.randn(b, t, v, generator=g, dtype=dtype).requires_grad_()
    targets = torch.randint(0, v, (b, t), generator=g)
    return logits, targets


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
