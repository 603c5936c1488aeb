"""sliced_selections_to_masks: ``x[m][a:b]`` (the selected rows of ranks a..b-1: a prototypical
loss's support and query rows of one class) becomes ``x[selection_window(m, a, b)]``, one
selection that masked_selections_to_where takes. Golden source (with no-change cases); the
runtime mask against Python's slices of ``x[m]`` (negative, missing and past-the-end bounds, 2-D
masks, empty selections), hypothesis-fuzzed; behaviour: value, every gradient and dtype (float32
and float64) of losses written per class, ragged classes, classes smaller than the slice, ties,
NaN/inf in rows no slice takes; run-time counts."""
from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings, strategies as st

import rewrite
from passes.loops import sliced_selections_to_masks
from passes.selection_windows import selection_window
from rewrite.testing import assert_equivalent
from tests.helpers import load_module
from tests.loop_helpers import dedent
from tests.loop_stage_helpers import plan_before, show

SUPPORT = """
    def f(emb, target, n_support):
        protos = []
        classes = torch.unique(target)
        for c in classes:
            protos.append(emb[target == c][:n_support].mean(0))
        return torch.stack(protos)
    """
# the query rows of each class against the prototypes of the support rows (as Prototypical
# Networks' forks write it: selections appended, stacked after the loop)
EPISODE = """
    def f(emb, target, n_support, n_query):
        support, query = [], []
        for c in torch.unique(target):
            support.append(emb[target == c][:n_support])
            query.append(emb[target == c][n_support:n_support + n_query])
        protos = torch.stack(support).mean(1)
        q = torch.cat(query)
        d = torch.cdist(q, protos) ** 2
        labels = torch.arange(len(support)).repeat_interleave(n_query)
        return torch.nn.functional.cross_entropy(-d, labels)
    """
BOUNDS = """
    def f(x, labels, k):
        total = 0
        for c in range(3):
            m = labels == c
            total = total + x[m][-2:].sum() + x[m][1:-1].pow(2).sum() + x[m][k:].abs().sum()
        return total
    """


def test_golden_support_rows():
    plan, ctx = plan_before(SUPPORT, sliced_selections_to_masks)
    assert show(sliced_selections_to_masks.stage(plan, ctx), ("body",)) == dedent("""
        # body
        protos.append(emb[_selection_window(target == c, None, n_support)].mean(0))
        """)


def test_golden_bounds_of_arithmetic_and_negative_constants():
    plan, ctx = plan_before(BOUNDS, sliced_selections_to_masks)
    assert show(sliced_selections_to_masks.stage(plan, ctx), ("body",)) == dedent("""
        # body
        m = labels == c
        total = total + x[_selection_window(m, -2, None)].sum() + x[_selection_window(m, 1, -1)].pow(2).sum() + x[_selection_window(m, k, None)].abs().sum()
        """)


@pytest.mark.parametrize("body", [
    "total = total + x[m][::2].sum()",              # a step
    "total = total + x[m][:c].sum()",               # a bound the loop binds
    "total = total + x[idx][:k].sum()",             # integer positions, no mask
    "total = total + x[m, :k].sum()",               # a slice of another dim
    "total = total + x[m and m][:k].sum()",         # Python logic: no tensor mask
    "total = total + x[:, 0][:k].sum()",            # a slice of a slice
])
def test_golden_no_change(body):
    src = dedent(f"""
        def f(x, labels, k, idx):
            total = 0
            for c in range(3):
                m = labels == c
                {body}
            return total
        """)
    plan, ctx = plan_before(src, sliced_selections_to_masks)
    before = show(plan, ("body",))
    assert show(sliced_selections_to_masks.stage(plan, ctx), ("body",)) == before


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), min_size=0, max_size=12),
       st.one_of(st.none(), st.integers(-14, 14)), st.one_of(st.none(), st.integers(-14, 14)),
       st.booleans())
def test_the_window_selects_what_the_slice_of_the_selection_takes(bits, start, stop, square):
    m = torch.tensor(bits + [False] * (-len(bits) % 2 if square else 0), dtype=torch.bool)
    if square:
        m = m.view(2, -1)
    x = torch.arange(float(m.numel())).view(m.shape + (1,)).expand(*m.shape, 3) * 1
    assert torch.equal(x[selection_window(m, start, stop)], x[m][start:stop])


def test_the_window_takes_ints_and_integer_0_d_tensors_and_refuses_other_masks():
    m = torch.tensor([True, False, True, True])
    assert selection_window(m, torch.tensor(1), None).tolist() == [False, False, True, True]
    with pytest.raises(TypeError, match="not a bool tensor"):
        selection_window(torch.tensor([0, 2]), None, 1)
    with pytest.raises(TypeError):
        selection_window(m, 1.5, None)  # as slicing raises for a float bound


def episode(dtype, ragged: bool, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = [5, 7, 4, 6] if ragged else [6, 6, 6, 6]
    target = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    target = target[torch.randperm(len(target), generator=g)]
    emb = torch.randn(len(target), 5, generator=g, dtype=dtype)
    emb[3] = emb[4]  # tied rows
    return emb.requires_grad_(), target


def optimized(tmp_path, src: str):
    module = load_module(tmp_path, "import torch\n\n\n" + dedent(src))
    return module.f, rewrite.optimize_loss(module.f, compile=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("ragged", [False, True], ids=["equal", "ragged"])
def test_support_prototypes_equivalent_and_vectorized(tmp_path, dtype, ragged):
    original, fn = optimized(tmp_path, SUPPORT)
    emb, target = episode(dtype, ragged)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for n_support in (3, 5, 9, -2, 0):  # 9: more than a class has; 0: empty (NaN means)
            assert_equivalent(original, fn, emb, target, n_support)
            assert fn(emb, target, n_support).dtype == dtype
    loop = fn.report.loops[0]
    assert loop.vectorized and loop.vectorized_runs > 0 and loop.original_runs == 0, loop
    assert not fn.report.fallbacks


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_episode_with_appended_windows_equivalent_and_vectorized(tmp_path, dtype):
    original, fn = optimized(tmp_path, EPISODE)
    emb, target = episode(dtype, ragged=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_equivalent(original, fn, emb, target, 3, 1)
    loop = fn.report.loops[0]
    assert loop.vectorized and loop.vectorized_runs > 0 and loop.original_runs == 0, loop
    # unequal support sizes: torch.stack raises after the loop, in both
    for f in (original, fn):
        with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
            f(emb, target, 5, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_bounds_equivalent_with_nonfinite_rows_outside_every_window(tmp_path, dtype):
    original, fn = optimized(tmp_path, BOUNDS)
    g = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 1, 0, 2, 0, 1, 0, 2, 2, 0])
    x = torch.randn(10, 3, generator=g, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_equivalent(original, fn, x.requires_grad_(), labels, 2)
        x = x.detach()
        x[0] = float("nan")  # class 0's first row: no window of `k = 1` ... takes it but [k:]
        assert_equivalent(original, fn, x.requires_grad_(), labels, 1)
    loop = fn.report.loops[0]
    assert loop.vectorized and loop.vectorized_runs > 0, loop


def test_a_loop_kept_quotes_the_user_s_slice(tmp_path):
    _, fn = optimized(tmp_path, """
        def f(emb, target, k):
            out = []
            for c in torch.unique(target):
                out.append(emb[target == c][:k].sort(0).values)
            return out
        """)
    emb, target = episode(torch.float64, ragged=True)
    fn(emb, target, 3)
    assert "`emb[target == c][:k]`" in fn.report.loops[0].reason, fn.report.loops[0].reason
