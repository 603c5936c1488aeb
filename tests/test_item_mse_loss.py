"""``passes.item_mse_loss``: under vmap, per item, the value and gradients of ``F.mse_loss`` (NaN,
inf, both reductions, batched or fixed target, float32 and float64), without functorch's flatten
copy of strided items; anything else is the op itself, its errors included."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import profile

from passes.item_mse_loss import mse_loss

INF, NAN = float("inf"), float("nan")


def _split_items(dtype):
    """Items as the pose losses make them: joints split off an inner dim, stacked as a view
    whose loop dim is not the outermost in memory; NaN, inf and ties among the entries."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, dtype=dtype, generator=gen)
    t = torch.rand(3, 4, 5, dtype=dtype, generator=gen)
    x[0, 0, 0], x[1, 1, 1], x[2, 2, 2], t[0, 1, 0], t[2, 2, 2] = NAN, INF, -INF, INF, -INF
    t[1, 2] = x[1, 2]  # zero differences
    x.requires_grad_()
    t.requires_grad_()
    return x, t


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("fixed", [False, True], ids=["batched-target", "fixed-target"])
def test_vmapped_value_and_gradients_are_the_ops(reduction, fixed, dtype):
    x, t = _split_items(dtype)
    target = t[:, 0] if fixed else t.movedim(1, 0)
    want = torch.stack([F.mse_loss(x[:, j], target if fixed else target[j], reduction=reduction)
                        for j in range(4)])
    got = torch.vmap(lambda a, b: mse_loss(a, b, reduction=reduction),
                     in_dims=(1, None if fixed else 0))(x, target)
    assert got.dtype == want.dtype
    cotangent = torch.tensor([1.0, 0.5, 0.0, 2.0], dtype=dtype)
    for a, b in [(got, want), *zip(torch.autograd.grad(got, (x, t), cotangent),
                                   torch.autograd.grad(want, (x, t), cotangent))]:
        torch.testing.assert_close(a, b, equal_nan=True)


def test_strided_items_are_not_copied():
    x = torch.randn(8, 17, 64).permute(1, 0, 2).requires_grad_()
    t = torch.randn(8, 17, 64).permute(1, 0, 2)
    with profile() as prof:
        torch.vmap(mse_loss)(x, t).sum().backward()
    assert "aten::clone" not in {e.key for e in prof.key_averages()}
    with profile() as prof:  # what the op's batching rule does
        torch.vmap(F.mse_loss)(x, t).sum().backward()
    assert "aten::clone" in {e.key for e in prof.key_averages()}


@pytest.mark.filterwarnings("ignore::UserWarning")  # the op's broadcasting warning
@pytest.mark.parametrize("args, kwargs", [
    ((torch.randn(3, 2), torch.randn(2)), {}),                                # broadcast
    ((torch.randn(3), torch.randn(3, dtype=torch.float64)), {}),              # promotes
    ((torch.randn(3), torch.randn(3)), {"reduction": "none"}),
    ((torch.randn(3), torch.randn(3)), {"weight": torch.rand(3)}),
    ((torch.randn(3), torch.randn(3), None, None, "sum"), {}),                # positional
    ((torch.randn(3), torch.randn(3)), {"size_average": False}),
], ids=["broadcast", "dtypes", "none", "weight", "positional", "size_average"])
def test_other_calls_are_the_op(args, kwargs):
    want = F.mse_loss(*args, **kwargs)
    got = mse_loss(*args, **kwargs)
    assert got.dtype == want.dtype and torch.equal(got, want)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("args, kwargs", [
    ((torch.randn(3), torch.randn(4)), {}),
    ((torch.randn(3), torch.randn(3)), {"reduction": "max"}),
    ((torch.arange(3), torch.arange(3)), {}),
])
def test_same_errors_as_the_op(args, kwargs):
    with pytest.raises(Exception) as want:
        F.mse_loss(*args, **kwargs)
    with pytest.raises(type(want.value)) as got:
        mse_loss(*args, **kwargs)
    assert str(got.value) == str(want.value)
