"""Comprehensions reduced by ``sum``/``torch.stack``/``torch.cat``/``torch.tensor``, as loops.

The vectorizer handles them exactly like the equivalent loop (same checks, same strategies).
The comprehension's variables are renamed (they never leaked out of it)::

    loss = sum(w[i] * x[i] for i in range(n) if m[i])     _acc = 0
                                                 ->      for _k in range(n):
                                                             if m[_k]:
                                                                 _acc = _acc + w[_k] * x[_k]
                                                         loss = _acc

    out = torch.stack([f(r) for r in rows])      ->      _items = []
                                                         for _r in rows:
                                                             _items.append(f(_r))
                                                         out = torch.stack(_items)

Only comprehensions the statement always evaluates are taken (not inside a lambda, a
conditional expression, or a short-circuit operand), with one ``for`` clause.
"""
from __future__ import annotations

import ast
import copy

from .ast_tools import PassContext, replace
from .loop_dataflow import resolve_call

REDUCERS = frozenset({"sum", "torch.stack", "torch.cat", "torch.tensor"})
# Nodes whose children are all evaluated whenever the node is.
_ALWAYS_EVALUATED = (ast.Assign, ast.AugAssign, ast.Return, ast.Expr, ast.BinOp, ast.UnaryOp,
                     ast.Call, ast.keyword, ast.Attribute, ast.Subscript, ast.Tuple, ast.List,
                     ast.Starred, ast.Name, ast.Constant, ast.Slice, ast.Load, ast.Store,
                     ast.operator, ast.unaryop)


def to_loop(stmt: ast.stmt, ctx: PassContext) -> tuple[list[ast.stmt], ast.For, ast.stmt, int] | None:
    """(initialisation, loop, the statement using its result, comprehension line) for the
    first reducible comprehension of ``stmt``, or None. ``stmt`` itself is not modified."""
    found = _find(stmt, ctx)
    if found is None:
        return None
    stmt = copy.deepcopy(stmt)
    call = _find(stmt, ctx)
    comp = call.args[0]
    gen = comp.generators[0]
    renames = {n.id: ctx.namer.new(n.id) for n in ast.walk(gen.target) if isinstance(n, ast.Name)}
    rename = _Rename(renames)
    target, elt = rename.visit(gen.target), rename.visit(comp.elt)
    conds = [rename.visit(c) for c in gen.ifs]
    sub = dict(loc=comp, torch_name=ctx.torch_name)
    if resolve_call(call.func, ctx) == "sum":
        acc = ctx.namer.new("acc")
        init = replace("a = s", a=acc, s=call.args[1] if len(call.args) > 1 else ast.Constant(0),
                       **sub)
        step = replace("a = a + e", a=acc, e=elt, **sub)
        result = ast.Name(acc, ast.Load())
    else:
        acc = ctx.namer.new("items")
        init = replace("a = []", a=acc, **sub)
        step = replace("a.append(e)", a=acc, e=elt, **sub)
        step = [ast.Expr(step)]
        call.args[0] = ast.Name(acc, ast.Load())
        result = call
    for c in reversed(conds):
        step = [ast.copy_location(ast.If(test=c, body=step, orelse=[]), comp)]
    loop = ast.copy_location(ast.For(target=target, iter=gen.iter, body=step, orelse=[]), comp)
    _Replace(call if result is not call else None, result).visit(stmt)
    return init, ast.fix_missing_locations(loop), stmt, comp.lineno


def _find(node: ast.AST, ctx: PassContext) -> ast.Call | None:
    if not isinstance(node, _ALWAYS_EVALUATED):
        return None
    if (isinstance(node, ast.Call) and len(node.args) in (1, 2) and not node.keywords
            and isinstance(node.args[0], (ast.ListComp, ast.GeneratorExp))
            and len(node.args[0].generators) == 1 and not node.args[0].generators[0].is_async
            and resolve_call(node.func, ctx) in REDUCERS
            and (len(node.args) == 1 or resolve_call(node.func, ctx) == "sum")):
        return node
    for child in ast.iter_child_nodes(node):
        found = _find(child, ctx)
        if found is not None:
            return found
    return None


class _Rename(ast.NodeTransformer):
    def __init__(self, names: dict[str, str]):
        self.names = names

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.names:
            return ast.copy_location(ast.Name(self.names[node.id], node.ctx), node)
        return node


class _Replace(ast.NodeTransformer):
    """Replace the reducing call (for ``sum``) by the accumulator."""

    def __init__(self, call: ast.Call | None, result: ast.expr):
        self.call = call
        self.result = result

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if node is self.call:
            return ast.copy_location(self.result, node)
        return self.generic_visit(node)
