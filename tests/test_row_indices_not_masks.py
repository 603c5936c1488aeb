"""check_mapped_body: a row of a tensor whose dtype the rewrite cannot know (a parameter) used
as an index (``scores[q][mask[q]]``, ListNet over padded lists with the mask passed in) is a
gather at integer positions in the vectorized forms. A bool or uint8 row would be a mask, at
which vmap raises on every call: the loop's check now says so and the loop runs as written,
with no warning (before, the report said vectorized and every call fell back to the original
with a RewriteWarning). Integer rows still run vectorized. Value, every gradient and dtype
(float32 and float64) equal the original's."""
from __future__ import annotations

import warnings

import pytest
import torch

import rewrite
from rewrite.testing import assert_equivalent
from tests.helpers import load_module
from tests.loop_helpers import dedent

LISTNET = """
    import torch
    import torch.nn.functional as F


    def f(scores, targets, index):
        loss = 0
        for q in range(scores.shape[0]):
            s = scores[q][index[q]]
            t = targets[q][index[q]]
            loss = loss - (F.softmax(t, 0) * F.log_softmax(s, 0)).sum()
        return loss / scores.shape[0]
    """


def inputs(dtype, kind):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 5, generator=g, dtype=dtype).requires_grad_()
    targets = torch.rand(6, 5, generator=g, dtype=dtype)
    if kind == "positions":
        return scores, targets, torch.randint(0, 5, (6, 3), generator=g)
    mask = torch.arange(5)[None] < torch.tensor([1, 5, 3, 2, 4, 5])[:, None]
    return scores, targets, mask if kind == "bool" else mask.to(torch.uint8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("kind, runs", [("bool", (0, 1)), ("uint8", (0, 1)),
                                        ("positions", (1, 0))])
def test_rows_indexing_run_vectorized_only_at_integer_positions(tmp_path, dtype, kind, runs):
    module = load_module(tmp_path, dedent(LISTNET))
    fn = rewrite.optimize_loss(module.f, compile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # uint8 indexing warns in torch itself: not ours
        warnings.filterwarnings("ignore", message=".*uint8.*", category=UserWarning)
        assert_equivalent(module.f, fn, *inputs(dtype, kind))
    [loop] = fn.report.loops
    assert (loop.vectorized_runs, loop.original_runs) == runs and loop.failed_runs == 0, loop
    assert not fn.report.fallbacks
    if kind != "positions":
        assert "mask.dtype" not in loop.last_failure and "index.dtype in (torch.bool" in \
            loop.last_failure, loop.last_failure
