"""``F.cosine_similarity`` of two vectors as one product of normalized vectors, for vmapped
generated code.

Under ``torch.vmap`` the op runs as its composite: the elementwise product of its operands,
summed. Two vectors batched over different loops (an utterance against every centroid, inside
loops over speakers and utterances) then make the broadcast product of all of them, [N, M, N, D]
where the result is [N, M, N]. A product of the normalized vectors (``@`` of two vectors) is
batched as a matrix product instead. It is what ATen computes, in the same order: each operand
divided by its norm, the norm clamped below ``eps`` without a gradient, then the product summed;
so the same values (within rounding of the sum), gradients, NaN and inf. The same holds for
operands that broadcast against each other outside the summed dim (an utterance ``[N, D, 1]``
against every centroid ``[1, D, N]``): ATen expands both, [N, D, N], where one contraction of
the normalized operands (``einsum``, a matrix product) makes the [N, N] result directly, eagerly
and under vmap. Operands that broadcast along the summed dim, or of different dtypes: the op.

``cosine_similarity_unless``: the same below a selection that drops some pairs (GE2E's own
centroid), as one product of every pair with the dropped pairs' gradients exactly zero, where
masking the operand per pair would copy it once per selection.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_similarity(x1, x2, dim: int = 1, eps: float = 1e-8):
    """``F.cosine_similarity(x1, x2, dim, eps)``, as ``x1 / |x1| @ x2 / |x2|`` for two
    vectors of one shape and floating dtype along ``dim`` 0 or -1; as one contraction of
    the normalized operands (``_broadcast_products``) for operands that broadcast against each
    other outside ``dim``."""
    if _same_float_tensors(x1, x2, dim) and x1.dim() == 1 and x1.shape == x2.shape \
            and dim in (0, -1):
        return _normalized(x1, eps) @ _normalized(x2, eps)
    return broadcast_cosine_similarity(x1, x2, dim, eps)


def broadcast_cosine_similarity(x1, x2, dim: int = 1, eps: float = 1e-8):
    """``F.cosine_similarity(x1, x2, dim, eps)``, as one contraction of the normalized operands
    (``_broadcast_products``) for operands that broadcast against each other outside ``dim``
    (every row against every other, [N, 1, D] and [1, N, D]); else the op itself."""
    if _same_float_tensors(x1, x2, dim) and _broadcast_outside(x1.shape, x2.shape, dim):
        return _broadcast_products(x1, x2, dim, eps)
    return F.cosine_similarity(x1, x2, dim, eps)


def _same_float_tensors(x1, x2, dim) -> bool:
    return (isinstance(x1, torch.Tensor) and isinstance(x2, torch.Tensor)
            and x1.dtype == x2.dtype and x1.is_floating_point() and isinstance(dim, int))


def _broadcast_outside(s1: torch.Size, s2: torch.Size, dim: int) -> bool:
    """Shapes that differ, broadcast against each other, and agree along ``dim`` of the
    broadcast shape (so each operand's norm along it is the norm of its expanded form)."""
    n = max(len(s1), len(s2))
    if s1 == s2 or not -n <= dim < n or n > 26:  # one einsum letter per dim
        return False
    s1, s2 = (1,) * (n - len(s1)) + tuple(s1), (1,) * (n - len(s2)) + tuple(s2)
    return s1[dim] == s2[dim] and all(a == b or 1 in (a, b) for a, b in zip(s1, s2))


def _broadcast_products(x1: torch.Tensor, x2: torch.Tensor, dim: int, eps: float):
    """``(x1 / |x1| * x2 / |x2|).sum(dim)`` of the broadcast operands, as ``einsum`` (which
    contracts ``dim`` and makes the dims where one operand has size 1 the rows and columns of
    a matrix product), not the broadcast product: ATen expands both operands first."""
    n = max(x1.dim(), x2.dim())
    x1, x2 = (x.reshape((1,) * (n - x.dim()) + x.shape) for x in (x1, x2))
    dim %= n
    letters = "abcdefghijklmnopqrstuvwxyz"[:n]
    spec = f"{letters},{letters}->{letters.replace(letters[dim], '')}"
    return torch.einsum(spec, _normalized(x1, eps, dim), _normalized(x2, eps, dim))


def _normalized(x: torch.Tensor, eps: float, dim: int = -1) -> torch.Tensor:
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True)
    return x / torch.where(norm < eps, norm + (eps - norm).detach(), norm)


def cosine_similarity_unless(x1, x2, dim: int = 1, eps: float = 1e-8, *, deselected):
    """``F.cosine_similarity(x1, x2, dim, eps)`` where ``deselected`` is false, 0 where it is
    true, with no gradient through it there, NaN or inf in the operands included: the op below
    a selection sunk after it (``sink_own_item_selections``). Two vectors (as
    ``cosine_similarity`` above) and a 0-d ``deselected``: ``_cosine_pairs``, which vmap batches
    as one product of every pair (no copy of ``x2`` per pair); else ``x2`` masked with ones
    there (finite, with finite gradients, next to any finite ``x1``)."""
    if (isinstance(x1, torch.Tensor) and isinstance(x2, torch.Tensor)
            and isinstance(deselected, torch.Tensor) and deselected.dim() == 0
            and x1.dim() == 1 and x1.shape == x2.shape and dim in (0, -1)
            and x1.dtype == x2.dtype and x1.is_floating_point() and isinstance(eps, float)):
        return _cosine_pairs(x1, x2, deselected, eps)
    mask = torch.as_tensor(deselected)
    out = F.cosine_similarity(x1, torch.where(_in_front(mask, x2), 1, x2), dim, eps)
    return torch.where(_in_front(mask, out), 0, out)


def _in_front(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``mask`` with its dims in front of ``x``'s, as the branch it stands for had them."""
    if mask.dim() > x.dim():
        return mask
    return mask.reshape(mask.shape + (1,) * (x.dim() - mask.dim()))


@torch.library.custom_op("optimize_loss::cosine_pairs", mutates_args=())
def _cosine_pairs(a: torch.Tensor, b: torch.Tensor, excluded: torch.Tensor,
                  eps: float) -> torch.Tensor:
    """The cosines of the rows of ``a`` [*A, D] and of ``b`` ([K, D], or one vector [D]),
    ``[*A, K]`` (``[*A]``); ``excluded`` broadcasts to that shape. A custom operator, opaque
    to Dynamo and batched by its own vmap rule (``passes/full_extremes.py`` says why). 0 at
    the excluded pairs."""
    with torch.autocast(a.device.type, enabled=False):  # ATen's cosine keeps the dtype there
        unit = _normalized(b, eps)
        return torch.where(excluded, 0, _normalized(a, eps) @ (unit.mT if b.dim() > 1 else unit))


@_cosine_pairs.register_fake
def _cosine_pairs_shape(a, b, excluded, eps):
    return a.new_empty(a.shape[:-1] + b.shape[:-1])


def _save(ctx, inputs: tuple, output: torch.Tensor) -> None:
    a, b, excluded, ctx.eps = inputs
    ctx.save_for_backward(a, b, excluded)


def _backward(ctx, g: torch.Tensor):
    """The cosine's gradients summed over the pairs not excluded. A row holding NaN or inf
    makes ATen's cosine NaN and both of its gradients NaN, whatever the cotangent: so the rows
    of every pair with such a row, excluded pairs aside, get NaN; the products run on rows
    with ones in place of those, so an excluded pair's zero cotangent never meets them."""
    a, b, excluded = ctx.saved_tensors
    kept = ~excluded.expand(g.shape)
    bad_a, bad_b = ~torch.isfinite(a).all(-1), ~torch.isfinite(b).all(-1)
    a0, b0 = torch.where(bad_a[..., None], 1, a), torch.where(bad_b[..., None], 1, b)
    na, nb = _normalized(a0, ctx.eps), _normalized(b0, ctx.eps)
    g = torch.where(kept, g, 0).to(a.dtype)
    ga = g[..., None] * nb if b.dim() == 1 else g @ nb
    gb = (g[..., None] * na).reshape(-1, na.shape[-1]).sum(0) if b.dim() == 1 \
        else g.reshape(-1, g.shape[-1]).mT @ na.reshape(-1, na.shape[-1])
    # NaN: a row of a kept pair with a bad row; bad_b [K] read per pair, bad_a per row of a
    pair_bad = kept & ((bad_a[..., None] if b.dim() == 2 else bad_a) | bad_b)
    nan_a = pair_bad.any(-1) if b.dim() == 2 else pair_bad
    nan_b = pair_bad.reshape(-1, pair_bad.shape[-1]).any(0) if b.dim() == 2 else pair_bad.any()
    return (torch.where(nan_a[..., None], float("nan"), _unnormalized(a0, na, ga, ctx.eps)),
            torch.where(nan_b[..., None], float("nan"), _unnormalized(b0, nb, gb, ctx.eps)),
            None, None)


def _unnormalized(x: torch.Tensor, unit: torch.Tensor, g: torch.Tensor, eps: float):
    """The gradient at ``x`` of ``_normalized(x, eps)`` given ``g`` at it: ``x / n`` with ``n``
    the norm clamped below ``eps`` whose gradient is the norm's (``x / |x|``, 0 at 0)."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    clamped = torch.where(norm < eps, eps, norm)
    direction = torch.where(norm == 0, 0, x / norm)
    return (g - (g * unit).sum(-1, keepdim=True) * direction) / clamped


_cosine_pairs.register_autograd(_backward, setup_context=_save)


@_cosine_pairs.register_vmap
def _batched(info, in_dims: tuple, a, b, excluded, eps):
    """The loop over ``b``'s rows (``b`` batched, ``a`` not): one product with the rows, their
    dim last; ``a`` or ``excluded`` batched: their dim first. Both batched: pairs, not a
    product: the masked cosine of each."""
    ad, bd, ed, _ = in_dims
    n = info.batch_size
    x1 = a.expand(n, *a.shape) if ad is None else a.movedim(ad, 0)
    ex = excluded.unsqueeze(0) if ed is None else excluded.movedim(ed, 0)
    if bd is not None and (ad is not None or b.dim() > 2):  # [n, *A, D] with [n, (K,) D]
        x2 = b.movedim(bd, 0)
        x2 = x2.reshape(n, *(1,) * (x1.dim() - 2), *x2.shape[1:])
        x1 = x1[..., None, :] if x2.dim() > x1.dim() else x1
        while ex.dim() < x2.dim() - 1:
            ex = ex.unsqueeze(1)
        out = F.cosine_similarity(x1, torch.where(ex[..., None], 1, x2), -1, eps)
        return torch.where(ex, 0, out), 0
    if bd is not None:  # b [K, D] (one vector per iteration), a [*A, D]
        ex = excluded[..., None] if ed is None else excluded.movedim(ed, -1)
        return _cosine_pairs(a, b.movedim(bd, 0), ex, eps), a.dim() - 1
    while ex.dim() < x1.dim() - 1 + (b.dim() - 1):
        ex = ex.unsqueeze(1)
    return _cosine_pairs(x1, b, ex, eps), 0
