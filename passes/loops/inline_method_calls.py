"""Distribution's first step: a call of a method of the function's own object made as a
statement (``self._eval_batch(out, target)``) is inlined in the body ``distribute_loops``
splits, so the work in the method may leave the loop while its effects on the object stay in
the residual loop::

    for step, out in enumerate(outputs):          for step, out in enumerate(outputs):
        self._eval_batch(out, y[:, step])   ->        _eval_batch_outputs = out
                                                      _eval_batch_target = y[:, step]
                                                      self.acc_loss += self.criterion(
                                                          _eval_batch_outputs, _eval_batch_target)
                                                      self.norm_term += 1

The method is the one the class of the function (itself a method) has; when that one only
raises ``NotImplementedError`` (an abstract method), the one override of it among the module's
subclasses. The distributed loop's runtime check requires the object to run that method
(``getattr(type(self), '_eval_batch', None) is _eval_batch_inlined`` and no instance attribute
of the name): another object runs the loop as written. Its arguments are evaluated once, in
order, before its body (as the call does); its parameters and locals get fresh names, its
object is the caller's; its statements keep their own lines, and reasons quote them as written
(``ast_marks.WRITTEN_AS``). Only methods of the caller's file and globals, without decorators,
``*args``/``**kwargs`` or free variables, whose body is assignments to names and to attributes
of their object and expression statements (no ``return``, no control flow, nothing that
observes the frame), are inlined; a call that is not stays as it is.
"""
from __future__ import annotations

import ast
import types

from .. import ast_marks
from ..ast_tools import PassContext, clone, rename, replace, unparse
from ..errors import Unsupported
from . import inline_helper_calls
from .inline_helper_calls import BODY_FORBIDDEN, FRAME_BUILTINS
from .loop_dataflow import stores_in
from .own_methods import method_owner, own_body, own_method, parsed_method


def inline(body: list[ast.stmt], ctx: PassContext) -> tuple[list[ast.stmt], list[ast.expr]]:
    """``body`` with such calls inlined (new statements; ``body`` is not changed), and the
    runtime checks that the object runs the inlined methods."""
    owner, this = method_owner(ctx)
    if owner is None or this in stores_in(body):
        return body, []
    out, guards = [], []
    for s in body:
        call = s.value if isinstance(s, ast.Expr) else None
        fn = own_method(call, ctx)
        try:
            stmts = _inlined(call, fn, this, ctx) if fn else None
        except Unsupported:
            stmts = None
        if stmts is None:
            out.append(s)
            continue
        out += stmts
        guards.append(replace(
            "getattr(type(o), m, None) is f and m not in getattr(o, '__dict__', ())", loc=call,
            o=this, m=ast.Constant(call.func.attr), f=ctx.bind(fn, f"{call.func.attr}_inlined")))
    return out, guards


def _inlined(call: ast.Call, fn: types.FunctionType, this: str,
             ctx: PassContext) -> list[ast.stmt] | None:
    """The statements of ``call`` inlined, or None when ``fn`` is not such a method."""
    node = parsed_method(fn, ctx)
    if node is None or node.decorator_list or fn.__globals__ is not ctx.globals \
            or fn.__closure__ or not fn.__code__.co_argcount:
        return None
    stmts = own_body(node)
    params = fn.__code__.co_varnames[:fn.__code__.co_argcount]
    for s in stmts:
        targets = getattr(s, "targets", [getattr(s, "target", None)])
        if not isinstance(s, (ast.Assign, ast.AugAssign, ast.Expr)) or not all(
                isinstance(t, ast.Name) or isinstance(t, ast.Attribute)
                and isinstance(t.value, ast.Name) and t.value.id == params[0]
                for t in targets if not isinstance(s, ast.Expr)):
            return None
        for n in ast.walk(s):
            name = getattr(n, "id", getattr(n, "attr", ""))
            if isinstance(n, BODY_FORBIDDEN) or name in FRAME_BUILTINS \
                    or name.startswith("__") and not name.endswith("__"):
                return None
    names = {n.id for s in stmts for n in ast.walk(s) if isinstance(n, ast.Name)}
    local = stores_in(stmts) | set(params[1:])
    if (names - local - {params[0]}) & (ctx.local_names or frozenset()):
        return None  # a global it reads is a local of the caller
    fresh = {n: ctx.namer.new(f"{fn.__name__}_{n}") for n in sorted(local)}
    fresh[params[0]] = this
    receiver = ast.Name(this, ast.Load())
    bound = inline_helper_calls.bound_arguments(
        ast.Call(call.func, [receiver] + call.args, call.keywords), fn, node)
    out = [replace("p = v", loc=call, p=fresh[p], v=v if isinstance(v, ast.AST)
                   else ast.Constant(v))[0] for p, v in bound[1:]]
    for s in stmts:
        out.append(rename(clone(s), fresh))
        ast_marks.put(out[-1], ast_marks.WRITTEN_AS, unparse(s))
    return out
