"""A sum-reduced pointwise loss module on a ragged prefix per row (a FUDGE-style token BCE:
``criterion(scores[0][i].flatten()[:lengths[i]], labels[i].flatten()[:lengths[i]])``): the
module's ``reduction`` every construction passes as a literal is pinned (module_loss_calls), its
``weight``/``pos_weight`` checked None or 0-d (masked_selections_to_where), the flattened row
named before the statement (ragged_slices_to_masks). Golden pieces with no-change cases, value /
every gradient / dtype in float32 and float64 with empty, full, negative and past-the-end
lengths and NaN/inf past them, and the runtime checks (another reduction set on the module, a
weight per element: the loop runs as written)."""
from __future__ import annotations

import re

import pytest
import torch

from passes.report import Report
from rewrite import optimize_loss
from rewrite.frontend import rewrite_function
from rewrite.testing import assert_equivalent
from tests.helpers import load_module

SOURCE = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


def token_bce(scores, labels, lengths):
    criterion = nn.BCEWithLogitsLoss(reduction='sum')
    loss = 0
    for i in range(scores.shape[1]):
        comment_scores = scores[0][i][:][:]
        comment_labels = labels[i][:]
        loss += criterion(comment_scores.flatten()[:lengths[i]], comment_labels.flatten()[:lengths[i]])
    return loss / sum(lengths)


def either_reduction(scores, labels, lengths, total):
    if total:
        criterion = nn.BCEWithLogitsLoss(reduction='sum')
    else:
        criterion = nn.BCEWithLogitsLoss()
    loss = 0
    for i in range(scores.shape[1]):
        loss += criterion(scores[0, i].flatten()[:lengths[i]], labels[i].flatten()[:lengths[i]])
    return loss


class TokenLoss(nn.Module):
    def __init__(self):
        super().__init__()
        self.crit = nn.BCEWithLogitsLoss(reduction='sum')

    def forward(self, scores, labels, lengths):
        loss = 0
        for i in range(scores.shape[1]):
            loss += self.crit(scores[0, i].flatten()[:lengths[i]], labels[i].flatten()[:lengths[i]])
        return loss


def legacy_sum(scores, labels, lengths):
    loss = 0
    s = scores[0, :, :, 0]
    for i in range(scores.shape[1]):
        loss += F.binary_cross_entropy_with_logits(
            s[i][:lengths[i]], labels[i][:lengths[i]], size_average=False)
    return loss


def flattened_twice(x, lengths):
    loss = 0
    for i in range(x.shape[0]):
        loss += x[i].flatten(0)[:lengths[i]].sum()
    return loss
'''
DTYPES = [torch.float32, torch.float64]
LENGTHS = [[3, 8, 0, 5], [8, 12, -2, 1], [-8, 4, 7, 2]]


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("ragged_module_losses"), SOURCE)


def rewritten(fn) -> tuple[str, Report]:
    report = Report(fn.__qualname__, "", 0)
    _, changed = rewrite_function(fn, report)
    return (report.rewritten_source if changed else "(unchanged)"), report


def inputs(dtype, lengths, seed=0, tail=float("nan")):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    scores = torch.randn(1, len(lengths), 8, 1, generator=gen, dtype=dtype)
    labels = (torch.rand(len(lengths), 8, generator=gen) < 0.5).to(dtype)
    past = torch.arange(8)[None, :] >= lengths.clamp(min=0)[:, None]
    scores[0, :, :, 0][past & (lengths[:, None] >= 0)] = tail  # never read by the original
    return scores.requires_grad_(), labels, lengths


def test_golden_pinned_reduction_masked_flattened_rows(user):
    code, report = rewritten(user.token_bce)
    assert "_flat = comment_scores.flatten()" in code
    assert "reduction='none'" in code  # the masked loss per element, summed
    assert "criterion.reduction == 'sum'" in code
    assert "criterion.weight is None or" in code and "criterion.pos_weight is None or" in code
    [loop] = report.loops
    assert loop.vectorized, loop


def test_golden_unpinned_reduction_is_read_from_the_module(user):
    code, report = rewritten(user.either_reduction)
    # the loss's reduction is not known: the selection has no dense form, the loop is kept
    assert "criterion.reduction ==" not in code and "binary_cross_entropy" not in code
    assert not report.loops[0].vectorized and "slice bound" in report.loops[0].reason


def test_golden_a_flatten_with_arguments_is_not_named(user):
    code, report = rewritten(user.flattened_twice)
    assert "_flat =" not in code


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("tail", [float("nan"), float("inf"), 0.5])
def test_token_bce_equivalent_value_gradients_dtype(user, dtype, lengths, tail):
    fast = optimize_loss(user.token_bce, compile=False, keep_faster=False)
    args = inputs(dtype, lengths, tail=tail)
    assert_equivalent(user.token_bce, fast, *args)
    assert fast(*args).dtype == user.token_bce(*args).dtype
    assert fast.report.loops[0].runs()["vectorized"] >= 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_legacy_size_average_keeps_the_loop(user, dtype):
    # `size_average` overrides the masked form's reduction='none': no dense form
    fast = optimize_loss(user.legacy_sum, compile=False, keep_faster=False, strict=True)
    args = inputs(dtype, LENGTHS[0], tail=0.5)
    with pytest.warns(UserWarning, match="size_average"):  # the original's deprecation
        assert_equivalent(user.legacy_sum, fast, *args)
    assert not fast.report.loops[0].vectorized
    assert "slice bound" in fast.report.loops[0].reason


@pytest.mark.parametrize("dtype", DTYPES)
def test_module_attribute_equivalent_and_checked(user, dtype):
    module = user.TokenLoss()
    fast = optimize_loss(module, compile=False, keep_faster=False)
    args = inputs(dtype, LENGTHS[1], tail=0.25)
    assert_equivalent(module, fast, *args)
    assert fast.report.loops[0].runs()["vectorized"] >= 1
    module.crit.reduction = "mean"  # changed after the rewrite: the check sees it (a sum
    assert_equivalent(module, fast, *args)  # would differ by the number of tokens)
    module.crit.reduction = "sum"
    module.crit.pos_weight = torch.full((8,), 2.0, dtype=dtype)  # broadcast over the selection
    with pytest.raises(RuntimeError):
        module(*args)  # the original's error (8 weights against fewer tokens) ...
    with pytest.raises(RuntimeError):
        fast(*args)  # ... is raised by the loop as written
    module.crit.pos_weight = torch.tensor(3.0, dtype=dtype)  # 0-d: the same on the stand-ins
    assert_equivalent(module, fast, *args)


def test_the_vmap_reason_quotes_the_users_code(user):
    """The reason the batched form was not taken names what the user wrote, not the rewrite's
    values (``_flat.shape``, ``_scores_row``)."""
    for fn in (user.token_bce, user.TokenLoss.forward):
        [loop] = rewritten(fn)[1].loops
        reason = str(loop)
        assert "vmap: `" in reason and re.search(r"`[^`]*(?<![\w.])_\w", reason) is None, reason
