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


def _raises_as_written(fn, x):
    """``fn(x)`` rewritten raises the original's error, from its vectorized loop."""
    with pytest.raises(RuntimeError) as want:
        fn(x)
    fast = optimize_loss(fn, compile=False, keep_faster=False, strict=True)
    with pytest.raises(RuntimeError) as got:
        fast(x)
    assert str(got.value) == str(want.value)
    assert fast.report.loops[0].vectorized


def test_a_float_written_into_integers_raises_the_writes_error():
    _raises_as_written(added_onto_integers, torch.rand(4, 3))


def temporary_times_float64(x, w):
    loss = 0.0
    for i in range(x.shape[0]):
        loss = loss + x[i].sum() * (x[i] * 2).mul_(w).sum()  # `x[i].sum()` is evaluated first
    return loss


def integer_temporary_logged(x):
    loss = 0.0
    for i in range(x.shape[0]):
        loss = loss + ((x[i] > 0.5).long() + 1).log_().sum()
    return loss


def int32_temporary_added_int64(x, k):
    out = []
    for i in range(x.shape[0]):
        out.append(((x[i] > 0.5).int() * 2).add_(k[i]).mul_(3))
    return torch.stack(out)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_temporary_written_in_place_keeps_its_dtype(dtype):
    x = torch.randn(5, 3, dtype=dtype).requires_grad_()
    w = torch.full((3,), 1 / 3, dtype=torch.float64)
    fast = _run(temporary_times_float64, x, w)
    assert fast(x, w).dtype == dtype  # the temporary's dtype: float64 only for float64 rows
    assert fast.report.loops[0].runs()["vectorized"] >= 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_an_integer_temporary_keeps_its_integer_dtype(dtype):
    x = torch.rand(4, 3, dtype=dtype)
    k = torch.arange(12).view(4, 3)
    fast = _run(int32_temporary_added_int64, x, k)
    assert fast(x, k).dtype == torch.int32  # functionally: int32 + int64 is int64
    assert fast.report.loops[0].runs()["vectorized"] >= 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_float_op_on_an_integer_temporary_raises_the_writes_error(dtype):
    _raises_as_written(integer_temporary_logged, torch.rand(4, 3, dtype=dtype))


def temporary_under_a_condition(x, flag):
    loss = 0.0
    for i in range(x.shape[0]):
        loss = loss + (x[i].sum() if flag else (x[i] * 2).mul_(0.5).sum())
    return loss


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_temporary_under_a_condition_of_its_expression_keeps_the_loop(dtype):
    x = torch.randn(4, 3, dtype=dtype).requires_grad_()
    fast = _run(temporary_under_a_condition, x, False)
    loop = fast.report.loops[0]
    assert not loop.vectorized and "(x[i] * 2).mul_(0.5)" in str(loop), str(loop)
