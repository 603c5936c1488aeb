"""``passes.tabulated_maps`` and the stage that uses it (``picked_rows_to_tables``): a vmapped
body reading an item only as the rows it picks is evaluated once per (iteration, row) pair where
an enclosing map repeats it, with the values, gradients and dtypes of the map it replaces, and
that map where a pair is not read, the index is out of range, the rows are batched or the
index's ints are not known on the host (a tensor not made by ``index_rows``, or written since);
no host sync either way."""
from __future__ import annotations

import itertools
import types
import warnings

import pytest
import torch

import rewrite
from passes import tabulated_maps
from passes.chunked_maps import map_in_chunks
from passes.tabulated_maps import index_rows, map_tabulated, with_index_ints
from rewrite.tools.host_syncs import count_host_syncs
from tests.loop_helpers import build

DTYPES = [torch.float32, torch.float64]


@pytest.fixture
def tables(monkeypatch):
    """Counts the tables made."""
    made = []
    real = tabulated_maps._table

    def counted(*args):
        made.append(args[3])
        return real(*args)
    monkeypatch.setattr(tabulated_maps, "_table", counted)
    return made


def _pair(e, r):
    """A per-pair cost with an infinite derivative where ``e == r`` (``sqrt`` at 0)."""
    return ((e - r) ** 2).sum(-1).sqrt().mean() + (e * r).sum()


def _inputs(dtype, c=3, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    refs = torch.randn(c, 4, n, generator=g, dtype=dtype)
    ests = torch.randn(c, 4, n, generator=g, dtype=dtype).requires_grad_()
    return ests, refs


def _per_perm(mapper, ests, refs, perms, ests_dim=None):
    """Every permutation's cost, the inner map by ``mapper``, the outer by ``torch.vmap``."""
    def body(t, e):
        return (torch.as_tensor(_pair(e, refs[t])),)

    def one(p, e):
        return mapper(body, (0, 0), 0, (refs,))(p, e)[0].sum(0)
    return torch.vmap(one, in_dims=(0, ests_dim))(perms, ests)


def _plain(body, in_dims, index, tables):
    return map_in_chunks(body, in_dims)


def _same(a_fn, b_fn, ests):
    a, b = a_fn(), b_fn()
    # positive: gradients of one sign, whose sum at an infinite derivative is no inf - inf
    cot = torch.rand(a.shape, dtype=a.dtype, generator=torch.Generator().manual_seed(1)) + 0.5
    ga, = torch.autograd.grad(a, ests, cot)
    gb, = torch.autograd.grad(b, ests, cot)
    assert a.dtype == b.dtype and ga.dtype == gb.dtype
    tol = dict(rtol=1e-5, atol=1e-5) if a.dtype == torch.float32 else {}
    torch.testing.assert_close(a, b, **tol)
    torch.testing.assert_close(ga, gb, equal_nan=True, **tol)
    return ga


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_permutations_evaluate_every_pair_once_with_the_maps_results(dtype, tables):
    ests, refs = _inputs(dtype)
    perms = index_rows(list(itertools.permutations(range(3))))
    _same(lambda: _per_perm(map_tabulated, ests, refs, perms),
          lambda: _per_perm(_plain, ests, refs, perms), ests)
    assert tables == [3]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_negative_rows_are_the_rows_from_the_end(dtype, tables):
    ests, refs = _inputs(dtype)
    perms = index_rows([tuple(t - 3 for t in p) for p in itertools.permutations(range(3))])
    _same(lambda: _per_perm(map_tabulated, ests, refs, perms),
          lambda: _per_perm(_plain, ests, refs, perms), ests)
    assert tables == [3]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_pair_no_iteration_reads_is_not_evaluated(dtype, tables):
    # estimate 2 equals reference 0: sqrt's infinite derivative there, times the zero gradient
    # an unread pair gets, would be NaN; no permutation puts 2 on 0
    ests, refs = _inputs(dtype)
    ests = ests.detach().clone()
    ests[2] = refs[0]
    ests.requires_grad_()
    perms = index_rows([(0, 1, 2), (1, 0, 2), (0, 2, 1), (1, 0, 2)])  # 12 evaluations, 9 pairs
    grad = _same(lambda: _per_perm(map_tabulated, ests, refs, perms),
                 lambda: _per_perm(_plain, ests, refs, perms), ests)
    assert bool(torch.isfinite(grad).all()) and tables == []


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rows_an_enclosing_map_batches_keep_the_map(dtype, tables):
    ests, refs = _inputs(dtype)
    perms = index_rows(list(itertools.permutations(range(3))))
    many = ests.unsqueeze(0).expand(6, -1, -1, -1)  # batched by the outer map too
    _same(lambda: _per_perm(map_tabulated, many, refs, perms, ests_dim=0),
          lambda: _per_perm(_plain, many, refs, perms, ests_dim=0), ests)
    assert tables == []


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_table_batched_through_an_object_has_the_maps_results(dtype, tables):
    # the body reads a per-permutation scale through an object, under sqrt: the table is per
    # permutation, each reading 3 of its 9 pairs. sqrt's derivative is infinite at pair (2, 0):
    # read from that table, the permutations not reading it would add zero times it, NaN;
    # dropped, the map runs: infinite, no NaN
    g = torch.Generator().manual_seed(0)
    refs = -torch.rand(3, 4, 5, generator=g, dtype=dtype) - 1
    refs[0] = refs[0] * 0.1  # the largest sums: every pair's difference is >= 0
    ests = torch.rand(3, 4, 5, generator=g, dtype=dtype) + 1
    ests[2] = refs[0]
    ests.requires_grad_()
    perms = index_rows(list(itertools.permutations(range(3))))
    held = types.SimpleNamespace()

    def run(mapper):
        def body(t, e):
            return (torch.as_tensor(((e.sum(-1) - refs[t].sum(-1)) * held.scale).sqrt().sum()),)

        def one(p, scale, e):
            held.scale = scale
            return mapper(body, (0, 0), 0, (refs,))(p, e)[0].sum(0)
        return torch.vmap(one, in_dims=(0, 0, None))(perms, torch.arange(1.0, 7.0, dtype=dtype),
                                                      ests)
    grad = _same(lambda: run(map_tabulated), lambda: run(_plain), ests)
    assert not bool(grad.isnan().any()) and bool(grad.isinf().any()) and tables == [3]


def test_fewer_repeats_than_pairs_keep_the_map(tables):
    ests, refs = _inputs(torch.float64)
    perms = index_rows([(0, 1, 2), (1, 2, 0)])  # 6 evaluations, 9 pairs
    _same(lambda: _per_perm(map_tabulated, ests, refs, perms),
          lambda: _per_perm(_plain, ests, refs, perms), ests)
    assert tables == []


def test_outside_a_map_it_is_the_map(tables):
    ests, refs = _inputs(torch.float64)
    p = torch.tensor([2, 0, 1])
    body = lambda t, e: (torch.as_tensor(_pair(e, refs[t])),)  # noqa: E731
    _same(lambda: map_tabulated(body, (0, 0), 0, (refs,))(p, ests)[0],
          lambda: map_in_chunks(body, (0, 0))(p, ests)[0], ests)
    assert tables == []


def test_an_index_past_the_rows_raises_as_the_map(tables):
    ests, refs = _inputs(torch.float64)
    perms = index_rows([tuple(2 * t for t in p) for p in itertools.permutations(range(3))])
    with pytest.raises(Exception) as plain:
        _per_perm(_plain, ests, refs, perms)
    with pytest.raises(type(plain.value)):
        _per_perm(map_tabulated, ests, refs, perms)
    assert tables == []


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_an_index_alone_is_tabulated_over_the_rows(dtype, tables):
    ests, refs = _inputs(dtype)
    picks = index_rows([(0, 1, 2, 2), (2, 1, 0, 0)])  # 8 evaluations, 3 rows

    def run(mapper):
        body = lambda t: (torch.as_tensor(_pair(ests[0], refs[t])),)  # noqa: E731
        return torch.vmap(lambda p: mapper(body, (0,), 0, (refs,))(p)[0].sum(0))(picks)
    _same(lambda: run(map_tabulated), lambda: run(_plain), ests)
    assert tables == [3]


def test_a_tensor_of_unknown_ints_keeps_the_map(tables):
    # the same permutations, but a tensor made elsewhere: which rows it picks is not known on
    # the host without reading it
    ests, refs = _inputs(torch.float64)
    perms = torch.tensor(list(itertools.permutations(range(3))))
    _same(lambda: _per_perm(map_tabulated, ests, refs, perms),
          lambda: _per_perm(_plain, ests, refs, perms), ests)
    assert tables == []


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_index_rows_written_since_keep_the_map(dtype, tables):
    # every pair read by the ints index_rows was given, but written in place after: estimate 2
    # is no longer put on reference 0, where sqrt's derivative is infinite
    ests, refs = _inputs(dtype)
    ests = ests.detach().clone()
    ests[2] = refs[0]
    ests.requires_grad_()
    perms = index_rows(list(itertools.permutations(range(3))))
    perms[perms[:, 2] == 0] = torch.tensor([0, 1, 2])
    grad = _same(lambda: _per_perm(map_tabulated, ests, refs, perms),
                 lambda: _per_perm(_plain, ests, refs, perms), ests)
    assert bool(torch.isfinite(grad).all()) and tables == []


def test_choosing_the_table_reads_no_tensor_on_the_host(tables):
    ests, refs = _inputs(torch.float64)
    perms = index_rows(list(itertools.permutations(range(3))))
    assert not count_host_syncs(lambda e: _per_perm(map_tabulated, e, refs, perms).sum(), ests)
    assert tables == [3]


PIT = """
def f(ests, refs, n):
    def per_perm(p):
        return sum([pair(ests[s], refs[t]) for s, t in enumerate(p)]) / len(p)
    return torch.stack([per_perm(p) for p in itertools.permutations(range(n))]).max(0).values.sum()
"""


def _pit_inputs(dtype, c=3):
    ests, refs = _inputs(dtype, c=c)
    return [e.detach().clone().requires_grad_() for e in ests], list(refs.unbind())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_loop_over_permutations_around_pairs_evaluates_each_pair_once(dtype, tables):
    original, rewritten, code, _ = build(PIT, {"torch": torch, "pair": _pair,
                                               "itertools": itertools})
    assert "_map_tabulated(" in code and "_index_rows(list(itertools.permutations(" in code
    (e_a, r_a), (e_b, r_b) = _pit_inputs(dtype), _pit_inputs(dtype)
    a, b = original(e_a, r_a, 3), rewritten(e_b, r_b, 3)
    ga, gb = torch.autograd.grad(a, e_a), torch.autograd.grad(b, e_b)
    assert a.dtype == b.dtype == dtype and all(g.dtype == dtype for g in gb)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else {}
    torch.testing.assert_close(b, a, **tol)
    torch.testing.assert_close(gb, ga, **tol)
    assert tables == [3]
    assert not count_host_syncs(rewritten, *_pit_inputs(dtype), 3)


def test_permutations_past_the_rows_raise_as_the_original(tables):
    # 4 estimates, 3 references: the permutations of range(4) pick reference 3
    original, rewritten, _, _ = build(PIT, {"torch": torch, "pair": _pair, "itertools": itertools})
    ests, refs = _pit_inputs(torch.float64, c=4)
    with pytest.raises(Exception) as raised:
        original(ests, refs[:3], 4)
    with pytest.raises(type(raised.value)):
        rewritten(ests, refs[:3], 4)
    assert tables == []


def test_copies_hold_the_ints_of_an_unchanged_index_rows():
    made = index_rows([(0, 1), (1, 0)])
    copy = with_index_ints(made.clone(), made)
    assert getattr(copy, tabulated_maps._HELD)[0] == [(0, 1), (1, 0)]
    made.add_(0)  # written: its ints are no longer known
    assert not hasattr(with_index_ints(made.clone(), made), tabulated_maps._HELD)


def test_a_loop_region_timed_alone_reads_its_table(tables):
    # the per-loop choice and bench time a region on copies of what it read: the copy of the
    # permutations' tensor keeps their ints, so the region maps as the call does
    from examples.real import sep_pit_sisnr_perms as pit
    from rewrite.loop_choice import region_steps
    opt = rewrite.optimize_loss(pit.naive, compile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        opt(*pit.make_inputs("small"))
        region = opt.loop_region([44], *pit.make_inputs("small"))
        tables.clear()
        vectorized, _, _ = region_steps(region)
        vectorized()
    assert tables and set(tables) == {3}
