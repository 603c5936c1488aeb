"""Stage: the runtime check in front of the vectorized loop, which holds when the loop's values
are what the vectorized form assumes (else the loop runs as written)::

    for i in range(len(pred)):        ->    isinstance(pred, torch.Tensor) and pred.dim() > 0
        loss += (pred[i] - t[i]) ** 2       and isinstance(t, torch.Tensor)
                                            and isinstance(len(pred), int) and len(pred) > 0

In order: the checks stages before this one collected (rows, inner loops, selections); what the
body iterates or indexes by the loop is a tensor (read under a Python condition of the body: where
it holds, ``not <condition> or isinstance(x, torch.Tensor)``); tensors written are tensors,
lists appended to lists; at least one iteration; last, the inlined helpers are still those
functions (read only once the loop runs at all).
"""
from __future__ import annotations

import ast
from collections.abc import Iterator

from ..ast_tools import PassContext, is_pure, unparse, walk
from .. import storage_checks
from .loop_dataflow import depends, free_loads, loads, stores, stores_in
from .plan import MARKER, LoopPlan, is_vectorized_guard  # (is_vectorized_guard: used here too)

# Leads the statements where a vectorized branch runs the loop as written after all.
AS_WRITTEN = "optimize_loss: as written, the loop at line {}: {}"
# Statements whose reads not every iteration makes.
_CONDITIONAL = (ast.If, ast.Try, ast.For, ast.While, ast.With)


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it, facts = plan.iteration, plan.facts
    seeds = {it.index} | {name for name, _ in it.elements} | {
        r.param for r in plan.row_slices.values()}
    for g in plan.inner_checks + plan.selection_checks + plan.pick_checks:
        plan.checks.add(plan.sub("g", g=g))
    for _, src in it.elements:
        plan.check("isinstance(x, torch.Tensor)", x=src)
        plan.check("x.dim() > 0", x=src)
    # names bound anywhere in the body, also inside outlined inner bodies (their locals)
    body = plan.body
    local = {n.id for s in body for n in walk(s)
             if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)} | {
        a.arg for s in body for a in walk(s) if isinstance(a, ast.arg)}
    for sub, when in _subscripts(body, None, facts.assigned | seeds | local, plan, ctx):
        if is_pure(sub.value) and not (loads(sub.value) & (facts.assigned | seeds | local)) \
                and depends(sub.slice, facts.variant, ctx):
            check = plan.sub("isinstance(x, torch.Tensor)", x=sub.value)
            plan.checks.add(check if when is None else plan.sub("not w or c", w=when, c=check))
    for e in facts.of_kind("write"):
        plan.check("isinstance(x, torch.Tensor)", x=ast.Name(e.name, ast.Load()))
    _written_apart_from_reads(plan, ctx)
    for e in facts.of_kind("append"):
        if e.name not in plan.own_lists and e.name not in plan.buildable_lists:
            # exactly a list: the vectorized form extends it with all the items at once, which a
            # subclass's own ``append`` would never see
            plan.check("type(x) is list", x=ast.Name(e.name, ast.Load()))
    for g in it.runs_at_all(plan):
        plan.checks.add(g)
    for g in plan.helper_checks:  # last: only read once the loop runs at all
        plan.checks.add(plan.sub("g", g=g))
    return plan


def _written_apart_from_reads(plan: LoopPlan, ctx: PassContext) -> None:
    """Each tensor the loop writes in place shares no storage with another one it reads
    (``storage_checks``): through an alias an iteration reads what an earlier one wrote."""
    add_storage_checks(plan, {e.name for e in plan.facts.of_kind("write")}, ctx)


def add_storage_checks(plan: LoopPlan, written: set[str], ctx: PassContext) -> None:
    """Checks that each tensor of ``written`` shares no storage with another one ``plan``'s loop
    reads. The reads checked: those the checks prove tensors, and the function's names
    (parameters, locals) the checks already read or a statement every iteration runs reads (a
    name read only under a condition may be unbound before the loop)."""
    if not written:
        return
    node = plan.node
    # (an inner loop's check reads no name the outer body binds: it is made once, before the
    # outer loop, whose own check covers what that loop writes)
    bound = stores(node) | stores_in(node.body) | plan.outer_binds | plan.outer_indices
    checks = plan.checks.conditions
    safe = {t.id for g in checks for t in proven_tensors(g) if isinstance(t, ast.Name)}
    if ctx.local_names is not None:
        safe |= ctx.local_names & set().union(loads(node.iter), *map(loads, checks), *(
            free_loads(s) for s in node.body if not isinstance(s, _CONDITIONAL)))
    reads = safe & free_loads(node) - bound
    apart = ctx.bind(storage_checks.apart, "apart")
    for name in sorted(written - bound):
        others = [ast.Name(n, ast.Load()) for n in sorted(reads - {name})]
        if others:  # (built, not filled in: a read may have any name, ``t`` too)
            plan.checks.add(ast.Call(ast.Name(apart, ast.Load()), [
                ast.Name(name, ast.Load()), ast.Tuple(others, ast.Load())], []))


def is_storage_check(g: ast.expr, ctx: PassContext) -> bool:
    """``g`` is a check ``_written_apart_from_reads`` made."""
    return isinstance(g, ast.Call) and isinstance(g.func, ast.Name) \
        and ctx.bindings.get(g.func.id) is storage_checks.apart


def _subscripts(stmts: list[ast.stmt], when: ast.expr | None, local: set[str], plan: LoopPlan,
                ctx: PassContext) -> Iterator[tuple[ast.Subscript, ast.expr | None]]:
    """The subscripts of ``stmts``, each with the Python condition it is read under (``if``
    tests the loop does not vary, reading nothing it binds: the tested object may not exist
    otherwise, ``self.weights[c]`` under ``if self.weight is not None``), or None."""
    for s in stmts:
        if isinstance(s, ast.If) and is_pure(s.test) and not loads(s.test) & local \
                and not depends(s.test, plan.facts.variant, ctx):
            yield from ((n, when) for n in walk(s.test) if isinstance(n, ast.Subscript))
            test = s.test if when is None else plan.sub("w and t", w=when, t=s.test)
            yield from _subscripts(s.body, test, local, plan, ctx)
            yield from _subscripts(s.orelse, plan.sub("not t", t=test), local, plan, ctx)
            continue
        yield from ((n, when) for n in walk(s) if isinstance(n, ast.Subscript))


def guard_line(guard: ast.If) -> int:
    """The user's line of the loop a vectorized guard (``is_vectorized_guard``) stands for."""
    return int(guard.body[0].value.value[len(MARKER.split("{}")[0]):].split()[0])


def is_as_written(node: ast.AST) -> bool:
    """The ``if <a fold would promote>: <AS_WRITTEN>; <the loop> else: <folds>`` that
    ``promoting_folds_run_as_written`` emits."""
    return (isinstance(node, ast.If) and len(node.body) >= 2
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
            and isinstance(node.body[0].value.value, str)
            and node.body[0].value.value.startswith(AS_WRITTEN.split("{}")[0]))


def as_written_branch(node: ast.AST) -> list[ast.stmt] | None:
    """The branch of ``node`` that runs a loop as written: the original a vectorized guard
    keeps, or the loop of an as-written branch; None for other nodes."""
    return node.orelse if is_vectorized_guard(node) else node.body if is_as_written(node) else None


def conjuncts(test: ast.expr) -> list[ast.expr]:
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return list(test.values)
    return [test]


def proven_tensors(check: ast.expr) -> list[ast.expr]:
    """What ``check`` proves to be tensors: its ``isinstance(x, torch.Tensor)`` conjuncts."""
    return [g.args[0] for g in conjuncts(check) if isinstance(g, ast.Call)
            and isinstance(g.func, ast.Name) and g.func.id == "isinstance" and len(g.args) == 2
            and unparse(g.args[1]).endswith(".Tensor")]
