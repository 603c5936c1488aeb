"""A reason of an outer loop that quotes a statement an inner loop vectorized before it left
(``losses.extend(_outs[0][_outs[1]].unbind(0))``, made of the user's ``losses.append(l)``) quotes
the user's inner loop, not the rewrite's code: a batch-all triplet nest's ``for j`` loop said
"`losses.extend(...)` mutates `losses`", a method the user never called. The loop's code as
written, which a reason may quote as it is, leaves out the inner loop's vectorized branch and its
guard (``plan._as_written``)."""
from __future__ import annotations

import pytest
import torch

from rewrite import explain, optimize_loss
from tests.helpers import equivalent_report, load_module
from tests.test_pair_tests_to_selected_pairs import BATCH_ALL


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("inner_loops"), BATCH_ALL)


def test_an_outer_reason_quotes_the_inner_loop_as_written(user):
    loops = {loop.lineno: loop for loop in explain(user.batch_all).loops}
    first = min(loops)
    outer_j = loops[first + 1]
    assert not outer_j.vectorized
    assert "`for k in range(n): ...` mutates `losses`" in outer_j.reason, outer_j.reason
    assert "extend" not in outer_j.reason and "unbind" not in outer_j.reason
    assert loops[first + 4].vectorized  # the `for k` loop itself


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_nest_is_still_equivalent(user, dtype):
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(6, 3, generator=g, dtype=dtype).requires_grad_()
    labels = torch.tensor([0, 1, 0, 1, 2, 0])
    equivalent_report(user.batch_all, emb, labels)
    got = optimize_loss(user.batch_all, compile=False)(emb, labels)
    assert got.dtype == dtype
