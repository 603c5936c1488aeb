"""``F.pairwise_distance`` per pair, as contrastive losses of siamese networks write it (Hadsell et
al.: every pair ``i < j`` of a batch, the squared distance for a same-label pair, the squared hinge
``relu(margin - d)`` otherwise): a new-user trial found the pair loop kept, with "would also run
on iterations its tensor condition excludes", because the registry did not know the op. It is
the norm of ``x1 - x2 + eps``: finite with a bounded gradient on any finite input (``total``),
so the inner ``range(i + 1, n)`` becomes masked iterations and both loops vectorize."""
from __future__ import annotations

import pytest
import torch

from tests.helpers import equivalent_report, load_module

DTYPES = (torch.float32, torch.float64)

PAIRS = """
import torch
import torch.nn.functional as F

def contrastive_all_pairs(emb, labels, margin=1.0):
    n = emb.size(0)
    loss = 0.
    count = 0
    for i in range(n):
        for j in range(i + 1, n):
            d = F.pairwise_distance(emb[i:i + 1], emb[j:j + 1])
            if labels[i] == labels[j]:
                loss = loss + d.pow(2).sum()
            else:
                loss = loss + F.relu(margin - d).pow(2).sum()
            count += 1
    return loss / count

def one_pair_each(a, b):
    total = 0
    for i in range(a.size(0)):
        total = total + F.pairwise_distance(a[i], b[i], p=1.0)
    return total
"""


def _embeddings(dtype, special):
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(10, 6, generator=g, dtype=dtype)
    if special == "ties":  # equal rows: the distance is the norm of eps alone
        emb[3], emb[5] = emb[1], emb[4]
    elif special == "nan":
        emb[2, 1] = float("nan")
    elif special == "inf":
        emb[7, 0] = float("inf")
    return emb.requires_grad_(), torch.tensor([0, 1, 0, 1, 2, 2, 0, 1, 2, 0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("special", (None, "ties", "nan", "inf"))
def test_pair_loop_vectorizes_equivalent(tmp_path, dtype, special):
    fn = load_module(tmp_path, PAIRS).contrastive_all_pairs
    report = equivalent_report(fn, *_embeddings(dtype, special))
    outer, inner = sorted(report.loops, key=lambda loop: loop.lineno)
    assert outer.vectorized and inner.vectorized, (outer.reason, inner.reason)
    assert outer.vectorized_runs == 1 and outer.original_runs == 0, str(report)


@pytest.mark.parametrize("dtype", DTYPES)
def test_unconditioned_pairs_unchanged_and_equivalent(tmp_path, dtype):
    # no condition: vectorized with or without the op's facts (the no-change case)
    fn = load_module(tmp_path, PAIRS).one_pair_each
    g = torch.Generator().manual_seed(1)
    a, b = (torch.randn(5, 4, generator=g, dtype=dtype).requires_grad_() for _ in range(2))
    (loop,) = equivalent_report(fn, a, b).loops
    assert loop.vectorized
