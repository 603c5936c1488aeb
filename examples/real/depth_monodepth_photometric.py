"""Self-supervised monocular depth loss of nianticlabs/monodepth2 (trainer.py,
``Trainer.compute_losses``, with ``SSIM`` and ``get_smooth_loss`` from layers.py): for every
scale, a loop over the source frames appends ``0.85 * SSIM + 0.15 * L1`` reprojection errors of
the warped images, another loop does the same for the unwarped frames (auto-masking), tiny random
noise is added in place to break ties, the per-pixel minimum over all candidates is averaged, and
an edge-aware disparity smoothness term (in-place ``*=`` on temporaries) is added with weight
``1 / 2 ** scale``. Inputs and outputs are dicts keyed by tuples, options live in ``self.opt``,
and the loss writes an ``identity_selection`` mask back into ``outputs`` as the repository does."""
from types import SimpleNamespace

import torch
import torch.nn as nn

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "batch 2, 16x24 images, 4 scales, frames [0, -1, 1]",
              "bench": "batch 2, 96x320 images (half KITTI), 4 scales, frames [0, -1, 1]"},
    "source": "nianticlabs/monodepth2:trainer.py",
    "field": "depth/regression",
    "target_args": ("inputs",),
}


class SSIM(nn.Module):
    """Per-pixel SSIM dissimilarity over 3x3 windows, with reflection padding."""

    def __init__(self):
        super(SSIM, self).__init__()
        self.mu_x_pool = nn.AvgPool2d(3, 1)
        self.mu_y_pool = nn.AvgPool2d(3, 1)
        self.sig_x_pool = nn.AvgPool2d(3, 1)
        self.sig_y_pool = nn.AvgPool2d(3, 1)
        self.sig_xy_pool = nn.AvgPool2d(3, 1)
        self.refl = nn.ReflectionPad2d(1)
        self.C1 = 0.01 ** 2
        self.C2 = 0.03 ** 2

    def forward(self, x, y):
        x = self.refl(x)
        y = self.refl(y)
        mu_x = self.mu_x_pool(x)
        mu_y = self.mu_y_pool(y)
        sigma_x = self.sig_x_pool(x ** 2) - mu_x ** 2
        sigma_y = self.sig_y_pool(y ** 2) - mu_y ** 2
        sigma_xy = self.sig_xy_pool(x * y) - mu_x * mu_y
        SSIM_n = (2 * mu_x * mu_y + self.C1) * (2 * sigma_xy + self.C2)
        SSIM_d = (mu_x ** 2 + mu_y ** 2 + self.C1) * (sigma_x + sigma_y + self.C2)
        return torch.clamp((1 - SSIM_n / SSIM_d) / 2, 0, 1)


def get_smooth_loss(disp, img):
    """Edge-aware smoothness: disparity gradients damped where the image has edges."""
    grad_disp_x = torch.abs(disp[:, :, :, :-1] - disp[:, :, :, 1:])
    grad_disp_y = torch.abs(disp[:, :, :-1, :] - disp[:, :, 1:, :])
    grad_img_x = torch.mean(torch.abs(img[:, :, :, :-1] - img[:, :, :, 1:]), 1, keepdim=True)
    grad_img_y = torch.mean(torch.abs(img[:, :, :-1, :] - img[:, :, 1:, :]), 1, keepdim=True)
    grad_disp_x *= torch.exp(-grad_img_x)
    grad_disp_y *= torch.exp(-grad_img_y)
    return grad_disp_x.mean() + grad_disp_y.mean()


class Trainer:
    def __init__(self):
        self.opt = SimpleNamespace(scales=[0, 1, 2, 3], frame_ids=[0, -1, 1], no_ssim=False,
                                   v1_multiscale=False, disable_automasking=False,
                                   avg_reprojection=False, disparity_smoothness=1e-3)
        self.num_scales = len(self.opt.scales)
        self.device = torch.device("cpu")
        self.ssim = SSIM().to(self.device)

    def compute_reprojection_loss(self, pred, target):
        abs_diff = torch.abs(target - pred)
        l1_loss = abs_diff.mean(1, True)
        if self.opt.no_ssim:
            reprojection_loss = l1_loss
        else:
            ssim_loss = self.ssim(pred, target).mean(1, True)
            reprojection_loss = 0.85 * ssim_loss + 0.15 * l1_loss
        return reprojection_loss

    def compute_losses(self, inputs, outputs):
        losses = {}
        total_loss = 0
        for scale in self.opt.scales:
            loss = 0
            reprojection_losses = []
            source_scale = scale if self.opt.v1_multiscale else 0

            disp = outputs[("disp", scale)]
            color = inputs[("color", 0, scale)]
            target = inputs[("color", 0, source_scale)]

            for frame_id in self.opt.frame_ids[1:]:
                pred = outputs[("color", frame_id, scale)]
                reprojection_losses.append(self.compute_reprojection_loss(pred, target))
            reprojection_losses = torch.cat(reprojection_losses, 1)

            if not self.opt.disable_automasking:
                identity_reprojection_losses = []
                for frame_id in self.opt.frame_ids[1:]:
                    pred = inputs[("color", frame_id, source_scale)]
                    identity_reprojection_losses.append(self.compute_reprojection_loss(pred, target))
                identity_reprojection_losses = torch.cat(identity_reprojection_losses, 1)
                if self.opt.avg_reprojection:
                    identity_reprojection_loss = identity_reprojection_losses.mean(1, keepdim=True)
                else:
                    identity_reprojection_loss = identity_reprojection_losses

            if self.opt.avg_reprojection:
                reprojection_loss = reprojection_losses.mean(1, keepdim=True)
            else:
                reprojection_loss = reprojection_losses

            if not self.opt.disable_automasking:
                # add random numbers to break ties
                identity_reprojection_loss += torch.randn(
                    identity_reprojection_loss.shape, dtype=target.dtype).to(self.device) * 0.00001
                combined = torch.cat((identity_reprojection_loss, reprojection_loss), dim=1)
            else:
                combined = reprojection_loss

            if combined.shape[1] == 1:
                to_optimise = combined
            else:
                to_optimise, idxs = torch.min(combined, dim=1)

            if not self.opt.disable_automasking:
                outputs["identity_selection/{}".format(scale)] = (
                    idxs > identity_reprojection_loss.shape[1] - 1).float()

            loss += to_optimise.mean()

            mean_disp = disp.mean(2, True).mean(3, True)
            norm_disp = disp / (mean_disp + 1e-7)
            smooth_loss = get_smooth_loss(norm_disp, color)

            loss += self.opt.disparity_smoothness * smooth_loss / (2 ** scale)
            total_loss += loss
            losses["loss/{}".format(scale)] = loss

        total_loss /= self.num_scales
        losses["loss"] = total_loss
        return losses


def naive(outputs, inputs):
    trainer = Trainer()
    losses = trainer.compute_losses(inputs, outputs)
    return losses["loss"]


def expert(outputs, inputs):
    scales, frames = [0, 1, 2, 3], [-1, 1]
    ssim = SSIM()
    target = inputs[("color", 0, 0)]

    def reprojection(pred):  # pred: [K, B, 3, H, W] against the same target
        k = pred.shape[0]
        flat = pred.flatten(0, 1)
        tgt = target.expand(k, *target.shape).flatten(0, 1)
        err = 0.85 * ssim(flat, tgt).mean(1, True) + 0.15 * (tgt - flat).abs().mean(1, True)
        return err.unflatten(0, (k, target.shape[0]))  # [K, B, 1, H, W]

    # The unwarped frames do not depend on the scale: one identity error per frame, reused.
    identity = reprojection(torch.stack([inputs[("color", f, 0)] for f in frames]))[:, :, 0]
    warped = torch.stack([outputs[("color", f, s)] for s in scales for f in frames])
    warped = reprojection(warped)[:, :, 0].unflatten(0, (len(scales), len(frames)))  # [S, F, B, H, W]
    noise = [torch.randn(identity.shape[1], len(frames), *identity.shape[2:], dtype=target.dtype)
             for _ in scales]  # same draws, same order as the naive loop
    identity = identity.transpose(0, 1) + torch.stack(noise) * 0.00001  # [S, B, F, H, W]
    combined = torch.cat([identity, warped.transpose(1, 2)], dim=2)
    photometric = combined.min(dim=2).values.mean(dim=(1, 2, 3))  # [S]

    smooth = torch.stack([
        get_smooth_loss(outputs[("disp", s)] / (outputs[("disp", s)].mean((2, 3), True) + 1e-7),
                        inputs[("color", 0, s)]) / 2 ** s for s in scales])
    for s, selection in zip(scales, (combined.argmin(dim=2) > len(frames) - 1).float()):
        outputs["identity_selection/{}".format(s)] = selection
    return (photometric + 1e-3 * smooth).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, h, w = {"small": (2, 16, 24), "bench": (2, 96, 320)}[size]
    inputs, outputs = {}, {}
    for s in range(4):
        for f in (0, -1, 1):
            inputs[("color", f, s)] = torch.rand(b, 3, h // 2 ** s, w // 2 ** s, generator=g, dtype=dtype)
    for s in range(4):
        outputs[("disp", s)] = (torch.rand(b, 1, h // 2 ** s, w // 2 ** s, generator=g, dtype=dtype)
                                * 0.3 + 0.01).requires_grad_()
        for f in (-1, 1):  # warped source frames: close to the target, they come from the depth net
            warped = inputs[("color", 0, 0)] + 0.1 * torch.randn(b, 3, h, w, generator=g, dtype=dtype)
            outputs[("color", f, s)] = warped.clamp(0, 1).requires_grad_()
    return outputs, inputs
