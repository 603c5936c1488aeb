"""Loop rewrite: a padding mask made by a loop over rows becomes one comparison written into it.

A tensor filled with 0 (or 1) right before the loop (``loop_dataflow.filled_before_loops``:
``torch.zeros``/``ones``, ``x.new_zeros``/``new_ones``, ``*_like``; no statement in between
mentions it), whose one statement writes the other number into each row's positions past (or
before) that row's length, holds afterwards, in the rows the loop visits, whether each position
is past the length: one comparison of the positions with the lengths, written into those rows
(``out=``)::

    mask = x.new_ones((B, 1, T))              mask = x.new_ones((B, 1, T))
    for i in range(B):                  ->    if isinstance(B, int) and B > 0 and ...:
        mask[i, :, lengths[i]:] = 0               'optimize_loss: loop at line 2 vectorized'
                                                  _rows = mask if B == mask.shape[0] else mask[0:B]
                                                  _lengths = lengths if B == lengths.shape[0] else lengths[0:B]
                                                  _d = <mask's dtype when it holds the positions exactly, else int64>
                                                  _pos = torch.arange(mask.shape[2], dtype=_d, ...).reshape(<column>)
                                                  _bound = (_lengths + mask.shape[2] * (_lengths < 0)).to(_d).reshape(-1, 1, 1)
                                                  torch.lt(_pos.expand(_rows.shape), _bound, out=_rows)
                                              else:
                                                  <the loop>

The vmapped form of the same write (``ragged_slices_to_masks``) reads and writes every element
through a boolean ``torch.where``, which CPU kernels run element by element, plus vmap's own
work: several times slower than the loop's few tail fills. The comparison of positions in the
mask's own floating dtype runs vectorized and writes each element once. A negative length counts
from the end as slicing does (``a + T * (a < 0)``; past either end the comparison clamps as
slicing does). Written: ``X[i, :, ..., a:] = v`` or ``X[i, :, ..., :b] = v`` (or ``X[i][:b] = v``,
the row a view written through; full slices around
the ragged one; or the statement ``X[...].fill_(v)``), ``i`` the index of ``for i in range(n)``
with the bound ``L[i]``, or of
``for i, l in enumerate(L)`` with the bound ``l`` (either maybe through ``int(...)`` or
``.item()``), ``{v, fill} == {0, 1}``. The runtime check asks for 1-D integer lengths on the
mask's device (``row_lengths``: a tensor, or over ``range`` a numpy array of signed ints, the
lengths a collate function moved to the host, read as a tensor) and rows the mask has; otherwise
the loop runs as written (raising as it did).
"""
from __future__ import annotations

import ast
import math
from dataclasses import dataclass

from ..ast_tools import Checks, PassContext, is_name, is_pure, replace
from ..row_lengths import row_lengths
from .batch_values import literal
from .loop_dataflow import resolve_call

# rows of the mask, lengths of those rows, the comparison's dtype: the mask's own when its
# floating type holds every position exactly (2 ** 24: float32's integers), else int64
_ROWS = "rows = x if n == x.shape[0] else x[0:n]"
_LENGTHS = "lengths = rl(l) if n == l.shape[0] else rl(l)[0:n]"  # ``range``'s rows of ``L``
_PRELUDE = """
d = x.dtype if x.dtype in (torch.float32, torch.float64) and x.shape[k] <= 16777216 else torch.int64
pos = torch.arange(x.shape[k], dtype=d, device=x.device).reshape((-1,) + (1,) * (x.dim() - k - 1))
bound = (lengths + x.shape[k] * (lengths < 0)).to(d).reshape((-1,) + (1,) * (x.dim() - 1))
"""
_COMPARE = "torch.{op}(pos.expand(rows.shape), bound, out=rows)"
_CHECKS = ("isinstance(x, torch.Tensor) and rl(l) is not None and rl(l).device == x.device "
           "and not x.is_complex() and x.dim() >= e and n <= x.shape[0]")
# the comparison giving 1 where the write leaves the mask at 1: (the slice kept, written 1)
_OPS = {("lower", True): "ge", ("lower", False): "lt",
        ("upper", True): "lt", ("upper", False): "ge"}


@dataclass
class LengthMask:
    check: ast.expr
    stmts: list[ast.stmt]
    why: str


def rewrite(node: ast.For, filled: dict[str, int], live_after: set[str],
            ctx: PassContext) -> LengthMask | None:
    """``node`` as one comparison into the mask it writes (see the module docstring), or None
    when it is not such a loop."""
    found = _iteration(node, ctx)
    if found is None or node.orelse or len(node.body) != 1:
        return None
    index, count, element, lengths = found
    write = _write(node.body[0], index, filled)
    if write is None or {index, element} & live_after:
        return None
    mask, dim, entries, side, value, bound = write
    if element is None and _row_of(bound, index) not in (None, mask):
        lengths = _row_of(bound, index)
    elif element is None or not is_name(bound, element) or lengths == mask:
        return None
    names = {k: ctx.namer.new(k) for k in ("rows", "lengths", "d", "pos", "bound")}
    subs = dict(x=ast.Name(mask, ast.Load()), l=ast.Name(lengths, ast.Load()), n=count,
                k=ast.Constant(dim), e=ast.Constant(entries),
                rl=ctx.bind(row_lengths, "row_lengths"))
    if element is None:
        # at least one iteration of ``range``, over rows the lengths have
        runs = "isinstance(n, int) and n > 0 and rl(l) is not None and n <= l.shape[0]"
        prelude = _ROWS + "\n" + _LENGTHS + _PRELUDE
    else:  # at least one item to enumerate: the lengths are the rows'
        runs = "isinstance(l, torch.Tensor) and l.dim() == 1 and n > 0"
        prelude = _ROWS + _PRELUDE.replace("lengths", "l")
    stmts = replace(prelude, loc=node, torch_name=ctx.torch_name, **names, **subs)
    stmts.append(ast.Expr(replace(_COMPARE.format(op=_OPS[side, bool(value)]), loc=node,
                                  torch_name=ctx.torch_name, **names)))
    checks = Checks()
    for condition in (replace(runs, loc=node, torch_name=ctx.torch_name, **subs).values
                      + replace(_CHECKS, loc=node, torch_name=ctx.torch_name, **subs).values):
        checks.add(condition)
    why = (f"`{mask}` filled with {filled[mask]} before the loop, {value} written "
           f"{'past' if side == 'lower' else 'before'} each row's length: one comparison of "
           f"positions with the lengths, written into it")
    return LengthMask(checks.expr(), stmts, why)


def _iteration(node: ast.For, ctx: PassContext) -> tuple | None:
    """(index, count, element or None, lengths' name or None) of ``for i in range(n)`` (``n``
    pure) or ``for i, l in enumerate(L)``; None for other loops."""
    it = node.iter
    if not isinstance(it, ast.Call) or it.keywords or len(it.args) != 1:
        return None
    kind, target = resolve_call(it.func, ctx), node.target
    if kind == "range" and isinstance(target, ast.Name) and is_pure(it.args[0]):
        return target.id, it.args[0], None, None
    if kind == "enumerate" and isinstance(it.args[0], ast.Name) \
            and isinstance(target, ast.Tuple) and len(target.elts) == 2 \
            and all(isinstance(t, ast.Name) for t in target.elts) \
            and target.elts[0].id != target.elts[1].id:
        lengths = it.args[0].id
        return target.elts[0].id, replace("l.shape[0]", l=ast.Name(lengths, ast.Load())), \
            target.elts[1].id, lengths
    return None


def _write(stmt: ast.stmt, index: str, filled: dict[str, int]) -> tuple | None:
    """(mask, ragged dim, entries, "lower"/"upper", value written, the length read) of
    ``X[i, :, ..., a:] = v`` (or ``:b``; or ``X[...].fill_(v)``) on a filled ``X``,
    ``{v, fill} == {0, 1}``; the length read ``a`` without ``int(...)``/``.item()``. None for
    other statements."""
    target, value = _written(stmt)
    mask, entries = _indexed(target, index)
    if mask not in filled or type(value) not in (int, float, bool) or value not in (0, 1) \
            or value == filled[mask] or mask == index or math.copysign(1, value) < 0:
        return None
    cuts = [k for k, e in enumerate(entries) if isinstance(e, ast.Slice)]
    if len(entries) < 2 or not is_name(entries[0], index) or cuts != list(range(1, len(entries))):
        return None
    ragged = [k for k in cuts if entries[k].lower or entries[k].upper or entries[k].step]
    if len(ragged) != 1:
        return None
    cut = entries[ragged[0]]
    if cut.step is not None or (cut.lower is None) == (cut.upper is None):
        return None
    side = "lower" if cut.lower else "upper"
    return mask, ragged[0], len(entries), side, value, _unwrapped(getattr(cut, side))


def _indexed(target: ast.expr | None, index: str) -> tuple[str | None, list[ast.expr]]:
    """(``X``, the entries of its index) of ``X[e, ...]``, and of ``X[i][e, ...]``: the row
    ``X[i]`` at the loop's int index is a view of the tensor ``X`` (the check asks for one),
    written through as ``X[i, e, ...]``; (None, []) for other targets."""
    if not isinstance(target, ast.Subscript):
        return None, []
    entries = target.slice.elts if isinstance(target.slice, ast.Tuple) else [target.slice]
    row = target.value
    if isinstance(row, ast.Subscript) and is_name(row.slice, index):
        row, entries = row.value, [row.slice] + entries
    return (row.id, entries) if isinstance(row, ast.Name) else (None, [])


def _written(stmt: ast.stmt) -> tuple[ast.expr | None, object]:
    """(target, the literal written) of ``t = v`` and of the statement ``t.fill_(v)``."""
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        return stmt.targets[0], literal(stmt.value)
    call = stmt.value if isinstance(stmt, ast.Expr) else None
    if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) \
            and call.func.attr == "fill_" and len(call.args) == 1 and not call.keywords:
        return call.func.value, literal(call.args[0])
    return None, None


def _unwrapped(bound: ast.expr) -> ast.expr:
    """``a`` of ``int(a)`` and ``a.item()``, else ``bound``."""
    if isinstance(bound, ast.Call) and not bound.keywords:
        if is_name(bound.func, "int") and len(bound.args) == 1:
            return bound.args[0]
        if isinstance(bound.func, ast.Attribute) and bound.func.attr == "item" and not bound.args:
            return bound.func.value
    return bound


def _row_of(bound: ast.expr, index: str) -> str | None:
    """``L`` of ``L[i]`` (a name), else None."""
    if isinstance(bound, ast.Subscript) and isinstance(bound.value, ast.Name) \
            and is_name(bound.slice, index):
        return bound.value.id
    return None
