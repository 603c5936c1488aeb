"""Stage: what leaves an iteration of the final body, read by ``loop_dataflow.analyze``.

The stages after this one rewrite the effect statements it finds (``plan.facts.effects``, by
statement): accumulators ``s += e`` (kind "acc"), prefix sums and products ("scan"),
``lst.append(e)`` ("append") and writes ``out[i] = e`` ("write")::

    loss += (_pred_row - _target_row).abs().sum()   ->   Effect(kind="acc", name="loss",
                                                                family="sum", ...)

The body is unchanged; its row parameters are per-iteration inputs like the index.
"""
from __future__ import annotations

from ..ast_tools import PassContext
from . import loop_dataflow
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    seeds = {it.index} | {name for name, _ in it.elements} | {
        r.param for r in plan.row_slices.values()}
    plan.facts = loop_dataflow.analyze(plan.body, it.index, seeds, plan.live_after, ctx)
    return plan
