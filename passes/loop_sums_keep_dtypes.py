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
``0 + m[i]`` does). Python's ``sum`` of a tensor's items or of a list the loop stacked starts from
0 too, and running sums and products (``running_sum``, ``running_product``) keep dtypes alike.
A sum folded into a start of a wider dtype (an int64 or float tensor, a Python float) would wrap
where the original does not, and bools added to a bool start are a logical or there:
``WIDER_START`` is the condition under which ``fold_accumulators`` runs such a loop as written
(``promoting_folds_run_as_written``). An inner loop's fold has no such check (the outer body
may bind its start again in every iteration): its partial starts from ``identity_of(t, 0)``
(a 0 in ``t``'s dtype: each iteration's ``0 + b`` of a bool ``b`` counts in ``t``'s dtype, as the
original's ``t + b``) and its sums, marked with the name they are added onto, become
``_loop_sum_onto(t, v)``, the sum in the dtype of ``t + v[0]``: modular integer addition in that
dtype is the original's steps' result. A top-level loop's sum onto a start that is not a Python
number literal is summed so too: a float64 0-d start adds float32 0-d items in float64 (their own
sum, cast after, had float32's precision), an int16 one adds uint8 items without wrapping, a bool
one ors bools (``fold_accumulators._onto_start``); a Python number does not widen the items.

float16 and bfloat16 additions round to 16 bits at every step, where a reduction accumulates in
float32 and rounds once: 300 additions of 8.0 in bfloat16 stall at 2048, ``v.sum(0)`` is 2400.
So ``loop_sum``, ``running_sum`` and ``running_product`` of such items take the original's steps
(``in_steps``: ``0 + v[0] + v[1] + ...``, in the loop's order), which also gives autograd the
original's backward, rounded alike; ``loop_sum_onto`` adds them in steps from 0 in the dtype of
the additions onto the start. Folded onto a start other than the int 0 (1 for products), such
sums are not the original's steps from that start (``steps_differ``): ``fold_accumulators``
runs that loop as written (``promoting_folds_run_as_written``).
"""
from __future__ import annotations

import ast
import itertools
import operator
import types

import torch

from . import ast_marks
from .ast_tools import PassContext, Transformer, replace
from .dtype_queries import result_type

KEPT_INTEGERS = (torch.uint8, torch.int8, torch.int16, torch.int32)
# ``s + r`` of the accumulator ``s`` and the loop's sum ``r`` of its items (or ``s * r``, ``r`` a
# factor of a product, which ``loop_products`` keeps narrow alike) is wider than ``r``,
# or ``s`` is bool (``True + True`` is True in a bool tensor; the loop's count of bools is int64)
WIDER_START = (f"r.dtype in ({', '.join(map(str, KEPT_INTEGERS))}) "
               "and torch.result_type(s, r) != r.dtype or isinstance(s, torch.Tensor) "
               "and s.dtype == torch.bool and r.dtype == torch.int64")
# The dtypes whose additions and products round at every step beyond what one reduction's float32
# accumulation shows (``linear_scan`` steps their states for the same reason)
ROUNDED_EVERY_STEP = (torch.float16, torch.bfloat16)


def kept_dtype(v: torch.Tensor) -> dict:
    """``dtype=`` for a reduction of ``v`` that keeps a narrow integer dtype (none otherwise:
    the reduction's own promotion)."""
    return {"dtype": v.dtype} if v.dtype in KEPT_INTEGERS else {}


def in_steps(v: torch.Tensor) -> bool:
    """Whether the original's steps over ``v``'s items round beyond one reduction's rounding."""
    return v.dtype in ROUNDED_EVERY_STEP and len(v) > 0


@torch.compiler.disable  # Inductor would fuse the steps and round once, in float32
def steps(op, v: torch.Tensor, start, dim: int = 0) -> list[torch.Tensor]:
    """Every state of the original's ``s = op(s, v[k])`` from ``start``, in the loop's order,
    run eagerly (a graph break under torch.compile, for float16/bfloat16 items only)."""
    return list(itertools.accumulate(v.unbind(dim), op, initial=start))[1:]


def loop_sum(v: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``v.sum(dim)`` in the dtype the original's additions from 0 give (``dim``: the items' dim
    once a loop batched a Python ``sum`` of each item), 16-bit items added one by one."""
    if in_steps(v.movedim(dim, 0)):
        return steps(operator.add, v, 0, dim)[-1]
    return v.sum(dim, **kept_dtype(v))


def running_sum(v: torch.Tensor) -> torch.Tensor:
    """``v.cumsum(0)`` in the dtype the original's running additions give."""
    if in_steps(v):
        return torch.stack(steps(operator.add, v, 0))
    return v.cumsum(0, **kept_dtype(v))


def running_product(v: torch.Tensor) -> torch.Tensor:
    """``v.cumprod(0)`` in the dtype the original's running products give."""
    if in_steps(v):
        return torch.stack(steps(operator.mul, v, 1))
    return v.cumprod(0, **kept_dtype(v))


def loop_sum_onto(start, v: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``v.sum(dim)`` in the dtype of the original's additions of its items onto ``start``
    (``start + v[0]``: an int16 start takes uint8 items in int16, without wrapping at 256)."""
    if not v.shape[dim]:
        return loop_sum(v, dim)
    if isinstance(start, torch.Tensor) and start.dtype == v.dtype:  # (no item to pick: faster)
        return loop_sum(v, dim) if v.dtype in ROUNDED_EVERY_STEP else v.sum(dim, dtype=v.dtype)
    dtype = result_type(start, v.select(dim, 0))
    return loop_sum(v.to(dtype), dim) if dtype in ROUNDED_EVERY_STEP else v.sum(dim, dtype=dtype)


def summed_in_steps(total, items):
    """``total``, a loop's sum fused into one op (``batch_loop_bodies``), or, where it is a
    float16/bfloat16 tensor, ``items()``: the per-item values' sum in the original's steps."""
    if isinstance(total, torch.Tensor) and total.dtype in ROUNDED_EVERY_STEP:
        return items()
    return total


def rounded_every_step(r: torch.Tensor) -> bool:
    """Whether the loop's sum (product) ``r`` is of a dtype whose every step rounds: one the
    original adds several times per iteration runs as written then."""
    return r.dtype in ROUNDED_EVERY_STEP


def steps_differ(start, r: torch.Tensor, identity: int) -> bool:
    """Whether ``start + r`` (``start * r``), ``r`` the loop's 16-bit sum (product) of its items
    in steps from ``identity``, may differ from the original's steps from ``start``: rounded
    after each item, ``start`` is part of every step (an int ``identity`` is not)."""
    return r.dtype in ROUNDED_EVERY_STEP and not (type(start) is int and start == identity)


def rounds_gradients(*values) -> bool:
    """Whether, with grad mode on, one of ``values`` is or holds (a module's parameters, a
    list's, tuple's or dict's items, an object's attributes) a float16/bfloat16 tensor that
    requires grad: the original adds each iteration's part of its gradient in turn, rounded."""
    return torch.is_grad_enabled() and any(
        _holds(v, lambda t: t.requires_grad and t.dtype in ROUNDED_EVERY_STEP, True)
        for v in values)


def holds_16_bit(*values) -> bool:
    """Whether one of ``values`` is or holds (as ``rounds_gradients`` reads them) a float16/
    bfloat16 tensor."""
    return any(_holds(v, lambda t: t.dtype in ROUNDED_EVERY_STEP, True) for v in values)


def _holds(v, test, deep: bool) -> bool:
    if isinstance(v, torch.Tensor):
        return test(v)
    if isinstance(v, torch.nn.Module):
        return any(test(p) for p in v.parameters())
    if not deep or isinstance(v, (type, types.ModuleType, types.FunctionType, str, int, float)):
        return False
    items = v.values() if isinstance(v, dict) else v if isinstance(v, (list, tuple)) else \
        getattr(v, "__dict__", {}).values()
    return any(_holds(x, test, False) for x in items)


def identity_of(start, identity: int):
    """``identity`` (0 for sums, 1 for products) of ``start``'s type, dtype and shape: an inner
    loop's partial that the original folds onto ``start`` starts from it (``identity_of(t, 0) +
    x[j]`` has the dtype of ``t + x[j]``)."""
    if isinstance(start, torch.Tensor):
        return torch.full_like(start, identity)
    return type(start)(identity)


def mark(node: ast.expr, onto: str | None = None) -> ast.expr:
    """``node``, marked for this pass when it is a ``v.sum(0)``: a loop pass's sum over a loop's
    axis (or a Python ``sum`` of a tensor's or stacked list's items, which starts from 0 too);
    ``onto``: the name whose value the sum is added onto, read where the sum is."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr == "sum" and not node.keywords and len(node.args) == 1 \
            and isinstance(node.args[0], ast.Constant) and node.args[0].value == 0:
        ast_marks.put(node, ast_marks.LOOP_SUM, onto or True)
    return node


def transform(tree: ast.Module, ctx: PassContext) -> ast.Module:
    return _LoopSums(ctx).visit(tree)


class _LoopSums(Transformer):
    def __init__(self, ctx: PassContext):
        self.ctx = ctx

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        onto = ast_marks.get(node, ast_marks.LOOP_SUM)
        if not onto:
            return node
        dim = node.args[0]
        if isinstance(onto, str):
            fn = self.ctx.bind(loop_sum_onto, "loop_sum_onto")
            return replace(f"{fn}(s, v, d)", loc=node, s=ast.Name(onto, ast.Load()),
                           v=node.func.value, d=dim)
        fn = self.ctx.bind(loop_sum, "loop_sum")
        return replace(f"{fn}(v)" if isinstance(dim, ast.Constant) and dim.value == 0 else
                       f"{fn}(v, d)", loc=node, v=node.func.value, d=dim)
