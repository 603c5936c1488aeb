"""Stage: a runtime check that can never hold keeps the loop as written, with the reason.

The stages add to the loop's check one by one, each for what it assumes. Two of them may assume
opposites of one value: ``s += x[i].sum().item() / scale`` holds a Python float only when
``scale`` is no tensor (``host_roundtrips_to_tensor_ops``), ``scale[i]`` in the same body needs
it to be one (``runtime_checks``)::

    not isinstance(scale, torch.Tensor) and ... and isinstance(scale, torch.Tensor)

Such a loop would be reported vectorized and run as written on every call, after paying for the
check. A conjunct ``c`` of the check next to a conjunct ``not c`` (told apart by their source)
refuses the loop here, at rewrite time, naming both.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, unparse
from ..errors import Unsupported
from .plan import LoopPlan
from .runtime_checks import conjuncts


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    texts = {unparse(c) for g in plan.checks.conditions for c in conjuncts(g)}
    for g in plan.checks.conditions:
        for c in conjuncts(g):
            if isinstance(c, ast.UnaryOp) and isinstance(c.op, ast.Not) \
                    and unparse(c.operand) in texts:
                raise Unsupported(f"its runtime check can never hold: it needs both "
                                  f"`{unparse(c.operand)}` and `{unparse(c)}`, which the "
                                  "rewrite assumes for different uses of one value",
                                  plan.node.lineno)
    return plan
