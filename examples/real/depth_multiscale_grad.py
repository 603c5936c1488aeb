"""Multi-scale gradient-matching loss for relative depth (the MiDaS-style regulariser), as
greenbrettmichael/pixel-perfect-depth writes it (ppd/models/loss.py): a Python loop over four
scales subsamples prediction, target and valid mask with a stride ``step = pow(2, scale)``, and
``grad_loss`` masks the residual, takes absolute horizontal and vertical differences, keeps only
pairs where both pixels are valid, and divides the summed gradient error by the number of valid
pixels at that scale. The four terms are accumulated into ``total`` with ``+=``."""
import torch

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "prediction/target/mask [2, 24, 32]", "bench": "prediction/target/mask [16, 384, 512]"},
    "source": "greenbrettmichael/pixel-perfect-depth:ppd/models/loss.py",
    "field": "depth/regression",
    "target_args": ("target", "mask"),
}


def grad_loss(prediction, target, mask):
    M = torch.sum(mask, (1, 2))
    diff = prediction - target
    diff = torch.mul(mask, diff)
    grad_x = torch.abs(diff[:, :, 1:] - diff[:, :, :-1])
    mask_x = torch.mul(mask[:, :, 1:], mask[:, :, :-1])
    grad_x = torch.mul(mask_x, grad_x)
    grad_y = torch.abs(diff[:, 1:, :] - diff[:, :-1, :])
    mask_y = torch.mul(mask[:, 1:, :], mask[:, :-1, :])
    grad_y = torch.mul(mask_y, grad_y)
    image_loss = torch.sum(grad_x, (1, 2)) + torch.sum(grad_y, (1, 2))
    return torch.sum(image_loss) / torch.sum(M)


def naive(prediction, target, mask):
    total = 0
    for scale in range(4):
        step = pow(2, scale)
        total += grad_loss(prediction[:, ::step, ::step], target[:, ::step, ::step], mask[:, ::step, ::step])
    return total


def expert(prediction, target, mask):
    diff = (prediction - target) * mask

    def one_scale(step):  # the strided views differ in shape, so each scale is one fused term
        d, m = diff[:, ::step, ::step], mask[:, ::step, ::step]
        gx = ((d[:, :, 1:] - d[:, :, :-1]).abs() * (m[:, :, 1:] * m[:, :, :-1])).sum()
        gy = ((d[:, 1:] - d[:, :-1]).abs() * (m[:, 1:] * m[:, :-1])).sum()
        return (gx + gy) / m.sum()

    return sum(one_scale(2 ** s) for s in range(4))


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, h, w = {"small": (2, 24, 32), "bench": (16, 384, 512)}[size]
    prediction = torch.randn(b, h, w, generator=g, dtype=dtype).requires_grad_()
    target = torch.randn(b, h, w, generator=g, dtype=dtype)
    mask = (torch.rand(b, h, w, generator=g) > 0.2).to(dtype)  # invalid pixels (no ground truth) are 0
    return prediction, target, mask
