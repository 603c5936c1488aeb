"""Loops over a numpy array of ints that numpy calls make (SwAV's multi-crop loss: ``for v in
np.delete(np.arange(np.sum(nmb_crops)), crop_id)``, each view's block ``output[bs * v:bs * (v +
1)]``): a new-user trial found the loop kept ("iterated value ... is not a plain name"). The
array's ints become an int64 tensor in front of the guard (``index_tuples_to_tensors``), and the
moving slices rows of one view of every block, read at them (``moving_slices_to_windows``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import equivalent_report, load_module
from tests.loop_helpers import namespace, normalise, rewrite_source, strategies

DTYPES = (torch.float32, torch.float64)

SWAV = """
import numpy as np
import torch
import torch.nn.functional as F

NMB_CROPS = [2, 4]

def swav(output, q, bs, crop_id, temperature=0.1):
    subloss = 0
    for v in np.delete(np.arange(np.sum(NMB_CROPS)), crop_id):
        p = F.softmax(output[bs * v:bs * (v + 1)] / temperature, dim=1)
        subloss -= torch.mean(torch.sum(q * torch.log(p), dim=1))
    return subloss / (np.sum(NMB_CROPS) - 1)

def multi_crop(output, queue, bs, crops_for_assign, nmb_crops):
    loss = 0
    for i, crop_id in enumerate(crops_for_assign):
        with torch.no_grad():
            q = torch.softmax(output[bs * crop_id:bs * (crop_id + 1)].detach() / 0.05, 1)
            queue[i, :bs] = q
        subloss = 0
        for v in np.delete(np.arange(np.sum(nmb_crops)), crop_id):
            subloss -= torch.mean(torch.sum(q * F.log_softmax(output[bs * v:bs * (v + 1)] / 0.1, dim=1), dim=1))
        loss += subloss / (np.sum(nmb_crops) - 1)
    return loss / len(crops_for_assign)

def blocks(x, bs, views):
    total = 0
    for v in np.delete(views, 0):
        total = total + x[bs * v:bs * (v + 1)].sum()
    return total

def picked(x, views):
    total = 0
    for v in np.setdiff1d(views, [0]):
        total = total + x[v].sum()
    return total
"""

GOLDEN = """
def swav(output, q, bs, crop_id, temperature=0.1):
    subloss = 0
    _ints = _run_eagerly(lambda: _numpy_ints(np.delete(np.arange(np.sum(NMB_CROPS)), crop_id)))
    _items = torch.tensor(_ints) if (type(_ints) is list or (isinstance(_ints, tuple) and type(_ints).__getitem__ is tuple.__getitem__ and (type(_ints).__iter__ is tuple.__iter__) and (type(_ints).__len__ is tuple.__len__))) and len(_ints) > 0 and all((type(_v) is int for _v in _ints)) else _ints
    _output_windows = _slice_windows(output, 0, lambda: (0, bs, bs, _window_count(_ints)))
    if isinstance(_output_windows, torch.Tensor) and isinstance(_items, torch.Tensor) and (_items.dim() > 0) and isinstance(len(_items), int) and (len(_items) > 0) and (not _rounds_gradients(output, temperature, q)):
"""


def _source(name: str) -> str:
    import ast
    tree = ast.parse(SWAV)
    return ast.unparse(next(f for f in tree.body if getattr(f, "name", None) == name))


def test_golden_numpy_ints_iterate_their_tensor_and_windows():
    code, report = rewrite_source(_source("swav"), namespace(np=np, NMB_CROPS=[2, 4]))
    assert strategies(report) == {3: "batched"}, (report, code)
    assert GOLDEN.strip().split("\n") == code.split("\n")[:6], code
    assert "p = F.softmax(_output_windows[v] / temperature, dim=2)" in code, code
    assert "for v in np.delete(np.arange(np.sum(NMB_CROPS)), crop_id):" in code, code  # the else
    assert "when `np.delete(np.arange(np.sum(NMB_CROPS)), crop_id)` is a 1-D numpy array of " \
        "ints (iterated as their int64 tensor) and the slices `output[bs * v:bs * (v + 1)]` lie" \
        in report.loops[0].reason, report.loops[0].reason


@pytest.mark.parametrize("change", [
    ("np.delete(np.arange(np.sum(NMB_CROPS)), crop_id)", "np.random.permutation(6)"),  # random
    ("np.delete(np.arange(np.sum(NMB_CROPS)), crop_id)", "np.arange(6)"),  # a range: iteration
    ("F.softmax(output", "F.softmax(v * output"),                          # numpy int as a number
    ("    return subloss", "    print(v)\n    return subloss"),             # read after the loop
])
def test_other_iterables_and_reads_are_not_converted(change):
    code, report = rewrite_source(_source("swav").replace(*change), namespace(np=np))
    assert "_numpy_ints" not in code, code


def test_numpy_int_read_as_a_number_keeps_the_loop_as_written():
    src = _source("swav").replace("F.softmax(output", "F.softmax(v * output")
    code, report = rewrite_source(src, namespace(np=np))
    assert strategies(report) == {3: "kept"}, (report, code)
    assert normalise(src) == code  # no change


def _views(dtype, bs=3, k=5, special=False):
    g = torch.Generator().manual_seed(0)
    output = torch.randn(6 * bs, k, generator=g, dtype=dtype)
    if special:
        output[bs * 2, 1], output[bs * 4 + 1, 0] = float("inf"), float("nan")
        output[bs * 5, :] = 2.0  # ties in the softmax
    q = torch.softmax(torch.randn(bs, k, generator=g, dtype=dtype), 1)
    return output.requires_grad_(), q.requires_grad_()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("crop_id", [0, 1, 5])
@pytest.mark.parametrize("special", [False, True])
def test_swav_views_vectorized_equivalent(tmp_path, dtype, crop_id, special):
    user = load_module(tmp_path, SWAV)
    output, q = _views(dtype, special=special)
    (loop,) = equivalent_report(user.swav, output, q, 3, crop_id).loops
    assert (loop.vectorized_runs, loop.original_runs) == (1, 0), loop


@pytest.mark.parametrize("dtype", DTYPES)
def test_swav_inside_the_crops_loop_equivalent(tmp_path, dtype):
    # main_swav.py's shape: the views loop inside the loop over the crops it assigns from
    user = load_module(tmp_path, SWAV)
    output, _ = _views(dtype)
    outer, inner = sorted(equivalent_report(user.multi_crop, output, torch.zeros(
        2, 3, 5, dtype=dtype), 3, [0, 1], [2, 4]).loops, key=lambda loop: loop.lineno)
    assert outer.strategy == "kept" and inner.vectorized and inner.vectorized_runs == 2, inner


@pytest.mark.parametrize("case", ["negative", "float array", "out of the tensor", "empty"])
def test_other_arrays_run_the_loop_as_written(tmp_path, case):
    user = load_module(tmp_path, SWAV)
    output, q = _views(torch.float32)
    x = torch.randn(4, 3, requires_grad=True)
    if case == "negative":      # x[-1] counts from the end, not a window from 0
        (loop,) = equivalent_report(user.picked, x, np.array([-1, 2])).loops
    elif case == "float array":  # np.setdiff1d keeps floats: indexing raises, as written
        with pytest.raises(IndexError):
            equivalent_report(user.picked, x, np.array([1.0, 2.0]))
        return
    elif case == "out of the tensor":  # blocks cut short: no view, masks of the slices
        (loop,) = equivalent_report(user.blocks, x, 3, np.array([0, 1, 2])).loops
        assert loop.strategy == "vmap" and loop.vectorized_runs == 1, loop
        return
    else:
        (loop,) = equivalent_report(user.picked, x, np.array([0])).loops
    assert loop.vectorized_runs == 0, loop


def test_a_raising_array_raises_as_written(tmp_path):
    from rewrite import optimize_loss
    user = load_module(tmp_path, SWAV)
    output, q = _views(torch.float32)
    with pytest.raises(IndexError):
        user.swav(output, q, 3, 9)
    with pytest.raises(IndexError):
        optimize_loss(user.swav, compile=False)(output, q, 3, 9)
