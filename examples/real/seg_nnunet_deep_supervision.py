"""Deep-supervision Dice + cross-entropy loss as MIC-DKFZ/nnUNet writes it (nnU-Net v1,
nnunet/training/loss_functions/deep_supervision.py and dice_loss.py): ``MultipleOutputLoss2``
takes lists of network outputs and downsampled label maps, asserts they are lists, and adds
``weights[i] * loss(x[i], y[i])`` under ``if weights[i] != 0``; the soft Dice one-hot encodes
the float label map under ``no_grad`` with ``torch.zeros`` and an in-place ``scatter_``, sums
over axes one at a time in ``sum_tensor``, and drops the background with ``dc[1:]``."""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CASE = {
    "loops": "kept",
    "elementwise": False,
    "sizes": {"small": "4 outputs [2, 3, 16..2, 16..2]", "bench": "4 outputs [12, 4, 256..32, 256..32]"},
    "source": "MIC-DKFZ/nnUNet:nnunet/training/loss_functions/deep_supervision.py",
    "field": "segmentation",
    "target_args": ("targets",),
}


def softmax_helper(x):
    return F.softmax(x, 1)


def sum_tensor(inp, axes, keepdim=False):
    axes = np.unique(axes).astype(int)
    if keepdim:
        for ax in axes:
            inp = inp.sum(int(ax), keepdim=True)
    else:
        for ax in sorted(axes, reverse=True):
            inp = inp.sum(int(ax))
    return inp


def get_tp_fp_fn(net_output, gt, axes=None, mask=None, square=False):
    if axes is None:
        axes = tuple(range(2, len(net_output.size())))
    shp_x = net_output.shape
    shp_y = gt.shape

    with torch.no_grad():
        if len(shp_x) != len(shp_y):
            gt = gt.view((shp_y[0], 1, *shp_y[1:]))
        if all([i == j for i, j in zip(net_output.shape, gt.shape)]):
            # gt is probably already a one hot encoding
            y_onehot = gt
        else:
            gt = gt.long()
            y_onehot = torch.zeros(shp_x)
            if net_output.device.type == "cuda":
                y_onehot = y_onehot.cuda(net_output.device.index)
            y_onehot.scatter_(1, gt, 1)

    tp = net_output * y_onehot
    fp = net_output * (1 - y_onehot)
    fn = (1 - net_output) * y_onehot

    if square:
        tp = tp ** 2
        fp = fp ** 2
        fn = fn ** 2

    if len(axes) > 0:
        tp = sum_tensor(tp, axes, keepdim=False)
        fp = sum_tensor(fp, axes, keepdim=False)
        fn = sum_tensor(fn, axes, keepdim=False)
    return tp, fp, fn


class SoftDiceLoss(nn.Module):
    def __init__(self, apply_nonlin=None, batch_dice=False, do_bg=True, smooth=1.):
        super(SoftDiceLoss, self).__init__()
        self.do_bg = do_bg
        self.batch_dice = batch_dice
        self.apply_nonlin = apply_nonlin
        self.smooth = smooth

    def forward(self, x, y, loss_mask=None):
        shp_x = x.shape
        if self.batch_dice:
            axes = [0] + list(range(2, len(shp_x)))
        else:
            axes = list(range(2, len(shp_x)))
        if self.apply_nonlin is not None:
            x = self.apply_nonlin(x)

        tp, fp, fn = get_tp_fp_fn(x, y, axes, loss_mask, False)
        nominator = 2 * tp + self.smooth
        denominator = 2 * tp + fp + fn + self.smooth
        dc = nominator / denominator

        if not self.do_bg:
            if self.batch_dice:
                dc = dc[1:]
            else:
                dc = dc[:, 1:]
        dc = dc.mean()
        return -dc


class RobustCrossEntropyLoss(nn.CrossEntropyLoss):
    """Cross-entropy that accepts the [b, 1, x, y] float label maps of the data loader."""
    def forward(self, input, target):
        if len(target.shape) == len(input.shape):
            assert target.shape[1] == 1
            target = target[:, 0]
        return super().forward(input, target.long())


class DC_and_CE_loss(nn.Module):
    def __init__(self, soft_dice_kwargs, ce_kwargs, aggregate="sum"):
        super(DC_and_CE_loss, self).__init__()
        self.aggregate = aggregate
        self.ce = RobustCrossEntropyLoss(**ce_kwargs)
        self.dc = SoftDiceLoss(apply_nonlin=softmax_helper, **soft_dice_kwargs)

    def forward(self, net_output, target):
        dc_loss = self.dc(net_output, target)
        ce_loss = self.ce(net_output, target)
        if self.aggregate == "sum":
            result = ce_loss + dc_loss
        else:
            raise NotImplementedError("nah son")
        return result


class MultipleOutputLoss2(nn.Module):
    def __init__(self, loss, weight_factors=None):
        super(MultipleOutputLoss2, self).__init__()
        self.weight_factors = weight_factors
        self.loss = loss

    def forward(self, x, y):
        assert isinstance(x, (tuple, list)), "x must be either tuple or list"
        assert isinstance(y, (tuple, list)), "y must be either tuple or list"
        if self.weight_factors is None:
            weights = [1] * len(x)
        else:
            weights = self.weight_factors

        l = weights[0] * self.loss(x[0], y[0])
        for i in range(1, len(x)):
            if weights[i] != 0:
                l += weights[i] * self.loss(x[i], y[i])
        return l


def deep_supervision_weights(n):
    # halve per resolution, mask out the lowest one, normalise to sum 1 (nnU-Net's trainer)
    weights = np.array([1 / (2 ** i) for i in range(n)])
    mask = np.array([True] + [True if i < n - 1 else False for i in range(1, n)])
    weights[~mask] = 0
    return weights / weights.sum()


def naive(outputs, targets):
    loss = DC_and_CE_loss({'batch_dice': True, 'smooth': 1e-5, 'do_bg': False}, {})
    return MultipleOutputLoss2(loss, deep_supervision_weights(len(outputs)))(outputs, targets)


def expert(outputs, targets):
    # The resolutions differ, so the loop over outputs stays; each term is one fused expression
    # with the background dropped before the class sums.
    total = 0
    for w, x, y in zip(deep_supervision_weights(len(outputs)), outputs, targets):
        if w == 0:
            continue
        labels = y[:, 0].long()
        probs = x.softmax(dim=1)[:, 1:]
        onehot = F.one_hot(labels, x.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(x.dtype)
        tp = (probs * onehot).sum(dim=(0, 2, 3))
        dc = (2 * tp + 1e-5) / (probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3)) + 1e-5)
        total = total + w * (F.cross_entropy(x, labels) - dc.mean())
    return total


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, c, hw = {"small": (2, 3, 16), "bench": (12, 4, 256)}[size]
    label = torch.randint(0, c, (b, 1, hw, hw), generator=g).to(dtype)
    outputs, targets = [], []
    for level in range(4):
        s = hw // 2 ** level
        out = torch.randn(b, c, s, s, generator=g, dtype=dtype)
        # the lowest resolution has weight 0 and never reaches the loss: no gradient to ask for
        outputs.append(out.requires_grad_() if level < 3 else out)
        targets.append(F.interpolate(label, size=(s, s), mode="nearest"))  # nnU-Net downsamples
    return outputs, targets
