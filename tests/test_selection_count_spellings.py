"""A selection's count spelled ``f.shape[0]``, ``f.size(0)`` or ``f.size()[0]`` is ``len(f)``: the
number of selected rows, a count that varies per iteration (``if f.shape[0] == 0: continue``
in a center loss over class ids). Before, ``f.shape[0]`` read the selection outside a reduction,
or was a Python condition the same in every iteration, and the loop was kept. Equivalence of
values, every gradient and dtype (float32, float64) with an empty class; a no-change case: the
shape of a row of a loop input stays a shape."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent
from tests.loop_helpers import build, rewrite_source, strategies

CENTER = """
    def f(emb, labels, centers):
        loss = 0
        for c in range(centers.shape[0]):
            f = emb[labels == c]
            if {count} == 0:
                continue
            loss = loss + (f - centers[c]).pow(2).sum(1).mean() * {count}
        return loss / centers.shape[0]
    """
SPELLINGS = ["f.shape[0]", "f.size(0)", "f.size()[0]", "len(f)"]
# the first dim of a row of a loop input: a shape, the same in every iteration
ROW_SHAPE = """
    def f(x):
        s = 0
        for i in range(len(x)):
            s = s + x[i].sum() / x[i].shape[0]
        return s
    """


@pytest.mark.parametrize("count", SPELLINGS)
def test_selection_counts_are_counts(count):
    code, report = rewrite_source(CENTER.format(count=count))
    assert strategies(report) and set(strategies(report).values()) <= {"vmap", "batched"}, report
    assert count not in code.split("else:")[0], code  # converted in the vectorized form


def test_the_shape_of_a_row_stays_a_shape():
    code, report = rewrite_source(ROW_SHAPE)
    assert strategies(report) == {3: "batched"}


@pytest.mark.parametrize("count", SPELLINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_selection_count_values_and_gradients(count, dtype):
    original, optimized, _, report = build(CENTER.format(count=count))
    assert set(strategies(report).values()) <= {"vmap", "batched"}, report
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (30,), generator=g)
    labels[labels == 3] = 4  # class 3 is empty: skipped
    emb = torch.randn(30, 6, generator=g, dtype=dtype)
    centers = torch.randn(5, 6, generator=g, dtype=dtype)
    assert_equivalent(original, optimized, emb.requires_grad_(), labels, centers.requires_grad_())
