"""Loops as public research code writes them, through ``optimize_loss``: asserts on shapes,
nested loops over a tensor's items, a rebound loop variable, in-place ops on temporaries,
chained-index writes, device moves and 1-element index items. Each: the same value, every
gradient and dtype (float32 and float64), and the report's run-time counts show that the
vectorized branch ran (no fallback)."""
from __future__ import annotations

import traceback
import warnings

import pytest
import torch

from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module

DTYPES = [torch.float32, torch.float64]

USER_CODE = '''
import torch
import torch.nn.functional as F
from torch.autograd import Variable


def shape_asserts(preds, targets, weight):
    loss = 0
    for p, t in zip(preds, targets):
        assert p.shape == t.shape, "predict & target shape do not match"
        if weight is not None:
            assert weight.shape[0] == p.shape[-1], "weight has {} entries".format(weight.shape[0])
        if p.dim() != 2:
            raise ValueError(f"expected 2-d items, got {p.dim()}")
        loss += (weight * (p - t) ** 2).mean()
    return loss


def centroids(embeddings):
    cs = []
    for speaker in embeddings:
        centroid = 0
        for utterance in speaker:
            centroid = centroid + utterance
        centroid = centroid / len(speaker)
        cs.append(centroid)
    return torch.stack(cs)


def tagging(output, target):
    loss = 0
    count = 0
    for i in range(target.size(0)):
        for j in range(target.size(1)):
            if target[i][j] != 0:
                loss += -torch.log(output[i][j][int(target[i][j])])
                count += 1
    return loss / count


def rebound(x, centroids):
    loss = 0
    for k, c in enumerate(centroids):
        c = c / c.norm()
        if k == 0:
            c = c * 2
        loss += (c * x).sum()
    return loss


def chained_writes(sim):
    per_item = sim.new_zeros(sim.size(0), sim.size(1))
    for j in range(len(sim)):
        for i in range(sim.size(1)):
            per_item[j][i] = -(sim[j][i][j] - ((torch.exp(sim[j][i]).sum() + 1e-6).log_()))
    return per_item.sum()


def inplace_temporaries(scores, target):
    loss = 0
    for i in range(scores.shape[0]):
        m = scores[i] - scores[i, target[i]] + 1
        m.clamp_(min=0)
        m.mul_(0.5).add_(0.1)
        m[target[i]] = 0
        loss += (m.exp().sum() + 1e-6).log_()
    return loss


def device_moves(x, y):
    device = x.device
    loss = 0
    eye = torch.eye(x.shape[0]).to(device)
    for i in range(x.shape[0]):
        t = y[i].to(device)
        w = torch.ones(x.shape[1], device=torch.device("cpu")).to(x.dtype)
        if torch.cuda.is_available():
            w = w.cuda()
        loss = loss + (w * (x[i] - t) ** 2).sum() * eye[i, i].to(x.dtype)
    return loss


def index_items(logits, labels):
    lab = labels.view(-1, 1)
    loss = 0
    for i in range(len(logits)):
        loss = loss - logits[i].log_softmax(0)[lab[i]].sum()
    return loss


def legacy_variables(logits, labels):
    # Variable(x) of old PyTorch code is a detached alias of x
    loss = 0
    for i in range(len(logits)):
        signs = Variable(2. * labels[i].to(logits.dtype) - 1.)
        if labels[i].sum() > 0:
            loss = loss + F.relu(1. - logits[i] * signs).sum() * Variable(logits[i].sigmoid()).mean()
    return loss
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("real_code"), USER_CODE)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, dtype, seed=0, grad=True):
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype).requires_grad_(grad)


INPUTS = {
    "shape_asserts": lambda dt: (_randn(4, 3, 5, dtype=dt), _randn(4, 3, 5, dtype=dt, seed=1,
                                                                     grad=False),
                                 _randn(5, dtype=dt, seed=2)),
    "centroids": lambda dt: (_randn(3, 4, 6, dtype=dt),),
    "tagging": lambda dt: (torch.rand(3, 5, 4, generator=_gen(0), dtype=dt).add(0.1)
                           .requires_grad_(), torch.randint(0, 4, (3, 5), generator=_gen(1))),
    "rebound": lambda dt: (_randn(6, dtype=dt), _randn(4, 6, dtype=dt, seed=1)),
    "chained_writes": lambda dt: (_randn(3, 4, 3, dtype=dt),),
    "inplace_temporaries": lambda dt: (_randn(5, 4, dtype=dt),
                                       torch.randint(0, 4, (5,), generator=_gen(1))),
    "device_moves": lambda dt: (_randn(5, 4, dtype=dt), _randn(5, 4, dtype=dt, seed=1)),
    "index_items": lambda dt: (_randn(5, 4, dtype=dt), torch.randint(0, 4, (5,), generator=_gen(1))),
    "legacy_variables": lambda dt: (_randn(5, 4, dtype=dt),
                                    torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1],
                                                  [0, 0, 1, 0], [0, 0, 0, 0]])),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(INPUTS))
def test_equivalent_and_the_vectorized_branch_runs(user, name, dtype):
    original = getattr(user, name)
    fast = optimize_loss(original, compile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback warns
        assert_equivalent(fast, original, *INPUTS[name](dtype))
    report = fast.report
    assert report.loops and not report.fallbacks, report
    for loop in report.loops:
        assert loop.vectorized, report
    ran = [loop for loop in report.loops if loop.vectorized_runs or loop.original_runs]
    assert ran and all(l.vectorized_runs and not l.original_runs and not l.failed_runs
                       for l in ran), report


def _raised(fn, *args):
    with pytest.raises(Exception) as info:
        fn(*args)
    return info.value, traceback.extract_tb(info.tb)[-1]


@pytest.mark.parametrize("bad, error", [
    ("target", "predict & target shape do not match"),
    ("weight", "weight has 4 entries"),
    ("rank", "expected 2-d items, got 1"),
])
def test_hoisted_checks_raise_the_original_error_from_the_users_line(user, bad, error):
    preds, targets, weight = INPUTS["shape_asserts"](torch.float64)
    args = {"target": (preds, targets[:, :, :4], weight), "weight": (preds, targets, weight[:4]),
            "rank": (preds[:, 0], targets[:, 0], weight)}[bad]
    # the rewritten function itself, not the runtime (which would run the original on an error)
    rewritten = optimize_loss(user.shape_asserts, compile=False).rewritten_function()
    assert rewritten is not user.shape_asserts
    want, want_at = _raised(user.shape_asserts, *args)
    got, got_at = _raised(rewritten, *args)
    assert type(got) is type(want) and str(got) == str(want) == error
    assert (got_at.filename, got_at.lineno) == (want_at.filename, want_at.lineno)


VALUE_ASSERTS = '''
import torch

def counted(p):
    loss = 0
    for row in p:
        assert (row > 0).all(), "negative"
        loss = loss + row.log().sum()
    return loss

def item_message(p):
    loss = 0
    for row in p:
        assert (row > 0).all(), f"negative: {row}"
        loss = loss + row.log().sum()
    return loss
'''


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_an_assert_on_item_values_counts_the_failing_items(tmp_path, dtype):
    module = load_module(tmp_path, VALUE_ASSERTS)
    fast = optimize_loss(module.counted, compile=False)
    good = (torch.rand(4, 3, generator=_gen(0), dtype=dtype) + 0.1).requires_grad_()
    assert_equivalent(fast, module.counted, good)
    [loop] = fast.report.loops
    assert loop.vectorized and loop.vectorized_runs == 1 and not loop.original_runs
    bad = good.detach().clone()
    bad[2, 1] = -1.0  # a later item fails: the same exception, from the assert's line
    rewritten = fast.rewritten_function()
    want, want_at = _raised(module.counted, bad)
    got, got_at = _raised(rewritten, bad)
    assert type(got) is AssertionError and str(got) == str(want) == "negative"
    assert (got_at.filename, got_at.lineno) == (want_at.filename, want_at.lineno)


def test_an_assert_whose_message_reads_the_item_keeps_the_loop(tmp_path):
    module = load_module(tmp_path, VALUE_ASSERTS)
    fast = optimize_loss(module.item_message, compile=False)
    fast(torch.rand(3, 2) + 0.1)
    [loop] = fast.report.loops
    # not vectorized whole: the assert stays in a residual loop (distributed) or keeps the loop
    assert loop.strategy in ("kept", "distributed") and "`assert` inside the loop" in loop.reason
