"""Multi-class Dice loss as hubutui/DiceLoss-PyTorch writes it in loss.py: the label map is
one-hot encoded by ``make_one_hot`` (numpy shape arithmetic, ``torch.zeros`` and an in-place
``scatter_``), and the ``DiceLoss`` module applies softmax, builds a ``BinaryDiceLoss`` module,
then loops over classes with ``if i != self.ignore_index`` accumulating ``total_loss +=`` the
per-class dice (squared-sum denominator, mean over the batch) before dividing by the number of
classes, the ignored one included."""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "logits [2, 4, 16, 16], background ignored", "bench": "logits [8, 21, 128, 128], background ignored"},
    "source": "hubutui/DiceLoss-PyTorch:loss.py",
    "field": "segmentation",
    "target_args": ("labels",),
}


def make_one_hot(input, num_classes):
    """[N, 1, *] class indices -> [N, num_classes, *] one-hot."""
    shape = np.array(input.shape)
    shape[1] = num_classes
    shape = tuple(shape)
    result = torch.zeros(shape)
    result = result.scatter_(1, input.cpu(), 1)
    return result


class BinaryDiceLoss(nn.Module):
    def __init__(self, smooth=1, p=2, reduction='mean'):
        super(BinaryDiceLoss, self).__init__()
        self.smooth = smooth
        self.p = p
        self.reduction = reduction

    def forward(self, predict, target):
        assert predict.shape[0] == target.shape[0], "predict & target batch size don't match"
        predict = predict.contiguous().view(predict.shape[0], -1)
        target = target.contiguous().view(target.shape[0], -1)

        num = torch.sum(torch.mul(predict, target), dim=1) + self.smooth
        den = torch.sum(predict.pow(self.p) + target.pow(self.p), dim=1) + self.smooth

        loss = 1 - num / den

        if self.reduction == 'mean':
            return loss.mean()
        elif self.reduction == 'sum':
            return loss.sum()
        elif self.reduction == 'none':
            return loss
        else:
            raise Exception('Unexpected reduction {}'.format(self.reduction))


class DiceLoss(nn.Module):
    def __init__(self, weight=None, ignore_index=None, **kwargs):
        super(DiceLoss, self).__init__()
        self.kwargs = kwargs
        self.weight = weight
        self.ignore_index = ignore_index

    def forward(self, predict, target):
        assert predict.shape == target.shape, 'predict & target shape do not match'
        dice = BinaryDiceLoss(**self.kwargs)
        total_loss = 0
        predict = F.softmax(predict, dim=1)

        for i in range(target.shape[1]):
            if i != self.ignore_index:
                dice_loss = dice(predict[:, i], target[:, i])
                if self.weight is not None:
                    assert self.weight.shape[0] == target.shape[1], \
                        'Expect weight shape [{}], get[{}]'.format(target.shape[1], self.weight.shape[0])
                    dice_loss *= self.weights[i]
                total_loss += dice_loss

        return total_loss / target.shape[1]


def naive(logits, labels):
    target = make_one_hot(labels.unsqueeze(1), logits.shape[1])
    return DiceLoss(ignore_index=0)(logits, target)


def expert(logits, labels):
    c = logits.shape[1]
    probs = logits.softmax(dim=1).flatten(2)                          # [N, C, HW]
    onehot = F.one_hot(labels.flatten(1), c).transpose(1, 2).to(probs.dtype)
    num = (probs * onehot).sum(dim=2) + 1
    den = (probs.pow(2) + onehot).sum(dim=2) + 1                      # one-hot squared is itself
    per_class = (1 - num / den).mean(dim=0)
    return per_class[1:].sum() / c


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, c, hw = {"small": (2, 4, 16), "bench": (8, 21, 128)}[size]
    logits = torch.randn(b, c, hw, hw, generator=g, dtype=dtype).requires_grad_()
    labels = torch.randint(0, c, (b, hw, hw), generator=g)
    return logits, labels
