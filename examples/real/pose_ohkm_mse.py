"""Online hard keypoint mining (OHKM) heatmap loss: per-joint weighted MSE, then for every image
only the ``topk`` hardest joints count. Paraphrases ``JointsOHKMMSELoss`` in
open-mmlab/mmskeleton (mmskeleton/models/loss/JointsOHKMMSELoss.py), itself derived from the HRNet
code: a loop over joints appends ``[B, H*W]`` unreduced losses to a list, a list comprehension
averages each and ``torch.cat`` glues them to ``[B, J]``, and ``self.ohkm`` loops over the batch
with ``torch.topk`` and ``torch.gather`` per image, accumulating into a Python float that becomes
a tensor and is divided in place. (The mmskeleton copy rebinds the ground-truth list inside the
joint loop, a bug; this paraphrase keeps the HRNet meaning.)"""
import torch
import torch.nn as nn

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "heatmaps [4, 17, 16, 12], topk 8",
              "bench": "heatmaps [32, 17, 64, 48], topk 8"},
    "source": "open-mmlab/mmskeleton:mmskeleton/models/loss/JointsOHKMMSELoss.py",
    "field": "pose",
    "target_args": ("targets", "target_weights"),
}


class JointsOHKMMSELoss(nn.Module):
    def __init__(self, use_target_weight, topk=8):
        super(JointsOHKMMSELoss, self).__init__()
        self.criterion = nn.MSELoss(reduction="none")
        self.use_target_weight = use_target_weight
        self.topk = topk

    def ohkm(self, loss):
        ohkm_loss = 0.
        for i in range(loss.size()[0]):
            sub_loss = loss[i]
            topk_val, topk_idx = torch.topk(sub_loss, k=self.topk, dim=0, sorted=False)
            tmp_loss = torch.gather(sub_loss, 0, topk_idx)
            ohkm_loss += torch.sum(tmp_loss) / self.topk
        ohkm_loss /= loss.size()[0]
        return ohkm_loss

    def forward(self, outs, targets, target_weights):
        batch_size = outs.size(0)
        num_joints = outs.size(1)
        heatmaps_pred = outs.reshape((batch_size, num_joints, -1)).split(1, 1)
        heatmaps_gt = targets.reshape((batch_size, num_joints, -1)).split(1, 1)

        loss = []
        for idx in range(num_joints):
            heatmap_pred = heatmaps_pred[idx].squeeze()
            heatmap_gt = heatmaps_gt[idx].squeeze()
            if self.use_target_weight:
                loss.append(0.5 * self.criterion(heatmap_pred.mul(target_weights[:, idx]),
                                                 heatmap_gt.mul(target_weights[:, idx])))
            else:
                loss.append(0.5 * self.criterion(heatmap_pred, heatmap_gt))

        loss = [l.mean(dim=1).unsqueeze(dim=1) for l in loss]
        loss = torch.cat(loss, dim=1)
        return self.ohkm(loss)


def naive(outs, targets, target_weights):
    return JointsOHKMMSELoss(use_target_weight=True, topk=8)(outs, targets, target_weights)


def expert(outs, targets, target_weights):
    b, j = outs.shape[:2]
    pred = outs.reshape(b, j, -1) * target_weights
    gt = targets.reshape(b, j, -1) * target_weights
    per_joint = 0.5 * (pred - gt).pow(2).mean(dim=2)  # [B, J]
    hardest, _ = per_joint.topk(8, dim=1, sorted=False)
    return (hardest.sum(dim=1) / 8).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, j, h, w = {"small": (4, 17, 16, 12), "bench": (32, 17, 64, 48)}[size]
    outs = torch.randn(b, j, h, w, generator=g, dtype=dtype).requires_grad_()
    targets = torch.rand(b, j, h, w, generator=g, dtype=dtype)
    target_weights = (torch.rand(b, j, 1, generator=g) > 0.2).to(dtype)
    return outs, targets, target_weights
