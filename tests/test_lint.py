"""The gradient-flow lint: one broken loss per finding kind (it fires, at the right line) and its
corrected version (it does not)."""
from __future__ import annotations

import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F

from rewrite import GradientFlowWarning, lint, optimize_loss
from rewrite.lint import RULES


# Each broken loss marks the line the finding must point at with `# <- kind`.
def detach_broken(pred, target):
    p = pred.detach()  # <- detach
    return ((p - target) ** 2).mean()


def detach_fixed(pred, target):
    with torch.no_grad():
        scale = target.abs().max()  # a target-only look-up: no_grad is right here
    return ((pred - target) ** 2).mean() / scale


def data_broken(pred, target):
    return ((pred.data - target) ** 2).mean()  # <- data


def data_fixed(pred, target):
    return ((pred - target) ** 2).mean()


def python_value_broken(pred, target):
    total = 0.0
    for i in range(pred.shape[0]):
        total += ((pred[i] - target[i]) ** 2).sum().item()  # <- python_value
    return torch.as_tensor(total) + pred.sum() * 0


def python_value_fixed(pred, target):
    total = 0.0
    n = 0
    for i in range(pred.shape[0]):
        total = total + ((pred[i] - target[i]) ** 2).sum()
        n += (target[i] > 0).sum().item()  # a target-only count is fine
    return total / max(n, 1)


def torch_tensor_broken(pred, target):
    per_row = torch.tensor([((pred[i] - target[i]) ** 2).sum() for i in range(pred.shape[0])])  # <- torch_tensor
    return per_row.mean() + pred.sum() * 0


def torch_tensor_fixed(pred, target):
    per_row = torch.stack([((pred[i] - target[i]) ** 2).sum() for i in range(pred.shape[0])])
    return per_row.mean()


def zero_derivative_broken(pred, target):
    return (pred.round() - target).abs().mean()  # <- zero_derivative


def zero_derivative_fixed(pred, target):
    rounded = pred + (pred.round() - pred).detach()  # straight-through estimator
    return (rounded - target).abs().mean()


def comparison_broken(pred, target):
    hard = (torch.sigmoid(pred) > 0.5)  # <- comparison
    hard = hard.float()
    inter = (hard * target).sum()
    return 1 - 2 * inter / (hard.sum() + target.sum() + 1)


def comparison_fixed(pred, target):
    soft = torch.sigmoid((torch.sigmoid(pred) - 0.5) / 0.1)
    inter = (soft * target).sum() + torch.where(pred > 0, pred, 0.0).sum() * 0  # a mask used as a mask
    return 1 - 2 * inter / (soft.sum() + target.sum() + 1)


def argmax_broken(pred, target):
    return 1 - (pred.argmax(-1) == target.argmax(-1)).float().mean()  # <- argmax


def argmax_fixed(pred, target):
    picked = pred.gather(-1, target.argmax(-1, keepdim=True))  # indices used to index: fine
    return (torch.logsumexp(pred, -1, keepdim=True) - picked).mean()


def no_grad_broken(pred, target):
    with torch.no_grad():
        weights = pred.softmax(-1)  # <- no_grad
    return (weights * target).sum()


def no_grad_fixed(pred, target):
    with torch.no_grad():
        weights = target.softmax(-1)
    return (weights * pred).sum()


def non_differentiable_broken(pred, target):
    hist = torch.histc(pred, bins=4, min=-2, max=2)  # <- non_differentiable
    return ((hist - torch.histc(target, bins=4, min=-2, max=2)) ** 2).sum() + pred.sum() * 0


def non_differentiable_fixed(pred, target):
    centres = torch.linspace(-1.5, 1.5, 4)
    soft = torch.softmax(-(pred.reshape(-1, 1) - centres) ** 2 / 0.1, dim=1).sum(0)  # soft histogram
    return ((soft - torch.histc(target, bins=4, min=-2, max=2)) ** 2).sum()


def rewrap_broken(pred, target):
    value = ((pred - target) ** 2).mean().item()
    return torch.tensor(value, requires_grad=True)  # <- rewrap


def rewrap_fixed(pred, target):
    return ((pred - target) ** 2).mean()


def inplace_saved_broken(pred, target):
    e = pred.exp()
    e.add_(1)  # <- inplace_saved
    return (e * target).sum()


def inplace_saved_fixed(pred, target):
    e = pred.exp()
    e = e + 1
    loss = 0
    for i in range(target.shape[0]):
        loss += (e[i] * target[i]).sum()  # accumulating in place into a sum is fine
    return loss


def inplace_leaf_broken(pred, target):
    pred.clamp_(-1, 1)  # <- inplace_leaf
    return ((pred - target) ** 2).mean()


def inplace_leaf_fixed(pred, target):
    return ((pred.clamp(-1, 1) - target) ** 2).mean()


def no_gradient_broken(pred, target):  # <- no_gradient
    return (target ** 2).mean() + pred.shape[0]


def no_gradient_fixed(pred, target):
    return ((pred - target) ** 2).mean()


KINDS = sorted(RULES)


def inputs():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(4, 3, generator=g).requires_grad_()
    target = torch.rand(4, 3, generator=g)
    return pred, target


def marked_line(fn, kind: str) -> int:
    lines, start = inspect.getsourcelines(fn)
    return next(start + i for i, line in enumerate(lines) if f"# <- {kind}" in line)


def test_every_rule_has_a_case():
    assert all(f"{kind}_broken" in globals() and f"{kind}_fixed" in globals() for kind in KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_fires_on_broken_version_at_its_line(kind):
    broken = globals()[f"{kind}_broken"]
    findings = [f for f in lint(broken, *inputs()) if f.kind == kind]
    assert findings, f"no {kind} finding in {lint(broken, *inputs())}"
    finding = findings[0]
    assert (finding.filename, finding.lineno) == (__file__, marked_line(broken, kind))
    assert finding.fix == RULES[kind].fix and finding.message
    assert f"{__file__}:{finding.lineno}: [{kind}]" in str(finding)
    if not kind.startswith("inplace"):
        assert finding.inputs == ["argument 'pred'"]


@pytest.mark.parametrize("kind", KINDS)
def test_silent_on_fixed_version(kind):
    assert lint(globals()[f"{kind}_fixed"], *inputs()) == []


def test_zero_and_missing_gradients_are_told_apart():
    [zero] = lint(zero_derivative_broken, *inputs())
    [missing] = lint(detach_broken, *inputs())
    assert "identically zero gradient" in zero.message
    assert "gets no gradient" in missing.message


def test_deferred_cut_names_where_it_is_used_as_a_value():
    [finding] = lint(comparison_broken, *inputs())
    assert f"used as a value at line {marked_line(comparison_broken, 'comparison') + 1}" in finding.message


def test_cut_in_a_loop_is_one_finding():
    assert len(lint(python_value_broken, *inputs())) == 1


def test_inputs_are_not_touched():
    pred, target = inputs()
    before = pred.detach().clone()
    lint(inplace_leaf_fixed, pred, target)
    lint(detach_fixed, pred, target)
    assert pred.grad is None and torch.equal(pred.detach(), before)


def test_module_parameters_are_checked():
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(3))
            self.unused = torch.nn.Parameter(torch.ones(3))

        def forward(self, pred, target):
            return ((pred * self.scale.detach() - target) ** 2).mean()

    findings = lint(Scaled(), *inputs())
    assert {f.kind for f in findings} == {"detach", "no_gradient"}
    assert {name for f in findings for name in f.inputs} == {"parameter scale", "parameter unused"}


def test_keyword_inputs_and_multiple_inputs():
    def loss(a, b, *, target):
        return ((a.detach() + b - target) ** 2).mean()

    a, target = inputs()
    b = torch.randn(4, 3, requires_grad=True)
    [finding] = lint(loss, a, b, target=target)
    assert finding.kind == "detach" and finding.inputs == ["argument 'a'"]


def test_errors_the_lint_does_not_explain_propagate():
    def loss(pred, target):
        return (pred @ target).sum()  # shape error: the user's own

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        lint(loss, *inputs())


def test_decorator_lint_option_warns_once_per_signature_at_the_users_line():
    fn = optimize_loss(detach_broken, compile=False, lint=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(*inputs())
        fn(*inputs())
    found = [w for w in caught if issubclass(w.category, GradientFlowWarning)]
    assert len(found) == 1
    assert (found[0].filename, found[0].lineno) == (__file__, marked_line(detach_broken, "detach"))


def test_decorator_lint_is_off_by_default_and_silent_under_no_grad():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimize_loss(detach_broken, compile=False)(*inputs())
        with torch.no_grad():
            optimize_loss(detach_broken, compile=False, lint=True)(*inputs())
    assert not [w for w in caught if issubclass(w.category, GradientFlowWarning)]


def test_cross_entropy_on_an_example_shaped_loss_is_clean():
    logits = torch.randn(8, 5, requires_grad=True)
    labels = torch.randint(0, 5, (8,))
    assert lint(lambda x, y: F.cross_entropy(x, y), logits, labels) == []
