"""``loop_sums_keep_dtypes``: a loop's sum of narrow integer items keeps their dtype and wraps
as the original's additions do; a sum started from a wider tensor is summed in the dtype of
the additions onto it, one started from a Python number that would widen runs as written."""
from __future__ import annotations

import pytest
import torch

import rewrite
from passes import loop_sums_keep_dtypes
from rewrite.testing import assert_equivalent
from tests.helpers import load_module

NARROW = [torch.uint8, torch.int8, torch.int16, torch.int32]
DTYPES = NARROW + [torch.int64, torch.bool, torch.float32, torch.float64]

SOURCES = {
    # batched: the item itself, an op of it, the elements of the tensor
    "indexed": "s = 0\nfor i in range(x.shape[0]):\n    s = s + x[i]",
    "scaled": "s = 0\nfor i in range(x.shape[0]):\n    s = s + x[i] * 3",
    "elements": "s = 0\nfor r in x:\n    s += r",
    # mapped with vmap (torch.flip has no batched form)
    "mapped": "s = 0\nfor i in range(x.shape[0]):\n    s = s + torch.flip(x[i], [0])",
    # two loop levels, each summing
    "nested": "s = 0\nfor i in range(x.shape[0]):\n    for j in range(x.shape[1]):\n"
              "        s = s + x[i, j]",
    # Python's sum of a list the loop stacks, of each item's elements; a running sum
    "appended": "parts = []\nfor r in x:\n    parts.append(r * 2)\ns = sum(parts)",
    "item_sums": "out = []\nfor r in x:\n    out.append(sum(r))\ns = torch.stack(out)",
    "running": "t = 0\nouts = []\nfor r in x:\n    t = t + r\n    outs.append(t)\n"
               "s = torch.stack(outs)",
    # started from a tensor of the items' dtype, in place and rebound
    "same_start": "s = torch.zeros(x.shape[1:], dtype=x.dtype)\nfor r in x:\n    s = s + r",
    "same_start_inplace": "s = x[0].clone()\nfor r in x:\n    s += r",
    # started from a wider tensor: summed in the dtype of the additions onto it
    "int64_start": "s = torch.zeros(x.shape[1:], dtype=torch.int64)\nfor r in x:\n    s = s + r",
    "int64_start_inplace": "s = torch.zeros(x.shape[1:], dtype=torch.int64)\nfor r in x:\n"
                           "    s += r",
    # started from a Python float: the items' own sum, and the loop runs as written when it
    # would wrap where the original's float additions do not
    "float_start": "s = 0.0\nfor r in x:\n    s = s + r",
}
WIDER_STARTS = {"float_start"}


def compiled(tmp_path, body: str):
    src = "import torch\n\ndef f(x):\n" + "".join(f"    {line}\n" for line in body.splitlines()) \
        + "    return s\n"
    fn = load_module(tmp_path, src).f
    return fn, rewrite.optimize_loss(fn, compile=False, strict=True)


def overflowing(dtype: torch.dtype) -> torch.Tensor:
    """[40, 3] items whose sum overflows every narrow integer dtype."""
    x = torch.arange(120).reshape(40, 3) * 37 % 101 - (20 if dtype.is_signed else 0)
    scale = {torch.int16: 400, torch.int32: 10 ** 7}.get(dtype, 1)
    return (x * scale).to(dtype) if dtype != torch.bool else x > 50


@pytest.mark.parametrize("name", sorted(SOURCES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_same_value_and_dtype_as_the_original(tmp_path, name, dtype):
    original, fast = compiled(tmp_path, SOURCES[name])
    x = overflowing(dtype)
    if dtype.is_floating_point:
        x = x.to(dtype).requires_grad_()  # every gradient too
    if name == "int64_start_inplace" and dtype.is_floating_point:
        for fn in (original, fast):  # `s += r` cannot cast a float into the int64 `s`
            with pytest.raises(RuntimeError, match="can't be cast"):
                fn(x)
        return
    want = original(x)
    assert_equivalent(original, fast, x)
    got = fast(x)
    assert got.dtype == want.dtype
    assert torch.equal(got, want)
    loop = fast.report.loops[0]
    wider = name in WIDER_STARTS and dtype in NARROW
    assert loop.vectorized and (loop.original_runs > 0) == wider, str(loop)


def test_the_sum_overflows_the_narrow_dtypes():
    """The inputs above test the wraparound: their sums leave every narrow dtype's range."""
    for dtype in NARROW:
        x = overflowing(dtype)
        assert (x.long().sum(0) != x.sum(0, dtype=dtype).long()).any(), dtype


def test_a_wider_start_says_why_it_ran_as_written(tmp_path):
    original, fast = compiled(tmp_path, SOURCES["float_start"])
    fast(overflowing(torch.uint8))
    assert "the start's wider dtype" in fast.report.loops[0].last_failure


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_loop_sum_is_the_additions_from_zero(dtype):
    """Invariant: ``loop_sum(v)`` is ``0 + v[0] + v[1] + ...`` in value and dtype."""
    v = overflowing(dtype)
    want = 0
    for item in v:
        want = want + item
    got = loop_sum = loop_sums_keep_dtypes.loop_sum(v)
    assert loop_sum.dtype == want.dtype
    assert torch.equal(got, want)


def test_generated_code_calls_loop_sum_and_leaves_other_sums(tmp_path):
    _, fast = compiled(tmp_path, SOURCES["indexed"])
    code = fast.report.rewritten_source
    assert "_loop_sum(" in code and ".sum(0)" not in code
    # no loop: nothing to do (the pass changes only the sums the loop passes marked)
    src = "import torch\n\ndef f(x):\n    s = x.sum(0)\n    return s\n"
    plain = rewrite.optimize_loss(load_module(tmp_path, src).f, compile=False)
    assert "loop_sum" not in plain.report.rewritten_source


PRODUCTS = {
    "product": "s = 1\nfor r in x:\n    s = s * r",
    "product_int64_start": "s = torch.ones(x.shape[1:], dtype=torch.int64)\nfor r in x:\n"
                           "    s = s * r",
}


@pytest.mark.parametrize("name", sorted(PRODUCTS))
@pytest.mark.parametrize("dtype", NARROW + [torch.int64, torch.float32, torch.float64], ids=str)
def test_products_keep_the_dtype_too(tmp_path, name, dtype):
    original, fast = compiled(tmp_path, PRODUCTS[name])
    x = (torch.arange(60).reshape(20, 3) % 5 + 1).to(dtype)  # 5**20 overflows int32
    if dtype.is_floating_point:
        x.requires_grad_()
    assert_equivalent(original, fast, x)
    want, got = original(x), fast(x)
    assert got.dtype == want.dtype and torch.equal(got, want)
    loop = fast.report.loops[0]
    wider = name == "product_int64_start" and dtype in NARROW
    assert loop.vectorized and (loop.original_runs > 0) == wider, str(loop)


# An inner loop's sum or product the outer body starts again, at a start wider than the items
# (or narrower, or a Python number): the inner fold is in the dtype of the original's first step
# onto that start, per outer iteration (it was in the items' own dtype: wrapped at 256, or
# counted in int64, silently).
RESTARTED = {
    "sum_int16": "s = 0\nfor r in x:\n    t = torch.zeros((), dtype=torch.int16)\n"
                 "    for v in r:\n        t = t + v\n    s = s + t",
    "sum_int32_rows": "s = 0\nfor r in x:\n    t = torch.zeros(x.shape[2:], dtype=torch.int32)\n"
                      "    for v in r:\n        t = t + v\n    s = s + t",
    "sum_float": "s = 0\nfor r in x:\n    t = 0.5\n    for v in r:\n        t = t + v\n"
                 "    s = s + t",
    "sum_int64_mapped": "s = 0\nfor r in x:\n    t = torch.tensor(0)\n    for v in r:\n"
                        "        t = t + torch.flip(v, [0])\n    s = s + t",
    "product_int32": "s = 0\nfor r in x:\n    t = torch.ones((), dtype=torch.int32)\n"
                     "    for v in r:\n        t = t * v\n    s = s + t",
    "product_float": "s = 0\nfor r in x:\n    t = 1.0\n    for v in r:\n        t = t * v\n"
                     "    s = s + t",
    # bools counted onto an int32 start in a mapped body (each item's `0 + b` was int64 there),
    # and multiplied onto an int16 one
    "sum_bools_mapped": "s = 0\nfor r in x:\n    t = torch.zeros((), dtype=torch.int32)\n"
                        "    for v in r:\n        t = t + (torch.flip(v, [0]) > 0)\n    s = s + t",
    "product_bools": "s = 0\nfor r in x:\n    t = torch.ones((), dtype=torch.int16) * 3\n"
                     "    for v in r:\n        t = t * (v > 1)\n    s = s + t",
}


@pytest.mark.parametrize("name", sorted(RESTARTED))
@pytest.mark.parametrize("dtype", NARROW + [torch.int64, torch.float32, torch.float64], ids=str)
def test_inner_folds_onto_a_start_the_outer_body_binds(tmp_path, name, dtype):
    original, fast = compiled(tmp_path, RESTARTED[name])
    # [3, 40, 3] items: the inner sums leave every narrow dtype's range, the products too
    x = torch.stack([overflowing(dtype)] * 3) if name.startswith("sum") else \
        (torch.arange(360).reshape(3, 40, 3) % 5 + 1).to(dtype)
    if name.endswith("mapped"):
        x = x.unsqueeze(-1).expand(*x.shape, 2).contiguous()  # items of one dim to flip
    if dtype.is_floating_point:
        x = x.to(dtype).requires_grad_()
    want, got = original(x), fast(x)
    assert got.dtype == want.dtype
    exact = not want.is_floating_point()  # float sums of large integers round by their order
    torch.testing.assert_close(got, want, **({"rtol": 0, "atol": 0} if exact else {}))
    assert_equivalent(original, fast, x)
    assert all(loop.vectorized and not loop.original_runs for loop in fast.report.loops), \
        fast.report.loops


@pytest.mark.parametrize("start", [torch.tensor(3, dtype=torch.int16), 2.5, 7,
                                   torch.zeros(3, dtype=torch.int32), torch.tensor(True)])
@pytest.mark.parametrize("dtype", NARROW + [torch.bool, torch.float32], ids=str)
def test_loop_sum_onto_is_the_additions_onto_the_start(start, dtype):
    """Invariant: ``start + loop_sum_onto(start, v)`` is ``start + v[0] + v[1] + ...``."""
    v = overflowing(dtype)
    want = start
    for item in v:
        want = want + item
    got = start + loop_sums_keep_dtypes.loop_sum_onto(start, v)
    assert got.dtype == want.dtype
    exact = not want.is_floating_point()  # float sums of large integers round by their order
    torch.testing.assert_close(got, want, **({"rtol": 0, "atol": 0} if exact else {}))


def test_inner_fold_onto_a_restarted_start_golden(tmp_path):
    """The inner partial starts from the start's own 0 and sums in that addition's dtype; an
    accumulator no outer statement binds again keeps ``_loop_sum`` (no change: ``indexed``)."""
    _, fast = compiled(tmp_path, RESTARTED["sum_int16"])
    body = fast.report.rewritten_source.split("def _body_1(r):\n")[1].split("\n        _outs_1")[0]
    assert body.splitlines()[:6] == [
        "            _s_part = 0",
        "            t = torch.zeros((), dtype=torch.int16)",
        "            v = r",
        "            _t_part = _identity_of(t, 0)",
        "            _t_part = _t_part + _loop_sum_onto(t, v, 0)",
        "            _outs = (_t_part,)"]
    _, plain = compiled(tmp_path, SOURCES["nested"])
    assert "_loop_sum_onto" not in plain.report.rewritten_source
    assert "_identity_of" not in plain.report.rewritten_source


# A top-level loop's sum started from a tensor whose additions widen the items (a float64
# accumulator of float32 items, a float32 one of float16 items, an int16 one of uint8 items, all
# 0-d: a 0-d start promotes 0-d items): summed in the additions' dtype, not the items' (whose
# sum the start then only casts: float64 in dtype, float32 in precision; narrow integers wrapped,
# which ran the loop as written).
WIDENING = {
    "rebound": "s = torch.zeros((), dtype=w)\nfor r in x:\n    s = s + r",
    "inplace": "s = torch.zeros((), dtype=w)\nfor r in x:\n    s += r",
    "rows": "s = torch.zeros(x.shape[1:], dtype=w)\nfor r in x:\n    s = s + r",
    "mapped": "s = torch.zeros((), dtype=w)\nfor r in x:\n    s = s + torch.flip(r, [-1]).sum()",
    "indexed": "s = torch.zeros((), dtype=w)\nfor i in range(x.shape[0]):\n    s = s + x[i]",
}
WIDER = {torch.float32: torch.float64, torch.float16: torch.float32, torch.uint8: torch.int16}


def _cancelling(dtype: torch.dtype, rows: bool) -> torch.Tensor:
    """Items whose sum in their own dtype loses what the wider one keeps: 1e8 (float16: 2048),
    999 ones, minus the first (uint8: 300 items of 200, past 255)."""
    if dtype == torch.uint8:
        x = torch.full((300,), 200, dtype=dtype)
    else:
        big = 2048.0 if dtype == torch.float16 else 1e8
        x = torch.cat([torch.tensor([big]), torch.ones(999), torch.tensor([-big])]).to(dtype)
    return x[:, None].expand(-1, 2).contiguous() if rows else x


@pytest.mark.parametrize("name", sorted(WIDENING))
@pytest.mark.parametrize("dtype", sorted(WIDER, key=str), ids=str)
def test_a_wider_tensor_start_sums_in_its_dtype(tmp_path, name, dtype):
    src = WIDENING[name].replace("dtype=w", f"dtype={WIDER[dtype]}")
    original, fast = compiled(tmp_path, src)
    x = _cancelling(dtype, rows=name in ("rows", "mapped"))
    want, got = original(x), fast(x)
    assert got.dtype == want.dtype
    assert want.dtype == WIDER[dtype] or name == "mapped"  # an integer `.sum()` is int64
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    if dtype.is_floating_point:
        assert_equivalent(original, fast, x.requires_grad_())
    loop = fast.report.loops[0]
    assert loop.vectorized and not loop.original_runs, str(loop)


def test_a_python_number_start_keeps_the_items_sum(tmp_path):
    """A start that is a Python number does not widen the items: their own sum, no addition onto
    the start in the loop (the form the examples' `loss = 0.0` keep)."""
    _, fast = compiled(tmp_path, "s = 0.0\nfor i in range(x.shape[0]):\n    s = s + x[i]")
    assert "_loop_sum(" in fast.report.rewritten_source
    assert "_loop_sum_onto" not in fast.report.rewritten_source
    _, wide = compiled(tmp_path, WIDENING["indexed"].replace("dtype=w", "dtype=torch.float64"))
    assert "_loop_sum_onto(s, " in wide.report.rewritten_source
