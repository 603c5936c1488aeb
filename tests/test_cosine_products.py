"""``passes/cosine_products.py``: the cosine of two vectors as a product of normalized vectors
has ``F.cosine_similarity``'s value, gradients and dtype, at zero, tiny, huge, NaN and inf
entries too, eagerly and under vmap (where it becomes a matrix product); other shapes run the
op itself. ``cosine_similarity_unless`` under three vmaps (one product of every pair) has the
gradients of a loop that never computes the deselected pairs, NaN and inf rows there too."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from passes.cosine_products import cosine_similarity, cosine_similarity_unless
from rewrite.testing import assert_equivalent


def _vectors(dtype):
    g = torch.Generator().manual_seed(0)
    out = [torch.randn(5, dtype=dtype, generator=g), torch.zeros(5, dtype=dtype),
           torch.full((5,), 1e-12, dtype=dtype), torch.full((5,), 1e30, dtype=dtype),
           torch.tensor([1e-9, 0, 0, 0, 0], dtype=dtype),
           torch.tensor([1.0, 2.0, 2.0, 1.0, 2.0], dtype=dtype)]  # ties
    for special in (float("nan"), float("inf"), -float("inf")):
        x = torch.randn(5, dtype=dtype, generator=g)
        x[2] = special
        out.append(x)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_values_and_gradients(dtype):
    vectors = _vectors(dtype)
    for a, b in itertools.product(vectors, vectors):
        for dim in (0, -1):
            assert_equivalent(F.cosine_similarity, cosine_similarity,
                              a.clone().requires_grad_(), b.clone().requires_grad_(), dim)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_under_vmap_of_two_loops(dtype):
    """An utterance against every centroid inside a loop over utterances."""
    x = torch.stack(_vectors(dtype)).requires_grad_()
    c = torch.stack(_vectors(dtype)[::-1]).requires_grad_()

    def mapped(fn):
        return lambda x, c: torch.vmap(lambda e: torch.vmap(lambda r: fn(e, r, dim=0))(c))(x)

    assert_equivalent(mapped(F.cosine_similarity), mapped(cosine_similarity), x, c)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shapes, dim", [
    (((9, 5, 1), (1, 5, 9)), 1),     # every row against every column: [9, 9]
    (((9, 5, 1), (1, 5, 9)), -2),
    (((9, 1, 5), (9, 5)), -1),       # ranks differ: leading dims of one
    (((5,), (9, 5)), -1),            # one vector against rows
    (((5, 1), (1, 5, 9)), -2),
])
def test_broadcast_operands_same_values_and_gradients(dtype, shapes, dim):
    """Zero, tiny, huge, tied, NaN and inf rows against each other, as one contraction."""
    rows = torch.stack(_vectors(dtype))  # [9, 5]
    operands = {(9, 5, 1): rows[:, :, None], (1, 5, 9): rows.flip(0).T[None],
                (9, 1, 5): rows[:, None], (9, 5): rows.flip(0), (5,): rows[6],
                (5, 1): rows[7][:, None]}
    a, b = (operands[s].clone().requires_grad_() for s in shapes)
    assert_equivalent(F.cosine_similarity, cosine_similarity, a, b, dim)


class _LargestTensor(TorchDispatchMode):
    """The most elements of any tensor an op makes while the mode is on."""
    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        sizes = [t.numel() for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.largest = max([self.largest] + sizes)
        return out


@pytest.mark.parametrize("vmapped", [False, True], ids=["eager", "vmap"])
def test_broadcast_operands_never_expanded(vmapped):
    """Neither the value nor the gradients go through the expanded [9, 5, 9] operands."""
    a, b = torch.randn(9, 5, 1, requires_grad=True), torch.randn(1, 5, 9, requires_grad=True)
    fn = torch.vmap(cosine_similarity, in_dims=(0, None, None)) if vmapped else cosine_similarity
    with _LargestTensor() as mode:
        torch.autograd.grad(fn(a[None].expand(2, -1, -1, -1) if vmapped else a, b, 1).sum(), (a, b))
    assert 0 < mode.largest < 9 * 5 * 9


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_broadcast_operands_under_vmap(dtype):
    """A loop over utterance positions, each position's rows against every centroid
    (``F.cosine_similarity(x[:, i].unsqueeze(-1), c.unsqueeze(-1).transpose(0, 2))``)."""
    x = torch.stack(_vectors(dtype)).reshape(3, 3, 5).requires_grad_()
    c = torch.stack(_vectors(dtype)[::-1][:3]).requires_grad_()

    def mapped(fn):
        return lambda x, c: torch.vmap(
            lambda r: fn(r.unsqueeze(-1), c.unsqueeze(-1).transpose(0, 2)), in_dims=1)(x)

    assert_equivalent(mapped(F.cosine_similarity), mapped(cosine_similarity), x, c)


@pytest.mark.parametrize("a, b, dim", [
    (torch.randn(3, 4), torch.randn(3, 4), 1),      # matrices
    (torch.randn(4), torch.randn(1), 0),            # broadcast
    (torch.randn(4), torch.randn(4).double(), 0),   # dtypes differ
])
def test_other_operands_run_the_op(a, b, dim):
    assert_equivalent(F.cosine_similarity, cosine_similarity,
                      a.requires_grad_(), b.requires_grad_(), dim)


def _pairs_looped(flip):
    """Speaker ``j``'s utterances against every centroid but their own, as a loop: the own
    pair is never computed. ``flip``: the centroid as the first operand."""
    def f(e, c, w):
        total = 0
        for j in range(e.shape[0]):
            for i in range(e.shape[1]):
                for k in range(c.shape[0]):
                    if k != j:
                        x1, x2 = (c[k], e[j, i]) if flip else (e[j, i], c[k])
                        total = total + w[k] * F.cosine_similarity(x1, x2, dim=0)
        return total
    return f


def _pairs_mapped(flip, compiled=False):
    """The same with every pair's cosine and the own one dropped after it, in three vmaps."""
    def f(e, c, w):
        def speaker(j, rows):
            def utterance(x):
                def candidate(k, ck, wk):
                    sel = k == j
                    x1, x2 = (ck, x) if flip else (x, ck)
                    r = cosine_similarity_unless(x1, x2, dim=0, deselected=sel)
                    return torch.where(sel, 0, wk * r)
                return torch.vmap(candidate)(torch.arange(c.shape[0]), c, w).sum()
            return torch.vmap(utterance)(rows).sum()
        return torch.vmap(speaker)(torch.arange(e.shape[0]), e).sum()
    return torch.compile(f, fullgraph=True) if compiled else f


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("flip", [False, True], ids=["rows second", "rows first"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_deselected_pairs_take_no_gradient(dtype, flip, compiled):
    """Zero, tiny, huge, tied, NaN and inf rows, each as an utterance and as a centroid, at
    its own speaker (never computed by the loop: no NaN from it) and at the others'."""
    vectors = _vectors(dtype)
    w = torch.arange(1.0, 4.0, dtype=dtype).requires_grad_()
    for shift in range(3):
        e = torch.stack(vectors[shift:] + vectors[:shift]).reshape(3, 3, 5)
        for c in (e.detach()[:, shift].clone(), e.detach()[:, 2 - shift].flip(0).clone()):
            assert_equivalent(_pairs_looped(flip), _pairs_mapped(flip, compiled),
                              e.clone().requires_grad_(), c.requires_grad_(), w)


@pytest.mark.parametrize("deselected", [False, True, torch.tensor(False), torch.tensor(True)])
def test_unless_outside_vmap(deselected):
    """A Python or 0-d condition outside vmap: the op, or a value no gradient flows through."""
    a, b = torch.randn(4).requires_grad_(), torch.randn(4)
    b[1] = float("nan")
    b.requires_grad_()
    out = cosine_similarity_unless(a, b, dim=0, deselected=deselected)
    if bool(deselected):
        assert all(torch.equal(g, torch.zeros(4)) for g in torch.autograd.grad(out, (a, b)))
    else:
        assert_equivalent(F.cosine_similarity, lambda a, b, dim: cosine_similarity_unless(
            a, b, dim=dim, deselected=deselected), a, b, 0)


def _own_candidates_looped(e, c):
    """Every speaker with candidates of its own (``c[j]``), its own index excluded."""
    total = 0
    for j in range(e.shape[0]):
        for i in range(e.shape[1]):
            for k in range(c.shape[1]):
                if k != j:
                    total = total + (k + 1) * F.cosine_similarity(e[j, i], c[j, k], dim=0)
    return total


def _own_candidates_mapped(e, c):
    def speaker(j, rows, cands):
        def utterance(x):
            def candidate(k, ck):
                sel = k == j
                r = cosine_similarity_unless(x, ck, dim=0, deselected=sel)
                return torch.where(sel, 0, (k + 1) * r)
            return torch.vmap(candidate)(torch.arange(cands.shape[0]), cands).sum()
        return torch.vmap(utterance)(rows).sum()
    return torch.vmap(speaker)(torch.arange(e.shape[0]), e, c).sum()


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_both_operands_batched(dtype, compiled):
    """Candidates that vary with the outer loop too: pairs, each masked, not a product."""
    g = torch.Generator().manual_seed(2)
    e = torch.randn(3, 2, 5, dtype=dtype, generator=g)
    c = torch.randn(3, 3, 5, dtype=dtype, generator=g)
    c[1, 1, 2], c[0, 2, 1], e[2, 0, 0] = float("nan"), float("inf"), float("nan")
    mapped = torch.compile(_own_candidates_mapped) if compiled else _own_candidates_mapped
    assert_equivalent(_own_candidates_looped, mapped, e.requires_grad_(), c.requires_grad_())
