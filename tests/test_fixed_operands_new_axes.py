"""A fixed operand indexed with new axes (``valid[:, None] * loss_i``, as RAFT-style sequence
losses mask every refinement step): its rank is checked before the loop like a plain name's, so
the loop has a batched form; the same values, gradients and dtype as the loop."""
from __future__ import annotations

import pytest
import torch

from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, strategies

SEQUENCE = """
def f(preds, gt, valid):
    n = len(preds)
    loss = 0.0
    for i in range(n):
        w = 0.8 ** (n - i - 1)
        loss += w * (valid[:, None] * (preds[i] - gt).abs()).mean()
    return loss
"""


def test_new_axes_golden():
    _, _, code, report = build(SEQUENCE)
    assert strategies(report) == {4: "batched"}, (report, code)
    assert "not isinstance(valid[:, None], torch.Tensor) or (" in code, code


def test_other_indices_of_a_fixed_operand_stay_unbatched():
    """An ellipsis next to the new axis is not taken (``x[..., i]`` is no row of ``x[...]``)."""
    _, _, code, report = build(SEQUENCE.replace("valid[:, None]", "valid[..., None, :, :]"))
    assert strategies(report) == {4: "vmap"}, (report, code)


@pytest.mark.parametrize("special", [False, True])
def test_new_axes_equivalent(special, monkeypatch):
    original, optimized, _, _ = build(SEQUENCE)
    monkeypatch.setattr(torch, "vmap", None)  # the batched form ran
    for dtype in (torch.float32, torch.float64):
        gen = torch.Generator().manual_seed(0)
        gt = torch.randn(2, 2, 5, 6, dtype=dtype, generator=gen)
        preds = torch.randn(4, 2, 2, 5, 6, dtype=dtype, generator=gen)
        valid = (torch.rand(2, 5, 6, generator=gen) > 0.3).to(dtype)
        if special:  # NaN and inf in a masked and an unmasked pixel, a tie with the target
            preds[1, 0, 0, 0, 0], preds[2, 1, 1, 2, 3] = float("nan"), float("inf")
            preds[3] = gt
        assert_equivalent(original, optimized, preds.requires_grad_(), gt, valid)


def test_a_mask_of_higher_rank_runs_the_vmap_form():
    """A fixed operand whose new axis makes it outrank the items fails the rank check."""
    original, optimized, _, _ = build(SEQUENCE)
    preds, gt = torch.randn(3, 5, 6, dtype=torch.float64).requires_grad_(), torch.randn(5, 6)
    valid = torch.ones(2, 5, 6, dtype=torch.float64)
    try:
        want = original(preds, gt, valid)
    except RuntimeError:
        with pytest.raises(RuntimeError):
            optimized(preds, gt, valid)
        return
    assert_equivalent(original, optimized, preds, gt, valid)
    assert optimized(preds, gt, valid).shape == want.shape
