"""Stage: the loop body as the user wrote it passes ``loop_dataflow``'s check.

Run on ``plan.written`` (inner loops and helpers inlined, selections not yet converted: those
converted are marked and skipped), so a refusal quotes the user's code::

    for i in range(n):
        if loss > 1: break      ->    Unsupported("`break`: the trip count depends on the data")

Passing changes nothing; the effects are read again from the final body (``classify_effects``).
A refusal of a body whose selections ``masked_selections_to_where`` left as written says why they
stayed: a count of a selection in an ``if`` is then no tensor condition, say, and the refusal
alone ("`continue` under a Python condition") would not point at the selection.
"""
from __future__ import annotations

from ..ast_tools import PassContext
from ..errors import Unsupported
from . import loop_dataflow
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    seeds = {it.index} | {name for name, _ in it.elements}
    try:
        loop_dataflow.analyze(plan.written, it.index, seeds, plan.live_after, ctx)
    except Unsupported as exc:
        if not plan.selections_kept:
            raise
        raise Unsupported(f"{exc.reason} (the body's selections stay as written: "
                          f"{plan.selections_kept})", exc.lineno) from exc
    return plan
