"""kl_div_terms: ``F.kl_div`` under vmap as its pointwise terms (PyTorch has no batching rule
and runs it once per item, warning from inside torch). Values, both gradients and dtype equal to
the functional form per item, float32 and float64, targets at 0, negative, NaN and inf, every
reduction and ``log_target``; under vmap no fallback warning; the forms it leaves to the op
(``"mean"``, legacy arguments) keep the op's warning and errors; a loop vectorized with vmap
around a per-item ``kl_div`` runs it and matches the loop."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from passes.kl_div_terms import kl_div
from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module

DTYPES = [torch.float32, torch.float64]
NAN, INF = float("nan"), float("inf")


def _pair(dtype, special):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, generator=gen, dtype=dtype).log_softmax(1)
    t = torch.rand(3, 6, generator=gen, dtype=dtype)
    if special:
        x[0, 2], x[1, 4] = -INF, NAN
        t[0, 0], t[0, 3], t[1, 1], t[2, 5] = 0.0, -0.1, INF, NAN
    return x.requires_grad_(), t.requires_grad_()


def _assert_same(got, want, inputs):
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, equal_nan=True)
    g = torch.ones_like(want)
    for a, b in zip(torch.autograd.grad(got, inputs, g), torch.autograd.grad(want, inputs, g)):
        torch.testing.assert_close(a, b, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("reduction", ["none", "sum", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_terms_equal_the_op(dtype, special, reduction, log_target):
    x, t = _pair(dtype, special)
    _assert_same(kl_div(x, t, reduction=reduction, log_target=log_target),
          F.kl_div(x, t, reduction=reduction, log_target=log_target), (x, t))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", ["none", "sum", "batchmean"])
def test_under_vmap_no_fallback_and_the_loop_s_values(dtype, reduction):
    x, t = _pair(dtype, True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # functorch's "performance drop" fallback warning
        got = torch.vmap(lambda a, b: kl_div(a, b, reduction=reduction))(x, t)
    want = torch.stack([F.kl_div(a, b, reduction=reduction) for a, b in zip(x, t)])
    _assert_same(got, want, (x, t))


def test_forms_left_to_the_op_keep_its_warning_and_errors():
    x, t = _pair(torch.float64, False)
    with pytest.warns(UserWarning, match="batchmean"):
        torch.testing.assert_close(kl_div(x, t), F.kl_div(x, t))
    with pytest.raises(ValueError, match="is not a valid value for reduction"):
        kl_div(x, t, reduction="avg")
    torch.testing.assert_close(kl_div(x, t, reduce=False), F.kl_div(x, t, reduce=False))


USER = """
import torch
import torch.nn.functional as F


def per_sample_kl(student, teacher, T):
    total = 0
    for i in range(student.shape[0]):
        p = F.log_softmax(student[i] / T, dim=-1)
        q = F.softmax(teacher[i] / T, dim=-1)
        total = total + F.kl_div(p, q, reduction="batchmean") * T * T
    return total / student.shape[0]
"""


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_vmapped_loop_of_kl_div_runs_and_is_equivalent(tmp_path, dtype):
    user = load_module(tmp_path, USER)
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(4, 5, 7, generator=gen, dtype=dtype, requires_grad=True)
    t = torch.randn(4, 5, 7, generator=gen, dtype=dtype)
    fn = optimize_loss(user.per_sample_kl, compile=False, keep_faster=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_equivalent(user.per_sample_kl, fn, s, t, 2.0)
    [loop] = fn.report.loops
    assert loop.vectorized and loop.vectorized_runs >= 1, loop
