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
    assert strategies(report) == {3: "batched"} and "_out = buf.out" in code
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
