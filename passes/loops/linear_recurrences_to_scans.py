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
a Python loop would gain nothing). A running sum ``s = s + b`` (``a`` is 1) is a recurrence
only when a later statement of the body reads it (every step's prefix sum, scanned by
``torch.cumsum``: DeepSurv's Cox partial likelihood over a risk set sorted by time, ``risk =
risk + torch.exp(h[i])`` then ``h[i] - torch.log(risk)``); one nothing else reads is the
vectorizer's accumulator. ``risk += e`` changes a tensor in place that autograd may have saved
(``torch.log(risk)`` saves it: the loop's backward raises), so it is no recurrence: the loop is
kept. Per-step Python numbers (``.item()`` values) keep the loop:
the original computes in double precision on the host.

An episode end written as a reset right before the recurrence, ``if done: s = 0`` (no
``else``, the constant 0), is the step's reset (``_resets``): the step loop computes every
step's ``done`` too, and the scan starts again from 0 at the steps where it is true, selecting
rather than multiplying by a zero factor, so an infinite or NaN state before the reset is
dropped as the loop drops it (``linear_scan``'s ``resets``). Per-step ``done`` of several
elements raise the loop's error (``bool`` of the tensor).

RL code writes the same recurrences in three more shapes, each brought to the one above:

- over a sequence walked backwards, ``for r in reversed(rewards)`` / ``rewards.flip(0)``: the
  loop over ``reversed(range(len(rewards)))`` reading ``r = rewards[_k]`` (``_in_order``);
- kept in a tensor, ``returns[t] = returns[t + 1] * gamma * masks[t + 1] + rewards[t]`` (or
  ``y[t] = a * y[t - 1] + b`` forwards): a named state written into the tensor each step, from
  the original's first read (``_written_states``); the rest writes the states back in one slice
  assignment, into the same tensor, through an attribute too (``self.returns``, see
  ``attribute_writes_to_names``);
- filling a list in a reversed loop, by ``lst.insert(0, G)`` or ``lst.append(G)``: the rest
  runs forwards, so it fills a fresh list spliced into ``lst`` in the original's order after
  it (``_appends_in_step_order``): a list returned or handed on whole gets the original's
  items, one tensor per step.

Values: the scan sums in another order than the loop, so states agree within the dtype's
rounding; dtype and shape are the original's (see ``linear_scan``). Exceptions: the step loop
and the rest are vectorized code behind their checks; an error of the data (a bad index) is
raised before the rest runs, as the vectorizer's loops do.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Callable

from ..ast_tools import PassContext, clone, is_int, is_name, is_pure, replace, unparse, walk
from ..errors import Unsupported
from ..linear_scan import computed_alike, linear_scan
from . import iteration, loop_dataflow, scan_python_numbers, scan_step_values
from .loop_dataflow import loads, resolve_call, stores, stores_in
from .plan import Iteration, LoopPlan, new_plan
from .runtime_checks import proven_tensors

# What the vectorizer knows of the function's lists: the step loop stacks the lists it reads.
_LIST_FACTS = ("list_names", "host_containers", "iterators")

# The dtypes a tensor written with states may have: the loop rounds every step's state to the
# tensor's dtype, the scan once; the two agree within float32/float64 rounding, not within a
# half-precision one (a long EMA stagnates in bfloat16) nor an integer tensor's truncation.
_SCANNED_INTO = "x.dtype in (torch.float32, torch.float64)"

# What ends an iteration or the loop early: the scan covers every step.
_CONTROL = (ast.Break, ast.Continue, ast.Return, ast.Yield, ast.YieldFrom, ast.Await)


@dataclass
class Scan:
    """A loop split around its recurrences: the statements of the vectorized branch, the
    check that guards them, the plan of the rest of the body (folds after the loop read it),
    and the scanned states as the user wrote them (a name, or ``x[t]`` for a state kept in a
    tensor)."""
    check: ast.expr
    stmts: list[ast.stmt]
    rest: LoopPlan
    states: list[str]
    numbers: bool = False  # also scans lists of Python numbers (scan_python_numbers)
    # the user's list of each stacked name the check reads (the step loop's and the rest's)
    stacked: dict[str, str] = field(default_factory=dict)
    # the states whose factors the scan multiplies out or resets, behind ``computed_alike``
    alike: list[str] = field(default_factory=list)
    # the states that are running sums read in their step (one cumsum, not the scan's rounds)
    sums: list[str] = field(default_factory=list)


@dataclass
class _Recurrence:
    at: int                      # position in the body
    name: str
    a: ast.expr
    b: ast.expr | None           # None: no constant term
    reset: ast.expr | None = None  # `if c: s = 0` before it: the name bound to `c`


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
    loop, reverse, needs = _in_order(node, ctx)
    loop = _merge_rebinds(loop)
    it = iteration.stage(LoopPlan(loop, set(), torch_name=ctx.torch_name), ctx).iteration
    if it.elements or not it.index_is_user:
        raise Unsupported("not a range")
    lists = {k: v for k, v in known.items() if k in _LIST_FACTS}
    loop, lagged = scan_step_values.lagged_values(loop, it.index, reverse, _position(it), ctx,
                                                  vectorize, lists)
    loop, picks = scan_step_values.picked_rows(loop, it.index, live_after, ctx)
    needs += picks
    loop, initial, shown, written = _written_states(loop, it, reverse, ctx)
    needs += [replace(check, torch_name=ctx.torch_name, x=x) for x in written
              for check in ("isinstance(x, torch.Tensor)", _SCANNED_INTO)]
    loop, resets = _resets(loop, ctx)
    found = _recurrences(loop.body, it.index, resets)
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
    needs, alike = _alike_checks(needs, found, preludes, loop, node, written, shown, ctx)
    steps, per_step, appends = _per_step_values(found, preludes, it, node, ctx)
    values = {}
    if not per_step:
        raise Unsupported("nothing varies with the step")
    step_body, writes = scan_step_values.writes_first(steps, appends, loop, it.index, ctx,
                                                      vectorize, lists)
    step_loop = ast.copy_location(ast.For(target=clone(loop.target), iter=clone(loop.iter),
                                          body=clone(step_body) + appends, orelse=[],
                                          type_comment=None), node)
    first = vectorize(new_plan(step_loop, set(), ctx, own_lists=set(per_step.values()), **lists),
                      ctx)
    if any(v.host for v in first.own_list_values.values()):
        raise Unsupported("per-step Python numbers")
    firsts = [writes, first] if writes else [first]
    stmts = [s for f in firsts for s in f.stmts] + initial  # the loop runs at least once
    for rec in found:
        stmts += _scan_stmt(rec, per_step, first, it, reverse, node, ctx, values)
    rest_loop, renamed = _rest_loop(loop, found, it, values, steps, live_after, ctx)
    order = _appends_in_step_order(rest_loop, known, ctx) if reverse else _Reordered()
    rest = vectorize(new_plan(rest_loop, live_after - set(renamed) | set(order.user_names),
                              ctx, **known), ctx)
    rest.user_names.update(order.user_names)
    if reverse and any((e.kind, e.name in order.appended) not in (
            ("acc", False), ("write", False), ("append", True))
                       or e.name in rest.scattered for e in rest.facts.effects.values()):
        raise Unsupported("the rest of a reversed loop depends on the order of the steps")
    ends = _ends(found, it, reverse, values, live_after, node)
    stmts += order.before + [ast.copy_location(ast.If(test=rest.checks.expr(), body=rest.stmts,
                                                      orelse=[rest_loop]), node)] + order.after
    stmts += ends
    # lists stacked before the loop's guard
    rest.prelude = lagged.prelude + [s for f in firsts for s in f.prelude] + rest.prelude
    checks = [f.checks.expr() for f in firsts]
    step_check = checks[0] if len(checks) == 1 else ast.BoolOp(ast.And(), checks)
    numbers = None if lagged.stmts or writes or initial or picks else scan_python_numbers.branch(
        {rec.name: _parts(rec) for rec in found}, set(per_step), loop.body, it, reverse, values,
        ctx, node)
    check = _check(step_check, order.checks + needs, ctx)
    if numbers is not None:  # or on Python numbers, the rest as written
        stmts = [ast.copy_location(ast.If(test=clone(step_check), body=stmts, orelse=numbers[1]
                                          + clone(order.before + [rest_loop] + order.after + ends)),
                                   node)]
        check = _or_numbers(step_check, numbers[0], order.checks + needs)
    if lagged.check is not None:  # the steps' checks read the carried values' steps
        stmts = lagged.stmts + [ast.copy_location(ast.If(test=check, body=stmts,
                                                         orelse=[clone(node)]), node)]
        check = lagged.check
    stacked = {k: v for f in firsts + [rest] for k, v in f.stacked.items()}
    return Scan(check, stmts, rest, [shown.get(rec.name, rec.name) for rec in found],
                numbers is not None, stacked, alike,
                [shown.get(r.name, r.name) for r in found if is_int(r.a, 1) and r.reset is None])


def _ends(found: list[_Recurrence], it: Iteration, reverse: bool, values: dict[str, str],
          live_after: set[str], node: ast.For) -> list[ast.stmt]:
    """What the loop leaves bound after the rest: its index, the states' last values."""
    stmts = []
    if reverse and it.index in live_after:  # the rest ran forwards: the original ends at start
        stmts += replace("t = a", loc=node, t=it.index, a=clone(it.start))
    for rec in found:
        if rec.name in live_after:
            stmts += replace(f"s = all_[{0 if reverse else -1}]", loc=node, s=rec.name,
                             all_=values[rec.name])
    return stmts


def _per_step_values(found: list[_Recurrence], preludes: dict[str, list[ast.stmt]],
                     it: Iteration, node: ast.For, ctx: PassContext) -> tuple[list, dict, list]:
    """The step loop's statements: the preludes the recurrences need, and an append of every
    ``a`` and ``b`` that varies with the step to a list of its own (by ``(state, part)``)."""
    steps, per_step, appends = [], {}, []
    for rec in found:
        prelude = preludes[rec.name]
        steps += [s for s in prelude if not any(s is t for t in steps)]
        defined = stores_in(prelude) | {it.index}
        for part, expr in _parts(rec).items():
            if loads(expr) & defined or not is_pure(expr):
                per_step[(rec.name, part)] = ctx.namer.new(f"{rec.name}_{part}")
                appends.append(ast.Expr(replace("lst.append(v)", loc=node,
                                                lst=per_step[(rec.name, part)], v=clone(expr))))
    return steps, per_step, appends


def _check(check: ast.expr, needs: list[ast.expr], ctx: PassContext) -> ast.expr:
    """The step loop's ``check`` and the conditions the rewritten shapes need (a list spliced
    into, a sequence walked backwards, a tensor written): for other objects, whose methods may
    act otherwise, the loop runs as written. Those the check already proves are left out."""
    proven = {unparse(replace("isinstance(x, torch.Tensor)", torch_name=ctx.torch_name, x=x))
              for x in proven_tensors(check)}
    extra = [c for c in needs if unparse(c) not in proven]
    return ast.BoolOp(ast.And(), [check] + extra) if extra else check


def _or_numbers(step_check: ast.expr, numbers: list[ast.expr],
                needs: list[ast.expr]) -> ast.expr:
    """``needs and (step_check or numbers)``: the needs first, they make sure of the types the
    numbers' checks read (``len`` of the sequences), each condition once."""
    texts = {unparse(c) for c in needs}
    numbers = [c for c in numbers if unparse(c) not in texts]
    either = ast.BoolOp(ast.Or(), [step_check, numbers[0] if len(numbers) == 1 else
                                   ast.BoolOp(ast.And(), numbers)])
    return ast.BoolOp(ast.And(), needs + [either]) if needs else either


def _in_order(node: ast.For, ctx: PassContext) -> tuple[ast.For, bool, list[ast.expr]]:
    """``node``, whether its steps run backwards, and the conditions that needs.
    ``reversed(range(...))`` becomes ``range(...)`` (its steps are computed in increasing order,
    the scan runs backwards). A sequence walked backwards, ``for x in reversed(xs)`` or
    ``for x in xs.flip(0)``, becomes ``for _k in reversed(range(len(xs))): x = xs[_k]``, the
    same items in the same order when ``xs`` is a list, tuple or tensor (a tensor for ``flip``;
    ``reversed`` of a dict walks its keys), and is treated the same way; so do sequences of
    equal lengths zipped, ``for x, y in zip(reversed(xs), reversed(ys))`` (``x = xs[_k]``,
    ``y = ys[_k]``)."""
    it = node.iter
    fn = resolve_call(it.func, ctx) if isinstance(it, ast.Call) else None
    if fn == "reversed" and len(it.args) == 1 and not it.keywords \
            and isinstance(it.args[0], ast.Call) and resolve_call(it.args[0].func, ctx) == "range" \
            and len(it.args[0].args) <= 2:
        loop = clone(node)
        loop.iter = clone(it.args[0])
        return loop, True, []
    pairs = _zipped(it, node.target, ctx)
    if pairs is None:
        return node, False, []
    k = ctx.namer.new("k")
    loop = clone(node)
    first = clone(pairs[0][1])
    loop.iter = replace("range(len(xs))", loc=node, xs=first)
    loop.target = ast.copy_location(ast.Name(k, ast.Store()), node.target)
    loop.body = [s for x, xs, _ in pairs for s in replace(
        "x = xs[k]", loc=node.target, x=x, xs=clone(xs), k=k)] + loop.body
    needs = [replace("isinstance(xs, torch.Tensor)" if flipped else
                     "type(xs) in (list, tuple) or isinstance(xs, torch.Tensor)",
                     torch_name=ctx.torch_name, xs=clone(xs)) for _, xs, flipped in pairs]
    needs += [replace("len(xs) == len(ys)", xs=clone(xs), ys=clone(first))
              for _, xs, _ in pairs[1:]]  # zip pairs the ends: equal lengths, equal indices
    return ast.fix_missing_locations(loop), True, needs


def _zipped(it: ast.expr, target: ast.expr,
            ctx: PassContext) -> list[tuple[str, ast.expr, bool]] | None:
    """``(name, xs, flipped)`` for each sequence the loop walks backwards: ``for x in
    reversed(xs)``, or ``for x, y in zip(reversed(xs), reversed(ys))`` (``zip`` without
    ``strict``); None when it walks otherwise."""
    if isinstance(it, ast.Call) and resolve_call(it.func, ctx) == "zip" and not it.keywords \
            and isinstance(target, ast.Tuple) and len(target.elts) == len(it.args) > 0:
        walks, names = it.args, target.elts
    else:
        walks, names = [it], [target]
    pairs = []
    for walk, name in zip(walks, names):
        xs, flipped = _walked_backwards(walk, ctx)
        if xs is None or not isinstance(name, ast.Name) or not is_pure(xs):
            return None
        pairs.append((name.id, xs, flipped))
    bound = {x for x, _, _ in pairs}  # each `x = xs[_k]` before the next reads its `xs`
    return pairs if len(bound) == len(pairs) and not any(
        bound & loads(xs) for _, xs, _ in pairs) else None


def _walked_backwards(it: ast.expr, ctx: PassContext) -> tuple[ast.expr | None, bool]:
    """``xs`` of ``reversed(xs)`` or of ``xs.flip(0)`` (with whether it is the ``flip``)."""
    if not isinstance(it, ast.Call) or it.keywords:
        return None, False
    if resolve_call(it.func, ctx) == "reversed" and len(it.args) == 1:
        return it.args[0], False
    dims = it.args[0] if len(it.args) == 1 else None
    if isinstance(dims, (ast.Tuple, ast.List)) and len(dims.elts) == 1:
        dims = dims.elts[0]
    if isinstance(it.func, ast.Attribute) and it.func.attr == "flip" and is_int(dims, 0):
        return it.func.value, True
    return None, False


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


def _written_states(loop: ast.For, it: Iteration, reverse: bool,
                    ctx: PassContext) -> tuple[ast.For, list[ast.stmt], dict[str, str],
                                            list[ast.expr]]:
    """A recurrence kept in a tensor: ``x[..., t, ...] = e`` where ``e`` reads ``x`` once, at the
    step the loop wrote just before (``x[..., t + 1, ...]`` over reversed steps of 1, ``t - 1``
    forwards), and the body mentions ``x`` nowhere else, is a named state::

        x[t] = x[t + 1] * c[t] + r[t]   ->   _x_state = _x_state * c[t] + r[t]
                                             x[t] = _x_state

    with ``_x_state = x[<the first step> + 1].clone()`` (the original's first read, the same
    index) before the scan: a copy, since the scan may save it for the backward of a factor
    that requires grad, and the write after the scan changes ``x`` in place (the loop saves
    such reads only where it multiplies them by a factor). ``x`` a name or an attribute chain
    (``self.returns``), checked to be a float32 or float64 tensor (``_SCANNED_INTO``: the states
    the scan computes in a wider dtype, float64 factors written into a float32 tensor, are
    rounded once at the write, within float32 rounding of the loop's). Returns the loop, those first reads, each
    state's ``x[t]``, and the tensors written."""
    if not is_int(it.step, 1):
        return loop, [], {}, []
    body, initial, shown, written = list(loop.body), [], {}, []
    first = clone(it.start) if not reverse else replace("b - 1", b=clone(it.stop))
    for k, s in enumerate(body):
        read = _previous_step_read(s, it.index, reverse, body)
        if read is None:
            continue
        state = ctx.namer.new(f"{getattr(read.value, 'attr', getattr(read.value, 'id', ''))}_state")
        value = _Substitute(unparse(read), ast.Name(state, ast.Load())).visit(clone(s.value))
        body[k:k + 1] = [ast.copy_location(ast.Assign(targets=[ast.Name(state, ast.Store())],
                                                      value=value, type_comment=None), s),
                         ast.copy_location(ast.Assign(targets=s.targets,
                                                      value=ast.Name(state, ast.Load()),
                                                      type_comment=None), s)]
        start = _Substitute(it.index, first).visit(clone(read))
        initial += replace("s = x.clone()", loc=s, s=state, x=start)
        written.append(clone(s.targets[0].value))
        shown[state] = unparse(s.targets[0])
    if not initial:
        return loop, [], {}, []
    loop = clone(loop)
    loop.body = body
    return ast.fix_missing_locations(loop), initial, shown, written


def _previous_step_read(s: ast.stmt, index: str, reverse: bool,
                        body: list[ast.stmt]) -> ast.Subscript | None:
    """The read of ``x[..., index +- 1, ...]`` in ``s`` = ``x[..., index, ...] = e``, when it is
    the body's only mention of ``x`` besides the target."""
    if not (isinstance(s, ast.Assign) and len(s.targets) == 1
            and isinstance(s.targets[0], ast.Subscript) and is_pure(s.targets[0].value)):
        return None
    target = s.targets[0]
    base = unparse(target.value)
    entries = loop_dataflow.write_entries(target)
    at = [k for k, e in enumerate(entries) if is_name(e, index)]
    if len(at) != 1 or any(index in loads(e) for k, e in enumerate(entries) if k != at[0]):
        return None
    mentions = [n for st in body for n in walk(st) if isinstance(n, ast.expr)
                and unparse(n) == base]
    reads = [n for n in walk(s.value) if isinstance(n, ast.Subscript) and unparse(n.value) == base]
    if len(mentions) != 2 or len(reads) != 1:
        return None
    shifted = [unparse(e) for e in entries]
    shifted[at[0]] = f"{index} {'+' if reverse else '-'} 1"
    got = loop_dataflow.write_entries(reads[0])
    return reads[0] if [unparse(e) for e in got] == shifted else None


class _Substitute(ast.NodeTransformer):
    """Every expression that reads as ``text`` replaced by a copy of ``by``."""

    def __init__(self, text: str, by: ast.expr):
        self.text, self.by = text, by

    def visit(self, n: ast.AST) -> ast.AST:
        if isinstance(n, ast.expr) and unparse(n) == self.text:
            return ast.copy_location(clone(self.by), n)
        return super().visit(n)


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


def _resets(loop: ast.For, ctx: PassContext) -> tuple[ast.For, dict[str, ast.Name]]:
    """``if c: s = 0`` (no ``else``) right before ``s = e`` where ``e`` reads ``s``: the
    episode ends of discounted returns. The ``if`` becomes ``_s_reset = c``, a per-step value
    the scan takes as the step's reset (``linear_scan``'s ``resets``), so ``s`` is bound by
    the recurrence alone; returns the loop and the reset names by state."""
    body, resets = list(loop.body), {}
    for k, (s, following) in enumerate(zip(loop.body, loop.body[1:])):
        if not (isinstance(s, ast.If) and not s.orelse and len(s.body) == 1
                and isinstance(s.body[0], ast.Assign) and len(s.body[0].targets) == 1
                and isinstance(s.body[0].targets[0], ast.Name)
                and type(getattr(s.body[0].value, "value", None)) in (int, float)
                and s.body[0].value.value == 0):
            continue
        name = s.body[0].targets[0].id
        if not (isinstance(following, ast.Assign) and any(is_name(t, name)
                                                         for t in following.targets)
                and name in loads(following.value)) or name in loads(s.test):
            continue
        resets[name] = ast.Name(ctx.namer.new(f"{name}_reset"), ast.Load())
        body[k] = ast.copy_location(ast.Assign(targets=[ast.Name(resets[name].id, ast.Store())],
                                               value=clone(s.test), type_comment=None), s)
    if not resets:
        return loop, {}
    loop = clone(loop)
    loop.body = body
    return ast.fix_missing_locations(loop), resets


def _recurrences(body: list[ast.stmt], index: str,
                 resets: dict[str, ast.Name]) -> list[_Recurrence]:
    """The top-level ``s = a * s + b`` statements whose ``s`` nothing else binds or reads
    before them (a reset of ``s`` made ``_s_reset = c``, see ``_resets``). A reset of another
    value keeps the loop: its ``if`` is no longer in the body. A sum (``a`` is 1) is one when a
    later statement reads it: a running sum read in its own step (a Cox risk set's
    ``risk = risk + torch.exp(h[i])``, then ``torch.log(risk)``) is every step's prefix sum."""
    found = []
    for at, s in enumerate(body):
        names = [t.id for t in getattr(s, "targets", []) if isinstance(t, ast.Name)]
        if not isinstance(s, ast.Assign) or len(names) != 1 or names[0] == index:
            continue
        name = names[0]
        parts = _linear(s.value, name)
        if parts is None or parts[0] is None:
            continue  # not linear
        if is_int(parts[0], 1) and not any(name in loads(st) for st in body[at + 1:]):
            continue  # a sum nothing else reads: the vectorizer's accumulator
        if any(name in loads(t) for t in s.targets):  # `x[s] = s = ...`
            continue
        if any(name in stores(n) for k, st in enumerate(body) if k != at
               for n in walk(st) if isinstance(n, ast.stmt)):
            continue
        if any(name in loads(st) for st in body[:at]):
            continue
        found.append(_Recurrence(at, name, *parts, reset=resets.get(name)))
    if set(resets) - {rec.name for rec in found}:
        raise Unsupported("a value reset by `if` that is no linear recurrence")
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


def _alike_checks(needs: list[ast.expr], found: list[_Recurrence], preludes: dict, loop: ast.For,
                  node: ast.For, written: list[ast.expr], shown: dict[str, str],
                  ctx: PassContext) -> tuple[list[ast.expr], list[str]]:
    """``needs`` and a ``computed_alike`` check of each recurrence whose parts the scan
    multiplies out, or whose state a reset sets to 0 (from there the loop's states take the
    dtype of the parts alone, not that of the state before the loop); the user's names of those
    states. A reset alone does no arithmetic on a bool mask: bool tensors pass its check."""
    checked = [(rec, _multiplied_out(rec, loop.body[rec.at].value)) for rec in found]
    checked = [(rec, out) for rec, out in checked if out or rec.reset is not None]
    return needs + [_alike(rec, preludes[rec.name] + [loop.body[rec.at]], node, written, not out,
                           ctx) for rec, out in checked], \
        [shown.get(rec.name, rec.name) for rec, _ in checked]


def _multiplied_out(rec: _Recurrence, value: ast.expr) -> bool:
    """Whether ``_linear`` combined the recurrence's parts (``c * (a * s + b)`` -> ``c * a``,
    ``b - m * s`` -> ``-m``): a part that is none of ``value``'s own subexpressions."""
    own = {unparse(n) for n in walk(value) if isinstance(n, ast.expr)} | {"1"}
    return any(p is not None and unparse(p) not in own for p in (rec.a, rec.b))


def _alike(rec: _Recurrence, stmts: list[ast.stmt], node: ast.For, written: list[ast.expr],
           bools: bool, ctx: PassContext) -> ast.expr:
    """``computed_alike(...)`` of what the recurrence and the statements it needs read from
    outside the loop (names, attribute chains on them), its state before the loop and the
    tensors it is written into, and the dtypes the statements convert to (``_made_dtypes``). A
    tensor the body makes without a dtype (``torch.ones(n)``, of the default dtype) is not."""
    outer = (loads(node) - stores_in([node])) | ({rec.name} & loads(node))
    leaves, seen = [], set()
    called = [c.func for s in stmts for c in walk(s) if isinstance(c, ast.Call)]
    for s in stmts:
        for n in walk(s):
            chain = n
            while isinstance(chain, ast.Attribute):
                chain = chain.value
            if not (isinstance(chain, ast.Name) and chain.id in outer) or any(
                    n is f for f in called):
                continue
            if isinstance(n, (ast.Name, ast.Attribute)) and unparse(n) not in seen:
                seen.add(unparse(n))
                leaves.append(ast.Name(n.id, ast.Load()) if isinstance(n, ast.Name) else clone(n))
    if rec.name in outer and rec.name not in seen:
        leaves.append(ast.Name(rec.name, ast.Load()))
    leaves += _made_dtypes(stmts, outer, ctx)
    fn = ctx.bind(computed_alike, "computed_alike")
    return ast.Call(ast.Name(fn, ast.Load()), leaves + [clone(w) for w in written],
                    [ast.keyword("bools", ast.Constant(True))] if bools else [])


# Conversions by method name, to the dtype a ``computed_alike`` check counts for them
_CONVERSIONS = {"float": "float32", "double": "float64", "half": "float16",
                "bfloat16": "bfloat16", "long": "int64", "int": "int32", "bool": "bool"}


def _made_dtypes(stmts: list[ast.stmt], outer: set[str], ctx: PassContext) -> list[ast.expr]:
    """The dtypes the statements convert to (``m[t].float()``: ``torch.float32``; ``.to(dt)``
    and ``dtype=dt`` where ``dt`` is read from outside the loop): values of another dtype than
    the tensors read, which the check must count too."""
    found = []
    for c in (n for s in stmts for n in walk(s) if isinstance(n, ast.Call)):
        name = loop_dataflow.method_name(c, ctx)
        if name in _CONVERSIONS and not c.args and not c.keywords:
            found.append(replace(f"torch.{_CONVERSIONS[name]}", torch_name=ctx.torch_name))
        given = [k.value for k in c.keywords if k.arg == "dtype"] + (c.args if name == "to" else [])
        found += [clone(v) for v in given if loads(v) <= outer | {ctx.torch_name}]
    return found


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


def _parts(rec: _Recurrence) -> dict[str, ast.expr]:
    """The per-step expressions of a recurrence a scan takes: ``a``, ``b``, its reset."""
    return {part: getattr(rec, part) for part in ("a", "b", "reset")
            if getattr(rec, part) is not None}


def _prelude(before: list[ast.stmt], rec: _Recurrence, index: str,
             bound: set[str]) -> list[ast.stmt]:
    """The statements before the recurrence that its ``a`` and ``b`` need (in order); every
    name they read that the body binds must be bound by them first (else it is carried)."""
    written = scan_step_values.written_bases(before)  # `d[t] = ...` then `d[t]` read
    needed = set().union(*(loads(p) for p in _parts(rec).values())) & (bound | written)
    picked = []
    for s in reversed(before):
        if (stores_in([s]) | scan_step_values.written_bases([s])) & needed:
            picked.insert(0, s)
            needed |= (loads(s) & (bound | written)) - stores(s)
    carried: dict[str, ast.stmt] = {}
    tail = [ast.Expr(p) for p in _parts(rec).values()]
    loop_dataflow.exposed_reads(picked + tail, {index}, bound, carried)
    if carried:
        raise Unsupported(f"`{next(iter(carried))}` is carried")
    return picked


def _scan_stmt(rec: _Recurrence, per_step: dict, first: LoopPlan, it: Iteration, reverse: bool,
               node: ast.For, ctx: PassContext, values: dict[str, str]) -> list[ast.stmt]:
    """``_s_all = _linear_scan(a, b, s, a_steps, b_steps, trips, reverse)``."""
    fn = ctx.bind(linear_scan, "linear_scan")
    parts = {}
    for part in ("a", "b", "reset"):
        lst, expr = per_step.get((rec.name, part)), getattr(rec, part)
        parts[part] = first.own_list_values[lst].values if lst else \
            clone(expr) if expr is not None else ast.Constant(0)
        parts[part + "_steps"] = ast.Constant(lst is not None)
    values[rec.name] = ctx.namer.new(f"{rec.name}_all")
    call = "f(a, b, s, a_steps, b_steps, n, r" + (
        ", reset, reset_steps)" if rec.reset is not None else ")")
    return replace(f"all_ = {call}", loc=node, all_=values[rec.name], f=fn, s=rec.name,
                   n=it.trips(first), r=ast.Constant(reverse), **parts)


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


@dataclass
class _Reordered:
    """How the rest of a reversed loop, run forwards, fills lists in the original's order: the
    lists its appends go to, the statements around it, the checks they need, and the fresh
    lists' user names."""
    appended: set[str] = field(default_factory=set)
    before: list[ast.stmt] = field(default_factory=list)
    after: list[ast.stmt] = field(default_factory=list)
    checks: list[ast.expr] = field(default_factory=list)
    user_names: dict[str, str] = field(default_factory=dict)


def _appends_in_step_order(rest: ast.For, known: dict, ctx: PassContext) -> _Reordered:
    """In the rest of a reversed loop, run forwards, a list filled by ``lst.insert(0, v)`` or
    ``lst.append(v)`` (the body's only use of ``lst``) gets the original's items:

    - ``lst.insert(0, v)``: the original's list ends with the steps' values in increasing step
      order, then the items it held before the loop. When ``lst`` is empty when the loop starts
      (``lst = []`` right before it, a list the vectorizer may build), ``lst.append(v)``; else
      ``_lst_front.append(v)`` into a fresh list spliced in after the loop
      (``lst[0:0] = _lst_front``);
    - ``lst.append(v)``: the original appends in decreasing step order: ``_lst_back.append(v)``
      and ``lst.extend(reversed(_lst_back))`` after the loop.

    A list spliced into must be a list, not a subclass (its ``insert`` may differ)."""
    order = _Reordered()
    for stmt in rest.body:
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and isinstance(call.func.value, ast.Name) and not call.keywords
                and (call.func.attr, len(call.args)) in (("insert", 2), ("append", 1))):
            continue
        name, value, front = call.func.value.id, call.args[-1], call.func.attr == "insert"
        if front and not is_int(call.args[0], 0) or name in loads(value) or any(
                name in loads(t) | stores_in([t]) for t in rest.body if t is not stmt):
            continue
        if front and name in known.get("buildable_lists", set()):
            order.appended.add(name)
            stmt.value = replace("lst.append(v)", loc=stmt, lst=name, v=value)
            continue
        fresh = ctx.namer.new(f"{name}_{'front' if front else 'back'}")
        order.appended.add(fresh)
        order.user_names[fresh] = name
        stmt.value = replace("lst.append(v)", loc=stmt, lst=fresh, v=value)
        order.before += replace("f = []", loc=stmt, f=fresh)
        order.after += replace("lst[0:0] = f", loc=stmt, lst=name, f=fresh) if front else [
            ast.copy_location(ast.Expr(replace("lst.extend(reversed(f))", loc=stmt, lst=name,
                                               f=fresh)), stmt)]
        order.checks.append(replace("type(lst) is list", lst=name))
    return order


def _position(it: Iteration) -> ast.expr:
    """The position of the step with index ``it.index`` among the steps in increasing order."""
    if is_int(it.step, 1):
        return ast.Name(it.index, ast.Load()) if is_int(it.start, 0) else \
            replace("t - a", t=it.index, a=clone(it.start))
    return replace("(t - a) // s", t=it.index, a=clone(it.start), s=clone(it.step))
