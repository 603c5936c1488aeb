"""Real-code corpus losses whose loops the masked and ragged forms vectorize: the loop is
reported vectorized, the vectorized branch is what actually runs (run-time counts, no fallback),
and value, every gradient and dtype equal the original's (float32 and float64, three seeds)."""
from __future__ import annotations

import importlib

import pytest
import torch

import rewrite
from rewrite.testing import assert_equivalent

# module -> (the function or loss object whose loop is checked, from the module, and its
# arguments from make_inputs')
CASES = {
    # hardest positive / negative from rows of a mask the forward computed (`dist[i][mask[i]]`)
    "reid_hard_mine_triplet": (lambda m: m.TripletLoss(margin=0.3), lambda args: args),
    # the padding mask of ragged lengths, written in place (`mask[i, :, lengths[i]:] = 0`)
    "sep_sisnr_pit_mask": (lambda m: m.get_mask, lambda args: (args[0], args[2])),
    # integer labels of every view joined along a literal dim (`torch.cat([...], dim=0)`)
    "con_info_nce_views": (lambda m: m.naive, lambda args: args),
    # the mean of every utterance but the own one (`idx = [*range(m)]; idx.remove(j)`)
    "spk_ge2e_exclusive_centroids": (lambda m: m.LossFunction(*m.make_inputs()[1:]),
                                     lambda args: args[:1]),
    # a module handed to functional_call; labels' own proxy and the other classes cut by slices
    "metric_proxy_nca_lists": (lambda m: m.naive, lambda args: args),
    # the negatives mask the constructor of a module made in the loss builds, `mask[i, n + i] = 0`
    "con_ntxent_mask_loop": (lambda m: m.naive, lambda args: args),
    # GAE carried through `prev_value = values[i, 0]` and `prev_advantage = advantages[i, 0]`
    "rl_gae_advantages": (lambda m: m.naive, lambda args: args),
    # pairs of speakers summed per permutation inside a map over the permutations: each pair
    # evaluated once (picked_rows_to_tables)
    "sep_pit_sisnr_perms": (lambda m: m.naive, lambda args: args),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", CASES)
def test_corpus_loop_runs_vectorized_with_the_same_results(name, dtype):
    module = importlib.import_module(f"examples.real.{name}")
    make_loss, arguments = CASES[name]
    original = make_loss(module)
    optimized = rewrite.optimize_loss(original, compile=False)
    for seed in range(3):
        inputs = arguments(module.make_inputs("small", dtype, seed))
        assert_equivalent(original, optimized, *inputs)
    report = optimized.report
    assert not report.fallbacks, report.fallbacks
    assert report.loops and all(loop.vectorized for loop in report.loops), report
    assert all(loop.vectorized_runs > 0 and loop.original_runs == 0 and loop.failed_runs == 0
               for loop in report.loops), report
