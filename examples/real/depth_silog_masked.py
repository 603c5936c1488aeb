"""Scale-invariant log (SILog) depth loss with a boolean validity mask, in the BTS / PixelFormer
training code as copied in sakharok13/DepthEstimation (pixelformer_baseline/pixelformer/utils.py,
``silog_loss``): an ``nn.Module`` keeps ``self.variance_focus``; ``forward`` selects the valid
pixels with ``depth_est[mask]`` (a data-dependent number of elements), takes the log difference,
and returns ``sqrt(mean(d^2) - variance_focus * mean(d)^2) * 10``. The training loop builds the
mask with ``depth_gt > 1.0``. No loop: the pattern is boolean-mask selection before reductions."""
import torch
import torch.nn as nn

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "depth_est/depth_gt [4, 1, 12, 16]", "bench": "depth_est/depth_gt [8, 1, 352, 1216] (KITTI)"},
    "source": "sakharok13/DepthEstimation:pixelformer_baseline/pixelformer/utils.py",
    "field": "depth/regression",
    "target_args": ("depth_gt",),
}


class silog_loss(nn.Module):
    def __init__(self, variance_focus):
        super().__init__()
        self.variance_focus = variance_focus

    def forward(self, depth_est, depth_gt, mask):
        d = torch.log(depth_est[mask]) - torch.log(depth_gt[mask])
        return torch.sqrt((d ** 2).mean() - self.variance_focus * (d.mean() ** 2)) * 10.0


def naive(depth_est, depth_gt):
    silog_criterion = silog_loss(variance_focus=0.85)
    mask = depth_gt > 1.0
    return silog_criterion.forward(depth_est, depth_gt, mask.to(torch.bool))


def expert(depth_est, depth_gt):
    mask = depth_gt > 1.0
    n = mask.sum()
    # Masked-out pixels contribute 0 (log 1); where() keeps their gradient exactly 0.
    d = torch.where(mask, torch.log(torch.where(mask, depth_est, 1.0)) - torch.log(torch.where(mask, depth_gt, 1.0)), 0.0)
    mean = d.sum() / n
    return torch.sqrt((d ** 2).sum() / n - 0.85 * mean ** 2) * 10.0


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, h, w = {"small": (4, 12, 16), "bench": (8, 352, 1216)}[size]
    depth_gt = torch.rand(b, 1, h, w, generator=g, dtype=dtype) * 80
    depth_gt[torch.rand(b, 1, h, w, generator=g) < 0.3] = 0.0  # sparse LiDAR: no return
    depth_est = (depth_gt.clamp(min=1.0) * torch.exp(0.2 * torch.randn(b, 1, h, w, generator=g, dtype=dtype))).requires_grad_()
    return depth_est, depth_gt
