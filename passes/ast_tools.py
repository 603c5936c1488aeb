"""Shared tools of the AST passes: the pass context, fresh names and code templates.

Passes generate code from small templates instead of hand-built node trees::

    replace("torch.where(c, a, b)", c=cond, a=body, b=orelse)      # -> ast.expr
    replace("acc = acc + x", acc="total", x=value_node)             # -> [ast.stmt]

Every node ``replace`` returns carries the source location of ``loc`` (when given), so errors and
reports keep pointing at the user's file:line.
"""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field
from typing import Any, Callable

from . import ops
from .report import Report


class Namer:
    """Fresh identifiers that collide with nothing the function or its globals use."""

    def __init__(self, taken: set[str]):
        self._taken = set(taken)
        self.written = frozenset(taken)  # the names of the user's code (a report may quote)
        self.made: set[str] = set()  # the names this namer gave out (not the user's)
        self.renamed: dict[str, str] = {}  # ... those standing for a variable of the user's

    @classmethod
    def for_tree(cls, tree: ast.AST, extra: set[str] = frozenset()) -> "Namer":
        names = set(extra)
        for n in walk(tree):
            if isinstance(n, ast.Name):
                names.add(n.id)
            elif isinstance(n, ast.arg):
                names.add(n.arg)
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(n.name)
        namer = cls(names)
        # the attributes it reads are the user's too (``self._dice``, which a reason may name)
        namer.written |= {n.attr for n in walk(tree) if isinstance(n, ast.Attribute)}
        return namer

    def new(self, hint: str) -> str:
        base = "_" + hint.strip("_")
        name, k = base, 1
        while name in self._taken:
            name, k = f"{base}_{k}", k + 1
        self._taken.add(name)
        self.made.add(name)
        self.renamed.pop(name, None)  # given out again after a rollback
        return name

    def rename(self, name: str, hint: str | None = None) -> str:
        """A fresh name for the user's variable ``name`` (from ``hint``, else ``name``), which
        reports spell ``name``."""
        new = self.new(hint or name)
        self.renamed[new] = self.renamed.get(name, name)
        return new

    def checkpoint(self) -> tuple[frozenset[str], frozenset[str]]:
        """The names given out so far, for ``rollback`` after an attempt that is dropped."""
        return frozenset(self._taken), frozenset(self.made)

    def rollback(self, point: tuple[frozenset[str], frozenset[str]]) -> None:
        self._taken, self.made = set(point[0]), set(point[1])


@dataclass
class PassContext:
    """What every AST pass may read or record. One context per function rewrite."""
    filename: str                 # the user's file; nodes carry its real line numbers
    func_name: str
    namer: Namer
    report: Report
    globals: dict[str, Any] = field(default_factory=dict)  # the function's live globals (read only)
    torch_name: str = "torch"     # how generated code spells the torch module in this function
    # Objects generated code refers to by name; the rebuilt function gets them as closure cells.
    bindings: dict[str, Any] = field(default_factory=dict)
    # Functions whose rewrite is in progress (this one and its callers): stops recursion.
    rewriting: frozenset = frozenset()
    # The function's parameters, locals and closure variables: names that do not resolve in
    # ``globals`` there (None: unknown; code moved into the function must not read them).
    local_names: frozenset | None = None
    # The function runs under ``torch.vmap`` at every call (a helper of a vectorized loop's
    # vmapped body, rewritten for it): ops take their forms for vmap (``mapped_op_forms``).
    mapped: bool = False
    # What the function's free variables hold at rewrite time (``closed_values``): a call
    # through one picks a helper's rewrite only while it still holds that helper.
    closure: dict[str, Any] = field(default_factory=dict)
    # The frontend's functions, filled by rewrite/frontend.py (passes/ never imports rewrite/):
    # ``parse_function(fn)`` -> the parsed function (``.tree``: a Module whose body[0] is the def,
    # ``.filename``), raising ``Unsupported``; ``rewrite_function(fn, report, rewriting=...)`` ->
    # ``(rebuilt function, changed)``, the whole AST stage on a called helper (``mapped=True``:
    # for calls under vmap).
    parse_function: Callable[[Any], Any] = field(kw_only=True)
    rewrite_function: Callable[..., tuple[Callable, bool]] = field(kw_only=True)

    def bind(self, value: Any, stem: str) -> str:
        """The name generated code refers to ``value`` by (bound once per function)."""
        name = next((k for k, v in self.bindings.items() if v is value), None)
        if name is None:
            name = self.namer.new(stem)
            self.bindings[name] = value
        return name

    def where(self, node: ast.AST | None) -> str:
        line = getattr(node, "lineno", None) or self.report.lineno
        return f"{self.filename}:{line}"


class Transformer(ast.NodeTransformer):
    """``ast.NodeTransformer`` with the same results, faster: the visit method of a node type
    is looked up once, fields are read directly (no generator per node), and nodes without
    fields that the class has no visitor for (``ast.Load``, ``ast.Add``) are skipped. Several
    passes transform the whole function, which is large once loops are vectorized."""

    def visit(self, node: ast.AST) -> Any:
        key = (type(self), type(node))
        method = _VISITORS.get(key)
        if method is None:
            method = _VISITORS[key] = getattr(type(self), "visit_" + type(node).__name__,
                                              type(self).generic_visit)
        return method(self, node)

    def statements(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        """``stmts`` visited, a statement the visit replaces by a list spliced in."""
        out = []
        for s in stmts:
            new = self.visit(s)
            out += new if isinstance(new, list) else [new]
        return out

    def generic_visit(self, node: ast.AST) -> ast.AST:
        skip = _unvisited(type(self))
        for name in node._fields:
            old = getattr(node, name, None)
            if isinstance(old, list):
                new = []
                for value in old:
                    if isinstance(value, ast.AST) and type(value) not in skip:
                        value = self.visit(value)
                        if value is None:
                            continue
                        if not isinstance(value, ast.AST):
                            new.extend(value)
                            continue
                    new.append(value)
                old[:] = new
            elif isinstance(old, ast.AST) and type(old) not in skip:
                value = self.visit(old)
                if value is None:
                    delattr(node, name)
                else:
                    setattr(node, name, value)
        return node


class ScopedTransformer(Transformer):
    """A ``Transformer`` that leaves nested functions, lambdas and comprehensions as they are:
    their parameters and locals are their own (a name there is not the body's)."""

    def _own_scope(self, node: ast.AST) -> ast.AST:
        return node

    visit_FunctionDef = visit_Lambda = visit_ListComp = visit_SetComp = visit_DictComp = \
        visit_GeneratorExp = _own_scope


# (transformer class, node type) -> its visit method: the lookup is the same for every node
_VISITORS: dict[tuple[type, type], Any] = {}
_FIELDLESS = [t for t in vars(ast).values()
              if isinstance(t, type) and issubclass(t, ast.AST) and not t._fields]


@functools.cache
def _unvisited(cls: type) -> frozenset[type]:
    """Node types without fields that ``cls`` has no visitor for: visiting them does nothing."""
    return frozenset(t for t in _FIELDLESS if not hasattr(cls, "visit_" + t.__name__))


def replace(template: str, loc: ast.AST | None = None, torch_name: str = "torch",
            **subs: Any) -> Any:
    """Parse ``template`` and substitute names: a str value is a new name, an AST node is spliced.

    Returns an ``ast.expr`` when the template is a single expression, else a list of statements.
    """
    at = None
    # the template's own nodes; spliced nodes keep their own locations. An unlocated `loc` (a
    # generated node) is none: half its location would make ranges `compile` refuses
    if loc is not None and None not in (getattr(loc, k, None) for k in _LOCATION):
        at = {k: getattr(loc, k) for k in _LOCATION}
    body = _Fill(subs, torch_name, at).copy(_parse(template), (1, 0, 1, 0)).body
    if len(body) == 1 and isinstance(body[0], ast.Expr):
        return body[0].value
    return body


class _Fill:
    """Copies a parsed template, substituting names (spliced nodes copied) and locating nodes,
    in one pass with the result of four: copying the template, ``ast.copy_location`` from ``loc``
    on its nodes, the substitution, ``ast.fix_missing_locations`` (``replace`` runs hundreds of
    times per rewrite)."""

    def __init__(self, subs: dict[str, Any], torch_name: str, at: dict[str, Any] | None):
        self.subs = subs
        self.torch_name = torch_name
        self.at = at

    def copy(self, node: ast.AST, loc: tuple, spliced: bool = False) -> Any:
        """``node`` filled in; ``loc``: the location a node without one takes (its parent's).
        ``spliced``: ``node`` is (in) a substituted value, copied as ``clone`` does (marks are
        never nodes or lists) and keeping its own locations."""
        if isinstance(node, ast.expr_context):
            return node
        if not spliced and isinstance(node, ast.Name) and (
                node.id in self.subs or node.id == "torch" and self.torch_name != "torch"):
            new = self.subs.get(node.id, self.torch_name)
            if isinstance(new, str):
                new = ast.Name(id=new, ctx=node.ctx)
                _located(new, *loc)
                return new
            if isinstance(new, ast.AST):
                new = self.copy(new, loc, spliced=True)
            elif isinstance(new, list):
                new = [self.copy(x, loc, spliced=True) if isinstance(x, ast.AST) else x
                       for x in new]
            if hasattr(new, "ctx"):
                new.ctx = node.ctx
            return new
        new = type(node).__new__(type(node))
        new.__dict__.update(node.__dict__)
        if node._attributes:
            if self.at is not None and not spliced:
                new.__dict__.update(self.at)
            loc = _located(new, *loc)
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, list):
                items = []
                for x in value:  # as ast.NodeTransformer: None drops, a list splices its items
                    if isinstance(x, ast.AST):
                        x = self.copy(x, loc, spliced)
                        if x is None:
                            continue
                        if isinstance(x, list):
                            items += x
                            continue
                    items.append(x)
                setattr(new, name, items)
            elif isinstance(value, ast.AST):
                value = self.copy(value, loc, spliced)
                if value is None:
                    delattr(new, name)
                else:
                    setattr(new, name, value)
        return new


@functools.lru_cache(maxsize=1024)
def _parse(template: str) -> ast.Module:
    # Copying a parsed template is several times faster than parsing it again, and a rewrite
    # fills the same few templates hundreds of times.
    return ast.parse(template)


_COPIED = (ast.AST, list)


def matched(template: str, node: ast.AST, free: tuple[str, ...]) -> dict[str, ast.AST] | None:
    """The subtrees ``node`` has at the ``free`` names of ``template`` (each one source wherever
    it occurs), or None when ``node`` is not ``template`` filled in."""
    found: dict[str, ast.AST] = {}

    def same(t: ast.AST, n: ast.AST) -> bool:
        if isinstance(t, ast.Name) and t.id in free:
            return unparse(found.setdefault(t.id, n)) == unparse(n)
        if type(t) is not type(n):
            return False
        for key, tv in ast.iter_fields(t):
            nv = getattr(n, key, None)
            if isinstance(tv, list):
                if not isinstance(nv, list) or len(tv) != len(nv) or not all(
                        same(a, b) if isinstance(a, ast.AST) else a == b for a, b in zip(tv, nv)):
                    return False
            elif isinstance(tv, ast.AST):
                if not isinstance(nv, ast.AST) or not same(tv, nv):
                    return False
            elif key != "ctx" and tv != nv:
                return False
        return True

    return found if same(replace(template), node) else None


def called_through(node: ast.Call, fn: Any, ctx: PassContext) -> ast.Call:
    """``f(args)`` -> ``<fn bound into the generated code>(args)``: the same arguments, located
    at ``node``."""
    name = ast.copy_location(ast.Name(ctx.bind(fn, fn.__name__), ast.Load()), node.func)
    return ast.copy_location(ast.Call(name, node.args, node.keywords), node)


def closed_values(fn: Any) -> dict[str, Any]:
    """What each free variable of the function ``fn`` holds now (a cell not filled yet, a name of
    the enclosing function bound later, is left out)."""
    found = {}
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            found[name] = cell.cell_contents
        except ValueError:
            pass
    return found


def clone(node: Any) -> Any:
    """A deep copy of an AST (node, list of nodes, or leaf value), several times faster than
    ``copy.deepcopy``: fields are copied recursively, other values (and marks such as
    ``host_number``) are shared, and so are the ``ctx`` singletons (``ast.Load()``: no fields,
    shared by ``ast.parse`` too)."""
    if isinstance(node, list):
        return [clone(x) if isinstance(x, _COPIED) else x for x in node]
    if not isinstance(node, ast.AST) or isinstance(node, ast.expr_context):
        return node
    new = type(node).__new__(type(node))
    new.__dict__.update({k: clone(v) if isinstance(v, _COPIED) else v
                         for k, v in node.__dict__.items()})
    return new


class Checks:
    """A runtime check: conditions that must all hold, in order, each once (told apart by their
    source)."""

    def __init__(self):
        self.conditions: list[ast.expr] = []
        self._texts: set[str] = set()

    def add(self, condition: ast.expr) -> None:
        text = unparse(condition)
        if text not in self._texts:
            self._texts.add(text)
            self.conditions.append(condition)

    def expr(self) -> ast.expr:
        if len(self.conditions) == 1:
            return self.conditions[0]
        return ast.BoolOp(op=ast.And(), values=self.conditions)


def fix_missing_locations(node: ast.AST) -> ast.AST:
    """``ast.fix_missing_locations``, with the same result, about twice as fast (no generators
    per node): a node without a location takes its parent's."""
    _fix(node, 1, 0, 1, 0)
    return node


def _fix(node: ast.AST, lineno: int, col: int, end_lineno: int, end_col: int) -> None:
    loc = _located(node, lineno, col, end_lineno, end_col)
    for name in node._fields:
        value = getattr(node, name, None)
        if isinstance(value, list):
            for x in value:
                if isinstance(x, ast.AST):
                    _fix(x, *loc)
        elif isinstance(value, ast.AST):
            _fix(value, *loc)


def _located(node: ast.AST, lineno: int, col: int, end_lineno: int, end_col: int) -> tuple:
    """Gives ``node`` the location attributes it misses (as ``ast.fix_missing_locations``);
    returns its location."""
    if not node._attributes:  # all four location attributes, or none
        return lineno, col, end_lineno, end_col
    d = node.__dict__  # where a node keeps them; end_* may also be None (the class default)
    for key, value in zip(_LOCATION, (lineno, col, end_lineno, end_col)):
        if d.get(key) is None:
            d[key] = value
    return d["lineno"], d["col_offset"], d["end_lineno"], d["end_col_offset"]


_LOCATION = ("lineno", "col_offset", "end_lineno", "end_col_offset")


def walk(node: ast.AST):
    """``ast.walk``: every node under ``node`` (itself first), breadth first, in the same order;
    about 1.5x as fast (no generator per node), and the passes walk their trees many times.
    Like ``ast.walk``, a node's children are read when the node is reached."""
    todo = [node]
    for n in todo:  # todo grows while it is iterated: breadth first
        for name in n._fields:
            value = getattr(n, name, None)
            if isinstance(value, list):
                todo += [x for x in value if isinstance(x, ast.AST)]
            elif isinstance(value, ast.AST):
                todo.append(value)
        yield n


SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def own_scope(node: ast.AST):
    """The nodes under ``node`` outside the functions and classes defined in it (their
    definitions are yielded, not what they hold: a ``return`` there is theirs), breadth first."""
    todo = list(ast.iter_child_nodes(node))
    for n in todo:  # todo grows while it is iterated
        yield n
        if not isinstance(n, SCOPES):
            todo += ast.iter_child_nodes(n)


def root_name(expr: ast.AST | None) -> str | None:
    """``a`` of ``a.b[c].d`` (the object a write into the expression mutates), if a name."""
    while isinstance(expr, (ast.Subscript, ast.Attribute, ast.Starred)):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def is_int(node: ast.AST | None, value: int) -> bool:
    """``node`` is the int literal ``value`` (not ``0.0``, not ``False``)."""
    return isinstance(node, ast.Constant) and type(node.value) is int and node.value == value


# Nodes that evaluate their parts once, in place, with no effect of their own.
_PURE = (ast.Name, ast.Constant, ast.Attribute, ast.Subscript, ast.BinOp, ast.UnaryOp, ast.Compare,
         ast.Slice, ast.Tuple, ast.Load, ast.operator, ast.unaryop, ast.cmpop, ast.Call, ast.keyword)


def is_shape_call(call: ast.Call) -> bool:
    """``len(x)``, ``min``/``max``/``int`` of such, ``x.size(0)`` and the other shape methods."""
    f = call.func
    return (isinstance(f, ast.Name) and f.id in ("len", "min", "max", "int")) or (
        isinstance(f, ast.Attribute) and ops.by_call(None, f.attr).shape_query)


def is_pure(expr: ast.expr, call_ok: Callable[[ast.Call], bool] = is_shape_call) -> bool:
    """Side-effect free to evaluate again, or earlier: names, attributes, constants, arithmetic,
    comparisons, subscripts, tuples, and the calls ``call_ok`` accepts (shape queries unless
    told otherwise)."""
    for n in walk(expr):
        if not isinstance(n, _PURE):
            return False
        if isinstance(n, ast.Call) and not call_ok(n):
            return False
    return True


def write_target(stmt: ast.stmt) -> ast.expr:
    """The target of ``x[...] = v`` or ``x[...] op= v``."""
    return stmt.targets[0] if isinstance(stmt, ast.Assign) else stmt.target


def rename(node: Any, names: dict[str, str]) -> Any:
    """``node`` (a tree the caller owns) with the names of ``names`` renamed, in place."""
    for n in walk(node):
        if isinstance(n, ast.Name) and n.id in names:
            n.id = names[n.id]
    return node


def is_name(node: ast.AST | None, name: str) -> bool:
    """``node`` is the name ``name``."""
    return isinstance(node, ast.Name) and node.id == name


def unparse(tree: ast.AST) -> str:
    return ast.unparse(tree)  # needs no locations (fixing them would walk the whole tree)
