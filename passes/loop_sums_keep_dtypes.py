"""Pass: the sums the loop passes make over a loop's items keep narrow integer dtypes, as the
original's additions do.

The original adds item by item from the int 0 (``s = 0; s = s + x[i]``): ``0 + x[i]`` keeps a
narrow integer item's dtype (uint8, int8, int16, int32; wrapping around on overflow), where
``v.sum(0)`` promotes every integer dtype to int64. The loop passes mark the sums over a loop's
axis they emit (``mark``, ``ast_marks.LOOP_SUM``); after the passes that match ``.sum(0)`` in
idioms and shared values, each marked sum becomes a call of ``loop_sum``, bound into the code::

    _s_part = _x_row.sum(0)    ->    _s_part = _loop_sum(_x_row)

which sums narrow integers in their own dtype (the original's wrapped result: modular addition
does not depend on the order) and anything else as ``v.sum(0)`` (bool items count in int64, as
``0 + m[i]`` does). A sum folded into a start of a wider dtype (an int64 or float tensor, a
Python float) would wrap where the original does not, and bools added to a bool start are a
logical or there: ``WIDER_START`` is the condition under which ``fold_accumulators`` runs such a
loop as written (``promoting_folds_run_as_written``).
"""
from __future__ import annotations

import ast

import torch

from . import ast_marks
from .ast_tools import PassContext, Transformer, replace

KEPT_INTEGERS = (torch.uint8, torch.int8, torch.int16, torch.int32)
# ``s + r`` of the accumulator ``s`` and the loop's sum ``r`` of its items (or ``s * r``, ``r`` a
# factor of a product, which ``loop_products`` keeps narrow alike) is wider than ``r``,
# or ``s`` is bool (``True + True`` is True in a bool tensor; the loop's count of bools is int64)
WIDER_START = (f"r.dtype in ({', '.join(map(str, KEPT_INTEGERS))}) "
               "and torch.result_type(s, r) != r.dtype or isinstance(s, torch.Tensor) "
               "and s.dtype == torch.bool and r.dtype == torch.int64")


def loop_sum(v: torch.Tensor) -> torch.Tensor:
    """``v.sum(0)`` in the dtype the original's additions from 0 give."""
    return v.sum(0, dtype=v.dtype) if v.dtype in KEPT_INTEGERS else v.sum(0)


def mark(call: ast.Call) -> ast.Call:
    """``call``, a loop pass's ``v.sum(0)`` over the loop's axis, marked for this pass."""
    ast_marks.put(call, ast_marks.LOOP_SUM, True)
    return call


def transform(tree: ast.Module, ctx: PassContext) -> ast.Module:
    return _LoopSums(ctx).visit(tree)


class _LoopSums(Transformer):
    def __init__(self, ctx: PassContext):
        self.ctx = ctx

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if not ast_marks.get(node, ast_marks.LOOP_SUM):
            return node
        fn = self.ctx.bind(loop_sum, "loop_sum")
        return replace(f"{fn}(v)", loc=node, v=node.func.value)
