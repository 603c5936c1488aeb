"""``torch.unsqueeze(x, d)`` is the registry's ``x.unsqueeze(d)``: batched, and total under a
tensor condition (RetinaNet's ``calc_iou`` spells it as a function)."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module

SOURCE = '''
import torch


def under_a_condition(a, b):
    total = 0
    for i in range(a.shape[0]):
        if a[i].sum() > 0:
            total = total + torch.unsqueeze(a[i, :, 1], -1).mul(b[i]).sum()
    return total


def appended(a):
    out = []
    for i in range(a.shape[0]):
        out.append(torch.unsqueeze(a[i], 0).unsqueeze(dim=-1).sum(0))
    return torch.stack(out).sum()
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("unsqueeze"), SOURCE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["under_a_condition", "appended"])
def test_takes_the_batched_form_with_the_same_values_and_gradients(user, name, dtype):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 4, 3, generator=g, dtype=dtype)
    a[1, 2, 1], a[2, 0, 0], a[3, 1, 2] = float("nan"), float("inf"), -float("inf")
    b = torch.randn(5, 4, 3, generator=g, dtype=dtype).requires_grad_()
    fn = getattr(user, name)
    args = (a.requires_grad_(), b) if name == "under_a_condition" else (a.requires_grad_(),)
    opt = optimize_loss(fn, compile=False)
    assert_equivalent(fn, opt, *args)
    assert opt(*args).dtype == dtype
    [loop] = opt.report.loops
    assert loop.strategy == "batched" and loop.vectorized_runs and not loop.failed_runs
