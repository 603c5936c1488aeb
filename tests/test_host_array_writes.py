"""A loop writing into a numpy array made before it (PathomicFusion's CoxLoss, utils.py,
mahmoodlab/PathomicFusion, paraphrased: the risk set ``R_mat[i, j] = survtime[j] >=
survtime[i]`` filled into ``np.zeros([n, n])`` by two loops, then ``torch.FloatTensor``) was
reported vectorized, both loops, behind a check that it is a tensor, false on every call. Both
are kept now, at rewrite time, with the reason (``host_array_writes_run_as_written``); the value,
every gradient and dtype stay the original's (float32 and float64, tied times)."""
from __future__ import annotations

import pytest
import torch

from rewrite import explain, optimize_loss
from rewrite.testing import assert_equivalent
from tests.helpers import load_module

COX = """
import numpy as np
import torch


def cox_loss(survtime, censor, hazard_pred):
    n = len(survtime)
    R_mat = np.zeros([n, n], dtype=int)
    for i in range(n):
        for j in range(n):
            R_mat[i, j] = survtime[j] >= survtime[i]
    R_mat = torch.FloatTensor(R_mat).to(hazard_pred.dtype)
    theta = hazard_pred.reshape(-1)
    terms = (theta - torch.log(torch.sum(torch.exp(theta) * R_mat, dim=1))) * censor
    return -(terms.sum() / censor.sum())
"""


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("host_arrays"), COX)


def test_both_loops_are_kept_with_the_reason(user):
    report = explain(user.cox_loss)
    loops = sorted(report.loops, key=lambda loop: loop.lineno)
    assert [(loop.lineno, loop.strategy) for loop in loops] == [(9, "kept"), (10, "kept")]
    for loop in report.loops:
        assert loop.reason.startswith("it writes into `R_mat`, a numpy array (`np.zeros([n, n], "
                                      "dtype=int)`, line 8), not a tensor"), loop.reason


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equivalent(user, dtype):
    g = torch.Generator().manual_seed(0)
    time = torch.randint(1, 6, (10,), generator=g).to(dtype)  # ties
    censor = (torch.rand(10, generator=g) > 0.3).to(dtype)
    hazard = torch.randn(10, 1, generator=g, dtype=dtype, requires_grad=True)
    assert_equivalent(user.cox_loss, optimize_loss(user.cox_loss, compile=False, strict=True),
                      time, censor, hazard)
