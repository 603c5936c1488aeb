"""Stage: a loop over an iterator (``iter(...)``, a generator, ``map``/``filter``) iterates a list
of its items, which ``stack_tensor_lists`` then stacks like any list of tensors.

Helpers that accept any iterable read it through ``iter()`` (a NaN-free ``mean`` of per-image
losses takes its first item with ``next`` and sums the rest in a loop). An iterator can be read
only once, so the vectorized form could neither check nor stack it and the loop always ran as
written. The items are taken into a list in front of the guard, under the same name, and both
forms iterate the list::

    values = iter(values)                   values = iter(values)
    acc = next(values)                      acc = next(values)
    for n, v in enumerate(values, 2):  ->   values = list(values)
        acc += v                            <vectorized over the stacked values, else the loop>

The loop read every item anyway (it has no ``break``: ``check_body`` refuses one), so the list
holds the items the loop would have read, in its order; a generator's own work runs before the
loop instead of between its iterations, which changes nothing the loop computes (the body has no
effect the generator could see). Only names the loop's function binds to iterators (and to
nothing else but its parameters) are taken, when the loop is their last read (a later one would
find a list, not an exhausted iterator) and no read is in a loop's body (read again).
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, walk
from .loop_dataflow import resolve_call
from .plan import LoopPlan

_ITERATOR_MAKERS = {"iter", "map", "filter"}


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    taken = {src.id for _, src in plan.iteration.elements if isinstance(src, ast.Name)
             and plan.iterators.get(src.id) == _at(src)}
    for name in sorted(taken):
        plan.prelude += plan.sub("x = list(x)", x=name)
    plan.list_names |= taken
    return plan


def iterator_names(func: ast.FunctionDef, ctx: PassContext) -> dict[str, tuple[int, int]]:
    """Names ``func`` binds to iterators only (besides its parameters) -> where it reads them
    last, when no read is in a loop's body (read again, the iterator would be a list)."""
    made = [t for n in walk(func) if isinstance(n, ast.Assign) and _makes_iterator(n.value, ctx)
            for t in n.targets if isinstance(t, ast.Name)]
    other = {n.id for n in walk(func) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
             and not any(n is t for t in made)}
    names = {t.id for t in made} - other
    bodies = [s for loop in walk(func) if isinstance(loop, (ast.For, ast.While))
              for s in loop.body + loop.orelse + [getattr(loop, "test", None)] if s is not None]
    looped = {n.id for s in bodies for n in walk(s) if isinstance(n, ast.Name) and n.id in names}
    reads: dict[str, tuple[int, int]] = {}
    for n in walk(func):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id in names - looped:
            reads[n.id] = max(reads.get(n.id, (0, 0)), _at(n))
    return reads


def _at(node: ast.AST) -> tuple[int, int]:
    return node.lineno, node.col_offset


def _makes_iterator(value: ast.expr, ctx: PassContext) -> bool:
    return isinstance(value, ast.GeneratorExp) or isinstance(value, ast.Call) \
        and resolve_call(value.func, ctx) in _ITERATOR_MAKERS
