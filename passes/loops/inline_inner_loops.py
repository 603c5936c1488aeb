"""Stage: inner loops already vectorized become their vectorized statements in the outer body.

Inner loops are vectorized first; an outer loop then maps over the inner's vectorized form
(nested vmap). The inner's runtime check must not depend on the outer iteration: it joins the
outer loop's check (``plan.inner_checks``)::

    for i in range(n):                          for i in range(n):
        if <inner check>:                           <inner vectorized statements>
            'optimize_loss: loop ... vectorized' ->
            <inner vectorized statements>
        else:
            <inner loop as written>

``isinstance(i, int)`` on the outer index is dropped (the outer loop makes ``i`` a slice), and
lists an inner loop bound to its stacked items have their consumers read them directly
(``normalize_comprehensions.bound_list_consumers``).
"""
from __future__ import annotations

import ast

from .. import ast_marks
from ..ast_tools import PassContext, unparse
from ..errors import Unsupported
from . import normalize_comprehensions
from .loop_dataflow import loads, stores_in
from .plan import LoopPlan
from .runtime_checks import conjuncts, is_vectorized_guard


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    seeds = {it.index} | {n for n, _ in it.elements}
    plan.body = _inline(plan.body, seeds, plan.inner_checks, ctx)
    return plan


def _inline(body: list[ast.stmt], seeds: set[str], checks: list[ast.expr],
            ctx: PassContext) -> list[ast.stmt]:
    """``body`` with its vectorized inner loops inlined; their checks appended to ``checks``."""
    assigned = stores_in(body)
    out, stacked = [], set()
    for s in body:
        if is_vectorized_guard(s):
            stacked |= ast_marks.get(s, ast_marks.BOUND_LISTS, set())
            for g in conjuncts(s.test):
                if _is_int_check(g, seeds):
                    continue  # the inner writes out[i, ...]: this loop makes i a slice
                if loads(g) & (seeds | assigned):
                    raise Unsupported(f"the inner loop at line {s.lineno} needs a "
                                      f"per-iteration runtime check: {unparse(g)}")
                checks.append(g)
            out += s.body[1:]
        elif isinstance(s, ast.If):
            s.body = _inline(s.body, seeds, checks, ctx)
            s.orelse = _inline(s.orelse, seeds, checks, ctx)
            out.append(s)
        else:
            out.append(s)
    if stacked:  # lists an inlined loop built: the stacked items here
        block = ast.Module(out, [])
        normalize_comprehensions.bound_list_consumers(block, stacked, ctx, stacked=True)
        out = block.body
    return out


def _is_int_check(g: ast.expr, names: set[str]) -> bool:
    """``isinstance(i, int)`` for one of ``names``."""
    return (isinstance(g, ast.Call) and isinstance(g.func, ast.Name) and g.func.id == "isinstance"
            and len(g.args) == 2 and isinstance(g.args[0], ast.Name) and g.args[0].id in names
            and isinstance(g.args[1], ast.Name) and g.args[1].id == "int")
