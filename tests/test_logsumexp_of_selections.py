"""masked_selections_to_where: ``torch.logsumexp`` of a boolean-mask selection (the negatives of
a contrastive or hard-mining loss written per row) becomes a logsumexp over the masked dense
values, the deselected ones ``-inf``. Golden rewrites (and what comes back unchanged), value,
every gradient and dtype (float32 and float64; ties, NaN and +-inf inside and outside the mask,
empty and full selections, integers), the decorator's fallback for a last dim that is not the
selected one, and an NT-Xent loss written per row that runs vectorized."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import rewrite
from rewrite.testing import assert_equivalent
from tests.helpers import load_module
from tests.loop_helpers import build, finite_grads, normalise
from tests.test_masked_selections_to_where import rewrite_body

inf, nan = float("inf"), float("nan")


# ---------------------------------------------------------------------------------------------
# Golden: rewritten loop bodies (loop index `i`)

def test_golden_logsumexp_over_the_selected_dim():
    code, dense = rewrite_body("""
        keep = idx != i
        loss = loss - sim[i, i] + torch.logsumexp(sim[i][keep], dim=0)
        """)
    assert code == normalise("""
        keep = idx != i
        _keep = keep.reshape(_mask_shape[keep.shape, sim[i].shape])
        loss = loss - sim[i, i] + torch.where(_keep, sim[i], -torch.inf).flatten(0, max(keep.dim(), 1) - 1).logsumexp(0)
        """)
    assert dense.guards == [] and dense.empty == {}


def test_golden_method_forms_and_the_last_dim_of_a_1d_selection():
    code, _ = rewrite_body("""
        neg = labels != labels[i]
        s = s + (alpha * sim[i][neg]).logsumexp(0) + torch.logsumexp(sim[i][neg], -1)
        """)
    assert code == normalise("""
        neg = labels != labels[i]
        _keep = neg.reshape(_mask_shape[neg.shape, sim[i].shape])
        _keep_1 = neg.reshape(_whole_mask[neg.shape, sim[i].shape])
        s = s + torch.where(_keep, alpha * torch.where(_keep, sim[i], False), -torch.inf).flatten(0, max(neg.dim(), 1) - 1).logsumexp(0) + torch.where(_keep_1, sim[i], -torch.inf).flatten(0, max(neg.dim(), 1) - 1).logsumexp(0)
        """)


@pytest.mark.parametrize("src", [
    "m = x[i] > 0\ns = s + torch.logsumexp(x[i][m], (1,)).sum()",    # a tuple of dims
    "m = x[i] > 0\ns = s + x[i][m].logsumexp(0, keepdim=True).sum()",
    "m = x[i] > 0\ns = s + x[i][m].logsumexp(0, True).sum()",
    "m = x[i] > 0\ns = s + torch.logsumexp(x[i][m], (0,))",
    "m = x[i] > 0\ns = s + x[i][m].logsumexp()",                     # raises as written
    "m = x[i] > 0\ns = s + torch.logsumexp(x[i][m], d)",
])
def test_golden_unchanged(src):
    code, dense = rewrite_body(src)
    assert code == normalise(src) and dense.guards == [] and dense.empty == {}


# ---------------------------------------------------------------------------------------------
# Behaviour through vectorize_loops

PER_ROW = """
def f(x, w):
    out = []
    for i in range(x.shape[0]):
        m = w[i] > 0
        out.append(torch.logsumexp(x[i][m], dim=0) + (x[i][m] * 2 - 1).logsumexp(-1))
    return torch.stack(out)
"""

ROWS = """
def f(x, w):
    out = []
    for i in range(x.shape[0]):
        out.append(torch.logsumexp(x[i][w[i] > 0], 0))
    return torch.stack(out)
"""


def _rows(dtype):
    """Ties, NaN and +-inf, selected (w > 0) and not; an empty and a full selection."""
    x = torch.tensor([[1., 3., 3., 2.], [-inf, -inf, 5., 1.], [1., nan, 3., nan],
                      [2., 2., 2., 2.], [4., inf, 4., -1.], [inf, 0., 1., 2.],
                      [-inf, -inf, 0., 1.], [0.5, -2., 7., 1.]], dtype=dtype)
    w = torch.tensor([[1, 1, -1, 1], [1, 1, -1, -1], [1, -1, 1, 1], [1, -1, 1, -1],
                      [1, 1, -1, 1], [-1, 1, 1, 1], [-1, -1, -1, -1], [1, 1, 1, 1]], dtype=dtype)
    return x.requires_grad_(), w


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_equivalent_value_gradients_and_dtype(dtype):
    original, optimized, code, report = build(PER_ROW)
    assert report.loops[0].vectorized, report.loops[0].reason
    x, w = _rows(dtype)
    assert_equivalent(original, optimized, x, w)
    assert optimized(x, w).dtype == dtype
    want = original(x, w)
    assert want[6] == -inf and want[2].isnan() and want[4] == inf  # the cases are there
    # the values excluded by the mask reach no gradient
    assert finite_grads(optimized, *_rows(dtype)[:1], w.masked_fill(~torch.isfinite(x), -1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_inf_selected_gives_the_original_nan_gradients(dtype):
    original, optimized, _, report = build(PER_ROW)
    assert report.loops[0].vectorized, report.loops[0].reason
    x, w = _rows(dtype)
    grads = [torch.autograd.grad(fn(x, w).sum(), x)[0] for fn in (original, optimized)]
    assert grads[0][4].isnan().any() and grads[0][4, 2] == 0  # eager's, deselected: 0
    torch.testing.assert_close(grads[1], grads[0], equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_row_selections_reduce_their_rows(dtype):
    original, optimized, _, report = build(ROWS)
    assert report.loops[0].vectorized, report.loops[0].reason
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 2, dtype=dtype, generator=gen)
    x[0, 1, 0], x[2, 2, 1] = nan, inf
    w = torch.tensor([[1., -1., 1.], [-1., -1., -1.], [1., 1., 1.], [-1., 1., -1.]], dtype=dtype)
    assert_equivalent(original, optimized, x.requires_grad_(), w)
    assert original(x, w)[1].eq(-inf).all()  # the empty selection


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool], ids=str)
def test_integers_become_the_default_float_as_in_the_original(dtype):
    original, optimized, _, report = build(PER_ROW)
    assert report.loops[0].vectorized, report.loops[0].reason
    x = torch.randint(-3, 3, (5, 4), generator=torch.Generator().manual_seed(0)).to(dtype)
    w = torch.tensor([1., -1., 1., 1.]).expand(5, 4).clone()
    w[2] = -1
    a, b = original(x, w), optimized(x, w)
    assert a.dtype == b.dtype == torch.get_default_dtype()
    torch.testing.assert_close(b, a)


LAST_DIM = """
import torch


def f(x, w):
    s = 0
    for i in range(x.shape[0]):
        s = s + x[i][w[i] > 0].logsumexp(-1).sum()
    return s
"""


def test_a_last_dim_that_is_not_the_selected_one_runs_the_original(tmp_path):
    # rows selected from [3, 2] items: the last dim is not the selected one
    fn = load_module(tmp_path, LAST_DIM).f
    opt = rewrite.optimize_loss(fn, compile=False)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.tensor([1., -1., 1.], dtype=torch.float64).expand(4, 3)
    assert_equivalent(fn, opt, x, w)
    assert opt.report.loops[0].vectorized_runs == 1 and not opt.report.loops[0].failed_runs
    x3 = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    with pytest.warns(rewrite.RewriteWarning, match="last dim"):
        assert_equivalent(fn, opt, x3, w)


# ---------------------------------------------------------------------------------------------
# An NT-Xent loss written per row, as a new user would write it

NT_XENT = """
import torch
import torch.nn.functional as F


def nt_xent_rows(z1, z2, temperature=0.5):
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    sim = z @ z.t() / temperature
    positions = torch.arange(2 * n)
    loss = 0.0
    for i in range(2 * n):
        others = positions != i
        loss += -sim[i, (i + n) % (2 * n)] + torch.logsumexp(sim[i][others], dim=0)
    return loss / (2 * n)
"""


def _nt_xent_expert(z1, z2, temperature=0.5):
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    sim = (z @ z.t() / temperature).fill_diagonal_(-inf)
    return F.cross_entropy(sim, torch.arange(2 * n).add(n).remainder(2 * n))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_nt_xent_per_row_runs_vectorized(tmp_path, dtype):
    fn = load_module(tmp_path, NT_XENT).nt_xent_rows
    opt = rewrite.optimize_loss(fn, compile=False, strict=True)
    gen = torch.Generator().manual_seed(1)
    z1, z2 = (torch.randn(6, 8, dtype=dtype, generator=gen).requires_grad_() for _ in "ab")
    assert_equivalent(fn, opt, z1, z2)
    assert_equivalent(_nt_xent_expert, opt, z1, z2)
    [loop] = opt.report.loops
    assert loop.vectorized, loop.reason
    assert loop.runs()["vectorized"] >= 1 and loop.runs()["failed"] == 0, loop.runs()
    assert loop.runs()["as_written"] == 0, loop.runs()


DIM_SPELLINGS = """
def f(x, w):
    out = []
    for i in range(x.shape[0]):
        m = w[i] > 0
        out.append(torch.sum(x[i][m], 0) + x[i][m].mean(dim=0) + torch.logsumexp(x[i][m], dim=0))
    return torch.stack(out)
"""


def test_dims_as_keywords_and_function_forms_along_the_selected_dim():
    original, optimized, code, report = build(DIM_SPELLINGS)
    assert report.loops[0].vectorized, report.loops[0].reason
    assert code.count(".flatten(0, max(m.dim(), 1) - 1)") == 1, code
    assert code.count(".sum(tuple(range(max(m.dim(), 1))))") == 2, code
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(4, 3, 2, dtype=dtype, generator=torch.Generator().manual_seed(2))
        w = torch.tensor([[1., -1., 1.], [1., 1., 1.], [1., -1., -1.], [-1., 1., 1.]])
        assert_equivalent(original, optimized, x.requires_grad_(), w)


HARD_MINING = """
def f(sim, labels):
    losses = []
    for i in range(sim.shape[0]):
        pos = sim[i][labels == labels[i]]
        neg = sim[i][labels != labels[i]]
        neg = neg[neg + 0.1 > pos.min()]
        losses.append(torch.logsumexp(40 * neg, 0) / 40 + torch.logsumexp(-2 * pos, dim=-1) / 2)
    return torch.stack(losses)
"""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_hard_mining_on_named_selections_and_a_reselection(dtype):
    """Lifted-structure style: the negatives harder than the easiest positive; the first
    anchor has none (a -inf term), the last is the only one of its class."""
    original, optimized, _, report = build(HARD_MINING)
    assert report.loops[0].vectorized, report.loops[0].reason
    sim = torch.randn(8, 8, dtype=dtype, generator=torch.Generator().manual_seed(3))
    sim[0, [1, 3, 4, 5, 7]] = -5.0
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 0, 3])
    assert original(sim, labels)[0] == -inf
    assert_equivalent(original, optimized, sim.requires_grad_(), labels)
