"""Stage: a name the body binds and the code after the loop reads gets its last iteration's value.

The vectorized branch runs only when the loop runs at least once (``Iteration.runs_at_all``),
so there always is a last iteration; with no iteration the loop runs as written and the name
keeps its previous value, or raises the original's ``NameError`` where it is read::

    for i in range(n):                          (vectorized as before, and:)
        d = (x[i] - y[i]).abs().sum()   ->      d = _outs[k][-1]      d returned by each iteration
    return d, i                                 i = n - 1             i = range(a, b, s)[-1]

What gets a last value:

* the index of ``range``/``enumerate``: the range's last element;
* an element of ``for v in xs`` / ``zip`` / ``enumerate``: ``xs[trips - 1]``, the same view of
  the same tensor the last iteration bound;
* a name bound once per iteration by ``name = <tensor op>`` at the top of the body (not under an
  ``if``, not read before it in the iteration): each iteration returns it, and the name is the
  last of the stacked values. Tensor op: a call the op registry knows to make a new tensor, or
  arithmetic with one as an operand, directly or through names so bound before it. A Python
  number stays refused (stacking would make it a tensor), and so does a conditional binding
  (its last binding would be a data-dependent index and a host sync). A name bound to a
  selection's dense stand-in (``masked_selections_to_where``) is refused: the stand-in is not
  the selection.

Bounds and iterables are evaluated again after the loop, so the body must not rebind a name they
read. What this stage folds leaves ``plan.live_after``, so ``loop_dataflow``'s check passes.
"""
from __future__ import annotations

import ast

from .. import ops
from ..ast_tools import PassContext, clone, is_int, is_pure, walk
from ..errors import Unsupported
from .loop_dataflow import call_op, loads, makes_new_tensor, method_name, resolve_call, stores
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    live = plan.live_after & ({it.index} | {name for name, _ in it.elements}
                              | _bound_names(plan.body))
    if not live:
        return plan
    assigned = {n.id for s in plan.body for n in walk(s)
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    header = set().union(*(loads(x) for x in (it.start, it.stop, it.step)),
                         *(loads(src) for _, src in it.elements))
    if header & assigned:
        return plan  # bounds read after the loop would see the body's bindings: keep refusing
    tensors = _tensor_names(plan.body, ctx)
    folded = set()
    selections = sorted(live & plan.stand_ins)
    if selections:
        plan.folds += _last_iteration(plan, selections, ctx)
        folded |= set(selections)
    for name in sorted(live - folded):
        value = _last_value(plan, name, tensors)
        if value is not None:
            plan.folds += plan.sub("n = v", n=name, v=value)
            folded.add(name)
    plan.live_after = plan.live_after - folded
    return plan


def _last_iteration(plan: LoopPlan, names: list[str], ctx: PassContext) -> list[ast.stmt]:
    """The statements of the loop as written that bind ``names`` in its last iteration, to run
    again after the loop, with the loop's variables bound to their last values first: they
    must be among the assignments the body starts with (every iteration runs them), with tensor
    ops and no effects, reading nothing else the body binds. Raises ``Unsupported``."""
    body = plan.node.body
    prefix = []
    for s in body:
        if not (isinstance(s, ast.Assign) and all(isinstance(n, (ast.Name, ast.Tuple))
                                                 for n in s.targets)):
            break
        prefix.append(s)
    later = _stored_names(body[len(prefix):])
    it = plan.iteration
    loop_vars = ({it.index} if it.index_is_user else set()) | {n for n, _ in it.elements}
    needed, kept = set(names), []
    for s in reversed(prefix):
        if stores(s) & needed:
            kept.insert(0, s)
            needed = (needed - stores(s)) | loads(s.value)
    unbound = set(names) & later or set(names) - set().union(*(stores(s) for s in kept))
    outside = (needed - loop_vars) & _stored_names(body)
    effects = next((s for s in kept if not is_pure(s.value, lambda c: _tensor_op(c, ctx))), None)
    if unbound or outside or effects is not None:
        raise Unsupported(f"`{names[0]}` is read after the loop: the last iteration's "
                          "selection, whose size varies per iteration, and it is not bound "
                          "by tensor ops the body starts with")
    firsts = []
    for name in sorted(loop_vars & needed):
        value = _last_value(plan, name, set())
        if value is None:
            raise Unsupported(f"`{names[0]}` is read after the loop: the last iteration's "
                              f"selection, and `{name}` has no last value to compute it from")
        firsts += plan.sub("n = v", n=name, v=value)
    return firsts + [clone(s) for s in kept]


def _stored_names(stmts: list[ast.stmt]) -> set[str]:
    """Names bound anywhere in ``stmts``, nested statements included."""
    return {n.id for s in stmts for n in walk(s) if isinstance(n, ast.Name)
            and not isinstance(n.ctx, ast.Load)}


def _tensor_op(call: ast.Call, ctx: PassContext) -> bool:
    """A torch function or a method the op registry knows, not an in-place one."""
    name = resolve_call(call.func, ctx) or method_name(call, ctx) or ""
    known = name.startswith("torch.") or method_name(call, ctx) is not None \
        and call_op(call, ctx) is not ops.UNKNOWN
    return known and not name.endswith("_") and not any(k.arg == "out" for k in call.keywords)


def _last_value(plan: LoopPlan, name: str, tensors: set[str]) -> ast.expr | None:
    it = plan.iteration
    trips = it.trips(plan)
    if name == it.index and it.index_is_user:
        if is_int(it.step, 1):  # plain arithmetic: a size traced as a symbol stays one
            return plan.sub("b - 1", b=it.stop)
        return plan.sub("range(a, b, s)[-1]", a=it.start, b=it.stop, s=it.step)
    source = dict(it.elements).get(name)
    if source is not None:
        return plan.sub("x[n - 1]", x=source, n=trips)
    if name in tensors:
        return plan.sub("o[-1]", o=plan.output(name))
    return None


def _bound_names(body: list[ast.stmt]) -> set[str]:
    return set().union(*(stores(s) for s in body)) if body else set()


def _tensor_names(body: list[ast.stmt], ctx: PassContext) -> set[str]:
    """Names bound exactly once in ``body``, at its top, to a tensor op's result, and not read in
    the iteration before that binding."""
    counts: dict[str, int] = {}
    for n in (n for s in body for n in walk(s)):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            counts[n.id] = counts.get(n.id, 0) + 1
    tensors: set[str] = set()
    read: set[str] = set()
    for s in body:
        if (isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
                and counts[s.targets[0].id] == 1 and s.targets[0].id not in read | loads(s.value)
                and _is_tensor(s.value, tensors, ctx)):
            tensors.add(s.targets[0].id)
        read |= loads(s)
    return tensors


def _is_tensor(e: ast.expr, tensors: set[str], ctx: PassContext) -> bool:
    if isinstance(e, ast.Name):
        return e.id in tensors
    if isinstance(e, ast.BinOp):
        return _is_tensor(e.left, tensors, ctx) or _is_tensor(e.right, tensors, ctx)
    if isinstance(e, ast.UnaryOp):
        return _is_tensor(e.operand, tensors, ctx)
    return isinstance(e, ast.Call) and makes_new_tensor(e, ctx)
