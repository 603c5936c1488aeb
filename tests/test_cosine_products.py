"""``passes/cosine_products.py``: the cosine of two vectors as a product of normalized vectors
has ``F.cosine_similarity``'s value, gradients and dtype, at zero, tiny, huge, NaN and inf
entries too, eagerly and under vmap (where it becomes a matrix product); other shapes run the
op itself."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from passes.cosine_products import cosine_similarity
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


@pytest.mark.parametrize("a, b, dim", [
    (torch.randn(3, 4), torch.randn(3, 4), 1),      # matrices
    (torch.randn(4), torch.randn(1), 0),            # broadcast
    (torch.randn(4), torch.randn(4).double(), 0),   # dtypes differ
])
def test_other_operands_run_the_op(a, b, dim):
    assert_equivalent(F.cosine_similarity, cosine_similarity,
                      a.requires_grad_(), b.requires_grad_(), dim)
