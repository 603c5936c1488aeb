"""An in-place write into a tensor the iteration made keeps the tensor's dtype in its functional
form (``inplace_results.inplace_result``), and raises the write's error where the original does."""
import pytest
import torch

from rewrite import assert_equivalent, optimize_loss

DTYPES = [torch.float32, torch.float64]


def added_onto_float32(x):
    loss = 0.0
    for i in range(x.shape[0]):
        m = torch.zeros(3)
        m += x[i]
        loss += m.sum()
    return loss


def chained_onto_float32(x, w):
    loss = 0.0
    for i in range(x.shape[0]):
        m = torch.ones(3)
        m.mul_(x[i]).add_(w)
        loss += (m * m).sum()
    return loss


def added_onto_integers(x):
    loss = 0.0
    for i in range(x.shape[0]):
        m = (x[i] > 0.5).long()  # made by an op of the iteration
        m += x[i]
        loss += m.float().sum()
    return loss


def _run(fn, *args, **tolerances):
    fast = optimize_loss(fn, compile=False, keep_faster=False)
    assert_equivalent(fn, fast, *args, **tolerances)
    assert fast(*args).dtype == fn(*args).dtype
    return fast


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_write_onto_a_new_float32_tensor_keeps_float32(dtype):
    x = torch.randn(5, 3, dtype=dtype).requires_grad_()
    fast = _run(added_onto_float32, x)
    assert fast(x).dtype == torch.float32
    assert fast.report.loops[0].vectorized and fast.report.loops[0].runs()["vectorized"] >= 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_each_link_of_a_chain_is_stored_in_the_tensors_dtype(dtype):
    x = torch.randn(4, 3, dtype=dtype).requires_grad_()
    w = torch.tensor(1 / 3, dtype=torch.float64, requires_grad=True)  # rounds once per link
    # the float64 leaf's gradient is a sum of float32 terms, added in another order: float32's
    # tolerance (the old form computed in float64 throughout, a float64 loss)
    fast = _run(chained_onto_float32, x, w, rtol=1e-5, atol=1e-6)
    assert fast(x, w).dtype == torch.float32
    assert fast.report.loops[0].runs()["vectorized"] >= 1


def test_a_float_written_into_integers_raises_the_writes_error():
    x = torch.rand(4, 3)
    with pytest.raises(RuntimeError) as want:
        added_onto_integers(x)
    fast = optimize_loss(added_onto_integers, compile=False, keep_faster=False, strict=True)
    with pytest.raises(RuntimeError) as got:
        fast(x)
    assert str(got.value) == str(want.value)
    assert fast.report.loops[0].vectorized
