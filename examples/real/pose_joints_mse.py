"""Keypoint heatmap MSE with per-joint target weights, the loss of the SimpleBaselines / HRNet
family of top-down pose estimators. Paraphrases ``JointsMSELoss`` in
microsoft/human-pose-estimation.pytorch (lib/core/loss.py): the heatmaps are split into one
``[B, 1, H*W]`` chunk per joint with ``split(1, 1)``, each chunk is squeezed, multiplied by the
joint's visibility weight and sent through an ``nn.MSELoss`` held in ``self.criterion``; the
per-joint losses are summed in a Python loop over joints and divided by the number of joints."""
import torch
import torch.nn as nn

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "heatmaps [4, 17, 16, 12], target_weight [4, 17, 1]",
              "bench": "heatmaps [32, 17, 64, 48], target_weight [32, 17, 1]"},
    "source": "microsoft/human-pose-estimation.pytorch:lib/core/loss.py",
    "field": "pose",
    "target_args": ("target", "target_weight"),
}


class JointsMSELoss(nn.Module):
    def __init__(self, use_target_weight):
        super(JointsMSELoss, self).__init__()
        self.criterion = nn.MSELoss(reduction="mean")
        self.use_target_weight = use_target_weight

    def forward(self, output, target, target_weight):
        batch_size = output.size(0)
        num_joints = output.size(1)
        heatmaps_pred = output.reshape((batch_size, num_joints, -1)).split(1, 1)
        heatmaps_gt = target.reshape((batch_size, num_joints, -1)).split(1, 1)
        loss = 0
        for idx in range(num_joints):
            heatmap_pred = heatmaps_pred[idx].squeeze()
            heatmap_gt = heatmaps_gt[idx].squeeze()
            if self.use_target_weight:
                loss += 0.5 * self.criterion(heatmap_pred.mul(target_weight[:, idx]),
                                             heatmap_gt.mul(target_weight[:, idx]))
            else:
                loss += 0.5 * self.criterion(heatmap_pred, heatmap_gt)
        return loss / num_joints


def naive(output, target, target_weight):
    criterion = JointsMSELoss(use_target_weight=True)
    return criterion(output, target, target_weight)


def expert(output, target, target_weight):
    # Every joint chunk has B * H * W elements, so the mean of per-joint means is one global mean.
    b, j = output.shape[:2]
    pred = output.reshape(b, j, -1) * target_weight
    gt = target.reshape(b, j, -1) * target_weight
    return 0.5 * (pred - gt).pow(2).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, j, h, w = {"small": (4, 17, 16, 12), "bench": (32, 17, 64, 48)}[size]
    output = torch.randn(b, j, h, w, generator=g, dtype=dtype).requires_grad_()
    target = torch.rand(b, j, h, w, generator=g, dtype=dtype)
    target_weight = (torch.rand(b, j, 1, generator=g) > 0.2).to(dtype)  # invisible joints weigh 0
    return output, target, target_weight
