"""What a call through an instance attribute, ``self.loss_fn(x)``, may run: for
``optimize_called_helpers``.

A class often picks its per-sample method once, in ``__init__``::

    self.loss_fn = self._per_image if per_image else self._flat     # bound methods of self
    self.reduce = soft_dice                                          # a function of the module
    self.focal = partial(focal_loss, alpha=alpha, gamma=gamma)       # ... with bound arguments
    self.criterion = DiceLoss()                                      # a module of the module

and ``forward`` calls ``self.loss_fn(logits, labels)``. ``bound_values`` reads every assignment
``self.<attr> = value`` in the methods of the class (and of its bases of the same module) and
sorts the values: functions of the module (``self._per_image`` names the method, ``soft_dice``
the function; ``functools.partial(f, ...)`` what ``f`` is), classes of the module called to
make the object, and values it cannot resolve (a parameter, ``getattr(self, name)``, a call of
a builder). Values made outside the module (``nn.CrossEntropyLoss()``, ``F.l1_loss``) run no
loop of the module and are left out.

``picked_helper`` is what the rewritten call runs: it picks the rewrite of the function the
attribute holds at the time of the call, so an attribute rebound later, or to a function of
another module, runs as written; a ``functools.partial`` of the function (itself, not a
subclass) runs the rewrite with the partial's arguments, whatever they are then.
"""
from __future__ import annotations

import ast
import functools
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .errors import Unsupported
from .op_facts import MODULE_SELF_METHODS


@dataclass
class BoundValues:
    functions: list[types.FunctionType] = field(default_factory=list)  # the module's, self's methods
    classes: list[type] = field(default_factory=list)   # classes of the module called to make it
    unresolved: list[str] = field(default_factory=list)  # the values not resolved, described
    candidates: list[types.FunctionType] = field(default_factory=list)  # methods it may hold


def bound_values(cls: type, attr: str, module: dict, parse_function: Callable) -> BoundValues:
    """The values ``self.<attr>`` is assigned in the methods of ``cls`` of ``module``; with none
    found, the attribute is set elsewhere: unresolved. ``candidates``: the methods of ``cls``
    that its methods name as ``self.m`` without calling them, or never call by name (what
    ``getattr(self, name)`` may find): the methods the attribute may hold when unresolved."""
    found, assigned = BoundValues(), False
    named, called = set(), set()
    for method in _own_methods(cls, module):
        try:
            func = parse_function(method).tree.body[0]
        except Unsupported:
            found.unresolved.append(f"a value set in {method.__qualname__} (its source is unusable)")
            continue
        params = func.args.posonlyargs + func.args.args
        if not params:
            continue
        this, local = params[0].arg, _locals(func)
        calls = {id(n.func) for n in ast.walk(func) if isinstance(n, ast.Call)}
        for node in ast.walk(func):
            if _is_self_attr(node, this, None):
                (called if id(node) in calls else named).add(node.attr)
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(_is_self_attr(t, this, attr) for t in targets):
                    assigned = True
                    sort_value(node.value, cls, this, local, module, found)
    if not assigned:
        found.unresolved.append("a value set outside the class")
    found.candidates = [m for name, m in _own_methods(cls, module, named=True)
                        if name in named - called or name not in called | {"forward"}
                        and not name.startswith("__")]
    return found


def sort_value(value: ast.expr, cls: type, this: str, local: set, module: dict,
               found: BoundValues) -> None:
    """Adds what calling ``value`` (the right side of ``self.<attr> = value`` in a method of
    ``cls`` whose ``self`` is ``this``, or of ``name = value``) may run to ``found``."""
    if isinstance(value, ast.IfExp):
        sort_value(value.body, cls, this, local, module, found)
        sort_value(value.orelse, cls, this, local, module, found)
        return
    target: object = None
    if _is_self_attr(value, this, None):
        target = class_attribute(cls, value.attr)  # not a method: another attribute, unresolved
    elif isinstance(value, ast.Name) and value.id not in local:
        target = module.get(value.id)
        if not _own_function(target, module):
            return  # builtins and functions of other modules run no loop of the module
    elif partial_of(value, module, local) is not None:  # partial(focal, alpha=a): what focal is
        sort_value(partial_of(value, module, local), cls, this, local, module, found)
        return
    elif made_module(value) is not None:  # Cls(...).to(device): the module Cls(...) made
        made = BoundValues()
        sort_value(made_module(value), cls, this, local, module, made)
        if made.classes and not made.functions and not made.unresolved \
                and keeps_module(made.classes, value):
            found.classes += [c for c in made.classes if c not in found.classes]
            return
    elif isinstance(value, ast.Call) and not _reads(value.func, this, local):
        made_by = _callees(value.func, module)  # Cls(...), LOSSES[name](...)
        classes = [c for c in made_by if isinstance(c, type) and c.__module__ == module.get("__name__")]
        found.classes += [c for c in dict.fromkeys(classes) if c not in found.classes]
        if not (any(_own_function(f, module) for f in made_by) or _hands_self(value, cls, this)):
            return  # nn.MSELoss(weight=w): nothing of the module
    elif isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name) \
            and value.value.id not in local:  # LOSSES[name]: each function of the table
        own = [f for f in table_functions(module.get(value.value.id)) if _own_function(f, module)]
        found.functions += [f for f in dict.fromkeys(own) if f not in found.functions]
        return
    elif isinstance(value, ast.Lambda):
        return  # an expression written where it is made: rewritten with that function
    elif isinstance(value, (ast.Attribute, ast.Constant)) and not _reads(value, this, local):
        return  # F.l1_loss, None
    if not _own_function(target, module):
        found.unresolved.append(f"`{ast.unparse(value)}`")
    elif target not in found.functions:
        found.functions.append(target)


def made_module(value: ast.expr) -> ast.expr | None:
    """``Cls(...)`` of ``Cls(...).to(device)`` (or of a chain of such ``MODULE_SELF_METHODS``
    calls, ``.double().eval()``), else None."""
    inner = None
    while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) \
            and value.func.attr in MODULE_SELF_METHODS:
        inner = value = value.func.value
    return inner if isinstance(inner, ast.Call) else None


def keeps_module(classes: list[type], value: ast.expr) -> bool:
    """Each class is an ``nn.Module`` whose methods ``value`` chains (``made_module``) are
    torch's own, which return the module: the object is the one ``Cls(...)`` made."""
    methods = []
    while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) \
            and value.func.attr in MODULE_SELF_METHODS:
        methods.append(value.func.attr)
        value = value.func.value
    return all(issubclass(c, torch.nn.Module) and class_attribute(c, m) is vars(torch.nn.Module)[m]
               for c in classes for m in methods)


def picked_helper(value: Any, *pairs: tuple[Callable, Callable]) -> Any:
    """What a call through ``value`` runs in rewritten code: for the pair whose ``original`` is
    ``value`` itself, its ``rewritten``; when ``value`` is ``original`` bound to an object (a
    bound method), ``rewritten`` with that object first; when ``value`` is a ``functools.partial``
    of such a function, that partial of what it picks; else ``value``, as written."""
    if type(value) is functools.partial:
        picked = picked_helper(value.func, *pairs)
        return value if picked is value.func else \
            functools.partial(picked, *value.args, **value.keywords)
    for original, rewritten in pairs:
        if value is original:
            return rewritten
        if type(value) is types.MethodType and value.__func__ is original:
            # partial, not a bound method: torch.compile traces it without a graph break
            return functools.partial(rewritten, value.__self__)
    return value


def partial_of(value: ast.expr, module: dict, local: set) -> ast.expr | None:
    """``f`` of ``functools.partial(f, ...)`` (``partial`` as the module names it, not one of the
    names ``local`` to the function), else None."""
    if not (isinstance(value, ast.Call) and value.args
            and not isinstance(value.args[0], ast.Starred)):
        return None
    func = value.func
    root = func.value if isinstance(func, ast.Attribute) else func
    if isinstance(root, ast.Name) and root.id in local:
        return None
    if isinstance(func, ast.Name):
        found = module.get(func.id)
    elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
            and isinstance(module.get(func.value.id), types.ModuleType):  # functools.partial
        found = getattr(module[func.value.id], func.attr, None)
    else:
        return None
    return value.args[0] if found is functools.partial else None


def _callees(func: ast.expr, module: dict) -> list:
    if isinstance(func, ast.Name):
        return [module.get(func.id)]
    if isinstance(func, ast.Subscript) and isinstance(func.value, ast.Name):
        return table_functions(module.get(func.value.id))
    return []


def table_functions(table: object) -> list:
    """What a module dict, list or tuple of functions holds (``LOSSES[kind]``)."""
    if isinstance(table, dict):
        return list(table.values())
    return list(table) if isinstance(table, (list, tuple)) else []


def _own_methods(cls: type, module: dict, named: bool = False) -> list:
    """The functions of ``cls`` and of its bases of ``module`` (with their names: ``named``)."""
    return [(name, m) if named else m for klass in cls.__mro__
            if klass.__module__ == module.get("__name__")
            for name, m in vars(klass).items() if _own_function(m, module)]


def _own_function(obj: object, module: dict) -> bool:
    return isinstance(obj, types.FunctionType) and obj.__globals__ is module


def _is_self_attr(node: ast.AST, this: str, attr: str | None) -> bool:
    return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == this and attr in (None, node.attr))


def _hands_self(call: ast.Call, cls: type, this: str) -> bool:
    """``getattr(self, name)``, ``partial(self._per_image, ...)``: the value may be a method."""
    args = call.args + [k.value for k in call.keywords]
    return any(isinstance(a, ast.Name) and a.id == this
               or _is_self_attr(a, this, None) and isinstance(class_attribute(cls, a.attr), types.FunctionType)
               for a in args)


def _locals(func: ast.FunctionDef) -> set[str]:
    args = func.args
    names = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
    names |= {a.arg for a in (args.vararg, args.kwarg) if a}
    return names | {n.id for n in ast.walk(func) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def _reads(value: ast.expr, this: str, local: set) -> bool:
    """``value`` reads ``self`` or a local: what it evaluates to is not known here."""
    return any(isinstance(n, ast.Name) and (n.id == this or n.id in local) for n in ast.walk(value))


def class_attribute(cls: type, name: str) -> object:
    """What ``cls`` holds under ``name`` (its own or inherited), without running descriptors."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    return None
