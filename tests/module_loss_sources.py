"""Losses calling ``nn`` loss modules inside loops, for ``tests/test_module_loss_calls.py``
(``module_loss_calls`` reads the classes' sources: they must live in a real module)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class HardExamples(nn.Module):
    """A data-dependent append after a module call: the calls are hoisted and batched."""

    def __init__(self, th, ignore_index=-100):
        super().__init__()
        self.ce = nn.CrossEntropyLoss(ignore_index=ignore_index)
        self.th = th

    def forward(self, x, y):
        hard = []
        for i in range(x.shape[0]):
            l = self.ce(x[i], y[i])
            if l.item() > self.th:
                hard.append(l)
        return torch.stack(hard).sum() if hard else x.sum() * 0


class LoggedSteps(nn.Module):
    """Every step's loss printed: the same lines, the sum in the original order."""

    def __init__(self):
        super().__init__()
        self.mse = nn.MSELoss(reduction="sum").to("cpu")

    def forward(self, x, y):
        total = 0
        for t in range(x.shape[1]):
            l = self.mse(x[:, t], y[:, t])
            print(f"{t}: {l.item():.4f}")
            total = total + l
        return total


class MaskedSteps(nn.Module):
    """A module call under a condition on the data, with a print: hoisted under its branch."""

    def __init__(self):
        super().__init__()
        self.crit = nn.SmoothL1Loss(beta=0.5)

    def forward(self, x, y, m):
        total = 0
        for i in range(x.shape[0]):
            if m[i] > 0:
                l = self.crit(x[i], y[i])
                print(f"{i}: {l.item():.4f}")
                total = total + l
        return total


def local_criterion(x, y):
    """A module the function makes: the whole loop is vectorized."""
    crit = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(2.0, dtype=x.dtype))
    total = 0
    for i in range(x.shape[0]):
        total = total + crit(x[i], y[i])
    return total


class UnknownModule(nn.Module):
    """No change: a module class outside the registry stays a call the loop cannot hoist."""

    def __init__(self):
        super().__init__()
        self.rank = nn.MarginRankingLoss(margin=0.1)

    def forward(self, a, b, y):
        total = 0
        for i in range(a.shape[0]):
            l = self.rank(a[i], b[i])
            print(l.item())
            total = total + l
        return total


class MixedAttribute(nn.Module):
    """No change: the attribute holds modules of two classes, so which functional it is is
    unknown."""

    def __init__(self, l1):
        super().__init__()
        self.crit = nn.L1Loss() if l1 else nn.MSELoss()

    def forward(self, x, y):
        total = 0
        for i in range(x.shape[0]):
            l = self.crit(x[i], y[i])
            print(l.item())
            total = total + l
        return total


class SubclassedLoss(nn.CrossEntropyLoss):
    """A subclass with its own forward: the runtime check runs the loop as written."""

    def forward(self, input, target):
        return 2 * super().forward(input, target)


def flat_ce(x, y):
    return F.cross_entropy(x, y)


def part_losses(parts, labels):
    """A loss module the function makes, called per part against one label vector (PCB's
    parts): the batched form, behind checks of the module's settings."""
    criterion = nn.CrossEntropyLoss()
    loss = criterion(parts[0], labels)
    for i in range(parts.shape[0] - 1):
        loss += criterion(parts[i + 1], labels)
    return loss


class StepLosses(nn.Module):
    """A module attribute of any settings called per step: batched where the settings are
    ones the batched form reproduces (no class weight, no smoothing), else the vmap form."""

    def __init__(self, **settings):
        super().__init__()
        self.criterion = nn.CrossEntropyLoss(**settings)

    def forward(self, x, y):
        loss = 0
        for t in range(x.shape[0]):
            loss = loss + self.criterion(x[t], y[t])
        return loss / x.shape[0]


class JointLosses(nn.Module):
    """An ``nn.MSELoss`` attribute called per joint on weighted heatmaps (pose estimation)."""

    def __init__(self, reduction="mean"):
        super().__init__()
        self.criterion = nn.MSELoss(reduction=reduction)

    def forward(self, pred, gt, weight):
        loss = 0
        for j in range(pred.shape[1]):
            loss += 0.5 * self.criterion(pred[:, j] * weight[:, j], gt[:, j] * weight[:, j])
        return loss / pred.shape[1]


class PaddedSteps(nn.Module):
    """The functional call with its ``ignore_index`` an attribute: an int behind a check."""

    def __init__(self, pad):
        super().__init__()
        self.pad = pad

    def forward(self, x, y):
        losses = []
        for t in range(x.shape[0]):
            losses.append(F.cross_entropy(x[t], y[t], ignore_index=self.pad, reduction="sum"))
        return torch.stack(losses)


def normalized_weights(x, y, w):
    """No change: the class weight is an expression, not a name or attribute, so no check
    on its value can be formed: the vmap form, as before."""
    loss = 0
    for t in range(x.shape[0]):
        loss = loss + F.cross_entropy(x[t], y[t], weight=w / w.sum())
    return loss


# the other loss modules of op_facts.MODULE_LOSSES, of settings their batched forms take
def nll_steps(x, y):
    crit = nn.NLLLoss()
    total = 0
    for i in range(x.shape[0]):
        total = total + crit(x[i].log_softmax(-1), y[i])
    return total


def smooth_l1_steps(x, y):
    crit = nn.SmoothL1Loss(beta=0.5)
    total = 0
    for i in range(x.shape[0]):
        total = total + crit(x[i], y[i])
    return total


def huber_steps(x, y):
    crit = nn.HuberLoss(delta=2.0, reduction="sum")
    total = 0
    for i in range(x.shape[0]):
        total = total + crit(x[i], y[i])
    return total


def l1_steps(x, y):
    crit = nn.L1Loss()
    out = []
    for i in range(x.shape[0]):
        out.append(crit(x[i], y[i]))
    return torch.stack(out)


def bce_steps(x, y):
    crit = nn.BCEWithLogitsLoss()
    total = 0
    for i in range(x.shape[0]):
        total = total + crit(x[i], y[i])
    return total / x.shape[0]
