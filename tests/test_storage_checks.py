"""A vectorized loop that writes a tensor in place runs as written when the tensor shares memory
with another one it reads (``passes/storage_checks.py``): ``f(a, a)`` or ``f(a[:-1], a[1:])``
with ``y[k] += 1`` and a read of ``x[k]``, where the original's iterations read what earlier
ones wrote; a distributed loop whose residual loop writes what its hoisted loop reads alike. A compiled graph does not see which arguments share memory: such a call runs the
eager rewritten function (``rewrite/runtime.py``'s ``_shares_written_memory``)."""
import pytest
import torch

from passes.storage_checks import apart
from rewrite import explain, optimize_loss

DTYPES = [torch.float32, torch.float64]
OPTIONS = [dict(compile=False, keep_faster=False), dict(backend="aot_eager", keep_faster=False)]


def written_then_read(x, y):
    total = 0
    for k in range(x.shape[0]):
        y[k] += 1
        total = total + (x[k] * 3).sum()
    return total


def read_then_written(x, y):
    total = 0
    for k in range(x.shape[0]):
        total = total + (x[k] * y[k]).sum()
        y[k] *= 2
    return total


def written_by_a_method(x, y):  # distributed: the residual loop writes, the hoisted one reads
    total = 0
    for k in range(x.shape[0]):
        y[k].mul_(2)
        total = total + (x[k] * 3).sum()
    return total


def same(a):
    return a, a


def shifted_down(a):  # iteration k writes the row iteration k + 1 reads as x[k + 1]
    return a[:-1], a[1:]


def shifted_up(a):
    return a[1:], a[:-1]


def _run(fn, aliases, dtype, grad):
    """(value, gradient of the leaf, the shared tensor after the call) of ``fn`` on views of
    one tensor, made from a leaf that requires grad when ``grad`` (a non-leaf: autograd records
    the writes)."""
    leaf = torch.linspace(-1, 2, 18, dtype=dtype).reshape(6, 3).requires_grad_(grad)
    shared = leaf * 1.5
    value = fn(*aliases(shared))
    if not grad:
        return value, shared
    try:
        (grad,) = torch.autograd.grad(value * 1.25, leaf)
    except RuntimeError as exc:  # a row the graph saved was written after (as the original)
        grad = torch.tensor(float("nan")) if "modified by an inplace operation" in str(exc) else exc
    return value.detach(), grad, shared.detach()


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", OPTIONS, ids=["eager", "aot_eager"])
@pytest.mark.parametrize("aliases", [same, shifted_down, shifted_up])
@pytest.mark.parametrize("fn", [written_then_read, read_then_written, written_by_a_method])
def test_aliased_arguments_keep_values_gradients_and_writes(fn, aliases, options, dtype, grad):
    want = _run(fn, aliases, dtype, grad)
    fast = optimize_loss(fn, **options)
    for _ in range(2):  # the first call of a signature (its checks) and a steady one
        got = _run(fast, aliases, dtype, grad)
        for w, g in zip(want, got):
            torch.testing.assert_close(g, w, equal_nan=True)
    assert not fast.report.fallbacks
    # arguments apart from each other still run vectorized
    apart_ones = (torch.randn(5, 3, dtype=dtype), torch.randn(5, 3, dtype=dtype))
    fn(*[t.clone() for t in apart_ones])
    fresh = optimize_loss(fn, compile=False, keep_faster=False)
    fresh(*apart_ones)
    assert fresh.report.loops[0].vectorized_runs == 1


def test_the_check_reads_every_other_tensor_the_loop_reads():
    source = explain(written_then_read).rewritten_source
    assert "_apart(y, (x,))" in source
    assert "_apart(y, (x,))" in explain(read_then_written).rewritten_source
    assert "_apart(y, (x,))" in explain(written_by_a_method).rewritten_source


def test_apart():
    a = torch.randn(4, 3)
    assert not apart(a, (a,)) and not apart(a[1:], (a[:1],)) and not apart(a, ([a[0]],))
    assert not apart(a, (a.detach(),)) and not apart(a.t(), (3, a))
    assert apart(a, (a.clone(), 3, None, [a.clone()])) and apart(None, (a,))
