"""Functional losses with no batched form whose vmap has no batching rule either (torch 2.13:
``ctc_loss``, ``margin_ranking_loss``, ``soft_margin_loss``, ``triplet_margin_loss``, ...;
``OpSpec.vmap_loops``): a loop calling one per item stays as written, refused at rewrite time
with the reason. Vmapped, it ran the op once per iteration anyway, and the user saw PyTorch's
"performance drop" warning the original never gives."""
import warnings

import pytest
import torch

from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module

SOURCE = '''
import torch
import torch.nn.functional as F


def ctc_per_utterance(log_probs, targets, in_lens, tgt_lens):
    total = 0
    for b in range(log_probs.shape[1]):
        total = total + F.ctc_loss(log_probs[:, b:b + 1], targets[b:b + 1], in_lens[b:b + 1],
                                   tgt_lens[b:b + 1], reduction="sum", zero_infinity=True)
    return total / log_probs.shape[1]


def ranking_per_query(pos, neg):
    total = 0
    for q in range(pos.shape[0]):
        total = total + F.margin_ranking_loss(pos[q], neg[q], torch.ones_like(pos[q]),
                                              margin=0.2)
    return total


def triplets_per_anchor(a, p, n):
    total = 0
    for i in range(a.shape[0]):
        total = total + F.triplet_margin_loss(a[i], p[i], n[i])
    return total
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("unbatched"), SOURCE)


def inputs(name, dtype, special):
    g = torch.Generator().manual_seed(0)
    if name == "ctc_per_utterance":
        lp = torch.randn(12, 3, 5, generator=g, dtype=dtype).log_softmax(2)
        if special:
            lp[0, 0, 1] = float("-inf")
        return (lp.requires_grad_(), torch.randint(1, 5, (3, 6), generator=g),
                torch.tensor([12, 9, 7]), torch.tensor([6, 3, 5]))
    shapes = {"ranking_per_query": [(4, 6)] * 2, "triplets_per_anchor": [(4, 3, 8)] * 3}[name]
    xs = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    if special:
        xs[0][1, 0] = float("inf")
    return tuple(x.requires_grad_() for x in xs)


@pytest.mark.parametrize("special", [False, True], ids=["plain", "inf"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["ctc_per_utterance", "ranking_per_query",
                                  "triplets_per_anchor"])
def test_kept_with_the_reason_and_no_warning(user, name, dtype, special):
    fn = getattr(user, name)
    args = inputs(name, dtype, special)
    opt = optimize_loss(fn, compile=False, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning the original does not give fails the test
        assert_equivalent(fn, opt, *args)
    loop, = opt.report.loops
    assert not loop.vectorized
    assert "has no batched form, and vmap would run it once per iteration itself" in loop.reason
