"""Stage: a full ``max``/``min`` of an empty masked selection raises as the original did.

``masked_selections_to_where`` counts the iterations whose selection was empty; the vectorized
statements zero the counters first and raise the original's error right before the folds store
anything (the original raised before storing the results of later iterations)::

    <vectorized statements>          ->    _empty_max = 0
    <folds>                                <vectorized statements>
                                           if _empty_max:
                                               raise RuntimeError('max(): ...')
                                           <folds>

Without such selections the statements are unchanged.
"""
from __future__ import annotations

from ..ast_tools import PassContext
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    plan.stmts = plan.selections.raise_if_empty(plan.stmts, plan.folds)
    return plan
