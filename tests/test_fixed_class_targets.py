"""Per-item cross entropy against one label vector for every item (several heads or parts scored
against the same labels, as part-based re-ID and multi-head classifiers write it), and lists of
heads read at the loop index shifted by a number (``heads[i + 1]`` after a first head taken
before the loop): batched, the same values, gradients and dtype as the loop."""
from __future__ import annotations

import pytest
import torch

from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, strategies

HEADS = """
def f(x, t, w):
    loss = 0
    for i in range(x.shape[0]):
        loss += F.cross_entropy(x[i], t{kw})
    return loss
"""

SHIFTED = """
def f(heads, t, w):
    loss = F.cross_entropy(heads[0], t)
    for i in range(len(heads) - 1):
        loss += F.cross_entropy(heads[i + 1], t)
    return loss * 0.5
"""

KWS = ["", ", reduction='sum'", ", ignore_index=2", ", reduction='sum', ignore_index=0"]


def _logits(shape, dtype, special=False):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    if special:  # ties, NaN, +inf and -inf in some rows of some heads
        x[..., 0, :] = 1.5
        x[0, 1, 2] = float("nan")
        x[-1, 2, 3] = float("inf")
        x[-1, 3, 1] = float("-inf")
    return x.requires_grad_()


def _labels(n, c, dtype=torch.int64):
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(1)).to(dtype)


@pytest.mark.parametrize("kw", KWS)
def test_fixed_targets_golden(kw):
    _, _, code, report = build(HEADS.format(kw=kw))
    assert strategies(report) == {3: "batched"}, (report, code)
    assert "t.expand(_x_row.shape[:1] + t.shape)" in code, code
    assert "(isinstance(t, torch.Tensor) and t.dim() == 1)" in code, code
    assert "t.dtype in (torch.int64, torch.int32)" in code, code


def test_varying_targets_unchanged():
    """Targets that vary with the loop take the form they had: no expanded fixed operand."""
    _, _, code, report = build(HEADS.replace("t{kw}", "t[i]").format())
    assert strategies(report) == {3: "batched"} and ".expand(" not in code, code


@pytest.mark.parametrize("kw", KWS)
@pytest.mark.parametrize("special", [False, True])
def test_fixed_targets_equivalent(kw, special, monkeypatch):
    original, optimized, _, _ = build(HEADS.format(kw=kw))
    monkeypatch.setattr(torch, "vmap", None)  # the batched form ran, not the vmap fallback
    for dtype in (torch.float32, torch.float64):
        x, t = _logits((3, 6, 5), dtype, special), _labels(6, 5)
        assert_equivalent(original, optimized, x, t, None)
        assert optimized(x, t, None).dtype == original(x, t, None).dtype


def test_all_targets_ignored_is_nan_as_the_loop():
    original, optimized, _, _ = build(HEADS.format(kw=", ignore_index=1"))
    x, t = _logits((2, 4, 3), torch.float64), torch.ones(4, dtype=torch.int64)
    assert torch.isnan(original(x, t, None)) and torch.isnan(optimized(x, t, None))


def test_probability_targets_run_the_vmap_form():
    """Float targets are class probabilities: the check fails, the vmap form gives the loop's."""
    original, optimized, _, _ = build(HEADS.format(kw=""))
    for dtype in (torch.float32, torch.float64):
        x = _logits((3, 6, 5), dtype)
        t = torch.softmax(torch.randn(6, 5, dtype=dtype), 1)
        assert_equivalent(original, optimized, x, t, None)


def test_labels_of_another_length_raise_as_the_loop():
    original, optimized, _, _ = build(HEADS.format(kw=""))
    x, t = _logits((3, 6, 5), torch.float32), _labels(4, 5)
    with pytest.raises(ValueError):
        original(x, t, None)
    with pytest.raises(ValueError):
        optimized(x, t, None)


def test_shifted_heads_golden():
    _, _, code, report = build(SHIFTED)
    assert strategies(report) == {3: "batched"}, (report, code)
    assert "_heads_stacked = _stack_items(tuple(heads))" in code, code
    assert "_heads_stacked[i + 1]" in code, code


@pytest.mark.parametrize("special", [False, True])
def test_shifted_heads_equivalent(special, monkeypatch):
    original, optimized, _, report = build(SHIFTED)
    monkeypatch.setattr(torch, "vmap", None)
    for dtype in (torch.float32, torch.float64):
        heads = list(_logits((4, 6, 5), dtype, special).detach().unbind(0))
        heads = [h.requires_grad_() for h in heads]
        assert_equivalent(original, optimized, heads, _labels(6, 5), None)
    calls = []
    ce = torch.nn.functional.cross_entropy
    monkeypatch.setattr(torch.nn.functional, "cross_entropy",
                        lambda *a, **k: calls.append(1) or ce(*a, **k))
    optimized(heads, _labels(6, 5), None)
    assert len(calls) == 2  # the first head, then one call for the 3 stacked others


def test_shifted_heads_of_other_shapes_run_as_written():
    """Heads that do not stack (deep supervision at several sizes) keep the loop as written."""
    original, optimized, _, _ = build(SHIFTED)
    heads = [_logits((1, 6, c), torch.float64)[0] for c in (5, 5, 4)]
    t = _labels(6, 4)
    assert_equivalent(original, optimized, heads, t, None)
