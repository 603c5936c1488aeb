"""Stage: an ``assert`` on per-item values becomes a count of the items that fail it.

The assert stays where it is in the body (under the same conditions, masked like any statement
there), as a counter of failing items; ``raise_on_empty_selections`` raises the original's
``AssertionError`` after the loop when the count is not zero, located at the assert
(``plan.host_errors``). The message must be a constant (the exception is written after the
loop, where the item's values are gone), so every failing item raises the same exception::

    for row in p:                               _fails = 0
        assert (row > 0).all(), 'negative'  ->  (body:) _fails = _fails + (((row > 0).all()) == 0)
        loss = loss + row.log().sum()           (after:) if _fails: raise AssertionError('negative')

``== 0`` is ``not`` for Python bools and 0-d tensors alike. An assert with another message
(``f"bad row {i}"``) is left for ``check_body`` to refuse, and so is a second one (which of two
asserts the original raises depends on which item fails first). Asserts on shapes
and arguments are gone by now (``hoist_invariant_checks``).
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, replace, unparse
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    plan.body = _counted(plan.body, plan, ctx)
    return plan


def _counted(stmts: list[ast.stmt], plan: LoopPlan, ctx: PassContext) -> list[ast.stmt]:
    out = []
    for s in stmts:
        if isinstance(s, ast.If):
            s.body = _counted(s.body, plan, ctx)
            s.orelse = _counted(s.orelse, plan, ctx)
        elif isinstance(s, ast.Assert) and (s.msg is None or isinstance(s.msg, ast.Constant)) \
                and not any(isinstance(e[1], ast.Assert) for e in plan.host_errors.values()):
            counter = ctx.namer.new("fails")
            message = "" if s.msg is None else unparse(s.msg)
            plan.host_errors[counter] = (f"AssertionError({message})", s)
            out += replace("c = c + ((t) == 0)", loc=s, torch_name=ctx.torch_name, c=counter,
                           t=s.test)
            continue
        out.append(s)
    return out
