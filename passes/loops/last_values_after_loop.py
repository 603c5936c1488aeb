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

from ..ast_tools import PassContext, is_int, walk
from ..errors import Unsupported
from .loop_dataflow import loads, makes_new_tensor, stores
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
        raise Unsupported(f"`{selections[0]}` is read after the loop: the last iteration's "
                          "selection, whose size varies per iteration")
    for name in sorted(live):
        value = _last_value(plan, name, tensors)
        if value is not None:
            plan.folds += plan.sub("n = v", n=name, v=value)
            folded.add(name)
    plan.live_after = plan.live_after - folded
    return plan


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
