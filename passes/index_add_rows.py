"""``index_add_rows(rows, index, source)``: every row's ``rows[k].index_add(0, index[k],
source[k])`` at once, for generated code batching a loop that adds into its rows
(``loops/row_index_adds_to_writes``, a C51 projection's ``m[i].index_add_(0, l[i], ...)``).

One ``scatter_add`` along dim 1, the index broadcast over the items' other dims: the same sums
(each row's slots get the same sources), the same gradients (the rows' gradient passes through,
each source's is the gradient at its slot, ``index_add``'s too), when the index is a 2-D tensor
of an index dtype with one slot per source item (``source.shape[:2] == index.shape``) and the
sources' items the rows' shape past dim 0. Anything else is the same call mapped by
``torch.vmap``: ``index_add``'s own result, or its error (``scatter_add`` would read a shorter
index's slots only, where ``index_add`` raises).
"""
from __future__ import annotations

import torch


def index_add_rows(rows, index, source):
    if isinstance(rows, torch.Tensor) and isinstance(index, torch.Tensor) \
            and isinstance(source, torch.Tensor) and index.dim() == 2 and rows.dim() >= 2 \
            and index.dtype in (torch.int64, torch.int32) and source.shape[:2] == index.shape \
            and source.shape[2:] == rows.shape[2:] and source.dtype == rows.dtype:
        slots = index.long().reshape(index.shape + (1,) * (source.dim() - 2)).expand(source.shape)
        return rows.scatter_add(1, slots, source)
    return torch.vmap(lambda r, i, s: r.index_add(0, i, s))(rows, index, source)
