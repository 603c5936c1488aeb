"""Stage: a loop variable the body rebinds becomes a local of the iteration, bound to the item first.

The body reads its own name from then on, so the loop variable stays the item (what the
vectorized form maps over) and the rebinding is an ordinary assignment of the iteration::

    for c in centroids:                     for c in centroids:
        c = c / c.norm()          ->            _c = c
        loss += (c * x).sum()                   _c = _c / _c.norm()
                                                loss += (_c * x).sum()

Conditional rebinding (``if k == j: c = other``) works the same way. A variable read after the
loop (its last value) is still refused by ``check_body``; a variable a nested function of the body
takes as a parameter is left as it is (``check_body`` refuses the rebinding), and so is one
written in place (``c += 1`` on an item writes into ``centroids``: ``inplace_writes_to_functional``
refuses the alias).
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, rename, replace, walk
from .loop_dataflow import stores_in
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    variables = [n for n, _ in it.elements] + ([it.index] if it.index_is_user else [])
    params = {a.arg for s in plan.body for a in walk(s) if isinstance(a, ast.arg)}
    rebound = [n for n in variables if n in stores_in(plan.body) and n not in params]
    if not rebound:
        return plan
    names = {n: ctx.namer.rename(n) for n in rebound}
    first = [s for old, new in names.items()
             for s in replace("local = item", loc=plan.body[0], local=new, item=old)]
    plan.body = first + [rename(s, names) for s in plan.body]
    return plan
