"""Stage: every item of a tensor but the iteration's own, ``torch.cat((x[:j], x[j + 1:]))``,
becomes a selection by a mask, which ``masked_selections_to_where`` turns into masked dense ops.

GE2E-style speaker losses compare an utterance with every centroid but its own speaker's: the
two slices around the loop index ``j`` keep ``len(x) - 1`` items, but their bounds vary per
iteration, which no batched form holds. For ``j >= 0``, ``x[:j]`` keeps the positions ``p < j``
and ``x[j + 1:]`` those after ``j`` (all of them when ``j`` is past the end), so their
concatenation along dim 0 is ``x[p != j]``::

    ex = torch.cat((s[:j], s[j + 1:]))     ->     _pos = torch.arange(s.shape[0], device=s.device)
    loss = loss + torch.max(ex)                   _in = _pos != j
                                                  ex = s[_in]
                                                  loss = loss + torch.max(ex)

``j`` is the loop's index, which the check requires to count up from 0 or more (``x[:-1]`` and
``x[0:]`` would overlap), or an enclosing ``range`` loop's index that starts at a literal 0 or
more: the inner loop's form then holds no slice that an outer loop mapping over ``j`` could not
batch; or a name the body binds once to such an index, at its top level, and never again (an
inlined helper's parameter, ``_drop_j = j``: ``inline_helper_calls`` binds each argument so),
when the body never binds the index. Taken: ``torch.cat`` of a list or tuple of exactly these two slices, in
this order, along dim 0 (no ``dim`` or a literal 0), of a name, attribute or subscript by names
and numbers. All or nothing: when ``masked_selections_to_where`` would not convert every such
selection, the body stays as written and the loop is kept with the slice-bound reason.
"""
from __future__ import annotations

import ast

from .. import ast_marks
from ..ast_tools import PassContext, clone, is_int, is_name, replace, walk
from .loop_dataflow import resolve_call, stores
from .masked_selections_to_where import _simple
from .masked_selections_to_where import rewrite as to_where
from .plan import LoopPlan
from .ragged_slices_to_masks import _Ragged

_MASK = """
p = torch.arange(x.shape[0], device=x.device)
k = p != j
"""


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    seeds = {plan.iteration.index} | {name for name, _ in plan.iteration.elements}
    outer = {k for k, (first, _) in plan.outer_bounds.items()
             if isinstance(first, ast.Constant) and type(first.value) is int and first.value >= 0}
    indices = {plan.iteration.index} | outer - seeds
    copies = _copies(plan.body, indices)
    excluded = _Excluded(indices | set(copies), ctx)
    body = excluded.block(clone(plan.body))
    if not excluded.made:
        return plan
    to_where(body, seeds, ctx, frozenset(plan.masks))  # marks what it would convert
    if all(ast_marks.get(s, ast_marks.WHERE_CONVERTED, False) for s in excluded.made):
        plan.body = body
        if plan.iteration.index in {copies.get(j, j) for j in excluded.used}:
            plan.need_plain_range()
    return plan


def _copies(body: list[ast.stmt], indices: set[str]) -> dict[str, str]:
    """Names the body binds once, at its top level, to one of ``indices`` that it never binds,
    and never again (an inlined helper's parameter that the call passes the index): name ->
    the index."""
    copies = {s.targets[0].id: s.value.id for s in body
              if isinstance(s, ast.Assign) and len(s.targets) == 1
              and isinstance(s.targets[0], ast.Name) and isinstance(s.value, ast.Name)
              and s.value.id in indices}
    bound = [n for s in body for n in walk(s) if isinstance(n, ast.stmt) for n in stores(n)]
    return {name: j for name, j in copies.items() if bound.count(name) == 1 and j not in bound}


class _Excluded(_Ragged):
    """``ragged_slices_to_masks``' walk over statements (its ``pre`` statements go before the
    statement), taking the calls described above instead of ragged slices."""

    def __init__(self, indices: set[str], ctx: PassContext):
        super().__init__(set(), ctx)
        self.indices = indices
        self.used: set[str] = set()  # the indices whose item is excluded

    def write(self, s: ast.stmt) -> ast.stmt:
        return self.visit(s)

    def visit_Subscript(self, sub: ast.Subscript) -> ast.expr:
        self.generic_visit(sub)
        return sub

    def visit_Call(self, call: ast.Call) -> ast.expr:
        self.generic_visit(call)
        found = self._excluded(call)
        if found is None:
            return call
        row, index = found
        self.used.add(index)
        pos, keep = self.ctx.namer.new("pos"), self.ctx.namer.new("in")
        self.pre += replace(_MASK, loc=call, torch_name=self.ctx.torch_name, p=pos, k=keep, x=row,
                            j=ast.Name(index, ast.Load()))
        made = replace("x[k]", loc=call, x=clone(row), k=keep)
        self.made.append(made)
        return made

    def _excluded(self, call: ast.Call) -> tuple[ast.expr, str] | None:
        """``(x, j)`` of ``torch.cat((x[:j], x[j + 1:]))``, else None."""
        pair = two_slices_joined(call, self.ctx, frozenset(self.indices))
        if pair is None:
            return None
        before, after = pair
        lo, hi = before.slice, after.slice
        index = next((j for j in self.indices if _slice(lo, None, j)), None)
        return (before.value, index) if index is not None and _slice(hi, index, None) else None


def two_slices_joined(call: ast.Call, ctx: PassContext, ints: frozenset = frozenset()
                      ) -> tuple[ast.Subscript, ast.Subscript] | None:
    """The two subscripts of ``torch.cat((x[...], x[...]))`` along dim 0 (no ``dim`` or a
    literal 0), of one name, attribute or subscript by names and numbers; else None.
    ``x[a, :j]`` is taken as ``x[a][:j]`` when ``a`` is an int literal or a name in ``ints``."""
    dims = call.args[1:] + [k.value for k in call.keywords if k.arg == "dim"]
    if resolve_call(call.func, ctx) != "torch.cat" or len(call.args) + len(
            call.keywords) - len(dims) != 1 or not all(is_int(d, 0) for d in dims) \
            or not isinstance(call.args[0], (ast.Tuple, ast.List)) \
            or len(call.args[0].elts) != 2:
        return None
    before, after = (_row_first(e, ints) for e in call.args[0].elts)
    if not (isinstance(before, ast.Subscript) and isinstance(after, ast.Subscript)
            and ast.dump(before.value) == ast.dump(after.value) and _simple(before.value)):
        return None
    return before, after


def _row_first(e: ast.expr, ints: frozenset) -> ast.expr:
    """``x[a, :j]`` as ``x[a][:j]`` when every entry before the slice is an int (an integer
    index drops its dimension before the slice applies; a tensor of indices would not)."""
    if not (isinstance(e, ast.Subscript) and isinstance(e.slice, ast.Tuple)
            and len(e.slice.elts) >= 2 and isinstance(e.slice.elts[-1], ast.Slice)
            and all(isinstance(x, ast.Name) and x.id in ints
                    or isinstance(x, ast.Constant) and type(x.value) is int
                    for x in e.slice.elts[:-1])):
        return e
    lead = e.slice.elts[:-1]
    row = ast.Subscript(value=clone(e.value), slice=clone(lead[0]) if len(lead) == 1 else
                        ast.Tuple([clone(x) for x in lead], ast.Load()), ctx=ast.Load())
    return ast.copy_location(ast.Subscript(value=ast.copy_location(row, e),
                                           slice=clone(e.slice.elts[-1]), ctx=ast.Load()), e)


def _slice(cut: ast.expr, lower: str | None, upper: str | None) -> bool:
    """``cut`` is ``:j`` (``upper`` the index) or ``j + 1:`` (``lower`` the index)."""
    if not isinstance(cut, ast.Slice) or cut.step is not None:
        return False
    if upper is not None:
        return cut.lower is None and is_name(cut.upper, upper)
    bound = cut.lower
    return cut.upper is None and isinstance(bound, ast.BinOp) and isinstance(bound.op, ast.Add) \
        and is_name(bound.left, lower) and is_int(bound.right, 1)
