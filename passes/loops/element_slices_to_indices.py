"""Stage: slices at a loop element (a label) become indexing, which vmap maps.

Metric and margin losses iterate the labels and cut each sample's own row, or every row but it,
out of a class table: ``for y in labels``, ``P[y:y + 1]``, ``torch.cat((w[i, :y], w[i, y +
1:]))``. The slice bounds vary per element, which no batched form holds; for an element ``y``
with ``0 <= y < n`` (``n`` the size of the sliced dim) the unit slice is the row ``y`` with its
dim kept, and the two slices around ``y`` are the ``n - 1`` positions ``q + (q >= y)`` (``q``
counting ``0 .. n - 2``), gathered in order::

    a = P[y:y + 1, :]                       ->   a = P[y, :].unsqueeze(0)

    ex = torch.cat((w[i, :y], w[i, y + 1:]))  ->  _q = torch.arange(w.shape[1] - 1, device=w.device)
                                                  _others = _q + (_q >= y)
                                                  ex = w[i, _others]

The element may also be a row whose int columns are the bounds (N-pair losses iterate sampled
``(anchor, positive, *negatives)`` tuples): ``x[t[0]:t[0] + 1]`` is ``x[t[0]].unsqueeze(0)``, the
check then reading the iterated value's column ``c`` (a 2-d tensor with more than ``c`` columns).

Same values, and the same gradients: each kept item is read once, at the same position. Taken:
``y`` a name the loop binds to the items of an iterated tensor (not rebound in the body); the
sliced value a name, attribute or subscript by names and numbers that the body does not bind;
for the unit slice, only full slices ``:`` before it (as ``unit_slices_to_index``); for the cut,
only single indices before the two slices, ``torch.cat`` of exactly those two along dim 0. The
cut is taken in statements of the body's top level (its positions are bound just before).

The run-time check, once: the iterated value is a 1-d int64 or int32 tensor whose items all lie
in ``[0, n)`` (a negative label makes ``x[:y]`` and ``x[y + 1:]`` overlap, one past the end
makes the unit slice empty; other dtypes index differently), and the sliced value is a tensor
with that dim. Else the loop runs as written.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, Transformer, clone, is_int, is_name, replace, walk
from .excluded_items_to_masks import two_slices_joined
from .loop_dataflow import loads, write_entries
from .masked_selections_to_where import _simple
from .plan import LoopPlan

_POSITIONS = """
q = torch.arange(x.shape[k] - 1, device=x.device)
others = q + (q >= y)
"""
_CHECK = ("isinstance(src, torch.Tensor) and src.dim() == 1 "
          "and src.dtype in (torch.int64, torch.int32) "
          "and isinstance(x, torch.Tensor) and x.dim() > k "
          "and bool(((src >= 0) & (src < x.shape[k])).all())")

_COLUMN_CHECK = ("isinstance(rows, torch.Tensor) and rows.dim() == 2 and rows.shape[1] > c and "
                 + _CHECK.replace("src", "rows[:, c]"))


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    bound = {n.id for s in plan.body for n in walk(s)
             if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    elements = {name: src for name, src in plan.iteration.elements if name not in bound}
    if not elements:
        return plan
    cuts = _Slices(elements, bound | {plan.iteration.index}, plan, ctx)
    body = []
    for s in plan.body:
        s = cuts.visit(s)
        body += cuts.pre + [s]
        cuts.pre = []
    plan.body = body
    return plan


class _Slices(Transformer):
    def __init__(self, elements: dict[str, ast.expr], variant: set[str], plan: LoopPlan,
                 ctx: PassContext):
        self.elements, self.plan, self.ctx = elements, plan, ctx
        self.variant = variant | set(elements)
        self.pre: list[ast.stmt] = []
        self.depth = 0  # statements and scopes around the node: `pre` goes before the top level

    def visit_Subscript(self, node: ast.Subscript) -> ast.expr:
        self.generic_visit(node)
        entries = write_entries(node)
        at = [k for k, x in enumerate(entries) if self._unit(x) is not None]
        if not isinstance(node.ctx, ast.Load) or len(at) != 1 or not self._fixed(node.value) \
                or not all(_full(x) for x in entries[:at[0]]):
            return node
        k = at[0]
        y = self._unit(entries[k])
        self._check(y, node.value, k, _column(entries[k].lower))
        entries[k] = clone(entries[k].lower)
        node.slice = ast.Tuple(entries, ast.Load()) if len(entries) > 1 else entries[0]
        return replace(f"x.unsqueeze({k})", loc=node, x=node)

    def visit_Call(self, call: ast.Call) -> ast.expr:
        self.generic_visit(call)
        found = self._cut(call)
        if found is None or self.depth > 1:  # 1: the top-level statement itself
            return call
        x, prefix, y = found
        k = len(prefix)
        self._check(y, x, k)
        q, others = self.ctx.namer.new("q"), self.ctx.namer.new("others")
        self.pre += replace(_POSITIONS, loc=call, torch_name=self.ctx.torch_name, q=q,
                            others=others, x=clone(x), k=ast.Constant(k), y=ast.Name(y, ast.Load()))
        entries = clone(prefix) + [ast.Name(others, ast.Load())]
        index = ast.Tuple(entries, ast.Load()) if len(entries) > 1 else entries[0]
        return ast.copy_location(ast.Subscript(clone(x), index, ast.Load()), call)

    def generic_visit(self, node: ast.AST) -> ast.AST:
        nested = isinstance(node, (ast.stmt, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
                                   ast.GeneratorExp))
        self.depth += nested
        node = super().generic_visit(node)
        self.depth -= nested
        return node

    def _unit(self, x: ast.expr) -> str | None:
        """``y`` of the slice ``y:y + 1`` (or ``y[c]:y[c] + 1``) at an element ``y``, else None."""
        if not (isinstance(x, ast.Slice) and x.step is None and x.lower is not None):
            return None
        y, up = _element_of(x.lower), x.upper
        ok = y in self.elements and isinstance(up, ast.BinOp) and isinstance(up.op, ast.Add) and (
            (_same(up.left, x.lower) and is_int(up.right, 1))
            or (is_int(up.left, 1) and _same(up.right, x.lower)))
        return y if ok else None

    def _cut(self, call: ast.Call) -> tuple[ast.expr, list[ast.expr], str] | None:
        """(``x``, the single indices before the slices, ``y``) of ``torch.cat((x[..., :y],
        x[..., y + 1:]))``, else None."""
        pair = two_slices_joined(call, self.ctx)
        if pair is None or not self._fixed(pair[0].value):
            return None
        before, after = pair
        lo, hi = write_entries(before), write_entries(after)
        if len(lo) != len(hi) or any(ast.dump(a) != ast.dump(b) for a, b in zip(lo[:-1], hi[:-1])) \
                or not all(_single(x) for x in lo[:-1]):
            return None
        cut_lo, cut_hi = lo[-1], hi[-1]
        if not (isinstance(cut_lo, ast.Slice) and cut_lo.lower is None and cut_lo.step is None
                and isinstance(cut_lo.upper, ast.Name) and cut_lo.upper.id in self.elements):
            return None
        y, bound = cut_lo.upper.id, getattr(cut_hi, "lower", None)
        if not (isinstance(cut_hi, ast.Slice) and cut_hi.upper is None and cut_hi.step is None
                and isinstance(bound, ast.BinOp) and isinstance(bound.op, ast.Add)
                and is_name(bound.left, y) and is_int(bound.right, 1)):
            return None
        return before.value, lo[:-1], y

    def _fixed(self, x: ast.expr) -> bool:
        """``x`` is the same object in every iteration: no name the body binds or the loop
        varies."""
        return _simple(x) and not (loads(x) & self.variant)

    def _check(self, y: str, x: ast.expr, k: int, column: int | None = None) -> None:
        if column is None:
            self.plan.check(_CHECK, src=clone(self.elements[y]), x=clone(x), k=ast.Constant(k))
        else:  # the elements are rows: their column ``c`` holds the bounds
            self.plan.check(_COLUMN_CHECK, rows=clone(self.elements[y]), c=ast.Constant(column),
                            x=clone(x), k=ast.Constant(k))


def _full(x: ast.expr) -> bool:
    return isinstance(x, ast.Slice) and x.lower is None and x.upper is None and x.step is None


def _single(x: ast.expr) -> bool:
    """An index that drops its dim: a name or an int, not a slice."""
    return isinstance(x, ast.Name) or (isinstance(x, ast.Constant) and type(x.value) is int)


def _element_of(bound: ast.expr) -> str | None:
    """``y`` of a slice bound ``y`` or ``y[c]`` (``c`` an int, not negative), else None."""
    if isinstance(bound, ast.Name):
        return bound.id
    if isinstance(bound, ast.Subscript) and isinstance(bound.value, ast.Name) \
            and _column(bound) is not None:
        return bound.value.id
    return None


def _column(bound: ast.expr) -> int | None:
    """``c`` of a slice bound ``y[c]``, else None."""
    c = bound.slice if isinstance(bound, ast.Subscript) else None
    return c.value if isinstance(c, ast.Constant) and type(c.value) is int and c.value >= 0 else None


def _same(a: ast.expr, b: ast.expr) -> bool:
    return ast.dump(a) == ast.dump(b)
