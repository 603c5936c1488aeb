"""Stage: a call of a helper of the module, or of a method of the function's own object, that
changes state outside its own locals keeps the loop as written.

A vectorized loop evaluates its body once for all iterations: a helper it calls with the same
arguments in every iteration is called once (a fixed operand), a mapped one once under vmap.
The original calls it in every iteration, and one that writes a global, an attribute of its
object or an item of what it is handed does so every time::

    def step():                          for i in range(n):
        CALLS[0] += 1          ->            total = total + x[i].sum() * step()
        return 0.5                       a vectorized form would count one call, not n

The calls ``inline_helper_calls`` left (helpers it could not inline, and the methods of the
module's classes an attribute of the own object is bound to, ``self.counter.tick()`` after
``self.counter = Counter()``) are read through their source, and through the module's helpers
they call in turn: a ``global``/``nonlocal``
statement, a store into an attribute or item (``self.n += 1``, ``CALLS[0] = v``), or a mutating
method (``self.idc.append(...)``, ``x.add_(1)``) of anything but a name the helper binds itself
refuses the loop, with the helper's line. A method of unknown effect (``ops.unknown_method``: no
tensor's, none the registry lists, such as ``d.get(k)``), called on an object the loop does not
bind
and whose source is not read (an argument, a local made before the loop, ``self.<attr>`` bound
to no class of the module), is no tensor op, and may change anything: it refuses the loop too::

    def f(x, counter):                   for i in range(x.shape[0]):
        ...                      ->          total = total + x[i].sum() + counter.tick()
                                         runs as written: `tick` of `counter` is called n times

Loop fission then puts such a call, when it is a statement of its own, in the residual loop, in
order.
"""
from __future__ import annotations

import ast
import types


from .. import ops
from ..ast_tools import PassContext, is_name, root_name, unparse, walk
from ..errors import Unsupported
from ..instance_attribute_calls import bound_values
from .loop_dataflow import method_name, module_function, stores_in
from .own_methods import method_owner, own_method
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
        if _unknown_method(call, plan, ctx):
            raise Unsupported(f"`{unparse(call)}` calls `{call.func.attr}`, a method no tensor "
                              f"has, of `{unparse(call.func.value)}`, whose source is not read: "
                              "what it changes is unknown, and the original calls it in every "
                              "iteration, a vectorized loop once", call.lineno)
    return plan


def _unknown_method(call: ast.Call, plan: LoopPlan, ctx: PassContext) -> bool:
    """``call`` is ``recv.meth(...)`` of a method no tensor has and the registry does not list,
    on an object the loop does not bind, whose methods no source tells (``_write`` reads
    those of the own object and of its attributes bound to classes of the module)."""
    meth = method_name(call, ctx)
    if meth is None or not ops.unknown_method(meth):
        return False
    it = plan.iteration
    root = root_name(call.func.value)
    if root is None or root in stores_in(plan.body) | {it.index} | {n for n, _ in it.elements}:
        return False
    this = method_owner(ctx)[1]
    if root != this:
        return True
    # `self.<attr>.<meth>()` with no method of the module's classes found for it
    return isinstance(call.func.value, ast.Attribute) and is_name(call.func.value.value, this) \
        and not _held_methods(call, ctx)


def _write(call: ast.Call, ctx: PassContext, depth: int) -> tuple[str, ast.AST] | None:
    """The helper ``call`` may call and its first change of state outside its locals, if any."""
    if depth == 0:
        return None
    fn = module_function(call.func, ctx) or own_method(call, ctx)
    for fn in [fn] if fn is not None else _held_methods(call, ctx):
        found = _writes_of(fn, ctx, depth)
        if found is not None:
            return found
    return None


def _held_methods(call: ast.Call, ctx: PassContext) -> list:
    """``self.<attr>.<meth>(...)`` on the function's own object: ``meth`` of each class of the
    module its methods bind ``self.<attr>`` to (``self.counter = Counter()``)."""
    owner, this = method_owner(ctx)
    func = call.func
    if owner is None or not (isinstance(func, ast.Attribute) and isinstance(
            func.value, ast.Attribute) and is_name(func.value.value, this)):
        return []
    held = bound_values(owner, func.value.attr, ctx.globals, ctx.parse_function).classes
    return [m for m in (getattr(c, func.attr, None) for c in held)
            if isinstance(m, types.FunctionType) and m.__module__ == ctx.globals.get("__name__")]


def _writes_of(fn: types.FunctionType, ctx: PassContext, depth: int
               ) -> tuple[str, ast.AST] | None:
    """``fn``'s first change of state outside its locals, in its source or its helpers'."""
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
