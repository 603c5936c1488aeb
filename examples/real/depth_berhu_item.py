"""Reverse Huber (berHu) depth regression loss as valeoai/DADA writes it (dada/utils/func.py,
``loss_calc_depth``): the prediction is asserted single-channel and squeezed, the label is moved
to the training ``device``, the threshold is ``0.2 * torch.max(adiff).item()`` (a host round trip
that also cuts the threshold out of the graph), two float masks from ``le``/``gt`` select the L1
and the scaled-L2 branches, and the sum is divided by ``torch.numel(pred.data)``. No loop: the
pattern is the ``.item()`` on a reduction used as a Python float in later tensor arithmetic."""
import torch

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "pred/label [4, 1, 12, 16]", "bench": "pred/label [16, 1, 512, 1024] (Cityscapes)"},
    "source": "valeoai/DADA:dada/utils/func.py",
    "field": "depth/regression",
    "target_args": ("label",),
}


def loss_calc_depth(pred, label, device):
    n, c, h, w = pred.size()
    assert c == 1

    pred = pred.squeeze()
    label = label.squeeze().to(device)

    adiff = torch.abs(pred - label)
    batch_max = 0.2 * torch.max(adiff).item()
    t1_mask = adiff.le(batch_max).float()
    t2_mask = adiff.gt(batch_max).float()
    t1 = adiff * t1_mask
    t2 = (adiff * adiff + batch_max * batch_max) / (2 * batch_max)
    t2 = t2 * t2_mask
    return (torch.sum(t1) + torch.sum(t2)) / torch.numel(pred.data)


def naive(pred, label, device=torch.device("cpu")):
    return loss_calc_depth(pred, label, device)


def expert(pred, label, device=torch.device("cpu")):
    adiff = (pred - label.to(device)).abs()
    c = 0.2 * adiff.max().detach()  # .item() made the threshold a constant: no gradient through it
    loss = torch.where(adiff <= c, adiff, (adiff * adiff + c * c) / (2 * c))
    return loss.sum() / adiff.numel()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, h, w = {"small": (4, 12, 16), "bench": (16, 512, 1024)}[size]
    pred = (torch.rand(b, 1, h, w, generator=g, dtype=dtype) * 80).requires_grad_()
    label = torch.rand(b, 1, h, w, generator=g, dtype=dtype) * 80
    return pred, label
