"""Multi-label binary cross entropy with logits, written per element with the numerically stable
formula ``max(x, 0) - x*y + log(1 + exp(-|x|))`` (as in TensorFlow's
``sigmoid_cross_entropy_with_logits``, often hand-ported). The naive version applies the
formula to every (sample, label) pair in a double loop and stores it into a preallocated output
with ``out[i, j] = ...`` before taking the mean."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": True,
    "sizes": {"small": "logits/target [16, 20]", "bench": "logits/target [512, 512]"},
}


def naive(logits, target):
    out = torch.zeros_like(logits)
    for i in range(logits.shape[0]):
        for j in range(logits.shape[1]):
            x, y = logits[i, j], target[i, j]
            out[i, j] = x.clamp(min=0) - x * y + torch.log1p(torch.exp(-x.abs()))
    return out.mean()


def expert(logits, target):
    return F.binary_cross_entropy_with_logits(logits, target)


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    shape = {"small": (16, 20), "bench": (512, 512)}[size]
    logits = (3 * torch.randn(shape, generator=g, dtype=dtype)).requires_grad_()
    target = (torch.rand(shape, generator=g) < 0.2).to(dtype)  # a few positive labels per sample
    return logits, target


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
