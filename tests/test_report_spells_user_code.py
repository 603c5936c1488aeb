"""The report quotes the user's code, not the rewrite's: a row the body reads is spelled as read
(``x[:, c]``, ``xs[i][j]``), not as the generated parameter that carries it (``_x_row``), a
write into a tensor as written (``s[seen[u]] = v``), not as the code of its functional form
(``s.numel()``, which names only the user's names; a recommender's per-user softmax); and a
tensor made from sizes (``torch.ones(n)``) takes no gradient, so no loop is said to run as
written "while `n` takes no gradient" because of it."""
from __future__ import annotations

import re

import pytest
import torch

from rewrite import explain
from tests.helpers import load_module, optimized_and_vectorized

USER_CODE = '''
import torch
import torch.nn.functional as F


def per_class_flat(x, t):
    s = 0
    for c in range(x.shape[1]):
        s = s + (x[:, c].contiguous().roll(1) * t[:, c].contiguous().view(-1)).sum()
    return s


def nested_lists(xs, ts):
    s = 0
    for i in range(len(xs)):
        for j in range(len(xs[i])):
            s = s + F.mse_loss(xs[i][j], ts[i][j], reduction='none')
    return s


def per_anchor(f, labels):
    sim = f @ f.T
    n = f.shape[0]
    total = 0.
    count = 0
    for i in range(n):
        pos = labels == labels[i]
        pos[i] = False
        if pos.sum() == 0:
            continue
        others = torch.ones(n, dtype=torch.bool)
        others[i] = False
        log_prob = sim[i] - torch.logsumexp(sim[i][others], dim=0)
        total = total - log_prob[pos].mean()
        count += 1
    return total / count


def duration(log_pred, dur, lengths):
    loss = 0
    for i in range(log_pred.shape[0]):
        n = lengths[i]
        loss += F.mse_loss(log_pred[i, :n], torch.log(dur[i, :n].float() + 1))
    return loss / log_pred.shape[0]


def normal_consistency(normals, normals_gt, idx):
    losses = []
    for b in range(normals.shape[0]):
        gt = normals_gt[b][idx[b]]
        for i in range(normals.shape[1]):
            cos = torch.dot(normals[b, i], gt[i]) / (normals[b, i].norm() * gt[i].norm() + 1e-8)
            losses.append(1 - cos.abs())
    return torch.stack(losses).mean()


def seen_masked(scores, pos, seen):
    loss = 0
    for u in range(scores.shape[0]):
        s = scores[u].clone()
        s[seen[u]] = float('-inf')
        s[pos[u]] = scores[u, pos[u]]
        loss = loss - F.log_softmax(s, 0)[pos[u]]
    return loss / scores.shape[0]
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("spelling"), USER_CODE)


@pytest.mark.parametrize("name, quoted", [
    ("per_class_flat", "`x[:, c].contiguous().roll(...)` has no batched form"),
    ("nested_lists", "`F.mse_loss(xs[i][j], ts[i][j], reduction='none')`"),
    ("per_anchor", "`labels == labels[i]`"),
    # the ragged slice is a masked batched form, its check on the user's names (not on `.shape`
    # of a row, which the user never wrote)
    ("duration", "vmap where `2 >= lengths.dim() and dur.dim() == log_pred.dim()` does not hold"),
])
def test_a_vmap_reason_quotes_the_rows_as_the_user_reads_them(user, name, quoted):
    reasons = " ".join(loop.reason for loop in explain(getattr(user, name)).loops)
    assert quoted in reasons
    assert not re.search(r"\b_\w*_row\b", reasons), reasons


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_functional_write_is_quoted_as_the_users_write(user, dtype):
    (loop,) = explain(user.seen_masked).loops
    assert "vmap: `s[seen[u]] = float('-inf')` has no batched form" in loop.reason, loop.reason
    assert "numel" not in loop.reason
    scores = torch.randn(5, 12, dtype=dtype)
    scores[2, 3] = float("inf")
    seen = torch.tensor([[2, 3], [0, 5], [1, 1], [10, 9], [2, 7]])
    optimized_and_vectorized(user.seen_masked, scores.requires_grad_(), torch.tensor([1, 4, 0, 11, 6]),
                             seen)


def test_a_tensor_made_from_sizes_needs_no_check_that_they_take_no_gradient(user):
    (loop,) = explain(user.per_anchor).loops
    assert loop.vectorized and "takes no gradient" not in loop.reason, loop.reason
    f = torch.nn.functional.normalize(torch.randn(6, 4, dtype=torch.float64), dim=1)
    optimized_and_vectorized(user.per_anchor, f.requires_grad_(), torch.tensor([0, 1, 0, 1, 2, 2]))


def test_a_residual_inner_loop_is_quoted_as_written(user):
    # the outer loop keeps the inner loop, which runs vectorized in each iteration: its residual
    # statement is the user's `for`, not the rewrite's guard of it, and not "could not be
    # vectorized"
    outer = next(loop for loop in explain(user.normal_consistency).loops if not loop.vectorized)
    assert "`for i in range(normals.shape[1]) ...`: the inner loop at line" in outer.reason, \
        outer.reason
    assert "isinstance(" not in outer.reason.split("residual loop:")[1]
    assert "could not be vectorized" not in outer.reason
