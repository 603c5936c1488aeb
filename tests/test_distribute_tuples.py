"""distribute_loops on ``l, w = helper(...)``: the items of the tuple an inlined helper returns
are stacked like single values (a tensor unbound, a host number ``.tolist()``). Golden with a
no-change case; equivalence (value, every gradient, float32 and float64, the printed lines,
Python numbers staying Python numbers)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from passes.report import Report
from rewrite import optimize_loss
from rewrite.frontend import rewrite_function
from rewrite.testing import assert_equivalent
from tests import distribute_tuple_sources as src

GOLDEN = Path(__file__).parent / "golden" / "distribute_tuples"


def generated(fn):
    report = Report(fn.__qualname__, "", 0)
    _, changed = rewrite_function(fn, report)
    return report.rewritten_source if changed else "", report


@pytest.mark.parametrize("name", ["logged_pairs", "view_returned"])
def test_golden(name):
    code, report = generated(getattr(src, name))
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("OL_UPDATE_GOLDEN"):
        path.write_text(code)
    assert code == path.read_text()


def test_the_tuple_items_are_stacked_and_read_by_index():
    code, report = generated(src.logged_pairs)
    assert report.loops[0].strategy == "distributed"
    assert "_l_all = _outs_1[0].unbind(0)" in code and "_w_all = _outs_1[1].tolist()" in code
    assert "l = _l_all[i]" in code and "w = _w_all[i]" in code


def test_an_item_that_is_no_tensor_value_is_not_stacked():
    code, report = generated(src.view_returned)
    assert "optimize_loss: loop" not in code and report.loops[0].strategy == "kept"
    assert "`n` is read by the residual loop or after the loop" in report.loops[0].reason


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logged_pairs_are_equivalent(dtype, capsys):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 5, generator=g, dtype=dtype).requires_grad_()
    y = torch.randn(6, 5, generator=g, dtype=dtype)
    optimized = optimize_loss(src.logged_pairs, compile=False)
    want = src.logged_pairs(x, y)
    printed = capsys.readouterr().out
    got = optimized(x, y)
    assert capsys.readouterr().out == printed and printed.count("\n") == 6
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert_equivalent(src.logged_pairs, optimized, x, y)
    assert optimized.report.loops[0].runs()["vectorized"] >= 1
