"""Generated code runs as the report claims: nested loops read the rows of the right loop, and
every loop reported vectorized runs vectorized."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module

NESTED = '''
import torch

def twice_indexed(x, n, m):
    total = 0
    for j in range(n):
        for i in range(m):
            total = total + x[j, i, j] * x[j, i].sum()
    return total
'''


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_an_outer_index_after_the_inner_one_reads_per_item_rows(tmp_path, dtype):
    # x[j, i, j] depends on i: the inner body reads it from its own row, never a per-j row
    user = load_module(tmp_path, NESTED)
    fn = optimize_loss(user.twice_indexed, compile=False)
    x = torch.randn(3, 4, 3, dtype=dtype, generator=torch.Generator().manual_seed(0),
                    requires_grad=True)
    assert_equivalent(user.twice_indexed, fn, x, 3, 4)
    assert "_row_row" not in fn.report.rewritten_source
    outer = min(fn.report.loops, key=lambda loop: loop.lineno)
    assert (outer.vectorized, outer.vectorized_runs, outer.failed_runs) == (True, 1, 0)
