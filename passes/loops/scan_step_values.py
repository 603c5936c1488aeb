"""What a scanned loop's steps read from the step before, and from arrays the body writes.

Part of ``linear_recurrences_to_scans``: three shapes of RL code (GAE as DeepRL_Algorithms
writes it) brought to the recurrences that pass scans.

- **A value carried to the next step from the step alone**: ``p = E`` the last statement that
  mentions ``p``, ``E`` pure and free of everything the body binds (``prev_value = values[i,
  0]``), ``p`` read before it. At step ``t`` those reads see ``E`` of the step before, or ``p``'s
  value before the loop at the first step::

      for i in reversed(range(n)):                  _p_list: every step's E (a loop, vectorized)
          d[i] = r[i] + g * p * m[i] - v[i]    ->   _p_prev = _previous_states(<_p_list>, p, True)
          p = values[i, 0]                          for i in reversed(range(n)):
                                                        d[i] = r[i] + g * _p_prev[i] * m[i] - v[i]
                                                        p = values[i, 0]

  ``p`` a Python ``int`` or ``float`` when the loop starts (checked): its first-step value is
  converted to the steps' dtype, the value the original's arithmetic gives it there.
- **A recurrence through a written row**: ``x[.., t, ..] = X`` where ``X`` reads ``p``, and later
  ``p = x[.., t, .., 0]`` (the row just written, picked at its one element), ``p`` read nowhere
  else and dead after the loop, ``x`` mentioned nowhere else: ``p`` is the row's state,
  ``p = X; x[.., t, ..] = p``. The pick and the state agree in value when the row has one
  element (``x.shape[m:] == (1, ...)``) and ``X`` computes in ``x``'s dtype: ``X`` arithmetic on
  Python numbers and tensors of ``x``'s floating dtype, all checked before the loop.
- **A step's value read from an array the body writes before**: ``x[.., t, ..] = E`` then a
  recurrence reading ``x[.., t, ..]`` (``deltas[i]``). ``t`` bare in the write keeps the steps'
  rows apart, so after a loop doing only the writes each row holds what the step read: the
  writes run first as a loop of their own (vectorized), the step loop reads the array. ``E``
  must read nothing else the body binds.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Callable

from ..ast_tools import PassContext, clone, is_int, is_name, is_pure, replace, unparse, walk
from ..errors import Unsupported
from ..linear_scan import previous_states
from .loop_dataflow import loads, stores, stores_in, write_entries
from .plan import LoopPlan, new_plan

# The operations of a written value whose dtype follows from its operands' alone.
_ARITHMETIC = (ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant, ast.Subscript, ast.Tuple,
               ast.Slice, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.USub, ast.Load)


@dataclass
class Lagged:
    """The loop that computes every step's carried values, as statements behind ``check``."""
    check: ast.expr | None = None
    stmts: list[ast.stmt] = field(default_factory=list)
    prelude: list[ast.stmt] = field(default_factory=list)


def written_bases(stmts: list[ast.stmt]) -> set[str]:
    """The arrays ``stmts`` write through a subscript (``x[t] = ...``)."""
    return {unparse(t.value) for s in stmts if isinstance(s, ast.Assign)
            for t in s.targets if isinstance(t, ast.Subscript)}


def lagged_values(loop: ast.For, index: str, reverse: bool, position: ast.expr,
                  ctx: PassContext, vectorize: Callable, lists: dict) -> tuple[ast.For, Lagged]:
    """``loop`` with the reads of values carried from the step alone replaced by
    ``_p_prev[position]``, and the statements computing ``_p_prev``."""
    found = [(k, s) for k, s in enumerate(loop.body) if _carried_from_step(k, loop.body, index)]
    if not found:
        return loop, Lagged()
    own = {s.targets[0].id: ctx.namer.new(f"{s.targets[0].id}_list") for _, s in found}
    appends = [ast.Expr(replace("lst.append(e)", loc=s, lst=own[s.targets[0].id],
                                e=clone(s.value))) for _, s in found]
    step_loop = ast.copy_location(ast.For(target=clone(loop.target), iter=clone(loop.iter),
                                          body=appends, orelse=[], type_comment=None), loop)
    plan = vectorize(new_plan(ast.fix_missing_locations(step_loop), set(), ctx,
                              own_lists=set(own.values()), **lists), ctx)
    if any(v.host for v in plan.own_list_values.values()):
        raise Unsupported("per-step Python numbers")
    fn = ctx.bind(previous_states, "previous_states")
    stmts, checks, body = list(plan.stmts), [plan.checks.expr()], clone(loop.body)
    for k, s in found:
        p = s.targets[0].id
        prev = ctx.namer.new(f"{p}_prev")
        stmts += replace("prev = f(v, p, r)", loc=s, prev=prev, f=fn, p=p, r=ast.Constant(reverse),
                         v=plan.own_list_values[own[p]].values)
        checks.append(replace("type(p) in (int, float)", p=p))
        read = replace("prev[k]", prev=prev, k=clone(position))
        body[:k] = [ReadsAs(p, read).visit(st) for st in body[:k]]
    loop = clone(loop)
    loop.body = body
    return ast.fix_missing_locations(loop), Lagged(ast.BoolOp(ast.And(), checks), stmts,
                                                   plan.prelude)


def _carried_from_step(k: int, body: list[ast.stmt], index: str) -> bool:
    """``body[k]`` is ``p = E``, the body's last mention of ``p``, read before it; ``E`` pure
    and free of what the body binds."""
    s = body[k]
    if not (isinstance(s, ast.Assign) and len(s.targets) == 1
            and isinstance(s.targets[0], ast.Name)):
        return False
    p, written = s.targets[0].id, written_bases(body)  # `self.v[t] = ...` too
    return p != index and is_pure(s.value) and not loads(s.value) & (stores_in(body) | written) \
        and not any(unparse(n) in written for n in walk(s.value) if isinstance(n, ast.expr)) \
        and any(p in loads(st) for st in body[:k]) \
        and not any(p in loads(st) for st in body[k + 1:]) \
        and not any(p in stores(n) for j, st in enumerate(body) if j != k
                    for n in walk(st) if isinstance(n, ast.stmt))


class ReadsAs(ast.NodeTransformer):
    """Every read of the name ``name`` replaced by a copy of ``by``."""

    def __init__(self, name: str, by: ast.expr):
        self.name, self.by = name, by

    def visit_Name(self, n: ast.Name) -> ast.AST:
        if n.id == self.name and isinstance(n.ctx, ast.Load):
            return ast.copy_location(clone(self.by), n)
        return n


def picked_rows(loop: ast.For, index: str, live_after: set[str],
                ctx: PassContext) -> tuple[ast.For, list[ast.expr]]:
    """``loop`` with each carried pick of a written row made the row's state, and the
    conditions that needs."""
    body, needs = list(loop.body), []
    for k in reversed(range(len(body))):
        found = _pick(k, body, index, live_after)
        if found is None:
            continue
        j, extra = found
        write, p = body[j], body[k].targets[0].id
        x = write.targets[0].value
        dims = len(write_entries(write.targets[0]))
        needs += [replace(f"isinstance(x, torch.Tensor) and x.dtype.is_floating_point and "
                          f"tuple(x.shape[{dims}:]) == {(1,) * extra}", torch_name=ctx.torch_name,
                          x=clone(x)),
                  replace("type(p) in (int, float)", p=p)]
        needs += [replace("type(n) in (int, float) or isinstance(n, torch.Tensor) and "
                          "n.dtype == x.dtype", torch_name=ctx.torch_name, n=n, x=clone(x))
                  for n in sorted(loads(write.value) - {p, index})]
        del body[k]
        body[j:j + 1] = replace("p = v\nt = p", loc=write, p=p, v=write.value,
                                t=write.targets[0])
    if not needs:
        return loop, []
    loop = clone(loop)
    loop.body = body
    return ast.fix_missing_locations(loop), needs


def _pick(k: int, body: list[ast.stmt], index: str, live_after: set[str]
          ) -> tuple[int, int] | None:
    """For ``body[k]`` = ``p = x[e.., 0..]`` picking the one element of the row an earlier
    ``x[e..] = X`` wrote (``index`` bare among ``e``), ``X`` the only reader of ``p`` and plain
    arithmetic: the write's position and the number of picked dims."""
    s = body[k]
    if not (isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
            and isinstance(s.value, ast.Subscript) and is_pure(s.value)):
        return None
    p, base = s.targets[0].id, unparse(s.value.value)
    picked = [unparse(e) for e in write_entries(s.value)]
    bound = stores_in(body)
    for j, w in enumerate(body[:k]):
        if not (isinstance(w, ast.Assign) and len(w.targets) == 1
                and isinstance(w.targets[0], ast.Subscript)
                and unparse(w.targets[0].value) == base):
            continue
        entries = write_entries(w.targets[0])
        rest = write_entries(s.value)[len(entries):]
        mentions = [n for st in body for n in walk(st)
                    if isinstance(n, ast.expr) and unparse(n) == base]
        if picked[:len(entries)] != [unparse(e) for e in entries] or not rest \
                or not all(is_int(e, 0) for e in rest) \
                or [is_name(e, index) for e in entries].count(True) != 1 \
                or len(mentions) != 2 or p in live_after or p not in loads(w.value) \
                or any(p in loads(st) for st in body if st is not w) \
                or any(p in stores(n) for st in body if st is not s
                       for n in walk(st) if isinstance(n, ast.stmt)) \
                or not all(isinstance(n, _ARITHMETIC) for n in walk(w.value)) \
                or (loads(w.value) - {p}) & bound:
            return None
        return j, len(rest)
    return None


def writes_first(steps: list[ast.stmt], reads: list[ast.stmt], loop: ast.For, index: str,
                 ctx: PassContext, vectorize: Callable, lists: dict
                 ) -> tuple[list[ast.stmt], LoopPlan | None]:
    """The step loop's statements without the array writes they and ``reads`` (the appends
    of every step's factors) read, and the plan of a loop doing those writes first (None: no
    such write). The rest of the loop no longer writes them: every mention of such an array
    in the loop must read the row its write wrote (a read of another row would see a later
    step's write)."""
    bound = stores_in(loop.body) | written_bases(loop.body)
    writes = [s for s in steps if written_bases([s])]
    if not writes:
        return steps, None
    for w in writes:
        target, base = w.targets[0], unparse(w.targets[0].value)
        entries = write_entries(target)
        if len(w.targets) != 1 or [is_name(e, index) for e in entries].count(True) != 1 \
                or any(not is_name(e, index) and loads(e) & (bound | {index})
                       for e in entries) \
                or loads(w.value) & bound or not is_pure(target.value) \
                or not _reads_rows(target, [st for st in loop.body + reads
                                            if unparse(st) != unparse(w)]):
            raise Unsupported(f"a step reads `{base}`, which the body writes")
    loop_w = ast.copy_location(ast.For(target=clone(loop.target), iter=clone(loop.iter),
                                       body=clone(writes), orelse=[], type_comment=None), loop)
    plan = vectorize(new_plan(ast.fix_missing_locations(loop_w), set(), ctx, **lists), ctx)
    return [s for s in steps if not any(s is w for w in writes)], plan


def _reads_rows(target: ast.Subscript, stmts: list[ast.stmt]) -> bool:
    """Every mention of ``target``'s array in ``stmts`` reads the row ``target`` writes."""
    base, row = unparse(target.value), unparse(target)
    exprs = [unparse(n) for st in stmts for n in walk(st) if isinstance(n, ast.expr)]
    return exprs.count(base) == exprs.count(row)
