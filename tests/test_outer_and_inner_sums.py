"""A sum the outer body adds to and an inner loop adds to as well (skip-gram with negative
sampling: the context's term, then one term per negative): the outer loop vectorizes, the inner
loop's partial starting from its start's type and dtype (before: the partial's
``identity_of(loss, 0)`` was a read of the running sum, and the outer loop was kept as a
recurrence); the inner loop's unit slices after the outer index (``logits[b, t:t + 1]``). Equivalence of values, every gradient and dtype (float32, float64, a float64 or
vector start, an integer count), with the run-time counts."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module

SOURCE = """
import torch
import torch.nn.functional as F


def skip_gram(emb_in, emb_out, centers, contexts, negatives, start):
    loss = start
    for k in range(len(centers)):
        c, o = centers[k], contexts[k]
        loss = loss - F.logsigmoid(torch.dot(emb_in[c], emb_out[o]))
        for n in negatives[k]:
            loss = loss - F.logsigmoid(-torch.dot(emb_in[c], emb_out[n]))
    return loss / len(centers)


def inner_first(emb_in, emb_out, centers, contexts, negatives, start):
    loss = start
    for k in range(len(centers)):
        for n in negatives[k]:
            loss = loss + (emb_in[centers[k]] - emb_out[n]) ** 2
        if contexts[k] % 2 == 0:
            loss = loss + emb_in[contexts[k]].abs()
    return loss


def token_steps(logits, targets, weights):
    total = torch.zeros((), dtype=logits.dtype)
    for b in range(logits.shape[0]):
        total = total + 0.1 * logits[b].pow(2).mean()
        for t in range(logits.shape[1]):
            total = total + weights[b] * F.cross_entropy(logits[b, t:t + 1], targets[b, t:t + 1])
    return total / logits.shape[0]


def counts(x, start):
    n = start
    for k in range(x.shape[0]):
        n += 1
        for v in x[k]:
            n += (v > 0).sum()
    return n
"""


def _inputs(dtype, start):
    g = torch.Generator().manual_seed(0)
    v, d, b, k = 30, 6, 8, 4
    return (torch.randn(v, d, generator=g, dtype=dtype).requires_grad_(),
            torch.randn(v, d, generator=g, dtype=dtype).requires_grad_(),
            torch.randint(0, v, (b,), generator=g), torch.randint(0, v, (b,), generator=g),
            torch.randint(0, v, (b, k), generator=g), start)


STARTS = {"int": lambda d: 0, "float64 0-d": lambda d: torch.zeros((), dtype=torch.float64),
          "float32 0-d": lambda d: torch.zeros(()), "vector": lambda d: torch.zeros(6, dtype=d)}


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("sums"), SOURCE)


def _vectorized_outer(fast):
    outer = min(fast.report.loops, key=lambda loop: loop.lineno)
    return outer.vectorized and outer.vectorized_runs > 0 and outer.original_runs == 0


@pytest.mark.parametrize("start", sorted(STARTS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", ["skip_gram", "inner_first"])
def test_outer_and_inner_updates(user, name, dtype, start):
    original = getattr(user, name)
    fast = optimize_loss(original, compile=False, strict=True, keep_faster=False)
    inputs = _inputs(dtype, STARTS[start](dtype))
    assert_equivalent(original, fast, *inputs)
    assert fast(*inputs).dtype == original(*inputs).dtype
    other = isinstance(inputs[-1], torch.Tensor) and inputs[-1].dtype != dtype
    # (a 0-d start of another dtype than vector items may promote: the loop runs as written)
    assert _vectorized_outer(fast) or other and name == "inner_first", fast.report


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_unit_slices_after_the_outer_index(user, dtype):
    # `logits[b, t:t + 1]`: the outer index takes its dim first (the inner loop was kept: a
    # slice at a varying position)
    fast = optimize_loss(user.token_steps, compile=False, strict=True, keep_faster=False)
    g = torch.Generator().manual_seed(2)
    inputs = (torch.randn(4, 5, 7, generator=g, dtype=dtype).requires_grad_(),
              torch.randint(0, 7, (4, 5), generator=g), torch.rand(4, generator=g, dtype=dtype))
    assert_equivalent(user.token_steps, fast, *inputs)
    assert all(loop.vectorized for loop in fast.report.loops) and _vectorized_outer(fast)


@pytest.mark.parametrize("start", [0, torch.tensor(0), torch.tensor(0.5, dtype=torch.float64)],
                         ids=["int", "int64 0-d", "float64 0-d"])
def test_integer_counts(user, start):
    fast = optimize_loss(user.counts, compile=False, strict=True, keep_faster=False)
    x = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(1))
    want, got = user.counts(x, start), fast(x, start)
    assert type(got) is type(want) and got.dtype == want.dtype and torch.equal(got, want)
    assert _vectorized_outer(fast), fast.report
