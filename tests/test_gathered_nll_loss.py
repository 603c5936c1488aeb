"""``passes.gathered_nll_loss``: under vmap, eager's value and gradient per row (class weights,
``ignore_index``, every reduction, NaN/inf entries, rows all ignored or of weight zero), the
functional form's errors where it does not apply, and a vmapped loop calling it end to end."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from passes.gathered_nll_loss import nll_loss
from rewrite import optimize_loss

INF, NAN = float("inf"), float("nan")


def _inputs(shape, dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, dtype=dtype, generator=gen).log_softmax(2 if len(shape) > 2 else 1)
    x[0].view(-1)[0], x[1].view(-1)[1] = NAN, -INF  # entries no target reads, then one it does
    x[2].view(-1)[3] = INF
    classes = shape[2] if len(shape) > 2 else shape[1]
    t = torch.randint(0, classes, (shape[0],) + tuple(shape[1:2] if len(shape) > 2 else ())
                      + tuple(shape[3:]), generator=gen)
    t[1].view(-1)[0] = 1 if len(shape) > 2 else 1
    w = torch.rand(classes, dtype=dtype, generator=gen) * 3
    w[2] = 0.0
    return x.requires_grad_(), t, w


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(4, 6), (4, 3, 6), (4, 2, 6, 3)], ids=str)
@pytest.mark.parametrize("kw", [{}, {"reduction": "sum"}, {"reduction": "none"},
                                {"ignore_index": 2}, {"ignore_index": 1, "reduction": "sum"}],
                         ids=str)
def test_vmapped_value_and_gradient_are_eagers(kw, shape, dtype):
    x, t, w = _inputs(shape, dtype)
    t[3] = kw.get("ignore_index", 2)  # a row all ignored (NaN for "mean"), or all of weight zero
    want = torch.stack([F.nll_loss(x[i], t[i], weight=w, **kw) for i in range(len(x))])
    got = torch.vmap(lambda a, b: nll_loss(a, b, weight=w, **kw))(x, t)
    assert got.dtype == want.dtype == dtype
    torch.testing.assert_close(got, want, equal_nan=True)
    seed = torch.rand_like(want)  # a gradient that tells the rows and elements apart
    torch.testing.assert_close(torch.autograd.grad(got, x, seed)[0],
                               torch.autograd.grad(want, x, seed)[0], equal_nan=True)


@pytest.mark.parametrize("args", [
    (torch.randn(3, 5), torch.tensor([0, 1, 2]), {"weight": torch.rand(4)}),      # weight size
    (torch.randn(3, 5), torch.tensor([0, 1, 2], dtype=torch.int32), {"weight": torch.rand(5)}),
    (torch.randn(3, 5), torch.tensor([0, 1]), {"weight": torch.rand(5)}),         # batch size
    (torch.randn(3, 5), torch.tensor([0, 1, 2]), {"weight": torch.rand(5), "reduction": "max"}),
])
def test_same_errors_as_the_functional_form(args):
    x, t, kw = args
    with pytest.raises(Exception) as want:
        F.nll_loss(x, t, **kw)
    with pytest.raises(type(want.value)):
        nll_loss(x, t, **kw)


@pytest.mark.parametrize("kw", [{}, {"size_average": False}, {"reduce": False}], ids=str)
def test_calls_it_does_not_cover_are_the_functional_forms(kw):
    x, t, w = _inputs((4, 6), torch.float64)
    weight = w if kw else None
    torch.testing.assert_close(nll_loss(x, t, weight, **kw), F.nll_loss(x, t, weight, **kw),
                               rtol=0, atol=0, equal_nan=True)


def test_a_weight_that_takes_a_gradient_raises_as_eager_does():
    x, t, w = _inputs((4, 6), torch.float32)
    w.requires_grad_()
    with pytest.raises(RuntimeError, match="not implemented|not differentiable"):
        F.nll_loss(x, t, weight=w).backward()
    with pytest.raises(RuntimeError, match="not implemented|not differentiable"):
        nll_loss(x, t, weight=w).backward()


def _per_step_nll(logps, target, weight):
    total = 0
    for step, logp in enumerate(logps):
        total = total + F.nll_loss(logp, target[:, step + 1], weight=weight, ignore_index=1)
    return total


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_loop_of_per_step_weighted_nll_runs_vectorized_with_eagers_gradients(dtype):
    gen = torch.Generator().manual_seed(1)
    logps = [torch.randn(4, 9, dtype=dtype, generator=gen).log_softmax(1).requires_grad_()
             for _ in range(5)]
    target = torch.randint(0, 9, (4, 6), generator=gen)
    target[:, 4:] = 1  # padding: ignored
    target[0, 1] = 3
    weight = torch.rand(9, dtype=dtype, generator=gen)
    weight[3] = 0.0
    fn = optimize_loss(_per_step_nll, compile=False)
    got, want = fn(logps, target, weight), _per_step_nll(logps, target, weight)
    assert "loop vectorized (vmap)" in str(fn.report) and "ran: vectorized 1," in str(fn.report)
    assert got.dtype == want.dtype == dtype
    torch.testing.assert_close(got, want, equal_nan=True)
    for a, b in zip(torch.autograd.grad(got, logps), torch.autograd.grad(want, logps)):
        torch.testing.assert_close(a, b, equal_nan=True)


def test_an_out_of_range_target_raises_the_originals_error():
    """The gather raises its own error there; the runtime then runs the loop as written."""
    logps = [torch.randn(4, 9).log_softmax(1).requires_grad_() for _ in range(5)]
    target = torch.randint(0, 9, (4, 6))
    target[2, 3] = 12
    weight = torch.rand(9)
    with pytest.raises(RuntimeError, match="out of bounds"):
        torch.vmap(lambda a, b: nll_loss(a, b, weight=weight))(torch.stack(logps), target[:, 1:].T)
    with pytest.raises(IndexError, match="Target 12 is out of bounds"):
        optimize_loss(_per_step_nll, compile=False)(logps, target, weight)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_an_infinite_entry_at_a_target_of_weight_zero_is_nan_as_in_eager(reduction, dtype):
    x = torch.randn(2, 3, 4, dtype=dtype).log_softmax(2)
    x[0, 1, 2] = -INF
    x.requires_grad_()
    t = torch.tensor([[0, 2, 1], [3, 3, 0]])
    w = torch.tensor([1.0, 0.5, 0.0, 2.0], dtype=dtype)
    want = torch.stack([F.nll_loss(x[i], t[i], weight=w, reduction=reduction) for i in range(2)])
    got = torch.vmap(lambda a, b: nll_loss(a, b, weight=w, reduction=reduction))(x, t)
    assert got.isnan().any()
    torch.testing.assert_close(got, want, equal_nan=True)
    torch.testing.assert_close(torch.autograd.grad(got.nansum(), x)[0],
                               torch.autograd.grad(want.nansum(), x)[0], equal_nan=True)
