"""Stage: a slice of a boolean-mask selection becomes one selection, by a narrower mask.

``x[m][a:b]`` keeps the selected elements (rows) of ranks ``a`` to ``b - 1``: a data-dependent
number, like ``x[m]`` itself. ``passes.selection_windows.selection_window`` gives the mask of
those elements, so the slice of the selection is one selection of ``x``, which
``masked_selections_to_where`` takes (its sums, means, appends) as it takes ``x[m]``::

    support.append(emb[target == c][:n_support])
    ->  support.append(emb[_selection_window(target == c, None, n_support)])

(a prototypical loss's support and query rows of one class). The same elements in the same order,
so the same values and gradients; nothing else changes when the later stages keep the loop. Taken
when ``m`` is a mask as ``masked_selections_to_where`` reads one (``strict_mask``: a comparison,
``~``/``&``/``|``/``^`` of masks, a boolean op's call, a name the body binds only to masks; one
that is not a bool tensor at run time raises ``TypeError`` and the original runs, with a warning), the slice has no step and its bounds are int constants or
names the loop does not bind, by arithmetic operators (a bound that varied would be a tensor
under vmap, which no slice takes). Other slices, and slices of other subscripts, are left as they are.
"""
from __future__ import annotations

import ast

from .. import selection_windows
from ..ast_tools import PassContext, ScopedTransformer, called_through, walk
from .loop_dataflow import stores_in
from .masked_selections_to_where import strict_mask, strict_masks
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    varying = stores_in(plan.body) | {n for n, _ in plan.iteration.elements} \
        | {plan.iteration.index}
    windows = _Windows(strict_masks(plan.body, ctx), varying, ctx)
    plan.body = [windows.visit(s) for s in plan.body]
    return plan


class _Windows(ScopedTransformer):
    def __init__(self, masks: set[str], varying: set[str], ctx: PassContext):
        self.masks, self.varying, self.ctx = masks, varying, ctx

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        cut, inner = node.slice, node.value
        if not (isinstance(node.ctx, ast.Load) and isinstance(cut, ast.Slice) and cut.step is None
                and isinstance(inner, ast.Subscript) and not isinstance(inner.slice, ast.Tuple)
                and strict_mask(inner.slice, self.masks, self.ctx)
                and all(self._fixed(b) for b in (cut.lower, cut.upper))):
            return node
        bounds = [b if b is not None else ast.Constant(None) for b in (cut.lower, cut.upper)]
        window = called_through(ast.copy_location(
            ast.Call(ast.Name("selection_window", ast.Load()), [inner.slice, *bounds], []),
            inner.slice), selection_windows.selection_window, self.ctx)
        return ast.copy_location(ast.Subscript(inner.value, window, ast.Load()), node)

    def _fixed(self, bound: ast.expr | None) -> bool:
        """None, or int constants and names the loop does not bind, by arithmetic operators
        (``n_support + n_query``, ``-2``)."""
        return bound is None or all(
            isinstance(n, (ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop, ast.Load))
            or isinstance(n, ast.Constant) and type(n.value) is int
            or isinstance(n, ast.Name) and n.id not in self.varying for n in ast.walk(bound))

