"""Stage: an inner ``range`` whose bounds read an enclosing loop's index runs over a fixed range,
its iterations outside the bounds deselected by a mask.

``for j in range(i + 1, n)`` inside ``for i in range(n)`` has a different range on every outer
iteration, so its vectorized form (and its runtime check) would depend on ``i`` and the outer
loop could not map over it. Over the outer range ``i`` runs from its first value ``s`` to its
last ``t - 1``; a bound that grows with ``i`` (``i``, ``i + k``, ``k + i``, ``i - k``, with ``k``
not reading an outer index, and ``min``/``max`` of such) is smallest at the first and largest
at the last, so the fixed range ``range(start(s), stop(t - 1))`` covers every outer iteration's
range, and its check reads no outer index::

    for i in range(n):                    for i in range(n):
        for j in range(i + 1, n):   ->        for j in range(0 + 1, n):
            <body>                                if i + 1 <= j:
                                                      <body>

The ``if`` is on the loop index, a tensor in the vectorized form: ``tensor_branches_to_where``
masks it, so a deselected iteration contributes nothing to values or gradients (its rows are
read through safe fills) and counters count the selected ones only. Python's ``range(a, b)`` is
empty when ``b <= a``; so is the mask then. A start below the fixed start cannot occur (it grows
with ``i``), so no negative index wraps around.

Only plain ranges (step 1) of an outer ``for i in range(s, t)`` whose bounds and index its body
does not rebind (``outer_bounds``), with bounds the inner body does not rebind (the masks read
them on every iteration), are rewritten; any other bound reading an outer index is left to the
later stages, which keep the outer loop with the reason.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, clone, fix_missing_locations, is_int
from .loop_dataflow import loads, resolve_call, stores_in
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    bounds = plan.outer_bounds
    if not bounds or not it.index_is_user or it.elements or not is_int(it.step, 1) \
            or (loads(it.start) | loads(it.stop)) & stores_in(plan.body):
        return plan
    start, stop = (_extreme(b, bounds, k, ctx) for b, k in ((it.start, 0), (it.stop, 1)))
    if start is None or stop is None or (start is it.start and stop is it.stop):
        return plan
    tests = [plan.sub("a <= j", a=a, j=it.index) for a in _parts(it.start, max, bounds, ctx)] + \
        [plan.sub("j < b", b=b, j=it.index) for b in _parts(it.stop, min, bounds, ctx)]
    body = plan.body
    for test in reversed(tests):  # one `if` per bound: each a comparison to mask
        body = [ast.copy_location(ast.If(test, body, []), plan.node)]
    plan.body = [ast.fix_missing_locations(s) for s in body]
    it.start, it.stop = start, stop
    return plan


def index_bounds(node: ast.For, ctx: PassContext) -> dict[str, tuple[ast.expr, ast.expr]]:
    """``{i: (first, last)}`` for ``for i in range(t)`` / ``range(s, t)`` whose body rebinds
    neither ``i`` nor a name the bounds read; else ``{}``."""
    it = node.iter
    if not (isinstance(node.target, ast.Name) and isinstance(it, ast.Call)
            and resolve_call(it.func, ctx) == "range" and not it.keywords
            and 1 <= len(it.args) <= 2):
        return {}
    s, t = (ast.Constant(0), it.args[0]) if len(it.args) == 1 else it.args
    if ({node.target.id} | loads(it)) & stores_in(node.body):
        return {}
    last = ast.BinOp(clone(t), ast.Sub(), ast.Constant(1))
    return {node.target.id: (clone(s), last)}


def _parts(bound: ast.expr, fn, bounds: dict, ctx: PassContext) -> list[ast.expr]:
    """The bounds to mask with: a start ``max(a, b)`` is both ``a`` and ``b``, a stop ``min(a, b)``
    too (a Python ``min`` of what varies would stay in the mask otherwise); only those reading an
    outer index: the fixed range enforces the others."""
    parts = bound.args if isinstance(bound, ast.Call) and not bound.keywords \
        and resolve_call(bound.func, ctx) == fn.__name__ else [bound]
    return [p for p in parts if loads(p) & bounds.keys()]


def _extreme(bound: ast.expr, bounds: dict[str, tuple[ast.expr, ast.expr]], k: int,
             ctx: PassContext) -> ast.expr | None:
    """``bound`` at its least (``k = 0``) or greatest (``k = 1``) over the outer ranges:
    ``bound`` itself when it reads no outer index, None when it does but does not grow with it."""
    if not loads(bound) & bounds.keys():
        return bound
    if isinstance(bound, ast.Name):
        return fix_missing_locations(ast.copy_location(clone(bounds[bound.id][k]), bound))
    if isinstance(bound, ast.BinOp) and isinstance(bound.op, (ast.Add, ast.Sub)):
        left_grows = loads(bound.left) & bounds.keys()
        if left_grows and loads(bound.right) & bounds.keys() or \
                isinstance(bound.op, ast.Sub) and not left_grows:
            return None
        grows = "left" if left_grows else "right"
        extreme = _extreme(getattr(bound, grows), bounds, k, ctx)
        if extreme is None:
            return None
        new = ast.BinOp(clone(bound.left), bound.op, clone(bound.right))
        setattr(new, grows, extreme)
        if all(isinstance(x, ast.Constant) and type(x.value) is int for x in (new.left, new.right)):
            sign = 1 if isinstance(bound.op, ast.Add) else -1  # `0 + 1` reads better as `1`
            new = ast.Constant(new.left.value + sign * new.right.value)
        return ast.copy_location(new, bound)
    if isinstance(bound, ast.Call) and resolve_call(bound.func, ctx) in ("min", "max") \
            and len(bound.args) > 1 and not bound.keywords:
        args = [_extreme(a, bounds, k, ctx) for a in bound.args]  # each grows: so does theirs
        if any(a is None for a in args):
            return None
        return ast.copy_location(ast.Call(clone(bound.func), args, []), bound)
    return None
