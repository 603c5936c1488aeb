"""Stage: an ``assert`` on per-item values becomes a count of the items that fail it.

The assert stays where it is in the body (under the same conditions, masked like any statement
there), as a counter of failing items; ``raise_on_empty_selections`` raises the original's
``AssertionError`` after the loop when the count is not zero, located at the assert
(``plan.host_errors``). The message must not depend on the item (it is evaluated once, after
the loop), so every failing item raises the same exception::

    for row in p:                               _fails = 0
        assert (row > 0).all(), 'negative'  ->  (body:) _fails = _fails + (((row > 0).all()) == 0)
        loss = loss + row.log().sum()           (after:) if _fails: raise AssertionError('negative')

``== 0`` is ``not`` for Python bools and 0-d tensors alike. An assert whose message reads the
item, or a name the body binds, is left for ``check_body`` to refuse, and so is a second one
(which of two asserts the original raises depends on which item fails first). Asserts on shapes
and arguments are gone by now (``hoist_invariant_checks``).
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, replace, unparse
from .loop_dataflow import loads, stores_in
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    item = {it.index} | {n for n, _ in it.elements} | stores_in(plan.body)
    plan.body = _counted(plan.body, plan, item, ctx)
    return plan


def _counted(stmts: list[ast.stmt], plan: LoopPlan, item: set[str],
             ctx: PassContext) -> list[ast.stmt]:
    out = []
    for s in stmts:
        if isinstance(s, ast.If):
            s.body = _counted(s.body, plan, item, ctx)
            s.orelse = _counted(s.orelse, plan, item, ctx)
        elif isinstance(s, ast.Assert) and not (s.msg is not None and loads(s.msg) & item) \
                and not any(isinstance(e[1], ast.Assert) for e in plan.host_errors.values()):
            counter = ctx.namer.new("fails")
            message = "" if s.msg is None else unparse(s.msg)
            plan.host_errors[counter] = (f"AssertionError({message})", s)
            out += replace("c = c + ((t) == 0)", loc=s, torch_name=ctx.torch_name, c=counter,
                           t=s.test)
            continue
        out.append(s)
    return out
