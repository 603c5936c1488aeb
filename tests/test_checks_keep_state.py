"""The runs beside a call (``verify_compiled``'s compiled-vs-eager check, ``verify=True``) start
from the state the call starts from and leave it as they found it: a loss that updates its own
state (DINO's ``self.center`` moving average, a call counter) changes it once per call, as the
original does; an unchanged buffer autograd saved is not written back."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from rewrite import optimize_loss


class Centered(torch.nn.Module):
    """A per-view loss whose teacher is centered by a moving average, updated by a method
    (``through_method``) or in ``forward`` itself."""

    def __init__(self, through_method: bool):
        super().__init__()
        self.through_method = through_method
        self.register_buffer("center", torch.zeros(1, 8))
        self.calls = 0

    def forward(self, student, teacher):
        q = F.softmax(teacher - self.center, dim=-1)
        total = 0
        for i in range(student.shape[0]):
            total += torch.sum(-q[i] * F.log_softmax(student[i], dim=-1))
        if self.through_method:
            self.update_center(teacher)
        else:
            with torch.no_grad():
                self.center = self.center * 0.9 + teacher.mean(0, keepdim=True) * 0.1
        self.calls += 1
        return total / student.shape[0]

    @torch.no_grad()
    def update_center(self, teacher):
        self.center = self.center * 0.9 + teacher.mean(0, keepdim=True) * 0.1


@pytest.mark.parametrize("through_method", [False, True], ids=["inline", "method"])
@pytest.mark.parametrize("options", [dict(backend="aot_eager"), dict(compile=False, verify=True)],
                         ids=["compiled check", "verify"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_state_changes_once_per_call(through_method, options, dtype):
    mine, theirs = Centered(through_method).to(dtype), Centered(through_method).to(dtype)
    fast = optimize_loss(mine, **options)
    for k in range(3):
        student = torch.randn(4, 8, dtype=dtype, requires_grad=True)
        teacher = torch.randn(4, 8, dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no fallback: the check's runs agree
            got = fast(student, teacher)
        want = theirs(student, teacher)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(mine.center, theirs.center, rtol=0, atol=0)
        assert mine.calls == theirs.calls == k + 1
    assert not fast.report.fallbacks


class Scaled(torch.nn.Module):
    """A buffer autograd saves (``x * self.w`` saves ``w`` for ``x``'s gradient) next to state the
    call changes (``self.calls``)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("w", torch.arange(1.0, 4.0))
        self.calls = 0

    def forward(self, x):
        total = 0
        for i in range(x.shape[0]):
            total += (x[i] * self.w).sum()
        self.calls += 1
        return total


def test_an_unchanged_saved_buffer_is_not_written_back():
    module = Scaled()
    fast = optimize_loss(module, backend="aot_eager")
    x = torch.randn(5, 3, requires_grad=True)
    version = module.w._version
    fast(x).backward()  # a write back into `w` would fail this backward's version check
    assert module.w._version == version and module.calls == 1
    torch.testing.assert_close(x.grad, module.w.expand(5, 3))


def test_the_lint_run_keeps_the_state():
    mine, theirs = Centered(True), Centered(True)
    fast = optimize_loss(mine, compile=False, lint=True)
    student, teacher = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8)
    torch.testing.assert_close(fast(student, teacher), theirs(student, teacher))
    torch.testing.assert_close(mine.center, theirs.center, rtol=0, atol=0)
    assert mine.calls == theirs.calls == 1


class Whitened(torch.nn.Module):
    """Barlow Twins' cross-correlation of batch-normalized views (BatchNorm1d inside the loss:
    running statistics updated in train mode), its off-diagonal term by a loop."""

    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(6, affine=False)

    def forward(self, z1, z2):
        c = self.bn(z1).T @ self.bn(z2) / z1.shape[0]
        off = 0.0
        for k in range(c.shape[0]):
            off = off + c[k, :k].pow(2).sum() + c[k, k + 1:].pow(2).sum()
        return torch.diagonal(c).add(-1).pow(2).sum() + 0.005 * off


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_submodule_the_rewrite_ran_before_failing_is_put_back(dtype):
    # a batch of 1 (a last, smaller batch): the rewrite's BatchNorm counted the batch, then
    # raised; the original ran on that state, counting it a second time, and raised too. A
    # method or module of `self` called in the body now makes `self` an argument the fallback
    # puts back (`passes/mutated_arguments.py`)
    mine, theirs = Whitened().to(dtype), Whitened().to(dtype)
    fast = optimize_loss(mine, compile=False)
    for rows in (8, 1, 8):
        z1, z2 = torch.randn(rows, 6, dtype=dtype), torch.randn(rows, 6, dtype=dtype)
        errors = []
        for fn in (fast, theirs):
            try:
                errors.append(fn(z1.requires_grad_(), z2))
            except ValueError as exc:
                errors.append(str(exc))
        assert type(errors[0]) is type(errors[1])
        for name, want in theirs.bn.state_dict().items():
            torch.testing.assert_close(mine.bn.state_dict()[name], want, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_running_statistics_the_checks_update_are_put_back(backend):
    # batch_norm's kernel writes its running statistics without moving their version counter:
    # a put-back that trusted the counter left the compiled-vs-eager check's updates in, three
    # updates in a new signature's first call (two with aot_eager). They are put back without
    # moving it either: the backward of an earlier call's graph, which saved them, still runs.
    mine, theirs = Whitened(), Whitened()
    fast = optimize_loss(mine, backend=backend)
    pending = []
    for rows in (8, 8, 5, 12):
        z1, z2 = torch.randn(rows, 6, requires_grad=True), torch.randn(rows, 6)
        got, want = fast(z1, z2), theirs(z1, z2)
        torch.testing.assert_close(got, want)
        pending.append(got)
        for name, value in theirs.bn.state_dict().items():
            torch.testing.assert_close(mine.bn.state_dict()[name], value, rtol=0, atol=0)
    torch.stack(pending).sum().backward()  # every graph saved the statistics of its call
    assert not fast.report.fallbacks


def broadcast_rows(pred, target):
    """Per-row L1 plus an MSE against a target of another shape, which F.mse_loss warns of."""
    total = 0
    for i in range(pred.shape[0]):
        total = total + (pred[i] - target[i]).abs().sum()
    warnings.warn("a warning of the loss itself")
    return total + F.mse_loss(pred, target)


@pytest.mark.parametrize("options", [dict(backend="eager"), dict(compile=False, verify=True)],
                         ids=["compiled check", "verify"])
def test_the_runs_beside_the_call_give_no_warnings_of_the_loss(options):
    # the compiled-vs-eager check's two runs (verify's run of the original) gave the loss's
    # warnings again: three times per new signature's first call under an "always" filter
    fast = optimize_loss(broadcast_rows, keep_faster=False, **options)
    for rows in (4, 4, 6):
        pred, target = torch.randn(rows, 3, requires_grad=True), torch.randn(rows, 1)
        counts = []
        for fn in (broadcast_rows, fast):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fn(pred, target)
            counts.append(sorted(str(w.message)[:40] for w in caught))
        assert counts[1] == counts[0] and len(counts[0]) > 1
