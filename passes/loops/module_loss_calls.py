"""Calls of an ``nn`` loss or activation module inside a loop body being vectorized become the functional call
its ``forward`` makes, so every later stage sees a known op (a batched form, its domain, its
cost) instead of a call of an unknown object::

    class Loss(nn.Module):
        def __init__(self):
            self.ce = nn.CrossEntropyLoss(ignore_index=-1)

        def forward(self, x, y):
            for i in range(n):                      for i in range(n):
                l = self.ce(x[i], y[i])    ->           l = torch.nn.functional.cross_entropy(
                ...                                         x[i], y[i], weight=self.ce.weight,
                                                            ignore_index=self.ce.ignore_index,
                                                            reduction=self.ce.reduction,
                                                            label_smoothing=self.ce.label_smoothing)

An activation module of one argument (``op_facts.MODULE_ACTIVATIONS``) alike, so a call under
a tensor condition is a known total op, masked rather than keeping the loop::

    self.soft_plus = nn.Softplus()
    ... self.soft_plus(z) ...      ->   torch.nn.functional.softplus(z, beta=self.soft_plus.beta,
                                                                     threshold=self.soft_plus.threshold)

A module mapping over its input's leading dims (``op_facts.MODULE_MAPS``: ``nn.Linear``) alike,
so a prediction head called per item, ``self.head(feat[i])``, is one ``F.linear`` of every item
(``batch_calls``' "linear" form) instead of a vmapped module call::

    self.head = nn.Linear(d, k)
    ... self.head(feat[i]) ...     ->   torch.nn.functional.linear(feat[i], weight=self.head.weight,
                                                                   bias=self.head.bias)

The callee is ``self.<attr>``, every assignment of which in the methods of the class (and of
its bases of the same module) makes a module of one class of ``MODULE_CALLS``
(``nn.MSELoss(...)``, possibly moved with ``.to(...)``/``.cuda()``), a name the function
binds only to such a module, or a name of the module that holds one
(``_soft_plus = nn.Softplus()``); the loop does not bind it, and the call has the class's number
of positional arguments. The module's settings are read from the instance at run time, as its
``forward`` reads them, and the loop's runtime check requires the object to be a module of
exactly that class without hooks (``plain_loss_module``), and the table's conditions on it (not
in place, a ``dim``): a subclass, a replaced ``forward``, a hook or an in-place module runs the
loop as written. A setting of ``PINNED`` that every construction of the module passes as one
string literal (``criterion = nn.BCEWithLogitsLoss(reduction='sum')``) is passed as that
literal, so later stages see the reduction, and the check compares the module's own setting::

    l = criterion(x[i], y[i])   ->   l = torch.nn.functional.binary_cross_entropy_with_logits(
                                         x[i], y[i], weight=criterion.weight,
                                         pos_weight=criterion.pos_weight, reduction='sum')
                                     (check: ... and criterion.reduction == 'sum')
The loop as written, the else of the vectorized form, calls the module.
The batched forms of the losses take those settings behind checks of their values (no
smoothing, a mean or sum reduction: ``loop_rules.CHECKED_LOSS_OPTIONS``; a class loss passes its
class weight, a pointwise loss has none); a module
of other settings runs the vmap form, which passes them as they are.
"""
from __future__ import annotations

import ast
import functools
import types

import torch

from ..ast_tools import PassContext, Transformer, walk
from ..errors import Unsupported
from ..op_facts import MODULE_ACTIVATIONS, MODULE_LOSSES, MODULE_MAPS
from .plan import LoopPlan

_MOVES = ("to", "cuda", "cpu")  # `nn.CrossEntropyLoss().to(device)` is the same module
_ARGUMENTS = ("a", "b")  # the template names of a module call's tensor arguments

# Every module class whose call is a known op -> (its ``torch.nn.functional`` function, the
# settings passed by keyword, the conditions on the module ``m``, the number of its arguments)
# Settings a later stage reads as a literal (``masked_selections_to_where``: a loss of
# selections by its ``reduction``): passed as the literal every construction of the module
# gives, the loop's check comparing the module's own setting with it
PINNED = ("reduction",)

MODULE_CALLS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], int]] = {
    **{name: (f, settings, (), 2) for name, (f, settings) in MODULE_LOSSES.items()},
    **{name: (f, settings, conditions, 1)
       for table in (MODULE_ACTIVATIONS, MODULE_MAPS)
       for name, (f, settings, conditions) in table.items()},
}


def plain_loss_module(obj: object, cls: type) -> bool:
    """``obj`` is a module of exactly ``cls``, calling it runs ``cls.forward`` and nothing
    else (the hooks ``nn.Module.__call__`` would run: the object's and the global ones)."""
    hooks = torch.nn.modules.module
    return type(obj) is cls and "forward" not in vars(obj) and not (
        obj._forward_hooks or obj._forward_pre_hooks or obj._backward_hooks
        or obj._backward_pre_hooks or hooks._global_forward_hooks
        or hooks._global_forward_pre_hooks or hooks._global_backward_hooks
        or hooks._global_backward_pre_hooks)


def functional_call(name: str, callee: str | None = None, pinned: dict[str, str] = {}) -> str:
    """The call a module of ``MODULE_CALLS`` class ``name`` makes, as a template over the
    module ``m`` and its arguments ``a`` (, ``b``): its functional op (or ``callee``) with the
    module's settings by keyword (the ``pinned`` ones as their literals)."""
    function, settings, _, arity = MODULE_CALLS[name]
    arguments = ", ".join(_ARGUMENTS[:arity] + tuple(
        f"{k}={pinned[k]!r}" if k in pinned else f"{k}=m.{k}" for k in settings))
    return f"{callee or 'torch.nn.functional.' + function}({arguments})"


def module_check(name: str, pinned: dict[str, str] = {}) -> str:
    """The runtime check, over the module ``m`` and ``plain`` (``plain_loss_module``), that
    calling ``m`` makes the call ``functional_call(name, pinned=pinned)`` writes."""
    conditions = MODULE_CALLS[name][2] + tuple(f"m.{k} == {v!r}" for k, v in pinned.items())
    return " and ".join((f"plain(m, torch.nn.{name})",) + tuple(f"({c})" for c in conditions))


def loss_class(call: ast.Call, ctx: PassContext) -> str | None:
    """The ``MODULE_CALLS`` class ``call`` calls a module of, with its number of arguments
    (None: not such a call)."""
    if call.keywords or any(isinstance(a, ast.Starred) for a in call.args):
        return None
    name = _callee_class(call.func, ctx)
    return name if name is not None and MODULE_CALLS[name][3] == len(call.args) else None


def _callee_class(f: ast.expr, ctx: PassContext) -> str | None:
    fn = _lookup(ctx.func_name.split("."), ctx.globals)
    if not isinstance(fn, types.FunctionType):
        return None
    made = _constructions(f, fn, ctx)
    if made is not None:
        return _one_class(made, fn.__globals__)
    if isinstance(f, ast.Name):
        # a module of the module (`_softplus = nn.Softplus()`): the runtime check confirms it
        return _module_name(type(ctx.globals.get(f.id)))
    return None


def _constructions(f: ast.expr, fn: types.FunctionType, ctx: PassContext) -> list | None:
    """The values every binding of the callee ``f`` gives it: of a local name of ``fn``, or of
    ``self.<attr>`` in the methods of its class; None for other callees."""
    if isinstance(f, ast.Name):
        code = fn.__code__
        if f.id in code.co_varnames + code.co_cellvars + code.co_freevars:
            return _function_bindings(fn, ctx.parse_function).get(f.id, [])
        return None
    owner = _lookup(ctx.func_name.split(".")[:-1], ctx.globals)
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and isinstance(owner, type) \
            and f.value.id == _first_param(fn):
        return _attribute_bindings(owner, ctx.parse_function).get(f.attr, [])
    return None


def pinned_settings(call: ast.Call, ctx: PassContext) -> dict[str, str]:
    """The ``PINNED`` settings of the module ``call`` calls that every construction of it passes
    as one string literal (``nn.BCEWithLogitsLoss(reduction='sum')``): setting -> the literal.
    The object may have been changed since: the loop's check compares them again."""
    fn = _lookup(ctx.func_name.split("."), ctx.globals)
    made = _constructions(call.func, fn, ctx) if isinstance(fn, types.FunctionType) else None
    found = {}
    for setting in PINNED:
        given = {_keyword(v, setting) for v in made or [None]}
        if len(given) == 1 and (literal := given.pop()) is not None:
            found[setting] = literal
    return found


def _keyword(value: ast.expr | None, setting: str) -> str | None:
    """The string literal a construction (moved or not) passes as ``setting``, else None."""
    while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) \
            and value.func.attr in _MOVES and isinstance(value.func.value, ast.Call):
        value = value.func.value
    given = next((k.value for k in getattr(value, "keywords", ()) if k.arg == setting), None)
    return given.value if isinstance(given, ast.Constant) and type(given.value) is str else None


def _module_name(cls: object) -> str | None:
    """The ``MODULE_CALLS`` class's name of ``cls``, when it is that ``torch.nn`` class."""
    name = getattr(cls, "__name__", None)
    return name if name in MODULE_CALLS and cls is getattr(torch.nn, name) else None


def _lookup(path: list[str], module: dict) -> object:
    obj = module.get(path[0]) if path else None
    for part in path[1:]:
        obj = vars(obj).get(part) if isinstance(obj, type) else None
    return obj


def _loss_name(value: ast.expr, module: dict) -> str | None:
    """The ``MODULE_CALLS`` class ``value`` makes a module of (``nn.L1Loss()``, moved or not)."""
    while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) \
            and value.func.attr in _MOVES and isinstance(value.func.value, ast.Call):
        value = value.func.value
    if not isinstance(value, ast.Call):
        return None
    parts, f = [], value.func
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    obj = module.get(f.id) if isinstance(f, ast.Name) else None
    for part in reversed(parts):
        obj = getattr(obj, part, None)
    return _module_name(obj)


def _one_class(values: list[ast.expr], module: dict) -> str | None:
    names = {_loss_name(v, module) for v in values}
    return names.pop() if len(names) == 1 else None


def _first_param(fn: types.FunctionType) -> str | None:
    params = fn.__code__.co_varnames[:fn.__code__.co_argcount]
    return params[0] if params else None


@functools.lru_cache(maxsize=256)
def _function_bindings(fn: types.FunctionType, parse) -> dict[str, list]:
    """The names ``fn`` binds -> the values it binds them to (None: not an assignment's); none
    when its source cannot be read."""
    try:
        tree = parse(fn).tree
    except Unsupported:
        return {}
    values: dict[str, list] = {}
    for n in walk(tree):
        for t in _targets(n):
            if isinstance(t, ast.Name):
                values.setdefault(t.id, []).append(getattr(n, "value", None))
    return values


@functools.lru_cache(maxsize=256)
def _attribute_bindings(cls: type, parse) -> dict[str, list]:
    """The attributes the methods of ``cls`` (and of its bases of the same module) assign on
    their object -> the values assigned (the arguments subclasses pass for a parameter)."""
    values: dict[str, list] = {}
    for base in cls.__mro__:
        if base.__module__ != cls.__module__:
            continue
        for method in vars(base).values():
            if not isinstance(method, types.FunctionType):
                continue
            try:
                tree = parse(method).tree
            except Unsupported:
                return {}
            this = _first_param(method)
            for n in walk(tree):
                for t in _targets(n):
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) \
                            and t.value.id == this:
                        values.setdefault(t.attr, []).extend(
                            _passed(getattr(n, "value", None), base, method, parse))
    return values


def _passed(value: ast.expr | None, base: type, method: types.FunctionType,
            parse) -> list[ast.expr | None]:
    """``value``; for a parameter of ``base.__init__``, the arguments the module's subclasses
    of ``base`` pass it (``super().__init__(name, nn.NLLLoss(weight=w))``). A guess: the
    runtime check confirms the class of the module the attribute holds."""
    params = method.__code__.co_varnames[1:method.__code__.co_argcount]
    if method.__name__ != "__init__" or not isinstance(value, ast.Name) \
            or value.id not in params:
        return [value]
    found: list[ast.expr | None] = []
    for sub in module_subclasses(base):
        init = vars(sub).get("__init__")
        if next(c for c in sub.__mro__[1:] if "__init__" in vars(c)) is not base \
                or not isinstance(init, types.FunctionType):
            continue
        try:
            tree = parse(init).tree
        except Unsupported:
            return [value]
        for call in walk(tree):
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) \
                    and call.func.attr == "__init__" and isinstance(call.func.value, ast.Call) \
                    and isinstance(call.func.value.func, ast.Name) \
                    and call.func.value.func.id == "super":
                if any(isinstance(a, ast.Starred) for a in call.args) \
                        or any(k.arg is None for k in call.keywords):
                    return [value]
                given = dict(zip(params, call.args)) | {k.arg: k.value for k in call.keywords}
                found.append(given.get(value.id))
    return found or [value]


def module_subclasses(cls: type) -> list[type]:
    """The subclasses of ``cls`` defined in its module, at any depth."""
    found = []
    for sub in cls.__subclasses__():
        if sub.__module__ == cls.__module__:
            found += [sub] + module_subclasses(sub)
    return found


def _targets(n: ast.AST) -> list[ast.expr]:
    """The names and attributes ``n`` binds (a value other than an assignment's makes no
    known module)."""
    if isinstance(n, ast.Assign):
        targets = n.targets
    elif isinstance(n, ast.With):
        targets = [item.optional_vars for item in n.items if item.optional_vars]
    elif isinstance(n, (ast.AugAssign, ast.AnnAssign, ast.For, ast.NamedExpr, ast.comprehension)):
        targets = [n.target]
    else:
        return []
    return [e for t in targets for e in walk(t) if isinstance(e, (ast.Name, ast.Attribute))
            and isinstance(e.ctx, ast.Store)]


class _Functional(Transformer):
    def __init__(self, plan: LoopPlan, ctx: PassContext, bound: set[str]):
        self.plan, self.ctx, self.bound = plan, ctx, bound
        self.checks: dict[str, ast.expr] = {}

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        name = loss_class(node, self.ctx)
        if name is None or self.bound & {n.id for n in walk(node.func)
                                         if isinstance(n, ast.Name)}:
            return node
        pinned = pinned_settings(node, self.ctx)
        self.checks[ast.unparse(node.func)] = self.plan.sub(
            module_check(name, pinned), m=node.func,
            plain=self.ctx.bind(plain_loss_module, "plain_loss_module"))
        return self.plan.sub(functional_call(name, pinned=pinned),
                             **dict(zip(_ARGUMENTS, node.args)), m=node.func)


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    bound = {n.id for s in plan.body for n in walk(s)
             if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    # an attribute the loop assigns (`self.ce = ...`) is no longer what the check saw
    bound |= {n.value.id for s in plan.body for n in walk(s) if isinstance(n, ast.Attribute)
              and isinstance(n.ctx, ast.Store) and isinstance(n.value, ast.Name)}
    functional = _Functional(plan, ctx, bound)
    plan.body = [functional.visit(s) for s in plan.body]
    plan.helper_checks = plan.helper_checks + list(functional.checks.values())
    return plan
