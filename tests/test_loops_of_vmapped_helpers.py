"""Loops of helpers a vmapped body calls, as public pair losses write them (a SimCLR-style
``one_side(i, j, z)`` whose own loop skips ``k != i``): each a discrepancy a new-user trial found
by comparing ``optimize_loss`` with the original (value, every gradient, dtype, the report).

- The choice of form (``rewrite.keep_faster``) timed forms with such a helper's loop as written:
  under ``torch.vmap`` its ``if k != i`` tests a batched index and raises, and the rewrite fell
  back to the original for every size after two fast calls (0.38 s instead of 0.007 s a call).
  A helper rewritten for a vmapped body keeps its loops vectorized in every form.
- ``index_tests_to_selected_indices`` took the indices passing ``k != i`` on the host in a helper
  rewritten for a vmapped body, where ``i`` is a batched tensor (the host test raises at every
  call); there the test stays a mask (or the loop is kept, with the reason at its line).
- A helper given the loop index ``i`` was taken to accept it as a 0-d tensor when its own loop
  excludes ``k != i``: only true when that loop becomes a mask. With a call not known to be
  total (``torch.cdist``, NaN gradient at 0) the helper's loop is kept, its ``if`` tests the
  batched index and raises: the caller's loop was "vectorized", raised at every call and the
  original ran. It is now kept with the reason at the user's line, the helper's loop vectorized
  in each of its iterations.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from rewrite import assert_equivalent, frontend, optimize_loss, Report
from tests.helpers import load_module

DTYPES = (torch.float32, torch.float64)

PAIR_LOSS = """
import torch
import torch.nn.functional as F

def _one_side(i, j, z, tau):
    top = torch.exp(F.cosine_similarity(z[i], z[j], dim=0) / tau)
    bottom = 0
    for k in range(z.shape[0]):
        if k != i:
            bottom = bottom + torch.exp(F.cosine_similarity(z[i], z[k], dim=0) / tau)
    return -torch.log(top / bottom)

def pair_loss(z, tau=0.5):
    n = z.shape[0] // 2
    total = torch.zeros(n, dtype=z.dtype)
    for k in range(n):
        total[k] = _one_side(2 * k, 2 * k + 1, z, tau) + _one_side(2 * k + 1, 2 * k, z, tau)
    return total.sum() / (2 * n)

def _distances(i, z):
    out = 0
    for k in range(z.shape[0]):
        if k != i:
            out = out + torch.cdist(z[i][None], z[k][None]).sum()
    return out
"""


@pytest.mark.parametrize("dtype", DTYPES)
def test_forms_keep_the_vmapped_helpers_loop_vectorized(tmp_path, dtype):
    module = load_module(tmp_path, PAIR_LOSS)
    optimized = optimize_loss(module.pair_loss, compile=False)
    z = torch.randn(12, 5, dtype=dtype, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        for _ in range(8):  # the band's trial times every form (one with line 9 as written)
            optimized(z).backward()
    report = optimized.report
    assert not report.fallbacks
    assert any(loop.vectorized and loop.vectorized_runs >= 2 for loop in report.loops)
    assert_equivalent(module.pair_loss, optimized, z)
    assert optimized(z).dtype == dtype


@pytest.mark.parametrize("mapped", (False, True))
def test_index_test_on_a_parameter_is_not_taken_on_the_host_under_vmap(tmp_path, mapped):
    fn = load_module(tmp_path, PAIR_LOSS)._distances
    report = Report("_distances", "", 0)
    frontend.rewrite_function(fn, report, mapped=mapped)
    # called as written (not mapped) the host selection is right: `i` is the caller's int
    assert ("_selected = " in report.rewritten_source) is not mapped
    (loop,) = report.loops
    assert loop.vectorized is not mapped


ROWS = """
import torch
import torch.nn.functional as F

def _row(i, z):
    out = 0
    for k in range(z.shape[0]):
        if k != i:
            out = out + torch.exp(-SIM(z[i][None], z[k][None]).sum())
    return torch.log(out)

def rows_loss(z):
    total = 0
    for i in range(z.shape[0]):
        total = total + _row(i, z)
    return total / z.shape[0]
"""


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sim, mapped", (("torch.cdist", False), ("F.cosine_similarity", True)))
def test_index_given_to_a_helper_whose_loop_stays_a_loop(tmp_path, dtype, sim, mapped):
    fn = load_module(tmp_path, ROWS.replace("SIM", sim)).rows_loss
    optimized = optimize_loss(fn, compile=False)
    z = torch.randn(9, 4, dtype=dtype, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        for _ in range(4):
            optimized(z).backward()
    assert_equivalent(fn, optimized, z)
    report = optimized.report
    inner, outer = sorted(report.loops, key=lambda loop: loop.lineno)
    assert inner.vectorized and not report.fallbacks
    assert outer.vectorized is mapped and outer.failed_runs == 0
    if not mapped:  # kept at the user's line, with why
        assert outer.lineno == 14 and "`_row(i, z)` gets the loop index `i`" in outer.reason
