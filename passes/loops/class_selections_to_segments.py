"""Stage: the rows of one class, selected by its id and reduced along the selection, in a loop
over the class ids, become that class's row of every class's reduction, computed once before the
loop (a segment reduction: ``class_segments.class_rows``).

A class centroid per id (prototypical networks, center losses) is written::

    for i in range(n_way):                           _emb_mean = class_rows(emb, target, 0, n_way,
        protos.append(emb[target == i].mean(0))  ->                         1, 'mean')
                                                     for i in range(n_way):     (the plan's body)
                                                         protos.append(_emb_mean[i])

with ``_emb_mean is not None`` joining the loop's check. Masked dense per class
(``masked_selections_to_where``'s form) reads every row once per class, O(classes * rows);
``class_rows`` adds each row once into its class's row (``index_add``), so the vectorized loop
is not slower than the original's one pass over each class's rows.

Taken, with ``i`` the index of ``for i in range(a, b, s)`` (also a comprehension's, or
``reversed(range(...))``), or the item of ``for i in ids`` / ``enumerate(ids)`` with ``ids`` a
pure expression the body does not change (``class_rows_at``: a 1-D tensor of integer ids), not
bound in the body: ``x[M].sum(0)`` / ``.mean(0)`` (``dim=0``; also
``torch.sum(x[M], 0)``; ``ROW_REDUCTIONS``) and the count ``M.sum()`` (``MASK_COUNTS``), where
``M`` is ``labels == i``, ``i == labels``, ``labels.eq(i)`` or ``torch.eq(labels, i)``
(``MASK_CALLS``), or a name bound once, at the body's top level before the read, to one; ``x`` and
``labels`` are pure expressions of names the body neither binds nor writes into. A mask name no
longer read loses its binding. ``class_rows`` gives the reductions as the original computes them
up to rounding (its docstring: dtypes, empty classes, ids outside the range, NaN/inf in other
classes' rows, gradients), or None, and the loop runs as written, for what it does not take.
Left alone: any other reduction (``max``, keepdim, a dtype), a mask of anything else, an inner
loop (its prelude would be a statement of the outer body) and a helper rewritten for a vmapped
body (its tensors may be batched).
"""
from __future__ import annotations

import ast

from ..ast_tools import (PassContext, Transformer, clone, is_int, is_name, is_pure,
                         unparse, walk)
from ..class_segments import class_rows, class_rows_at
from .loop_dataflow import loads, method_name, resolve_call, stores, stores_in, written_names
from .plan import LoopPlan

# The selected rows reduced along the selection (dim 0): method or torch function -> kind.
ROW_REDUCTIONS = {"sum": "sum", "mean": "mean", "torch.sum": "sum", "torch.mean": "mean"}
# The mask reduced whole: the number of the class's rows.
MASK_COUNTS = {"sum": "count", "torch.sum": "count"}
# Calls comparing labels with the id: method -> its receiver is the labels; function -> either.
MASK_CALLS = {"eq": "method", "torch.eq": "function"}


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    visited = class_loop_body(plan, ctx, _Segments)
    if visited is None or not visited[0].prelude:
        return plan
    segments, body = visited
    reads = {n for s in body for n in loads(s)}
    plan.body = [s for s in body if not (_bound_name(s) in segments.aliases
                                         and _bound_name(s) not in reads | plan.live_after)]
    plan.prelude += segments.prelude
    for name in segments.made.values():
        plan.check("r is not None", r=ast.Name(name, ast.Load()))
    return plan


def class_loop_body(plan: LoopPlan, ctx: PassContext, visitor: type[_Segments]):
    """(the visitor, the plan's body visited by it) for a loop over
    class ids as the module docstring says (also class_selections_to_rows'), else None."""
    it = plan.iteration
    key = it.index if it.index_is_user and not it.elements else \
        it.elements[0][0] if len(it.elements) == 1 else None
    if plan.inner or ctx.mapped or key is None or key in stores_in(plan.body) \
            or it.index in stores_in(plan.body):
        return None
    found = visitor(plan, ctx, key, written_names(plan.body))
    if it.elements and not found.invariant(it.elements[0][1]):
        return None
    body = []
    for s in plan.body:
        body.append(found.visit(clone(s)))
        found.note_alias(body[-1])
    return found, body


def _bound_name(s: ast.stmt) -> str | None:
    return s.targets[0].id if isinstance(s, ast.Assign) and len(s.targets) == 1 \
        and isinstance(s.targets[0], ast.Name) else None


class _Segments(Transformer):
    def __init__(self, plan: LoopPlan, ctx: PassContext, key: str, written: set[str]):
        self.plan, self.ctx, self.key, self.written = plan, ctx, key, written
        self.index = plan.iteration.index
        self.aliases: dict[str, ast.expr] = {}   # mask name -> the labels it compares
        self.made: dict[str, str] = {}           # (x, labels, kind) source -> the rows' name
        self.prelude: list[ast.stmt] = []

    def note_alias(self, s: ast.stmt) -> None:
        """``m = labels == i`` at the top level, ``m`` bound nowhere else in the body."""
        name = _bound_name(s)
        labels = self.labels_of(s.value) if name else None
        if labels is not None and sum(name in stores(t) for t in self.plan.body
                                      for t in walk(t) if isinstance(t, ast.stmt)) == 1:
            self.aliases[name] = labels

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        fn = resolve_call(node.func, self.ctx) or method_name(node, self.ctx)
        receiver = node.func.value if method_name(node, self.ctx) else None
        operand, args = (receiver, node.args) if receiver is not None else \
            (node.args[0] if node.args else None, node.args[1:])
        if operand is None or fn not in ROW_REDUCTIONS:
            return node
        if _at_dim_0(args, node.keywords) and isinstance(operand, ast.Subscript):
            labels = self.labels_of(operand.slice)
            if labels is not None and self.invariant(operand.value):
                return self.row(operand.value, labels, ROW_REDUCTIONS[fn], node)
        labels = self.labels_of(operand)
        if fn in MASK_COUNTS and not args and not node.keywords and labels is not None:
            return self.row(None, labels, MASK_COUNTS[fn], node)
        return node

    def labels_of(self, mask: ast.expr) -> ast.expr | None:
        """The labels ``mask`` compares with the loop index, or None."""
        if isinstance(mask, ast.Name):
            return self.aliases.get(mask.id)
        if isinstance(mask, ast.Compare) and len(mask.ops) == 1 and isinstance(mask.ops[0], ast.Eq):
            sides = [mask.left, mask.comparators[0]]
        elif isinstance(mask, ast.Call) and not mask.keywords:
            kind = MASK_CALLS.get(method_name(mask, self.ctx) or resolve_call(mask.func, self.ctx))
            sides = [mask.func.value] + mask.args if kind == "method" else \
                list(mask.args) if kind == "function" else []
        else:
            return None
        if len(sides) != 2 or not any(is_name(s, self.key) for s in sides):
            return None
        labels = sides[1] if is_name(sides[0], self.key) else sides[0]
        return labels if self.invariant(labels) else None

    def invariant(self, expr: ast.expr) -> bool:
        """A pure expression of names the body neither binds nor writes into."""
        return is_pure(expr) and not loads(expr) & (self.written | {self.index, self.key})

    def row(self, x: ast.expr | None, labels: ast.expr, kind: str, at: ast.Call) -> ast.expr:
        """This iteration's row of ``class_rows(x, labels, ..., kind)``, made once."""
        key = f"{unparse(x) if x is not None else ''}|{unparse(labels)}|{kind}"
        if key not in self.made:
            stem = f"{(unparse(x) if x is not None else unparse(labels)).split('.')[-1]}_{kind}"
            name = self.made[key] = self.ctx.namer.new(stem if stem.isidentifier() else kind)
            it, x = self.plan.iteration, clone(x) if x is not None else ast.Constant(None)
            self.prelude += self.plan.sub(
                "r = f(x, l, c, k)", r=name, f=self.ctx.bind(class_rows_at, "class_rows_at"),
                x=x, l=clone(labels), c=clone(it.elements[0][1]), k=ast.Constant(kind)) \
                if it.elements else self.plan.sub(
                "r = f(x, l, a, b, s, k)", r=name, f=self.ctx.bind(class_rows, "class_rows"),
                x=x, l=clone(labels), a=clone(it.start), b=clone(it.stop), s=clone(it.step),
                k=ast.Constant(kind))
        return ast.copy_location(self.plan.sub("r[p]", r=self.made[key], p=self._position()), at)

    def _position(self) -> ast.expr:
        """The iteration's row: ``(i - a) // s``, plainly ``i`` from 0 by 1."""
        it, index = self.plan.iteration, ast.Name(self.index, ast.Load())
        if is_int(it.step, 1):
            return index if is_int(it.start, 0) else self.plan.sub("i - a", i=index, a=it.start)
        return self.plan.sub("(i - a) // s", i=index, a=it.start, s=it.step)


def _at_dim_0(args: list[ast.expr], keywords: list[ast.keyword]) -> bool:
    """The arguments ``0`` or ``dim=0``, nothing else."""
    return (len(args) == 1 and is_int(args[0], 0) and not keywords) or (
        not args and len(keywords) == 1 and keywords[0].arg == "dim" and is_int(keywords[0].value, 0))
