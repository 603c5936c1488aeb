"""What the compiled path promises: a compiled result that differs from the eager rewritten one
never reaches the user, and second-order gradients are correct or refused loudly."""
from __future__ import annotations

import warnings

import pytest
import torch

from rewrite import RewriteError, RewriteWarning, assert_equivalent, optimize_loss
from tests.helpers import load_module

USER_CODE = '''
import torch

def cubed(pred, target):
    total = 0
    for i in range(pred.shape[0]):
        total = total + ((pred[i] - target[i]) ** 3).sum()
    return total

def sine(pred, target):
    return (pred.sin() * target).sum()

def summed(pred, target):
    out = torch.zeros_like(pred)
    for i in range(pred.shape[0]):
        out[i] = pred[i] + target[i]
    return out.sum()

def penalty(critic, x):
    x = x.detach().requires_grad_(True)
    g, = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    total = 0.0
    for i in range(g.shape[0]):
        total = total + (g[i].norm() - 1) ** 2
    return total / g.shape[0]

def nearest(points, refs):
    total = 0
    for p in points:
        total = total + ((p - refs) ** 2).sum(-1).min()
    return total

def with_prediction(pred, target):
    total = 0
    for i in range(pred.shape[0]):
        total = total + ((pred[i] - target[i]) ** 2).sum()
    return total, pred
'''


@pytest.fixture
def user(tmp_path):
    return load_module(tmp_path, USER_CODE)


def _inputs(dtype, rows=4):
    gen = torch.Generator().manual_seed(5)
    pred = torch.randn(rows, 3, generator=gen, dtype=dtype, requires_grad=True)
    return pred, torch.randn(rows, 3, generator=gen, dtype=dtype)


def _rewrite_warnings(caught):
    return [str(w.message) for w in caught if w.category is RewriteWarning]


def _perturbing(gm, example_inputs):
    """A backend that compiles wrongly: every floating output 1% too large (and its gradient)."""
    def run(*args):
        return tuple(o * 1.01 if isinstance(o, torch.Tensor) and o.is_floating_point() else o
                     for o in gm(*args))
    return run


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_miscompiled_signature_runs_the_eager_rewrite(user, dtype):
    fn = optimize_loss(user.cubed, backend=_perturbing)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert_equivalent(user.cubed, fn, *_inputs(dtype))
        assert_equivalent(user.cubed, fn, *_inputs(dtype, rows=6))  # a new signature: checked too
    found = _rewrite_warnings(caught)
    assert len(found) == 2 and all("the eager rewritten function runs" in w for w in found)
    assert "differs from the eager rewritten function: output 0" in found[0]
    assert "gradient of argument 0" in found[0]


def test_strict_raises_on_a_miscompiled_signature(user):
    fn = optimize_loss(user.cubed, backend=_perturbing, strict=True)
    with pytest.raises(RewriteError, match="differs from the eager rewritten function"):
        fn(*_inputs(torch.float32))


def test_verify_compiled_false_trusts_the_compiler(user):
    fn = optimize_loss(user.cubed, backend=_perturbing, verify_compiled=False)
    pred, target = _inputs(torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = fn(pred, target)
    assert not _rewrite_warnings(caught)
    assert torch.allclose(got, user.cubed(pred, target) * 1.01)  # what the check is there for


@pytest.mark.parametrize("name", ["cubed", "sine"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_second_order_gradients_are_right_or_refused(user, name, dtype):
    original = getattr(user, name)
    pred, target = _inputs(dtype)

    def second_order(fn):
        g, = torch.autograd.grad(fn(pred, target), pred, create_graph=True)
        return torch.autograd.grad(g.sum(), pred, allow_unused=True)[0]

    want = second_order(original)
    got = second_order(optimize_loss(original, compile=False))
    assert got.dtype == dtype and torch.allclose(got, want)
    # Before: None for `cubed` (its backward saves no input), an error for `sine`.
    with pytest.raises(RuntimeError, match=r"create_graph=True.*compile=False"):
        second_order(optimize_loss(original, backend="aot_eager"))
    # First-order gradients through the compiled function are unaffected.
    assert_equivalent(original, optimize_loss(original, backend="aot_eager"), pred, target)


@pytest.mark.parametrize("hoist", [True, False])
def test_eager_backend_second_order_gradients_are_right_or_refused(user, hoist):
    # The rewrite of `nearest` calls an autograd.Function (`set_distances`); Dynamo's form of it
    # saves its forward's values detached: with backend="eager" the first-order gradient came
    # back without a graph, and a penalty on it was a constant (no second-order gradient, no
    # error). A graph holding one refuses now; one without keeps eager's second order.
    points, refs = _inputs(torch.float64, rows=5)
    fn = optimize_loss(user.nearest, backend="eager", hoist=hoist, keep_faster=False)
    assert_equivalent(user.nearest, fn, points, refs)
    for _ in range(2):  # the checked first call and a steady one
        with pytest.raises(RuntimeError, match=r"create_graph=True.*compile=False"):
            torch.autograd.grad(fn(points, refs), points, create_graph=True)
    pred, target = _inputs(torch.float64)
    fn = optimize_loss(user.cubed, backend="eager", hoist=hoist, keep_faster=False)
    g, = torch.autograd.grad(fn(pred, target), pred, create_graph=True)
    torch.testing.assert_close(torch.autograd.grad(g.sum(), pred)[0], 6 * (pred - target))


@pytest.mark.parametrize("backend", ["inductor", "aot_eager"])
@pytest.mark.parametrize("hoist", [True, False])
def test_a_create_graph_backward_through_a_linear_loss_is_refused(user, backend, hoist):
    # A linear loss: AOTAutograd's own double backward gives None here, not an error.
    fn = optimize_loss(user.summed, backend=backend, hoist=hoist, keep_faster=False)
    pred, target = _inputs(torch.float64)
    assert_equivalent(user.summed, fn, pred, target)
    for _ in range(2):  # the checked first call and a steady one
        with pytest.raises(RuntimeError, match=r"create_graph=True.*compile=False"):
            torch.autograd.grad(fn(pred, target), pred, create_graph=True)
    first, = torch.autograd.grad(fn(pred, target), pred)  # first order: the same after a refusal
    assert torch.equal(first, torch.ones_like(pred))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_callers_own_graph_keeps_its_second_order_gradients(user, dtype):
    # Before: a hook on every output's grad_fn, on every call, also on a tensor the function
    # returns as it got it, whose grad_fn is the caller's: their own double backward raised.
    fn = optimize_loss(user.with_prediction, keep_faster=False)
    w = torch.randn(4, 3, dtype=dtype, requires_grad=True)
    target = torch.randn(4, 3, dtype=dtype)
    for _ in range(2):
        loss, pred = fn(w ** 3, target)
        first, = torch.autograd.grad(pred.sum(), w, create_graph=True)
        second, = torch.autograd.grad(first.sum(), w)
        assert second.dtype == dtype and torch.allclose(second, 6 * w.detach())
        with pytest.raises(RuntimeError, match=r"create_graph=True.*compile=False"):
            torch.autograd.grad(loss, w, create_graph=True)
    want = user.with_prediction(w ** 3, target)[0]
    assert torch.allclose(loss, want)
    assert torch.allclose(torch.autograd.grad(loss, w)[0], torch.autograd.grad(want, w)[0])


@pytest.mark.parametrize("backend", ["inductor", "aot_eager"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_loss_taking_a_gradient_penalty_warns_once_for_every_batch_size(user, backend, dtype):
    # WGAN-GP / R1: the loss itself takes `autograd.grad(..., create_graph=True)` through the
    # compiled graph, which refuses it at any size: the eager rewrite runs, with one warning for
    # every batch size (before: one per size, as for a failure that depends on sizes)
    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    critic = critic.to(dtype)
    fn = optimize_loss(user.penalty, backend=backend, keep_faster=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for rows in (8, 5, 1, 8):
            x = torch.randn(rows, 3, dtype=dtype)
            want, got = user.penalty(critic, x), fn(critic, x)
            grads = [torch.autograd.grad(v, list(critic.parameters()), allow_unused=True,
                                         materialize_grads=True) for v in (want, got)]
            assert got.dtype == dtype and torch.allclose(got, want)
            assert all(torch.allclose(a, b) for a, b in zip(*grads))
    found = _rewrite_warnings(caught)
    assert len(found) == 1 and "create_graph=True" in found[0], found
