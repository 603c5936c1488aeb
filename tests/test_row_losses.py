"""A class loss per loop item, batched through ``row_losses.loss_of_rows``: the rows flattened in
their memory order (no copy of a loop over the second dim), the loop's values and gradients
for loops over either dim, with ignored labels, ties, NaN and inf; an item of one row (``x[i]``
[C], a 0-d target) is a row of the batch, one call without vmap."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from passes.row_losses import loss_of_rows
from rewrite.testing import assert_equivalent
from tests.loop_helpers import build

OVER_STEPS = """
def f(logits, targets):
    loss = 0
    for t in range(logits.shape[1]):
        loss += F.cross_entropy(logits[:, t], targets[:, t]{kw})
    return loss
"""

OVER_ITEMS = """
def f(logits, targets):
    loss = 0
    for i in range(logits.shape[0]):
        loss += F.cross_entropy(logits[i], targets[i]{kw})
    return loss
"""


def test_a_loop_over_the_second_dim_flattens_its_rows_as_a_view():
    logits, targets = torch.randn(4, 6, 5), torch.randint(0, 5, (4, 6))
    seen = []

    def loss(x, t, reduction):
        seen.append(x.data_ptr() == logits.data_ptr() and x.is_contiguous())
        return F.cross_entropy(x, t, reduction=reduction)
    per_row = loss_of_rows(loss, logits.movedim(1, 0), targets.movedim(1, 0), "none")
    assert seen == [True]
    torch.testing.assert_close(per_row, F.cross_entropy(logits.movedim(1, 0).flatten(0, 1),
                                                        targets.movedim(1, 0).flatten(),
                                                        reduction="none").view(6, 4))
    assert loss_of_rows(loss, logits, targets, "none").shape == (4, 6) and seen == [True, True]


def special_logits(dtype: torch.dtype) -> torch.Tensor:
    x = torch.randn(4, 6, 5, dtype=dtype, generator=torch.Generator().manual_seed(1))
    x[0, 1] = 0.5  # a row of ties
    x[1, 2, 3] = float("nan")
    x[2, 3, 0] = float("inf")
    x[3, 4, 1] = -float("inf")
    return x


@pytest.mark.parametrize("src", [OVER_STEPS, OVER_ITEMS])
@pytest.mark.parametrize("kw", ["", ", reduction='sum'", ", ignore_index=2"])
def test_batched_class_losses_are_the_loops(src, kw):
    original, optimized, code, report = build(src.format(kw=kw))
    assert report.loops[0].strategy == "batched" and "_loss_of_items(F.cross_entropy" in code \
        or "_loss_of_rows(F.cross_entropy" in code, code
    targets = torch.randint(0, 5, (4, 6), generator=torch.Generator().manual_seed(2))
    for dtype in (torch.float32, torch.float64):
        logits = torch.randn(4, 6, 5, dtype=dtype, generator=torch.Generator().manual_seed(3))
        assert_equivalent(original, optimized, logits.requires_grad_(), targets)
        assert_equivalent(original, optimized, special_logits(dtype).requires_grad_(), targets)


ITEM_ROWS = """
def f(logits, targets):
    loss = 0
    for i in range(logits.shape[0]):
        loss += F.{loss}(logits[i], targets[i]{kw})
    return loss / logits.shape[0]
"""


def _row_logits(dtype: torch.dtype) -> torch.Tensor:
    x = torch.randn(7, 5, dtype=dtype, generator=torch.Generator().manual_seed(4))
    x[1] = 0.5  # ties
    x[2, 3] = float("nan")
    x[3, 0] = x[4, 1] = x[4, 2] = float("inf")  # one at the target, one not
    x[5, 1] = -float("inf")
    x[6] = -float("inf")  # a row of -inf only
    return x


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("kw", ["", ", reduction='sum'", ", ignore_index=2", ", reduction='sum', ignore_index=2"])
def test_items_of_one_row_are_the_batchs_rows_without_vmap(loss, kw, monkeypatch):
    original, optimized, code, _ = build(ITEM_ROWS.format(loss=loss, kw=kw))
    vmapped = []
    vmap = torch.vmap
    monkeypatch.setattr(torch, "vmap", lambda *a, **k: vmapped.append(a) or vmap(*a, **k))
    targets = torch.tensor([0, 2, 3, 1, 2, 4, 0])  # target 2 ignored: each item's mean is NaN
    for dtype in (torch.float32, torch.float64):
        for logits in (torch.randn(7, 5, dtype=dtype), _row_logits(dtype)):
            assert_equivalent(original, optimized, logits.requires_grad_(), targets)
    assert not vmapped, code
    per_item = torch.randn(3, 4, 5)  # items of rows [4, 5]: still one call
    assert_equivalent(original, optimized, per_item.requires_grad_(), torch.randint(0, 5, (3, 4)))
    assert not vmapped, code
