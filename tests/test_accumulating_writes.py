"""``counts[t[i]] += v`` batched as ``accumulating_writes.index_accumulate``: the cast rule of
``+=`` read from dtype kinds (no ``torch.result_type``/``torch.can_cast``, which break the
compiled graph), the same values or the same error as the loop, and no graph break."""
from __future__ import annotations

import itertools

import pytest
import torch

from passes.accumulating_writes import _kind
from rewrite.testing import assert_equivalent
from tests.loop_helpers import build

DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int32, torch.int64, torch.float16,
          torch.bfloat16, torch.float32, torch.float64, torch.complex64)


@pytest.mark.parametrize("out_dim, v_dim", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_kind_rule_is_the_cast_rule_of_in_place_add(out_dim, v_dim):
    for a, b in itertools.product(DTYPES, DTYPES):
        out, v = torch.zeros((2,) * out_dim, dtype=a), torch.zeros((2,) * v_dim, dtype=b)
        assert (_kind(b) <= _kind(a)) == torch.can_cast(torch.result_type(out, v), a), (a, b)


def counted(value: str, out: str) -> str:
    return (f"def f(x, t):\n    counts = {out}\n    for i in range(x.shape[0]):\n"
            f"        counts[t[i]] += {value}\n    return counts\n")


@pytest.mark.parametrize("value, out", [
    ("1", "torch.zeros(5)"),                                   # int values, float counts
    ("x[i].sum()", "torch.zeros(5, dtype=torch.float64)"),     # a float32 or float64 sum
    ("x[i].sum()", "torch.zeros(5, dtype=torch.float32)"),     # a float64 sum rounded
    ("1", "torch.zeros(5, dtype=torch.int32)"),                # int64 values into int32
])
def test_repeated_slots_accumulate_as_the_loop_does(value, out):
    original, optimized, code, report = build(counted(value, out))
    assert report.loops[0].vectorized and "_index_accumulate(counts" in code, code
    t = torch.tensor([4, 0, 4, -1, 2, 4])  # repeats, a negative slot wraps
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(6, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
        assert_equivalent(original, optimized, x.requires_grad_(), t)


@pytest.mark.parametrize("value, out", [
    ("x[i].sum()", "torch.zeros(5, dtype=torch.int64)"),       # float into int
    ("1", "torch.zeros(5, dtype=torch.bool)"),                 # int into bool
])
def test_a_cast_in_place_add_refuses_raises_too(value, out):
    original, optimized, _, _ = build(counted(value, out))
    x, t = torch.randn(6, 3), torch.tensor([4, 0, 4, 1, 2, 4])
    with pytest.raises(RuntimeError):
        original(x, t)
    with pytest.raises(RuntimeError):
        optimized(x, t)


def test_compiled_without_a_graph_break():
    _, optimized, _, _ = build(counted("x[i].sum()", "x.new_zeros(5)"))
    x, t = torch.randn(6, 3, requires_grad=True), torch.tensor([4, 0, 4, 1, 2, 4])
    explained = torch._dynamo.explain(optimized)(x, t)
    assert explained.graph_break_count == 0, explained.break_reasons
