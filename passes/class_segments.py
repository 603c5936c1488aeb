"""Reductions of every class's rows at once, for generated code: the stage
``class_selections_to_segments`` computes, before a loop over class ids ``i in range(a, b, s)``
(or the items ``c`` of a 1-D tensor of ids, ``class_rows_at``), what each iteration's
``x[labels == i].sum(0)`` / ``.mean(0)`` / ``(labels == i).sum()`` is.

``class_rows(x, labels, a, b, s, kind)`` is a tensor with one row per iteration, in the loop's
order: ``kind`` "sum" the sum of the rows of ``x`` whose label is that iteration's id, "mean" that
sum over their number, "count" their number (``x`` unused). Each row of ``x`` is added once, by
``index_add`` into its class's row (rows of other ids into a spare row that is dropped): O(rows)
work where a per-class mask is O(classes * rows), no host sync, static shapes (torch.compile
traces it; a tensor's ids are found by ``searchsorted`` in them sorted), and nothing of another class's rows, NaN or inf, reaches a class. Gradients: each
row of ``x`` gets its class's cotangent (over the count for a mean), rows of no class none.

Matches the original up to rounding (the sum's order differs): an empty class's sum is 0 and
its mean NaN (0 / 0, no warning, as ``mean`` of no rows); sums keep float dtypes (float16 and
bfloat16 accumulate in float32, as their CPU reductions do) and are int64 for integer or bool
``x``; counts are int64. ``None`` (the loop runs as written, raising what it raises) for
anything else: non-int bounds; labels not a dense tensor of integers with a dim, or a dense
``x`` whose leading dims are not the labels' shape, or on another device (indexing's ``IndexError``);
a mean of integers (``mean``'s ``RuntimeError``); complex ``x``; a class id the labels' dtype
cannot hold (``int8 == 300`` compares a wrapped 300); a tensor vmap batches (under vmap each
item would need its own labels).

``class_selection_rows(x, labels, a, b, s)`` (``_at(x, labels, ids)``), for the stage
``class_selections_to_rows``: ``(rows, kept)``, each class's rows of ``x`` in their order, padded
to the largest class (a host read of its size, as a mask's selection reads its count), and where
they are: ``rows[k][kept[k]]`` is ``x[labels == id_k]``, values, order and each row's gradient
(padding copies a row, deselected wherever it is read, so no gradient and nothing NaN reaches it
from there); ``(None, None)`` where ``class_rows`` is None, or for complex ``x``.
"""
from __future__ import annotations

import torch

_WIDENED = {torch.float16: torch.float32, torch.bfloat16: torch.float32}


def class_rows(x, labels, start, stop, step, kind):
    """One row per id of ``range(start, stop, step)``: the ``kind`` of the rows of ``x`` with
    that label (see the module docstring), or None."""
    ids = _ids(labels, start, stop, step)
    return None if ids is None else _reduced(x, labels, _range_slots(labels, ids), len(ids), kind)


def class_rows_at(x, labels, ids, kind):
    """``class_rows`` for a loop over the items of ``ids``, a 1-D tensor of integers (each item
    a 0-d tensor: ``labels == c`` compares in the labels' dtype, wrapping ids it cannot hold, as
    here), or None."""
    if not _item_ids(labels, ids):
        return None
    slots, first = _item_slots(labels, ids)
    rows = _reduced(x, labels, slots, ids.shape[0], kind)
    return None if rows is None else rows[first]


def _item_ids(labels, ids) -> bool:
    """Integer labels, and ``ids`` a 1-D tensor of integers beside them (not one vmap batches)."""
    return _int_labels(labels) and isinstance(ids, torch.Tensor) and ids.dim() == 1 \
        and ids.layout == torch.strided and ids.device == labels.device \
        and not (ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex()) \
        and (torch.compiler.is_compiling()
             or not torch._C._functorch.is_functorch_wrapped_tensor(ids))


def _reduced(x, labels, slots, n: int, kind):
    """The rows of ``x`` (one per label) reduced into ``n`` rows by ``slots`` (``n``: none)."""
    if kind == "count":
        return _segment_sums(torch.ones_like(slots), slots, n)
    acc = _accumulation_dtype(x, labels, kind)
    if acc is None:
        return None
    rows = x.reshape((labels.numel(),) + x.shape[labels.dim():]).to(acc)
    sums = _segment_sums(rows, slots, n)
    if kind == "mean":
        counts = _segment_sums(torch.ones(labels.numel(), dtype=acc, device=x.device), slots, n)
        sums = sums / counts.reshape((-1,) + (1,) * (rows.dim() - 1))
    return sums if sums.dtype == x.dtype or acc is torch.int64 else sums.to(x.dtype)


def _int_labels(labels) -> bool:
    """A dense tensor of integers with a dim, not one vmap batches."""
    return isinstance(labels, torch.Tensor) and labels.dim() > 0 \
        and labels.layout == torch.strided \
        and not (labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex()) \
        and (torch.compiler.is_compiling()
             or not torch._C._functorch.is_functorch_wrapped_tensor(labels))


def _ids(labels, start, stop, step) -> range | None:
    """The loop's class ids, when ``labels`` holds ints that compare with them exactly."""
    if not all(type(v) is int for v in (start, stop, step)) or step == 0 \
            or not _int_labels(labels):
        return None
    ids = range(start, stop, step)
    info = torch.iinfo(labels.dtype)
    held = not ids or (info.min <= min(ids[0], ids[-1]) and max(ids[0], ids[-1]) <= info.max)
    return ids if held else None


def _accumulation_dtype(x, labels, kind) -> torch.dtype | None:
    """The dtype rows of ``x`` are summed in, or None where indexing or ``mean`` would raise."""
    if not isinstance(x, torch.Tensor) or x.dim() < labels.dim() \
            or x.shape[:labels.dim()] != labels.shape or x.device != labels.device \
            or x.layout != torch.strided \
            or x.is_complex() or (not torch.compiler.is_compiling()
                                  and torch._C._functorch.is_functorch_wrapped_tensor(x)):
        return None
    if not x.is_floating_point():
        return None if kind == "mean" else torch.int64
    return _WIDENED.get(x.dtype, x.dtype)


def _range_slots(labels, ids: range):
    """Each label's row among the ids of ``ids``, ``len(ids)`` for a label that is none."""
    flat = labels.reshape(-1).to(torch.int64)
    n, step = len(ids), ids.step
    low, high = (min(ids[0], ids[-1]), max(ids[0], ids[-1])) if n else (0, -1)
    valid = (flat >= low) & (flat <= high)
    # offsets of other labels are never used: `where` keeps them from overflowing int64
    offset = torch.where(valid, flat, ids.start) - ids.start
    if step != 1:
        valid = valid & (offset % step == 0)
    return torch.where(valid, offset // step, n)


def _item_slots(labels, ids):
    """(each label's row, ``len(ids)`` for none: the first of the sorted ids equal to it in the
    labels' dtype; each item's row, the first of the sorted ids equal to it)."""
    common = torch.result_type(labels, torch.zeros((), dtype=ids.dtype))
    keys = ids.to(common).to(torch.int64)
    ordered = keys.sort().values
    flat = labels.reshape(-1).to(common).to(torch.int64)
    n = ids.shape[0]
    at = torch.searchsorted(ordered, flat).clamp(max=max(n - 1, 0))
    found = ordered[at] == flat if n else torch.zeros_like(flat, dtype=torch.bool)
    return torch.where(found, at, n), torch.searchsorted(ordered, keys)


def _segment_sums(rows, slots, n: int):
    """``rows`` summed into ``n`` rows by ``slots`` (a slot ``n``: into none)."""
    out = torch.zeros((n + 1,) + rows.shape[1:], dtype=rows.dtype, device=rows.device)
    return out.index_add(0, slots, rows)[:n]


def class_selection_rows(x, labels, start, stop, step):
    """``(rows, kept)`` for a loop over ``range(start, stop, step)`` that selects
    ``x[labels == i]``: ``rows[k]`` the rows of the k-th id in order, padded to the largest
    class with copies of a row of ``x``, ``kept[k]`` true at that class's rows, so that
    ``rows[k][kept[k]]`` is the selection itself (values, order, gradients); ``(None, None)``
    where ``class_rows`` gives None, or ``x`` is complex."""
    ids = _ids(labels, start, stop, step)
    return (None, None) if ids is None else _padded(x, labels, _range_slots(labels, ids), len(ids))


def class_selection_rows_at(x, labels, ids):
    """``class_selection_rows`` for a loop over the items of ``ids``, as ``class_rows_at``."""
    if not _item_ids(labels, ids):
        return None, None
    slots, first = _item_slots(labels, ids)
    rows, kept = _padded(x, labels, slots, ids.shape[0])
    return (None, None) if rows is None else (rows[first], kept[first])


@torch.compiler.disable  # the padding's size is read on the host: eager, not a graph break
def _padded(x, labels, slots, n: int):
    """The rows of ``x`` (one per label) of each of ``n`` slots, padded; see above."""
    if _accumulation_dtype(x, labels, "sum") is None or x.is_complex():
        return None, None
    rows = x.reshape((labels.numel(),) + x.shape[labels.dim():])
    counts = torch.bincount(slots, minlength=n + 1)[:n]
    width = int(counts.max()) if n else 0  # the largest class: a host read, as masks' shapes are
    order = torch.argsort(slots, stable=True)  # each slot's rows, in their order in ``x``
    at = torch.arange(width, device=x.device)
    kept = at < counts[:, None]
    first = torch.cumsum(counts, 0) - counts
    return rows[order[torch.where(kept, first[:, None] + at, 0)]], kept
