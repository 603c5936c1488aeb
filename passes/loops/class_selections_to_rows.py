"""Stage: the rows of one class, selected by its id in a loop over the class ids and read
otherwise than as one sum or mean along the selection, become that class's rows gathered before
the loop, padded to the largest class (``class_segments.class_selection_rows``).

A center loss per class is written::

    for c in range(n_classes):                          _rows, _kept = class_selection_rows(
        f = feat[labels == c]                     ->        feat, labels, 0, n_classes, 1)
        loss = loss + (f - centers[c]).pow(2)           for c in range(n_classes):
            .sum(1).mean()                                  f = _rows[c][_kept[c]]
                                                            loss = ...

with ``_rows is not None`` joining the loop's check. ``_rows[c][_kept[c]]`` is ``feat[labels ==
c]``: the same rows in the same order, each row's gradient its copy's. masked_selections_to_where
then makes it a masked dense form over the class's padded rows, where the mask ``labels == c``
would make one over every row: O(classes * largest class) instead of O(classes * rows).

Taken: ``x[M]``, with ``M`` and the loop as class_selections_to_segments takes them (``labels
== i``, or a name bound once to it, ``i`` the loop's index or item of a 1-D tensor of ids;
``x`` and ``labels`` pure expressions of names the body neither binds nor writes into), when
masked_selections_to_where converts every such selection of the body (a dry run; else it stays
as written). Before masked_selections_to_where, after class_selections_to_segments (a sum or
mean of the class's rows is one segment reduction, cheaper still). Left alone as there: an inner
loop, a helper rewritten for a vmapped body.
"""
from __future__ import annotations

import ast

from .. import ast_marks
from ..ast_tools import PassContext, clone
from ..class_segments import class_selection_rows, class_selection_rows_at
from .class_selections_to_segments import _Segments, class_loop_body
from .masked_selections_to_where import rewrite as to_where
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    visited = class_loop_body(plan, ctx, _ClassRows)
    if visited is None or not visited[0].made:
        return plan
    rows, body = visited
    it = plan.iteration
    if rows.position is not None:  # a name, so the selection is of a row by names
        body[:0] = plan.sub("p = e", p=rows.position, e=rows._position())
    masks = frozenset(plan.masks | {kept for _, kept in rows.names.values()})
    to_where(body, {it.index} | {name for name, _ in it.elements}, ctx, masks,
             frozenset({it.index}))  # marks what it would convert
    if not all(ast_marks.get(s, ast_marks.WHERE_CONVERTED, False) for s in rows.made):
        return plan
    plan.body = body
    plan.masks |= masks
    plan.prelude += rows.prelude
    for name, _ in rows.names.values():
        plan.check("r is not None", r=ast.Name(name, ast.Load()))
    return plan


class _ClassRows(_Segments):
    """``x[labels == i]`` -> ``_rows[p][_kept[p]]`` (``p`` the iteration's position)."""

    def __init__(self, plan: LoopPlan, ctx: PassContext, key: str, written: set[str]):
        super().__init__(plan, ctx, key, written)
        self.names: dict[str, tuple[str, str]] = {}   # (x, labels) dump -> (rows, kept) names
        self.made: list[ast.Subscript] = []
        self.position: str | None = None   # the name of the position, when not the index

    def visit_Call(self, node: ast.Call) -> ast.AST:
        return self.generic_visit(node)  # class_selections_to_segments took the reductions

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        labels = self.labels_of(node.slice)
        if labels is None or not self.invariant(node.value):
            return node
        rows, kept = self._gathered(node.value, labels)
        position = self._position()
        if not isinstance(position, ast.Name):
            self.position = self.position or self.ctx.namer.new("position")
            position = ast.Name(self.position, ast.Load())
        made = self.plan.sub("r[p][k[p]]", r=ast.Name(rows, ast.Load()), p=position,
                             k=ast.Name(kept, ast.Load()))
        self.made.append(ast.copy_location(made, node))
        return made

    def _gathered(self, x: ast.expr, labels: ast.expr) -> tuple[str, str]:
        """The names of the class rows of ``x`` by ``labels`` and their mask, made once."""
        key = ast.dump(x) + ast.dump(labels)
        if key not in self.names:
            rows, kept = self.names[key] = (self.ctx.namer.new("rows"),
                                            self.ctx.namer.new("kept"))
            it = self.plan.iteration
            if it.elements:
                fn = self.ctx.bind(class_selection_rows_at, "class_selection_rows_at")
                self.prelude += self.plan.sub("r, k = f(x, l, c)", r=rows, k=kept, f=fn,
                                              x=clone(x), l=clone(labels),
                                              c=clone(it.elements[0][1]))
            else:
                fn = self.ctx.bind(class_selection_rows, "class_selection_rows")
                self.prelude += self.plan.sub("r, k = f(x, l, a, b, s)", r=rows, k=kept, f=fn,
                                              x=clone(x), l=clone(labels), a=clone(it.start),
                                              b=clone(it.stop), s=clone(it.step))
        return self.names[key]
