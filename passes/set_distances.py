"""``((w - x) ** 2).sum(-1)`` of points ``x`` [n, D] against a set ``w`` [m, D], for generated code.

The value is the direct cdist's, squared (no [n, m, D] intermediate, no cancellation); under
torch.compile it is the original's own arithmetic, which Inductor fuses with the reductions that
read it into one kernel over the [n, m] pairs (cdist is an opaque library call there: 3x the
forward time at [2048, 2048, 3]; the values differ from cdist's by its square root's rounding,
not from the original's). The backward is the original's arithmetic: per coordinate
``g * (2 * (w - x))``, summed over the points of the other side. cdist's own backward divides
by the distance, so a NaN or inf coordinate made every gradient NaN where the original's is NaN
in that coordinate only (and ``0 * inf`` where the original multiplies a zero gradient by an
infinite difference). The original's [n, m, D] differences are computed a few coordinates at
a time in one [k, n, m] buffer (in cache for moderate sets, one allocation): the same terms, NaN
and inf (summed in another order), without the temporary's memory traffic (5x faster at
[2048, 2048, 3]). A double backward runs the same arithmetic with differentiable ops on the
[n, m, D] form; both are vmappable (``generate_vmap_rule``; in-place ops into the buffer, no
``out=``). Compiled, the backward of points in 2D and 3D is one [n, m] sum per coordinate, which
Inductor fuses with the cotangent's own ops (a min's ties) into one kernel along the points:
chamfer's compiled forward and backward at [2048, 2048, 3] take the compiled expert's time.
"""
from __future__ import annotations

import torch

# Elements of the [k, n, m] buffer of k coordinates' differences (1 MiB of float32): few op
# calls for many coordinates of small sets, one coordinate at a time for large ones.
_BUFFER = 1 << 18
# Coordinates up to which a compiled backward sums each coordinate on its own: points in 2D and
# 3D (each coordinate's sum computes ``g`` again, which a few coordinates pay for, not many).
_UNROLLED = 3


class _SquaredDistances(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return ((w[None] - x[:, None]) ** 2).sum(-1)
        return torch.cdist(x, w, compute_mode="donot_use_mm_for_euclid_dist").square()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return _gradients(g, *ctx.saved_tensors, *ctx.needs_input_grad)


class _Transposed(torch.autograd.Function):
    """``squared_distances(x, w)`` read from ``d = squared_distances(w, x)``, with its own
    backward: a shared set of distances keeps each use's gradient (a summed cotangent would turn
    the original's ``0 * inf`` into ``g * inf`` where the other use's cotangent is not 0). A
    view, not a copy: the reduction over its rows reads ``d``'s columns (compiled, no [m, n]
    copy and no transposed masks in Inductor's kernels)."""
    generate_vmap_rule = True

    @staticmethod
    def forward(d: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return d.mT

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs[1:])

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return None, *_gradients(g, *ctx.saved_tensors, *ctx.needs_input_grad[1:])


def _gradients(g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, need_x: bool, need_w: bool):
    """The original's gradients of ``x`` and ``w`` for the cotangent ``g`` [n, m]."""
    if torch.is_grad_enabled() or not x.shape[1]:  # a double backward (or no coordinate)
        per_coordinate = g[..., None] * (2 * (w[None] - x[:, None]))
        return (-per_coordinate.sum(1) if need_x else None,
                per_coordinate.sum(0) if need_w else None)
    x_coordinates, w_coordinates = x.mT.contiguous(), w.mT.contiguous()  # [D, n], [D, m]
    if torch.compiler.is_compiling():
        return _compiled_gradients(g, x_coordinates, w_coordinates, need_x, need_w)
    step = max(1, _BUFFER // max(1, g.numel()))  # coordinates per chunk
    buffer = torch.empty_like(g.expand(min(step, x.shape[1]), *g.shape))  # batched under vmap
    x_sums, w_sums = [], []
    for start in range(0, x.shape[1], step):
        x_k, w_k = x_coordinates[start:start + step], w_coordinates[start:start + step]
        per_coordinate = buffer[:len(x_k)]
        per_coordinate.copy_(w_k[:, None].expand_as(per_coordinate)).sub_(x_k[..., None])
        per_coordinate.mul_(2).mul_(g)
        if need_x:
            x_sums.append(-per_coordinate.sum(2))
        if need_w:
            w_sums.append(per_coordinate.sum(1))
    return (torch.cat(x_sums).mT if need_x else None, torch.cat(w_sums).mT if need_w else None)


def _compiled_gradients(g: torch.Tensor, x_coordinates: torch.Tensor, w_coordinates: torch.Tensor,
                        need_x: bool, need_w: bool):
    """``_gradients`` as Inductor compiles it best, given the coordinates [D, n] and [D, m]."""
    if len(x_coordinates) <= _UNROLLED:
        # One [n, m] sum per coordinate: Inductor's loops run along the m points (a [D, n]
        # result reduced along m is stored [n, D], so its loops ran along the D coordinates, 3
        # of a vector's 8 lanes, 4x the expert's backward at [2048, 2048, 3]), and all the sums
        # are one kernel that computes ``g`` where it reads it, D times, without storing it
        terms = [g * (2 * (w_k - x_k[:, None])) for x_k, w_k in zip(x_coordinates, w_coordinates)]
        return (-torch.stack([t.sum(1) for t in terms], 1) if need_x else None,
                torch.stack([t.sum(0) for t in terms], 1) if need_w else None)
    # Inductor fuses the differences into the sums, the [D, n, m] terms never stored (the
    # buffer's in-place writes would be tensors of their own); coordinates first, so that
    # its loops run along the m points, not along the D coordinates. ``g`` is computed
    # once, before them: fused into the sums, the cotangent's own ops (a masked maximum's
    # backward) ran D times, or Inductor stored the [D, n, m] terms (the batch-hard triplet
    # loss written with ``masked_fill(...).amax(1)``: 270 ms instead of 4 ms per call)
    per_coordinate = _computed(g) * (2 * (w_coordinates[:, None] - x_coordinates[..., None]))
    return (-per_coordinate.sum(2).mT if need_x else None,
            per_coordinate.sum(1).mT if need_w else None)


@torch.library.custom_op("optimize_loss::computed", mutates_args=())
def _computed(g: torch.Tensor) -> torch.Tensor:
    """A copy of ``g``: opaque to Inductor, which computes ``g`` into a buffer of its own."""
    return g.clone()


@_computed.register_fake
def _computed_shape(g: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(g)


@_computed.register_vmap
def _computed_batched(info, in_dims: tuple, g: torch.Tensor):
    return _computed(g), in_dims[0]


def squared_distances(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``[n, m]``: ``((w - x[i]) ** 2).sum(-1)`` for every point ``x[i]``."""
    if w is x:  # the distances within one set: Dynamo does not trace an autograd.Function given
        w = w.view_as(w)  # one tensor twice (a graph break); a view, autograd sums both gradients
    return _SquaredDistances.apply(x, w)


def transposed(d: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``squared_distances(x, w)`` given ``d = squared_distances(w, x)``: its values, the
    gradients of ``x`` and ``w`` it would have had (none for ``d``)."""
    return _Transposed.apply(d, x, w)
