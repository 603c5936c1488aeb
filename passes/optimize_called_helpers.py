"""Pass: the helpers the loss calls are optimised too, when they reach a loop.

A helper is a plain Python function of the same module (same globals) that has a loop or calls,
in one of the shapes below, a helper that has one (followed transitively; a function whose
rewrite is in progress is not followed again). The call goes to the helper after the whole AST
pipeline, which the rebuilt loss gets as a closure binding; the helper itself (the module or
class attribute) is left untouched, and its loops are reported in the caller's report, each at
its own file:line. A helper the pipeline leaves unchanged is called as written.

A plain name is resolved once, at rewrite time (a helper rebound later in the module is not
followed, as with any module global captured by a rewrite; documented in the README)::

    def loss(pred, target):                    def loss(pred, target):
        return 1 - dice(pred, target)     ->       return 1 - _dice(pred, target)

A method of an object whose class is known here: ``self.m(x)`` in a method of a class of the
module (``self``: the first parameter), ``obj.m(x)`` and ``obj(x)`` (``__call__``) after
``obj = Cls(...)`` in the function. The class an object has at run time decides::

    self.ohkm(loss)  ->  (_ohkm(self, loss) if getattr(type(self), 'ohkm', None) is _ohkm_original
                          else self.ohkm(loss))

On an object made in the call (``Cls(k)(x)``, ``Cls(k).m(x)``, ``Cls`` not a module), the
object is made once and ``picked_method`` decides::

    Cls(k)(x)   ->   _picked_method(Cls(k), '__call__', _call___original, _call)(x)

so a subclass that overrides the method (or another object bound to the name) runs as written.
(An instance attribute that shadows a method of the same name is not looked at.)

An ``nn.Module`` of a class of the module called as ``criterion(x)`` (after ``criterion =
Cls(...)``, or a global the module made at import, ``CRITERION = Cls(...)``, read at each call)
or ``Cls(...)(x)``: its ``forward`` is rewritten, and ``module_forward`` (a closure
binding) picks it only when calling the module would run that ``forward`` and nothing else::

    Cls(k)(x)   ->   _module_forward(Cls(k), _forward_original, _forward)(x)

A local name bound to helpers, ``fn = soft_dice if multiclass else dice`` or ``fn =
LOSSES[kind]`` (a module dict, list or tuple of functions): each candidate is rewritten, and the
call picks the rewrite of the object ``fn`` holds when it is called::

    fn(p, t)   ->   (_soft_dice if fn is _soft_dice_original else _dice if fn is _dice_original else fn)(p, t)

An attribute of ``self`` set in a method of the class (``self.loss_fn = self._per_image if
per_image else self._flat`` in ``__init__``; see ``instance_attribute_calls``): each method or
module function it may hold is rewritten, and the call picks the rewrite of what the attribute
holds when it is called (a bound method of any object, or the function itself); a module of the
module it holds goes through ``module_forward`` as above::

    self.loss_fn(x, y)  ->  _picked_helper(self.loss_fn, (_per_image_original, _per_image),
                                           (_flat_original, _flat))(x, y)

A ``functools.partial`` of a helper (``self.loss_fn = partial(focal, alpha=alpha)``, or a local
``fn = partial(focal, ...)``) is what the helper is: the call picks the partial of the rewrite,
with the object's own arguments, when the object is (exactly) a partial of that helper.

A free variable is a local name bound to what it holds at rewrite time: a decorator's wrapper
of the module (``functools.wraps``, mmseg's ``@weighted_loss``; parsed from its own code, not
the source ``__wrapped__`` leads inspect to) is a helper that calls the function it wraps::

    loss = loss_func(pred, target, **kwargs)
        ->  loss = (_per_class if loss_func is _per_class_original else loss_func)(pred, target, **kwargs)

A wrapper of another module runs as written: the loops of the helpers it closes over are
reported kept, "called through decorator `weighted_loss` (utils.py:12): its wrapper runs
`per_class` as written"; a wrapper of the standard library or of an installed package is quoted
as the decorator on the user's ``def`` ("`@torch.no_grad()` (losses.py:30)"), also for a method.

A helper called in a vectorized loop's vmapped body (the ``def`` marked ``ast_marks.MAPPED``)
runs under vmap: it is rewritten for that (``PassContext.mapped``, ``mapped_op_forms``) also
when it has no loop but names an op with a form for vmap (``mapped_op_forms.NAMES``), and so
are the helpers it calls; a call of it elsewhere gets its usual rewrite, or none.

A value it may hold that cannot be resolved here (a parameter, ``getattr(self, name)``) is a
note: the call at its file:line runs as written, "called through `self.loss_fn`, resolved at run
time", and the loops of the methods it may hold (``instance_attribute_calls``) are reported so.

A module of the module handed to ``torch.func.functional_call`` runs its rewritten
``forward`` there (``module_caller_calls``), and ``Cls(...)`` its rewritten ``__init__``
(``constructor_calls``), each behind a run-time check that the original would run that method.

Reported, not rewritten (each loop "kept", at its own file:line, with how it is reached): the
loops of a helper that cannot be rewritten (the reason), and those a helper reaches when it runs
as written: ``forward`` of a module handed to another call (``vmap(criterion)``, or
``functional_call`` with the module by keyword) or called when it may be of classes with
different forwards, a method of an object made in the call (``Cls(...).m(x)``: no name to
check), a method where ``type`` is not the builtin.
"""
from __future__ import annotations

import ast
import dis
import functools
import inspect
import os
import sysconfig
import textwrap
import types
from typing import Any, Callable

import torch

from . import ast_marks, broadcast_products, mapped_op_forms
from .errors import RewriteError, Unsupported
from .instance_attribute_calls import (BoundValues, bound_values, keeps_module, made_module,
                                       partial_of, picked_helper, sort_value)
from .instance_attribute_calls import class_attribute as _method
from .instance_attribute_calls import table_functions as _table_functions
from .constructor_calls import constructed
from .module_caller_calls import calls_module, forward_during
from .report import LoopReport, Report

from .ast_tools import PassContext, Transformer, clone, closed_values, replace, walk


def transform(tree: ast.Module, ctx: PassContext) -> ast.Module:
    func = tree.body[0]
    scope = _Scope(ctx, func)
    # Most functions call no helper that reaches a loop: then the visitor need not run.
    mapped = ctx.mapped or any(ast_marks.get(n, ast_marks.MAPPED)
                               for n in walk(func) if isinstance(n, ast.FunctionDef))
    seen, names = set(ctx.rewriting), _names(mapped)
    if scope.run_time_calls or any(_reaches_loop(fn, ctx.globals, seen, names, writes=mapped)
                                   for fn in scope.called):
        _Redirect(ctx, scope).visit(tree)
    return tree


class _Scope:
    """What the names of one function may hold: its locals, the values assigned to them, the
    class of its ``self``; ``called``: the helpers its calls may reach (a superset)."""

    def __init__(self, ctx: PassContext, func: ast.FunctionDef):
        self.globals = ctx.globals
        self.parse_function = ctx.parse_function
        self.attributes: dict[str, BoundValues] = {}  # instance attribute -> what it may hold
        self.run_time_calls = False  # a call through an attribute whose value is not resolved
        args = func.args
        # Parameters and assigned names: calls through them are not the module's helpers.
        self.local = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
        self.local |= {a.arg for a in (args.vararg, args.kwarg) if a}
        self.values: dict[str, list[ast.expr]] = {}  # local name -> the values `name = value` binds
        self.self_name, self.self_class = _method_self(ctx, func)
        # names bound by the caller or a loop: what a call through them runs is known at run time
        self.unbound = self.local - {self.self_name}
        # free variables: a decorator's wrapper calls the function it wraps through one
        self.closure = ctx.closure
        self.local |= set(self.closure)
        parts = ctx.func_name.split(".")  # private names are mangled with the defining class
        self.owner = parts[-2] if len(parts) >= 2 and parts[-2] != "<locals>" else None
        calls = []
        for n in walk(func):  # one walk: the function is large by now (vectorized and original code)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                self.local.add(n.id)
            elif isinstance(n, ast.arg):  # of a lambda or nested def: local there
                self.local.add(n.arg)
            elif isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name):
                self.values.setdefault(n.targets[0].id, []).append(n.value)
            elif isinstance(n, ast.Call):
                calls.append(n)
            elif isinstance(n, (ast.For, ast.comprehension)):
                self.unbound |= {t.id for t in walk(n.target) if isinstance(t, ast.Name)}
        self.called = [f for c in calls for f in self.targets(c) if isinstance(f, types.FunctionType)]

    def targets(self, call: ast.Call) -> list:
        """Every function of the module ``call`` may run (among other objects), for the pre-filter."""
        f = call.func
        found = [_method(c, "forward") for a in self.passed(call) for c in self.classes(a)]
        if isinstance(f, ast.Name) and f.id not in self.local:
            target = self.globals.get(f.id)
            return found + [target, _method(target, "__init__") if isinstance(target, type) else None] \
                + [m for c in self.classes(f) for m in _call_methods(c)]
        if isinstance(f, ast.Name):
            self.run_time_calls |= bool(self.run_time(f.id))
            return found + self.functions(f.id) + [m for c in self.classes(f) for m in _call_methods(c)]
        if isinstance(f, ast.Attribute) and self.instance_attribute(f):
            bound = self.attribute(f.attr)
            self.run_time_calls |= bool(bound.unresolved)
            return found + bound.functions + [_method(c, "forward") for c in bound.classes]
        if isinstance(f, ast.Attribute):
            found += self.run_time_methods(f) + self.autograd_methods(f)
            return found + [_method(c, self.mangled(f.attr)) for c in self.classes(f.value)]
        return found + [m for c in self.classes(f) for m in _call_methods(c)]

    def instance_attribute(self, f: ast.expr) -> bool:
        """``self.<attr>`` that the class does not hold: set on the object (``self.loss_fn``)."""
        return (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
                and f.value.id == self.self_name
                and _method(self.self_class, self.mangled(f.attr)) is None)

    def attribute(self, attr: str) -> BoundValues:
        if attr not in self.attributes:
            # as the source spells it: `self.__fn = ...` is mangled in the bytecode only
            self.attributes[attr] = bound_values(self.self_class, attr, self.globals,
                                                 self.parse_function)
        return self.attributes[attr]

    def passed(self, call: ast.Call) -> list[ast.expr]:
        """The arguments of ``call``, but ``self`` (``super(Cls, self)``, registering itself)."""
        args = call.args + [k.value for k in call.keywords]
        return [a for a in args if not (isinstance(a, ast.Name) and a.id == self.self_name)]

    def mangled(self, attr: str) -> str:
        """``attr`` as the class stores it: ``self.__x`` in a method of ``Cls`` is ``_Cls__x``."""
        if self.owner and attr.startswith("__") and not attr.endswith("__"):
            return f"_{self.owner.lstrip('_')}{attr}"
        return attr

    def functions(self, name: str) -> list:
        """The functions a local name may be bound to: ``fn = a if c else b``, ``fn = TABLE[k]``,
        ``fn = functools.partial(a, ...)``, or a free variable holds at rewrite time."""
        found = [self.closure.get(name)]
        for value in self.values.get(name, ()):
            todo = [value]
            for v in todo:
                if isinstance(v, ast.IfExp):
                    todo += [v.body, v.orelse]
                elif partial_of(v, self.globals, self.local) is not None:
                    todo.append(partial_of(v, self.globals, self.local))
                elif isinstance(v, ast.Name) and v.id not in self.local:
                    found.append(self.globals.get(v.id))
                elif isinstance(v, ast.Subscript) and isinstance(v.value, ast.Name) \
                        and v.value.id not in self.local:
                    found += _table_functions(self.globals.get(v.value.id))
        # not dict.fromkeys(found): a table may hold unhashable objects
        return list(dict.fromkeys(f for f in found if isinstance(f, types.FunctionType)))

    def autograd_methods(self, f: ast.expr) -> list:
        """``Fn.apply`` of an ``autograd.Function`` of the module: its forward and backward."""
        if not (isinstance(f, ast.Attribute) and f.attr == "apply" and isinstance(f.value, ast.Name)
                and f.value.id not in self.local):
            return []
        cls = self.globals.get(f.value.id)
        return _autograd_methods(cls) if isinstance(cls, type) and _own(cls, self.globals) else []

    def run_time_methods(self, f: ast.Attribute) -> list:
        """``self.selector.get_triplets`` with ``self.selector`` not resolved here: the methods
        of that name of the module's classes (what the call may run)."""
        if not (isinstance(f.value, ast.Attribute) and self.instance_attribute(f.value)
                and self.attribute(f.value.attr).unresolved):
            return []
        self.run_time_calls = True
        classes = [c for c in self.globals.values() if isinstance(c, type) and _own(c, self.globals)]
        return [m for c in classes for m in [_method(c, self.mangled(f.attr))]
                if isinstance(m, types.FunctionType)]

    def run_time(self, name: str) -> list[str]:
        """What a local name may hold that is not resolved here: a parameter or loop variable,
        a value ``instance_attribute_calls`` cannot sort."""
        found = BoundValues(unresolved=[f"`{name}` as the caller or a loop binds it"] if name in self.unbound else [])
        for value in self.values.get(name, ()):
            sort_value(value, self.self_class or object, self.self_name or "", self.local,
                       self.globals, found)
        return found.unresolved

    def classes(self, node: ast.expr) -> list[type]:
        """The classes of the module an object may have: ``self`` in a method, ``Cls(...)``, a
        local bound to ``Cls(...)``."""
        if ast_marks.get(node, ast_marks.CONSTRUCTED) is not None:  # its callee rewritten
            return [ast_marks.get(node, ast_marks.CONSTRUCTED)]
        if made_module(node) is not None:  # Cls(...).to(device): the module Cls(...) made
            made = self.classes(made_module(node))
            return made if keeps_module(made, node) else []
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id not in self.local:
            cls = self.globals.get(node.func.id)
            return [cls] if isinstance(cls, type) and _own(cls, self.globals) else []
        if isinstance(node, ast.Attribute) and self.instance_attribute(node):
            return self.attribute(node.attr).classes
        if not isinstance(node, ast.Name):
            return []
        if node.id not in self.local:  # a global holding an object of a class of the module
            held = type(self.globals.get(node.id))
            return [held] if _own(held, self.globals) else []
        found = [self.self_class] if node.id == self.self_name else []
        found += [c for v in self.values.get(node.id, ()) if isinstance(v, ast.Call)
                  for c in self.classes(v)]
        return list(dict.fromkeys(found))


class _Redirect(Transformer):
    """Points the calls that reach helpers at their rewrites; reports the loops it cannot reach."""

    def __init__(self, ctx: PassContext, scope: _Scope):
        self.ctx = ctx
        self.scope = scope
        # (helper, rewritten for calls under vmap) -> its rewrite's binding
        self.rewritten: dict[tuple[types.FunctionType, bool], str | None] = {}
        self.mapped = ctx.mapped  # the calls visited run under torch.vmap
        self.originals: dict[types.FunctionType, str] = {}         # helper -> binding of itself
        self.unreached: set[types.FunctionType] = set()            # helpers reported, not rewritten
        self.module_forward: str | None = None                     # binding of module_forward

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        # A vectorized loop's vmapped body: its helpers are rewritten for calls under vmap
        outer, self.mapped = self.mapped, self.mapped or bool(ast_marks.get(node, ast_marks.MAPPED))
        self.generic_visit(node)
        self.mapped = outer
        return node

    def visit_Call(self, node: ast.Call) -> ast.expr:
        # The class of an object made in the call (``Cls(...)(x)``, ``Cls(...).m(x)``), read
        # before visiting ``Cls(...)``: a rewritten ``__init__`` replaces its callee.
        receiver = node.func.value if isinstance(node.func, ast.Attribute) else node.func
        made = self.scope.classes(receiver) if isinstance(receiver, ast.Call) else None
        self.generic_visit(node)
        f = node.func
        if self._module_caller(node):
            return node
        self._passed_modules(node)
        if isinstance(f, ast.Name) and f.id not in self.scope.local:
            target = self.ctx.globals.get(f.id)
            binding = self._rewrite(target)
            if binding:
                node.func = ast.copy_location(ast.Name(binding, ast.Load()), f)
            elif isinstance(target, type):
                self._constructor(node, target)
            elif isinstance(target, types.FunctionType):
                self._wrapped(target, f.id)
            else:  # an object of a class of the module, made at import (`criterion(x)`)
                return self._method_call(node, f, "__call__")
            return node
        if isinstance(f, ast.Name):
            node = self._through_name(node, f.id)
            if node.func is not f:
                return node
        if isinstance(f, ast.Attribute) and self.scope.instance_attribute(f):
            return self._through_attribute(node, self.scope.attribute(f.attr))
        for method in self.scope.autograd_methods(f):
            self._unreached(method, f"`{ast.unparse(f)}(...)`, which autograd runs")
        if isinstance(f, ast.Attribute):
            return self._method_call(node, f.value, f.attr, made)
        return self._method_call(node, f, "__call__", made)  # obj(x), Cls(...)(x)

    def _wrapped(self, wrapper: types.FunctionType, name: str) -> None:
        """``name`` holds a function not rewritten (a decorator's wrapper of another module, or
        one whose rewrite failed) that calls a helper it closes over: the helper's loops are
        reported as kept, called through it."""
        code = wrapper.__code__
        maker = code.co_qualname.split(".<locals>")[0]
        where = f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
        for fn in closed_values(wrapper).values():
            if not _is_helper(fn, self.ctx):
                continue
            runs = f"runs `{fn.__qualname__}` as written"
            if _installed(code.co_filename):  # torch's @torch.no_grad(): quoted on the function
                maker, where = _decorator_as_written(fn) or (maker, where)
            self._unreached(fn, f"decorator `{maker}` ({where}): its wrapper {runs}"
                            if getattr(wrapper, "__wrapped__", None) is fn
                            else f"`{name}`, made by `{maker}` ({where}), which {runs}")

    def _through_name(self, node: ast.Call, name: str) -> ast.Call:
        """``fn(x)`` with ``fn`` bound to helpers: ``(_a if fn is _a_original else ... fn)(x)``;
        bound to a ``functools.partial`` of one: ``picked_helper(fn, (_a_original, _a), ...)(x)``."""
        self._note_run_time(node, self.scope.run_time(name))
        pairs = [(fn, self._rewrite(fn)) for fn in self.scope.functions(name)]
        pairs = [(self._original(fn), binding) for fn, binding in pairs if binding]
        if not pairs:
            return node
        if any(partial_of(v, self.ctx.globals, self.scope.local) is not None
               for v in self.scope.values.get(name, ())):
            return self._picked(node, pairs)
        pick: ast.expr = node.func
        for original, binding in reversed(pairs):
            pick = replace("new if key is orig else rest", loc=node.func, new=binding, key=name,
                           orig=original, rest=pick)
        node.func = pick
        return node

    def _through_attribute(self, node: ast.Call, bound: BoundValues) -> ast.Call:
        """``self.loss_fn(x)``, the attribute set in a method of the class:
        ``picked_helper(self.loss_fn, (original, rewritten), ...)(x)``; what it may hold and
        cannot be resolved here is noted, with the loops of the methods the class names."""
        how = f"`{ast.unparse(node.func)}`, resolved at run time"
        if self._note_run_time(node, bound.unresolved):
            for method in bound.candidates:
                if method not in bound.functions:
                    self._unreached(method, how)
        modules = [c for c in bound.classes if issubclass(c, torch.nn.Module)]
        if modules and modules == bound.classes and not bound.functions:
            forwards = {_method(c, "forward") for c in modules}
            return self._module_call(node, modules[0], len(forwards) == 1)
        for cls in bound.classes:
            self._unreached(_method(cls, "forward" if cls in modules else "__call__"), how)
        pairs = [(self._original(fn), self._rewrite(fn)) for fn in bound.functions if self._rewrite(fn)]
        return self._picked(node, pairs) if pairs else node

    def _picked(self, node: ast.Call, pairs: list[tuple[str, str]]) -> ast.Call:
        """``f(x)`` -> ``picked_helper(f, (original, rewritten), ...)(x)``."""
        options = ", ".join(f"({original}, {binding})" for original, binding in pairs)
        node.func = replace(f"pick(value, {options})", loc=node.func,
                            pick=self.ctx.bind(picked_helper, "picked_helper"), value=node.func)
        return node

    def _note_run_time(self, node: ast.Call, unresolved: list[str]) -> bool:
        """Notes a call whose callee may be ``unresolved`` values: it runs as written."""
        if unresolved:
            call = ast.unparse(node.func)
            self.ctx.report.notes.append(
                f"{self.ctx.where(node)}: `{call}(...)` runs as written: called through `{call}`, "
                f"resolved at run time (it may hold {'; '.join(unresolved)})")
        return bool(unresolved)

    def _method_call(self, node: ast.Call, receiver: ast.expr, attr: str,
                     made: list[type] | None = None) -> ast.expr:
        """``obj.m(x)`` (``obj(x)``: ``attr`` is ``__call__``) on an object of a known class
        (``made``: of an object made in the call)."""
        pairs, stored = [], self.scope.mangled(attr)
        classes = self.scope.classes(receiver) if made is None else made
        run_time = self.scope.run_time_methods(node.func) if isinstance(node.func, ast.Attribute) else []
        if run_time:  # self.selector.get_triplets(x), the selector passed in: what it may run
            self._note_run_time(node, self.scope.attribute(receiver.attr).unresolved)
            for method in run_time:
                self._unreached(method, f"`{ast.unparse(receiver)}`, resolved at run time")
        # an object named here, or held by an attribute of self: the check reads it again
        named = isinstance(receiver, ast.Name) or self.scope.instance_attribute(receiver)
        for cls in classes:
            method, how = _method(cls, stored), f"`{ast.unparse(node.func)}(...)`"
            if attr == "__call__" and not _is_helper(method, self.ctx) \
                    and issubclass(cls, torch.nn.Module):
                forwards = {_method(c, "forward") for c in classes}
                return self._module_call(node, cls, len(forwards) == 1)
            if not named and len(classes) == 1 and self._rewrite(method):
                # read once: the object is made by the call's receiver expression
                node.func = replace("pick(obj, name, orig, new)", loc=node.func, obj=receiver,
                                    pick=self.ctx.bind(picked_method, "picked_method"),
                                    name=ast.Constant(stored), orig=self._original(method),
                                    new=self._rewrite(method))
                return node
            if not named:
                self._unreached(method, f"{how} on an object made in the call")
            elif _shadowed("type", self.scope):
                self._unreached(method, f"{how}: `type` is not the builtin here")
            elif self._rewrite(method):
                pairs.append((self._original(method), self._rewrite(method)))
            elif isinstance(method, types.FunctionType):  # a decorated method's wrapper
                self._wrapped(method, ast.unparse(node.func))
        new: ast.expr = node
        for original, binding in reversed(pairs):
            fast = ast.Call(ast.Name(binding, ast.Load()), [clone(receiver)]
                            + clone(node.args), clone(node.keywords))
            # getattr: an object of another class bound to the name may lack the method
            new = replace(f"fast if getattr(type(obj), {stored!r}, None) is orig else rest",
                          loc=node, fast=fast, obj=clone(receiver), orig=original, rest=new)
        return new

    def _module_call(self, node: ast.Call, cls: type, only: bool) -> ast.Call:
        """``criterion(x)``, ``Cls(...)(x)``: ``module_forward(criterion, forward, rewritten)(x)``."""
        forward = _method(cls, "forward")
        if not only:  # classes with different forwards: no one forward to check against
            self._unreached(forward, f"`{ast.unparse(node.func)}(...)`, an object of one of "
                            f"several classes with different forwards")
        elif self._rewrite(forward):
            node.func = self._picked_forward(node.func, forward)
        return node

    def _constructor(self, node: ast.Call, cls: type) -> None:
        """``Cls(...)`` with ``Cls.__init__`` rewritten: ``constructed(Cls, init, rewritten)(...)``
        (``constructor_calls``); else its loops are reported."""
        init, name = _method(cls, "__init__"), ast.unparse(node.func)
        if not (_own(cls, self.ctx.globals) and self._rewrite(init)):
            self._unreached(init, f"`{name}(...)`, which runs {name}.__init__ to make the object")
            return
        node.func = replace("make(cls, orig, new)", loc=node.func,
                            make=self.ctx.bind(constructed, "constructed"), cls=node.func,
                            orig=self._original(init), new=self._rewrite(init))
        ast_marks.put(node, ast_marks.CONSTRUCTED, cls)

    def _picked_forward(self, module: ast.expr, forward: types.FunctionType) -> ast.expr:
        """``module_forward(module, forward, rewritten)``; ``forward`` has a rewrite."""
        if self.module_forward is None:
            self.module_forward = self.ctx.namer.new("module_forward")
            self.ctx.bindings[self.module_forward] = module_forward
        return replace("pick(obj, orig, new)", loc=module, pick=self.module_forward,
                       obj=module, orig=self._original(forward), new=self._rewrite(forward))

    def _module_caller(self, node: ast.Call) -> bool:
        """``functional_call(criterion, ...)`` with ``criterion`` a module of one forward of
        the module, which has a rewrite: the call runs it (``module_caller_calls``)."""
        if not calls_module(node, self.ctx.globals, self.scope.local):
            return False
        classes = [c for c in self.scope.classes(node.args[0]) if issubclass(c, torch.nn.Module)]
        forwards = {_method(c, "forward") for c in classes}
        if len(forwards) != 1 or len(classes) != len(self.scope.classes(node.args[0])):
            return False
        forward = forwards.pop()
        if not self._rewrite(forward):
            return False
        during = self.ctx.bind(forward_during, "forward_during")
        node.func = replace("during(caller, obj, picked)", loc=node.func, during=during,
                            caller=node.func, obj=clone(node.args[0]),
                            picked=self._picked_forward(clone(node.args[0]), forward))
        return True

    def _passed_modules(self, node: ast.Call) -> None:
        """An ``nn.Module`` of the module handed to a call (``functional_call(criterion, ...)``)
        may be called there: the loops of its ``forward`` are reported."""
        for arg in self.scope.passed(node):
            for cls in self.scope.classes(arg):
                if issubclass(cls, torch.nn.Module):
                    self._unreached(_method(cls, "forward"), f"`{ast.unparse(node.func)}(...)`, "
                                    f"which is handed `{ast.unparse(arg)}` and may call "
                                    f"{cls.__name__}.forward")

    def _rewrite(self, fn: object) -> str | None:
        """The binding of ``fn``'s rewrite; None when it is called as written."""
        if not isinstance(fn, types.FunctionType):
            return None
        # under vmap, a helper naming no op with a form for it and writing no item has the same
        # rewrite as elsewhere
        mapped = self.mapped and _reaches_loop(fn, self.ctx.globals, set(self.ctx.rewriting),
                                               mapped_op_forms.NAMES, loops=False, writes=True)
        if (fn, mapped) not in self.rewritten:
            self.rewritten[fn, mapped] = self._rebuild(fn, mapped) \
                if _is_helper(fn, self.ctx, mapped) else None
        return self.rewritten[fn, mapped]

    def _rebuild(self, helper: types.FunctionType, mapped: bool) -> str | None:
        report = Report(helper.__qualname__, self.ctx.filename, helper.__code__.co_firstlineno)
        try:
            rebuilt, changed = self.ctx.rewrite_function(helper, report, rewriting=self.ctx.rewriting,
                                                         mapped=mapped)
        except (Unsupported, RewriteError) as exc:
            reason = f"helper {helper.__qualname__} is called as written: {exc}"
            self.ctx.report.notes.append(reason)
            self._merge(_own_loops(helper, f"{reason}; {_not_distributed(helper)}"))
            return None
        self._merge(report.loops)
        # what the helper calls at run time (its notes carry their own file:line)
        self.ctx.report.notes += [n for n in report.notes if n not in self.ctx.report.notes]
        if not changed:
            return None
        binding = self.ctx.namer.new(helper.__name__)
        self.ctx.bindings[binding] = rebuilt
        return binding

    def _original(self, fn: types.FunctionType) -> str:
        if fn not in self.originals:
            self.originals[fn] = self.ctx.namer.new(f"{fn.__name__}_original")
            self.ctx.bindings[self.originals[fn]] = fn
        return self.originals[fn]

    def _unreached(self, fn: object, how: str) -> None:
        """Reports the loops ``fn`` reaches as kept: it runs as written, called through ``how``."""
        if not _is_helper(fn, self.ctx) or fn in self.unreached:
            return
        self.unreached.add(fn)
        reason = f"not rewritten: called through {how}; {_not_distributed(fn)}"
        report = Report(fn.__qualname__, self.ctx.filename, fn.__code__.co_firstlineno)
        try:  # the rewrite only finds the loops, its own and its helpers'; it is not used
            self.ctx.rewrite_function(fn, report, rewriting=self.ctx.rewriting)
        except (Unsupported, RewriteError):
            pass
        loops = report.loops or _own_loops(fn, "")
        self._merge([LoopReport(l.filename, l.lineno, False, "kept", reason) for l in loops])

    def _merge(self, loops: list[LoopReport]) -> None:
        # A helper reached along two paths reports its loops once.
        seen = {(l.filename, l.lineno) for l in self.ctx.report.loops}
        self.ctx.report.loops += [l for l in loops if (l.filename, l.lineno) not in seen]


# Where nn.Module keeps the hooks it runs around every module's forward.
_EVERY_MODULE = torch.nn.modules.module


def module_forward(module: Any, original: Callable, rewritten: Callable) -> Callable:
    """What ``module(...)`` runs in rewritten code: ``rewritten`` with ``module`` bound first
    when calling ``module`` would run ``original`` (its class's ``forward``) and nothing else:
    ``nn.Module.__call__``, no ``forward`` in the object's own dict, not compiled on its own, not
    traced by torch.jit, no hook of its own nor of every module. Else ``module``, as written."""
    plain = (type(module).__call__ is torch.nn.Module.__call__
             and getattr(type(module), "forward", None) is original
             and "forward" not in vars(module)
             and getattr(module, "_compiled_call_impl", None) is None
             and not torch._C._get_tracing_state()
             and not (module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                      or module._backward_pre_hooks or _EVERY_MODULE._global_forward_hooks
                      or _EVERY_MODULE._global_forward_pre_hooks
                      or _EVERY_MODULE._global_backward_hooks
                      or _EVERY_MODULE._global_backward_pre_hooks))
    # partial, not a bound method: torch.compile traces it without a graph break
    return functools.partial(rewritten, module) if plain else module


def picked_method(obj: Any, name: str, original: Callable, rewritten: Callable) -> Callable:
    """What ``obj.<name>(...)`` (``obj(...)`` for ``__call__``) runs in rewritten code, ``obj``
    made by the call: ``rewritten`` with ``obj`` bound first when its class's ``name`` is still
    ``original``; else the method as written."""
    if getattr(type(obj), name, None) is original:
        return functools.partial(rewritten, obj)
    return obj if name == "__call__" else getattr(obj, name)


def _installed(filename: str) -> bool:
    """``filename`` is of the standard library or an installed package (torch's decorators):
    not the user's code, which a report quotes."""
    paths = sysconfig.get_paths()
    return any(filename.startswith(paths[k] + os.sep) for k in ("stdlib", "purelib", "platlib"))


def _decorator_as_written(fn: types.FunctionType) -> tuple[str, str] | None:
    """The one decorator on ``fn``'s ``def`` as the user wrote it (``@torch.no_grad()``) and
    its file:line; None when there is not exactly one or the source cannot be read."""
    try:
        lines, start = inspect.getsourcelines(fn.__code__)
        func = ast.parse(textwrap.dedent("".join(lines))).body[0]
    except (OSError, TypeError, SyntaxError, IndexError):
        return None
    if not isinstance(func, ast.FunctionDef) or len(func.decorator_list) != 1:
        return None
    dec = func.decorator_list[0]
    return (f"@{ast.unparse(dec)}",
            f"{os.path.basename(fn.__code__.co_filename)}:{start + dec.lineno - 1}")


def _is_helper(fn: object, ctx: PassContext, mapped: bool = False) -> bool:
    """A function of the same module that reaches a loop (or an op ``_names(mapped)`` holds, or
    under vmap an item write), not already being rewritten."""
    return (isinstance(fn, types.FunctionType) and fn.__globals__ is ctx.globals
            and fn not in ctx.rewriting
            and _reaches_loop(fn, ctx.globals, set(ctx.rewriting), _names(mapped), writes=mapped))


def _names(mapped: bool) -> frozenset[str]:
    """The ops whose callers are rewritten: those with a faster form, and for calls under vmap
    (``mapped``) those with a form for vmap (``mapped_op_forms``)."""
    return broadcast_products.NAMES | mapped_op_forms.NAMES if mapped else broadcast_products.NAMES


# The opcodes of ``t[k] = v`` and ``t[a:b] = v`` (3.12 and later).
_ITEM_WRITES = frozenset({"STORE_SUBSCR", "STORE_SLICE"})


def _reaches_loop(fn: object, module: dict, seen: set,
                  ops: frozenset[str] = broadcast_products.NAMES, loops: bool = True,
                  writes: bool = False) -> bool:
    """``fn`` (a function of ``module``) has a loop (unless ``loops`` is false), writes an item
    (``writes``: ``t[k] = v``, which under vmap ``mapped_writes_to_functional`` rewrites) or names one of
    ``ops`` (by default the ops with a faster form, ``broadcast_products.NAMES``), or may call a function of ``module`` that reaches one (by a
    global name, or a method name of a class it names or is defined in). A cheap pre-filter on
    the bytecode: loops compile to FOR_ITER (comprehensions are nested code), and a superset of
    the callees is enough."""
    if isinstance(fn, types.FunctionType) and fn.__globals__ is not module and fn not in seen:
        seen.add(fn)  # another module's decorator: its wrapper calls what it wraps as written
        return any(_reaches_loop(f, module, seen, ops, loops, writes)
                   for f in closed_values(fn).values())
    if not isinstance(fn, types.FunctionType) or fn.__globals__ is not module or fn in seen:
        return False
    seen.add(fn)
    names, todo = set(), [fn.__code__]
    for code in todo:
        for i in dis.get_instructions(code):
            if loops and i.opname == "FOR_ITER" or writes and i.opname in _ITEM_WRITES:
                return True
            if i.opname in ("LOAD_GLOBAL", "LOAD_ATTR", "LOAD_METHOD"):
                names.add(i.argval)
        todo += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    if names & ops:
        return True
    classes = [module.get(n) for n in names if isinstance(module.get(n), type)]
    owner = _defining_class(fn)
    classes += [owner] if owner is not None else []
    callees = [module.get(n) for n in names] + [m for c in classes for m in _autograd_methods(c)]
    callees += closed_values(fn).values()  # a decorator's wrapper calls what it wraps so
    callees += [_method(c, n) for c in classes for n in names | {"__call__", "forward"}]
    if owner is not None:  # a method: ``self.selector.m(x)`` may run the m of any class here
        callees += [_method(c, n) for c in module.values() if isinstance(c, type) and _own(c, module)
                    for n in names]
    # a method that sets an attribute named here (``self.loss_fn = self._per_image`` in
    # ``__init__``): what it names may be called through the attribute
    callees += [m for c in classes for m in vars(c).values()
                if isinstance(m, types.FunctionType) and names & _stored_attributes(m.__code__)]
    return any(_reaches_loop(f, module, seen, ops, loops, writes) for f in callees)


def _autograd_methods(cls: type) -> list:
    """The functions of an ``autograd.Function``'s static forward and backward."""
    if not issubclass(cls, torch.autograd.Function):
        return []
    return [getattr(m, "__func__", m) for m in (_method(cls, "forward"), _method(cls, "backward"))]


def _stored_attributes(code: types.CodeType) -> set[str]:
    return {i.argval for i in dis.get_instructions(code) if i.opname == "STORE_ATTR"}


def _method_self(ctx: PassContext, func: ast.FunctionDef) -> tuple[str | None, type | None]:
    """(name of ``self``, its class) when the function is a plain method of a class of the module."""
    cls = _resolve_class(ctx.func_name, ctx.globals)
    params = func.args.posonlyargs + func.args.args
    raw = cls and vars(cls).get(func.name)
    if cls is None or not params or raw is None or isinstance(raw, (staticmethod, classmethod)):
        return None, None
    return params[0].arg, cls


def _defining_class(fn: types.FunctionType) -> type | None:
    return _resolve_class(fn.__qualname__, fn.__globals__)


def _resolve_class(qualname: str, module: dict) -> type | None:
    """The class a function of qualified name ``qualname`` is defined in (None: not a method)."""
    obj: object = module
    for part in qualname.split(".")[:-1]:
        obj = obj.get(part) if isinstance(obj, dict) else vars(obj).get(part)
        if not isinstance(obj, type):
            return None
    return obj if isinstance(obj, type) else None


def _call_methods(cls: type) -> list:
    return [_method(cls, "__call__"), _method(cls, "forward")]


def _own(cls: type, module: dict) -> bool:
    return cls.__module__ == module.get("__name__")


def _shadowed(name: str, scope: _Scope) -> bool:
    return name in scope.local or name in scope.globals


def _not_distributed(fn: types.FunctionType) -> str:
    """The verdict of loop distribution on the loops of a function that runs as written."""
    return f"not distributed: `{fn.__qualname__}` and the helpers it calls run as written"


def _own_loops(fn: types.FunctionType, reason: str) -> list[LoopReport]:
    """The loops of ``fn``'s bytecode as kept, at their lines (when its source cannot be used)."""
    lines, todo = set(), [fn.__code__]
    for code in todo:
        lines |= {i.positions.lineno for i in dis.get_instructions(code) if i.opname == "FOR_ITER"}
        todo += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return [LoopReport(fn.__code__.co_filename, n, False, "kept", reason) for n in sorted(lines)]
