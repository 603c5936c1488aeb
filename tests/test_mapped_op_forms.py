"""A helper a vectorized loop's vmapped body calls runs under vmap: it is rewritten so that its
ops take their forms for vmap (``mapped_op_forms``: the registry's ``vmap_fn``), whether the body
calls it by name, through an instance attribute or a local bound to a ``functools.partial`` of
it (``instance_attribute_calls.picked_helper``). A BCE with logits under vmap has NaN gradients
at infinite logits and is slower; the rewrite has eager's gradients there."""
from __future__ import annotations

import ast
import functools
import warnings

import pytest
import torch

from passes import bce_with_logits, instance_attribute_calls
from rewrite import Report, assert_equivalent, optimize_loss
from rewrite.frontend import REWRITE_OF, rewrite_function
from tests.helpers import load_module

SOURCE = '''
import functools
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

def focal(x, t, gamma=2.0, alpha=None, reduction="mean"):
    logpt = F.binary_cross_entropy_with_logits(x, t.type(x.type()), reduction="none")
    loss = (1 - torch.exp(-logpt)).pow(gamma) * logpt
    if alpha is not None:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    if reduction == "mean":
        loss = loss.mean()
    return loss

class PerClass(nn.Module):
    def __init__(self, alpha=None):
        super().__init__()
        self.loss_fn = partial(focal, alpha=alpha, gamma=2.0)

    def forward(self, x, t):
        loss = 0
        for c in range(x.shape[1]):
            loss += self.loss_fn(x[:, c], (t == c).long())
        return loss

def local_partial(x, t):
    fn = functools.partial(focal, alpha=0.25)
    loss = 0
    for c in range(x.shape[1]):
        loss = loss + fn(x[:, c], (t == c).long())
    return loss

def by_name(x, t, reduction="mean"):
    # a reduction from the caller: `focal`'s branches are not decided at the call, so it is
    # called (mapped), not inlined (inline_helper_calls)
    loss = 0
    for c in range(x.shape[1]):
        loss = loss + focal(x[:, c], (t == c).long(), 1.5, reduction=reduction)
    return loss

def bce(x, t, weight=None):
    if weight is not None:
        t = t * weight
    return F.binary_cross_entropy_with_logits(x, t, reduction="none").sum()

class PerClassBCE(nn.Module):
    def __init__(self):
        super().__init__()
        self.loss_fn = partial(bce, weight=None)

    def forward(self, x, t):
        loss = 0
        for c in range(x.shape[1]):
            loss += self.loss_fn(x[:, c], (t == c).to(x.dtype))
        return loss

def rows(p):
    total = 0
    for j in range(p.shape[0]):
        total = total + p[j].abs().sum()
    return total

def with_rows(x, t):
    loss = 0
    for c in range(x.shape[1]):
        loss = loss + rows(x[:, c]) * focal(x[:, c], (t == c).long())
    return loss

def no_loop(x, t):
    return focal(x, t) + partial(focal, gamma=1.0)(x, t)
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("mapped"), SOURCE)


def _rewritten(fn):
    """(the rewritten source of ``fn``, of the helper it binds first for a vmapped body, or
    None)."""
    rebuilt, _ = rewrite_function(fn, Report(fn.__qualname__, "", 1))
    source, _, bindings = getattr(rebuilt, REWRITE_OF)
    helper = next((v for k, v in bindings.items() if not k.endswith("_original")
                   and getattr(v, REWRITE_OF, None)), None)
    return source, helper and getattr(helper, REWRITE_OF)[0]


@pytest.mark.parametrize("name, call", [
    ("PerClass.forward", "_picked_helper(self.loss_fn, (_focal_original, _focal))(_x_row, (t == c).long())"),
    ("local_partial", "_picked_helper(fn, (_focal_original, _focal))(_x_row, (t == c).long())"),
    ("by_name", "_focal(_x_row, (t == c).long(), 1.5, reduction=reduction)"),
])
def test_golden_vmapped_body_calls_the_mapped_helper(user, name, call):
    source, helper = _rewritten(functools.reduce(getattr, name.split("."), user))
    body = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)
                and n.name == "_body")
    assert call in ast.unparse(body)
    assert "logpt = _binary_cross_entropy_with_logits(x, t.type(x.type()), reduction='none')" in helper
    assert "F.binary_cross_entropy_with_logits" not in helper
    # the loop as written calls what the names hold, as written
    assert "_focal" not in source.split("else:\n        for c in range")[1]


def test_golden_unchanged_outside_vmap(user):
    source, helper = _rewritten(user.no_loop)
    assert helper is None and source == ast.unparse(ast.parse(
        "def no_loop(x, t):\n    return focal(x, t) + partial(focal, gamma=1.0)(x, t)"))


def test_a_helper_naming_no_such_op_has_one_rewrite(user):
    """Under vmap, a helper with a loop but no op with a form for vmap has the rewrite it has
    elsewhere (one binding), the one that names one its form for vmap."""
    rebuilt, _ = rewrite_function(user.with_rows, Report("with_rows", "", 1))
    source, _, bindings = getattr(rebuilt, REWRITE_OF)
    assert "_rows(_x_row) * _focal(_x_row, (t == c).long())" in source
    assert sorted(k for k in bindings if "rows" in k or "focal" in k) == ["_focal", "_rows"]


def _inputs(dtype, seed, classes=3, scale=4.0):
    gen = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(4, classes, 5, generator=gen, dtype=dtype)
    return x.requires_grad_(), torch.randint(0, classes, (4, 5), generator=gen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("make", [lambda u: u.PerClass(), lambda u: u.PerClass(alpha=0.25),
                                  lambda u: u.local_partial, lambda u: u.by_name,
                                  lambda u: u.with_rows])
def test_equivalent(user, make, dtype):
    loss = make(user)
    fast = optimize_loss(loss, compile=False, keep_faster=False)
    for seed, scale in ((0, 1.0), (1, 40.0)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no fallback to the original
            assert_equivalent(loss, fast, *_inputs(dtype, seed, scale=scale))
    assert fast.report.loops and all(loop.vectorized for loop in fast.report.loops)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eager_gradient_at_infinite_logits(user, dtype):
    """Eager's gradient of BCE at a logit of +inf with target 0 is 1 (vmap's composite: NaN)."""
    loss = user.PerClassBCE()
    fast = optimize_loss(loss, compile=False, keep_faster=False)
    x, t = _inputs(dtype, 0)
    x.data[0, 1, :2] = torch.tensor([float("inf"), -float("inf")])
    t[0, :2] = torch.tensor([0, 1])  # one-vs-rest targets of class 1: 0 at +inf, 1 at -inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_equivalent(loss, fast, x, t)
    grad, = torch.autograd.grad(fast(x, t), x)
    assert grad.isfinite().all() and grad[0, 1, 0] == 1 and grad[0, 1, 1] == -1
    assert fast(x, t).dtype == dtype


def test_picked_helper_through_a_partial():
    def original(x, t, k=1):
        return ("original", x, t, k)

    def rewritten(x, t, k=1):
        return ("rewritten", x, t, k)

    class Sub(functools.partial):
        pass

    pick = instance_attribute_calls.picked_helper
    picked = pick(functools.partial(original, 1, k=3), (original, rewritten))
    assert picked(2) == ("rewritten", 1, 2, 3)
    other = functools.partial(rewritten, 1)
    assert pick(other, (bce_with_logits.binary_cross_entropy_with_logits, original)) is other
    sub = Sub(original, 1)  # a subclass may call otherwise: as written
    assert pick(sub, (original, rewritten)) is sub


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_real_focal_loss_through_a_partial_attribute(dtype):
    """segmentation_models.pytorch's FocalLoss: the per-class loop's vmapped body calls the
    helper held as ``functools.partial`` with the vmap form of its BCE; the same results."""
    from examples.real import seg_focal_per_class as real
    source, helper = _rewritten(real.FocalLoss.forward)
    assert "_picked_helper(self.focal_loss_fn, (_focal_loss_with_logits_original, " \
        "_focal_loss_with_logits))(cls_y_pred, cls_y_true)" in source
    assert "_binary_cross_entropy_with_logits(output, target, reduction='none')" in helper
    for seed in range(2):
        args = real.make_inputs("small", dtype, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert_equivalent(real.naive, optimize_loss(real.naive, compile=False), *args)
