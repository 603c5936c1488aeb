"""broadcast_products: a cosine similarity of every row against every other, as SimCLR's NT-Xent
writes it (``F.cosine_similarity(z.unsqueeze(1), z.unsqueeze(0), dim=2)`` or an
``nn.CosineSimilarity(dim=2)`` attribute), calls the contraction form anywhere in the function.
Golden source (with a no-change case), equivalence (value, every gradient, dtype; float32 and
float64; zero, NaN and inf rows), a module with a hook or of a subclass runs as itself, and a
module made in the loss whose ``__init__`` has a loop (its class was lost once that constructor
was rewritten)."""
from __future__ import annotations

import warnings

import pytest
import torch

from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module

DTYPES = [torch.float32, torch.float64]

USER = """
import torch
import torch.nn as nn
import torch.nn.functional as F


def pairwise(z, t):
    return (F.cosine_similarity(z.unsqueeze(1), z.unsqueeze(0), dim=2) / t).logsumexp(1).mean()


def distances(z):
    return F.pairwise_distance(z, z.flip(0)).mean()


class NTXent(nn.Module):
    def __init__(self, n, temperature):
        super().__init__()
        self.temperature = temperature
        self.mask = torch.ones((2 * n, 2 * n), dtype=torch.bool)
        for i in range(2 * n):
            self.mask[i, i] = False
        self.sim = nn.CosineSimilarity(dim=2)

    def forward(self, a, b):
        z = torch.cat((a, b), dim=0)
        s = self.sim(z.unsqueeze(1), z.unsqueeze(0)) / self.temperature
        return -(torch.diag(s, a.shape[0]) - s[self.mask].reshape(len(z), -1).logsumexp(1)[:a.shape[0]]).mean()


class Hooked(NTXent):
    pass


def made_in_the_loss(a, b):
    return NTXent(a.shape[0], 0.5)(a, b)
"""


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("user"), USER)


def _views(dtype, special=False, n=6, d=5):
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, d, generator=gen, dtype=dtype) for _ in range(2))
    if special:  # a zero row (the norm's clamp), NaN and inf
        a[1], b[2, 0], b[3, 1] = 0.0, float("nan"), float("inf")
    return a.requires_grad_(), b.requires_grad_()


def _equivalent(fn, *args):
    optimized = optimize_loss(fn, compile=False, keep_faster=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        assert_equivalent(fn, optimized, *args)
    return optimized


def test_golden_function_form_and_no_change(user):
    fn = _equivalent(user.pairwise, *_views(torch.float64)[:1], 0.5)
    assert ("_broadcast_cosine_similarity(z.unsqueeze(1), z.unsqueeze(0), dim=2)"
            in fn.report.rewritten_source), fn.report.rewritten_source
    same = optimize_loss(user.distances, compile=False)
    same(_views(torch.float64)[0])
    assert same.report.rewritten_source.strip() == same.report.original_source.strip()


def test_golden_module_attribute(user):
    module = optimize_loss(user.NTXent(6, 0.5), compile=False, keep_faster=False)
    module(*_views(torch.float32))
    assert ("_broadcast_cosine_similarity(z.unsqueeze(1), z.unsqueeze(0), dim=self.sim.dim, eps=self.sim.eps)"
            " if _plain_loss_module(self.sim, torch.nn.CosineSimilarity) else "
            "self.sim(z.unsqueeze(1), z.unsqueeze(0))") in module.report.rewritten_source


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("special", [False, True])
def test_equivalent(user, dtype, special):
    a, b = _views(dtype, special)
    _equivalent(user.pairwise, a, 0.5)
    loss = user.NTXent(6, 0.5)
    optimized = optimize_loss(loss, compile=False, keep_faster=False)
    assert_equivalent(loss, optimized, a, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_module_made_in_the_loss_runs_its_rewritten_forward(user, dtype):
    """``NTXent(...)(a, b)``: the constructor's loop and the forward's similarity are both
    rewritten (the class of the object is read before its constructor call is)."""
    fn = _equivalent(user.made_in_the_loss, *_views(dtype, True))
    assert "_broadcast_cosine_similarity" in fn.report.rewritten_source or any(
        "_broadcast_cosine_similarity" in s for s in _helper_sources(fn))


def _helper_sources(fn) -> list[str]:
    """The rewritten sources of the helpers bound into ``fn``'s rewrite (``REWRITE_OF``)."""
    from rewrite.frontend import REWRITE_OF
    rewritten = fn.rewritten_function()
    cells = [c.cell_contents for c in rewritten.__closure__ or ()]
    return [getattr(c, REWRITE_OF)[0] for c in cells if hasattr(c, REWRITE_OF)]


def test_a_hooked_or_derived_module_runs_as_itself(user):
    a, b = _views(torch.float64)
    loss = user.NTXent(6, 0.5)
    calls = []
    loss.sim.register_forward_hook(lambda *_: calls.append(1))
    optimized = optimize_loss(loss, compile=False, keep_faster=False)
    assert_equivalent(loss, optimized, a, b)
    calls.clear()
    optimized(a, b)
    assert calls == [1]  # the optimized call ran the module itself, hook included
    derived = user.Hooked(6, 0.5)
    derived.sim = type("Sub", (torch.nn.CosineSimilarity,), {})(dim=2)
    assert_equivalent(derived, optimize_loss(derived, compile=False, keep_faster=False), a, b)
