"""batch_loop_bodies: the rank algebra of the runtime check, and batched forms of single ops
(behaviour through vectorize_loops is in test_vectorize_loops)."""
from __future__ import annotations

import re

import pytest
import torch

from passes.loops.batch_values import Rank, condition as _condition
from rewrite import optimize_loss
from rewrite.testing import assert_equivalent
from tests.helpers import load_module
from tests.loop_helpers import build, strategies
from tests.test_masked_selections_to_where import build as build_masked


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
    "F.kl_div(x[i].log_softmax(0), x[i].softmax(0), reduction='sum')",
    "F.kl_div(x[i], 0.5 * x[i], log_target=True, reduction='mean')",
    "F.cross_entropy(x[i:i+1], t[i:i+1])", "F.nll_loss(x[i:i+1], t[i:i+1], reduction='sum')",
    "torch.where(x[i] > 0, x[i], 0.1 * x[i]).clamp(min=-1).sum()", "x[i].unsqueeze(-1).sum(0).sum()",
    # every spelling of a registered op (``passes/ops.py``) has its batched form
    "torch.max(x[i])", "x[i].maximum(w).sum() + x[i].logaddexp(w).sum()", "x[i][torch.add(t[i], 0)]",
    # views by int sizes the same in every iteration: the loop dim in front
    "(x[i].contiguous().view(-1) * w).sum()", "x[i].view(3, 1).sum(0).sum()",
    "x[i].reshape((1, x[i].shape[0])).mean()", "(x[i].view(x[i].size(0)) - w).pow(2).sum()",
    "torch.dot(w, x[i]) + x[i].dot(w * 2)",  # a vector the same in every iteration
    # elementwise ops NaN or inf outside their domain
    "torch.acos(x[i].clamp(-0.9, 0.9)).sum() + x[i].atan().sum() + x[i].exp().lgamma().sum()",
    "(x[i].sigmoid().logit() + torch.tan(x[i]) + x[i].cosh() + torch.log10(x[i].abs() + 1)).sum()",
    # the items' metadata, the same in every iteration
    "x[i, 1:].sum() / x[i, 1:].numel() + x[i].dim()", "x[i].sum() * x[i].size(0) + x[i].shape[0]",
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


@pytest.mark.parametrize("size", ["k", "(3,)", "s"])
def test_views_by_names_the_check_finds_to_be_ints(tmp_path, size):
    # a name's int-ness is checked at run time (`s` is a torch.Size there: vmap)
    src = ("def f(x, w, k, s):\n    out = []\n    for i in range(x.shape[0]):\n"
           f"        out.append((x[i].view({size}) * w).sum())\n    return torch.stack(out)\n")
    original, optimized, code, report = build(src)
    assert strategies(report) == {3: "batched"}, (report, code)
    assert (f"type({size}) is int" in code) == (size != "(3,)")
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert_equivalent(original, optimized, x, w, 3, torch.Size([3]))
    if size != "(3,)":  # a size mismatch raises the loop's error (the original then runs)
        fast = optimize_loss(load_module(tmp_path, "import torch\n\n\n" + src).f, compile=False)
        assert_equivalent(original, fast, x, w, 3, torch.Size([3]))
        with pytest.raises(RuntimeError, match=r"^shape '\[4\]' is invalid for input of size 3$"):
            fast(x, w, 4, torch.Size([4]))


@pytest.mark.parametrize("other", [torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 1),
                                   torch.randn(5, 3, 1)], ids=["float64", "length 1", "2-d"])
def test_dots_raise_where_torch_dot_does(tmp_path, other):
    # a float32 row against a float64 one, or rows of other lengths or ranks: torch.dot raises
    # (its batched form would have promoted or broadcast), and so does the optimized loss
    original = load_module(tmp_path, "import torch\n\n\ndef f(x, y):\n    s = 0\n"
                           "    for i in range(x.shape[0]):\n"
                           "        s = s + torch.dot(x[i], y[i])\n    return s\n").f
    fast = optimize_loss(original, compile=False)
    x = torch.randn(5, 3, requires_grad=True)
    assert_equivalent(original, fast, x, torch.randn(5, 3))
    assert fast.report.loops[0].strategy == "batched"
    with pytest.raises(RuntimeError) as want:
        original(x, other)
    with pytest.raises(RuntimeError) as got:
        fast(x, other)
    assert str(got.value) == str(want.value)


# Sum accumulators: the sum over the loop fused into the op making the per-item values. `s`
# starts at 0, so the partial sum is the total itself (no `0 + total`).
N = "x.shape[0]"
# ... wrapped so that float16/bfloat16 per-item values are summed in the original's steps instead
W = "_summed_in_steps("
FUSED = [  # (per-item contribution, the partial sum the batched form assigns)
    ("x[i].sum()", f"_s_part = {W}_x_row.sum(), "),
    ("0.5 * (x[i] - w).pow(2).mean()", f"_s_part = {W}0.5 * ((_x_row - w).pow(2).mean() * {N}), "),
    ("-x[i].sum() / 3 + x[i].mean()", f"_s_part = {W}-_x_row.sum() / 3 + _x_row.mean() * {N}, "),
    # the same int for every item (it was summed over the loop dim, and raised)
    ("x[i].sum() + x[i].shape[0]", f"_s_part = {W}_x_row.sum() + _x_row.shape[1] * {N}, "),
    ("F.mse_loss(x[i], x[i] * 2)",
     f"_s_part = {W}F.mse_loss(_x_row, _x_row * 2, reduction='mean') * {N}, "),
    ("F.smooth_l1_loss(x[i], w, reduction='sum')", None),  # a fixed operand: vmap
    ("F.l1_loss(x[i], x[i].tanh(), reduction='sum')",
     f"_s_part = {W}F.l1_loss(_x_row, _x_row.tanh(), reduction='sum'), "),
    # vmap has no batching rule for kl_div (a warning and a loop over the batch)
    ("F.kl_div(x[i].log_softmax(0), x[i].softmax(0), reduction='sum')",
     f"_s_part = {W}F.kl_div(_x_row.log_softmax(1), _x_row.softmax(1), reduction='sum'), "),
    ("F.nll_loss(x[i:i+1], t[i:i+1], reduction='sum')",
     f"_s_part = {W}_loss_of_rows(F.nll_loss, _x_row.unsqueeze(1), _t_row.unsqueeze(1), 'sum', "
     "ignore_index=-100), "),
    # per-item means over different counts of non-ignored targets: summed per item
    ("F.cross_entropy(x[i:i+1], t[i:i+1])",
     f"_s_part = {W}_loss_of_items(F.cross_entropy, _x_row.unsqueeze(1), _t_row.unsqueeze(1), "
     "'mean', ignore_index=-100).sum(0), "),
    ("x[i].amax()", "_s_part = (_x_row.amax(tuple(range(1, _x_row.dim()))) if _x_row.dim() > 1 else _x_row.reshape(len(_x_row), -1).amax(1)).sum(0)"),
    ("2", f"_s_part = _s_part + {W}2 * {N}, "),  # not a tensor: 0 + 2 * n stays as written
]
# ... and their mean when the loop is followed by `return s / x.shape[0]`: a fused mean loses its
# `* n`, the rest is divided by n.
AVERAGED = [
    ("x[i].sum()", f"_s_part = {W}_x_row.sum() / {N}, "),
    ("0.5 * (x[i] - w).pow(2).mean()", f"_s_part = {W}0.5 * (_x_row - w).pow(2).mean(), "),
    ("-x[i].sum() / 3 + x[i].mean()", f"_s_part = {W}(-_x_row.sum() / 3 + _x_row.mean() * {N}) / {N}, "),
    ("F.mse_loss(x[i], x[i] * 2)", f"_s_part = {W}F.mse_loss(_x_row, _x_row * 2, reduction='mean'), "),
    ("F.smooth_l1_loss(x[i], w, reduction='sum')", f"_outs = (_outs[0].sum(0) / {N},)"),
    ("F.l1_loss(x[i], x[i].tanh(), reduction='sum')",
     f"_s_part = {W}F.l1_loss(_x_row, _x_row.tanh(), reduction='sum') / {N}, "),
    ("F.cross_entropy(x[i:i+1], t[i:i+1])",
     f"_s_part = {W}_loss_of_items(F.cross_entropy, _x_row.unsqueeze(1), _t_row.unsqueeze(1), "
     f"'mean', ignore_index=-100).sum(0) / {N}, "),
    ("x[i].amax()", f"_s_part = (_x_row.amax(tuple(range(1, _x_row.dim()))) if _x_row.dim() > 1 else _x_row.reshape(len(_x_row), -1).amax(1)).sum(0) / {N}"),
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


# Cosine similarity, distances of a point to a fixed tensor, gathers from a fixed tensor at
# fixed ints: (per-item expression of x[i], t[i] (labels) and a fixed w, the batched code's
# golden statement, temporaries named `_t`; None: vmap). Equivalence for many shapes is in the
# tests below.
NORMED = "{v} / torch.where(_t < 1e-08, _t + (1e-08 - _t).detach(), _t)"
SQUARED_DISTANCE = f"_s_part = {W}_squared_distances(_x_row, w).sum(), "
SET_FORMS = [
    # both operands vary: the same call, dim shifted (negative dims unchanged)
    ("F.cosine_similarity(x[i], x[i] + 1, dim=0)",
     "_s_part = F.cosine_similarity(_x_row, _x_row + 1, dim=1).sum(0)"),
    ("torch.cosine_similarity(x[i], 2 * x[i], -1, 1e-3)",
     "_s_part = torch.cosine_similarity(_x_row, 2 * _x_row, dim=-1, eps=0.001).sum(0)"),
    # a point and a fixed vector w [D]: normalized, one matrix-vector product
    ("F.cosine_similarity(w, x[i], dim=0)",
     f"_s_part = ({NORMED.format(v='_x_row')} @ ({NORMED.format(v='w')})).sum(0)"),
    # ... or a set w [m, D]: one matrix product
    ("F.cosine_similarity(x[i], w, dim=1).amax()",
     f"_t = {NORMED.format(v='_x_row')} @ ({NORMED.format(v='w')}).t()"),
    # squared distances of a point to a set: the direct cdist, the original's backward
    ("((w - x[i]) ** 2).sum(dim=1).sum()", SQUARED_DISTANCE),
    ("(x[i] - w).pow(2).sum(-1).sum()", SQUARED_DISTANCE),
    ("torch.sum(torch.square(w - x[i]), -1).sum()", SQUARED_DISTANCE),
    # fixed ints, then a loop-varying index: w[k][idx]
    ("w[0, t[i]].sum()", f"_s_part = {W}w[0][_t_row].sum(), "),
    # no batched form: eps varies with the loop; the loop-varying index is not the last entry
    ("F.cosine_similarity(x[i], w, dim=-1, eps=x[i].abs().sum())", None),
    ("w[t[i], 0].sum()", None),
]


def _loop(expr: str) -> str:
    return ("def f(x, t, w):\n    s = 0\n    for i in range(x.shape[0]):\n"
            f"        s = s + {expr}\n    return s\n")


@pytest.mark.parametrize("expr, golden", SET_FORMS)
def test_set_forms_golden(expr, golden):
    _, _, code, report = build(_loop(expr))
    assert strategies(report) == {3: "vmap" if golden is None else "batched"}, (report, code)
    assert golden is None or golden in re.sub(r"\b_t(_\d+)?\b", "_t", code), code


def _points(shape, dtype, seed, tiny=False):
    """Random points; with ``tiny``, a zero row and a row of norm below cosine's eps."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    if tiny and shape[0] > 2:
        x[0], x[1] = 0, x[1] * 1e-10
    return x.requires_grad_()


# (x shape, w shape): the set form, the vector form, size-1 dims, and shapes no form admits (per
# item rank 2, broadcasting along the feature dim, a 3-d w): those run vmap.
SHAPES = [((5, 3), (4, 3)), ((5, 3), (3,)), ((1, 3), (1, 3)), ((5, 1), (4, 1)), ((5, 1), (4, 3)),
          ((5, 3), (1,)), ((4, 2, 3), (3,)), ((4, 3), (2, 4, 3))]
SET_EXPRS = ["((w - x[i]) ** 2).sum(dim=-1).amin()", "(x[i] - w).square().sum(-1).sum()",
             "F.cosine_similarity(x[i], w, dim=-1).sum()", "F.cosine_similarity(w, x[i], dim=0).sum()"]


@pytest.mark.parametrize("expr", SET_EXPRS)
@pytest.mark.parametrize("xs, ws", SHAPES)
def test_set_forms_equivalent_for_all_shapes(expr, xs, ws):
    original, optimized, _, _ = build(_loop(expr))
    for dtype in (torch.float32, torch.float64):
        x, w = _points(xs, dtype, 0, tiny=True), _points(ws, dtype, 1, tiny=True)
        if len(xs) == len(ws) == 2 and xs[1] == ws[1]:
            with torch.no_grad():
                w[-1] = x[-1]  # a point of the set: distance 0
        try:
            original(x, None, w)
        except RuntimeError:  # shapes the op itself refuses
            continue
        assert_equivalent(original, optimized, x, None, w)


@pytest.mark.parametrize("expr", SET_EXPRS)
@pytest.mark.parametrize("xs, ws", [((5, 3), (4, 3)), ((5, 3), (3,)), ((1, 2), (1, 2))])
def test_set_forms_run_without_vmap(expr, xs, ws, monkeypatch):
    original, optimized, _, _ = build(_loop(expr))
    if "dim=0" in expr and len(ws) == 2:
        return  # per item the reduction is over the set: no set form
    monkeypatch.setattr(torch, "vmap", None)  # the batched code must not need it
    for dtype in (torch.float32, torch.float64):
        assert_equivalent(original, optimized, _points(xs, dtype, 0, tiny=True), None,
                          _points(ws, dtype, 1, tiny=True))


@pytest.mark.parametrize("x_dtype, w_dtype", [(torch.float32, torch.float64),
                                              (torch.float64, torch.int64),
                                              (torch.int64, torch.int64)])
@pytest.mark.parametrize("expr", SET_EXPRS[:1])
def test_set_forms_of_other_dtypes_run_vmap(expr, x_dtype, w_dtype):
    original, optimized, _, _ = build(_loop(expr))
    x = torch.randint(-3, 3, (5, 3)).to(x_dtype).requires_grad_(x_dtype.is_floating_point)
    w = torch.randint(-3, 3, (4, 3)).to(w_dtype)
    assert_equivalent(original, optimized, x, None, w)
    assert original(x, None, w).dtype == optimized(x, None, w).dtype


@pytest.mark.parametrize("expr", ["(x[i] * m[k, 1, t[i]]).sum()", "m[k, 1, t[i]].sum() + x[i]"])
@pytest.mark.parametrize("ms", [(3, 2, 4), (3, 2, 4, 2), (2, 2, 4, 1)])
def test_gather_at_fixed_ints_equivalent(expr, ms):
    src = ("def f(x, t, m, k):\n    s = 0\n    for i in range(x.shape[0]):\n"
           f"        s = s + {expr}\n    return s\n")
    original, optimized, code, report = build(src)
    assert strategies(report) == {3: "batched"} and "m[k, 1][_t_row]" in code, code
    for dtype in (torch.float32, torch.float64):
        m = torch.randn(*ms, dtype=dtype).requires_grad_()
        x = torch.randn(5, *ms[3:], dtype=dtype).requires_grad_()  # per item m[k, 1, t[i]]'s
        t = torch.tensor([0, 3, 3, 1, 0])  # repeated labels: the gradient accumulates
        for k in (1, -1, torch.tensor(1), torch.tensor([0, 1])):  # a list of rows: vmap
            assert_equivalent(original, optimized, x, t, m, k)


COLUMNS = ("def f(logits, targets, m, classes):\n    s = 0\n    for c in classes:\n"
           "        s = s + F.binary_cross_entropy_with_logits(logits[:, c], targets[:, c])"
           " + m[:, :, c].sum()\n    return s\n")


def test_columns_at_iterated_ids_golden():
    """``logits[:, c]`` at a class id iterated from a tensor: every column at once, the loop dim
    moved to the front (it was vmap: "index without a batched form")."""
    _, _, code, report = build(COLUMNS)
    assert strategies(report) == {3: "batched"}, (report, code)
    for column in ("logits[:, c].movedim(1, 0)", "targets[:, c].movedim(1, 0)",
                   "m[:, :, c].movedim(2, 0)"):
        assert column in code, code
    _, _, code, report = build(COLUMNS.replace("logits[:, c]", "logits[1:, c]"))
    assert strategies(report) == {3: "vmap"}, (report, code)  # not full slices: no change


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_columns_at_iterated_ids_equivalent(dtype, monkeypatch):
    original, optimized, _, _ = build(COLUMNS)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g, dtype=dtype)
    logits[0, 0] = float("inf")  # in a column no id reads
    logits[1, 1] = logits[2, 1]  # a tie
    targets = torch.rand(6, 5, generator=g, dtype=dtype)
    m = torch.randn(2, 3, 5, generator=g, dtype=dtype).requires_grad_()
    monkeypatch.setattr(torch, "vmap", None)  # the batched code must not need it
    for classes in (torch.tensor([1, 4, 4, -1]), torch.tensor([2], dtype=torch.int32)):
        assert_equivalent(original, optimized, logits.requires_grad_(), targets, m, classes)


def test_squared_distances_far_from_the_origin_keep_their_precision():
    """Nearest neighbours of points far from the origin: |a|^2 + |b|^2 - 2ab would cancel."""
    _, optimized, _, _ = build(_loop("((w - x[i]) ** 2).sum(dim=1).amin()"))
    g = torch.Generator().manual_seed(0)
    x = 1000 + 1e-2 * torch.randn(30, 3, generator=g)  # > 25 points: where cdist may use mm
    w = torch.cat([x + 1e-3 * torch.randn(30, 3, generator=g), x[:2] + 1])
    want = sum(((w.double() - p.double()) ** 2).sum(dim=1).min() for p in x)
    torch.testing.assert_close(optimized(x, None, w).double(), want, rtol=1e-3, atol=0)


@pytest.mark.parametrize("expr", ["((x - x[i]) ** 2).sum(-1).sum()",
                                  "F.cosine_similarity(x[i], x, dim=-1).sum()"])
def test_set_forms_of_a_tensor_against_its_own_rows(expr, monkeypatch):
    """Triplet and contrastive losses: the set is the loop input itself (distance 0 included)."""
    original, optimized, _, _ = build(_loop(expr))
    monkeypatch.setattr(torch, "vmap", None)
    for dtype in (torch.float32, torch.float64):
        assert_equivalent(original, optimized, _points((5, 3), dtype, 0, tiny=True), None, None)


# Boolean-mask selections (masked_selections_to_where's dense forms): the mask reshaped by
# ``_mask_shape`` of the per-item shapes, the loop dim in front. ``build_masked`` binds the
# helper into the rewritten function.
MASKED_SUM = ("def f(x, y, m):\n    s = 0\n    for i in range(x.shape[0]):\n"
              "        s = s + (x[i][m[i] > 0] - y[i][m[i] > 0]).pow(2).sum()\n    return s\n")


def test_masked_selection_reshape_golden():
    _, _, code, report = build_masked(MASKED_SUM)
    assert strategies(report) == {3: "batched"}, (report, code)
    assert re.search(r"_keep = _mask\.reshape\(_mask\.shape\[:1\] \+ _mask_shape\[_mask\.shape"
                     r"\[1:\], _x_row\.shape\[1:\], _y_row\.shape\[1:\]\]\)", code), code
    # a 0-d mask per item adds a dim: vmap (`m` may be a list of masks: read stacked)
    assert "_m_stacked.dim() >= 2" in code, code


def test_masked_selection_of_a_tensor_that_does_not_vary_runs_vmap():
    src = MASKED_SUM.replace("y[i][m[i] > 0]", "y[m[i] > 0]")
    _, _, code, report = build_masked(src)
    assert strategies(report) == {3: "vmap"}, (report, code)


@pytest.mark.parametrize("shapes", [((4, 3, 2), (4, 3, 2), (4, 3, 2)),   # elementwise mask
                                    ((4, 3, 2), (4, 3, 2), (4, 3)),      # row mask
                                    ((4, 3), (4, 3), (4,)),              # 0-d mask: vmap
                                    ((4, 3), (4, 3), (4, 2))])           # IndexError
@pytest.mark.parametrize("fill", ["random", "none", "all", "nan"])
def test_masked_selection_reshape_equivalent(shapes, fill):
    original, optimized, _, _ = build_masked(MASKED_SUM)
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(0)
        x, y = (torch.randn(s, generator=g, dtype=dtype) for s in shapes[:2])
        m = torch.randn(shapes[2], generator=g, dtype=dtype)
        m = {"random": m, "none": -m.abs(), "all": m.abs() + 1, "nan": m}[fill]
        if fill == "nan":
            y.view(-1)[::3] = float("nan")  # NaN selected or not
            m.view(-1)[::2] = float("nan")  # NaN > 0 deselects
        x.requires_grad_(), y.requires_grad_()
        try:
            original(x, y, m)
        except IndexError:
            with pytest.raises(IndexError):
                optimized(x, y, m)
            continue
        assert_equivalent(original, optimized, x, y, m)


def test_masked_selection_reshape_runs_without_vmap(monkeypatch):
    original, optimized, _, _ = build_masked(MASKED_SUM)
    monkeypatch.setattr(torch, "vmap", None)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(4, 3, 2, dtype=dtype).requires_grad_()
        assert_equivalent(original, optimized, x, 2 * x, torch.randn(4, 3, dtype=dtype))


@pytest.mark.parametrize("shape, expr", [
    ((5,), "x[i].sum() + x[i].amax()"),                 # per-item 0-d: dim=() would reduce all
    ((5,), "(x[i] > 0).sum() * x[i]"),                  # bool sums to int64, as the original
    ((5, 3, 4), "x[:, i].mean() - x[:, i].amin()"),      # rows moved to the front: not contiguous
    ((5, 0), "x[i].sum()"),                              # empty items
])
def test_full_reductions_over_the_item_dims_are_equivalent(shape, expr):
    bound = "x.shape[1]" if len(shape) == 3 else "x.shape[0]"
    src = (f"def f(x):\n    out = []\n    for i in range({bound}):\n"
           f"        out.append({expr})\n    return torch.stack(out)\n")
    original, optimized, code, report = build(src)
    assert report.loops[0].strategy == "batched", report.loops
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
        assert_equivalent(original, optimized, x.requires_grad_())


# A per-item value next to the loop input itself (``labels == labels[i]``): per item a broadcast
# to the input's higher rank; batched, dims of size 1 after the loop dim align the item with it.
# (per-item expression, the golden batched statement; None: vmap). A per-item 0-d value promotes
# as a scalar next to the input, batched it is dimensioned: dtypes must be known to be equal.
UNDER_SET = [
    ("(t == t[i]).sum()", f"_s_part = {W}(t == _t_row[:, None]).sum(), "),
    ("(x - x[i]).abs().sum()", f"_s_part = {W}(x - _x_row[:, None]).abs().sum(), "),
    ("(x - t[i]).abs().sum() + x[i].sum()",
     "(x - _t_row[(slice(None),) + (None,) * (x.dim() - _t_stacked.dim() + 1)]).abs().sum()"),
    ("(x[i].sum() * x).sum()", None),  # a 0-d value next to x, a tensor (int sums are int64)
]


@pytest.mark.parametrize("expr, golden", UNDER_SET)
def test_values_next_to_the_loop_input_golden(expr, golden):
    _, _, code, report = build(_loop(expr))
    assert strategies(report) == {3: "batched" if golden else "vmap"}, (report, code)
    if golden is None:  # no batched form that could run for a tensor x: none is generated
        assert "[:, None]" not in code and "_map_in_chunks(" in code and "if x.dim()" not in code, code
        assert "per-item values next to `x`, a tensor of higher rank" in report.loops[0].reason
    else:
        assert golden in code and ("_map_in_chunks(" in code) == ("t_stacked.dim()" in golden), code
    if "t_stacked.dim()" in (golden or ""):  # item rank at most x's; 0-d items of x's dtype
        assert ("x.dim() + 1 >= _t_stacked.dim() and (_t_stacked.dim() >= 2 or "
                "x.dtype == _t_stacked.dtype)") in code, code


# (x shape, t shape, t dtype: None for x's): size-1 dims, 0-d items, ranks the form does not
# admit (t's items above x's rank) and other dtypes, which run vmap.
UNDER_SET_SHAPES = [((5, 3), (5,), None), ((5,), (5,), None), ((1,), (1,), None),
                    ((5, 1), (5, 3), None), ((4, 2, 3), (4, 3), None), ((4, 3), (4, 2, 3), None),
                    ((5,), (5,), torch.float64), ((5, 3), (5, 3), torch.float64),
                    ((5,), (5,), torch.int64)]


@pytest.mark.parametrize("expr", [e for e, g in UNDER_SET] + [
    "torch.where(x[i] > x, x - x[i], x[i] * x).sum()",
    "(x[i] / (x + 2)).sum() + (t == t[i]).sum()"])
@pytest.mark.parametrize("xs, ts, t_dtype", UNDER_SET_SHAPES)
def test_values_next_to_the_loop_input_equivalent(expr, xs, ts, t_dtype):
    original, optimized, _, _ = build(_loop(expr))
    for dtype in (torch.float32, torch.float64):
        x = _points(xs, dtype, 0)
        t = torch.randint(0, 3, ts, generator=torch.Generator().manual_seed(1)).to(t_dtype or dtype)
        t = t.requires_grad_(t.dtype.is_floating_point)
        try:
            want = original(x, t, None)
        except RuntimeError:  # shapes the op itself refuses
            with pytest.raises(RuntimeError):
                optimized(x, t, None)
            continue
        assert_equivalent(original, optimized, x, t, None)
        assert optimized(x, t, None).dtype == want.dtype


@pytest.mark.parametrize("expr", [e for e, g in UNDER_SET if g is not None])
def test_values_next_to_the_loop_input_run_without_vmap(expr, monkeypatch):
    original, optimized, _, _ = build(_loop(expr))
    monkeypatch.setattr(torch, "vmap", None)
    for dtype in (torch.float32, torch.float64):
        x = _points((5, 3), dtype, 0)
        t = torch.randint(0, 3, (5, 3), generator=torch.Generator().manual_seed(1)).to(dtype)
        assert_equivalent(original, optimized, x, t.requires_grad_(), None)


def test_triplet_hardest_runs_without_vmap(monkeypatch):
    """Its labels mask is a value next to the loop input, its distances a set form (cdist's
    value, the original's backward)."""
    from examples import triplet_hardest as module
    from rewrite import optimize_loss
    opt = optimize_loss(module.naive, compile=False, strict=True)
    monkeypatch.setattr(torch, "vmap", None)
    for dtype in (torch.float32, torch.float64):
        assert_equivalent(module.naive, opt, *module.make_inputs("small", dtype))
    source = opt.report.rewritten_source
    assert [loop.strategy for loop in opt.report.loops] == ["batched"], opt.report
    assert "_squared_distances(" in source and "labels == _labels_row[:, None]" in source, source


# the written tensor's value before the loop, where the condition keeps it, read at the index
KEPT_VALUE = """
def f(x, base, a: int, s: int):
    out = base * 1
    for j in range(a, x.shape[0], s):
        if x[j] > 0:
            out[j] = x[j] * 2
    return out
"""


def test_rows_at_the_loop_index_golden():
    """``out[j]`` at the index of ``range(a, b, s)`` (int literals): the rows of a slice,
    copied as the gather with the index tensor copies them, behind ``0 <= b <= len(out)``."""
    _, _, code, _ = build(KEPT_VALUE.replace("a, x.shape[0], s", "1, x.shape[0], 2"))
    assert "out[1:x.shape[0]:2].clone()" in code, code
    assert "out.dim() > 0 and 0 <= x.shape[0] <= out.shape[0]" in code, code
    _, _, code, _ = build(KEPT_VALUE)  # bounds that are not literals: the gather
    assert "out[j]" in code and ".clone()" not in code, code


@pytest.mark.parametrize("start, step", [(0, 1), (1, 2)])
@pytest.mark.parametrize("extra", [0, 3])  # out longer than the loop
def test_rows_at_the_loop_index_equivalent(start, step, extra, monkeypatch):
    src = KEPT_VALUE.replace("a, x.shape[0], s", f"{start}, x.shape[0], {step}")
    original, optimized, _, _ = build(src)
    monkeypatch.setattr(torch, "vmap", None)
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor([0.5, -1.0, float("nan"), 2.0, float("inf"), 0.0], dtype=dtype)
        base = torch.randn(6 + extra, dtype=dtype)
        assert_equivalent(original, optimized, x.requires_grad_(), base.requires_grad_(), 0, 0)


def test_rows_at_the_loop_index_beyond_the_tensor_raise_as_the_original():
    original, optimized, _, _ = build(KEPT_VALUE.replace("a, x.shape[0], s", "0, x.shape[0], 1"))
    x, base = torch.ones(5), torch.zeros(3)  # the slice would stop at 3, the loop does not
    with pytest.raises(IndexError):
        original(x, base, 0, 0)
    with pytest.raises((IndexError, RuntimeError)):
        optimized(x, base, 0, 0)


# The index of a loop whose body never reads it (``[f(x) for _ in range(n)]``, the SimCLR
# ``torch.cat([torch.arange(b) for i in range(n_views)])``): no ``torch.arange`` of it.
UNUSED_INDEX = """
def f(x, n):
    parts = torch.cat([torch.arange(x.shape[0]) * 2 + x.sum() for i in range(n)], dim=0)
    return parts + torch.stack([x.exp() for _ in range(n)]).sum(0).sum()
"""
READ_INDEX = """
def f(x, n):
    return torch.cat([x * i for i in range(n)], dim=0)
"""


def test_unused_loop_index_golden():
    _, _, code, report = build(UNUSED_INDEX)
    assert set(strategies(report).values()) == {"batched"}, report
    assert "arange(0, n, 1)" not in code, code
    assert "_i = " not in code and "__ = " not in code, code
    _, _, code, report = build(READ_INDEX)  # read: its values as before
    assert strategies(report) == {2: "batched"} and "_i = torch.arange(0, n, 1)" in code, code


@pytest.mark.parametrize("src", [UNUSED_INDEX, READ_INDEX])
@pytest.mark.parametrize("n", [1, 3])
def test_unused_loop_index_equivalent(src, n, monkeypatch):
    original, optimized, _, _ = build(src)
    if src is UNUSED_INDEX:  # batched whole, no vmap
        monkeypatch.setattr(torch, "vmap", None)
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor([0.5, -1.0, float("inf"), 2.0], dtype=dtype).requires_grad_()
        assert_equivalent(original, optimized, x, n)
