"""A vmapped body that reads its index parameter only as rows of tensors it closes over
(``refs[t]``), evaluated once per (iteration, row) pair when an enclosing map repeats it.

Inside another vmapped body (a loop over permutations around a loop over speakers), the index
of the inner loop is batched by the outer map while the rest may not be: the inner map then
evaluates its body ``B * n`` times (``B`` outer items), with every row it reads gathered once
per outer item, although its values depend only on the iteration and the row picked, ``n *
rows`` pairs. When ``B * n`` exceeds the pairs, the body is evaluated once over every pair (the
index taking each row number; nothing of it is batched by the outer map, so that map computes it
once), and each iteration reads its pair from that table: the permutation-invariant SI-SNR of
``examples/real/sep_pit_sisnr_perms.py`` computes its 9 pairs instead of 18.

Every row number must be picked at every iteration by some outer item: a pair nothing reads
would get a zero gradient, and zero times an infinite derivative of the body is NaN, where the
original never evaluated that pair; a table the outer map batches after all (the body reads a
batched tensor through an object) is dropped for the same reason. Which rows are picked is
decided on the host without reading the index tensor (a read is a device sync the original
does not make): only an index the enclosing map batches directly from a tensor ``index_rows``
made from Python ints (the tuples ``itertools.permutations(range(n))`` yields), unchanged
since (its version counter), is checked, on those ints; any other index keeps the map. Picked
rows are normalized to ``[0, rows)`` (``refs[-1]`` is ``refs[rows - 1]`` for tables of one
length); out of range, the ordinary map runs and raises as the original. Values are the body's
at the same rows; the gradients of a pair's several reads are summed before its backward
(linear: the same up to rounding).

Elsewhere (not inside a map, under Dynamo, an index that is not batched or rows that are, an
index of no known ints, ints that miss a pair) it is ``chunked_maps.map_in_chunks``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .chunked_maps import map_in_chunks

_functorch = torch._C._functorch
# Functions a body calls are followed this deep for tensors they close over (a helper of a helper)
_DEPTH = 3
# The attribute of a tensor ``index_rows`` made that holds its Python ints and version.
_HELD = "_optimize_loss_index_ints"


def map_tabulated(body: Callable, in_dims: tuple, index: int, tables: tuple) -> Callable:
    """``map_in_chunks(body, in_dims)``, or, when an enclosing map repeats the body's
    evaluations, the body at every (iteration, row of ``tables``) pair read at the pairs picked
    by argument ``index`` (see the module)."""
    def mapped(*args: Any) -> Any:
        rows = _rows(tables, args[index], in_dims[index])
        if rows is not None and not _batched(body, args, index, tables):
            picked = _picked(args[index], rows, has_others=len(args) > 1)
            table = None if picked is None else _table(body, in_dims, index, rows, args)
            # batched all the same (by what the body reads through an object): each outer
            # item's unread pairs would be in its backward
            if table is not None and not any(_functorch.is_batchedtensor(t) for t in table):
                return _read(table, picked, len(args) > 1)
        return map_in_chunks(body, in_dims)(*args)
    return mapped


def _rows(tables: tuple, at: Any, dim: int) -> int | None:
    """The tables' common length, when tabulating may pay: inside a map (not under Dynamo),
    an int index of one value per iteration, batched by an enclosing map."""
    if torch.compiler.is_compiling() or _functorch.maybe_current_level() is None or dim != 0:
        return None
    if not (isinstance(at, torch.Tensor) and at.dim() == 1 and _functorch.is_batchedtensor(at)
            and at.dtype in (torch.int64, torch.int32)):
        return None
    if not tables or not all(isinstance(t, torch.Tensor) and t.dim() > 0 for t in tables):
        return None
    lengths = {t.shape[0] for t in tables}
    return lengths.pop() if len(lengths) == 1 else None


def _batched(body: Callable, args: tuple, index: int, tables: tuple) -> bool:
    """Whether an enclosing map batches anything the table reads (the other arguments, the
    tables, the tensors the body and the functions it calls close over): the table would be
    per outer item, no fewer evaluations."""
    others = [a for k, a in enumerate(args) if k != index] + list(tables)
    return any(_functorch.is_batchedtensor(t) for t in others + _closed(body, _DEPTH)
               if isinstance(t, torch.Tensor))


def _closed(fn: Any, depth: int) -> list:
    """The values ``fn`` closes over, and those of the functions among them, ``depth`` deep."""
    cells = []
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            cells.append(cell.cell_contents)
        except ValueError:  # a name not bound yet
            continue
    if depth > 1:
        cells += [v for c in cells if callable(c) for v in _closed(c, depth - 1)]
    return cells


def _picked(at: torch.Tensor, rows: int, has_others: bool) -> torch.Tensor | None:
    """``at`` as rows in ``[0, rows)``, when its ints are known, tabulating evaluates fewer
    pairs than the maps and every pair is read (see the module); else None. Checked on the
    Python ints: no read of the tensor."""
    items = _held_items(at)  # [outer items][n]
    n = at.shape[0]
    pairs = n * rows if has_others else rows
    if items is None or len(items) * n <= pairs or not all(
            type(v) is int and -rows <= v < rows for item in items for v in item):
        return None
    read = {(k if has_others else 0, v % rows) for item in items for k, v in enumerate(item)}
    return at.remainder(rows) if len(read) == pairs else None


def _held_items(at: torch.Tensor) -> Any:
    """The ints of ``at`` in each item of the map batching it (``[items][n]``), when that map
    batches a tensor ``index_rows`` made, written nowhere since; else None."""
    base, bdim = _functorch.get_unwrapped(at), _functorch.maybe_get_bdim(at)
    held = getattr(base, _HELD, None)
    if held is None or held[1] != base._version or _functorch.is_batchedtensor(base) \
            or base.dim() != 2:
        return None
    return held[0] if bdim == 0 else list(zip(*held[0]))


def index_rows(values: list) -> torch.Tensor:
    """``torch.tensor(values, dtype=torch.int64)`` holding ``values`` (tuples of Python ints)
    and its version, for ``map_tabulated`` to check with no read of the tensor."""
    made = torch.tensor(values, dtype=torch.int64)
    if not torch.compiler.is_compiling() and not made.is_inference():
        setattr(made, _HELD, (values, made._version))
    return made


def with_index_ints(copy: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``copy``, a copy of ``source``'s values, holding the ints ``source`` holds from
    ``index_rows`` when it is unchanged since: a loop region timed on copies of what it read
    (``rewrite.loop_choice``) maps as the call does."""
    held = getattr(source, _HELD, None)
    if held is not None and held[1] == source._version and not copy.is_inference():
        setattr(copy, _HELD, (held[0], copy._version))
    return copy


def _table(body: Callable, in_dims: tuple, index: int, rows: int, args: tuple) -> tuple:
    """The body's outputs at every row number for the index, ``[n, rows, ...]`` each (``[rows,
    ...]`` when the index is its only argument)."""
    numbers = torch.arange(rows, device=args[index].device)
    others = args[:index] + args[index + 1:]

    def at_every_row(*item: Any) -> Any:
        return torch.vmap(lambda k: body(*item[:index], k, *item[index:]))(numbers)
    if not others:
        return at_every_row()
    return torch.vmap(at_every_row, in_dims=in_dims[:index] + in_dims[index + 1:])(*others)


def _read(table: tuple, picked: torch.Tensor, has_others: bool) -> tuple:
    """Each iteration's outputs: its pair of ``table``."""
    if not has_others:
        return tuple(t[picked] for t in table)
    iterations = torch.arange(picked.shape[0], device=picked.device)
    return tuple(t[iterations, picked] for t in table)
