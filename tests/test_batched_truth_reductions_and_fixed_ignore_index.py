"""Batched forms (no vmap) of ``x.all()`` / ``x.any()`` over every element of an item (the
registry's ``reduce``), and of ``F.cross_entropy(..., ignore_index=PAD)`` with ``PAD`` a name the
loop does not bind (a module constant), behind a check that it is an int. Golden before/after
(with a no-change case: an ``ignore_index`` the body computes keeps vmap), equivalence of values,
every gradient and dtype (float32, float64), ignored entries included, a constant changed after
the rewrite."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent
from tests.loop_helpers import build, namespace, rewrite_source, strategies

DTYPES = [torch.float32, torch.float64]

TRUTHS = """
    def f(x):
        every, some = [], []
        for i in range(len(x)):
            every.append((x[i] > 0).all())
            some.append((x[i] > 0).any())
        return torch.stack(every), torch.stack(some)
    """
# the batched lines (before: vmap, "dim must be an int literal")
TRUTHS_BATCHED = ["_every_item = _t.reshape(len(_t), -1).all(1)",
                  "_some_item = _t_1.reshape(len(_t_1), -1).any(1)"]
IGNORED = """
    def f(logits, targets):
        loss = 0
        for t in range(logits.shape[1]):
            loss = loss + F.cross_entropy(logits[:, t], targets[:, t], ignore_index=PAD,
                                          reduction="sum")
        return loss
    """
# the index the body computes: no fixed option, vmap as before
COMPUTED = """
    def f(logits, targets):
        loss = 0
        for t in range(logits.shape[1]):
            pad = t % 2
            loss = loss + F.cross_entropy(logits[:, t], targets[:, t], ignore_index=pad,
                                          reduction="sum")
        return loss
    """


def test_all_and_any_of_every_element_are_batched():
    code, report = rewrite_source(TRUTHS)
    assert strategies(report) == {3: "batched"}
    assert "_map_in_chunks(" not in code
    lines = [line.strip() for line in code.splitlines()]
    assert all(line in lines for line in TRUTHS_BATCHED)


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_and_any_values(dtype):
    original, optimized, _, report = build(TRUTHS)
    assert strategies(report) == {3: "batched"}
    x = torch.tensor([[[1.0, 2], [3, 4]], [[1.0, -2], [3, 4]], [[-1.0, -2], [-3, -4]],
                      [[0.0, float("nan")], [1, 1]]], dtype=dtype)
    for got, want in zip(optimized(x), original(x)):
        assert got.dtype == want.dtype and torch.equal(got, want)


def test_ignore_index_constant_is_batched_behind_an_int_check():
    code, report = rewrite_source(IGNORED, namespace(PAD=0))
    assert strategies(report) == {3: "batched"}
    assert "type(PAD) is int" in code and "_map_in_chunks(" in code  # vmap: the check's else
    assert "_loss_of_rows(F.cross_entropy, _logits_row, _targets_row, 'sum', ignore_index=PAD)" \
        in code


def test_computed_ignore_index_stays_vmapped():
    code, report = rewrite_source(COMPUTED, namespace())
    assert strategies(report) == {3: "vmap"}
    assert "_loss_of_rows" not in code


@pytest.mark.parametrize("dtype", DTYPES)
def test_ignore_index_constant_values_and_gradients(dtype):
    ns = namespace(PAD=0)
    original, optimized, _, report = build(IGNORED, ns)
    assert strategies(report) == {3: "batched"}
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, 7, generator=g, dtype=dtype)
    targets = torch.randint(0, 7, (4, 5), generator=g)
    targets[:, 3:] = 0
    assert_equivalent(original, optimized, logits.requires_grad_(), targets)
    for module in (original, optimized):  # the constant changed after the rewrite: read again
        module.__globals__["PAD"] = 3
    assert_equivalent(original, optimized, logits, targets)
