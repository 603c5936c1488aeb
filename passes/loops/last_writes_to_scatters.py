"""Loop rewrite: one write per iteration at slots an index tensor picks, where a later iteration
overwrites an earlier one's slot, becomes one scatter of the iteration numbers (the last writer
of each slot wins) and one write of the winners' values.

Detection matchers (SSD/YOLO/Faster R-CNN ``match``) give every ground truth its best prior
with such a loop; when two truths pick one prior the later one keeps it::

    for j in range(idx.size(0)):       if isinstance(idx.size(0), int) and idx.size(0) > 0 and ...:
        t[idx[j]] = j            ->        'optimize_loss: loop at line 1 vectorized'
                                           _slots = <idx, or idx[0:n]>.reshape(-1).long() % t.shape[0]
                                           _order = torch.arange(n, device=t.device)
                                           _winner = torch.full((t.shape[0],), -1, ...).scatter_reduce(
                                               0, _slots, _order, 'amax')[_slots]
                                           t.index_put_((_slots,), _winner.to(t.dtype))
                                       else:
                                           <the loop>

``t[idx] = v`` with a repeated index keeps an unspecified one of its values. The winner of a
slot is the largest iteration number that picks it (``scatter_reduce`` with ``amax`` over -1 for
no writer); every iteration then writes its slot's winner's value, so the repeats of a slot
write one value and ``index_put_``'s order does not matter. Written values: the loop index
``j`` (the winner itself, in ``t``'s dtype), a number literal (``index_fill_`` at the slots: the
scalar conversion of setitem, overflow errors included, but for float16/bfloat16 ``t``; repeats
write the same number) or ``w[j]`` of a tensor ``w`` (the winner's row, cast to ``t``'s dtype as
setitem casts; the repeats' copies detached, so only the winning iteration passes the gradient
on). The write is in place, as the original's: ``t``'s aliases see it, and the gradient reaches
``w``'s winning rows and ``t``'s entries no iteration overwrote. Taken: ``for j in range(n)``
writing ``t[idx[j]]``, ``for j, k in enumerate(idx)`` writing ``t[k]``, ``for k in idx`` writing
``t[k] = <number>``; names for ``t``, ``idx`` and ``w``, all different, the loop's variables not
read after it.

The run-time check: ``n`` an int (at least one iteration, no more than ``idx`` has rows),
``idx`` a 1-d int64/int32 tensor or one of shape [n, 1] (``idx[j]`` a one-element index) on
``t``'s device, every index in ``[-len(t), len(t))`` (a negative one counts from the end, as
setitem does), ``t`` a real tensor with a dim, no leaf that requires grad (the original raises
its own message at the first write), sharing no storage with ``idx`` or ``w`` (a later
iteration would read an earlier write); for ``j`` written, ``t`` int64/int32/float32/float64
with at most 2 ** 24 iterations (each iteration number converted exactly); for ``w[j]``, at
least ``n`` rows of ``t``'s row shape (of ``t``'s dtype at one-element indices, where
setitem refuses another). Otherwise the loop runs as written, raising as it did (an
out-of-range index's ``IndexError``, a bool index's mask).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

from ..ast_tools import Checks, PassContext, is_name, is_pure, replace
from .batch_values import literal
from .loop_dataflow import resolve_call
from .runtime_checks import conjuncts

_SLOTS = "slots = r.reshape(-1).long() % t.shape[0]"
# the winner of each slot; each iteration then writes its slot's winner's value, so that the
# repeats of a slot write one value (``index_put_`` picks any of them)
_WINNER = """
order = torch.arange(n, device=t.device)
winner = torch.full((t.shape[0],), -1, dtype=torch.int64, device=t.device).scatter_reduce(0, slots, order, 'amax')[slots]
"""
_COLUMN = "reshape((-1,) + (1,) * (t.dim() - 1))"
_WRITES = {
    # (the column's reshape costs as much as the write: only for rows)
    "index": "t.index_put_((slots,), winner.to(t.dtype) if t.dim() == 1 else "
             "winner.to(t.dtype)." + _COLUMN + ")",
    # only the winning iteration passes the gradient on: the repeats' copies are detached
    "rows": "picked = w[winner]\n"
            "t.index_put_((slots,), torch.where((winner == order)." + _COLUMN + ", picked, "
            "picked.detach()).to(t.dtype))"}
_FILL = "t.index_fill_(0, slots, c)"
_CHECKS = ("isinstance(t, torch.Tensor) and isinstance(idx, torch.Tensor) "
           "and idx.dtype in (torch.int64, torch.int32) and idx.device == t.device "
           "and (idx.dim() == 1 or (idx.dim() == 2 and idx.shape[1] == 1)) "
           "and t.dim() >= 1 and not t.is_complex() and not (t.is_leaf and t.requires_grad) "
           "and idx.untyped_storage().data_ptr() != t.untyped_storage().data_ptr() "
           "and -t.shape[0] <= int(r.min()) and int(r.max()) < t.shape[0]")
_INDEX_CHECKS = ("t.dtype in (torch.int64, torch.int32, torch.float32, torch.float64) "
                 "and n <= 16777216")
# setitem writes a number out of float16's range as inf, ``index_fill_`` raises
_NUMBER_CHECKS = "t.dtype not in (torch.float16, torch.bfloat16)"
# at a one-element index setitem is ``index_put_``, which refuses another dtype (a 0-d index
# selects the row and copies, casting)
_ROW_CHECKS = ("isinstance(w, torch.Tensor) and w.device == t.device and not w.is_complex() "
               "and w.shape[0] >= n and w.shape[1:] == t.shape[1:] "
               "and (idx.dim() == 1 or w.dtype == t.dtype) "
               "and w.untyped_storage().data_ptr() != t.untyped_storage().data_ptr()")

# iterating a tensor: at least one item (a 0-d tensor, which raises, fails the dim check)
_RUNS_OVER = "isinstance(idx, torch.Tensor) and idx.dim() >= 1 and idx.shape[0] > 0"


@dataclass
class LastWrites:
    check: ast.expr
    stmts: list[ast.stmt]
    why: str


@dataclass
class _Loop:
    count: ast.expr          # the trip count ``n``
    runs: str                # the check that ``n`` is an int and the loop runs at least once
    index: str | None        # the loop index ``j`` (None for ``for k in idx``)
    element: str | None      # ``k`` of ``enumerate(idx)`` or of ``for k in idx``
    idx: str                 # the index tensor


def rewrite(node: ast.For, live_after: set[str], ctx: PassContext) -> LastWrites | None:
    """``node`` as one scatter and one write (see the module docstring), or None when it is not
    such a loop."""
    loop = _iteration(node, ctx)
    if loop is None or node.orelse or len(node.body) != 1:
        return None
    found = _write(node.body[0], loop)
    if found is None or {loop.index, loop.element} & live_after:
        return None
    t, kind, value = found
    made = {"number": ("slots",), "index": ("slots", "order", "winner"),
            "rows": ("slots", "order", "winner", "picked")}[kind]
    names = {k: ctx.namer.new(k) for k in made}
    idx = ast.Name(loop.idx, ast.Load())
    # the rows of ``idx`` the loop reads: all of them when it iterates ``idx`` (a slice costs
    # as much as a small op: only when it reads fewer)
    rows = idx if loop.element is not None else \
        replace("idx if n == idx.shape[0] else idx[0:n]", idx=idx, n=loop.count)
    subs = dict(t=ast.Name(t, ast.Load()), idx=idx, n=loop.count, r=rows, w=value, c=value)
    template = _SLOTS + ("\n" + _FILL if kind == "number" else _WINNER + _WRITES[kind])
    stmts = replace(template, loc=node, torch_name=ctx.torch_name, **names, **subs)
    checks = Checks()
    extra = {"index": _INDEX_CHECKS, "rows": _ROW_CHECKS, "number": _NUMBER_CHECKS}[kind]
    for source in (loop.runs, _CHECKS, extra):
        for condition in conjuncts(replace(source, loc=node, torch_name=ctx.torch_name, **subs)):
            checks.add(condition)
    shown = {"index": "the iteration number", "number": "a number",
             "rows": f"rows of `{value.id if kind == 'rows' else ''}`"}[kind]
    why = (f"`{t}` written at the slots `{loop.idx}` picks, the last iteration to pick a slot "
           f"winning: one scatter of the iteration numbers, {shown} written once per slot hit")
    return LastWrites(checks.expr(), stmts, why)


def _iteration(node: ast.For, ctx: PassContext) -> _Loop | None:
    """The loop's ``range(n)`` (``n`` pure) or ``enumerate(idx)`` or ``idx`` (a name)."""
    it, target = node.iter, node.target
    if isinstance(it, ast.Name) and isinstance(target, ast.Name) and target.id != it.id:
        return _Loop(replace("l.shape[0]", l=ast.Name(it.id, ast.Load())), _RUNS_OVER,
                     None, target.id, it.id)
    if not isinstance(it, ast.Call) or it.keywords or len(it.args) != 1:
        return None
    kind = resolve_call(it.func, ctx)
    if kind == "range" and isinstance(target, ast.Name) and is_pure(it.args[0]):
        return _Loop(it.args[0], "isinstance(n, int) and n > 0 and isinstance(idx, torch.Tensor) "
                     "and idx.dim() >= 1 and n <= idx.shape[0]", target.id, None, "")
    if kind == "enumerate" and isinstance(it.args[0], ast.Name) \
            and isinstance(target, ast.Tuple) and len(target.elts) == 2 \
            and all(isinstance(e, ast.Name) for e in target.elts) \
            and len({target.elts[0].id, target.elts[1].id, it.args[0].id}) == 3:
        idx = it.args[0].id
        return _Loop(replace("l.shape[0]", l=ast.Name(idx, ast.Load())), _RUNS_OVER,
                     target.elts[0].id, target.elts[1].id, idx)
    return None


def _write(stmt: ast.stmt, loop: _Loop) -> tuple[str, str, ast.expr] | None:
    """(``t``, what is written: "index"/"number"/"rows", the value) of the loop's one write
    ``t[idx[j]] = v`` (``t[k] = v`` over the items ``k``); the index tensor found for ``range``
    is set on ``loop``. None for other statements."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Subscript)
            and isinstance(stmt.targets[0].value, ast.Name)):
        return None
    t, at, value = stmt.targets[0].value.id, stmt.targets[0].slice, stmt.value
    if loop.element is not None:
        if not is_name(at, loop.element):
            return None
    elif _row_of(at, loop.index) is None:
        return None
    else:
        loop.idx = _row_of(at, loop.index)
    if t in {loop.idx, loop.index, loop.element}:
        return None
    if type(literal(value)) in (int, float, bool):
        return t, "number", value
    if loop.index is not None and is_name(value, loop.index):
        return t, "index", value
    w = _row_of(value, loop.index) if loop.index is not None else None
    if w is None or w in {t, loop.element}:
        return None
    return t, "rows", ast.Name(w, ast.Load())


def _row_of(node: ast.expr, index: str) -> str | None:
    """``x`` of ``x[j]`` (a name, ``j`` the loop index), else None."""
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
            and is_name(node.slice, index) and node.value.id != index:
        return node.value.id
    return None
