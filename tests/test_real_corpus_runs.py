"""Real-code corpus losses whose loops the masked and ragged forms vectorize: the loop is
reported vectorized, the vectorized branch is what actually runs (run-time counts, no fallback),
and value, every gradient and dtype equal the original's (float32 and float64, three seeds)."""
from __future__ import annotations

import importlib

import pytest
import torch

import rewrite
from rewrite.testing import assert_equivalent

# module -> (the loss object whose loop is checked, built from the module, and how its
# arguments come from make_inputs)
CASES = {
    # hardest positive / negative from rows of a mask the forward computed (`dist[i][mask[i]]`)
    "reid_hard_mine_triplet": (lambda m: m.TripletLoss(margin=0.3), lambda args: args),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", CASES)
def test_corpus_loop_runs_vectorized_with_the_same_results(name, dtype):
    module = importlib.import_module(f"examples.real.{name}")
    make_loss, arguments = CASES[name]
    optimized = rewrite.optimize_loss(make_loss(module), compile=False)
    for seed in range(3):
        inputs = module.make_inputs("small", dtype, seed)
        assert_equivalent(module.naive, lambda *a: optimized(*arguments(a)), *inputs)
    report = optimized.report
    assert not report.fallbacks, report.fallbacks
    assert report.loops and all(loop.vectorized for loop in report.loops), report
    assert all(loop.vectorized_runs > 0 and loop.original_runs == 0 and loop.failed_runs == 0
               for loop in report.loops), report
