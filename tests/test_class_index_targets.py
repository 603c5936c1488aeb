"""``passes.class_index_targets``: a vmapped loop of per-item class losses raises eager's error
for a class-index target of a dtype eager refuses (int32, bool; uint8 of 2 dims), where
functorch's composites return a loss; int64 and 1-d uint8 targets (functorch's composites refuse
uint8: the call fell back with a warning) and class probabilities give eager's values."""
from __future__ import annotations

import traceback

import pytest
import torch
import torch.nn.functional as F

from passes.class_index_targets import cross_entropy
from rewrite import optimize_loss


def per_item_ce(logits, labels):
    total = 0
    for i in range(logits.shape[0]):
        total = total + F.cross_entropy(logits[i], labels[i])
    return total


def per_item_weighted_nll(logp, labels, weight):
    total = 0
    for i in range(logp.shape[0]):
        total = total + F.nll_loss(logp[i], labels[i], weight=weight)
    return total


def _inputs(dtype, spatial=()):
    """Items of [4, 5, *spatial] log-probabilities: with a spatial dim the loop is vmapped
    (its batched form takes items of at most 2 dims)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, *spatial, generator=gen).log_softmax(2).requires_grad_()
    return x, torch.randint(0, 2, (3, 4, *spatial), generator=gen).to(dtype)


REFUSED = [(dtype, spatial) for dtype in (torch.int32, torch.bool, torch.int16)
           for spatial in ((), (6,))] + [(torch.uint8, (6,))]  # eager's 2-d form wants int64


@pytest.mark.parametrize(("dtype", "spatial"), REFUSED, ids=str)
@pytest.mark.parametrize("fn", [per_item_ce, per_item_weighted_nll], ids=lambda f: f.__name__)
def test_a_target_eager_refuses_raises_the_originals_error(fn, dtype, spatial):
    x, t = _inputs(dtype, spatial)
    extra = (torch.rand(5),) if fn is per_item_weighted_nll else ()
    with pytest.raises(RuntimeError) as want:
        fn(x, t, *extra)
    fast = optimize_loss(fn, compile=False)
    with pytest.raises(RuntimeError) as got:
        fast(x, t, *extra)
    assert str(got.value) == str(want.value)
    assert fast.report.loops[0].vectorized
    lines = [f.lineno for f in traceback.extract_tb(got.tb) if f.filename == __file__]
    assert fn.__code__.co_firstlineno + 3 in lines  # raised from the user's line


@pytest.mark.parametrize(("dtype", "spatial"), [(torch.long, ()), (torch.long, (6,)),
                                               (torch.uint8, ())], ids=str)
@pytest.mark.parametrize("fn", [per_item_ce, per_item_weighted_nll], ids=lambda f: f.__name__)
def test_targets_eager_takes_give_its_values_with_no_fallback(fn, dtype, spatial):
    x, t = _inputs(dtype, spatial)
    extra = (torch.rand(5),) if fn is per_item_weighted_nll else ()
    fast = optimize_loss(fn, compile=False, strict=True)
    want, got = fn(x, t, *extra), fast(x, t, *extra)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, x)[0], torch.autograd.grad(want, x)[0])


def test_class_probabilities_pass_through():
    x = torch.randn(3, 4, 5)
    p = torch.rand(3, 4, 5).softmax(-1)
    torch.testing.assert_close(torch.vmap(cross_entropy)(x, p),
                               torch.stack([F.cross_entropy(a, b) for a, b in zip(x, p)]))
