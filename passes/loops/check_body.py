"""Stage: the loop body as the user wrote it passes ``loop_dataflow``'s check.

Run on ``plan.written`` (inner loops and helpers inlined, selections not yet converted: those
converted are marked and skipped), so a refusal quotes the user's code::

    for i in range(n):
        if loss > 1: break      ->    Unsupported("`break`: the trip count depends on the data")

Passing changes nothing; the effects are read again from the final body (``classify_effects``).
"""
from __future__ import annotations

from ..ast_tools import PassContext
from . import loop_dataflow
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    seeds = {it.index} | {name for name, _ in it.elements}
    loop_dataflow.analyze(plan.written, it.index, seeds, plan.live_after, ctx)
    return plan
