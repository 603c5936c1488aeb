"""Losses calling ``nn`` activation modules inside loops under tensor conditions, for
``tests/test_module_activation_calls.py`` (``module_loss_calls`` reads the classes' sources:
they must live in a real module)."""
import torch
import torch.nn as nn

_log_sigmoid = nn.LogSigmoid()  # a module of the module, called by name


class CircleLoss(nn.Module):
    """Per-anchor circle loss: the anchor's softplus only where it has positives and negatives."""

    def __init__(self, m=0.25, gamma=8.0):
        super().__init__()
        self.m, self.gamma = m, gamma
        self.soft_plus = nn.Softplus(beta=2.0, threshold=5.0)

    def forward(self, sim, labels):
        losses = []
        for i in range(sim.shape[0]):
            sp = sim[i][labels == labels[i]]
            sn = sim[i][labels != labels[i]]
            if sp.numel() == 0 or sn.numel() == 0:
                continue
            ap = torch.clamp_min(-sp.detach() + 1 + self.m, min=0.)
            an = torch.clamp_min(sn.detach() + self.m, min=0.)
            logit_p = -ap * (sp - (1 - self.m)) * self.gamma
            logit_n = an * (sn - self.m) * self.gamma
            losses.append(self.soft_plus(torch.logsumexp(logit_n, dim=0)
                                         + torch.logsumexp(logit_p, dim=0)))
        return torch.stack(losses).mean()


class Activations(nn.Module):
    """Every activation of the table, each with its own settings, under a tensor condition."""

    def __init__(self):
        super().__init__()
        self.lrelu = nn.LeakyReLU(negative_slope=0.3)
        self.gelu = nn.GELU(approximate="tanh")
        self.tanh = nn.Tanh()
        self.sig = nn.Sigmoid()
        self.silu = nn.SiLU()
        self.log_sig = nn.LogSigmoid()
        self.relu = nn.ReLU()

    def forward(self, x, keep):
        total = x.new_zeros(())
        for i in range(x.shape[0]):
            if keep[i] > 0:
                h = self.lrelu(x[i]) * self.gelu(x[i]) + self.tanh(x[i]) * self.sig(x[i])
                total = total + (h + self.silu(x[i]) - self.log_sig(x[i]) + self.relu(x[i])).sum()
        return total


def masked_log_likelihood(x, y, keep):
    """A module of the module: the row's log-sigmoid only where it is kept."""
    total = x.new_zeros(())
    for i in range(x.shape[0]):
        if keep[i]:
            total = total - (_log_sigmoid(x[i]) * y[i]).sum()
    return total


class Scaled(nn.Softplus):
    """A subclass with its own forward: the runtime check runs the loop as written."""

    def forward(self, input):
        return 2 * super().forward(input)


class SoftmaxRows(nn.Module):
    """No change: ``nn.Softmax`` is not in the table (its batched form needs a literal dim)."""

    def __init__(self):
        super().__init__()
        self.sm = nn.Softmax(dim=0)

    def forward(self, x, keep):
        total = x.new_zeros(())
        for i in range(x.shape[0]):
            if keep[i] > 0:
                total = total + self.sm(x[i]).max()
        return total
