"""The inner loops of a vectorized loop, in its branch as written: HiFi-GAN's feature-matching
loss (``for dr, dg in zip(fmap_r, fmap_g): for rl, gl in zip(dr, dg): loss += mean|rl - gl|``,
jik876/hifi-gan models.py, paraphrased) vectorizes the outer loop over stacked items, which a
list of lists of feature maps never is; its inner loop was reported vectorized as part of that
form only, though every call ran it as written. The branch as written now has its inner loops
planned again as if not inner, each behind its own check (an item that is a tensor of rows), when
that check proves other tensors than the outer one's; else the inner loop's entry says it runs
vectorized only within the outer loop's form. Golden with a no-change case, equivalence (value,
every gradient, dtype; float32 and float64; lists of lists, tensors of rows, one tensor), and the
report's run counts against what ran."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from rewrite import optimize_loss
from rewrite.testing import assert_equivalent
from tests.helpers import golden_text
from tests.loop_helpers import build, strategies

GOLDEN = Path(__file__).parent / "golden" / "inner_loops_as_written"

FEATURE_LOSS = """
def feature_loss(fmap_r, fmap_g):
    loss = 0
    for dr, dg in zip(fmap_r, fmap_g):
        for rl, gl in zip(dr, dg):
            loss += torch.mean(torch.abs(rl - gl))
    return loss * 2
"""

# both loops read only the function's tensors: the inner check holds only where the outer one
# does, so the branch as written stays the loop as written (no change)
PAIR_SUM = """
def pair_sum(a, b):
    out = 0
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out = out + a[i, j] * b[i, j]
    return out
"""


@pytest.mark.parametrize("src, name", [(FEATURE_LOSS, "feature_loss"), (PAIR_SUM, "pair_sum")])
def test_golden(src, name):
    _, _, code, report = build(src)
    assert set(strategies(report).values()) <= {"batched", "vmap"}, report
    text = code + "\n# " + "\n# ".join(str(loop) for loop in report.loops) + "\n"
    assert text == golden_text(GOLDEN / f"{name}.txt", text)


def _maps(dtype, shapes, grad):
    g = torch.Generator().manual_seed(0)
    return [[torch.randn(*s, dtype=dtype, generator=g).requires_grad_(grad) for s in per_d]
            for per_d in shapes]


LAYERS = [[(2, 4, 9), (2, 8, 5), (2, 1, 5)], [(2, 4, 6), (2, 8, 3), (2, 1, 3)]]
ROWS = [[(3, 2, 7)], [(5, 4)]]  # each discriminator's maps one tensor of rows, shapes differ
ONE = [[(2, 3, 2, 5)]]


def _inputs(dtype, shapes):
    real = _maps(dtype, shapes, False)
    fake = _maps(dtype, shapes, True)
    if shapes is LAYERS:
        return real, fake
    flat = [m[0] for m in real], [m[0] for m in fake]
    return (flat[0][0], flat[1][0]) if shapes is ONE else flat


def _optimized(module):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback: each loop ran as its check chose
        return optimize_loss(module.feature_loss, compile=False, strict=True)


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    from tests.helpers import load_module
    return load_module(tmp_path_factory.mktemp("inner_as_written"), "import torch\n" + FEATURE_LOSS)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shapes", [LAYERS, ROWS, ONE], ids=["lists", "rows", "tensor"])
def test_equivalent(module, dtype, shapes):
    assert_equivalent(module.feature_loss, _optimized(module), *_inputs(dtype, shapes))


def _entries(opt, *inputs):
    opt(*inputs)
    outer, inner = sorted(opt.report.loops, key=lambda loop: loop.lineno)
    return outer, inner, str(opt.report)


def test_lists_of_lists_count_the_inner_loop_as_written_in_each_outer_iteration(module):
    outer, inner, text = _entries(_optimized(module), *_inputs(torch.float32, LAYERS))
    assert (outer.vectorized_runs, outer.original_runs) == (0, 1)
    # its own check ran once per discriminator (it said: only within the outer loop's form)
    assert (inner.vectorized_runs, inner.original_runs) == (0, 2), text
    assert "check `isinstance(dr, torch.Tensor)` was false" in inner.last_failure
    assert "only within" not in text


def test_tensors_of_rows_run_the_inner_loop_vectorized_in_the_outer_loop_as_written(module):
    outer, inner, _ = _entries(_optimized(module), *_inputs(torch.float64, ROWS))
    assert (outer.vectorized_runs, outer.original_runs) == (0, 1)
    assert (inner.vectorized_runs, inner.original_runs) == (2, 0)


def test_one_tensor_runs_the_inner_loop_within_the_outer_form(module):
    outer, inner, text = _entries(_optimized(module), *_inputs(torch.float32, ONE))
    assert (outer.vectorized_runs, outer.original_runs) == (1, 0)
    assert (inner.vectorized_runs, inner.original_runs) == (0, 0)
    assert "part of it [ran: only within the vectorized form of line 5, which ran vectorized 1" \
        in text, text


def test_an_inner_loop_planned_again_to_no_avail_says_it_runs_only_within(tmp_path):
    _, _, _, report = build(PAIR_SUM)
    inner = max(report.loops, key=lambda loop: loop.lineno)
    assert inner.reason.endswith("; only within the vectorized form of line 3 (where that loop "
                                 "runs as written, so does this one)"), inner.reason
