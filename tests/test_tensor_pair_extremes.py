"""``torch.max(a, b)`` / ``torch.min(a, b)`` / ``a.max(b)`` of two tensors in a loop body
(``OpSpec.tensor_pair``): batched as the elementwise op they are (GIoU per box), not vmapped;
with a second operand that is a number (a dim: the index, a literal, an int argument) they stay
the reduction along a dim. Value, every gradient and dtype against the original (float32,
float64; ties, NaN, inf)."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent
from tests.loop_helpers import build, strategies

GIOU = """
def f(p, t):
    total = p.new_zeros(())
    for i in range(p.shape[0]):
        x1 = torch.max(p[i, 0], t[i, 0])
        y1 = p[i, 1].max(t[i, 1])
        x2 = torch.min(p[i, 2], t[i, 2])
        y2 = torch.minimum(p[i, 3], t[i, 3])
        inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
        hull = (torch.max(p[i, 2:], t[i, 2:]) - torch.min(p[i, :2], t[i, :2])).prod()
        total = total + inter / hull
    return total
"""

FIXED = """
def f(p, w):
    total = 0
    for i in range(p.shape[0]):
        total = total + torch.max(p[i], w).sum()
    return total
"""


def _boxes(n, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    lo = torch.rand(n, 2, dtype=dtype, generator=gen)
    return torch.cat([lo, lo + 0.5 + torch.rand(n, 2, dtype=dtype, generator=gen)], 1)


def test_golden_pair_forms_are_batched():
    _, _, code, report = build(GIOU)
    assert strategies(report) == {3: "batched"}, report.loops[0].reason
    batched = code[:code.index("def _body")]
    assert "x1 = torch.max(_p_row[:, 0], _t_row[:, 0])" in batched
    assert "y1 = _p_row[:, 1].max(_t_row[:, 1])" in batched
    assert "torch.max(_p_row[:, 2:], _t_row[:, 2:])" in batched


@pytest.mark.parametrize("special", [None, "ties", float("nan"), float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pair_forms_equivalent_without_vmap(special, dtype, monkeypatch):
    original, optimized, _, _ = build(GIOU)
    p, t = _boxes(6, dtype, 0), _boxes(6, dtype, 1)
    if special == "ties":
        t[::2] = p[::2]
    elif special is not None:
        p[1, 0], t[2, 3] = special, -special
    monkeypatch.setattr(torch, "vmap", None)  # the batched code must not need it
    assert_equivalent(original, optimized, p.requires_grad_(), t.requires_grad_())
    assert optimized(p, t).dtype == dtype


def test_fixed_tensor_operand_is_batched_behind_a_check(monkeypatch):
    original, optimized, code, report = build(FIXED)
    assert strategies(report) == {3: "batched"}
    assert "isinstance(w, torch.Tensor)" in code
    p, w = torch.randn(5, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    w[1] = p[2, 1]  # a tie
    monkeypatch.setattr(torch, "vmap", None)
    assert_equivalent(original, optimized, p.requires_grad_(), w.requires_grad_())


def test_fixed_int_operand_is_a_dim():
    """``torch.max(p[i], w)`` with ``w`` an int: the reduction along dim ``w`` (vmapped)."""
    original, optimized, _, _ = build(FIXED.replace(".sum()", "[0].sum()"))
    p = torch.randn(5, 3, 4, requires_grad=True)
    assert_equivalent(original, optimized, p, 1)
    assert_equivalent(original, optimized, p, -1)


NUMBER_SECOND = """
def f(p, k):
    total = 0
    for i in range(p.shape[0]):
        total = total + torch.max(p[i], {second})[0].sum()
    return total
"""


@pytest.mark.parametrize("second", ["0", "i % 2", "int(k[i])"])
def test_numbers_as_second_operand_are_no_pair(second):
    """The index, a literal, a number of an item: a dim in the original, never the pair form."""
    _, _, _, report = build(NUMBER_SECOND.format(second=second))
    assert strategies(report)[3] != "batched"


@pytest.mark.parametrize("second", ["0", "i % 2", "int(k[i])", "d", "-(1 - d)"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numbers_as_second_operand_equivalent(second, dtype):
    """A number varying per iteration (the index, arithmetic of it, an item made a number, a
    name bound to one) is a dim that varies: the loop runs as written, with the reason; vmap
    would map it as a tensor and compare elementwise."""
    src = NUMBER_SECOND.format(second=second).replace(
        "        total", "        d = i % 2\n        total", 1)
    original, optimized, _, report = build(src)
    p, k = torch.randn(4, 2, 3, dtype=dtype, requires_grad=True), torch.tensor([0, 1, 1, 0])
    p.data[1, 0, 0] = p.data[1, 1, 0]  # a tie along dim 0
    assert_equivalent(original, optimized, p, k)
    assert optimized(p, k).dtype == dtype
    if second != "0":
        assert strategies(report)[3] == "kept", report.loops[0].reason
        assert "a Python number that varies per iteration" in report.loops[0].reason


METHOD_SECOND = """
def f(p):
    total = 0
    for i in range(p.shape[0]):
        d = i % 2
        total = total + p[i].min(d).values.sum() + p[i].max(p[i].flip(0)).sum()
    return total
"""


def test_method_with_a_varying_number_runs_as_written():
    """``p[i].min(d)``, ``d`` a number bound from the index: kept as written (as the
    function form); ``p[i].max(<tensor>)`` next to it is no reason."""
    original, optimized, _, report = build(METHOD_SECOND)
    assert strategies(report)[3] == "kept"
    assert "`p[i].min(d)`" in report.loops[0].reason
    p = torch.randn(5, 2, 2, dtype=torch.float64, requires_grad=True)
    assert_equivalent(original, optimized, p)
