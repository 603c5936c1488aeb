"""The gradient of a float16/bfloat16 tensor every iteration reads: the original's autograd adds
each iteration's part into it in 16 bits, one at a time (last iteration first), where a
vectorized loop's backward sums the parts at once (float32 accumulation, one rounding). Such a
loop runs as written while that tensor requires grad (``rounded_gradients_run_as_written``);
rows at the loop's index get one part each and stay vectorized (``tests/test_16_bit_sums.py``)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rewrite
from tests.helpers import load_module

HALF = [torch.bfloat16, torch.float16]

# bodies reading `w` (or a module's parameters) in every iteration: as written in 16 bits
SHARED = {
    "product": "s = 0\nfor i in range(x.shape[0]):\n    s = s + x[i] * w",
    "summed": "s = 0\nfor i in range(x.shape[0]):\n    s = s + (x[i] * w).sum()",
    "twice": "s = 0\nfor i in range(x.shape[0]):\n    s = s + x[i] * w - w * 0.5",
    "through_exp": "s = 0\nfor r in x:\n    s = s + r * torch.tanh(w)",
    "mse": "s = 0\nfor r in x:\n    s = s + torch.nn.functional.mse_loss(r, w)",
    "stacked": "out = []\nfor r in x:\n    out.append(r - w)\ns = torch.stack(out)",
    "derived": "v = w * 2\ns = 0\nfor i in range(x.shape[0]):\n    s = s + x[i] * v",
    "bound_in_body": "s = 0\nfor r in x:\n    u = w + 1\n    s = s + r * u",
    "list_of_weights": "ws = [w]\ns = 0\nfor r in x:\n    s = s + r * ws[0]",
    "inner_loop": "s = 0\nfor r in x.reshape(-1, 6, 2):\n    for v in r:\n        s = s + v * w",
    "module": "s = 0\nfor r in x:\n    s = s + lin(r)",
}
# rows at the index (one part of the gradient each), read once or more: vectorized
ROWS = {
    "row": "s = 0\nfor i in range(x.shape[0]):\n    s = s + x[i] * y[i]",
    "row_twice": "s = 0\nfor i in range(x.shape[0]):\n    s = s + x[i] * (x[i] - y[i])",
    "element": "s = 0\nfor r, q in zip(x, y):\n    s = s + r * q",
    "stacked_rows": "out = []\nfor i in range(x.shape[0]):\n    out.append(x[i] - y[i])\n"
                    "s = torch.stack(out)",
}


def compiled(tmp_path, body: str):
    src = "import torch\n\ndef f(x, y, w, lin):\n" \
        + "".join(f"    {line}\n" for line in body.splitlines()) + "    return s\n"
    fn = load_module(tmp_path, src).f
    return fn, rewrite.optimize_loss(fn, compile=False, strict=True)


def inputs(dtype: torch.dtype, seed: int, n: int = 300):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, 2, generator=g) * 4).to(dtype).requires_grad_()
    y = torch.randn(n, 2, generator=g).to(dtype).requires_grad_()
    w = torch.randn(2, generator=g).to(dtype).requires_grad_()
    lin = torch.nn.Linear(2, 2).to(dtype)
    return x, y, w, lin


def gradients(fn, args, cot_seed: int):
    """The value and every gradient (the inputs' and the module's parameters') of one call."""
    x, y, w, lin = (a.detach().clone().requires_grad_() if isinstance(a, torch.Tensor)
                    else _copy(a) for a in args)
    out = fn(x, y, w, lin)
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(cot_seed)) \
        .to(out.dtype)
    out.backward(cot)
    return [out] + [t.grad for t in (x, y, w, lin.weight, lin.bias)]


def _copy(lin: torch.nn.Linear) -> torch.nn.Linear:
    new = torch.nn.Linear(2, 2).to(lin.weight.dtype)
    new.load_state_dict(lin.state_dict())
    return new


def assert_bitwise(original, fast, args, seed: int) -> None:
    for want, got in zip(gradients(original, args, seed), gradients(fast, args, seed)):
        assert (want is None) == (got is None)
        if want is not None:
            assert got.dtype == want.dtype
            torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("name", sorted(SHARED) + sorted(ROWS))
@pytest.mark.parametrize("dtype", HALF, ids=str)
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1))
def test_every_gradient_is_the_originals_bit_for_bit(tmp_path_factory, name, dtype, seed):
    original, fast = compiled(tmp_path_factory.mktemp("src"), {**SHARED, **ROWS}[name])
    assert_bitwise(original, fast, inputs(dtype, seed), seed)
    loops = fast.report.loops
    assert any(loop.vectorized for loop in loops), loops
    # a part from every iteration: as written; rows: vectorized
    assert any(loop.original_runs for loop in loops) == (name in SHARED), loops
    assert any(loop.vectorized_runs for loop in loops) == (name in ROWS), loops


@pytest.mark.parametrize("name", sorted(SHARED))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_wider_floats_stay_vectorized(tmp_path, name, dtype):
    original, fast = compiled(tmp_path, SHARED[name])
    args = inputs(dtype, 0, 60)
    for want, got in zip(gradients(original, args, 0), gradients(fast, args, 0)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)  # sums reassociated
    assert all(not loop.original_runs for loop in fast.report.loops), fast.report.loops


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_without_grad_it_stays_vectorized(tmp_path, dtype):
    """No gradient to add: the 16-bit loop's vectorized form runs (its sum in steps)."""
    original, fast = compiled(tmp_path, SHARED["product"])
    x, y, w, lin = (a.detach() if isinstance(a, torch.Tensor) else a
                    for a in inputs(dtype, 1))
    assert torch.equal(fast(x, y, w, lin), original(x, y, w, lin))
    with torch.no_grad():
        w.requires_grad_()
        assert torch.equal(fast(x, y, w, lin), original(x, y, w, lin))
    assert not any(loop.original_runs for loop in fast.report.loops)


def test_the_original_adds_the_parts_in_16_bits_last_first():
    """What the tests above rest on: autograd's order and rounding, against one reduction."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(600, 2, generator=g) * 4).bfloat16()
    w = torch.randn(2, generator=g).bfloat16().requires_grad_()
    s = 0
    for i in range(600):
        s = s + x[i] * w
    s.sum().backward()
    want = x[-1].clone()
    for i in reversed(range(599)):
        want = want + x[i]
    assert torch.equal(w.grad, want)
    assert not torch.equal(w.grad, x.sum(0))
