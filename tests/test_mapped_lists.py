"""A list of per-item values that may have a NaN/inf derivative, mapped item by item after the
loop (``loss = [l.mean(dim=1) for l in loss]``, HRNet's OHKM joints loss) and then read whole
(``torch.cat(loss)``): every item is in the graph of the result, as in the original, so the
loop stays vectorized. A map that drops items, detaches them, or whose result is read in part
keeps the loop. Value, every gradient and dtype, float32 and float64, NaN/inf and 0 (the
derivative of sqrt is inf there), ties."""
from __future__ import annotations

import pytest
import rewrite
import torch

from rewrite.testing import assert_equivalent
from tests.helpers import load_module

NAN, INF = float("nan"), float("inf")

MAPPED = """
def f(x):
    losses = []
    for i in range(x.shape[0]):
        losses.append(torch.sqrt(x[i]))
    losses = [l.mean(dim=0, keepdim=True) for l in losses]
    losses = torch.cat(losses)
    return losses.sum()
"""


def _optimized(tmp_path, source):
    fn = load_module(tmp_path, "import torch\n" + source).f
    return fn, rewrite.optimize_loss(fn, compile=False, strict=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_mapped_list_read_whole_stays_vectorized(tmp_path, dtype):
    original, fast = _optimized(tmp_path, MAPPED)
    loop = fast.report.loops[0]
    assert loop.vectorized, loop
    for rows in ([[0.5, 1.], [2., 3.], [1., 1.]], [[0., 1.], [NAN, 2.], [INF, 4.]]):
        assert_equivalent(original, fast, torch.tensor(rows, dtype=dtype, requires_grad=True))
    assert loop.vectorized_runs and not loop.original_runs and not loop.failed_runs, loop


@pytest.mark.parametrize("source", [
    MAPPED.replace("for l in losses]", "for l in losses if l.sum() > 0]"),   # drops items
    MAPPED.replace("l.mean(dim=0, keepdim=True)", "l.detach()"),             # out of the graph
    MAPPED.replace("losses = torch.cat(losses)\n    return losses.sum()",
                   "return losses[0].sum()"),                                 # read in part
], ids=["condition", "detached", "read-in-part"])
def test_other_maps_keep_the_loop(tmp_path, source):
    original, fast = _optimized(tmp_path, source)
    loop = fast.report.loops[0]
    assert not loop.vectorized and "NaN/inf derivative" in loop.reason, loop
    x = torch.tensor([[0., 1.], [4., 2.], [1., 9.]], requires_grad=True)
    assert_equivalent(original, fast, x)


def test_positions_have_no_nan_derivative_to_name(tmp_path):
    # `nonzero` gives integer positions, which take no gradient: a list of them read in part
    # is kept for another reason, never "may have a NaN/inf derivative"
    _, fast = _optimized(tmp_path, """
def f(x, labels):
    rows = [labels.eq(c).nonzero()[:2].squeeze(1) for c in range(3)]
    return x[rows[0]].sum() + x[rows[1]].sum()
""")
    loop = fast.report.loops[0]
    assert "NaN/inf derivative" not in loop.reason, loop.reason


LOGGED = """
def f(x):
    losses = []
    for i in range(x.shape[0]):
        losses.append(torch.sqrt(x[i]).sum())
    logged = [l.item() for l in losses]
    return torch.stack(losses).sum(), logged
"""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_items_logged_as_numbers_keep_the_loop_vectorized(tmp_path, dtype):
    """The per-class values a loss logs (``[l.item() for l in losses]``) take no gradient: no
    item is left out of the graph by that read (the loop was kept: "read in part")."""
    original, fast = _optimized(tmp_path, LOGGED)
    loop = min(fast.report.loops, key=lambda loop: loop.lineno)
    assert loop.vectorized, loop
    for rows in ([[0.5, 1.], [2., 3.], [1., 1.]], [[0., 1.], [NAN, 2.], [INF, 4.]]):
        assert_equivalent(original, fast, torch.tensor(rows, dtype=dtype, requires_grad=True))
    assert loop.vectorized_runs and not loop.original_runs and not loop.failed_runs, loop


@pytest.mark.parametrize("source", [
    LOGGED.replace("for l in losses]", "for l in losses if l > 1]"),          # compares items
    LOGGED.replace("l.item() for l", "l.item() + l for l"),                   # and adds them
    LOGGED.replace("torch.stack(losses).sum()", "losses[0]"),                 # read in part
], ids=["condition", "tensor", "read-in-part"])
def test_other_reads_beside_logged_numbers_keep_the_loop(tmp_path, source):
    original, fast = _optimized(tmp_path, source)
    loop = min(fast.report.loops, key=lambda loop: loop.lineno)
    assert not loop.vectorized and "NaN/inf derivative" in loop.reason, loop
    x = torch.tensor([[0., 1.], [4., 2.], [1., 9.]], requires_grad=True)
    assert_equivalent(original, fast, x)
