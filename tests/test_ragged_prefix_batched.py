"""Ragged prefix reads batched with a mask (issue #13 pattern 6): ``x[i, :lengths[i]]`` reduced
by ``sum``/``mean`` or fed to a pointwise loss (``reduction='sum'``, also the ``nn`` module
form) runs as one masked batched form, not vmap: the row's size ``r.shape[0]`` is the rows'
``shape[1]``, the positions ``torch.arange`` of it are one fixed 1-D tensor compared with the
per-item lengths as ``pos < L[:, None]``, a loss's ``reduction='none'`` is elementwise. Golden
and no-change cases, value / every gradient / dtype in float32 and float64 with empty, full,
past-the-end and negative lengths and NaN/inf past them; max/min with ties and the empty
selection's error."""
from __future__ import annotations

import pytest
import torch

import rewrite
from rewrite.testing import assert_equivalent
from tests.helpers import load_module
from tests.loop_helpers import dedent, finite_grads
from tests.test_masked_selections_to_where import build, same_error

# the loop body of each case (``source``): a prefix read per item, summed into ``total``
BODIES = {
    "sum": "total += x[i, :lengths[i]].sum()",
    "mean": "total += x[i, :lengths[i]].mean()",
    "mse_sum": "total += F.mse_loss(x[i, :lengths[i]], y[i, :lengths[i]], reduction='sum')",
    "bce_int_length": "L = int(lengths[i])\n"
                      "total += F.binary_cross_entropy_with_logits(x[i, :L], y[i, :L], "
                      "reduction='sum')",
    "item_length_product": "L = lengths[i].item()\ntotal = total + (x[i, :L] * y[i, :L]).sum()",
    # per-sequence means: divided by the Python int ``L`` (0: NaN / inf as the original)
    "host_divisor": "L = lengths[i].item()\ntotal = total + x[i, :L].sum() / L",
    "host_divisor_squares": "L = lengths[i].item()\ntotal += (x[i, :L] ** 2).sum() / L",
    "host_divisor_mse": "L = lengths[i].item()\n"
                        "total += F.mse_loss(x[i, :L], y[i, :L], reduction='sum') / L",
}
BATCHED = list(BODIES)


def source(body: str) -> str:
    lines = "".join(f"\n        {line}" for line in body.splitlines())
    return f"""
def f(x, y, lengths):
    total = 0
    for i in range(x.shape[0]):{lines}
    return total
"""


MODULE = """
import torch
import torch.nn as nn
import torch.nn.functional as F


def module_bce(x, y, lengths):
    criterion = nn.BCEWithLogitsLoss(reduction='sum')
    total = 0
    for i in range(x.shape[0]):
        L = lengths[i].item()
        total += criterion(x[i, :L], y[i, :L])
    return total
"""
T = 6


def inputs(dtype, lengths, rank=2, poison=True):
    g = torch.Generator().manual_seed(len(lengths))
    shape = (len(lengths), T) + (3,) * (rank - 2)
    x = torch.randn(*shape, generator=g, dtype=dtype)
    y = torch.rand(*shape, generator=g, dtype=dtype)
    lengths = torch.tensor(lengths)
    if poison:  # past each length NaN/inf: never read by the original
        for k, n in enumerate(lengths.tolist()):
            if 0 <= n < T:
                x[k, n:] = float("nan") if k % 2 else float("inf")
                y[k, n:] = float("-inf") if k % 2 else float("nan")
    return x.requires_grad_(), y.requires_grad_(), lengths


LENGTHS = [[3, 6, 0, 5], [6, 1, 4, 2], [2, 9, 4, 6]]   # empty, full, past the end


@pytest.mark.parametrize("lengths", LENGTHS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", BATCHED)
def test_batched_value_gradients_dtype(name, dtype, lengths):
    original, optimized, code, report = build(source(BODIES[name]))
    assert report.loops[0].vectorized and report.loops[0].strategy == "batched", \
        (report.loops[0].reason, code)
    args = inputs(dtype, lengths)
    assert_equivalent(original, optimized, *args)
    assert optimized(*args).dtype == original(*args).dtype
    if finite_grads(original, *args):
        assert finite_grads(optimized, *args), code


@pytest.mark.parametrize("name", ["mse_sum", "host_divisor_mse"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_negative_lengths_and_rows_of_rank_two(dtype, name):
    original, optimized, _, report = build(source(BODIES[name]))
    assert report.loops[0].strategy == "batched", report.loops[0].reason
    args = inputs(dtype, [-2, 3, -9, 6], rank=3, poison=False)
    assert_equivalent(original, optimized, *args)


def test_golden_batched_sum():
    _, _, code, _ = build(source(BODIES["sum"]))
    assert dedent("""
            _pos = torch.arange(_x_row.shape[1], device=_x_row.device)
            _in = _pos < (_slice_bound(_lengths_row) + _x_row.shape[1] * (_slice_bound(_lengths_row) < 0))[(slice(None),) + (None,) * (-_lengths_stacked.dim() + 2)]
            _keep_1 = _in.reshape(_in.shape[:1] + _mask_shape[_in.shape[1:], _x_row.shape[1:]])
        """).replace("\n", "\n            ").strip() in code, code
    # (float16/bfloat16 per-item values are summed in the original's steps instead)
    assert "_total_part = _summed_in_steps(torch.where(_keep_1, _x_row, 0).sum(), _items_sum)" \
        in code, code


def test_golden_host_int_divisor():
    _, _, code, _ = build(source(BODIES["host_divisor"]))
    assert ") / L.to(torch.result_type(_t_1.sum(tuple(range(1, _t_1.dim()))) if _t_1.dim() > 1 " \
        "else _t_1.reshape(len(_t_1), -1).sum(1), 1))).sum(0)" in code, code
    assert "_lengths_stacked.dtype in (torch.int64, torch.int32)" in code, code


def test_a_host_float_divisor_takes_the_vmap_form():
    """``w[i].item()`` of a float tensor is a Python float, a weak scalar in the tensor's dtype:
    only a known int has the batched spelling, so the batched form's check requires an integer
    ``y`` (its rows at a fixed int are integers when it is) and a float one runs the vmap form."""
    original, optimized, code, report = build(source(
        "total = total + x[i, :lengths[i]].sum() / y[i, 0].item()"))
    assert "y.dtype in (torch.int64, torch.int32)" in report.loops[0].reason
    assert_equivalent(original, optimized, *inputs(torch.float64, [3, 6, 1, 5]))


@pytest.mark.parametrize("reduce", ["amax", "max", "min"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_extremes_batched_with_ties_and_the_empty_error(reduce, dtype):
    original, optimized, _, report = build(source(f"total += x[i, :lengths[i]].{reduce}()"))
    assert report.loops[0].strategy == "batched", report.loops[0].reason
    args = inputs(dtype, [3, 6, 2, 9])
    args[0].data[1, 1] = args[0].data[1, 0]  # a tie: the gradient split as the original's
    assert_equivalent(original, optimized, *args)
    assert same_error(original, optimized, *inputs(dtype, [3, 0, 2, 5])).startswith(reduce)


def test_float_lengths_raise_the_original_type_error():
    original, optimized, _, report = build(source(BODIES["sum"]))
    assert report.loops[0].strategy == "batched", report.loops[0].reason
    x, y, _ = inputs(torch.float32, [1, 2, 3, 4], poison=False)
    lengths = torch.tensor([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(TypeError) as want:
        original(x, y, lengths)
    with pytest.raises(TypeError) as got:
        optimized(x, y, lengths)
    assert str(want.value) == str(got.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_module_form_runs_batched(tmp_path, dtype):
    module = load_module(tmp_path, MODULE)
    fn = rewrite.optimize_loss(module.module_bce, compile=False)
    for lengths in LENGTHS:
        assert_equivalent(module.module_bce, fn, *inputs(dtype, lengths))
    loop = fn.report.loops[0]
    assert loop.vectorized and loop.strategy == "batched", loop.reason
    assert loop.vectorized_runs > 0 and loop.original_runs == 0, loop
    assert not fn.report.fallbacks


def test_user_positions_against_a_tensor_length_batch():
    original, optimized, code, report = build(source(
        "total += torch.where(torch.arange(x.shape[1]) < lengths[i], x[i], 0).sum()"))
    assert report.loops[0].strategy == "batched", report.loops[0].reason
    for dtype in (torch.float32, torch.float64):
        assert_equivalent(original, optimized, *inputs(dtype, [3, 6, 0, 9]))


def test_positions_against_a_host_number_compare_as_python_does():
    """``w[i].item()`` is a Python number: next to the int64 positions a float compares in the
    default dtype (float32: 2.00000001 is 2.0), an int as int64; the host number is cast as the
    weak scalar it was (``HOST_WEAK``), batched for an integer ``w`` only (the check: a float
    ``w`` runs vmap)."""
    original, optimized, code, report = build(source(
        "total += torch.where(torch.arange(x.shape[1]) < w[i].item(), x[i], 0).sum()"
    ).replace("f(x, y, lengths)", "f(x, y, w)"))
    assert report.loops[0].strategy == "batched", report.loops[0].reason
    assert "_w_stacked.dtype in (torch.int64, torch.int32)" in code, code
    x, y, _ = inputs(torch.float64, [6, 6, 6, 6], poison=False)
    assert_equivalent(original, optimized, x, y, torch.tensor([2, 9, 0, -1]))
    assert_equivalent(original, optimized, x, y,
                      torch.tensor([2.00000001, 5.9999999, 0.5, -1.0], dtype=torch.float64))


def test_an_item_size_is_the_rows_next_size():
    original, optimized, code, report = build(source("total += x[i].sum() / x[i].shape[0]"))
    assert report.loops[0].strategy == "batched", report.loops[0].reason
    assert "_x_row.shape[1]" in code, code
    for dtype in (torch.float32, torch.float64):
        assert_equivalent(original, optimized, *inputs(dtype, [6, 6, 6, 6], rank=3))
