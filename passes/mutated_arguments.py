"""Fact: which parameters of a function its body may change in place.

The runtime reads it once per function: while a fallback may still run the original after the
rewritten function, the arguments named here are saved before and restored after a failure, so
the original never runs on inputs the rewritten function already changed.

A parameter counts as changed when the body, through its name or through a local that may alias
it (flow-insensitively, to a fixed point), does any of::

    p[i] = v    p[i] += v    del p[i]    p.attr = v    p += v        (stores into it)
    p.add_(v)   p.copy_(x)   p.append(v) p.update(d)   ...           (in-place methods)
    torch.relu_(p)   nn.init.zeros_(p)   f(p, inplace=True)   f(x, out=p)
    helper(p)        where ``helper`` is a Python function of the globals that changes its parameter

A local aliases every parameter its assigned value may refer to: ``t = target``, ``t =
target[0]``, ``t = target.view(-1)``, ``for t in targets``, ``pair = (pred, target)``; the
result of a call aliases its receiver and arguments unless the callee is known to return a new
object (``FRESH``, names ending in ``loss``); arithmetic results are new. A method of an object
that is no tensor nor builtin container may change that object: a module called (``self.bn(x)``
updates its running statistics in train mode) or a method of it (``self.update_center(t)``);
of a local bound to an object of a class of the module (``ppo = PPO()``), the method's source
says what it changes of the object and its arguments (``ppo.compute_gae(rewards)`` changes
nothing, where taking it to change ``ppo``, which may hold ``rewards``, would copy the lists
on every call). Calls of anything else (builtins, functions of other modules) are
taken not to change their arguments.
"""
from __future__ import annotations

import ast
import inspect
import textwrap
import types
from typing import Callable

from . import ops

# Mutating methods of Python's containers (tensor methods that write end in "_").
CONTAINER_MUTATORS = frozenset({
    "append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse", "update",
    "setdefault", "popitem", "add", "discard", "__setitem__", "__delitem__",
})

# Calls whose result is a new object, never an alias of their arguments.
FRESH = frozenset({
    "sum", "mean", "prod", "amax", "amin", "max", "min", "norm", "std", "var", "logsumexp",
    "exp", "log", "abs", "sqrt", "pow", "sigmoid", "softmax", "log_softmax", "tanh", "relu",
    "clamp", "where", "clone", "item", "tolist", "len", "cross_entropy", "nll_loss", "kl_div",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "zeros_like", "ones_like",
    "stack", "cat", "tensor", "isinstance", "range",
    # constructors: ``logits.new_zeros(c)`` and ``torch.full(..., dtype=logits.dtype)`` are
    # new tensors (their receiver or arguments give only a dtype and a device)
    "new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "zeros", "ones", "full",
    "empty", "full_like", "empty_like", "arange", "one_hot", "eye",
})

_MAX_DEPTH = 3  # helpers of helpers of helpers; deeper calls are taken not to change arguments


def mutated_parameters(func: ast.FunctionDef | ast.Lambda, globals_: dict | None = None,
                       depth: int = 0) -> frozenset[str]:
    """The parameters of ``func`` its body may change in place (see the module docstring)."""
    params = [a.arg for a in func.args.posonlyargs + func.args.args + func.args.kwonlyargs]
    params += [a.arg for a in (func.args.vararg, func.args.kwarg) if a is not None]
    return frozenset(_facts(func, params, globals_, depth, objects=True).mutated)


def changed_in_place(func: ast.FunctionDef | ast.Lambda,
                     globals_: dict | None = None) -> Callable[[ast.AST], bool]:
    """Whether the value of an expression of ``func`` may be changed in place by its body: the
    facts of ``mutated_parameters`` (but for methods of objects: ``torch.tensor(t)`` and
    ``F.one_hot(y, c)`` call methods of modules) over every name of the function, not only its
    parameters (``c = centers[y[i]]`` is changed by ``centers[y[i]] = ...`` and by ``c += v``).
    ``func``
    holds the vectorizer's code: the result of a call of a call (``torch.vmap(body)(x)``) is
    taken as new, or flow-insensitively every accumulator bound to it (``loss = _outs[0]``) and
    updated in the loop as written (``loss += ...``) would mark the inputs."""
    names = {n.id for n in ast.walk(func) if isinstance(n, ast.Name)}
    names |= {a.arg for a in ast.walk(func) if isinstance(a, ast.arg)}
    facts = _facts(func, names, globals_, 0, mapped_fresh=True)
    return lambda node: bool(facts.refers_to(node) & facts.mutated)


def _facts(func: ast.FunctionDef | ast.Lambda, roots, globals_: dict | None,
           depth: int, mapped_fresh: bool = False, objects: bool = False) -> "_Facts":
    """Aliases of ``roots`` in ``func`` and which of them its body changes in place
    (``mapped_fresh``: a call of a call returns a new object; ``objects``: a method of an object
    other than a tensor or a container may change it, ``ops.unknown_method``)."""
    facts = _Facts({r: {r} for r in roots}, globals_ or {}, depth, mapped_fresh, objects)
    nodes = list(ast.walk(func))
    facts.made = _made_objects(nodes, facts.globals)
    while facts.propagate_aliases(nodes):  # a fixed point: an alias may be made before its source
        pass
    for node in nodes:
        facts.record_mutation(node)
    return facts


class _Facts:
    def __init__(self, aliases: dict[str, set[str]], globals_: dict, depth: int,
                 mapped_fresh: bool = False, objects: bool = False):
        self.aliases = aliases
        self.globals = globals_
        self.depth = depth
        self.mapped_fresh = mapped_fresh
        self.objects = objects
        self.roots = set(aliases)  # the parameters
        self.made: dict[str, type] = {}  # locals bound to an object of a module's class
        self.mutated: set[str] = set()

    def refers_to(self, node: ast.AST | None) -> set[str]:
        """The parameters the value of ``node`` may be, or contain, or be a view of."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, set())
        if isinstance(node, (ast.Subscript, ast.Attribute, ast.Starred)):
            return self.refers_to(node.value)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return set().union(*map(self.refers_to, node.elts))
        if isinstance(node, ast.Dict):
            return set().union(*map(self.refers_to, node.values))
        if isinstance(node, ast.IfExp):
            return self.refers_to(node.body) | self.refers_to(node.orelse)
        if isinstance(node, ast.BoolOp):
            return set().union(*map(self.refers_to, node.values))
        if isinstance(node, ast.NamedExpr):
            return self.refers_to(node.value)
        if isinstance(node, ast.Call):
            name = _callee_name(node.func)
            if name in FRESH or name.endswith("loss") or (
                    self.mapped_fresh and isinstance(node.func, ast.Call)):
                return set()
            receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
            found = self.refers_to(receiver)
            for arg in node.args + [k.value for k in node.keywords]:
                found |= self.refers_to(arg)
            return found
        return set()  # constants, arithmetic, comparisons: new objects

    def propagate_aliases(self, nodes: list[ast.AST]) -> bool:
        changed = False
        for node in nodes:
            for target, value in _bindings(node):
                found = self.refers_to(value)
                for name in _names(target):
                    known = self.aliases.setdefault(name, set())
                    if not found <= known:
                        known |= found
                        changed = True
        return changed

    def record_mutation(self, node: ast.AST) -> None:
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if not isinstance(node, ast.AnnAssign) else [node.target]
            for target in targets:
                for stored in _stored_into(target):
                    self.mutated |= self.refers_to(stored.value)
        elif isinstance(node, ast.AugAssign):
            self.mutated |= self.refers_to(node.target)
        elif isinstance(node, ast.Call):
            self._record_call(node)

    def _record_call(self, call: ast.Call) -> None:
        name = _callee_name(call.func)
        in_place = ops.is_inplace(name)
        method = self._made_method(call.func)
        if method is not None:  # what it changes of its object and arguments, from its source
            self._record_helper(ast.Call(call.func, [call.func.value] + call.args,
                                         call.keywords), method)
        elif isinstance(call.func, ast.Attribute) and (
                in_place or name in CONTAINER_MUTATORS or self.objects and ops.unknown_method(name)):
            self.mutated |= self.refers_to(call.func.value)
        keywords = {k.arg: k.value for k in call.keywords}
        if "out" in keywords:
            self.mutated |= self.refers_to(keywords["out"])
        inplace = keywords.get("inplace")
        if in_place or (isinstance(inplace, ast.Constant) and inplace.value is True):
            for arg in call.args:
                self.mutated |= self.refers_to(arg)
        if isinstance(call.func, ast.Name):
            self._record_helper(call, self.globals.get(call.func.id))

    def _made_method(self, func: ast.expr) -> types.FunctionType | None:
        """``obj.m`` of a local ``obj = Cls(...)`` made of a class of the module: ``Cls.m``."""
        if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                and func.value.id in self.made):
            return None
        method = inspect.getattr_static(self.made[func.value.id], func.attr, None)
        return method if isinstance(method, types.FunctionType) else None

    def _record_helper(self, call: ast.Call, helper: object) -> None:
        """A Python function of the globals: what it changes of its own parameters."""
        if not isinstance(helper, types.FunctionType) or self.depth >= _MAX_DEPTH:
            return
        tree = _parse(helper)
        if tree is None:
            return
        changed = mutated_parameters(tree, helper.__globals__, self.depth + 1)
        if not changed:
            return
        positional = [a.arg for a in tree.args.posonlyargs + tree.args.args]
        named = set(positional) | {a.arg for a in tree.args.kwonlyargs}
        for i, arg in enumerate(call.args):
            # a starred argument or one past the named parameters may land on any of them
            if isinstance(arg, ast.Starred) or i >= len(positional) or positional[i] in changed:
                self.mutated |= self.refers_to(arg)
        for keyword in call.keywords:
            if keyword.arg not in named or keyword.arg in changed:
                self.mutated |= self.refers_to(keyword.value)


def _bindings(node: ast.AST) -> list[tuple[ast.expr, ast.expr]]:
    """(target, value) pairs that bind names: assignments, loops, ``with``, comprehensions."""
    if isinstance(node, ast.Assign):
        return [(t, node.value) for t in node.targets]
    if isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
        return [(node.target, node.value)]
    if isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
        return [(node.target, node.iter)]
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return [(i.optional_vars, i.context_expr) for i in node.items if i.optional_vars]
    return []


def _stored_into(target: ast.expr) -> list[ast.Subscript | ast.Attribute]:
    """The subscripts and attributes a store target writes into: ``a[i]`` of ``a[i] = v`` and
    of ``x, a[i] = ...``, not ``t[i]`` of ``a[int(t[i])] = v`` (an index is only read)."""
    if isinstance(target, (ast.Tuple, ast.List)):
        return [s for elt in target.elts for s in _stored_into(elt)]
    if isinstance(target, ast.Starred):
        return _stored_into(target.value)
    return [target] if isinstance(target, (ast.Subscript, ast.Attribute)) else []


def _names(target: ast.expr) -> list[str]:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]


def _made_objects(nodes: list[ast.AST], globals_: dict) -> dict[str, type]:
    """Locals bound only to ``Cls(...)`` of one class the module defines (``ppo = PPO()``)."""
    made: dict[str, set] = {}
    for node in nodes:
        for target, value in _bindings(node):
            for name in _names(target):
                cls = globals_.get(value.func.id) if isinstance(target, ast.Name) and isinstance(
                    value, ast.Call) and isinstance(value.func, ast.Name) else None
                made.setdefault(name, set()).add(
                    cls if isinstance(cls, type) and cls.__module__ == globals_.get("__name__")
                    else None)
    return {n: next(iter(c)) for n, c in made.items() if len(c) == 1 and None not in c}


def _callee_name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _parse(fn: types.FunctionType) -> ast.FunctionDef | None:
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return None
    found = tree.body[0] if tree.body else None
    return found if isinstance(found, ast.FunctionDef) and found.name == fn.__name__ else None


def function_node(tree: ast.Module) -> ast.FunctionDef | ast.Lambda | None:
    """The function a module parsed from a function's source defines: its first ``def`` or
    lambda, breadth first (the source of a lambda is the statement holding it)."""
    return next((n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.Lambda))), None)
