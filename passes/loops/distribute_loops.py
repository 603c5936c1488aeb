"""Loop distribution (fission): a ``for`` loop the vectorizer keeps whole is split in two.

Statements that cannot be vectorized (a side effect, a recurrence, an op without a batched form)
stay in a residual loop; the statements they do not feed are hoisted into a loop of their own,
which the vectorizer rewrites (``LOOP_STAGES``, all or nothing). The per-iteration values the
residual loop reads leave the hoisted loop stacked, and the residual loop reads them by index::

    for i in range(len(x)):                      if <the hoisted loop's runtime check>:
        l = F.cross_entropy(x[i:i+1], y[i:i+1])      'optimize_loss: loop at line 1 vectorized'
        if l.item() > th:                  ->        <every iteration's `l` at once: `_outs`>
            hard.append(l)                           _l_all = _outs[0].unbind(0)
                                                     for i in range(len(x)):
                                                         l = _l_all[i]
                                                         if l.item() > th:
                                                             hard.append(l)
                                                 else:
                                                     <the loop as written>

The dependence graph is over the body's top-level statements, after a call of a method of the
function's own object made as a statement is inlined (``inline_method_calls``). Names are the
nodes, but a statement reading other attributes of an object than the residual statements
write (``self.criterion`` against ``self.acc_loss += l``) does not depend on them
(``_attributes_apart``). First, a heavy operand of a
statement that stays residual on its own becomes a statement of its own before it, when the
statement always evaluates it and it reads nothing the statement writes or the loop carries
(``_operands_out``): ``print(f"{F.cross_entropy(x[i:i+1], y[i:i+1]).item()}")``,
``if loss(...).item() > th: hard.append(i)``, ``assert ...``, ``hard.append(F.mse_loss(...))``,
and the input term of ``s = beta * s + (1 - beta) * torch.tanh(x[:, t] @ W)`` can then be
hoisted. So can a heavy tensor operand of a statement in a branch of such an ``if`` whose test
reads nothing the ``if`` writes or the loop carries, when every value it reads is a row of the
iteration (``_rows_only``), bound for every iteration::

    if m[i] > 0:                                  if m[i] > 0:
        l = F.mse_loss(x[i], y[i])                    _value = F.mse_loss(x[i], y[i])
        print(l.item())                   ->      else:
                                                      _value = 0
                                                  if m[i] > 0:
                                                      l = _value
                                                      print(l.item())

The hoisted loop's ``torch.where`` branches put the operands of the iterations the branch skips
in the op's domain (or refuse an op that could raise there), and the residual ``if`` reads
``_value`` only where the branch runs: values and gradients are the original's. Calls of helpers
``inline_helper_calls`` inlines count with the work of their bodies; a call of an ``nn`` loss
module (``self.ce(x[i], y[i])``, ``module_loss_calls``) is its functional op, a pure loss. A
statement stays residual when

* on its own it is no vectorizable loop body (``loop_dataflow.analyze`` of the statement alone:
  I/O, random ops, mutation of outer objects, ``assert``, inner loops, ...), or it leaves the
  iteration (an accumulator, an append, a write into an outer tensor): the hoisted loop has no
  effect but the values it stacks, so side effects, exceptions of the residual statements and
  random draws happen in the original order, and accumulators sum in the original order;
* it reads or binds a name carried from one iteration to the next (read before the iteration
  binds it): every statement of a strongly connected component with a carried dependence;
* it reads or binds a name a residual statement binds or mutates, or binds a name an earlier
  residual statement reads (the residual loop would see the wrong value);
* it binds a name the residual loop (or the code after the loop) reads, other than with one
  ``name = <expression with a call or subscript>`` that varies with the iteration: only such
  values are stacked (a Python number computed from the index would come back a tensor); a
  value that is one host round trip (``t.item()``, ``int(t)``) comes back as Python numbers,
  one with a host round trip inside (``t.item() * 2``) is not stacked; ``l, n = helper(...)``
  binds the items of the tuple an inlined helper returns, each judged the same way;
* the vectorizer refused the hoisted loop at its line (then the split is made again).

Residual statements that change in place a value made in the iteration (``q = p; q += 1``;
accumulators carried from one iteration to the next are not such values) would change views of
one stacked tensor: the residual loop then reads copies (``p = _p_all[i].clone()``), when every
stacked tensor had memory of its own in the original and no hoisted statement reads one
(``_copyable``: the original's change reaches nothing else); else the loop is not split. Nor is
one whose residual statements change what the loop iterates.

Exceptions: the hoisted statements are vectorized code behind its runtime checks (ranks, dtypes,
bounds), so they do not raise where the original did not; an error an op raises on the data
itself (a class index out of range in ``cross_entropy``) is the same error, raised before the
residual loop runs. A ``continue`` that ends a branch of a top-level ``if`` becomes the other
branch holding the statements after the ``if`` (``continues_to_else``). A ``break`` ending
the branch of a top-level ``if`` (over a range or elements): the ``break`` test of every iteration
comes first, the hoisted loop runs only the iterations before the one that breaks, which runs
as written (``distribute_breaks``); a ``return`` ending such a branch likewise, the iteration
that returns running as written. Over a ``range``, when the statements but the ``if`` make one
vectorizable loop body (accumulators included) and one of them does real work (``_heavy``, as
below), there is no residual loop: that body is
vectorized whole over the iterations before the one that breaks, and that iteration runs its
statements before the ``if`` and its branch as written (``_counted_whole``). Loops with
another ``break``, ``continue`` or ``return`` are not split. A loop over
``reversed(range(n))`` or ``reversed(xs)``: the hoisted loop runs forwards (``reversed_ranges``).

Only when it pays: at least one hoisted statement makes a reduction, a contraction (``@``,
``dot``), a loss or a similarity (``ops.OpSpec.batched`` in ``_HEAVY_FORMS``), at least one
statement stays residual, and the residual statements run no more such ops (a call the registry
does not know counts as one) than the hoisted ones (``_work``): else the residual loop still
does most of the work. The report's strategy is "distributed"; its reason names the hoisted
lines and every residual statement with its reason at the user's file:line. A loop that is not
distributed gets the reason why not (the residual statements too, when those are why).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Callable

from .. import ast_marks, ops
from .. import loop_rules as rules
from ..ast_tools import PassContext, clone, is_int, replace, root_name, unparse, walk
from ..errors import Unsupported
from . import (distribute_breaks, inline_helper_calls, inline_method_calls, iteration,
               loop_dataflow, module_loss_calls, reversed_ranges, runtime_checks)
from .continues_to_else import continues_to_else
from .loop_dataflow import call_op, is_shape_query, loads, stmt_loads, stores
from .plan import Iteration, LoopPlan, new_plan
from .runtime_checks import AS_WRITTEN, guard_line, is_vectorized_guard

# Batched forms of ops that do real work per item (elementwise ops, views and layout do not).
_HEAVY_FORMS = frozenset({"reduction", "dot", "pointwise_loss", "class_loss", "similarity"})
_EFFECT_VERBS = {"acc": "accumulates into", "scan": "accumulates into", "append": "appends to",
                 "write": "writes into"}
# Why a loop a `break` (or `return`) ends runs as written after its iterations were counted.
_PREFIX_CHECK = "the runtime check of the iterations before the `{}` failed"
# Statements that end the iteration or the loop early, or bind names outside the function.
_CONTROL = (ast.Break, ast.Continue, ast.Return, ast.Yield, ast.YieldFrom, ast.Await,
            ast.Global, ast.Nonlocal)


@dataclass
class Fission:
    """A distributed loop: the hoisted loop's plan, the statements of the vectorized branch
    (the hoisted statements vectorized, then the residual loop) and the report's reason."""
    plan: LoopPlan
    stmts: list[ast.stmt]
    reason: str


@dataclass
class _Split:
    body: list[ast.stmt]
    written: dict[int, ast.stmt]  # position -> the statement as written, if operands left it
    residual: dict[int, str] = field(default_factory=dict)  # position -> why it stays
    copies: bool = False  # the residual loop reads copies of the stacked tensors
    index: str = ""  # the loop index, a Python int: a call it is handed cannot change it
    stop: int | None = None  # the position of the `if` ending with the loop's `break`

    def hoisted(self) -> list[int]:
        return [k for k in range(len(self.body)) if k not in self.residual]


def distribute(node: ast.For, live_after: set[str], masks: set[str], ctx: PassContext,
               vectorize: Callable[[LoopPlan, PassContext], LoopPlan],
               stackable: dict | None = None) -> Fission | str:
    """``node`` (its inner loops already rewritten) distributed, or why it is kept whole (and
    the names the attempts took given back: the loops after it are named as before).
    ``masks``: the names the function binds to boolean tensors only (the hoisted loop's plan
    needs them as the whole loop's did); ``stackable``: the names it may hold as lists and
    iterators: the hoisted loop stacks those the loop iterates (a list read by index is left
    to the loop as written; the ``prelude`` goes in front of the guard), and ``numbers``, those
    bound to Python numbers when it starts (the hoisted loop runs first: so when it starts)."""
    point = ctx.namer.checkpoint()
    fission = _distribute(node, live_after, masks, ctx, vectorize, stackable or {})
    if isinstance(fission, str):
        ctx.namer.rollback(point)
    return fission


def _distribute(node: ast.For, live_after: set[str], masks: set[str], ctx: PassContext,
                vectorize: Callable[[LoopPlan, PassContext], LoopPlan],
                stackable: dict) -> Fission | str:
    if node.orelse:
        return "its `else` clause runs after the last iteration"
    as_written = clone(node)
    body, guards = inline_method_calls.inline(continues_to_else(node.body), ctx)
    forward = reversed_ranges.forward(node, ctx)  # the hoisted loop's header, if counting down
    it = _iteration(forward or node, body, ctx)
    if isinstance(it, str):
        return it
    if forward and distribute_breaks.find(body) is not None:
        over = "range(...)" if isinstance(forward.iter, ast.Call) else unparse(forward.iter)
        return f"a `break` or `return` ends a loop over `reversed({over})`: its iterations " \
               "are counted first only in the order they run"
    seeds = {it.index} | {name for name, _ in it.elements}
    iterated = {src.id for _, src in it.elements if isinstance(src, ast.Name)}
    stackable = {**stackable, "list_names": stackable.get("list_names", frozenset()) & iterated}
    if distribute_breaks.find(body) is not None and not forward:
        whole = _counted_whole(node, as_written, body, it, live_after, (masks, guards),
                               stackable, vectorize, ctx)
        if not isinstance(whole, str):
            return whole
    body, written = _operands_out(body, it.index, seeds, ctx)
    node = ast.copy_location(ast.For(target=node.target, iter=node.iter, body=body, orelse=[],
                                     type_comment=None), node)
    split = _Split(body, written, index=it.index, stop=distribute_breaks.find(body))
    stopped = split.stop is not None
    for k, s in enumerate(node.body):
        local = _exposed_reads(node.body[:k], seeds)[1]
        reason = _own_reason(s, it.index, seeds, ctx, local)
        if reason:  # of the statement as written when its operands left it (no `_value`)
            split.residual[k] = k in written and _own_reason(
                written[k], it.index, seeds, ctx, local) or reason
    carried = _mark_carried(split, seeds, ctx)
    variant = loop_dataflow.variant_names(node.body, seeds, ctx)
    for _ in node.body:  # each refusal of the vectorizer moves one statement: a bound
        exported = _close(split, live_after, variant, ctx)
        hoisted = [node.body[k] for k in split.hoisted()]
        why_not = _why_not(node, split, carried, exported, ctx)
        if why_not:
            return why_not
        point = ctx.namer.checkpoint()
        lists = {name: ctx.namer.new(f"{name}_all") for name in exported}
        n, stops = (ctx.namer.new("n"), ctx.namer.new("stops")) if stopped else ("", "")
        header = distribute_breaks.prefix_loop(node, it, n) if stopped else forward or node
        try:
            plan = vectorize(new_plan(_hoisted_loop(header, hoisted, lists), set(), ctx,
                                      masks=masks, own_lists=set(lists.values()),
                                      **stackable), ctx)
        except Unsupported as exc:
            ctx.namer.rollback(point)  # the next attempt's names as if it were the first
            at = [k for k in split.hoisted() if _covers(node.body[k], exc.lineno)]
            if not at:
                return f"the hoisted loop is refused: {exc.reason}"
            split.residual[at[0]] = exc.reason
            continue
        for guard in guards:  # the object runs the methods inlined
            plan.checks.add(guard)
        # the hoisted loop reads every row before the residual loop writes any
        runtime_checks.add_storage_checks(plan, _written_in_place(split), ctx)
        residual = _residual_loop(node, it, split, lists, plan, ctx, (n, stops))
        if not stopped:
            return Fission(plan, plan.stmts + residual, _reason(split, plan, ctx))
        return _counted_first(node, as_written, split, plan, residual, (n, stops), seeds,
                              (masks, guards), vectorize, ctx)
    return "the vectorizer refused every split"


def _counted_first(node: ast.For, as_written: ast.For, split: _Split, plan: LoopPlan,
                   residual: list[ast.stmt], names: tuple[str, str], seeds: set[str],
                   known: tuple[set[str], list[ast.expr]],
                   vectorize: Callable[[LoopPlan, PassContext], LoopPlan],
                   ctx: PassContext) -> Fission | str:
    """The split of a loop a ``break`` ends (``distribute_breaks``): the ``break`` test of every
    iteration at once, the iteration ``_n`` that breaks, then the hoisted loop over
    ``range(_n)`` and the residual loop behind the hoisted loop's check (it reads ``_n``), the
    loop as written where it fails (``AS_WRITTEN``: the run counts so). ``names``: ``_n``,
    ``_stops``; ``known``: the function's masks, the checks that the object runs the methods
    inlined (the test may call them too)."""
    counted = _tests_first(node, split.body, split.stop, split.residual, seeds, split.index,
                           known, vectorize, ctx)
    if isinstance(counted, str):
        return counted
    first, tests = counted
    count = distribute_breaks.counted(tests, names[1], names[0], node, ctx)
    return Fission(first, first.stmts + count + plan.prelude + [
        _unless_checked(node, as_written, split.body, split.stop, plan, plan.stmts + residual)],
        _reason(split, plan, ctx))


def _tests_first(node: ast.For, body: list[ast.stmt], at: int, residual: dict[int, str],
                 seeds: set[str], index: str, known: tuple[set[str], list[ast.expr]],
                 vectorize: Callable[[LoopPlan, PassContext], LoopPlan],
                 ctx: PassContext) -> tuple[LoopPlan, ast.expr] | str:
    """The vectorized loop of the test of the ``if`` at ``at`` (and of the statements before
    it that it reads) over every iteration, and its stacked tests; or why the iterations
    cannot be counted first (``distribute_breaks.test_slice``, ``partial_op``)."""
    word = distribute_breaks.keyword(body, at)
    picked = distribute_breaks.test_slice(body, at, residual, [_writes(s, ctx) for s in body])
    if isinstance(picked, str):
        return picked
    partial = distribute_breaks.partial_op([body[k] for k in picked] + [body[at].test], seeds,
                                           index, ctx)
    if partial is not None:
        return distribute_breaks.partial_reason(partial, ctx, word)
    stop, tests = ctx.namer.new("stop"), ctx.namer.new("tests")
    test = [body[k] for k in picked] + replace("s = t", loc=body[at], s=stop,
                                               t=distribute_breaks.truth_of(body[at].test, ctx))
    try:
        first = vectorize(new_plan(_hoisted_loop(node, test, {stop: tests}), set(), ctx,
                                   masks=known[0], own_lists={tests}), ctx)
    except Unsupported as exc:
        return f"the `{word}` test cannot be computed for every iteration first: {exc.reason}"
    for guard in known[1]:
        first.checks.add(clone(guard))
    return first, first.own_list_values[tests].values


def _unless_checked(node: ast.For, as_written: ast.For, body: list[ast.stmt], at: int,
                    plan: LoopPlan, stmts: list[ast.stmt]) -> ast.If:
    """``if not <plan's check>: <the loop as written> else: <stmts>``: the check reads ``_n``,
    so it comes after the iterations are counted."""
    word = distribute_breaks.keyword(body, at)
    marker = ast.Expr(ast.Constant(AS_WRITTEN.format(node.lineno, _PREFIX_CHECK.format(word))))
    bail = ast.If(test=ast.UnaryOp(ast.Not(), plan.checks.expr()), body=[marker, as_written],
                  orelse=stmts)
    return ast.fix_missing_locations(ast.copy_location(bail, node))


def _counted_whole(node: ast.For, as_written: ast.For, body: list[ast.stmt], it: Iteration,
                   live_after: set[str], known: tuple[set[str], list[ast.expr]],
                   stackable: dict, vectorize: Callable[[LoopPlan, PassContext], LoopPlan],
                   ctx: PassContext) -> Fission | str:
    """A loop over a ``range`` a ``break`` (or ``return``) ends whose other statements are one
    vectorizable loop body: the iterations counted first (``_tests_first``), then the body
    without the ``if`` vectorized over the iterations before the one that breaks, whole
    (accumulators folded, no residual loop), then that iteration as written
    (``distribute_breaks.broken_iteration``). Or why not (the names it took given back)."""
    at = distribute_breaks.find(body)
    rest = body[:at] + body[at + 1:]
    if it.elements or not it.index_is_user or not isinstance(node.target, ast.Name):
        return "it iterates elements, not a range"
    if not any(_heavy(s, ctx) for s in rest):  # as for a split: only when it pays
        return "no statement but the `if` does real work"
    point = ctx.namer.checkpoint()
    counted = _tests_first(node, body, at, {}, {it.index}, it.index, known, vectorize, ctx)
    if isinstance(counted, str):
        ctx.namer.rollback(point)
        return counted
    first, tests = counted
    n, start = ctx.namer.new("n"), ctx.namer.new("at")
    header = distribute_breaks.prefix_loop(node, it, n)
    breaking = distribute_breaks.broken_iteration(body, at, (n, start, node.target.id), tests)
    live = live_after | loads(breaking)  # what the iteration that breaks reads
    try:
        plan = vectorize(new_plan(_hoisted_loop(header, rest, {}), live,
                                  ctx, masks=known[0], **stackable), ctx)
    except Unsupported as exc:
        ctx.namer.rollback(point)
        return exc.reason
    for guard in known[1]:
        plan.checks.add(clone(guard))
    count = distribute_breaks.counted(tests, None, n, node, ctx)
    # an iteration that breaks at once and an index nothing reads after the loop: nothing to run
    tail = [breaking] if len(breaking.body) > 1 or it.index in live_after else []
    count += distribute_breaks.breaking_start(it, (n, start), node) if tail else []
    word = distribute_breaks.keyword(body, at)
    how = f"vmap: {plan.unbatched}" if plan.unbatched else "batched"
    reason = f"the iterations before the `{word}` at line {body[at].lineno}, counted first, " \
             f"vectorized as one loop ({how}); the iteration that {word}s runs as written"
    return Fission(first, first.stmts + count + plan.prelude + [
        _unless_checked(node, as_written, body, at, plan, plan.stmts + tail)], reason)


def _iteration(node: ast.For, body: list[ast.stmt], ctx: PassContext) -> Iteration | str:
    """What ``node`` iterates, or why it is not split: a statement of ``body`` leaves the
    iteration early (but a ``break`` or ``return`` ``distribute_breaks`` counts the iterations
    of), or the header is refused."""
    stop = distribute_breaks.the_break(body, distribute_breaks.find(body))
    control = next((n for s in body for n in _own_nodes(s) if isinstance(n, _CONTROL)
                    and n is not stop), None)
    if control is not None:
        return f"{ctx.where(control)} `{_first_line(control)}` leaves the iteration early"
    try:
        it = iteration.stage(LoopPlan(node, set(), torch_name=ctx.torch_name), ctx).iteration
    except Unsupported:  # the whole-loop refusal's reason: the iteration is checked first
        return "the loop's header is refused as a whole"
    return it


def _why_not(node: ast.For, split: _Split, carried: set[str], exported: list[str],
             ctx: PassContext) -> str:
    """Why this split is not made ("" when it is): nothing residual, nothing heavy hoisted or
    more work staying than hoisted (it would not pay: ``_work``), or residual statements that
    change what the loop iterates or, in place, values the hoisted loop stacks that a copy
    cannot stand for (``_copyable``). Sets ``split.copies`` when the residual loop reads
    copies."""
    if not split.residual:
        return "no statement of the body is the cause: the refusal is the loop's as a whole"
    if not any(_heavy(split.body[k], ctx) for k in split.hoisted()):
        return "no statement left to hoist does real work (a reduction, contraction, loss " \
               f"or similarity): the residual loop would do most of it; {_residual(split, ctx)}"
    hoisted, kept = (_work([split.body[k] for k in ks], ctx)
                     for ks in (split.hoisted(), sorted(split.residual)))
    if kept > hoisted:
        return f"residual loop still does most of the work ({kept} ops doing real work stay, " \
               f"{hoisted} hoisted); {_residual(split, ctx)}"
    changed = loads(node.iter) & set().union(*(_writes(node.body[k], ctx)
                                               for k in split.residual))
    if changed:
        return f"the residual loop would change `{sorted(changed)[0]}`, which the loop iterates"
    split.copies = _mutates_values(split, carried, ctx)
    if split.copies and not _copyable(split, exported, ctx):
        return "a residual statement changes in place a value made in the iteration, " \
               "which may share memory with another value (a copy would not change it); " \
               f"{_residual(split, ctx)}"
    return ""


def _own_nodes(node: ast.AST):
    """The nodes of ``node`` outside the functions it defines (a vmapped inner loop's body)."""
    yield node
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _own_nodes(child)


class _LoadsRenamed(ast.NodeTransformer):
    def __init__(self, names: dict[str, str]):
        self.names = names

    def visit_Name(self, node: ast.Name) -> ast.Name:
        if isinstance(node.ctx, ast.Load) and node.id in self.names:
            node.id = self.names[node.id]
        return node


def _mutates_values(split: _Split, carried: set[str], ctx: PassContext) -> bool:
    """A residual statement changes in place a value made in the iteration: it may be a stacked
    value (views of one unbound tensor may not be changed in place). Carried accumulators
    (``total += l``) hold what the iterations added, not their values."""
    made = loop_dataflow.stores_in(split.body) - carried
    return any(_mutated(split.body[k], ctx) & made for k in split.residual)


def _copyable(split: _Split, exported: list[str], ctx: PassContext) -> bool:
    """The residual loop may read copies of the stacked tensors (``n = _n_all[i].clone()``),
    which it may then change in place as the original changes its values: every stacked tensor
    has memory of its own in the original (``_fresh``), and no hoisted statement reads one (it
    could make a view of it, which the original's in-place change would reach too)."""
    hoisted = [split.body[k] for k in split.hoisted()]
    if set(exported) & set().union(*map(_reads, hoisted)):
        return False
    for name in exported:
        value = _bound_value([s for s in hoisted if name in loop_dataflow.stores_in([s])][-1],
                             name, ctx)
        if value is None or not (_is_number(value, ctx) or _fresh(value, ctx, 0)):
            return False
    return True


def _fresh(value: ast.expr, ctx: PassContext, depth: int) -> bool:
    """``value`` is a tensor with memory of its own (``loop_dataflow.makes_new_tensor``, an
    ``nn`` loss module's result, or such a value an inlined helper returns)."""
    if loop_dataflow.makes_new_tensor(value, ctx) or (
            isinstance(value, ast.Call) and module_loss_calls.loss_class(value, ctx)):
        return True
    result = _returned(value, ctx) if depth < inline_helper_calls.MAX_DEPTH else None
    return result is not None and _fresh(result, ctx, depth + 1)


def _returned(call: ast.expr, ctx: PassContext, at: int | None = None) -> ast.expr | None:
    """What the helper ``call`` calls (one ``inline_helper_calls`` inlines) returns, or item
    ``at`` of the tuple it returns; a local name it returns is its last value in the helper
    (``loss = 1 - num / den``, ``return loss``). None: not such a call."""
    helper = inline_helper_calls.inlinable_helper(call, ctx) \
        if isinstance(call, ast.Call) else None
    result = helper.body[-1].value if helper else None
    if at is not None:
        result = result.elts[at] if isinstance(result, ast.Tuple) else None
    if isinstance(result, ast.Name):
        result = next((b.value for b in reversed(helper.body) if isinstance(b, ast.Assign)
                       and [ast.unparse(t) for t in b.targets] == [result.id]), None)
    return result


def _own_reason(s: ast.stmt, index: str, seeds: set[str], ctx: PassContext,
                local: set[str] = frozenset()) -> str:
    """Why ``s`` alone is no vectorizable, effect-free loop body ("" when it is). ``local``:
    names the statements before it in the iteration bind; ``v = v.clamp(0)`` rebinding one reads
    a value of the iteration (an input here), not the previous iteration's."""
    if is_vectorized_guard(s):  # an inner loop vectorized on its own: its form runs in each
        return f"the inner loop at line {guard_line(s)}, which runs vectorized in each iteration"
    rebound = sorted(stmt_loads(s) & stores(s) & local) \
        if isinstance(s, (ast.Assign, ast.AugAssign)) else []
    if rebound:
        inputs = {n: f"{n} before line {s.lineno}" for n in rebound}  # no name the code has
        s, seeds = _LoadsRenamed(inputs).visit(clone(s)), seeds | set(inputs.values())
    try:
        facts = loop_dataflow.analyze([s], index, seeds, set(), ctx)
    except Unsupported as exc:
        return _named_back(exc.reason, inputs if rebound else {})
    effect = next(iter(facts.effects.values()), None)
    if effect is None:
        return ""
    return f"{_EFFECT_VERBS[effect.kind]} `{effect.name}`, which outlives the iteration"


def _named_back(reason: str, inputs: dict[str, str]) -> str:
    """``reason`` with the stand-in names of ``_own_reason`` (``v before line 5``) named as the
    user's statement names them."""
    for name, stand_in in inputs.items():
        reason = reason.replace(stand_in, name)
    return reason


def _operands_out(body: list[ast.stmt], index: str, seeds: set[str],
                  ctx: PassContext) -> tuple[list[ast.stmt], dict[int, ast.stmt]]:
    """``body`` with the heavy operands of its residual statements bound first:
    ``print(F.mse_loss(a[i], b[i]).item())`` -> ``_value = F.mse_loss(a[i], b[i]).item()``,
    ``print(_value)``; the new statement may then be hoisted. Only operands the statement
    always evaluates (not under ``and``/``or``, a conditional expression, a comprehension or
    an assert's message) or, in an ``if``, those of a top-level statement of a branch
    (``_operand_roots``), each the largest effect-free vectorizable one that can be stacked
    (``_is_number``), reading nothing the statement writes: evaluating it first changes nothing
    else. Also the statements as written, by their new position."""
    out, written = [], {}
    carried = _exposed_reads(body, set(seeds))[0] & loop_dataflow.stores_in(body)
    for s in body:
        if _own_reason(s, index, seeds, ctx):
            original, s = s, clone(s)
            while (found := _heavy_operand(s, index, seeds, carried, ctx)) is not None:
                operand, bound, name = found
                written[len(out)] = original
                out.append(bound)
                _Substitute(operand, name).visit(s)
                written[len(out)] = original
        out.append(s)
    return out, written


def _heavy_operand(s: ast.stmt, index: str, seeds: set[str], carried: set[str],
                   ctx: PassContext) -> tuple[ast.expr, ast.stmt, str] | None:
    """The first operand of ``s`` to bind first (``_operands_out``), the statement binding it
    and its fresh name; none reading a name carried from one iteration to the next or one
    ``s`` writes (it would stay residual). The loop index is a Python int: a call taking it
    (``print(i, ...)``) does not change it."""
    written = _written_first(s, ctx) - ({index} - loop_dataflow.stores_in([s])) | carried
    for roots, template in _operand_roots(s, written):
        todo = list(roots)
        while todo:
            e = todo.pop(0)
            kind = _is_number(e, ctx)  # a branch's value is stacked by `torch.where`: a tensor
            if _heavy(e, ctx) and kind is not None and not (_reads(e) & written) and (
                    template == "n = e" or not kind and _rows_only(e, seeds, ctx)):
                point = ctx.namer.checkpoint()
                name = ctx.namer.new("value")
                bound = replace(template, loc=e, n=name, e=e, c=getattr(s, "test", None))[0]
                if not _own_reason(bound, index, seeds, ctx):
                    return e, bound, name
                ctx.namer.rollback(point)
            todo[:0] = _always_evaluated(e)
    return None


def _written_first(s: ast.stmt, ctx: PassContext) -> set[str]:
    """What ``s`` may write before its operands are evaluated: an assignment to names or
    attributes (``self.acc_loss += e``) stores its target after its value, so only what the
    value writes."""
    if isinstance(s, (ast.Assign, ast.AugAssign)) and all(
            _name_or_attribute(t) for t in getattr(s, "targets", [getattr(s, "target", None)])):
        return _writes(ast.Expr(value=s.value), ctx)
    return _writes(s, ctx)


def _name_or_attribute(t: ast.expr) -> bool:
    """``n``, ``self.acc_loss``: a target with no part evaluated by a call or an index."""
    while isinstance(t, ast.Attribute):
        t = t.value
    return isinstance(t, ast.Name)


def _operand_roots(s: ast.stmt, written: set[str]):
    """The expressions whose always-evaluated operands ``_heavy_operand`` may bind first, each
    with the template binding one: ``s``'s own value or test, then, for an ``if`` whose test
    reads nothing ``s`` writes, those of the top-level statements of its branches, bound for
    every iteration (``if c: n = e`` ``else: n = 0``, a tensor). The hoisted loop evaluates
    ``e`` only where the branch runs (its ``torch.where`` masks put the other iterations'
    operands in the op's domain, or the vectorizer refuses the statement), and the residual
    ``if`` reads ``n`` only there: values and gradients are those of the original."""
    yield _own_operands(s), "n = e"
    if isinstance(s, ast.If) and not (_reads(s.test) & written):
        for branch, template in ((s.body, "if c:\n n = e\nelse:\n n = 0"),
                                 (s.orelse, "if c:\n n = 0\nelse:\n n = e")):
            for b in branch:
                yield _own_operands(b), template


def _rows_only(e: ast.expr, seeds: set[str], ctx: PassContext) -> bool:
    """Every value ``e`` reads is a row of the iteration (``x[i]``, ``p[:, c]``, ``x[idx[i]]``)
    or an element the loop iterates; names it calls do not count. The hoisted loop masks such
    rows into the op's domain where a branch is skipped; a tensor read whole (a weight ``W``)
    is not masked, and an infinite one would make the skipped iterations' gradient NaN
    (``0 * inf``) where the original has none."""
    ok = set()
    for n in walk(e):
        if isinstance(n, ast.Call) and module_loss_calls.loss_class(n, ctx):
            ok |= {id(m) for m in walk(n.func)}  # `self.ce`: a module, not a tensor it reads
        elif isinstance(n, ast.Call):
            root = n.func
            while isinstance(root, ast.Attribute) and loop_dataflow.resolve_call(n.func, ctx):
                root = root.value  # `F.mse_loss`, `torch.sqrt`: a module's function
            ok.add(id(root))
        elif isinstance(n, ast.Subscript) and loads(n.slice) & seeds:
            ok.add(id(n.value))
    return all(id(n) in ok or n.id in seeds for n in walk(e)
               if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load))


def _own_operands(s: ast.stmt) -> list[ast.expr]:
    """The value or test ``s`` always evaluates."""
    return [getattr(s, f) for f in ("value", "test") if isinstance(getattr(s, f, None), ast.expr)]


def _always_evaluated(e: ast.expr) -> list[ast.expr]:
    """The operands of ``e`` evaluated whenever ``e`` is, in order."""
    if isinstance(e, ast.BoolOp):
        return e.values[:1]
    if isinstance(e, ast.IfExp):
        return [e.test]
    if isinstance(e, ast.Call):  # a method is no value (the bound `a.sum().item`): its receiver is
        return ([e.func.value] if isinstance(e.func, ast.Attribute) else []) + e.args
    if isinstance(e, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp,
                      ast.NamedExpr)):
        return []
    return [c for c in ast.iter_child_nodes(e) if isinstance(c, ast.expr)]


class _Substitute(ast.NodeTransformer):
    """Replaces one node (by identity) with a name."""

    def __init__(self, node: ast.expr, name: str):
        self.node, self.name = node, name

    def visit(self, node: ast.AST) -> ast.AST:
        if node is self.node:
            return ast.copy_location(ast.Name(id=self.name, ctx=ast.Load()), node)
        return self.generic_visit(node)


def _mark_carried(split: _Split, seeds: set[str], ctx: PassContext) -> set[str]:
    """Statements reading or binding a name carried from the previous iteration stay residual;
    the carried names."""
    bound = loop_dataflow.stores_in(split.body)
    defined, exposed = set(seeds), []
    for s in split.body:
        reads, defined = _exposed_reads([s], defined)
        exposed.append(reads)
    carried = set().union(*exposed) & bound
    for k, s in enumerate(split.body):
        touched = sorted((_reads(s) | _writes(s, ctx)) & carried)
        if touched and k not in split.residual:
            split.residual[k] = f"`{touched[0]}` is carried from one iteration to the next"
    return carried


def _exposed_reads(stmts: list[ast.stmt], defined: set[str]) -> tuple[set[str], set[str]]:
    """Names ``stmts`` read before binding them; the names surely bound after them."""
    exposed = set()
    for s in stmts:
        if isinstance(s, ast.If):
            exposed |= loads(s.test) - defined
            body, after_body = _exposed_reads(s.body, defined)
            orelse, after_orelse = _exposed_reads(s.orelse, defined)
            exposed |= body | orelse
            defined = defined | (after_body & after_orelse)
        elif isinstance(s, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr)):
            exposed |= stmt_loads(s) - defined
            defined = defined | stores(s)
        else:  # other compound statements: every name they mention, none surely bound
            exposed |= {n.id for n in walk(s) if isinstance(n, ast.Name)} - defined
    return exposed, defined


def _close(split: _Split, live_after: set[str], variant: set[str],
           ctx: PassContext) -> list[str]:
    """Move statements to the residual loop until no dependence runs from it to a hoisted one;
    the names the hoisted statements export (stacked, read by index)."""
    body = split.body
    while True:
        written = {n: k for k in sorted(split.residual) for n in _writes(body[k], ctx)
                   - ({split.index} - loop_dataflow.stores_in([body[k]]))}
        read = {n: k for k in sorted(split.residual, reverse=True) for n in _reads(body[k])}
        needed = set(read) | live_after
        picked = _picked(body, split, ctx)
        partial = _read_in_some_iterations(body, split, variant, ctx)
        moved = False
        for k in split.hoisted():
            # a value made of nothing a gradient flows from (`r = x[i].item()`) has no backward
            bound = loop_dataflow.stores_in([body[k]]) if _gradient_loads(body[k], ctx) else set()
            why = "its value flows into an item a builtin `max`/`min` picks from (stacked, " \
                "the backward would also run for the items not picked: 0 * NaN/inf)" \
                if bound & picked else "its value is differentiated only in the iterations " \
                "a residual `if` selects (stacked, the backward would also run for the others: " \
                "0 * NaN/inf)" if bound & partial and not isinstance(body[k], ast.If) \
                and loop_dataflow.may_be_nonfinite(body[k], ctx) is not None else \
                _dependence(split, k, written, read, needed, variant, ctx)
            if why:
                split.residual[k] = why
                moved = True
                break
        if not moved:
            hoisted = [body[k] for k in split.hoisted()]
            return sorted(loop_dataflow.stores_in(hoisted) & needed)


def _picked(body: list[ast.stmt], split: _Split, ctx: PassContext) -> set[str]:
    """Names whose values flow, through residual statements, into an item of a builtin
    ``max``/``min`` in the residual loop (``lo = min(lo, v)``, ``d = max(eps, v)``). Such a
    value is not stacked: read back by index, only the picked item's would get a cotangent, but
    the batched backward would run for all of them (0 times an infinite or NaN local derivative
    is NaN), so the statements making it stay residual, as the vectorizer evaluates a picked
    item again. A value reaching the pick only as a Python number (``max(1.0, n.item())``)
    takes no gradient there (``loop_dataflow.gradient_walk``)."""
    names: set[str] = set()
    for k in split.residual:
        for n in walk(body[k]) if k != split.stop else ():  # its branch: as written
            if isinstance(n, ast.Call) and rules.ACC_CALLS.get(
                    loop_dataflow.resolve_call(n.func, ctx) or "") in rules.FAMILY_PICK:
                names |= set().union(*(_gradient_loads(a, ctx) for a in n.args))
    grown = True
    while grown:
        more = set().union(*(_gradient_loads(body[k], ctx) for k in split.residual
                             if loop_dataflow.stores_in([body[k]]) & names))
        grown = not more <= names
        names |= more
    return names


def _gradient_loads(node: ast.AST, ctx: PassContext) -> set[str]:
    """Names ``node`` reads where a gradient may flow from them (not as ``n.item()``); ``n += e``
    reads ``n``."""
    nodes = list(loop_dataflow.gradient_walk(node, ctx))
    return {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} | {
        n.target.id for n in nodes if isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name)}


def _read_in_some_iterations(body: list[ast.stmt], split: _Split, variant: set[str],
                             ctx: PassContext) -> set[str]:
    """Names whose values flow into a gradient read by a residual statement in a branch of an
    ``if`` whose test varies with the iteration. The original differentiates them only in the
    iterations that take the branch; stacked, their backward would run for all (0 times an
    infinite or NaN local derivative is NaN). A hoisted ``if`` (``_operands_out``'s branch
    operand) computes its value under its mask, from zeroed operands: it is not affected; nor
    is the ``if`` a ``break`` or ``return`` ends (``split.stop``): its branch runs only in the
    iteration that stops, after the statements before it as written (``breaking_iteration``)."""
    names = {m.id for k in split.residual if k != split.stop for n in walk(body[k])
             if isinstance(n, ast.If) and loop_dataflow.depends(n.test, variant, ctx)
             for s in n.body + n.orelse for m in loop_dataflow.gradient_walk(s, ctx)
             if isinstance(m, ast.Name) and isinstance(m.ctx, ast.Load)}
    grown = True
    while grown:
        more = set().union(*(_reads(s) for s in body if not isinstance(s, ast.If)
                             and loop_dataflow.stores_in([s]) & names))
        grown = not more <= names
        names |= more
    return names


def _dependence(split: _Split, k: int, written: dict[str, int], read: dict[str, int],
                needed: set[str], variant: set[str], ctx: PassContext) -> str:
    """Why hoisted statement ``k`` must join the residual loop ("" when it need not). Reading
    other attributes of an object than the residual loop writes is no dependence
    (``_attributes``)."""
    body = split.body
    s = body[k]
    for n in sorted(_reads(s) & written.keys()):
        if not _attributes_apart(s, [body[j] for j in split.residual], n, ctx):
            return f"reads `{n}`, which line {body[written[n]].lineno} (residual) " \
                   f"{_how_written(body[written[n]], n, ctx)}"
    for n in sorted(_writes(s, ctx)):
        if n in written:
            how = _how_written(body[written[n]], n, ctx)
            return f"binds `{n}`, as line {body[written[n]].lineno} (residual) does" \
                if how == "binds" else \
                f"binds `{n}`, which line {body[written[n]].lineno} (residual) {how}"
        if n in read and read[n] < k:
            return f"binds `{n}`, which line {body[read[n]].lineno} (residual) reads before"
    last = {n: j for j in range(len(body)) for n in loop_dataflow.stores_in([body[j]])}
    for n in sorted(loop_dataflow.stores_in([s]) & needed):
        if last[n] == k and not _stackable(s, n, variant, ctx):
            value = _bound_value(s, n, ctx) if n in ctx.namer.made else None  # `_value = e`
            return f"`{unparse(value) if value else n}` is read by the residual loop or after " \
                   "the loop, and is not a per-iteration tensor value"
    return ""


def _attributes_apart(s: ast.stmt, residual: list[ast.stmt], name: str,
                      ctx: PassContext) -> bool:
    """``s`` and the residual statements reach the object ``name`` holds only through
    attributes, none of them the same (``_value = self.criterion(a, b)`` against
    ``self.acc_loss += _value``): attributes are plain, writing one changes no other."""
    read = _attributes(s, name, ctx)
    if read is None:
        return False
    for r in residual:
        written = _attributes(r, name, ctx)
        if written is None or written & read:
            return False
    return True


def _attributes(s: ast.stmt, name: str, ctx: PassContext) -> set[str] | None:
    """The attributes of ``name`` that ``s`` mentions (``self.hist.append(v)``: hist); None
    when it reaches the object itself: binds the name, hands it to a call, calls a method on it
    (but a call of an ``nn`` loss module it holds, ``module_loss_calls``)."""
    attrs, through = set(), set()
    for n in walk(s):
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) \
                and n.value.id == name:
            attrs.add(n.attr)
            through.add(id(n.value))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) \
                and isinstance(n.func.value, ast.Name) and n.func.value.id == name \
                and not module_loss_calls.loss_class(n, ctx):
            return None
    bare = any(isinstance(n, ast.Name) and n.id == name and id(n) not in through
               for n in walk(s))
    return None if bare else attrs


def _stackable(s: ast.stmt, name: str, variant: set[str], ctx: PassContext) -> bool:
    """``name = <value>`` (or a branch's operand bound first, an item of a helper's tuple:
    ``_bound_value``), the value varying with the iteration and made by a call or a subscript
    other than a shape query (``x.shape[0]`` is a Python int), with a known kind
    (``_is_number``)."""
    value = _bound_value(s, name, ctx)
    return (value is not None and name in variant and _is_number(value, ctx) is not None
            and any(isinstance(n, (ast.Call, ast.Subscript)) and not is_shape_query(n, ctx)
                    and not is_shape_query(getattr(n, "value", None), ctx)  # `x.shape[0]`
                    for n in walk(value)))


def _bound_value(s: ast.stmt, name: str, ctx: PassContext) -> ast.expr | None:
    """The value ``s`` binds to ``name``: ``name = <value>``, for a branch's operand bound
    first (``if c: name = <value>`` ``else: name = 0``, ``_operand_roots``) the branch's value,
    for ``name, n = helper(...)`` the item the helper returns (``_returned``)."""
    if isinstance(s, ast.If) and name in ctx.namer.made:
        s = next((b for b in s.body + s.orelse
                  if not (isinstance(b, ast.Assign) and isinstance(b.value, ast.Constant))), s)
    if isinstance(s, ast.Assign) and len(s.targets) == 1 \
            and isinstance(s.targets[0], ast.Name) and s.targets[0].id == name:
        return s.value
    names = [t.id if isinstance(t, ast.Name) else None for t in getattr(
        s.targets[0], "elts", [])] if isinstance(s, ast.Assign) and len(s.targets) == 1 else []
    if name in names:  # `l, n = helper(...)`: the item of the tuple the helper returns
        return _returned(s.value, ctx, names.index(name))
    return None


def _is_number(value: ast.expr, ctx: PassContext) -> bool | None:
    """True for a host round trip returning a Python number (``t.item()``, ``int(t)``: the
    stacked values go back as ``.tolist()``), False for a tensor (no host round trip in it),
    None for anything else (``t.item() * 2``, ``bool(t)``): not stacked."""
    hosts = [n for n in walk(value) if isinstance(n, ast.Call) and call_op(n, ctx).host]
    if not hosts:
        return False
    if hosts == [value] and call_op(value, ctx).host_number:
        return True
    return None


def _reads(s: ast.stmt) -> set[str]:
    """Names ``s`` reads anywhere in it, not a comprehension's own (``[j for j in ...]`` reads
    no ``j`` of the loop); ``n += e`` reads ``n``."""
    return loop_dataflow.free_loads(s) | {n.target.id for n in walk(s)
                       if isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name)}


def _writes(s: ast.stmt, ctx: PassContext) -> set[str]:
    """Names ``s`` binds, deletes or may mutate (``_mutated``, and the arguments of functions
    the registry does not know, but for helpers ``inline_helper_calls`` inlines and ``nn`` loss
    modules ``module_loss_calls`` knows: they have no side effects). A comprehension's targets
    are its own scope's."""
    own = {t for c in walk(s) if isinstance(c, ast.comprehension) for t in walk(c.target)}
    names = {n.id for n in walk(s) if isinstance(n, ast.Name) and n not in own
             and isinstance(n.ctx, (ast.Store, ast.Del))}
    return names | set(_handed_on(s, ctx)) | _mutated(s, ctx) | loop_dataflow.stores_in([s])


def _handed_on(s: ast.stmt, ctx: PassContext) -> dict[str, ast.Call]:
    """The names ``s`` hands to a function that may change them (one the registry does not
    know, see ``_writes``), each with the first such call."""
    found: dict[str, ast.Call] = {}
    for n in walk(s):
        if isinstance(n, ast.Call) and call_op(n, ctx) is ops.UNKNOWN \
                and loop_dataflow.method_name(n, ctx) is None \
                and inline_helper_calls.inlinable_helper(n, ctx) is None \
                and not module_loss_calls.loss_class(n, ctx):
            for r in map(root_name, n.args):
                if r:
                    found.setdefault(r, n)
    return found


def _how_written(s: ast.stmt, name: str, ctx: PassContext) -> str:
    """How residual statement ``s`` writes ``name`` (one of ``_writes``), said in a reason: a
    name only handed to an unknown function is not bound, that function may change it."""
    if name in _mutated(s, ctx) - loop_dataflow.stores_in([s]):
        return "changes in place"
    call = _handed_on(s, ctx).get(name)
    if call is not None and name not in loop_dataflow.stores_in([s]):
        return f"hands to `{unparse(call.func)}(...)`, which may change it"
    return "binds"


def _written_in_place(split: _Split) -> set[str]:
    """The names whose tensors residual statements write into (``t[k] = v``, ``t[k].mul_(2)``;
    not attributes of objects, ``self.total += l``)."""
    stmts = [split.body[k] for k in split.residual]
    targets = [n.value for n in walk(ast.Module(stmts, [])) if isinstance(n, ast.Subscript)
               and isinstance(n.ctx, ast.Store)] + [
        s.value.func.value for s in walk(ast.Module(stmts, [])) if isinstance(s, ast.Expr)
        and loop_dataflow.mutates_local(s)]
    return {root_name(t) for t in targets} - {None} - loop_dataflow.stores_in(stmts)


def _mutated(s: ast.stmt, ctx: PassContext) -> set[str]:
    """Names whose object ``s`` may change in place: subscript and attribute targets, receivers
    of methods other than the registry's pure tensor ops, ``+=`` targets."""
    names = set()
    for n in walk(s):
        root = None
        if isinstance(n, (ast.Subscript, ast.Attribute)) and isinstance(n.ctx, ast.Store):
            root = n.value
        elif isinstance(n, ast.Call) and _may_mutate(n, ctx):
            root = n.func.value
        elif isinstance(n, ast.AugAssign):
            root = n.target
        name = root_name(root)
        if name:
            names.add(name)
    return names


def _may_mutate(call: ast.Call, ctx: PassContext) -> bool:
    meth = loop_dataflow.method_name(call, ctx)
    if meth is None or module_loss_calls.loss_class(call, ctx):
        return False
    spec = call_op(call, ctx)
    return spec is ops.UNKNOWN or spec.effect is not None or meth.endswith("_")


def _heavy(s: ast.AST, ctx: PassContext) -> bool:
    """``s`` does real work per item (``_work``)."""
    return any(_node_work(n, ctx, 0) for n in walk(s))


def _work(stmts: list[ast.stmt], ctx: PassContext) -> int:
    """How many ops doing real work per item ``stmts`` run, a call the registry does not
    know (``self.criterion(...)``; not a list's or a logger's method) counted as one."""
    return sum(_node_work(n, ctx, 0) or _unknown_call(n, ctx) for s in stmts for n in walk(s))


def _unknown_call(n: ast.AST, ctx: PassContext) -> bool:
    return isinstance(n, ast.Call) and call_op(n, ctx) is ops.UNKNOWN and ops.effect(
        loop_dataflow.resolve_call(n.func, ctx), loop_dataflow.method_name(n, ctx), n) is None


def _node_work(n: ast.AST, ctx: PassContext, depth: int) -> int:
    """Ops doing real work in ``n`` itself: one for an op of ``_HEAVY_FORMS`` or a matrix
    product ``@`` or a call of an ``nn`` loss module (``module_loss_calls``); for a call of a
    helper of the user's module that ``inline_helper_calls`` inlines, those of its body."""
    if isinstance(n, ast.BinOp) and isinstance(n.op, ast.MatMult):
        return 1
    if not isinstance(n, ast.Call):
        return 0
    spec = call_op(n, ctx)
    if spec.batched in _HEAVY_FORMS and not spec.recomputed or module_loss_calls.loss_class(n, ctx):
        return 1
    helper = inline_helper_calls.inlinable_helper(n, ctx) \
        if depth < inline_helper_calls.MAX_DEPTH else None
    return sum(_node_work(m, ctx, depth + 1) for m in walk(helper)) if helper else 0


def _covers(s: ast.stmt, lineno: int | None) -> bool:
    return lineno is not None and s.lineno <= lineno <= (s.end_lineno or s.lineno)


def _hoisted_loop(node: ast.For, hoisted: list[ast.stmt], lists: dict[str, str]) -> ast.For:
    """``for <header>: <hoisted statements>; _n_all.append(n) ...`` (a fresh copy)."""
    appends = [ast.Expr(replace("lst.append(v)", loc=node, lst=lst, v=name))
               for name, lst in lists.items()]
    loop = ast.For(target=clone(node.target), iter=clone(node.iter),
                   body=clone(hoisted) + appends, orelse=[], type_comment=None)
    return ast.copy_location(loop, node)


def _residual_loop(node: ast.For, it: Iteration, split: _Split, lists: dict[str, str],
                   plan: LoopPlan, ctx: PassContext, names: tuple[str, str]) -> list[ast.stmt]:
    """``_n_all = <stacked n>`` per exported name, then the loop as written with the residual
    statements only, each iteration first reading its values: ``n = _n_all[i]``."""
    stmts, header, copied = [], node, set()
    hoisted = [split.body[k] for k in split.hoisted()]
    for name, lst in lists.items():
        binding = [s for s in hoisted if name in loop_dataflow.stores_in([s])][-1]
        value = _bound_value(binding, name, ctx)
        number = _is_number(value, ctx)
        how = "v.tolist()" if number else "v.unbind(0)"
        stmts += replace(f"lst = {how}", loc=node, lst=lst, v=plan.own_list_values[lst].values)
        copied |= set() if number else {name}
    index = it.index
    if it.elements or not (is_int(it.start, 0) and is_int(it.step, 1) and it.index_is_user):
        index = ctx.namer.new("k")
        header = replace("for k, t in enumerate(s): pass", loc=node, k=index,
                         t=clone(node.target), s=clone(node.iter))[0]
    at = reversed_ranges.position(node, index, ctx)  # counting down over `reversed(xs)`
    reads = [replace("n = lst[k].clone()" if split.copies and name in copied else "n = lst[k]",
                     loc=node, n=name, lst=lst, k=at)[0] for name, lst in lists.items()]
    loop = ast.For(target=header.target, iter=header.iter,
                   body=_residual_body(split, reads, names, index), orelse=[], type_comment=None)
    return stmts + [ast.copy_location(loop, node)]


def _residual_body(split: _Split, reads: list[ast.stmt], names: tuple[str, str],
                   index: str) -> list[ast.stmt]:
    """The reads of the stacked values, then the residual statements; with a ``break``, the
    iteration that breaks first (``distribute_breaks.breaking_iteration``), the ``if`` left."""
    residual = [s for k, s in enumerate(split.body) if k in split.residual and k != split.stop]
    if split.stop is None:
        return reads + residual
    return [distribute_breaks.breaking_iteration(split.body, split.stop, names, index)] + \
        reads + residual


def _reason(split: _Split, plan: LoopPlan, ctx: PassContext) -> str:
    lines = list(dict.fromkeys(str(split.body[k].lineno) for k in split.hoisted()))
    hoisted = ("lines " if len(lines) > 1 else "line ") + ", ".join(lines)
    how = f"vmap: {plan.unbatched}" if plan.unbatched else "batched"
    if split.stop is not None:
        word = distribute_breaks.keyword(split.body, split.stop)
        how += f", over the iterations before the `{word}` at line " \
               f"{split.body[split.stop].lineno}, counted first"
    return f"{hoisted} hoisted into one loop ({how}); {_residual(split, ctx)}"


def _residual(split: _Split, ctx: PassContext) -> str:
    """The residual statements, each with why it stays, at the user's file:line: a statement
    whose operands were bound first (``_value = e``, then the statement reading ``_value``) is
    one statement the user wrote, listed once, with why its first part stays."""
    first = {}
    for k, why in sorted(split.residual.items()):
        first.setdefault(id(split.written.get(k, split.body[k])), (k, why))
    kept = "; ".join(f"{ctx.where(split.body[k])} "
                     f"`{_first_line(split.written.get(k, split.body[k]))}`: {why}"
                     for k, why in first.values())
    return f"residual loop: {kept}"


def _first_line(s: ast.stmt) -> str:
    """The first line of ``s`` as the user wrote it (an inlined method's statement too, an
    inner loop's for a vectorized form of it)."""
    s = s.orelse[0] if is_vectorized_guard(s) else s
    text = (ast_marks.get(s, ast_marks.WRITTEN_AS) or unparse(s)).strip().splitlines()[0]
    return text[:-1] + " ..." if text.endswith(":") else text
