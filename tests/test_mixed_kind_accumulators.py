"""A sum that adds Python floats in every iteration and a tensor only under a Python condition
of the body (found by the long differential fuzzer): the original ends a Python float when the
condition never holds and a tensor otherwise, so the loop runs as written, with the reason
(before: the vectorized form returned a 0-d tensor where the original returns a float)."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module

SOURCE = """
import torch
import torch.nn.functional as F


def loss(x, w):
    s = 0
    for a in x:
        s += float(torch.logsumexp(torch.sigmoid(F.relu(a)), dim=-1))
        if torch.logsumexp(w, dim=-1) > 0:
            s += a.mean()
    return s / x.shape[0]
"""


@pytest.mark.parametrize("w", [float("nan"), -5.0, 5.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_the_type_the_original_ends_with(tmp_path, dtype, w):
    original = load_module(tmp_path, SOURCE).loss
    fast = optimize_loss(original, compile=False, strict=True, keep_faster=False)
    x = torch.tensor([[1.288392246958001], [0.8984431237320744]], dtype=dtype).requires_grad_()
    w = torch.tensor([w], dtype=dtype)
    want, got = original(x, w), fast(x, w)
    assert type(got) is type(want)
    if isinstance(want, torch.Tensor):
        assert_equivalent(original, fast, x, w)
    else:
        assert got == want
    (loop,) = fast.report.loops
    assert not loop.vectorized and "under a condition, tensors" in loop.reason
