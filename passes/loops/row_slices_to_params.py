"""Stage: rows a loop reads from a fixed tensor become parameters of the body, mapped from one
slice of the whole loop (no gather, and no scatter in the backward)::

    for i in range(a, b):                 ->    for each row _x_row of x[:, k, a:b:1] (vmap'ed):
        v = x[:, k, i, 1:]                          v = _x_row[1:]

``x`` must not be assigned in the body, nor be a parameter of a function the body defines (an
inner loop's outlined body reads its own rows: ``_x_row[j]`` there is per inner item), ``k`` (a fixed int, or an expression the loop does not
change) is checked to be an int at run time, and so is ``b <= x.shape[2]``; ``a >= 0`` and
``s > 0`` make the slice select what the range does. ``plan.row_slices`` keeps one parameter per
``(x, prefix)``. New dims in front of the index belong to the row: ``x[None, i]`` reads
``_x_row[None]``; ``x[..., i]`` (in a loop no other loop encloses) reads the rows along ``x``'s
last dim.
"""
from __future__ import annotations

import ast
import itertools
import re

from ..ast_tools import PassContext, Transformer, is_name, is_pure, unparse, walk
from .loop_dataflow import depends, loads, stores_in, write_entries
from .plan import LoopPlan, RowSlice


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    rows = _RowSlices(plan, stores_in(plan.body) | _nested_params(plan.body), ctx)
    plan.body = [rows.visit(s) for s in plan.body]
    return plan


def _nested_params(body: list[ast.stmt]) -> set[str]:
    """Parameters of the functions and lambdas ``body`` defines: names local to them."""
    return {a.arg for s in body for n in walk(s) if isinstance(n, (ast.FunctionDef, ast.Lambda))
            for a in walk(n.args) if isinstance(a, ast.arg)}


def rows_as_written(text: str, plan: LoopPlan) -> str:
    """``text`` (a reason quoting the body) with each row parameter spelled as the user's read:
    ``_x_row.view(...)`` -> ``x[:, i].view(...)`` (``x[k][i]`` without slices: a list too)."""
    for (name, _), row in plan.row_slices.items():
        entries = row.prefix + [ast.Name(plan.iteration.index, ast.Load())]
        if any(isinstance(x, ast.Slice) for x in entries) or row.from_end:
            read = unparse(ast.Subscript(ast.Name(name, ast.Load()),
                                         ast.Tuple(entries, ast.Load()), ast.Load()))
        else:
            read = name + "".join(f"[{unparse(x)}]" for x in entries)
        text = re.sub(rf"\b{re.escape(row.param)}\b", lambda _, r=read: r, text)
    return text


def _none(x: ast.expr) -> bool:
    return isinstance(x, ast.Constant) and x.value is None


def _ellipsis(x: ast.expr) -> bool:
    return isinstance(x, ast.Constant) and x.value is Ellipsis


def full_slice(x: ast.expr) -> bool:
    """``:``"""
    return isinstance(x, ast.Slice) and x.lower is None and x.upper is None and x.step is None


class _RowSlices(Transformer):
    """``x[:, k, i, rest]`` with ``x`` and ``k`` fixed -> ``row[rest]``."""

    def __init__(self, plan: LoopPlan, assigned: set[str], ctx: PassContext):
        self.plan = plan
        self.index = plan.iteration.index
        self.assigned = assigned
        self.ctx = ctx

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        base = node.value
        if not (isinstance(node.ctx, ast.Load) and isinstance(base, ast.Name)
                and base.id not in self.assigned and base.id != self.index):
            return node
        entries = write_entries(node)
        at = [k for k, x in enumerate(entries) if is_name(x, self.index)]
        if not at:
            return node
        # new dims in front of the index are the row's: x[None, i, r] is x[i][None, r]
        new_dims = list(itertools.takewhile(_none, entries[:at[0]]))
        prefix = entries[len(new_dims):at[0]]
        # x[..., i] of an outermost loop: the last dim's rows (not within an outer loop's rows,
        # which batch_both_loop_levels reads dims of from the front)
        from_end = len(entries) == 2 and at == [1] and _ellipsis(entries[0]) \
            and not self.plan.outer_indices
        if len(at) != 1 or not from_end and not all(full_slice(x) or self._fixed_int(x)
                                                     for x in prefix) or new_dims and prefix:
            return node
        row = ast.Name(self._row_param(base.id, prefix), ast.Load())
        rest = new_dims + entries[at[0] + 1:]
        if not rest:
            return ast.copy_location(row, node)
        node.value = row
        node.slice = ast.Tuple(rest, ast.Load()) if len(rest) > 1 else rest[0]
        return node

    def _fixed_int(self, x: ast.expr) -> bool:
        """An index the loop does not change, which can be re-evaluated before the loop."""
        if isinstance(x, ast.Constant):
            return type(x.value) is int
        return (isinstance(x, (ast.Name, ast.Attribute, ast.BinOp)) and is_pure(x)
                and not depends(x, self.plan.variant, self.ctx)
                and not (loads(x) & self.assigned))

    def _row_param(self, name: str, prefix: list[ast.expr]) -> str:
        """Parameter of the body receiving ``name[prefix..., a:b:s]``."""
        plan = self.plan
        key = (name, unparse(ast.Tuple(prefix, ast.Load())))
        if key not in plan.row_slices:
            plan.row_slices[key] = RowSlice(self.ctx.namer.new(f"{name}_row"), prefix)
            plan.need_plain_range()
            plan.check("isinstance(x, torch.Tensor)", x=ast.Name(name, ast.Load()))
            for x in prefix:
                if not isinstance(x, (ast.Slice, ast.Constant)):
                    plan.check("isinstance(x, int)", x=x)
            row = plan.row_slices[key]
            plan.check(f"x.dim() >= 1 and b <= x.shape[-1]" if row.from_end else
                       f"b <= x.shape[{len(prefix)}]", b=plan.iteration.stop,
                       x=ast.Name(name, ast.Load()))
        return plan.row_slices[key].param
