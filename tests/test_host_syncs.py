"""Host syncs per steady call: the vectorized path reads nothing back to the host that the
original did not. Counted (``rewrite.tools.host_syncs``), never timed: on CPU a sync is free,
on a GPU each one stalls the device."""
from __future__ import annotations

import importlib
import warnings

import pytest
import torch

import rewrite
from rewrite.tools.host_syncs import count_host_syncs
from tests.helpers import EXAMPLE_NAMES, REAL_EXAMPLE_NAMES


def test_counts_what_reads_data_on_the_host():
    x = torch.randn(5, requires_grad=True)
    assert not count_host_syncs(lambda t: (t * 2).sum(), x)
    assert count_host_syncs(lambda t: t.sum() * t.max().item(), x) == {"_local_scalar_dense": 1}
    mixed = count_host_syncs(lambda t: t[t > 0].sum() + bool(t.sum() > 0), x)
    # the mask once forward (index) and once backward (index_put), bool() once
    assert mixed == {"index": 1, "index_put": 1, "_local_scalar_dense": 1}
    assert sum(count_host_syncs(lambda t: t.nonzero().sum() + t.sum(), x).values()) == 1


@pytest.mark.parametrize("name", EXAMPLE_NAMES + REAL_EXAMPLE_NAMES)
def test_no_sync_the_original_does_not_make(name):
    module = importlib.import_module(f"examples.{name}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        opt = rewrite.optimize_loss(module.naive, compile=False)
        opt(*module.make_inputs("small"))  # the first call of a signature checks and settles
        original = sum(count_host_syncs(module.naive, *module.make_inputs("small")).values())
        optimized = count_host_syncs(opt, *module.make_inputs("small"))
    assert sum(optimized.values()) <= original, optimized
    if original == 0:
        assert not optimized
