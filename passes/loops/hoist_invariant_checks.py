"""Stage: ``assert`` and ``raise`` on shapes and arguments run once, before the vectorized form.

An ``assert`` (or a ``raise``) whose test and message read nothing the body binds, and the
loop's items only through shape queries (``p.shape``, ``len(p)``, ``p.dim()``: the same for
every item of a tensor), has the same outcome in every iteration. It leaves the body
(``plan.first``: the vectorized branch runs it first, after the runtime check, which proves at
least one iteration), with the loop's variables standing for the first item; Python conditions
around it that are as invariant (and pure) come along::

    for p, t in zip(preds, targets):                  assert preds[0].shape == targets[0].shape, 'sizes'
        assert p.shape == t.shape, 'sizes'     ->     (vectorized body:)
        loss += ((p - t) ** 2).mean()                     loss += ((p - t) ** 2).mean()

The statement keeps its location, so it raises the same exception, with the same message, from
the user's line. Rows ``x[i]`` read this way need ``x`` to be a tensor (a runtime check; a list's
items may differ in shape). Checks on per-item values are left in the body (``check_body``
refuses them).
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, Transformer, clone, is_name, is_pure, replace, walk
from .loop_dataflow import is_shape_query, stores_in
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    first = {name: plan.sub("x[0]", x=src) for name, src in it.elements}
    first[it.index] = it.start
    hoist = _Hoist(plan, first, stores_in(plan.body), ctx)
    plan.body = hoist.block(plan.body, [])
    return plan


class _Hoist:
    def __init__(self, plan: LoopPlan, first: dict[str, ast.expr], bound: set[str],
                 ctx: PassContext):
        self.plan, self.first, self.bound, self.ctx = plan, first, bound, ctx

    def block(self, stmts: list[ast.stmt], conds: list[ast.expr]) -> list[ast.stmt]:
        """``stmts`` without the checks hoisted from them (under ``conds``)."""
        out = []
        for s in stmts:
            if isinstance(s, (ast.Assert, ast.Raise)) and self.invariant(s):
                self.plan.first.append(self.at_first(s, conds))
                continue
            if isinstance(s, ast.If) and is_pure(s.test) and self.invariant(s.test):
                negated = replace("not c", loc=s.test, c=s.test)
                s.body = self.block(s.body, conds + [s.test]) or [ast.copy_location(ast.Pass(), s)]
                s.orelse = self.block(s.orelse, conds + [negated])
                if all(isinstance(b, ast.Pass) for b in s.body) and not s.orelse:
                    continue  # an `if` holding only checks
            out.append(s)
        return out

    def invariant(self, node: ast.AST) -> bool:
        """Reads nothing the body binds; items only through shape queries (rows ``x[i]`` of a
        tensor ``x``: checked at run time)."""
        through = set()
        for n in walk(node):
            receiver = _queried(n, self.ctx)
            if isinstance(receiver, ast.Name) and receiver.id in self.first:
                through.add(id(receiver))
            elif isinstance(receiver, ast.Subscript) and isinstance(receiver.value, ast.Name) \
                    and receiver.value.id not in self.bound | self.first.keys() \
                    and any(is_name(receiver.slice, i) for i in self.first):
                through.add(id(receiver.slice))
        reads = [n for n in walk(node) if isinstance(n, ast.Name)]
        return not any(n.id in self.bound or n.id in self.first and id(n) not in through
                       for n in reads)

    def at_first(self, s: ast.stmt, conds: list[ast.expr]) -> ast.stmt:
        """``s`` under ``conds``, the loop's variables bound to the first item's."""
        for n in walk(s):
            if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Name) \
                    and n.slice.id in self.first and isinstance(n.value, ast.Name):
                self.plan.check("isinstance(x, torch.Tensor)", x=n.value)
        stmt = _First(self.first).visit(clone(s))
        for c in reversed(conds):
            stmt = ast.copy_location(ast.If(_First(self.first).visit(clone(c)), [stmt], []), s)
        return stmt


def _queried(node: ast.AST, ctx: PassContext) -> ast.expr | None:
    """What the shape query ``node`` asks about (``p`` of ``p.shape``, ``len(p)``, ``p.dim()``)."""
    if not is_shape_query(node, ctx):
        return None
    if isinstance(node, ast.Attribute):
        return node.value
    if isinstance(node.func, ast.Attribute):
        return node.func.value
    return node.args[0] if node.args else None


class _First(Transformer):
    """The loop's variables -> the first item's values."""

    def __init__(self, first: dict[str, ast.expr]):
        self.first = first

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.first:
            return ast.copy_location(clone(self.first[node.id]), node)
        return node
