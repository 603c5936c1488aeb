"""Per-item tensors of different ranks as operands of one elementwise op (``x[i] * w[i]`` with
``x`` [B, D] and ``w`` [B]; a quantile per item times its errors; a class's rows minus its center)
run the batched form (``batch_scope.lifted_operands``: the lower one lifted by
``item_broadcasts``), not vmap, with the original's values, gradients and dtypes: a 0-d item next
to a dimensioned one takes part in type promotion by its category only (float64 0-d times
float32 [D] is float32), so the lifted operand is cast to the items' result type. Equal ranks keep
the form they had."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from rewrite import assert_equivalent, optimize_loss
from passes.item_broadcasts import broadcast_item
from tests.test_number_list_operands import QuantileLoss


def scaled_sums(x, w):
    out = []
    for i in range(x.shape[0]):
        out.append((x[i] * w[i]).sum())
    return torch.stack(out).sum()


def every_operator(x, w):
    loss = 0
    for i in range(x.shape[0]):
        loss = loss + (w[i] - x[i]).sum() + (x[i] / w[i]).sum() + (x[i] > w[i]).sum() \
            + (w[i] ** 2 + x[i]).abs().mean()
    return loss


def center_distances(feat, centers):
    loss = 0
    for c in range(centers.shape[0]):
        loss = loss + ((feat[c] - centers[c]) ** 2).sum(-1).mean()
    return loss


def _fast(fn):
    return optimize_loss(fn, compile=False, keep_faster=False)


def _batched_only(fast, *inputs, monkeypatch):
    """``fast`` runs its loop vectorized without calling ``torch.vmap`` (the batched form)."""
    maps = []
    vmap = torch.vmap
    monkeypatch.setattr(torch, "vmap", lambda *a, **k: maps.append(1) or vmap(*a, **k))
    fast(*inputs)
    loop = fast.report.loops[0]
    assert (loop.vectorized_runs, loop.original_runs, len(maps)) == (1, 0, 0), loop.reason


def _inputs(dx, dw, shape=(5, 3), special=False):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(*shape, generator=g).mul(3).to(dx)
    w = (torch.rand(shape[:1] if len(shape) == 2 else shape[:1] + shape[2:], generator=g) + 0.5)
    w = w.mul(3).to(dw)
    if special:
        x[0, 0], x[1, 1], w[2] = float("nan"), float("inf"), float("-inf")
    return [t.requires_grad_() if t.is_floating_point() else t for t in (x, w)]


F32, F64 = torch.float32, torch.float64
MIXED = [(F32, F32), (F64, F64), (F32, F64), (F64, F32), (F32, torch.int64),
         (torch.int32, F64), (torch.int64, torch.int32), (torch.float16, F32)]


@pytest.mark.parametrize("dx,dw", MIXED, ids=str)
def test_a_row_times_a_0d_item_is_batched_in_the_items_dtype(dx, dw, monkeypatch):
    fast = _fast(scaled_sums)
    x, w = _inputs(dx, dw)
    # float16 next to a 0-d float32: the original's kernel multiplies by the 0-d value in
    # float32, the batched form (as vmap) by it rounded to float16 first
    tol = dict(rtol=4e-3, atol=4e-3) if dx == torch.float16 else {}
    assert_equivalent(scaled_sums, fast, x, w, **tol)
    assert fast(x, w).dtype == scaled_sums(x, w).dtype
    _batched_only(fast, x, w, monkeypatch=monkeypatch)


@pytest.mark.parametrize("dx,dw", [(F32, F32), (F64, F64), (F32, F64), (F64, F32)], ids=str)
def test_every_operator_and_nan_inf(dx, dw, monkeypatch):
    fast = _fast(every_operator)
    # a float64 0-d item next to float32 rows: float32 per item, so its gradient is float32's
    # (the loop's sum of means is one mean, rounded once)
    tol = dict(rtol=1e-6, atol=1e-6) if (dx, dw) == (F32, F64) else {}
    assert_equivalent(every_operator, fast, *_inputs(dx, dw, special=True), **tol)
    _batched_only(fast, *_inputs(dx, dw, special=True), monkeypatch=monkeypatch)


@pytest.mark.parametrize("dx,dw", [(F32, F64), (F64, F32)], ids=str)
def test_items_of_rank_2_and_1(dx, dw, monkeypatch):
    fast = _fast(scaled_sums)
    assert_equivalent(scaled_sums, fast, *_inputs(dx, dw, shape=(4, 2, 3)))
    _batched_only(fast, *_inputs(dx, dw, shape=(4, 2, 3)), monkeypatch=monkeypatch)


def test_equal_ranks_and_the_original_error_on_shapes_that_do_not_broadcast():
    fast = _fast(scaled_sums)
    assert_equivalent(scaled_sums, fast, torch.randn(4, 3, requires_grad=True), torch.randn(4, 3))
    with pytest.raises(RuntimeError):
        scaled_sums(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(RuntimeError):
        fast(torch.randn(4, 3), torch.randn(4, 2))


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("dq", [F32, F64], ids=str)
def test_quantile_tensor_times_errors(dtype, dq, monkeypatch):
    """Quantiles a tensor [Q] (0-d items) times the errors of a column of ``preds`` [N, Q]."""
    g = torch.Generator().manual_seed(5)
    preds = torch.randn(8, 3, generator=g, dtype=dtype, requires_grad=True)
    target = torch.randn(8, generator=g, dtype=dtype)
    module = QuantileLoss(torch.tensor([0.1, 0.5, 0.9], dtype=dq))
    fast = _fast(module)
    assert_equivalent(module, fast, preds, target)
    assert fast(preds, target).dtype == dtype
    _batched_only(fast, preds, target, monkeypatch=monkeypatch)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_rows_minus_their_center(dtype, monkeypatch):
    feat = torch.randn(4, 6, 3, dtype=dtype, requires_grad=True)
    centers = torch.randn(4, 3, dtype=dtype, requires_grad=True)
    fast = _fast(center_distances)
    assert_equivalent(center_distances, fast, feat, centers)
    _batched_only(fast, feat, centers, monkeypatch=monkeypatch)


_DTYPES = st.sampled_from([F32, F64, torch.int32, torch.int64, torch.bool])


@settings(max_examples=60, deadline=None)
@given(dx=_DTYPES, dw=_DTYPES, rx=st.integers(0, 2), rw=st.integers(0, 2))
def test_a_lifted_item_has_the_items_broadcast_and_dtype(dx, dw, rx, rw):
    """``broadcast_item`` of each operand, then the op: item k of the result is the op on item k
    of each, in its shape and dtype."""
    x = (torch.randn((3,) + (2,) * rx) * 3).to(dx)
    w = (torch.randn((3,) + (2,) * rw) * 3).to(dw)
    got = broadcast_item(x, w) * broadcast_item(w, x)
    for k in range(3):
        want = x[k] * w[k]
        assert got[k].dtype == want.dtype and torch.equal(got[k], want)


# A class's rows against a value the loop does not change, reduced along the rows
# (``masked_selections_to_where``): an unchanged ``mu`` of any shape that broadcasts row by row
# (a number, 0-d, [D], [1, D]) is a row operand like ``centers[c]``, checked by ``RowsMask``;
# it used to be checked 0-d, and a [D] one ran the loop as written.
def class_spreads(feat, labels, mu, n_classes: int = 4):
    loss = 0
    for c in range(n_classes):
        f = feat[labels == c]
        loss = loss + ((f - mu) ** 2).sum(1).mean()
    return loss


def class_center_distances(feat, labels, centers):
    loss = 0
    for c in range(centers.shape[0]):
        f = feat[labels == c]
        loss = loss + (f - centers[c]).pow(2).sum(1).mean()
    return loss


def _class_inputs(dtype):
    g = torch.Generator().manual_seed(7)
    feat = torch.randn(20, 3, generator=g, dtype=dtype)
    feat[3, 1], feat[6, 0] = float("nan"), float("inf")
    return feat.requires_grad_(), torch.arange(20) % 4


@pytest.mark.parametrize("df,dm", [(F32, F32), (F64, F64), (F32, F64), (F64, F32)], ids=str)
@pytest.mark.parametrize("shape", [(3,), (), (1, 3), None], ids=["D", "0-d", "1xD", "number"])
def test_rows_of_a_class_minus_an_unchanged_value_run_batched(df, dm, shape, monkeypatch):
    feat, labels = _class_inputs(df)
    mu = 0.25 if shape is None else torch.randn(shape, dtype=dm).requires_grad_()
    fast = _fast(class_spreads)
    assert_equivalent(class_spreads, fast, feat, labels, mu)
    _batched_only(fast, feat, labels, mu, monkeypatch=monkeypatch)


@pytest.mark.parametrize("df,dm", [(F32, F32), (F64, F64), (F32, F64)], ids=str)
def test_rows_of_a_class_minus_its_center_run_batched(df, dm, monkeypatch):
    feat, labels = _class_inputs(df)
    centers = torch.randn(4, 3, dtype=dm, requires_grad=True)
    fast = _fast(class_center_distances)
    assert_equivalent(class_center_distances, fast, feat, labels, centers)
    _batched_only(fast, feat, labels, centers, monkeypatch=monkeypatch)


def test_an_unchanged_value_that_is_no_row_runs_the_original():
    """``mu`` [5, 3] broadcasts against a class's 5 rows in the original, not row by row:
    ``RowsMask`` raises and the original runs (and raises where its shapes do not fit)."""
    feat, labels = _class_inputs(F64)
    fast = _fast(class_spreads)
    mu = torch.randn(5, 3, dtype=F64)
    with pytest.warns(Warning, match="not row by row"):
        assert_equivalent(class_spreads, fast, feat, labels, mu)
