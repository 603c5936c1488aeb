"""Stage: a folded sum divided by a counter of the same loop in the next statement is divided on
the device; the host reads only whether the original raised, at that statement.

``return total / n_valid`` (or ``loss = loss / count``) after a loop adding tensors to ``total``
and Python numbers to ``n_valid`` under the same conditions: the original's count is a Python
number, and when no iteration is selected ``total`` is still the number it started as, so
``0.0 / 0`` raises ZeroDivisionError. The folds would read the device back three times in the
middle of the vectorized statements (whether an iteration was selected, for each fold, and the
count's ``.item()``), under torch.compile a graph break each. Instead the folded sum is divided
by the count on the device, which divides as the Python number did (an int as int64, a float
cast to the quotient's dtype, ``loop_rules.DEVICE_DIVISOR``), and the folds' selection test is
kept, unevaluated, for the division::

    if isinstance(total, torch.Tensor) or _outs[2].any():      _total_sum = total + _outs[0]
        total = total + _outs[0]                          ->   _total_quotient = _total_sum / _outs[1]
    n_valid = int(_outs[1])                                    _total_divided = isinstance(total, torch.Tensor) or _outs[2].any()
    ...                                                        ...
    return total / n_valid                                     return _total_quotient if _total_divided else total / n_valid

``_total_divided = False`` goes before the vectorized guard (``vectorize_loops``). Where it stays
false (nothing selected, or the loop ran as written) the statement runs as written on the
values the original has: with nothing selected, ``total`` and ``n_valid`` are still what they
were before the loop (the count is updated under the sum's conditions), and ``0.0 / 0`` raises
from the user's line. One host read, at the division; none when ``total`` is a tensor or every
iteration adds to it. A sum added to in place (``loss += e``) is folded on ``_loss_sum = loss``
first: a tensor ``loss`` changes in place, as in the original.

Only when the count starts as the int 0 and adds ints, floats or ``.item()`` values, the sum
adds tensors, no inner loop selects their updates, nothing but the division reads the count
after the loop (``sole_divisors``) and no other fold reads either; else the folds stay.
"""
from __future__ import annotations

import ast
from collections import Counter

from .. import loop_rules as rules
from ..ast_tools import PassContext, Transformer, is_name, replace, walk
from .loop_dataflow import stmt_loads, stores_in
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    for total, count in plan.divided.items():
        if count in plan.sole_divisors and total not in plan.averaged and not plan.inner:
            _divide(plan, total, count, ctx)
    return plan


def sole_divisors(func: ast.FunctionDef, loop: ast.For, divided: dict[str, str]) -> set[str]:
    """The divisors of ``divided`` (the statement after ``loop`` divides by them) that are names
    read nowhere else in ``func`` outside ``loop``: dead after that division."""
    if not divided:  # the usual case: no walk of the function
        return set()
    inside = {id(n) for n in walk(loop)}
    reads = Counter(n.id for n in walk(func) if isinstance(n, ast.Name)
                    and isinstance(n.ctx, ast.Load) and id(n) not in inside)
    return {d for d in divided.values() if d.isidentifier() and reads[d] == 1}


def divide(after: ast.stmt, plan: LoopPlan) -> list[str]:
    """``s / c`` in ``after`` -> ``(q if f else s / c)`` for the sums ``plan`` divided; the
    flags, to be set false before the vectorized guard."""
    _Divided(plan.quotients).visit(after)
    return [flag for _, flag in plan.quotients.values()]


def _divide(plan: LoopPlan, total: str, count: str, ctx: PassContext) -> None:
    s, c = plan.accumulators.get(total), plan.accumulators.get(count)
    if s is None or c is None or {s.family, c.family} != {"sum"} or s.kinds != {"tensor"} \
            or len(c.kinds) != 1 or next(iter(c.kinds)) not in rules.DEVICE_DIVISOR \
            or count not in plan.zeros or s.counters or c.counters or s.selected_when \
            or c.selected_when:
        return
    at = {name: [k for k, f in enumerate(plan.folds) if name in stores_in([f])]
          for name in (total, count)}
    if len(at[total]) != 1 or len(at[count]) != 1 or at[total] == at[count]:
        return
    i, j = at[total][0], at[count][0]
    fold, guard = plan.folds[i], None
    if isinstance(fold, ast.If) and not fold.orelse and len(fold.body) == 1:
        fold, guard = fold.body[0], fold.test  # under the folds' test of a selection
        if None in c.masks or set(c.masks) != set(s.masks):
            return  # the count may change where the sum is not selected
    others = [f for k, f in enumerate(plan.folds) if k not in (i, j)]
    if any({total, count} & stmt_loads(n) for f in others for n in walk(f)
           if isinstance(n, ast.stmt)):
        return
    names = {x: ctx.namer.new(f"{total}_{x}") for x in ("sum", "quotient", "divided")}
    summed = _summed(plan, fold, total, names["sum"])
    if summed is None:
        return
    wide = plan.wide.get(count)
    divisor = plan.sub(rules.DEVICE_DIVISOR[next(iter(c.kinds))], r=c.stacked,
                       w=wide if wide else c.stacked, s=names["sum"])
    new = summed + plan.sub("q = s / d\nf = g", q=names["quotient"], s=names["sum"], d=divisor,
                            f=names["divided"], g=guard if guard else ast.Constant(True))
    plan.folds = [n for k, f in enumerate(plan.folds) if k != min(i, j)
                  for n in (new if k == max(i, j) else [f])]
    plan.quotients[total] = (names["quotient"], names["divided"])


def _summed(plan: LoopPlan, fold: ast.stmt, total: str, summed: str) -> list[ast.stmt] | None:
    """``fold`` of ``total`` binding ``summed`` instead; None for other folds than a sum's."""
    if isinstance(fold, ast.Assign) and len(fold.targets) == 1 \
            and is_name(fold.targets[0], total):
        return plan.sub("n = v", n=summed, v=fold.value)
    if isinstance(fold, ast.AugAssign) and isinstance(fold.op, ast.Add) \
            and is_name(fold.target, total):  # in place on a tensor, as the original
        return plan.sub("n = s\nn += v", n=summed, s=total, v=fold.value)
    return None


class _Divided(Transformer):
    def __init__(self, quotients: dict[str, tuple[str, str]]):
        self.quotients = quotients

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Div) and isinstance(node.left, ast.Name) \
                and node.left.id in self.quotients:
            q, flag = self.quotients[node.left.id]
            return replace("q if f else e", loc=node, q=q, f=flag, e=node)
        return node
