"""A loss called inside ``torch.utils.checkpoint`` (non-reentrant, early stop on by default): its
forward and its recomputation during backward save the same tensors, and the recomputation's
early stop goes through the call instead of making the original run past it. A signature first
met under the checkpoint runs the original; one settled before runs what it settled on, a timed
trial's chosen form untimed."""
import warnings

import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp

from rewrite import optimize_loss


def smoothed_ce(logits, target, eps=0.1):
    total = 0.0
    for i in range(logits.shape[0]):
        lp = F.log_softmax(logits[i], -1)
        total = total + (1 - eps) * -lp[target[i]] + eps * -lp.mean()
    return total / logits.shape[0]


def _inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 5, generator=g, requires_grad=True), torch.randint(0, 5, (8,), generator=g)


def _check(fn, seed, checkpointed):
    logits, target = _inputs(seed)
    got = cp.checkpoint(fn, logits, target, use_reentrant=False) if checkpointed else fn(logits, target)
    got.backward()
    ref_logits = logits.detach().requires_grad_()
    want = smoothed_ce(ref_logits, target)
    want.backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(logits.grad, ref_logits.grad)


OPTIONS = [dict(compile=False, keep_faster=False), dict(compile=False, keep_faster=True),
           dict(backend="aot_eager", keep_faster=False), dict(backend="aot_eager", keep_faster=True)]


@pytest.mark.parametrize("warm", [0, 1, 3])
@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_checkpointed_calls_match_the_original(options, warm):
    fn = optimize_loss(smoothed_ce, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback either
        for seed in range(warm):
            _check(fn, seed, checkpointed=False)
        for seed in range(warm, warm + 4):
            _check(fn, seed, checkpointed=True)
    assert not fn.report.fallbacks
