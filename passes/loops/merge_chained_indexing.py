"""Stage: chained indexing of an outer tensor becomes one index, read or written.

``x[j][i]`` with an int ``j`` is ``x[j, i]``: ``x[j]`` is a view of ``x`` (basic indexing), so
reading ``x[j][i]`` reads ``x[j, i]`` and writing into it writes ``x[j, i]``. One index is what
the later stages read as a row of the loop (``x[j, i]`` over ``i`` is the slice ``x[j, a:b]``)
or as a write of the loop (``out[j, i] = v``). Each index before the last must be the loop's own
index (an int from ``range``/``enumerate``), an int constant, or an enclosing loop's index the
loop does not change, which the runtime check proves an int (else ``x[j]`` could be a copy:
advanced indexing); ``x`` a name the loop does not bind, which the runtime check proves a
tensor (a list takes no tuple index)::

    for j in range(n):
        for i in range(m):                  (inner check: isinstance(j, int) and ...)
            out[j][i] = f(x[j][i])   ->     out[j, i] = f(x[j, i])

The last index may be a slice whose bounds read the loop's index (pure: no call but a shape's),
a ragged row's cut: ``mask[i][:lengths[i]] = 1`` is ``mask[i, :lengths[i]] = 1``, the row a view
of ``mask`` written through.

Other chains (a slice, a tuple or another constant before the last index, ``d['key'][i]``) and
those inside nested functions and comprehensions (their own names) are left as they are.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, ScopedTransformer, clone, is_name, is_pure, walk
from .loop_dataflow import stores_in
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    varying = stores_in(plan.body) | {n for n, _ in it.elements} | {it.index}
    merge = _Merge(plan, varying, it.index)
    plan.body = [merge.visit(s) for s in plan.body]
    return plan


class _Merge(ScopedTransformer):
    def __init__(self, plan: LoopPlan, varying: set[str], own: str):
        self.plan, self.varying, self.own = plan, varying, own

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        merged = self.merged(node) or self.merged_inside(node)
        return self.generic_visit(merged if merged is not None else node)

    def merged(self, node: ast.Subscript) -> ast.Subscript | None:
        """``x[a][b][c]`` -> ``x[a, b, c]`` (its checks added to the plan), or None. An index
        other than the loop's index, a name it does not bind, an int or a slice of those ends
        the chain: ``x[i][j][f(k)]`` -> ``x[i, j][f(k)]``, ``x[i][mask]`` stays (what the later
        stages convert or refuse reads as the user wrote it)."""
        if not (self.plain(node.slice) or self.ragged_cut(node.slice)):
            return None
        chain, root = [node.slice], node.value
        while isinstance(root, ast.Subscript) and self.plain(root.slice):
            chain.append(root.slice)
            root = root.value
        if len(chain) < 2 or not isinstance(root, ast.Name) or root.id in self.varying:
            return None
        leading, last = chain[:0:-1], chain[0]
        if not all(self._int_index(e) for e in leading):
            return None
        for e in leading:
            if isinstance(e, ast.Name) and e.id != self.own:
                self.plan.check("isinstance(a, int)", a=e)
        self.plan.check("isinstance(x, torch.Tensor)", x=root)
        lasts = last.elts if isinstance(last, ast.Tuple) else [last]
        index = ast.Tuple([clone(e) for e in leading + lasts], ast.Load())
        return ast.copy_location(ast.Subscript(clone(root), index, node.ctx), node)

    def merged_inside(self, node: ast.Subscript) -> ast.Subscript | None:
        """``x[i][j][f(k)]`` -> ``x[i, j][f(k)]``, or None."""
        if not isinstance(node.value, ast.Subscript):
            return None
        inner = self.merged(node.value)
        if inner is None:
            return None
        return ast.copy_location(ast.Subscript(inner, node.slice, node.ctx), node)

    def plain(self, index: ast.expr) -> bool:
        if isinstance(index, ast.Slice):
            return all(p is None or self.plain(p) for p in (index.lower, index.upper, index.step))
        if isinstance(index, ast.Name):
            return index.id == self.own or index.id not in self.varying
        return isinstance(index, ast.Constant) and type(index.value) is int

    def ragged_cut(self, index: ast.expr) -> bool:
        """A slice whose bounds read the loop's index and names it does not bind, ``:L[i]``: the
        last index only (a ragged row's cut, which ``ragged_slices_to_masks`` and
        ``length_masks_to_compares`` read as ``x[i, :L[i]]``)."""
        return isinstance(index, ast.Slice) and all(
            p is None or self.plain(p) or is_pure(p) and all(
                n.id == self.own or n.id not in self.varying
                for n in walk(p) if isinstance(n, ast.Name))
            for p in (index.lower, index.upper, index.step))

    def _int_index(self, e: ast.expr) -> bool:
        """The loop's index, an int constant, or an enclosing loop's index the loop does not
        change (not any name: ``d[key][i]`` indexes a dict)."""
        if isinstance(e, ast.Constant):
            return type(e.value) is int
        return is_name(e, self.own) or isinstance(e, ast.Name) and e.id not in self.varying \
            and e.id in self.plan.outer_indices
