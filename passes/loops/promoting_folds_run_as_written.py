"""Stage: a fold that would change an accumulator's dtype, or wrap an integer sum the original
does not wrap (``loop_sums.wider_start``), runs the loop as written instead.

In ``p = p * x[i]`` under a tensor condition, a float32 ``p`` becomes float64 with the first
selected float64 item, and stays float32 when no iteration is selected: its dtype depends on
the data. The vectorized folds cannot know it without reading the masks back (a host sync on
every call), so when ``torch.result_type`` (metadata only) says a fold would promote, the loop
runs as written from the folds on: nothing is stored yet, and the vectorized values are
dropped::

    <vectorized statements>       ->    <vectorized statements>
    <folds>                             if isinstance(p, torch.Tensor) and \
                                                torch.result_type(p, _outs[0][0]) != p.dtype:
                                            'optimize_loss: as written, the loop at line 4: ...'
                                            <the loop>
                                        else:
                                            <folds>

The leading string is counted as a run as written (``passes.loop_run_counters``).
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, clone
from ..errors import Unsupported
from .plan import LoopPlan
from .runtime_checks import AS_WRITTEN

PROMOTED = "an accumulator's dtype would change only if an iteration is selected"
WIDER_START = ("a sum starts from a value of another dtype than its items': the original adds "
               "in the start's wider dtype (a sum of narrower integers may wrap around), or, "
               "for bools added to a bool, as a logical or")
SEVERAL_STEPS = ("float16/bfloat16 items added (multiplied) several times in an iteration: the "
                 "original rounds after each")
TENSOR_START = ("Python floats of the items' sizes added to a tensor: the original rounds the "
                "tensor plus each in turn, in its dtype")
STEPS_ONTO = ("float16/bfloat16 items onto a start other than 0 (1 for a product): the original "
              "rounds the start plus each item in turn")


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    if not plan.promotions:
        return plan
    folds = {id(f) for f in plan.folds}
    cut = next((k for k, s in enumerate(plan.stmts) if id(s) in folds), None)
    if cut is None:
        raise Unsupported("the folds of an accumulator whose dtype may change were not found",
                          plan.node.lineno)
    tests = [test for test, _ in plan.promotions]
    test = tests[0] if len(tests) == 1 else ast.BoolOp(ast.Or(), tests)
    reasons = "; ".join(dict.fromkeys(reason for _, reason in plan.promotions))
    marker = ast.Expr(ast.Constant(AS_WRITTEN.format(plan.node.lineno, reasons)))
    bail = ast.If(test, [marker, clone(plan.node)], plan.stmts[cut:])
    plan.stmts = plan.stmts[:cut] + [ast.fix_missing_locations(
        ast.copy_location(bail, plan.node))]
    return plan
