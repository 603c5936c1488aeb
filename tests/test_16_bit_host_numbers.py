"""A host number next to a float16/bfloat16 tensor: ``x[i] * w[i].item()`` computes with the
Python number in float32 (the kernels' opmath) and rounds the result once. The vectorized form
holds the per-item numbers and the tensor in ``dtype_queries.opmath_type`` for ``+``, ``-``,
``*``, ``/`` and rounds the result once (``loop_rules.HOST_WEAK_OPMATH``); it rounded the
numbers to 16 bits first."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rewrite
from tests.helpers import load_module

HALF = [torch.bfloat16, torch.float16]
BODIES = {
    "mul": "x[i] * w[i].item()",
    "rmul": "w[i].item() * x[i]",
    "add": "x[i] + w[i].item()",
    "rsub": "w[i].item() - x[i]",
    "div": "x[i] / w[i].item()",
    "rdiv": "w[i].item() / x[i]",
    "float": "x[i] * float(w[i])",
}


def compiled(tmp_path, expr: str):
    src = ("import torch\n\ndef f(x, w):\n    out = []\n    for i in range(x.shape[0]):\n"
           f"        out.append({expr})\n    return torch.stack(out)\n")
    fn = load_module(tmp_path, src).f
    return fn, rewrite.optimize_loss(fn, compile=False, strict=True)


def run(fn, x, w, cot):
    x = x.detach().clone().requires_grad_()
    out = fn(x, w)
    out.backward(cot)
    return out, x.grad


@pytest.mark.parametrize("name", sorted(BODIES))
@pytest.mark.parametrize("dtype", HALF, ids=str)
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), wide=st.sampled_from([torch.float32, torch.float64]))
def test_the_number_is_not_rounded_to_16_bits(tmp_path_factory, name, dtype, seed, wide):
    original, fast = compiled(tmp_path_factory.mktemp("src"), BODIES[name])
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(8, 16, generator=g) * 3).to(dtype)
    w = (torch.rand(8, generator=g, dtype=torch.float64) * 300 + 0.01).to(wide)
    cot = torch.randn(8, 16, generator=g).to(dtype)
    for want, got in zip(run(original, x, w, cot), run(fast, x, w, cot)):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    assert all(not loop.original_runs for loop in fast.report.loops)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int32], ids=str)
def test_other_dtypes_are_unchanged(tmp_path, dtype):
    original, fast = compiled(tmp_path, BODIES["mul"])
    x = torch.arange(32).reshape(2, 16).to(dtype)
    for w in (torch.tensor([0.3, 1.0039]), torch.tensor([3, -7])):
        want, got = original(x, w), fast(x, w)
        assert got.dtype == want.dtype and torch.equal(got, want)
