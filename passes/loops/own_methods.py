"""The methods of the function's own object: ``self._dice(p, t)`` in a method of a class of the
user's module calls the method the class has (an abstract one: the one override among the
module's subclasses). Read by the stages that inline such calls (``inline_method_calls`` for
statements, ``inline_helper_calls`` for values) and by ``check_mapped_body``."""
from __future__ import annotations

import ast
import types

from ..ast_tools import PassContext
from ..errors import Unsupported
from .module_loss_calls import module_subclasses


def own_method(call: ast.expr | None, ctx: PassContext) -> types.FunctionType | None:
    """The method ``call`` calls on the function's own object (``self._dice(p, t)`` in a
    method of a class of the module), as ``_method`` finds it; else None."""
    owner, this = method_owner(ctx)
    if owner is None or not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                             and isinstance(call.func.value, ast.Name)
                             and call.func.value.id == this):
        return None
    return _method(owner, call.func.attr, ctx)


def method_owner(ctx: PassContext) -> tuple[type | None, str]:
    """The class of the method being rewritten (of a class of the module) and the name of its
    object."""
    parts = ctx.func_name.split(".")
    owner = ctx.globals.get(parts[0]) if len(parts) == 2 else None
    fn = vars(owner).get(parts[1]) if isinstance(owner, type) else None
    if not (isinstance(fn, types.FunctionType) and fn.__code__.co_argcount):
        return None, ""
    return owner, fn.__code__.co_varnames[0]


def _method(cls: type, name: str, ctx: PassContext) -> types.FunctionType | None:
    """``cls``'s method ``name``, or the one override among the module's subclasses of an
    abstract one."""
    fn = next((vars(c)[name] for c in cls.__mro__ if name in vars(c)), None)
    if isinstance(fn, types.FunctionType) and _abstract(parsed_method(fn, ctx)):
        found = {vars(sub)[name] for sub in module_subclasses(cls) if name in vars(sub)}
        fn = found.pop() if len(found) == 1 else None
    return fn if isinstance(fn, types.FunctionType) else None


def parsed_method(fn: types.FunctionType, ctx: PassContext) -> ast.FunctionDef | None:
    try:
        parsed = ctx.parse_function(fn)
    except Unsupported:
        return None
    return parsed.tree.body[0] if parsed.filename == ctx.filename else None


def _abstract(node: ast.FunctionDef | None) -> bool:
    """The body only raises ``NotImplementedError`` (after a docstring)."""
    stmts = own_body(node) if node else []
    return len(stmts) == 1 and isinstance(stmts[0], ast.Raise) and "NotImplementedError" in {
        n.id for n in ast.walk(stmts[0]) if isinstance(n, ast.Name)}


def own_body(node: ast.FunctionDef) -> list[ast.stmt]:
    first = node.body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    return node.body[1:] if docstring else node.body
