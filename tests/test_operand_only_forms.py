"""``OpSpec.operand_only``: an op whose one-operand call is another op. ``torch.where(c)`` is
``torch.nonzero(c, as_tuple=True)``, whose size depends on the values: a loop mapping it over
classes (a prototypical loss's ``torch.where(target == c)[0][n_support:]``) is kept with the
reason at the user's line. Before, it was read as the elementwise ``torch.where(c, a, b)``: the
report said "vectorized", the vmap form raised on every call, and the whole function ran as
written, with a warning, its other loops' vectorized forms lost. Behaviour: value, every gradient
and dtype (float32 and float64) equal the original's, with no warning; the three-operand
``torch.where`` stays vectorized."""
from __future__ import annotations

import warnings

import pytest
import torch

import rewrite
from rewrite.testing import assert_equivalent
from tests.helpers import load_module
from tests.loop_helpers import dedent

PROTOTYPES = """
    def f(emb, target, n_support):
        classes = torch.unique(target)
        support = [torch.where(target == c)[0][:n_support] for c in classes]
        prototypes = torch.stack([emb[idx].mean(0) for idx in support])
        queries = torch.stack([torch.where(target == c)[0][n_support:] for c in classes]).view(-1)
        d = torch.cdist(emb[queries], prototypes).pow(2)
        return -torch.log_softmax(-d, dim=1).diagonal(0).sum()
    """
ELEMENTWISE = """
    def f(emb, target, n_support):
        out = 0
        for i in range(emb.shape[0]):
            out = out + torch.where(emb[i] > 0, emb[i], emb[i] * n_support).sum()
        return out
    """


def inputs(dtype: torch.dtype) -> tuple:
    g = torch.Generator().manual_seed(0)
    target = torch.arange(4).repeat_interleave(6)[torch.randperm(24, generator=g)]
    return torch.randn(24, 8, generator=g, dtype=dtype).requires_grad_(), target, 3


def optimized(tmp_path, src: str):
    module = load_module(tmp_path, "import torch\n\n\n" + dedent(src))
    return module.f, rewrite.optimize_loss(module.f, compile=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_one_operand_where_keeps_its_loop_and_the_other_loops_run_vectorized(tmp_path, dtype):
    original, fn = optimized(tmp_path, PROTOTYPES)
    with warnings.catch_warnings():  # the old vmap form raised: the original ran, with a warning
        warnings.simplefilter("error")
        assert_equivalent(original, fn, *inputs(dtype))
        assert fn(*inputs(dtype)).dtype == dtype
    assert not fn.report.fallbacks
    by_line = {loop.lineno: loop for loop in fn.report.loops}
    queries = by_line[8]  # the module's three import lines, then the function's
    assert not queries.vectorized and queries.failed_runs == 0, queries
    assert queries.reason.startswith(
        "`torch.where(target == c)`: the size of its result varies per iteration"), queries.reason
    prototypes = by_line[7]
    assert prototypes.vectorized and prototypes.vectorized_runs > 0, prototypes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_three_operand_where_stays_vectorized(tmp_path, dtype):
    original, fn = optimized(tmp_path, ELEMENTWISE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_equivalent(original, fn, *inputs(dtype))
    loop = fn.report.loops[0]
    assert loop.vectorized and loop.vectorized_runs > 0 and loop.failed_runs == 0, loop
