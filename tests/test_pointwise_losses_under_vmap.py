"""Under ``torch.vmap`` the pointwise ``F.*`` losses give eager's value and gradients, row by row,
at NaN, inf and -inf inputs and targets, batched or fixed targets (float32, float64). Only
``binary_cross_entropy_with_logits`` differs (functorch's composite, NaN at an infinite logit),
and a vmapped body calls ``passes.bce_with_logits`` for it (tests/test_bce_with_logits.py); a
difference found here would need the same (``OpSpec.vmap_fn``)."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

INF, NAN = float("inf"), float("nan")
# (loss, the target's special values, whether the target takes a gradient)
LOSSES = {
    "mse_loss": (F.mse_loss, [NAN, INF, -INF], True),
    "l1_loss": (F.l1_loss, [NAN, INF, -INF], True),
    "smooth_l1_loss": (F.smooth_l1_loss, [NAN, INF, -INF], True),
    "smooth_l1_loss_beta0": (lambda a, b, **k: F.smooth_l1_loss(a, b, beta=0.0, **k),
                             [NAN, INF, -INF], True),
    "huber_loss": (F.huber_loss, [NAN, INF, -INF], True),
    "kl_div": (F.kl_div, [NAN, INF, 0.0], True),
    "kl_div_log_target": (lambda a, b, **k: F.kl_div(a, b, log_target=True, **k),
                          [NAN, INF, -INF], True),
    "soft_margin_loss": (F.soft_margin_loss, [1.0, -1.0], False),
    "hinge_embedding_loss": (F.hinge_embedding_loss, [1.0, -1.0], False),
    "poisson_nll_loss": (F.poisson_nll_loss, [NAN, INF, 0.0], False),
}


def _rows_equal(a, b):
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12, equal_nan=True)


@pytest.mark.filterwarnings("ignore::UserWarning")  # vmap's fallback notes, kl_div's 'mean'
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("fixed", [False, True], ids=["batched-target", "fixed-target"])
@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_vmapped_loss_is_eagers_row_by_row(name, reduction, fixed, dtype):
    fn, specials, target_grad = LOSSES[name]
    for bad_x, bad_t in itertools.product([0.5, NAN, INF, -INF], specials):
        x = torch.tensor([[0.3, bad_x], [0.7, -0.2]], dtype=dtype, requires_grad=True)
        t = torch.tensor([0.25, bad_t] if fixed else [[0.25, bad_t], [1.0, 0.4]], dtype=dtype,
                         requires_grad=target_grad)
        want = torch.stack([fn(x[i], t if fixed else t[i], reduction=reduction) for i in range(2)])
        got = torch.vmap(lambda a, b: fn(a, b, reduction=reduction),
                         in_dims=(0, None if fixed else 0))(x, t)
        assert got.dtype == want.dtype
        _rows_equal(got, want)
        inputs = (x, t) if target_grad else (x,)
        cotangent = torch.tensor([1.0, 0.0] if reduction != "none" else [[1., 0.], [0., 2.]],
                                 dtype=dtype)
        for g, w in zip(torch.autograd.grad(got, inputs, cotangent),
                        torch.autograd.grad(want, inputs, cotangent)):
            _rows_equal(g, w)
