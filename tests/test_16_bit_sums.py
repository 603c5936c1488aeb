"""Float16/bfloat16 sums and products over a loop round to 16 bits at every step, as the
original's additions do: 300 additions of 8.0 in bfloat16 stall at 2048 as written, and a
reduction (float32 accumulation, one rounding) gave 2400. ``loop_sums_keep_dtypes`` adds such
items one by one (``loop_sum``, ``running_sum``, ``running_product``, ``loop_products.product``),
and a fold onto a start other than 0 (1) runs the loop as written (``steps_differ``)."""
from __future__ import annotations

import operator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rewrite
from passes import loop_products, loop_sums_keep_dtypes
from rewrite.testing import assert_equivalent
from tests.helpers import load_module

HALF = [torch.bfloat16, torch.float16]

# forms the vectorizer folds into one sum (or product) over the loop, from 0 (1)
FOLDED = {
    "rebound": "s = 0\nfor i in range(x.shape[0]):\n    s = s + x[i]",
    "augmented": "s = 0\nfor i in range(x.shape[0]):\n    s += x[i]",
    "float_zero": "s = 0.0\nfor r in x:\n    s = s + r",
    "subtracted": "s = 0\nfor r in x:\n    s = s - r",
    "mapped": "s = 0\nfor i in range(x.shape[0]):\n    s = s + torch.flip(x[i], [0])",
    "masked": "s = 0\nfor r in x:\n    if r.sum() > 0:\n        s = s + r",
    "averaged": "s = 0\nfor i in range(x.shape[0]):\n    s = s + x[i]\ns = s / x.shape[0]",
    "sum_generator": "s = sum(x[i] for i in range(x.shape[0]))",
    "sum_list": "s = sum([r for r in x])",
    "appended": "parts = []\nfor r in x:\n    parts.append(r)\ns = sum(parts)",
    "running": "t = 0\nouts = []\nfor r in x:\n    t = t + r\n    outs.append(t)\n"
               "s = torch.stack(outs)",
    "inner_restart": "s = 0\nfor r in x:\n    t = torch.zeros(x.shape[2:], dtype=x.dtype)\n"
                     "    for v in r:\n        t = t + v\n    s = s + t",
    # sums the batched form fuses into other ops (``summed_in_steps``)
    "scaled": "s = 0\nfor i in range(x.shape[0]):\n    s = s + x[i] * 3",
    "divided": "s = 0\nfor r in x:\n    s += r / 3",
    "item_sums": "s = 0\nfor r in x:\n    s = s + r.sum()",
    "item_means": "s = 0\nfor r in x:\n    s = s + r.mean()",
    "item_means_averaged": "s = 0\nfor i in range(x.shape[0]):\n    s = s + x[i].mean()\n"
                           "s = s / x.shape[0]",
    "mse": "s = 0\nfor r in x:\n    s = s + torch.nn.functional.mse_loss(r, r * 0.5)",
    "cross_entropy": "s = 0\nfor r in x:\n    s = s + torch.nn.functional.cross_entropy(r, "
                     "torch.tensor(1))",
}
# several additions per iteration: as written in 16 bits
SEVERAL = {
    "chain": "s = 0\nfor i in range(x.shape[0]):\n    s = s + x[i] + x[i] * x[i]",
    "two_updates": "s = 0\nfor r in x:\n    s = s + r\n    s = s - r * 0.5",
    "nested": "s = 0\nfor i in range(x.shape[0]):\n    for j in range(x.shape[1]):\n"
              "        s = s + x[i, j]",
}
PRODUCTS = {
    "product": "s = 1\nfor r in x:\n    s = s * r",
    "running_product": "t = 1\nouts = []\nfor r in x:\n    t = t * r\n    outs.append(t)\n"
                       "s = torch.stack(outs)",
}
# a start other than 0: the original rounds start + x[0], then + x[1], ...: as written
STARTED = {
    "tensor_zero": "s = torch.zeros(x.shape[1:], dtype=x.dtype)\nfor r in x:\n    s = s + r",
    "tensor_start": "s = x[0].clone()\nfor r in x:\n    s = s + r",
    "inplace": "s = x[0].clone()\nfor r in x:\n    s += r",
    "number_start": "s = 0.5\nfor r in x:\n    s = s + r",
    "product_start": "s = x[0].clone()\nfor r in x:\n    s = s * r",
}


def compiled(tmp_path, body: str):
    src = "import torch\n\ndef f(x):\n" + "".join(f"    {line}\n" for line in body.splitlines()) \
        + "    return s\n"
    fn = load_module(tmp_path, src).f
    return fn, rewrite.optimize_loss(fn, compile=False, strict=True)


def items(name: str, dtype: torch.dtype, x: torch.Tensor | None = None) -> torch.Tensor:
    """[300, 2] eights (a bfloat16 sum stalls at 2048), [3, 300, 2] for the inner loops;
    ``x``: other values of that shape."""
    shape = (3, 300, 2) if name == "inner_restart" else (300, 2)
    x = torch.full(shape, 8.0) if x is None else x.reshape(shape)
    return x.to(dtype).requires_grad_()


def assert_exact(original, fast, x: torch.Tensor) -> None:
    want, got = original(x), fast(x)
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    assert_equivalent(original, fast, x, rtol=0, atol=0)  # the gradient too


@pytest.mark.parametrize("name", sorted(FOLDED))
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_the_stalling_sum_is_the_original_and_runs_vectorized(tmp_path, name, dtype):
    original, fast = compiled(tmp_path, FOLDED[name])
    x = items(name, dtype)
    assert_exact(original, fast, x)
    if name == "rebound" and dtype == torch.bfloat16:
        assert fast(x)[0].item() == 2048.0  # stalls, as written
    loops = fast.report.loops  # (an inner loop runs within its outer loop's vectorized form)
    assert any(loop.vectorized_runs for loop in loops), loops
    assert not any(loop.original_runs for loop in loops), loops


@pytest.mark.parametrize("name", sorted(FOLDED) + sorted(PRODUCTS) + sorted(STARTED)
                         + sorted(SEVERAL))
@pytest.mark.parametrize("dtype", HALF, ids=str)
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1))
def test_random_items_are_exact(tmp_path_factory, name, dtype, seed):
    source = {**FOLDED, **PRODUCTS, **STARTED, **SEVERAL}[name]
    original, fast = compiled(tmp_path_factory.mktemp("src"), source)
    g = torch.Generator().manual_seed(seed)
    n = 1800 if name == "inner_restart" else 600
    x = torch.randn(n, generator=g) * 4
    if name in PRODUCTS or name == "product_start":
        x = 0.7 + torch.rand(n, generator=g) * 0.6  # products neither vanish nor overflow
    if name == "masked":
        x = torch.randn(n, generator=g).abs() * 4  # every iteration selected
    assert_exact(original, fast, items(name, dtype, x))


@pytest.mark.parametrize("name", sorted(STARTED) + sorted(SEVERAL))
@pytest.mark.parametrize("dtype", HALF + [torch.float32], ids=str)
def test_a_start_other_than_zero_runs_as_written_in_16_bits(tmp_path, name, dtype):
    """... and so do several additions per iteration (vectorized in float32)."""
    original, fast = compiled(tmp_path, {**STARTED, **SEVERAL}[name])
    x = items(name, dtype, torch.linspace(0.9, 1.1, 600) if "product" in name else None)
    if dtype == torch.float32:
        assert_equivalent(original, fast, x)
    else:
        assert_exact(original, fast, x)
    loops = fast.report.loops  # (nested: the outer loop, and the inner loop it runs as written)
    assert loops[0].vectorized and any(loop.original_runs for loop in loops) == (dtype in HALF)
    why = "rounds the start plus each item" if name in STARTED else "rounds after each"
    assert any(why in loop.last_failure for loop in loops) == (dtype in HALF), loops


@pytest.mark.parametrize("name", sorted(PRODUCTS))
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_products_at_nan_and_inf_factors(tmp_path, name, dtype):
    original, fast = compiled(tmp_path, PRODUCTS[name])
    x = torch.tensor([1.5, float("inf"), 0.0, float("nan"), 2.0, -1.0])
    assert_exact(original, fast, items(name, dtype, x.repeat(100)))


@pytest.mark.parametrize("dtype", HALF, ids=str)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), n=st.integers(1, 400))
def test_the_helpers_are_the_steps_of_the_loop(dtype, seed, n):
    """Invariant: each helper is the original's steps from 0 (1), in value, dtype and gradient."""
    v = (torch.randn(n, 3, generator=torch.Generator().manual_seed(seed)) * 8).to(dtype)
    for helper, op, start, running in (
            (loop_sums_keep_dtypes.loop_sum, operator.add, 0, False),
            (loop_sums_keep_dtypes.running_sum, operator.add, 0, True),
            (loop_products.product, operator.mul, 1, False),
            (loop_sums_keep_dtypes.running_product, operator.mul, 1, True),
            (lambda t: loop_sums_keep_dtypes.loop_sum_onto(torch.zeros(3, dtype=dtype), t),
             operator.add, 0, False)):
        a, b = v.clone().requires_grad_(), v.clone().requires_grad_()
        want, states = start, []
        for item in a:
            want = op(want, item)
            states.append(want)
        want = torch.stack(states) if running else want
        got = helper(b)
        assert got.dtype == want.dtype and torch.equal(got, want)
        cot = torch.randn(want.shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
        assert torch.equal(torch.autograd.grad(got, b, cot)[0],
                           torch.autograd.grad(want, a, cot)[0])


def test_a_bfloat16_sum_stalls_where_a_reduction_does_not():
    """What the tests above rest on: a reduction (and cumsum) does not round every step."""
    x = torch.full((300,), 8.0, dtype=torch.bfloat16)
    assert x.sum().item() == 2400.0 and x.cumsum(0)[-1].item() == 2400.0
    assert loop_sums_keep_dtypes.loop_sum(x).item() == 2048.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_wider_floats_keep_one_reduction(dtype):
    v = torch.randn(50, 3, dtype=dtype)
    assert torch.equal(loop_sums_keep_dtypes.loop_sum(v), v.sum(0))
    assert torch.equal(loop_sums_keep_dtypes.running_sum(v), v.cumsum(0))


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_compiled_steps_are_not_fused(tmp_path, dtype):
    """Under torch.compile the steps run eagerly (a graph break): Inductor would add the
    float16 items in float32 and round once. The second call runs the compiled form."""
    fn = load_module(tmp_path, "import torch\n\ndef f(x):\n    s = 0\n"
                               "    for i in range(x.shape[0]):\n        s = s + x[i]\n"
                               "    return s\n").f
    fast = rewrite.optimize_loss(fn, strict=True)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        assert_exact(fn, fast, items("rebound", dtype, torch.randn(600, generator=g) * 4))


# an inner fold onto a start the outer body binds again, not to zeros: the original rounds that
# start plus each item in turn; the outer loop runs as written for 16-bit items
RESTARTED = {
    "row_start": "out = []\nfor b in range(x.shape[0]):\n    acc = base[b]\n"
                 "    for i in range(x.shape[1]):\n        acc = acc + x[b, i]\n"
                 "    out.append(acc)\ns = torch.stack(out)",
    "cloned_start": "out = []\nfor b in range(x.shape[0]):\n    acc = base[0].clone()\n"
                    "    for i in range(x.shape[1]):\n        acc = acc + x[b, i]\n"
                    "    out.append(acc)\ns = torch.stack(out)",
    "folded": "s = 0\nfor b in range(x.shape[0]):\n    acc = base[b] * 2\n"
              "    for i in range(x.shape[1]):\n        acc = acc + x[b, i]\n    s = s + acc",
}


@pytest.mark.parametrize("name", sorted(RESTARTED))
@pytest.mark.parametrize("dtype", HALF + [torch.float32], ids=str)
def test_an_inner_fold_onto_a_restarted_start_runs_as_written_in_16_bits(tmp_path, name, dtype):
    fn = load_module(tmp_path, "import torch\n\ndef f(x, base):\n" + "".join(
        f"    {line}\n" for line in RESTARTED[name].splitlines()) + "    return s\n").f
    fast = rewrite.optimize_loss(fn, compile=False, strict=True)
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(3, 300, 2, generator=g) * 4).to(dtype)
    base = (torch.randn(3, 2, generator=g) * 50).to(dtype)
    want, got = fn(x, base), fast(x, base)
    assert got.dtype == want.dtype
    if dtype == torch.float32:
        torch.testing.assert_close(got, want)
    else:
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    loops = fast.report.loops
    assert any(loop.vectorized for loop in loops), loops
    assert any(loop.original_runs for loop in loops) == (dtype in HALF), loops
