"""Stage: accumulators are folded after the loop from their stacked per-iteration values.

Sum partials leave the body already summed over the loop; the others are reduced
(``loop_rules.FAMILY_REDUCE``); Python-number counters stay Python numbers (``NUMBER_FOLD``)::

    loss = 0; for ...: loss += e        ->   loss = _outs[0]             (``FAMILY_FOLD_FROM_ZERO``)
    loss += e  (loss a tensor)          ->   loss += _outs[0]            (in place: aliases see it)
    m = max(m, e)                       ->   m = max(m, <the first largest of _outs[0]>)

Running ``torch.maximum``/``torch.minimum`` values are refused (``FAMILY_KEPT``).

A sum starting at 0 that the next statement only divides by the trip count
(``return loss / B`` after ``for i in range(B)``) is left as the mean (``plan.averaged``), with
``_averaged = True`` among the folds: the vectorized branch computes ``x.mean()``, not
``x.mean() * B`` then ``/ B``.
"""
from __future__ import annotations

from .. import loop_rules as rules
from ..ast_tools import PassContext, is_int, unparse
from ..errors import Unsupported
from .loop_dataflow import loads, stores_in
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    plan.averaged = _averaged(plan)
    if plan.averaged:
        plan.averaged_flag = ctx.namer.new("averaged")
        plan.folds += plan.sub("f = True", f=plan.averaged_flag)
    for name, acc in plan.accumulators.items():
        if acc.family in rules.FAMILY_KEPT:
            raise Unsupported(rules.FAMILY_KEPT[acc.family], plan.node.lineno)
        reduced = acc.stacked if acc.family == "sum" else plan.sub(
            rules.FAMILY_REDUCE[acc.family], v=acc.stacked)
        kind = next(iter(acc.kinds)) if len(acc.kinds) == 1 else None
        if name in plan.wide and kind in rules.NUMBER_FOLD_WIDE:
            # `total += x[i].item()`: the original's Python float, summed in float64
            reduced = plan.sub(rules.NUMBER_FOLD_WIDE[kind], r=reduced, w=plan.wide[name])
        elif kind in rules.NUMBER_FOLD:
            # `count += 1`, `n += m.sum().item()`: the original's Python number
            reduced = plan.sub(rules.NUMBER_FOLD[kind], r=reduced)
        if name in plan.zeros and acc.family in rules.FAMILY_FOLD_FROM_ZERO:
            plan.folds += plan.sub("s = x", s=name, x=plan.sub(
                rules.FAMILY_FOLD_FROM_ZERO[acc.family], r=reduced))
        elif not acc.rebound and acc.family in rules.FAMILY_FOLD_INPLACE:
            # `s += e` on a tensor is in place: s keeps its dtype, and its aliases see it
            plan.folds += plan.sub(rules.FAMILY_FOLD_INPLACE[acc.family], s=name, r=reduced)
        else:
            plan.folds += plan.sub("s = x", s=name, x=plan.sub(
                rules.FAMILY_FOLD[acc.family], s=name, r=reduced))
    return plan


def _averaged(plan: LoopPlan) -> set[str]:
    """Sum accumulators starting at 0 that the next statement only divides by the trip count."""
    it = plan.iteration
    if not (is_int(it.start, 0) and is_int(it.step, 1)):
        return set()
    if loads(it.stop) & stores_in(plan.body):
        return set()
    stop = unparse(it.stop)
    return {name for name, acc in plan.accumulators.items()
            if acc.family == "sum" and acc.kinds == {"tensor"} and name in plan.zeros
            and plan.divided.get(name) == stop}
