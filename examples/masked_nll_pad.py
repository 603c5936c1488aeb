"""Token-level negative log-likelihood for a language model or seq2seq decoder with padded
batches: the sequence is flattened and a loop over tokens skips padding with ``if target[i] !=
pad:`` (a tensor compared to an int, used as a bool), accumulating ``-log_probs[i, target[i]]`` and
a Python token count to average by, exactly what ``ignore_index`` does."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "logits [4, 10, 12] (batch, time, vocab)", "bench": "logits [32, 128, 1000]"},
}

PAD = 0


def naive(logits, target):
    log_probs = F.log_softmax(logits, dim=-1).view(-1, logits.shape[-1])
    target = target.view(-1)
    loss = 0.0
    count = 0
    for i in range(target.shape[0]):
        if target[i] != PAD:
            loss += -log_probs[i, target[i]]
            count += 1
    return loss / count


def expert(logits, target):
    return F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=PAD)


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, t, v = {"small": (4, 10, 12), "bench": (32, 128, 1000)}[size]
    logits = torch.randn(b, t, v, generator=g, dtype=dtype).requires_grad_()
    tokens = torch.randint(1, v, (b, t), generator=g)
    # Right padding after a random length (at least one real token per sequence).
    lengths = torch.randint(1, t + 1, (b, 1), generator=g)
    target = tokens.masked_fill(torch.arange(t) >= lengths, PAD)
    return logits, target


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
