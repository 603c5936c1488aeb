"""batch_loop_bodies: the rank algebra of the runtime check, and batched forms of single ops
(behaviour through vectorize_loops is in test_vectorize_loops)."""
from __future__ import annotations

import pytest
import torch

from passes.batch_loop_bodies import Rank, _condition
from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, strategies


def test_rank_conditions_are_simplified_and_decided_when_constant():
    x = Rank.of("x.dim()", -1)
    t = Rank.of("t.dim()", -1)
    assert _condition(x - t, "==") == "x.dim() == t.dim()"
    assert _condition(x - 1, ">=") == "x.dim() >= 2"
    assert _condition(x - 2 - (t - 1) - Rank.of("x.dim()"), "==") == "0 == t.dim() + 1"
    assert _condition(Rank() - 1, ">=") is False
    assert _condition(Rank(), "==") is True


OPS = [  # per-item expression of x[i] (x [5, 3]), t[i] (labels), w (fixed [3])
    "x[i].sum()", "x[i].mean()", "x[i].amax()", "torch.sum(x[i])", "x[i].logsumexp(0)",
    "x[i].softmax(-1)[0]", "F.log_softmax(x[i], dim=0).sum()", "(x[i] * w).sum()",
    "torch.dot(x[i], w * x[i])", "x[i][t[i]]", "w[t[i]]", "x[i, 1:].sum() + x[i][None, 0].sum()",
    "F.mse_loss(x[i], x[i] * 2)", "F.smooth_l1_loss(x[i], 0.5 * x[i], beta=0.5)",
    "F.cross_entropy(x[i:i+1], t[i:i+1])", "F.nll_loss(x[i:i+1], t[i:i+1], reduction='sum')",
    "torch.where(x[i] > 0, x[i], 0.1 * x[i]).clamp(min=-1).sum()", "x[i].unsqueeze(-1).sum(0).sum()",
]


@pytest.mark.parametrize("expr", OPS)
def test_single_ops_batched_and_equivalent(expr):
    src = ("def f(x, t, w):\n    s = 0\n    for i in range(x.shape[0]):\n"
           f"        s = s + {expr}\n    return s\n")
    original, optimized, code, report = build(src)
    assert strategies(report) == {3: "batched"}, (report, code)
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(5, 3, generator=g, dtype=dtype).requires_grad_()
        t = torch.randint(0, 3, (5,), generator=g)
        w = torch.randn(3, generator=g, dtype=dtype).requires_grad_()
        assert_equivalent(original, optimized, x, t, w)


# Sum accumulators: the sum over the loop fused into the op making the per-item values. `s`
# starts at 0, so the partial sum is the total itself (no `0 + total`).
N = "len(range(0, x.shape[0], 1))"
FUSED = [  # (per-item contribution, the partial sum the batched form assigns)
    ("x[i].sum()", "_s_part = _x_row.sum()"),
    ("0.5 * (x[i] - w).pow(2).mean()", f"_s_part = 0.5 * ((_x_row - w).pow(2).mean() * {N})"),
    ("-x[i].sum() / 3 + x[i].mean()", f"_s_part = -_x_row.sum() / 3 + _x_row.mean() * {N}"),
    ("F.mse_loss(x[i], x[i] * 2)",
     f"_s_part = F.mse_loss(_x_row, _x_row * 2, reduction='mean') * {N}"),
    ("F.smooth_l1_loss(x[i], w, reduction='sum')", None),  # a fixed operand: vmap
    ("F.l1_loss(x[i], x[i].tanh(), reduction='sum')",
     "_s_part = F.l1_loss(_x_row, _x_row.tanh(), reduction='sum')"),
    ("F.nll_loss(x[i:i+1], t[i:i+1], reduction='sum')",
     "_s_part = F.nll_loss(_x_row.unsqueeze(1).flatten(0, 1), _t_row.unsqueeze(1).flatten(), "
     "reduction='sum', ignore_index=-100)"),
    # per-item means over different counts of non-ignored targets: summed per item
    ("F.cross_entropy(x[i:i+1], t[i:i+1])", "_s_part = (_t_1.sum(1) / (_t != -100).sum(1)).sum(0)"),
    ("x[i].amax()", "_s_part = _x_row.reshape(len(_x_row), -1).amax(1).sum(0)"),
    ("2", f"_s_part = _s_part + 2 * {N}"),  # not a tensor: 0 + 2 * n stays as written
]
# ... and their mean when the loop is followed by `return s / x.shape[0]`: a fused mean loses its
# `* n`, the rest is divided by n.
AVERAGED = [
    ("x[i].sum()", f"_s_part = _x_row.sum() / {N}"),
    ("0.5 * (x[i] - w).pow(2).mean()", "_s_part = 0.5 * (_x_row - w).pow(2).mean()\n"),
    ("-x[i].sum() / 3 + x[i].mean()", f"_s_part = (-_x_row.sum() / 3 + _x_row.mean() * {N}) / {N}"),
    ("F.mse_loss(x[i], x[i] * 2)", "_s_part = F.mse_loss(_x_row, _x_row * 2, reduction='mean')\n"),
    ("F.smooth_l1_loss(x[i], w, reduction='sum')", f"_outs = (_outs[0].sum(0) / {N},)"),
    ("F.l1_loss(x[i], x[i].tanh(), reduction='sum')",
     f"_s_part = F.l1_loss(_x_row, _x_row.tanh(), reduction='sum') / {N}"),
    ("F.cross_entropy(x[i:i+1], t[i:i+1])",
     f"_s_part = (_t_1.sum(1) / (_t != -100).sum(1)).sum(0) / {N}"),
    ("x[i].amax()", f"_s_part = _x_row.reshape(len(_x_row), -1).amax(1).sum(0) / {N}"),
]


@pytest.mark.parametrize("expr, averaged", AVERAGED)
def test_sum_accumulators_divided_by_the_trip_count_are_averaged(expr, averaged):
    src = ("def f(x, t, w):\n    s = 0\n    for i in range(x.shape[0]):\n"
           f"        s = s + {expr}\n    return s / x.shape[0]\n")
    original, optimized, code, report = build(src)
    assert averaged in code, code
    assert "return s if _averaged else s / x.shape[0]" in code
    assert "mean-reduced" in report.loops[0].reason
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(5, 3, generator=g, dtype=dtype).requires_grad_()
        t = torch.randint(0, 3, (5,), generator=g)
        t[1] = -100
        w = torch.randn(3, generator=g, dtype=dtype).requires_grad_()
        assert_equivalent(original, optimized, x, t, w)
        assert type(original(x, t, w)) is type(optimized(x, t, w))


@pytest.mark.parametrize("expr, fused", FUSED)
def test_sum_accumulators_are_fused_and_equivalent(expr, fused):
    src = ("def f(x, t, w):\n    s = 0\n    for i in range(x.shape[0]):\n"
           f"        s = s + {expr}\n    return s\n")
    original, optimized, code, report = build(src)
    assert report.loops[0].vectorized and (fused is None or fused in code), code
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(5, 3, generator=g, dtype=dtype).requires_grad_()
        t = torch.randint(0, 3, (5,), generator=g)
        t[1] = -100  # ignored: per-item means divide by different counts
        w = torch.randn(3, generator=g, dtype=dtype).requires_grad_()
        try:
            want = original(x, t, w)
        except (IndexError, RuntimeError):  # -100 out of range for ops without ignore_index
            t[1] = 0
            want = original(x, t, w)
        assert_equivalent(original, optimized, x, t, w)
        assert type(want) is type(optimized(x, t, w))
