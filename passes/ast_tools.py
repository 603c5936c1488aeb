"""Shared tools of the AST passes: the pass context, fresh names and code templates.

Passes generate code from small templates instead of hand-built node trees::

    replace("torch.where(c, a, b)", c=cond, a=body, b=orelse)      # -> ast.expr
    replace("acc = acc + x", acc="total", x=value_node)             # -> [ast.stmt]

Every node ``replace`` returns carries the source location of ``loc`` (when given), so errors and
reports keep pointing at the user's file:line.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from rewrite.report import Report


class Namer:
    """Fresh identifiers that collide with nothing the function or its globals use."""

    def __init__(self, taken: set[str]):
        self._taken = set(taken)
        self.made: set[str] = set()  # the names this namer gave out (not the user's)

    @classmethod
    def for_tree(cls, tree: ast.AST, extra: set[str] = frozenset()) -> "Namer":
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        names |= {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
        names |= {n.name for n in ast.walk(tree)
                  if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        return cls(names | set(extra))

    def new(self, hint: str) -> str:
        base = "_" + hint.strip("_")
        name, k = base, 1
        while name in self._taken:
            name, k = f"{base}_{k}", k + 1
        self._taken.add(name)
        self.made.add(name)
        return name


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

    def where(self, node: ast.AST | None) -> str:
        line = getattr(node, "lineno", None) or self.report.lineno
        return f"{self.filename}:{line}"


class _Substitute(ast.NodeTransformer):
    def __init__(self, subs: dict[str, Any], torch_name: str):
        self.subs = subs
        self.torch_name = torch_name

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.subs:
            new = self.subs[node.id]
            if isinstance(new, str):
                return ast.Name(id=new, ctx=node.ctx)
            new = clone(new)
            if hasattr(new, "ctx"):
                new.ctx = node.ctx
            return new
        if node.id == "torch" and self.torch_name != "torch":
            return ast.Name(id=self.torch_name, ctx=node.ctx)
        return node


def replace(template: str, loc: ast.AST | None = None, torch_name: str = "torch",
            **subs: Any) -> Any:
    """Parse ``template`` and substitute names: a str value is a new name, an AST node is spliced.

    Returns an ``ast.expr`` when the template is a single expression, else a list of statements.
    """
    tree = ast.parse(template)
    if loc is not None:  # before splicing, so spliced nodes keep their own locations
        for sub in ast.walk(tree):
            if "lineno" in sub._attributes:
                ast.copy_location(sub, loc)
                sub.end_lineno, sub.end_col_offset = loc.end_lineno, loc.end_col_offset
    tree = ast.fix_missing_locations(_Substitute(subs, torch_name).visit(tree))
    body = tree.body
    if len(body) == 1 and isinstance(body[0], ast.Expr):
        return body[0].value
    return body


def clone(node: Any) -> Any:
    """A deep copy of an AST (node, list of nodes, or leaf value), several times faster than
    ``copy.deepcopy``: fields are copied recursively, other values (and marks such as
    ``host_number``) are shared."""
    if isinstance(node, ast.AST):
        new = type(node).__new__(type(node))
        new.__dict__.update({k: clone(v) for k, v in node.__dict__.items()})
        return new
    if isinstance(node, list):
        return [clone(x) for x in node]
    return node


def is_int(node: ast.AST | None, value: int) -> bool:
    """``node`` is the int literal ``value`` (not ``0.0``, not ``False``)."""
    return isinstance(node, ast.Constant) and type(node.value) is int and node.value == value


def unparse(tree: ast.AST) -> str:
    return ast.unparse(tree)  # needs no locations (fixing them would walk the whole tree)
