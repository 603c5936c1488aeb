"""A list comprehension bound to a name in the body of a loop that stays as written (a triplet
loss drawing its positive and negative with ``random.choice`` from per-anchor index lists): the
kept loop's inner comprehensions are planned again as if not inner, in a copy of the loop, and
the analysis of what reads the list after it searched the function for that copy's statement
(``StopIteration``: pass vectorize_loops failed, the whole function ran as written after a
warning, its report listing no loops). The copy now stands in the loop's place meanwhile. A
comprehension's own target is no read or binding of the loop's name of the same spelling."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import load_module

USER_CODE = '''
import random
import torch
import torch.nn.functional as F


def random_triplet(emb, labels, margin=0.2):
    loss = 0
    n = emb.shape[0]
    for i in range(n):
        negs = [j for j in range(n) if labels[j] != labels[i]]
        poss = [j for j in range(n) if labels[j] == labels[i] and j != i]
        if not negs or not poss:
            continue
        j = random.choice(poss)
        k = random.choice(negs)
        d = (emb[i] - emb[j]).pow(2).sum() - (emb[i] - emb[k]).pow(2).sum() + margin
        loss = loss + F.relu(d)
    return loss / n
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("kept_comprehensions"), USER_CODE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_rewrite_runs_and_draws_what_the_original_draws(user, dtype):
    from rewrite import optimize_loss
    opt = optimize_loss(user.random_triplet, compile=False, strict=True)
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(8, 4, generator=g, dtype=dtype)
    labels = torch.randint(0, 3, (8,), generator=g)
    runs = []
    for fn in (user.random_triplet, opt):
        x = emb.clone().requires_grad_()
        random.seed(5)
        value = fn(x, labels)
        value.backward()
        runs.append((value.detach(), x.grad, random.random()))
    (v1, g1, r1), (v2, g2, r2) = runs
    torch.testing.assert_close(v2, v1)
    torch.testing.assert_close(g2, g1)
    assert r1 == r2 and v2.dtype == v1.dtype


def test_the_report_lists_the_kept_loops_with_their_reasons(user):
    from rewrite import explain
    report = explain(user.random_triplet)
    assert not report.fallbacks
    assert [loop.lineno for loop in report.loops] == [10, 11, 12]
    outer = report.loops[0].reason
    assert outer.startswith("random op `random.choice`")
    assert "reads `j`" not in outer and "binds `j`" not in outer, outer
