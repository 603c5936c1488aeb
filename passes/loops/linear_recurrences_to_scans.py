"""Linear recurrences become parallel scans.

A loop over ``range(...)`` (or ``reversed(range(...))``) that the vectorizer keeps because a
value is carried from one iteration to the next, where that value follows a first-order linear
recurrence ``s = a * s + b`` (``a`` and ``b`` free of ``s``: constants, values the loop does not
change, or per-step values such as ``x[:, t]``) -- EMAs, discounted returns
``G = r[:, t] + gamma * G``, GAE -- is split in three: a loop computing every step's ``a`` and
``b`` (vectorized), one parallel scan giving every step's state (``passes.linear_scan``, bound
into the generated code), and the loop as written with the recurrence replaced by a read of its
step's state (vectorized)::

    for t in range(T):                            if <the step loop's check>:
        s = alpha * s + (1 - alpha) * x[:, t]         'optimize_loss: loop at line 1 vectorized'
        loss = loss + F.mse_loss(s, y[:, t])  ->      <every step's b, vectorized: _s_b>
                                                      _s_all = _linear_scan(alpha, _s_b, s, ...)
                                                      if <the rest's check>:
                                                          <the rest vectorized, reading _s_all[t]>
                                                      else:
                                                          for t in range(T):
                                                              _s_t = _s_all[t]
                                                              loss = loss + F.mse_loss(_s_t, y[:, t])
                                                      s = _s_all[-1]
                                                  else:
                                                      <the loop as written>

Which statements qualify: ``s = <expr>`` at the top of the body whose value is ``a * s + b``
after distributing ``+``, ``-``, unary ``-``, ``*`` and ``/`` by values free of ``s`` (chained
targets such as ``adv[t] = s = ...`` too); ``s`` bound nowhere else in the body and read by no
statement before it. ``a`` and ``b`` may read the loop index, values the loop does not bind, and
values the body binds before the recurrence from those (those statements are copied into the
step loop; the third loop computes them again). A part that reads neither is evaluated once
when it is pure (its value is the same in every step). Everything else is the vectorizer's to
judge: the step loop and the rest must both vectorize, or the loop is kept (a scan followed by
a Python loop would gain nothing). Per-step Python numbers (``.item()`` values) keep the loop:
the original computes in double precision on the host.

Values: the scan sums in another order than the loop, so states agree within the dtype's
rounding; dtype and shape are the original's (see ``linear_scan``). Exceptions: the step loop
and the rest are vectorized code behind their checks; an error of the data (a bad index) is
raised before the rest runs, as the vectorizer's loops do.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Callable

from ..ast_tools import PassContext, clone, is_int, is_name, is_pure, replace, walk
from ..errors import Unsupported
from ..linear_scan import linear_scan
from . import iteration, loop_dataflow
from .loop_dataflow import loads, resolve_call, stores, stores_in
from .plan import Iteration, LoopPlan, new_plan

# What ends an iteration or the loop early: the scan covers every step.
_CONTROL = (ast.Break, ast.Continue, ast.Return, ast.Yield, ast.YieldFrom, ast.Await)


@dataclass
class Scan:
    """A loop split around its recurrences: the statements of the vectorized branch, the
    check that guards them, the plan of the rest of the body (folds after the loop read it),
    and the names of the scanned states."""
    check: ast.expr
    stmts: list[ast.stmt]
    rest: LoopPlan
    states: list[str]


@dataclass
class _Recurrence:
    at: int                      # position in the body
    name: str
    a: ast.expr
    b: ast.expr | None           # None: no constant term


def scan(node: ast.For, live_after: set[str], ctx: PassContext,
         vectorize: Callable[[LoopPlan, PassContext], LoopPlan], **known) -> Scan | None:
    """``node`` with its linear recurrences scanned, or None (names taken given back)."""
    point = ctx.namer.checkpoint()
    try:
        return _scan(node, live_after, ctx, vectorize, known)
    except Unsupported:
        ctx.namer.rollback(point)
        return None


def _scan(node: ast.For, live_after: set[str], ctx: PassContext, vectorize, known) -> Scan:
    if node.orelse or any(isinstance(n, _CONTROL) for s in node.body for n in walk(s)):
        raise Unsupported("control flow")
    loop, reverse = _in_order(node, ctx)
    loop = _merge_rebinds(loop)
    it = iteration.stage(LoopPlan(loop, set(), torch_name=ctx.torch_name), ctx).iteration
    if it.elements or not it.index_is_user:
        raise Unsupported("not a range")
    found = _recurrences(loop.body, it.index)
    if not found:
        raise Unsupported("no linear recurrence")
    bound = stores_in(loop.body)
    preludes = {}
    for rec in found:  # a recurrence reading another carried value is no scan of its own
        try:
            preludes[rec.name] = _prelude(loop.body[:rec.at], rec, it.index, bound)
        except Unsupported:
            continue
    found = [rec for rec in found if rec.name in preludes]
    steps, per_step, appends, values = [], {}, [], {}
    for rec in found:
        prelude = preludes[rec.name]
        steps += [s for s in prelude if not any(s is t for t in steps)]
        defined = stores_in(prelude) | {it.index}
        for part, expr in (("a", rec.a), ("b", rec.b)):
            if expr is None:
                continue
            if loads(expr) & defined or not is_pure(expr):
                per_step[(rec.name, part)] = ctx.namer.new(f"{rec.name}_{part}")
                appends.append(ast.Expr(replace("lst.append(v)", loc=node,
                                                lst=per_step[(rec.name, part)], v=clone(expr))))
    if not per_step:
        raise Unsupported("nothing varies with the step")
    step_loop = ast.copy_location(ast.For(target=clone(loop.target), iter=clone(loop.iter),
                                          body=clone(steps) + appends, orelse=[],
                                          type_comment=None), node)
    first = vectorize(new_plan(step_loop, set(), ctx, own_lists=set(per_step.values())), ctx)
    if any(v.host for v in first.own_list_values.values()):
        raise Unsupported("per-step Python numbers")
    stmts = list(first.stmts)
    for rec in found:
        stmts += _scan_stmt(rec, per_step, first, it, reverse, node, ctx, values)
    rest_loop, renamed = _rest_loop(loop, found, it, values, steps, live_after, ctx)
    prepended = _front_inserts_to_appends(rest_loop, known) if reverse else set()
    rest = vectorize(new_plan(rest_loop, live_after - set(renamed), ctx, **known), ctx)
    if reverse and any((e.kind, e.name in prepended) not in (("acc", False), ("write", False),
                                                             ("append", True))
                       or e.name in rest.scattered for e in rest.facts.effects.values()):
        raise Unsupported("the rest of a reversed loop depends on the order of the steps")
    stmts.append(ast.copy_location(ast.If(test=rest.checks.expr(), body=rest.stmts,
                                          orelse=[rest_loop]), node))
    if reverse and it.index in live_after:  # the rest ran forwards: the original ends at start
        stmts += replace("t = a", loc=node, t=it.index, a=clone(it.start))
    for rec in found:
        if rec.name in live_after:
            stmts += replace(f"s = all_[{0 if reverse else -1}]", loc=node, s=rec.name,
                             all_=values[rec.name])
    return Scan(first.checks.expr(), stmts, rest, [rec.name for rec in found])


def _in_order(node: ast.For, ctx: PassContext) -> tuple[ast.For, bool]:
    """``node``, and whether it iterates ``reversed(range(...))``: then ``node`` with
    ``range(...)`` (its steps are computed in increasing order, the scan runs backwards)."""
    it = node.iter
    if not (isinstance(it, ast.Call) and resolve_call(it.func, ctx) == "reversed"
            and len(it.args) == 1 and not it.keywords and isinstance(it.args[0], ast.Call)
            and resolve_call(it.args[0].func, ctx) == "range" and len(it.args[0].args) <= 2):
        return node, False
    loop = clone(node)
    loop.iter = clone(it.args[0])
    return loop, True


def _merge_rebinds(loop: ast.For) -> ast.For:
    """``s = e1`` directly followed by ``s = e2`` where ``e2`` reads ``s`` once, as the operand
    it evaluates first (``gae = gae * m[t + 1]``), is the one statement ``s = e2[s := e1]``:
    the same operations in the same order, so a recurrence written in two steps is found."""
    body, merged = list(loop.body), False
    k = 0
    while k + 1 < len(body):
        first, second = body[k], body[k + 1]
        name = _rebound(first, second)
        if name is None:
            k += 1
            continue
        value = _substitute_first(clone(second.value), name, first.value)
        body[k:k + 2] = [ast.copy_location(ast.Assign(targets=[clone(first.targets[0])],
                                                      value=value, type_comment=None), first)]
        merged = True
    if not merged:
        return loop
    loop = clone(loop)
    loop.body = body
    return loop


def _rebound(first: ast.stmt, second: ast.stmt) -> str | None:
    """The name both simple assignments bind, when the second reads it once, first of all."""
    if not all(isinstance(s, ast.Assign) and len(s.targets) == 1
               and isinstance(s.targets[0], ast.Name) for s in (first, second)):
        return None
    name = first.targets[0].id
    reads = [n for n in walk(second.value) if is_name(n, name)]
    if second.targets[0].id != name or len(reads) != 1:
        return None
    leftmost = second.value
    while isinstance(leftmost, ast.BinOp):
        leftmost = leftmost.left
    return name if leftmost is reads[0] else None


def _substitute_first(e: ast.expr, name: str, value: ast.expr) -> ast.expr:
    """``e`` with its leftmost operand (the name ``name``) replaced by ``value``."""
    if not isinstance(e, ast.BinOp):
        return clone(value)
    e.left = _substitute_first(e.left, name, value)
    return e


def _recurrences(body: list[ast.stmt], index: str) -> list[_Recurrence]:
    """The top-level ``s = a * s + b`` statements whose ``s`` nothing else binds or reads
    before them."""
    found = []
    for at, s in enumerate(body):
        names = [t.id for t in getattr(s, "targets", []) if isinstance(t, ast.Name)]
        if not isinstance(s, ast.Assign) or len(names) != 1 or names[0] == index:
            continue
        name = names[0]
        parts = _linear(s.value, name)
        if parts is None or parts[0] is None or is_int(parts[0], 1):
            continue  # not linear, or a sum (the vectorizer's accumulators)
        if any(name in loads(t) for t in s.targets):  # `x[s] = s = ...`
            continue
        if any(name in stores(n) for k, st in enumerate(body) if k != at
               for n in walk(st) if isinstance(n, ast.stmt)):
            continue
        if any(name in loads(st) for st in body[:at]):
            continue
        found.append(_Recurrence(at, name, *parts))
    return found


def _linear(e: ast.expr, s: str) -> tuple[ast.expr | None, ast.expr | None] | None:
    """``(a, b)`` with ``e == a * s + b`` (None: a zero part), or None when ``e`` is not
    linear in ``s``."""
    if is_name(e, s):
        return ast.Constant(1), None
    if s not in loads(e):
        return None, e
    if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.USub):
        inner = _linear(e.operand, s)
        return None if inner is None else tuple(_op("-", None, p) for p in inner)
    if not isinstance(e, ast.BinOp):
        return None
    left, right = _linear(e.left, s), _linear(e.right, s)
    if left is None or right is None:
        return None
    if isinstance(e.op, (ast.Add, ast.Sub)):
        sign = "+" if isinstance(e.op, ast.Add) else "-"
        return _op(sign, left[0], right[0]), _op(sign, left[1], right[1])
    if isinstance(e.op, ast.Mult) and left[0] is None:  # c * (a s + b)
        return _op("*", e.left, right[0]), _op("*", e.left, right[1])
    if isinstance(e.op, (ast.Mult, ast.Div)) and right[0] is None:  # (a s + b) * c, / c
        sign = "*" if isinstance(e.op, ast.Mult) else "/"
        return _op(sign, left[0], e.right), _op(sign, left[1], e.right)
    return None


def _op(sign: str, x: ast.expr | None, y: ast.expr | None) -> ast.expr | None:
    """``x <sign> y`` with None as the zero of ``+``/``-`` and of ``*``/``/``'s left side,
    and ``1 * y`` as ``y``."""
    if sign in "+-" and y is None:
        return x
    if sign == "-" and x is None:
        return replace("-y", y=clone(y))
    if sign == "+" and x is None:
        return y
    if x is None or (sign in "*/" and y is None):
        return None
    if sign == "*" and is_int(x, 1):
        return y
    if sign in "*/" and is_int(y, 1):
        return x
    return replace(f"x {sign} y", x=clone(x), y=clone(y))


def _prelude(before: list[ast.stmt], rec: _Recurrence, index: str,
             bound: set[str]) -> list[ast.stmt]:
    """The statements before the recurrence that its ``a`` and ``b`` need (in order); every
    name they read that the body binds must be bound by them first (else it is carried)."""
    needed = (loads(rec.a) | (loads(rec.b) if rec.b is not None else set())) & bound
    picked = []
    for s in reversed(before):
        if stores_in([s]) & needed:
            picked.insert(0, s)
            needed |= (loads(s) & bound) - stores(s)
    carried: dict[str, ast.stmt] = {}
    tail = [ast.Expr(rec.a)] + ([ast.Expr(rec.b)] if rec.b is not None else [])
    loop_dataflow.exposed_reads(picked + tail, {index}, bound, carried)
    if carried:
        raise Unsupported(f"`{next(iter(carried))}` is carried")
    return picked


def _scan_stmt(rec: _Recurrence, per_step: dict, first: LoopPlan, it: Iteration, reverse: bool,
               node: ast.For, ctx: PassContext, values: dict[str, str]) -> list[ast.stmt]:
    """``_s_all = _linear_scan(a, b, s, a_steps, b_steps, trips, reverse)``."""
    fn = ctx.bind(linear_scan, "linear_scan")
    parts = {}
    for part, expr in (("a", rec.a), ("b", rec.b)):
        lst = per_step.get((rec.name, part))
        parts[part] = first.own_list_values[lst].values if lst else \
            clone(expr) if expr is not None else ast.Constant(0)
        parts[part + "_steps"] = ast.Constant(lst is not None)
    values[rec.name] = ctx.namer.new(f"{rec.name}_all")
    return replace("all_ = f(a, b, s, a_steps, b_steps, n, r)", loc=node, all_=values[rec.name],
                   f=fn, s=rec.name, n=it.trips(first), r=ast.Constant(reverse), **parts)


def _rest_loop(loop: ast.For, found: list[_Recurrence], it: Iteration, values: dict[str, str],
               steps: list[ast.stmt], live_after: set[str],
               ctx: PassContext) -> tuple[ast.For, dict[str, str]]:
    """The loop with each recurrence replaced by ``_s_t = _s_all[k]`` (``k``: the step's
    position), later reads of ``s`` reading ``_s_t``, and without the statements copied into
    the step loop that nothing reads any more (the step loop computes them: their errors are
    raised there)."""
    position = _position(it)
    renamed = {rec.name: ctx.namer.new(f"{rec.name}_t") for rec in found}
    body = clone(loop.body)
    for rec in reversed(found):  # positions after rec.at move when a chain is split
        s = body[rec.at]
        read = replace("s_t = a[k]", loc=s, s_t=renamed[rec.name], a=values[rec.name],
                       k=clone(position))
        # `out[t] = s = ...`: the other targets are stored from `_s_t` (the same value)
        chained = [ast.copy_location(ast.Assign(targets=[clone(t)], value=ast.Name(
            renamed[rec.name], ast.Load()), type_comment=None), s)
            for t in s.targets if not is_name(t, rec.name)]
        body[rec.at:rec.at + 1] = read + chained
    for s in body:
        for n in walk(s):
            if isinstance(n, ast.Name) and n.id in renamed and isinstance(n.ctx, ast.Load):
                n.id = renamed[n.id]
    copied = {id(s) for s in steps}
    for k in reversed(range(min(found[0].at, len(body)))):  # before the first recurrence
        if id(loop.body[k]) in copied and isinstance(body[k], ast.Assign) and not (
                stores(body[k]) & (live_after | set().union(*(
                    loads(s) for j, s in enumerate(body) if j != k)))):
            del body[k]
    rest = ast.copy_location(ast.For(target=clone(loop.target), iter=clone(loop.iter), body=body,
                                     orelse=[], type_comment=None), loop)
    return ast.fix_missing_locations(rest), renamed


def _front_inserts_to_appends(rest: ast.For, known: dict) -> set[str]:
    """In the rest of a reversed loop, run forwards, ``lst.insert(0, v)`` is ``lst.append(v)``
    when ``lst`` is empty when the loop starts (``lst = []`` right before it) and no other
    statement of the body touches it: the original's list ends in increasing step order.
    Returns the lists converted."""
    inserts = {s.value.func.value.id: s for s in rest.body if isinstance(s, ast.Expr)
               and isinstance(s.value, ast.Call) and isinstance(s.value.func, ast.Attribute)
               and s.value.func.attr == "insert" and isinstance(s.value.func.value, ast.Name)
               and len(s.value.args) == 2 and is_int(s.value.args[0], 0)
               and not s.value.keywords}
    done = set()
    for name, stmt in inserts.items():
        others = [t for t in rest.body if t is not stmt]
        if name in known.get("buildable_lists", set()) and not any(
                name in loads(t) | stores_in([t]) for t in others) \
                and name not in loads(stmt.value.args[1]):
            stmt.value = replace("lst.append(v)", loc=stmt, lst=name, v=stmt.value.args[1])
            done.add(name)
    return done


def _position(it: Iteration) -> ast.expr:
    """The position of the step with index ``it.index`` among the steps in increasing order."""
    if is_int(it.step, 1):
        return ast.Name(it.index, ast.Load()) if is_int(it.start, 0) else \
            replace("t - a", t=it.index, a=clone(it.start))
    return replace("(t - a) // s", t=it.index, a=clone(it.start), s=clone(it.step))
