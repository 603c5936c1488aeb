"""A 0-d value written into a row of a buffer of another dtype (``sm[i] = (1 - r) / (c - 1)`` into
``torch.zeros(n, c)``, float32, with float64 ``r``: the adaptive label smoothing of real code) is
a ``fill_``: its gradient is the row's gradient summed in the buffer's dtype, then cast. The
vectorized slice write casts its stacked values to the buffer's dtype first, so the gradient is
summed and rounded as the original's, not summed in the values' dtype."""
from __future__ import annotations

import pytest
import torch

import rewrite
from rewrite.testing import assert_equivalent
from tests.helpers import load_module

SMOOTHING = """import torch
def f(logits, labels, radii):
    c = logits.size(1)
    sm = torch.zeros(labels.size(0), c, dtype=BUFFER)
    for i in range(sm.size(0)):
        r = radii[labels[i]]
        sm[i] = (1 - r) / (c - 1)
        sm[i, labels[i]] = r
    return -(sm * logits.log_softmax(1)).sum(1).mean()
"""

ROWS = """import torch
def f(x, w):
    out = torch.zeros(x.shape[0], 5, 3, dtype=BUFFER)
    for i in range(x.shape[0]):
        out[i] = x[i].sum() * 1.37
        out[i, 1] = w[i] * 2.0
    return (out * torch.arange(out.numel(), dtype=x.dtype).view_as(out)).sum()
"""


def _exact(fn, fast, *args):
    """Float64 gradients to 1e-13: the two rounding orders differ by a float32 ulp, inside the
    default float64 tolerance; float32 ones sum in another order anyway (default tolerance)."""
    tight = all(a.dtype == torch.float64 for a in args if a.is_floating_point())
    assert_equivalent(fn, fast, *args, **(dict(rtol=1e-13, atol=1e-13) if tight else {}))


@pytest.mark.parametrize("values, buffer", [(torch.float64, torch.float32),
                                            (torch.float32, torch.float64),
                                            (torch.float64, torch.float64),
                                            (torch.float32, torch.float32)])
def test_a_row_filled_with_another_dtype_has_the_original_gradient(tmp_path, values, buffer):
    fn = load_module(tmp_path, SMOOTHING.replace("BUFFER", str(buffer))).f
    fast = rewrite.optimize_loss(fn, compile=False, strict=True, keep_faster=False)
    torch.manual_seed(8)
    logits = torch.randn(6, 4, dtype=values, requires_grad=True)
    radii = torch.tensor([0.9, 0.8, 0.95, 0.7], dtype=values, requires_grad=True)
    for labels in ([0, 3, 1, 1, 2, 0], [2, 2, 2, 2, 2, 2]):
        _exact(fn, fast, logits, torch.tensor(labels), radii)
    assert fast.report.loops[0].vectorized


@pytest.mark.parametrize("values, buffer", [(torch.float64, torch.float32),
                                            (torch.float32, torch.float64)])
def test_filled_rows_of_a_3d_buffer_and_a_written_vector_keep_their_gradients(tmp_path, values,
                                                                              buffer):
    fn = load_module(tmp_path, ROWS.replace("BUFFER", str(buffer))).f
    fast = rewrite.optimize_loss(fn, compile=False, strict=True, keep_faster=False)
    torch.manual_seed(9)
    x = torch.randn(4, 6, dtype=values, requires_grad=True)
    w = torch.randn(4, 3, dtype=values, requires_grad=True)
    _exact(fn, fast, x, w)
    nan = x.detach().clone()
    nan[1, 2] = float("nan")
    _exact(fn, fast, nan.requires_grad_(), w)
    assert fast.report.loops[0].vectorized
