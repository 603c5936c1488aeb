"""Pass: helper functions the loss calls are optimised too, when they contain loops.

A call to a plain Python function defined in the same module (same globals) whose body has a
loop is pointed at that helper's rewritten version, which the rebuilt loss gets as a closure
binding; the helper itself (the module attribute) is left untouched::

    def dice(p, t):                                 def dice(p, t):           # unchanged
        inter = 0                                       ...
        for i in range(p.shape[0]):
            inter += (p[i] * t[i]).sum()
        ...

    def loss(pred, target):                         def loss(pred, target):
        return 1 - dice(pred, target)       ->          return 1 - _dice(pred, target)

where ``_dice`` is ``dice`` after the whole AST pipeline (its loops vectorized, each reported at
its own line in this function's report). A helper that cannot be rewritten, is already being
rewritten (recursion), or that the pipeline leaves unchanged is called as written. The name is
resolved once, at rewrite time: a helper rebound later in the module is not followed, as with
any module global captured by a rewrite (documented in the README).
"""
from __future__ import annotations

import ast
import dis
import types

from .errors import RewriteError, Unsupported
from .report import Report

from .ast_tools import PassContext, walk


def transform(tree: ast.Module, ctx: PassContext) -> ast.Module:
    func = tree.body[0]
    args = func.args
    # Parameters and assigned names: calls through them are not the module's helpers.
    local = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
    local |= {a.arg for a in (args.vararg, args.kwarg) if a}
    called = set()
    for n in walk(func):  # one walk: the function is large by now (vectorized and original code)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            local.add(n.id)
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
            called.add(n.func.id)
    # Most functions call no helper with a loop: then the visitor need not run.
    if any(_is_helper(ctx.globals.get(name), ctx) for name in called - local):
        _Redirect(ctx, local).visit(tree)
    return tree


def _is_helper(fn: object, ctx: PassContext) -> bool:
    """A function of the same module with a loop, not already being rewritten."""
    return (isinstance(fn, types.FunctionType) and fn.__globals__ is ctx.globals
            and fn not in ctx.rewriting and _has_loop(fn))


class _Redirect(ast.NodeVisitor):  # changes calls in place
    def __init__(self, ctx: PassContext, local: set[str]):
        self.ctx = ctx
        self.local = local
        self.renamed: dict[str, str | None] = {}  # helper name -> its binding (None: call as is)

    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id not in self.local:
            binding = self._binding(node.func.id)
            if binding:
                node.func = ast.copy_location(ast.Name(binding, ast.Load()), node.func)
        return node

    def _binding(self, name: str) -> str | None:
        if name not in self.renamed:
            self.renamed[name] = self._rewrite(name)
        return self.renamed[name]

    def _rewrite(self, name: str) -> str | None:
        helper = self.ctx.globals.get(name)
        if not _is_helper(helper, self.ctx):
            return None
        report = Report(helper.__qualname__, self.ctx.filename, helper.__code__.co_firstlineno)
        try:
            rebuilt, changed = self.ctx.rewrite_function(helper, report, rewriting=self.ctx.rewriting)
        except (Unsupported, RewriteError) as exc:
            self.ctx.report.notes.append(f"helper {name} is called as written: {exc}")
            return None
        self.ctx.report.loops += report.loops
        if not changed:
            return None
        binding = self.ctx.namer.new(name)
        self.ctx.bindings[binding] = rebuilt
        return binding


def _has_loop(fn: types.FunctionType) -> bool:
    # Cheap pre-filter on the bytecode: loops compile to FOR_ITER (comprehensions are nested code).
    def loops(code: types.CodeType) -> bool:
        return any(i.opname == "FOR_ITER" for i in dis.get_instructions(code)) or any(
            loops(c) for c in code.co_consts if isinstance(c, types.CodeType))
    return loops(fn.__code__)
