"""Instrumentation: the region of a vectorized loop (its guard, ``if <check>: <vectorized> else:
<the loop as written>``) made a function of its own, so that the loop can be timed alone.

Not a pipeline pass: ``OptimizedFunction.loop_region`` applies it to copies of the rewritten
function. ``probe`` has a call record what each guard at the given lines can read, and when
it is done (how long a region took in the call)::

    if <check>:                                         probe(7, locals())
        'optimize_loss: loop at line 7 vectorized'  ->  if <check>:
        <vectorized>                                        ...
    else:                                               probe(7, None)
        for i in range(len(pred)): ...

``region_function`` makes one guard a function of the names it uses that the probe found bound
(its live-ins), returning the locals it leaves, among them its live-outs (``live_outs``: the
names it binds that the function reads elsewhere)::

    def loss(pred, t, total):
        if <check>: ... else: ...
        return locals()

The attributes a region writes into the objects it reads (``written_attributes``: ``self.acc +=
...``, ``storage.returns[t] = ...``, ``self.x.copy_(v)``) are its outputs too; its callers give
each call a fresh copy of them. A region with a call that prints, logs or writes files
(``io_call``) shows when it runs, and one with a call that may change what no copy holds
(``opaque_call``: the user's helper writing a global, ``counter.tick()``) changes it again at
every run: neither is run again (the run-time choice of a loop's form, ``rewrite.loop_choice``,
leaves its loop vectorized).
"""
from __future__ import annotations

import ast
import builtins
import types
from collections import Counter
from typing import Any

import torch

from . import ops
from .ast_tools import Transformer, clone, fix_missing_locations, replace, root_name, unparse, walk
from .loops.loop_dataflow import stores_in
from .loops.runtime_checks import guard_line, is_vectorized_guard

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_LEAVES = (ast.Return, ast.Break, ast.Continue)


def probe(tree: ast.Module, lines: frozenset[int], recorder: str) -> ast.Module:
    """``tree`` with ``recorder(line, locals())`` before each vectorized guard at ``lines``
    and ``recorder(line, None)`` after it."""
    return _Probe(lines, recorder).visit(tree)


class _Probe(Transformer):
    def __init__(self, lines: frozenset[int], recorder: str):
        self.lines, self.recorder = lines, recorder

    def visit_If(self, node: ast.If) -> ast.stmt | list[ast.stmt]:
        self.generic_visit(node)
        if not (is_vectorized_guard(node) and guard_line(node) in self.lines):
            return node
        line = guard_line(node)
        return [ast.Expr(replace(f"r({line}, locals())", loc=node, r=self.recorder)), node,
                ast.Expr(replace(f"r({line}, None)", loc=node, r=self.recorder))]


def find_guard(tree: ast.Module, line: int) -> tuple[ast.If, ast.FunctionDef] | None:
    """The outermost vectorized guard of the loop at ``line`` in the function of ``tree`` and
    that function; None when it has none, or only in a function nested in it (a vmapped body,
    whose locals the region could not take as arguments)."""
    func = tree.body[0]
    for node in _same_scope(func.body):
        if is_vectorized_guard(node) and guard_line(node) == line:
            return node, func
    return None


def uses(guard: ast.If) -> set[str]:
    """Every name ``guard`` reads or binds (the probe's locals among them are its arguments)."""
    return {n.id for n in walk(guard) if isinstance(n, ast.Name)}


def live_outs(guard: ast.If, func: ast.FunctionDef) -> set[str]:
    """The names ``guard`` binds that ``func`` reads elsewhere (before it too: inside a loop
    around it, what one iteration binds the next reads)."""
    inside = Counter(n.id for n in walk(guard) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load))
    everywhere = Counter(n.id for n in walk(func) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load))
    return {name for name in stores_in([guard]) if everywhere[name] > inside[name]}


def region_function(guard: ast.If, func: ast.FunctionDef, params: list[str]) -> ast.Module:
    """``def <func's name>(<params>): <guard>; return locals()`` (see the docstring). Raises
    ValueError when the guard leaves the function or a loop around it (``return``, ``yield``,
    ``break``/``continue`` of an enclosing loop): its region is not a block of its own. The
    declarations of the function (``_v: object``) of names it uses come first. The
    attributes it writes (``written_attributes``) are the callers' to copy and read."""
    escape = _escape(guard.body + guard.orelse, in_loop=False)
    if escape is not None:
        kind = type(escape).__name__.lower() if isinstance(escape, _LEAVES) else "yield"
        raise ValueError(f"the region of the loop at line {guard_line(guard)} has a "
                         f"`{kind}` out of it (line {escape.lineno})")
    [new] = replace("def f():\n    return locals()", loc=guard)
    new.name = func.name
    new.args.args = [ast.arg(name) for name in params]
    new.body.insert(0, clone(guard))
    used = uses(guard)  # `_v: object` at the top declares what an outlined loop's `nonlocal` binds
    new.body[:0] = [clone(s) for s in func.body if isinstance(s, ast.AnnAssign) and s.value is None
                    and isinstance(s.target, ast.Name) and s.target.id in used]
    return fix_missing_locations(ast.Module(body=[new], type_ignores=[]))


def written_attributes(guard: ast.If, params: set[str]) -> dict[str, set[str]]:
    """The attributes of the parameters ``params`` that ``guard`` writes, by parameter: by a
    target (``self.total = ...``, ``self.returns[t] = ...``: ``total``, ``returns``) or an
    in-place method of what one holds (``self.x.copy_(v)``, ``self.log.append(v)``: ``x``,
    ``log``). A region that writes them changes objects every call shares: the callers run it
    on a copy of those attributes each time, and read them after it as its outputs."""
    written: dict[str, set[str]] = {}
    for node in walk(guard):
        if isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(node.ctx, ast.Store):
            target = node
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and _mutating(node.func.attr):
            target = node.func.value
        else:
            continue
        attribute = _outermost_attribute(target)
        if attribute is not None and root_name(target) in params:
            written.setdefault(root_name(target), set()).add(attribute)
    return written


def io_call(guard: ast.If) -> ast.Call | None:
    """The first call in ``guard`` whose effect is I/O (``ops.effect``: ``print(...)``,
    ``logging.info(...)``, ``writer.add_scalar(...)``, by its dotted name or as a method)."""
    for node in walk(guard):
        if isinstance(node, ast.Call):
            method = node.func.attr if isinstance(node.func, ast.Attribute) else None
            if "io" in (ops.effect(unparse(node.func), None),
                        method and ops.effect(None, method, node)):
                return node
    return None


def opaque_call(guard: ast.If, namespace: dict[str, Any]) -> ast.Call | None:
    """The first call in ``guard`` that may change what no copy of the region's reads holds: of
    a function that is no torch op, effect-free builtin or helper of this package (the user's
    helper may write a global), or of a method no tensor or list has (``counter.tick()``,
    ``self.rotate()``: it may change the object), or any method of an object the function reads
    from its globals. Each run of the region would do it again; ``namespace``: what the names of
    the function resolve to (its globals, closure cells and bound helpers)."""
    bound = stores_in([guard])
    for node in walk(guard):
        if isinstance(node, ast.Call) and not _seen_through(node.func, namespace, bound):
            return node
    return None


def _seen_through(func: ast.expr, namespace: dict[str, Any], bound: set[str]) -> bool:
    """A call of ``func`` changes nothing but its arguments' copies and the region's locals."""
    if isinstance(func, ast.Name):
        if func.id in bound:
            return True  # a function the region defines (a vmapped body): its calls are walked
        value = namespace.get(func.id, getattr(builtins, func.id, None))
        return any(value is b for b in _PURE_BUILTINS) or getattr(
            value, "__module__", None) is not None and value.__module__.startswith(_TRANSPARENT)
    if isinstance(func, ast.Call):  # `_map_in_chunks(body, ...)(rows)`: what a helper made
        return _seen_through(func.func, namespace, bound)
    if not isinstance(func, ast.Attribute):
        return False  # a call of an item: anything
    root = func.value
    while isinstance(root, (ast.Attribute, ast.Subscript)):
        root = root.value
    held = namespace.get(root.id) if isinstance(root, ast.Name) and root.id not in bound else None
    if isinstance(held, types.ModuleType):  # torch.nn.functional.relu, math.exp
        return held.__name__.startswith(_TRANSPARENT)
    return held is None and (hasattr(torch.Tensor, func.attr) or func.attr in ops.OBJECT_METHODS)


# Builtins that change nothing (``print``, ``open`` do: ``io_call``, or are unknown).
_PURE_BUILTINS = (len, range, isinstance, type, min, max, abs, sum, zip, enumerate, list, tuple,
                  dict, set, float, int, bool, all, any, sorted, reversed, getattr, hasattr,
                  slice, round, map, str, iter, next)
_TRANSPARENT = ("torch", "passes.", "math")


def _mutating(method: str) -> bool:
    """A method that writes into its receiver: torch's in-place rule or an object method's."""
    return ops.is_inplace(method) or ops.OBJECT_METHODS.get(method) == "mutates"


def _outermost_attribute(expr: ast.expr) -> str | None:
    """``b`` of ``a.b[c].d``: the attribute of the root name that ``expr`` reaches through, if any."""
    found = None
    while isinstance(expr, (ast.Attribute, ast.Subscript)):
        found = expr.attr if isinstance(expr, ast.Attribute) else found
        expr = expr.value
    return found if isinstance(expr, ast.Name) else None


def _same_scope(stmts: list[ast.stmt]):
    """The statements of ``stmts`` and those nested in them, outer first, not entering nested
    functions or classes."""
    for s in stmts:
        yield s
        if not isinstance(s, _SCOPES):
            for field in ("body", "orelse", "finalbody", "handlers"):
                yield from _same_scope(getattr(s, field, []))


def _escape(stmts: list[ast.stmt], in_loop: bool) -> ast.stmt | None:
    """The first statement of ``stmts`` that leaves them for code around them: a ``return``,
    and outside a loop of theirs a ``break`` or ``continue``; a ``yield`` anywhere."""
    for s in stmts:
        if isinstance(s, _SCOPES):
            continue
        if isinstance(s, ast.Return) or (not in_loop and isinstance(s, _LEAVES)):
            return s
        if any(isinstance(n, (ast.Yield, ast.YieldFrom, ast.Await)) for n in _expressions(s)):
            return s
        for field in ("body", "orelse", "finalbody", "handlers"):  # a loop's else is not in it
            found = _escape(getattr(s, field, []),
                            in_loop or (isinstance(s, _LOOPS) and field == "body"))
            if found is not None:
                return found
    return None


def _expressions(stmt: ast.stmt):
    """The expression nodes of ``stmt`` itself (not of the statements nested in it)."""
    for field in stmt._fields:
        value = getattr(stmt, field, None)
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, ast.expr):
                yield from walk(v)
