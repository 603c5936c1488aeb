"""``F.cosine_similarity`` of two vectors as one product of normalized vectors, for vmapped
generated code.

Under ``torch.vmap`` the op runs as its composite: the elementwise product of its operands,
summed. Two vectors batched over different loops (an utterance against every centroid, inside
loops over speakers and utterances) then make the broadcast product of all of them, [N, M, N, D]
where the result is [N, M, N]. A product of the normalized vectors (``@`` of two vectors) is
batched as a matrix product instead. It is what ATen computes, in the same order: each operand
divided by its norm, the norm clamped below ``eps`` without a gradient, then the product summed;
so the same values (within rounding of the sum), gradients, NaN and inf. Vectors of different
shapes (broadcast), dtypes or other dims: the op itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_similarity(x1, x2, dim: int = 1, eps: float = 1e-8):
    """``F.cosine_similarity(x1, x2, dim, eps)``, as ``x1 / |x1| @ x2 / |x2|`` for two
    vectors of one shape and floating dtype along ``dim`` 0 or -1."""
    if not (isinstance(x1, torch.Tensor) and isinstance(x2, torch.Tensor)
            and x1.dim() == 1 and x1.shape == x2.shape and dim in (0, -1)
            and x1.dtype == x2.dtype and x1.is_floating_point()):
        return F.cosine_similarity(x1, x2, dim, eps)
    return _normalized(x1, eps) @ _normalized(x2, eps)


def _normalized(x: torch.Tensor, eps: float) -> torch.Tensor:
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x / torch.where(norm < eps, norm + (eps - norm).detach(), norm)
