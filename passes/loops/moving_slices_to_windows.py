"""Stage: slices of one width at a position that moves with the loop index become rows of one
view of all the windows.

Multi-crop and multi-view losses cut each view's block out of one concatenated batch
(``output[bs * v:bs * (v + 1)]``), sequence losses a window at each step (``z[:, t:t + k]``).
vmap takes no slice at a batched position; but when both bounds are ``d + k * i`` plus a width
``w`` that no iteration changes, the slices are rows of one strided view (``slice_windows``:
``unfold``, no copy), which the later stages read as any row at the index::

    for v in range(n):                       _output_windows = slice_windows(output, 0,
        x = output[bs * v:bs * (v + 1)]   ->      lambda: (0, bs, bs, n))
                                             for v in range(n):
                                                 x = _output_windows[v]

    z[:, t:t + k]                        ->  _z_windows[:, t]

The bounds are sums and products of ints, the index and names the loop does not bind, with
``hi - lo`` the same and ``lo`` growing by the same step in every iteration (found by evaluating
them at a few indices for two draws of the other names); the windows are counted from index 0
to the range's stop, each inside the tensor (the run-time check, ``slice_windows``: else None
and the loop as written, which slices as Python does). Only loads, with full slices ``:`` before
the moving one; an inner loop keeps its slices (its view would be a statement of the outer
body) and takes this stage when it is planned on its own.

An element iterated over the int64 tensor of a numpy array's ints (``plan.item_ints``,
``for v in np.delete(np.arange(n), k)``) moves the slices as the index does: the windows are
counted from 0 up to its largest int (``window_count``: none negative, else the loop as
written), and the slice reads the row at the element, ``_output_windows[v]``.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, Transformer, clone, is_pure, unparse
from ..slice_windows import slice_windows, window_count
from .loop_dataflow import loads, write_entries, written_names
from .plan import LoopPlan
from .row_slices_to_params import full_slice


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    if plan.inner or plan.iteration is None:
        return plan
    windows = _Windows(plan, written_names(plan.body), ctx)
    plan.body = [windows.visit(s) for s in plan.body]
    return plan


class _Windows(Transformer):
    def __init__(self, plan: LoopPlan, bound: set[str], ctx: PassContext):
        self.plan, self.ctx = plan, ctx
        # what moves the slices -> the count of windows from 0: the index, and elements
        # iterated over a numpy array's ints (up to the largest)
        self.moving = {plan.iteration.index: plan.iteration.stop} | {
            e: plan.sub(f"{ctx.bind(window_count, 'window_count')}(n)", n=ast.Name(n, ast.Load()))
            for e, n in plan.item_ints.items()}
        self.bound = bound  # names the body binds or writes into: not fixed
        self.made: dict[str, str] = {}  # (tensor, dim, bounds) -> the windows' name

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        if not isinstance(node.ctx, ast.Load) or not self._fixed(node.value):
            return node
        entries = write_entries(node)
        at = next((k for k, e in enumerate(entries) if isinstance(e, ast.Slice)
                   and not full_slice(e)), None)
        if at is None or not all(full_slice(e) for e in entries[:at]):
            return node
        moving = [m for m in self.moving if m in loads(entries[at])]
        bounds = self._bounds(entries[at], moving[0]) if len(moving) == 1 else None
        if bounds is None:
            return node
        name = self._windows(node.value, at, bounds)
        self.plan.windows.setdefault(name, self.plan.quote(node))
        after = entries[at + 1:]
        rest = [ast.Name(moving[0], ast.Load())] + ([ast.Slice()] + after if after else [])
        slices = entries[:at] + rest
        return ast.copy_location(ast.Subscript(ast.Name(name, ast.Load()), ast.Tuple(
            slices, ast.Load()) if len(slices) > 1 else slices[0], ast.Load()), node)

    def _fixed(self, x: ast.expr) -> bool:
        """A tensor expression the loop does not change: a name or attribute it does not bind."""
        return isinstance(x, (ast.Name, ast.Attribute)) and is_pure(x) \
            and not loads(x) & (self.bound | set(self.moving))

    def _bounds(self, s: ast.Slice, index: str) -> ast.expr | None:
        """``(lo(0), hi(0) - lo(0), lo(1) - lo(0), count)`` of a slice ``lo:hi`` (no step) whose
        bounds move together with ``index``, as one expression; None for any other slice."""
        if s.step is not None or s.lower is None or s.upper is None \
                or index not in loads(s.lower) \
                or not moves_evenly(s.lower, s.upper, index) \
                or (loads(s.lower) | loads(s.upper)) & (self.bound - {index}):
            return None
        lo0, lo1, hi0 = (_at(bound, index, k)
                         for bound, k in ((s.lower, 0), (s.lower, 1), (s.upper, 0)))
        width, step = (_folded(ast.BinOp(a, ast.Sub(), clone(b)))
                       for a, b in ((hi0, lo0), (lo1, lo0)))
        return self.plan.sub("(a, w, s, n)", a=lo0, w=width, s=step, n=clone(self.moving[index]))

    def _windows(self, x: ast.expr, dim: int, bounds: ast.expr) -> str:
        key = f"{unparse(x)}|{dim}|{unparse(bounds)}"
        if key not in self.made:
            stem = unparse(x).split(".")[-1]
            name = self.made[key] = self.ctx.namer.new(f"{stem}_windows")
            self.plan.prelude += self.plan.sub(
                "w = f(x, d, lambda: b)", w=name, f=self.ctx.bind(slice_windows, "slice_windows"),
                x=x, d=ast.Constant(dim), b=bounds)
            self.plan.check("isinstance(w, torch.Tensor)", w=ast.Name(name, ast.Load()))
        return self.made[key]


def _at(bound: ast.expr, index: str, value: int) -> ast.expr:
    """``bound`` with the index replaced by the int ``value``, folded."""
    class _Put(ast.NodeTransformer):
        def visit_Name(self, n: ast.Name) -> ast.AST:
            return ast.copy_location(ast.Constant(value), n) if n.id == index else n
    return _folded(_Put().visit(clone(bound)))


def _folded(n: ast.expr) -> ast.expr:
    """``n`` with int arithmetic on literals done, and ``x * 0``, ``x * 1``, ``x + 0``, ``x - 0``
    simplified (the bounds at index 0 read as the user would write them)."""
    if not isinstance(n, ast.BinOp):
        return n
    a, b = _folded(n.left), _folded(n.right)
    ints = [x.value if isinstance(x, ast.Constant) and type(x.value) is int else None
            for x in (a, b)]
    mul, add, sub = (isinstance(n.op, t) for t in (ast.Mult, ast.Add, ast.Sub))
    if None not in ints and (mul or add or sub):
        return ast.Constant(poly_value(ast.BinOp(a, n.op, b), lambda name: 0))
    if mul and 0 in ints:
        return ast.Constant(0)
    if (mul and ints[1] == 1) or ((add or sub) and ints[1] == 0):
        return a
    if (mul and ints[0] == 1) or (add and ints[0] == 0):
        return b
    return ast.BinOp(a, n.op, b)


def moves_evenly(lower: ast.expr, upper: ast.expr, index: str) -> bool:
    """``upper - lower`` the same at every index and ``lower`` growing by one step per index:
    both sums and products of names and ints, evaluated at indices 2, 3 and 5 for two draws of
    the other names (two polynomials that agree there for both draws are taken as equal)."""
    try:
        for draw in (3, 11):
            lo = [poly_value(lower, lambda name, t=t: t if name == index else _drawn(name, draw))
                  for t in (2, 3, 5)]
            hi = [poly_value(upper, lambda name, t=t: t if name == index else _drawn(name, draw))
                  for t in (2, 3, 5)]
            widths = {h - l for h, l in zip(hi, lo)}
            if len(widths) != 1 or lo[2] - lo[1] != 2 * (lo[1] - lo[0]):
                return False
    except ValueError:
        return False
    return True


def _drawn(name: str, draw: int) -> int:
    return draw * (sum(map(ord, name)) % 97 + 1)


def poly_value(n: ast.expr, value_of) -> int:
    """``n`` evaluated on ints: ``value_of(name)`` for each name; ValueError for anything but
    names, ints, ``+``, ``-`` and ``*``."""
    if isinstance(n, ast.Constant) and type(n.value) is int:
        return n.value
    if isinstance(n, ast.Name):
        return value_of(n.id)
    if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Add, ast.Sub, ast.Mult)):
        a, b = poly_value(n.left, value_of), poly_value(n.right, value_of)
        return a + b if isinstance(n.op, ast.Add) else a - b if isinstance(n.op, ast.Sub) else a * b
    raise ValueError(ast.dump(n))
