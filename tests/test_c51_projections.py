"""The C51 projection of distributional RL (each sample's atoms' mass moved onto the support at
their lower and upper neighbours), as losses write it with loops: a new-user trial found both
kept. Row by row (``m[i].index_add_(0, l[i], ...)``): each add becomes a write of the row
(``row_index_adds_to_writes``), batched as one ``scatter_add`` (``index_add_rows``). Atom by atom
(``m[i, l[i, j]] += ...``): the inner loop is one accumulating ``index_put_`` per row (its index
an element of a row of an integer tensor); the outer loop says why it is kept."""
from __future__ import annotations

import pytest
import torch

from passes.index_add_rows import index_add_rows
from tests.helpers import equivalent_report, load_module

DTYPES = (torch.float32, torch.float64)

C51 = """
import torch

V_MIN, V_MAX = -10.0, 10.0

def _bounds(rewards, dones, support, gamma):
    atoms = support.shape[0]
    tz = (rewards.unsqueeze(1) + (1 - dones).unsqueeze(1) * gamma * support.unsqueeze(0)).clamp(V_MIN, V_MAX)
    b = (tz - V_MIN) / ((V_MAX - V_MIN) / (atoms - 1))
    l, u = b.floor().long(), b.ceil().long()
    l[(u > 0) & (l == u)] -= 1
    u[(l < atoms - 1) & (l == u)] += 1
    return b, l, u

def by_rows(next_p, rewards, dones, log_p, support, gamma=0.9):
    b, l, u = _bounds(rewards, dones, support, gamma)
    m = torch.zeros_like(next_p)
    for i in range(next_p.shape[0]):
        m[i].index_add_(0, l[i], next_p[i] * (u[i] - b[i]))
        m[i].index_add_(0, u[i], next_p[i] * (b[i] - l[i]))
    return -(m * log_p).sum(1).mean()

def by_rows_alpha(next_p, rewards, dones, log_p, support, gamma=0.9):
    b, l, u = _bounds(rewards, dones, support, gamma)
    m = torch.zeros_like(next_p)
    for i in range(next_p.shape[0]):
        m[i].index_add_(0, l[i], next_p[i] * (u[i] - b[i]), alpha=0.5)
    return -(m * log_p).sum(1).mean()

def by_atoms(next_p, rewards, dones, log_p, support, gamma=0.9):
    b, l, u = _bounds(rewards, dones, support, gamma)
    m = torch.zeros_like(next_p)
    for i in range(next_p.shape[0]):
        for j in range(support.shape[0]):
            m[i, l[i, j]] += next_p[i, j] * (u[i, j] - b[i, j])
            m[i, u[i, j]] += next_p[i, j] * (b[i, j] - l[i, j])
    return -(m * log_p).sum(1).mean()
"""


def _batch(dtype, special=False, n=6, atoms=11):
    g = torch.Generator().manual_seed(0)
    next_p = torch.softmax(torch.randn(n, atoms, generator=g, dtype=dtype), 1)
    rewards = torch.randn(n, generator=g, dtype=dtype) * 4
    rewards[0] = 100.0  # clamped: every atom at the top, l == u fixed up
    dones = torch.tensor([0.0, 1.0] * (n // 2), dtype=dtype)  # done: all mass at one slot
    log_p = torch.log_softmax(torch.randn(n, atoms, generator=g, dtype=dtype), 1)
    if special:
        next_p[2, 3], log_p[3, 1], log_p[4, 2] = float("nan"), float("-inf"), float("nan")
    support = torch.linspace(-10.0, 10.0, atoms, dtype=dtype)
    return (next_p.requires_grad_(), rewards.requires_grad_(), dones, log_p.requires_grad_(),
            support)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("name, strategy", [("by_rows", "batched"), ("by_rows_alpha", "vmap")])
def test_row_adds_vectorized_equivalent(tmp_path, dtype, special, name, strategy):
    user = load_module(tmp_path, C51)
    (loop,) = equivalent_report(getattr(user, name), *_batch(dtype, special)).loops
    assert loop.strategy == strategy and (loop.vectorized_runs, loop.original_runs) == (1, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_atom_adds_inner_vectorized_outer_says_why(tmp_path, dtype):
    user = load_module(tmp_path, C51)
    outer, inner = sorted(equivalent_report(user.by_atoms, *_batch(dtype)).loops,
                          key=lambda loop: loop.lineno)
    assert inner.vectorized and inner.vectorized_runs == 6, inner
    assert outer.strategy == "kept" and outer.reason.startswith(
        "the inner loop adds into `m` at slots its data picks, several per iteration"), outer


def test_index_add_rows_is_index_add_per_row():
    g = torch.Generator().manual_seed(1)
    rows = torch.randn(4, 5, 3, generator=g, requires_grad=True)
    source = torch.randn(4, 7, 3, generator=g, requires_grad=True)
    index = torch.randint(0, 5, (4, 7), generator=g)
    for idx in (index, index.int()):
        got = index_add_rows(rows, idx, source)
        want = torch.stack([rows[k].index_add(0, index[k], source[k]) for k in range(4)])
        assert torch.allclose(got, want)
        gr, gs = torch.autograd.grad((got * got).sum(), (rows, source))
        wr, ws = torch.autograd.grad((want * want).sum(), (rows, source))
        assert torch.allclose(gr, wr) and torch.allclose(gs, ws)


@pytest.mark.parametrize("index", [torch.zeros(4, 6, dtype=torch.long),  # fewer slots
                                   torch.zeros(4, 7),                    # a float index
                                   torch.full((4, 7), 5)])                # out of range
def test_index_add_rows_raises_as_index_add(index):
    rows, source = torch.zeros(4, 5), torch.ones(4, 7)
    with pytest.raises((RuntimeError, IndexError)):
        rows[0].index_add(0, index[0], source[0])
    with pytest.raises((RuntimeError, IndexError)):
        index_add_rows(rows, index, source)
