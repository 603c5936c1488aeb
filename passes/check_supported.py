"""Checker: refuses, with a reason and the user's line, functions no pass may touch.

Runs before any pass. A refused function is not rewritten at all: the original runs (one
warning, or ``RewriteError`` with ``strict=True``). Constructs that only make one loop
unvectorizable are not refused here; the loop passes keep such loops and report why.
"""
from __future__ import annotations

import ast

from .errors import Unsupported

from .ast_tools import PassContext

# Statements whose meaning depends on the enclosing scope or frame, so the function cannot be
# recompiled on its own: reason per node type.
REFUSED = {
    ast.Global: "`global` statement: the function rebinds module state",
    ast.Nonlocal: "`nonlocal` statement: the function rebinds an enclosing function's variable",
    ast.Yield: "generator function",
    ast.YieldFrom: "generator function",
    ast.Await: "async function",
    ast.AsyncFor: "async function",
    ast.AsyncWith: "async function",
}

# Calls that inspect the caller's frame or namespace, which a recompiled function does not share.
REFUSED_CALLS = {
    "locals": "calls `locals()`",
    "vars": "calls `vars()`",
    "exec": "calls `exec()`",
    "eval": "calls `eval()`",
}


def check(tree: ast.Module, ctx: PassContext) -> None:
    """Raise ``Unsupported`` for the first refused construct of the function in ``tree``."""
    func = tree.body[0]
    if isinstance(func, ast.AsyncFunctionDef):
        raise Unsupported("async function", func.lineno)
    for node in _own_scope(func):
        if type(node) in REFUSED:
            raise Unsupported(REFUSED[type(node)], node.lineno)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in REFUSED_CALLS and node.func.id not in ctx.globals):
            raise Unsupported(REFUSED_CALLS[node.func.id], node.lineno)


def _own_scope(func: ast.AST):
    """Nodes of ``func``'s body, not descending into nested functions (their yields are theirs)."""
    todo = list(ast.iter_child_nodes(func))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))
