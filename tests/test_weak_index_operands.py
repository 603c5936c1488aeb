"""The loop index next to a per-item integer tensor in arithmetic (``x[i] + i``, ``x[i] * i``,
``(x[i] - 2 * i) // (i + 1)``): per item a Python int, a weak scalar that keeps the tensor's
dtype (int32, int16, uint8); batched it is an int64 arange, cast to that dtype
(``loop_rules.WEAK_INT``; before: the batched form returned int64, silently). Values and
dtypes for integer, bool and float tensors, with the run-time counts."""
from __future__ import annotations

import pytest
import torch

from rewrite import optimize_loss
from tests.helpers import load_module

SOURCE = """
import torch


def appended(x):
    out = []
    for i in range(x.shape[0]):
        out.append(x[i] + i)
    return torch.stack(out)


def summed(x):
    s = 0
    for i in range(x.shape[0]):
        s = s + x[i] * i
    return s


def floor_divided(x):
    out = []
    for i in range(x.shape[0]):
        out.append((x[i] - 2 * i) // (i + 1))
    return torch.stack(out)
"""

DTYPES = [torch.int32, torch.int16, torch.uint8, torch.int8, torch.int64, torch.float16,
          torch.float32]


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("weak"), SOURCE)


@pytest.mark.parametrize("shape", [(5,), (3, 4)], ids=["0-d items", "1-d items"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ["appended", "summed", "floor_divided"])
def test_the_index_keeps_the_items_dtype(user, name, dtype, shape):
    original = getattr(user, name)
    fast = optimize_loss(original, compile=False, strict=True, keep_faster=False)
    x = torch.arange(1, 1 + torch.Size(shape).numel()).reshape(shape).to(dtype)
    want, got = original(x), fast(x)
    assert got.dtype == want.dtype and torch.equal(got, want)
    (loop,) = fast.report.loops
    assert loop.vectorized_runs == 1 and loop.original_runs == 0


@pytest.mark.parametrize("name", ["appended", "summed"])
def test_bool_items_promote_as_the_original(user, name):
    original = getattr(user, name)
    x = torch.tensor([True, False, True, True])
    got = optimize_loss(original, compile=False, strict=True, keep_faster=False)(x)
    assert got.dtype == original(x).dtype == torch.int64 and torch.equal(got, original(x))
