"""Stage: a tuple assignment of a tuple of values becomes one assignment per name::

    p, t = prob[:, c], onehot[:, c]    ->    p = prob[:, c]
                                             t = onehot[:, c]

The later stages merge one name at a time under a condition's mask (``if c == ignore:
continue`` puts the rest of the body under one); a tuple target would keep the loop. Exact only
when no value reads a name bound before it in the same statement (``a, b = b, a`` stays): the
original evaluates every value first, and none calls a function of the loss's own (a nested
``def`` could read a name the split binds early). Values are evaluated in the original's order.
"""
from __future__ import annotations

import ast
import builtins

from ..ast_tools import PassContext, Transformer
from .loop_dataflow import loads
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    plan.body = _Split(ctx).statements(plan.body)
    return plan


class _Split(Transformer):
    def __init__(self, ctx: PassContext):
        self.ctx = ctx

    def visit_For(self, node: ast.For) -> ast.For:
        return node  # an inner loop kept as written stays as written

    def visit_Assign(self, node: ast.Assign) -> ast.stmt | list[ast.stmt]:
        if not _splittable(node) or any(self._own_call(n) for n in ast.walk(node.value)):
            return node
        return [ast.copy_location(ast.Assign(targets=[t], value=v), node)
                for t, v in zip(node.targets[0].elts, node.value.elts)]

    def _own_call(self, node: ast.AST) -> bool:
        """A call of a bare name that is not a global or builtin: maybe a closure of the loss."""
        return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id not in self.ctx.globals and not hasattr(builtins, node.func.id)


def _splittable(node: ast.Assign) -> bool:
    if len(node.targets) != 1 or not isinstance(node.targets[0], (ast.Tuple, ast.List)) \
            or not isinstance(node.value, (ast.Tuple, ast.List)):
        return False
    names, values = node.targets[0].elts, node.value.elts
    if len(names) != len(values) or not all(isinstance(n, ast.Name) for n in names):
        return False
    bound: set[str] = set()
    for name, value in zip(names, values):
        if loads(value) & bound:
            return False
        bound.add(name.id)
    return len(bound) == len(names)  # `a, a = x, y` binds a twice: left as written
