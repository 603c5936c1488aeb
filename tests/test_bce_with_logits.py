"""``passes.bce_with_logits``: under vmap, eager's value and gradients bit for bit (per row), and
the functional form's errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from passes.bce_with_logits import binary_cross_entropy_with_logits

INF, NAN = float("inf"), float("nan")


def _rows(fn, x, t, **kw):
    return torch.stack([fn(x[i], t[i], **kw) for i in range(len(x))])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("kw", [{}, {"reduction": "sum"}, {"reduction": "none"}, {"weight": True},
                                {"pos_weight": True}, {"size_average": False}], ids=str)
def test_vmapped_value_and_gradients_are_eagers(kw, dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, dtype=dtype, generator=gen) * 20
    x[0, 0], x[1, 1], x[2, 2], x[3] = -INF, INF, NAN, 0.0
    t = torch.rand(4, 5, dtype=dtype, generator=gen)
    kw = {k: torch.rand(5, dtype=dtype, generator=gen) * 3 if v is True else v
          for k, v in kw.items()}
    x.requires_grad_()
    t.requires_grad_()
    want = _rows(F.binary_cross_entropy_with_logits, x, t, **kw)
    got = torch.vmap(lambda a, b: binary_cross_entropy_with_logits(a, b, **kw))(x, t)
    assert got.dtype == want.dtype
    for a, b in [(got, want), *zip(torch.autograd.grad(got.sum(), (x, t)),
                                   torch.autograd.grad(want.sum(), (x, t)))]:
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def test_vmapped_gradient_at_an_infinite_logit_is_finite():
    x = torch.tensor([[-INF], [INF]], requires_grad=True)
    loss = torch.vmap(binary_cross_entropy_with_logits)(x, torch.full((2, 1), 0.25))
    grad, = torch.autograd.grad(loss.sum(), x)
    assert grad.tolist() == [[-0.25], [0.75]]


@pytest.mark.parametrize("args", [(torch.randn(3), torch.rand(2), {}),
                                  (torch.randn(3), torch.rand(3),
                                   {"weight": torch.rand(3, requires_grad=True)}),
                                  (torch.randn(3), torch.rand(3),
                                   {"pos_weight": torch.rand(3, requires_grad=True)})])
def test_same_errors_as_the_functional_form(args):
    x, t, kw = args
    with pytest.raises((ValueError, RuntimeError)) as want:
        F.binary_cross_entropy_with_logits(x, t, **kw)
    with pytest.raises(type(want.value)) as got:
        binary_cross_entropy_with_logits(x, t, **kw)
    assert str(got.value) == str(want.value)


def test_mixed_dtypes_round_as_eager():
    x, t = torch.randn(5, dtype=torch.float64), torch.rand(5)
    got = binary_cross_entropy_with_logits(x, t, reduction="none")
    assert torch.equal(got, F.binary_cross_entropy_with_logits(x, t, reduction="none"))


def test_vmapped_under_torch_compile_gives_eagers_gradients():
    """Dynamo cannot vmap an autograd.Function: the call runs outside the graph."""
    x = torch.tensor([[-INF, 0.5], [INF, -2.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0.25, 1.0], [0.5, 0.0]], dtype=torch.float64, requires_grad=True)
    pos_weight = t[0].detach() + 0.5
    fn = torch.vmap(lambda a, b: binary_cross_entropy_with_logits(a, b, pos_weight=pos_weight))
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=False)
    want, got = fn(x, t), compiled(x, t)
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    for a, b in zip(torch.autograd.grad(got.sum(), (x, t)), torch.autograd.grad(want.sum(), (x, t))):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
