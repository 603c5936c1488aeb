"""Stage: a value every iteration computes the same, through an op whose derivative may be
infinite, runs vectorized only while what it is computed from takes no gradient.

The original computes ``torch.exp(w)`` in every iteration and differentiates each copy on its
own: ``w``'s gradient is the sum over iterations of ``cotangent_i * exp(w)``, NaN where one
cotangent is 0 and ``exp(w)`` is inf (0 * inf). The vectorized forms compute it once for all
iterations: ``(sum of the cotangents) * exp(w)``, +-inf there. The two agree when the op's
derivative is finite or NaN whatever the values (``OpSpec.derivative`` "constant" or
"bounded"), and when no gradient flows. So the loop as written (``plan.node``; an inner loop
vectorized before is read as written too) is searched for ops that do not vary with the
iteration and whose derivative may be infinite (unknown ops included), and what they read
before the loop (names and attributes; the body's own names are followed to what they are
computed from) join the runtime check: where one of them takes a gradient (with grad mode
on), the loop runs as written. The report says so (``plan.no_grad_reason``)::

    for i in range(n):                   if <check> and not (torch.is_grad_enabled() and (
        s += F.l1_loss(x[i],     ->              not isinstance(w, (int, float, str, type(None)))
                       torch.exp(w))             and getattr(w, 'requires_grad', True))):
                                             <vectorized statements>
                                         else:
                                             <the loop as written>

Ops in a branch under a condition that varies with the iteration are left out: that branch
reads what it takes from before the loop per iteration, under its mask, or behind the check that
it takes no gradient (``tensor_branches_to_where``'s ``FixedOperand``).

A tensor counts as taking a gradient when it requires grad, anything else but a number, a
string or None (a list, an object) always. A value read from a name the body binds other than
by assignment, iteration or ``with`` (a parameter of a function it defines, say) cannot be
checked: the loop is kept, with the reason.
"""
from __future__ import annotations

import ast
import types

import torch

from .. import ast_marks
from ..ast_tools import PassContext, clone, unparse, walk
from ..errors import Unsupported
from .loop_dataflow import derivative, depends, operands, stops_gradient
from .plan import LoopPlan
from .runtime_checks import is_vectorized_guard

_TAKES_GRAD = ("not isinstance(x, (int, float, str, type(None))) "
               "and getattr(x, 'requires_grad', True)")
# A product or quotient by a finite (nonzero) Python number has a constant derivative.
_NUMBER = {ast.Mult: "type(d) in (int, float) and abs(d) < float('inf')",
           ast.Div: "type(d) in (int, float) and 0 < abs(d) < float('inf')"}


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    body = as_written_body(plan.node.body)
    it = plan.iteration
    bindings = bindings_of(body)
    # the header's own targets too: a stage may have dropped an element the body no longer reads
    targets = {n.id for n in walk(plan.node.target) if isinstance(n, ast.Name)}
    variant = _variant(body, {it.index} | {n for n, _ in it.elements} | targets, ctx)
    discarded = {id(s.value) for s in walk(ast.Module(body, [])) if isinstance(s, ast.Expr)}
    discarded |= _under_masks(body, variant, ctx)
    numbers, leaves, first = {}, {}, None
    for n in (n for s in body for n in walk(s)):  # `lst.append(e)`: no value, `e` is seen
        if not isinstance(n, (ast.Call, ast.BinOp, ast.UnaryOp)) or id(n) in discarded \
                or derivative(n, ctx) is not None or depends(n, variant, ctx):
            continue
        number = _number_operand(n, bindings)
        if number is not None:
            numbers.setdefault(unparse(number), plan.sub(_NUMBER[type(n.op)], d=number))
            first = first or n
            continue
        for leaf in _leaves(n, bindings, set(), ctx):
            first = first or n
            if leaf is None:
                raise Unsupported(
                    f"`{unparse(n)}` is the same in every iteration and its derivative may be "
                    "infinite, and what it is computed from cannot be checked before the loop: "
                    "the original differentiates it in every iteration, a vectorized loop once "
                    "for all", n.lineno)
            leaves.setdefault(unparse(leaf), leaf)
    for check in numbers.values():
        plan.checks.add(check)
    if leaves:
        takes = [plan.sub(_TAKES_GRAD, x=leaf) for leaf in leaves.values()]
        plan.check("not (torch.is_grad_enabled() and t)",
                   t=takes[0] if len(takes) == 1 else ast.BoolOp(ast.Or(), takes))
    if first is not None:
        plan.no_grad_reason = _reason(first, list(numbers), list(leaves))
    return plan


def _under_masks(body: list[ast.stmt], variant: set[str], ctx: PassContext) -> set[int]:
    """The ids of the nodes in branches of an ``if`` (or arms of a conditional expression, which
    ``conditional_expressions_to_branches`` makes one) whose test varies with the iteration:
    ``tensor_branches_to_where`` reads the values they take from before the loop per iteration
    under the mask (``FixedOperand``), so their ops are differentiated per iteration too."""
    return {id(n) for s in body for node in walk(s) if isinstance(node, (ast.If, ast.IfExp))
            and depends(node.test, variant, ctx) for b in _branches(node) for n in walk(b)}


def _branches(node: ast.If | ast.IfExp) -> list[ast.AST]:
    return node.body + node.orelse if isinstance(node, ast.If) else [node.body, node.orelse]


def _reason(op: ast.expr, numbers: list[str], leaves: list[str]) -> str:
    """The report's: while what holds the loop runs vectorized, and why."""
    whiles = [f"{', '.join(f'`{x}`' for x in numbers)} "
              f"{'is a finite number' if len(numbers) == 1 else 'are finite numbers'}"] \
        if numbers else []
    whiles += [f"{', '.join(f'`{x}`' for x in leaves)} take{'s' if len(leaves) == 1 else ''} "
               "no gradient"] if leaves else []
    return (f"; while {' and '.join(whiles)}, else the loop runs as "
            f"written: `{unparse(op)}` is the same in every iteration and its derivative may be "
            "infinite, which the original differentiates in every iteration (0 * inf = NaN "
            "where an iteration's cotangent is 0), a vectorized loop once for all")


def _number_operand(op: ast.expr, bindings: dict) -> ast.expr | None:
    """The operand of a product (its right one) or a quotient (the divisor) to check for a Python
    number, when it is read before the loop without calls (names, attributes, arithmetic)."""
    if not (isinstance(op, ast.BinOp) and type(op.op) in _NUMBER):
        return None
    d = op.right
    plain = all(isinstance(n, (ast.Name, ast.Attribute, ast.Constant, ast.BinOp, ast.UnaryOp,
                               ast.Subscript, ast.operator, ast.unaryop, ast.expr_context))
                for n in walk(d))
    return d if plain and not any(isinstance(n, ast.Name) and n.id in bindings
                                  for n in walk(d)) else None


def as_written_body(body: list[ast.stmt]) -> list[ast.stmt]:
    """``body`` with inner loops vectorized before as written (their guards' else branch,
    without the tensor of the ints an object holds one made in front of it: indices, no
    gradient, and not the user's)."""
    class AsWritten(ast.NodeTransformer):
        def visit_If(self, node: ast.If) -> ast.AST:
            return self.visit(node.orelse[0]) if is_vectorized_guard(node) else \
                self.generic_visit(node)

        def visit_Assign(self, node: ast.Assign) -> ast.AST | None:
            return None if ast_marks.get(node, ast_marks.HELD_SEQUENCE) else node
    return [w for s in body if (w := AsWritten().visit(clone(s))) is not None]


def _variant(body: list[ast.stmt], seeds: set[str], ctx: PassContext) -> set[str]:
    """Names that vary with the iteration: ``seeds``, names bound from a value that varies, and
    names bound inside a compound statement (inner loops included) whose header or test does."""
    variant, grown = set(seeds), True
    while grown:
        grown = False
        for n in (n for s in body for n in walk(s)):
            value = getattr(n, "value", None) if isinstance(
                n, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.NamedExpr)) else \
                getattr(n, "iter", None) if isinstance(n, (ast.For, ast.comprehension)) else \
                getattr(n, "test", None) if isinstance(n, (ast.If, ast.While)) else None
            if value is None or not depends(value, variant, ctx):
                continue
            scope = n if isinstance(n, (ast.For, ast.If, ast.While)) else \
                getattr(n, "target", None) or ast.Tuple(getattr(n, "targets", []), ast.Load())
            new = {m.id for m in walk(scope) if isinstance(m, ast.Name)
                   and not isinstance(m.ctx, ast.Load)} - variant
            variant |= new
            grown |= bool(new)
    return variant


def bindings_of(body: list[ast.stmt]) -> dict[str, list[ast.expr | None]]:
    """What each name the body binds is computed from (None: something not followed)."""
    found: dict[str, list[ast.expr | None]] = {}
    for n in (n for s in body for n in walk(s)):
        pairs = [(t, n.value) for t in n.targets] if isinstance(n, ast.Assign) else \
            [(n.target, n.value)] if isinstance(n, (ast.AugAssign, ast.AnnAssign, ast.NamedExpr)) \
            else [(n.target, n.iter)] if isinstance(n, (ast.For, ast.comprehension)) else \
            [(i.optional_vars, i.context_expr) for i in n.items] if isinstance(n, ast.With) \
            else []
        for target, value in pairs:
            for name in walk(target) if target is not None else ():
                if isinstance(name, ast.Name):
                    found.setdefault(name.id, []).append(value)
        if isinstance(n, (ast.FunctionDef, ast.Lambda, ast.ExceptHandler, ast.Import,
                          ast.ImportFrom, ast.Global, ast.Nonlocal)):
            params = [a.arg for a in walk(n.args) if isinstance(a, ast.arg)] \
                if isinstance(n, (ast.FunctionDef, ast.Lambda)) else []
            for name in {getattr(n, "name", None), *getattr(n, "names", ()), *params} - {None}:
                found.setdefault(getattr(name, "name", name), []).append(None)
    return found


def _leaves(expr: ast.AST, bindings: dict, seen: set[str], ctx: PassContext) -> list:
    """The names and attributes ``expr`` reads from before the loop (None: one not found)."""
    if isinstance(expr, ast.Name):
        if expr.id not in bindings:
            return [expr]
        if expr.id in seen:
            return []
        seen.add(expr.id)
        return [leaf for v in bindings[expr.id] for leaf in
                ([None] if v is None else _leaves(v, bindings, seen, ctx))]
    if isinstance(expr, ast.Constant) or stops_gradient(expr, ctx):
        return []  # `scale.detach()`: what it reads takes no gradient through it
    if isinstance(expr, ast.Attribute):
        root = expr.value
        while isinstance(root, ast.Attribute):
            root = root.value
        if isinstance(root, ast.Name) and root.id not in bindings:
            return [] if module_constant(expr, ctx) else [expr]
        return _leaves(expr.value, bindings, seen, ctx)
    if isinstance(expr, ast.Subscript):  # no gradient flows to an index
        return _leaves(expr.value, bindings, seen, ctx)
    children = operands(expr, ctx) if isinstance(expr, ast.Call) else ast.iter_child_nodes(expr)
    return [leaf for c in children for leaf in _leaves(c, bindings, seen, ctx)]


def module_constant(expr: ast.Attribute, ctx: PassContext) -> bool:
    """``expr`` is an attribute of a module that is no tensor (``torch.bool``, ``math.pi``)."""
    names = []
    while isinstance(expr, ast.Attribute):
        names.append(expr.attr)
        expr = expr.value
    value = ctx.globals.get(expr.id) if isinstance(expr, ast.Name) and (
        ctx.local_names is None or expr.id not in ctx.local_names) else None  # as resolve_call
    if not isinstance(value, types.ModuleType):
        return False
    for name in reversed(names):
        value = getattr(value, name, None)
    return value is not None and not isinstance(value, torch.Tensor)
