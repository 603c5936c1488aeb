"""Stage: a call of a helper of the module, or of a method of the function's own object, that
changes state outside its own locals keeps the loop as written.

A vectorized loop evaluates its body once for all iterations: a helper it calls with the same
arguments in every iteration is called once (a fixed operand), a mapped one once under vmap.
The original calls it in every iteration, and one that writes a global, an attribute of its
object or an item of what it is handed does so every time::

    def step():                          for i in range(n):
        CALLS[0] += 1          ->            total = total + x[i].sum() * step()
        return 0.5                       a vectorized form would count one call, not n

The calls ``inline_helper_calls`` left (helpers it could not inline) are read through their
source, and through the module's helpers they call in turn: a ``global``/``nonlocal``
statement, a store into an attribute or item (``self.n += 1``, ``CALLS[0] = v``), or a mutating
method (``self.idc.append(...)``, ``x.add_(1)``) of anything but a name the helper binds itself
refuses the loop, with the helper's line. Loop fission then puts such a call, when it is a
statement of its own, in the residual loop, in order.
"""
from __future__ import annotations

import ast

from .. import ops
from ..ast_tools import PassContext, root_name, unparse, walk
from ..errors import Unsupported
from .loop_dataflow import module_function, stores_in
from .own_methods import own_method
from .plan import LoopPlan

_DEPTH = 3  # helpers calling helpers: how deep their sources are read


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    for call in (n for s in plan.body for n in walk(s) if isinstance(n, ast.Call)):
        found = _write(call, ctx, _DEPTH)
        if found is not None:
            name, write = found
            raise Unsupported(f"`{unparse(call)}` calls `{name}`, which changes "
                              f"`{unparse(write).splitlines()[0]}` (line {write.lineno}): the "
                              "original does it in every iteration, a vectorized loop once",
                              call.lineno)
    return plan


def _write(call: ast.Call, ctx: PassContext, depth: int) -> tuple[str, ast.AST] | None:
    """The helper ``call`` calls and its first change of state outside its locals, if any."""
    fn = module_function(call.func, ctx) or own_method(call, ctx)
    if fn is None or depth == 0:
        return None
    try:
        node = ctx.parse_function(fn).tree.body[0]
    except Unsupported:
        return None  # no source: not the module's own code, nothing the stages read either
    args = node.args
    params = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
    local = stores_in(node.body) - params
    for n in (n for s in node.body for n in walk(s)):
        if isinstance(n, (ast.Global, ast.Nonlocal)) or _stored(n) and root_name(n) not in local \
                or _mutating(n) and root_name(n.func.value) not in local:
            return fn.__name__, n
        if isinstance(n, ast.Call):
            inner = _write(n, ctx, depth - 1)
            if inner is not None:
                return inner
    return None


def _stored(n: ast.AST) -> bool:
    return isinstance(n, (ast.Attribute, ast.Subscript)) and isinstance(n.ctx, (ast.Store, ast.Del))


def _mutating(n: ast.AST) -> bool:
    return isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and (
        ops.is_inplace(n.func.attr) or ops.OBJECT_METHODS.get(n.func.attr) == "mutates")
