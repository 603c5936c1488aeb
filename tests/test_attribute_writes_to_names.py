"""attribute_writes_to_names: a tensor written through an attribute (``self.out[t] = v``) is
written through a name bound to it before the loop. Equivalence (value, every gradient, dtype;
float32 and float64), the same tensor mutated in place, and bodies that keep the loop; the
stage's golden cases are in ``test_loop_stages``."""
from __future__ import annotations

import pytest
import torch

from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, namespace, normalise, strategies


class Buffers:
    def __init__(self, v):
        self.scale = 0.5
        self.out = torch.zeros(v.shape[0] + 2, *v.shape[1:], dtype=v.dtype)


WRITTEN = """
    def f(v, w):
        buf = Buffers(v)
        for t in range(v.shape[0]):
            buf.out[t + 1] = (v[t] * w).tanh() * buf.scale
        return buf.out.pow(2).sum()
    """


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_write_through_an_attribute_vectorizes(dtype):
    original, rewritten, code, report = build(WRITTEN, namespace(Buffers=Buffers))
    assert strategies(report) == {3: "batched"} and "_out = getattr(buf, 'out', None)" in code
    assert report.loops[0].reason.startswith("`buf.out` accumulated")  # the user's names
    assert "when `buf.out`, `v` are tensors" in report.loops[0].reason
    g = torch.Generator().manual_seed(0)
    v = torch.randn(7, 3, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(3, generator=g, dtype=dtype, requires_grad=True)
    assert_equivalent(original, rewritten, v, w)


def test_the_same_tensor_is_written_in_place():
    src = """
        def f(buf, v):
            for t in range(v.shape[0]):
                buf.out[t] = v[t] * 2
        """
    original, rewritten, _, report = build(src)
    assert strategies(report) == {2: "batched"}
    v = torch.randn(5, 3)
    want, got = Buffers(v), Buffers(v)
    tensor, version = got.out, got.out._version
    original(want, v)
    rewritten(got, v)
    assert got.out is tensor and tensor._version > version
    torch.testing.assert_close(got.out, want.out)


@pytest.mark.parametrize("line", [
    "buf.out = buf.out.clone()",   # the attribute bound again
    "buf.reset()",                 # a method that may bind it
    "keep(buf)",                   # handed to a call
])
def test_bodies_that_may_bind_the_attribute_keep_the_loop(line):
    src = f"""
        def f(buf, v):
            for t in range(v.shape[0]):
                buf.out[t] = v[t] * 2
                {line}
        """
    _, _, code, report = build(src, namespace(keep=print))
    assert strategies(report) == {2: "kept"} and code == normalise(src)


class _Storage:
    def __init__(self, n):
        self.returns = torch.zeros(n)

    def fill(self, gae, v):
        for step in range(gae.shape[0]):
            self.returns[step] = gae[step] + v[step]
        return gae.sum()


def _outcome(fn, *args):
    try:
        return fn(*args).item()
    except Exception as exc:  # noqa: BLE001 - the outcome compared is the exception itself
        return type(exc), str(exc)


def test_the_attribute_is_read_only_where_the_loop_reads_it():
    """The name is bound in front of the guard: an object lacking the attribute, with no
    iteration, raises nothing, as the original reads nothing."""
    from rewrite import optimize_loss
    fast = optimize_loss(_Storage.fill, compile=False, keep_faster=False, strict=True)
    g, v = torch.randn(5), torch.randn(5)
    storage, expected = _Storage(5), _Storage(5)
    assert _outcome(fast, storage, g, v) == _outcome(_Storage.fill, expected, g, v)
    assert torch.equal(storage.returns, expected.returns)
    assert fast.report.loops[0].runs()["vectorized"] == 1
    for obj, n in ((object(), 0), (object(), 5), (_Storage(0), 0)):
        assert _outcome(fast, obj, g[:n], v[:n]) == _outcome(_Storage.fill, obj, g[:n], v[:n])


def test_a_refused_write_through_an_attribute_is_quoted_as_the_user_wrote_it():
    # a MoCo queue filled in place at `j % K`: the vectorizer refuses the write it sees through
    # the name bound to `self.queue`; the reason quotes `self.queue[...]`, not that name
    src = """
        def f(self, keys):
            for j in range(keys.shape[0]):
                self.queue[:, j % self.K] = keys[j]
        """
    _, _, _, report = build(src)
    reason = report.loops[0].reason
    assert strategies(report) == {2: "kept"}
    assert reason.startswith("write `self.queue[:, j % self.K]`: a data-dependent index")
    assert "_queue" not in reason
