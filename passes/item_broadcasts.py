"""Two batched operands of one elementwise op whose items (along dim 0) may differ in rank, for
generated code (``loops/batch_scope``: ``x[i] * w[i]`` with ``x`` [B, D] and ``w`` [B])::

    x[i] * w[i]    ->    broadcast_item(_x_row, _w_row) * broadcast_item(_w_row, _x_row)

``broadcast_item(a, b)``: ``a`` as it is when its items have at least the rank of ``b``'s; else
with dims of size 1 right after dim 0 up to ``b``'s rank, so that each of its items aligns from
the right with ``b``'s item as in the original (``w[:, None]``), and when its items are 0-d,
cast to the dtype of the op on one item of each: a 0-d item next to
a dimensioned one takes part in type promotion only by its category (float64 0-d times float32
[D] is float32), but lifted it is dimensioned and would (float64). The cast is what vmap's
batching rule does for the same op (each item cast to the items' result type); its gradient is
cast back to the operand's dtype, as the original's is. With ``numbers`` (the kind of Python
numbers ``a``'s items stand for, ``number_operands.number_kind``) there is no cast:
``number_op`` converts the numbers as the original's operator does.
"""
from __future__ import annotations

from .dtype_queries import result_type


def broadcast_item(a, b, numbers=None):
    if a.dim() >= b.dim():
        return a
    lifted = a[(slice(None),) + (None,) * (b.dim() - a.dim())]
    if a.dim() == 1 and numbers is None:  # 0-d items next to dimensioned ones
        lifted = lifted.to(result_type(b, a.new_empty(())))
    return lifted
