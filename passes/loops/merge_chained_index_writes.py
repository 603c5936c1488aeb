"""Stage: a write through chained indexing into an outer tensor becomes one indexed write.

``x[j][i] = v`` writes into ``x``: ``x[j]`` with an int ``j`` is a view of ``x`` (basic
indexing), and writing into the view is writing ``x[j, i]``. Each index before the last must be
the loop's own index (an int from ``range``/``enumerate``) or a value the loop does not change
that the runtime check proves an int (else ``x[j]`` could be a copy: advanced indexing)::

    for i in range(m):                          isinstance(j, int) and ...
        out[j][i] = f(x[i])          ->         for i in range(m):
                                                    out[j, i] = f(x[i])

Other chains (a slice or a tuple before the last index, an index that varies per iteration, a
local tensor written) are left as they are.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, clone, is_name, is_pure
from .loop_dataflow import loads, stores_in
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    varying = stores_in(plan.body) | {n for n, _ in it.elements} | {it.index}
    _merge(plan.body, plan, varying, it.index)
    return plan


def _merge(stmts: list[ast.stmt], plan: LoopPlan, varying: set[str], own: str) -> None:
    for s in stmts:
        if isinstance(s, ast.If):
            _merge(s.body, plan, varying, own)
            _merge(s.orelse, plan, varying, own)
        elif isinstance(s, (ast.Assign, ast.AugAssign)):
            targets = s.targets if isinstance(s, ast.Assign) else [s.target]
            if len(targets) == 1:
                merged = _merged(targets[0], plan, varying, own)
                if merged is not None:
                    if isinstance(s, ast.Assign):
                        s.targets = [merged]
                    else:
                        s.target = merged


def _merged(target: ast.expr, plan: LoopPlan, varying: set[str],
            own: str) -> ast.Subscript | None:
    """``x[a][b][c]`` -> ``x[a, b, c]`` (checks added to the plan), or None."""
    chain = []
    node = target
    while isinstance(node, ast.Subscript):
        chain.append(node.slice)
        node = node.value
    if len(chain) < 2 or not isinstance(node, ast.Name) or node.id in varying:
        return None
    outer, last = chain[:0:-1], chain[0]
    if any(isinstance(e, (ast.Slice, ast.Tuple)) or not is_pure(e) for e in outer):
        return None
    checks = [e for e in outer if not is_name(e, own)]
    if any(loads(e) & varying for e in checks):
        return None
    for e in checks:
        plan.check("isinstance(a, int)", a=e)
    lasts = last.elts if isinstance(last, ast.Tuple) else [last]
    index = ast.Tuple([clone(e) for e in outer] + [clone(e) for e in lasts], ast.Load())
    return ast.copy_location(ast.Subscript(clone(node), index, ast.Store()), target)
