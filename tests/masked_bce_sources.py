"""Losses calling ``nn.BCEWithLogitsLoss`` under tensor conditions in loops, for
``tests/test_masked_bce_with_logits.py`` (``module_loss_calls`` reads the classes' sources: they
must live in a real module)."""
import torch
import torch.nn as nn


class ClassBalancedBCE(nn.Module):
    """A per-class loss over the classes with a positive (mmdet/YOLO-style class balancing)."""

    def __init__(self, weight=None):
        super().__init__()
        self.bce = nn.BCEWithLogitsLoss(weight=weight, reduction="sum")

    def forward(self, x, t):
        pos = t > 0.5
        loss = x.new_zeros(())
        for c in range(x.shape[1]):
            if pos[:, c].sum() > 0:
                loss = loss + self.bce(x[:, c], t[:, c]) / pos[:, c].sum()
        return loss


def skipped_rows(x, t, y):
    """A local criterion after a guarded ``continue`` on an ignored label."""
    crit = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(2.0, dtype=x.dtype))
    total = 0
    for i in range(x.shape[0]):
        if y[i] == -100:
            continue
        total = total + crit(x[i], t[i])
    return total
