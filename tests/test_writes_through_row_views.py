"""A local bound to a row of a tensor the loop does not make (``c = centers[y[i]]``: a 0-d index
selects, the row is a view) and written in place (``c += v``, ``c[:] = v``, ``c.copy_(v)``)
changes that tensor, and a later iteration reads what an earlier one wrote (duplicate labels:
the EMA class centers of real code). Such a loop runs as written: the value, the gradients and
the tensor's final contents are the original's."""
from __future__ import annotations

import pytest
import torch

import rewrite
from rewrite.testing import compare, outputs_and_gradients
from tests.helpers import load_module

SOURCE = """import torch
def iadd(x, y, centers):
    loss = 0
    for i in range(x.size(0)):
        c = centers[y[i]]
        loss += (x[i] * c.clone()).sum()
        c += 0.1 * x[i].detach()
    return loss

def slice_store(x, y, centers):
    loss = 0
    for i in range(x.size(0)):
        c = centers[y[i]]
        loss += (x[i] * c.clone()).sum()
        c[:] = 0.5 * c + x[i].detach()
    return loss

def copy_into(x, y, centers):
    loss = 0
    for i in range(x.size(0)):
        c = centers[y[i]]
        loss += (x[i] * c.clone()).sum()
        c.copy_(0.5 * c + x[i].detach())
    return loss

def int_row(x, centers):
    loss = 0
    for i in range(x.size(0)):
        c = centers[i % 2]
        loss += (x[i] * c.clone()).sum()
        c += 0.1 * x[i].detach()
    return loss
"""


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("row_views"), SOURCE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", ["iadd", "slice_store", "copy_into", "int_row"])
def test_rows_of_an_outer_tensor_written_in_place_run_as_written(user, name, dtype):
    fn = getattr(user, name)
    fast = rewrite.optimize_loss(fn, compile=False, keep_faster=False)
    torch.manual_seed(15)
    x = torch.randn(6, 3, dtype=dtype, requires_grad=True)
    centers = torch.randn(4, 3, dtype=dtype)
    rest = () if name == "int_row" else (torch.tensor([0, 1, 1, 3, 1, 0]),)
    # outputs_and_gradients clones its inputs: run each side on its own copy of centers and
    # compare the copies' contents after the call by hand
    want_centers, got_centers = centers.clone(), centers.clone()
    want = outputs_and_gradients(lambda *a: fn(*a, want_centers), (x, *rest), {})
    got = outputs_and_gradients(lambda *a: fast(*a, got_centers), (x, *rest), {})
    assert compare(want, got) == []
    torch.testing.assert_close(got_centers, want_centers, rtol=0, atol=0)
    assert not fast.report.loops[0].vectorized
    assert any(why in fast.report.loops[0].reason
               for why in ("may share memory with another value", "a part of another value"))


def test_a_row_an_opaque_helper_returns_is_a_view_too(tmp_path):
    """``c = row(centers, y[i])`` of a function of another module (not inlined): its result
    may be a view of an argument (here it is), so ``c += v`` keeps the loop too."""
    (tmp_path / "rows_elsewhere.py").write_text("def row(centers, k):\n    return centers[k]\n")
    import sys
    sys.path.insert(0, str(tmp_path))
    try:
        fn = load_module(tmp_path, """import torch
from rows_elsewhere import row
def f(x, y, centers):
    loss = 0
    for i in range(x.shape[0]):
        c = row(centers, y[i])
        c += 0.5 * (x[i] - c)
        loss = loss + ((x[i] - c) ** 2).sum()
    return loss
""").f
    finally:
        sys.path.remove(str(tmp_path))
    fast = rewrite.optimize_loss(fn, compile=False, keep_faster=False)
    x, y, centers = torch.randn(6, 3), torch.tensor([0, 1, 0, 0, 2, 1]), torch.randn(3, 3)
    want_centers, got_centers = centers.clone(), centers.clone()
    torch.testing.assert_close(fast(x, y, got_centers), fn(x, y, want_centers))
    torch.testing.assert_close(got_centers, want_centers, rtol=0, atol=0)
    assert not fast.report.loops[0].vectorized
