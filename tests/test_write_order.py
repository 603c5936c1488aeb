"""Several writes into one tensor in a loop body: the vectorized form runs them statement by
statement, the original interleaves them, so an element two writes hit in different iterations
has another last writer. Such loops are vectorized only when the order cannot matter."""
from __future__ import annotations

import pytest
import torch

import rewrite
from rewrite.testing import assert_equivalent
from tests.helpers import load_module

# each permutation makes write 1 of a later iteration hit what write 2 of an earlier one wrote
PERMUTATIONS = [[1, 0, 3, 2], [2, 3, 0, 1], [1, 2, 3, 0], [0, 0, 0, 0]]


def _load(tmp_path, body: str):
    return load_module(tmp_path, f"""import torch
def f(x, t):
    out = torch.zeros(x.shape[0], x.shape[0], dtype=x.dtype)
    for i in range(x.shape[0]):
{body}
    return (out * torch.arange(out.numel(), dtype=x.dtype).view_as(out)).sum()
""").f


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("body", [
    "        out[i, t[i]] = x[i].sum()\n        out[t[i], i] = x[i].prod()",
    "        out[i, 1] = x[i].sum()\n        out[2, i] = x[i].prod()",
    "        out[i] = x[i].sum()\n        out[t[i], i] = x[i].prod()",
], ids=["data-dependent", "fixed-positions", "row-and-column"])
def test_writes_that_may_meet_across_iterations_keep_their_order(tmp_path, body, dtype):
    fn = _load(tmp_path, body)
    fast = rewrite.optimize_loss(fn, compile=False)
    x = torch.randn(4, 3, dtype=dtype, requires_grad=True)
    for t in PERMUTATIONS:
        assert_equivalent(fn, fast, x, torch.tensor(t))
    assert "may hit one element in different iterations" in fast.report.loops[0].reason \
        or fast.report.loops[0].strategy == "distributed"


@pytest.mark.parametrize("body", [
    "        out[i, t[i]] = x[i].sum()\n        out[i, 0] = x[i].prod()",
    "        out[i, t[i]] = 0.5\n        out[t[i], i] = 0.5",
    "        out[t[i], 0] += x[i].sum()\n        out[0, t[i]] -= x[i].prod()",
], ids=["one-row-per-iteration", "one-constant", "all-accumulate"])
def test_writes_whose_order_cannot_matter_stay_vectorized(tmp_path, body):
    fn = _load(tmp_path, body)
    fast = rewrite.optimize_loss(fn, compile=False, strict=True)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    for t in PERMUTATIONS:
        assert_equivalent(fn, fast, x, torch.tensor(t))
    assert fast.report.loops[0].vectorized and fast.report.loops[0].strategy != "distributed"
