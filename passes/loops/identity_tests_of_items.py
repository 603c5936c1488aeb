"""Stage: a test of whether the loop's item is ``None`` is decided. The vectorized form iterates
rows of a tensor (a list's items stacked, which the check requires to be tensors), never
``None``, so::

    for idx, prob in enumerate(prob_list):          for idx, prob in enumerate(prob_list):
        if prob is None:                      ->        N = len(prob)
            pre_count = pre_density[idx].sum()          ...
        else:
            N = len(prob)
            ...

``x is None`` is ``False`` and ``x is not None`` ``True`` for an element the loop iterates
(``Iteration.elements``) that the body never binds again; ``and``/``or``/``not`` and conditional
expressions around them are decided as far as that goes (``prob is None or len(prob) == 0`` ->
``len(prob) == 0``), and an ``if`` whose test is decided is the branch it takes. The later stages
would read such a test as a condition on tensor values (a where of a Python bool, which raises).
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, Transformer
from .loop_dataflow import stores_in
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    items = {name for name, _ in plan.iteration.elements} - stores_in(plan.body)
    if items:
        plan.body = _Decided(items).statements(plan.body) or [ast.Pass()]
    return plan


class _Decided(Transformer):
    def __init__(self, items: set[str]):
        self.items = items
        self.made: set[ast.Constant] = set()  # the decided tests: the user's own constants stay

    def _known(self, node: ast.expr) -> bool | None:
        return node.value if node in self.made else None

    def _decided(self, value: bool, loc: ast.AST) -> ast.Constant:
        done = ast.copy_location(ast.Constant(value), loc)
        self.made.add(done)
        return done

    def visit_Compare(self, node: ast.Compare) -> ast.expr:
        self.generic_visit(node)
        if len(node.ops) != 1 or not isinstance(node.ops[0], (ast.Is, ast.IsNot)):
            return node
        sides = {type(s) for s in (node.left, node.comparators[0])}
        names = {s.id for s in (node.left, node.comparators[0]) if isinstance(s, ast.Name)}
        nones = [s for s in (node.left, node.comparators[0])
                 if isinstance(s, ast.Constant) and s.value is None]
        if sides == {ast.Name, ast.Constant} and nones and names <= self.items:
            return self._decided(isinstance(node.ops[0], ast.IsNot), node)
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.expr:
        self.generic_visit(node)
        absorbing = isinstance(node.op, ast.Or)  # True decides an `or`, False an `and`
        rest: list[ast.expr] = []
        for v in node.values:
            known = self._known(v)
            if known is absorbing and not rest:  # decided before anything else is evaluated
                return self._decided(absorbing, node)
            # `False or x` is `x` itself; `x or False` is False where x is falsy: a last one
            # stays, and so does all after a value not decided (`x or True` is x if truthy)
            if known is None or rest or v is node.values[-1]:
                rest.append(v)
        node.values = rest
        return rest[0] if len(rest) == 1 else node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.expr:
        self.generic_visit(node)
        known = self._known(node.operand)
        if isinstance(node.op, ast.Not) and known is not None:
            return self._decided(not known, node)
        return node

    def visit_IfExp(self, node: ast.IfExp) -> ast.expr:
        self.generic_visit(node)
        known = self._known(node.test)
        return node if known is None else (node.body if known else node.orelse)

    def visit_If(self, node: ast.If) -> ast.stmt | list[ast.stmt]:
        node.test = self.visit(node.test)
        known = self._known(node.test)
        if known is None:
            node.body = self.statements(node.body) or [ast.Pass()]
            node.orelse = self.statements(node.orelse)
            return node
        return self.statements(node.body if known else node.orelse)
