"""Rows taken at a sort's indices in a vmapped body (``x[perm]``, ``perm`` from ``torch.sort``,
through ``.data``/``.detach()`` and masks) run as ``index_select`` there (``outline_body``):
value, every gradient, dtype, float32 and float64, ties, NaN and inf among the sorted values,
rows of a matrix, indices of a 2-D sort, iterations a ``continue`` skips; indices shifted below
zero (which wrap in indexing) stay an index."""
from __future__ import annotations

import pytest
import torch

from tests.helpers import load_module, optimized_and_vectorized

SOURCE = """
import torch
import torch.nn.functional as F


def weighted_sorted(x, w):
    total = 0
    for i in range(x.shape[0]):
        s, perm = torch.sort(x[i], 0, descending=True)
        perm = perm.data
        wi = w[i]
        total = total + torch.dot(F.relu(s), wi[perm].cumsum(0))
    return total


def sorted_rows(x, feats):
    out = []
    for i in range(x.shape[0]):
        perm = torch.sort(x[i])[1]
        rows = feats[i]
        out.append((rows[perm] * x[i][:, None]).sum(0))
    return torch.stack(out)


def sorted_2d(x, v):
    total = 0
    for i in range(x.shape[0]):
        s, perm = x[i].sort(dim=-1)
        total = total + (s * v[perm]).sum()
    return total


def skipped(x, w):
    losses = []
    for i in range(x.shape[0]):
        if x[i].sum() < 0:
            continue
        s, perm = torch.sort(x[i], 0, descending=True)
        perm = perm.detach()
        wi = w[i]
        losses.append(torch.dot(s, wi[perm]))
    return sum(losses)


def shifted(x, w):
    total = 0
    for i in range(x.shape[0]):
        s, perm = torch.sort(x[i])
        below = perm - 1
        wi = w[i]
        total = total + (s * wi[below]).sum()
    return total
"""


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("sort_positions"), SOURCE)


def check(fn, *inputs, taken=True):
    """Same value, every gradient and dtype; the loop ran vectorized (``strict``: a failing
    vectorized form raises); ``index_select`` in the generated code when ``taken``."""
    opt = optimized_and_vectorized(fn, *inputs)
    assert ("index_select" in opt.report.rewritten_source) == taken


def _values(shape, dtype, kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype)
    if kind == "ties":
        x = (x * 2).round() / 2
    elif kind == "nonfinite":
        x.view(-1)[::7] = float("nan")
        x.view(-1)[3::11] = float("inf")
        x.view(-1)[5::13] = -float("inf")
    return x


DTYPES = [torch.float32, torch.float64]
KINDS = ["plain", "ties", "nonfinite"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_weights_at_sorted_positions(user, dtype, kind):
    x = _values((4, 30), dtype, kind).requires_grad_()
    w = torch.rand(4, 30, dtype=dtype).requires_grad_()
    check(user.weighted_sorted, x, w)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["plain", "ties"])
def test_rows_of_a_matrix_at_sorted_positions(user, dtype, kind):
    x = _values((3, 12), dtype, kind).requires_grad_()
    feats = torch.randn(3, 12, 5, dtype=dtype).requires_grad_()
    check(user.sorted_rows, x, feats)


@pytest.mark.parametrize("dtype", DTYPES)
def test_indices_of_a_2d_sort(user, dtype):
    x = _values((3, 4, 9), dtype, "ties").requires_grad_()
    v = torch.randn(9, dtype=dtype).requires_grad_()
    check(user.sorted_2d, x, v)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_iterations_a_continue_skips(user, dtype, kind):
    x = _values((6, 20), dtype, kind)
    x[1] = -x[1].abs() - 1  # skipped
    x = x.requires_grad_()
    w = torch.rand(6, 20, dtype=dtype).requires_grad_()
    check(user.skipped, x, w)


@pytest.mark.parametrize("dtype", DTYPES)
def test_indices_shifted_below_zero_stay_an_index(user, dtype):
    x = _values((3, 10), dtype, "plain").requires_grad_()
    w = torch.rand(3, 10, dtype=dtype).requires_grad_()
    check(user.shifted, x, w, taken=False)


def test_the_registry_positions_facts_hold_in_torch():
    from passes import ops
    x = torch.tensor([[3.0, float("nan"), -1.0, 3.0], [0.0, float("inf"), 2.0, -float("inf")]])
    _, p = torch.sort(x, dim=1, descending=True)
    keeping = {spec.aten: spec.positions for spec in ops.REGISTRY if spec.positions is not None}
    assert keeping == {"where": (1, 2), "zeros_like": (0,), "detach": (0,), "clone": (0,)}
    results = [torch.where(x > 0, p, p.flip(1)), torch.zeros_like(p), p.detach(), p.clone()]
    assert [spec.aten for spec in ops.REGISTRY if spec.positions_item is not None] == ["sort"]
    for r in [p] + results:
        assert r.dtype == torch.int64 and bool((r >= 0).all()) and bool((r < x.shape[1]).all())


def test_names_a_comprehension_or_a_branch_rebinds_stay_an_index():
    from passes.loops import outline_body
    from tests.loop_stage_helpers import plan_before, show
    src = """
def f(x, w, q):
    total = 0
    for i in range(x.shape[0]):
        s, perm = torch.sort(x[i])
        total = total + sum([w[perm].sum() for perm in q])
        if s[0] > 0:
            perm = q[0]
        total = total + w[perm].sum()
    return total
"""
    plan, ctx = plan_before(src, outline_body)
    mapped = show(outline_body.stage(plan, ctx), ("mapped",))
    # the comprehension is an inner loop of its own; the branch's rebinding a masked choice of
    # `q[0]`, no positions
    assert "index_select" not in mapped and "w[perm].sum()" in mapped
