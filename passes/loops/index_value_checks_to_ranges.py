"""Stage: an inner loop's check on the value of this loop's index holds for this loop when it
holds for every index: one check over the index's range, run once before the vectorized form.

An inner loop vectorized in each iteration may check the outer index's value, the Python int the
original gives it (``hoist_calls_under_index_tests``: some centroid index equals the speaker's).
Mapped over its index, the outer loop has no such int in its body; the check reads nothing else
that varies with the iteration, so it is evaluated for every index of the range, on the host as
the original's ints, eagerly under torch.compile (which would unroll it, specialising the
bounds)::

    for s, spk in enumerate(emb):               check (last): run_eagerly(lambda: all(
        if <...> and any(s == _k for _k in          any(_s == _k for _k in range(0, len(cens), 1))
                         range(0, len(cens), 1)):   for _s in range(0, len(emb), 1)))
            'optimize_loss: loop ... vectorized'    body: if <...>:
            ...                                               'optimize_loss: loop ... vectorized'

Taken for conjuncts of the inner guards where this loop's index (a ``range`` or ``enumerate``
index) is read only as an operand of comparisons, and no other name the body binds is read: a
check of the index's type (``type(s) is int``) states what a tensor index would break, and
stays. The check joins those read once the loop runs at all (``plan.helper_checks``): the
bounds are ints by then.
"""
from __future__ import annotations

import ast

from .. import ast_marks
from ..ast_tools import PassContext, Transformer, clone, is_name, rename, replace, walk
from ..outline_kept_loops import run_eagerly
from .loop_dataflow import loads, stores_in
from .plan import LoopPlan
from .runtime_checks import conjuncts, is_vectorized_guard


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    if not it.index_is_user:
        return plan
    varying = stores_in(plan.body) | {name for name, _ in it.elements}
    guards = _Guards(plan, varying, ctx)
    guards.visit(ast.Module(plan.body, []))
    # read last, as the inner checks were: once this loop's own checks hold (its bounds are ints)
    plan.helper_checks = plan.helper_checks + guards.lifted
    return plan


class _Guards(Transformer):
    """Takes the qualifying conjuncts out of the vectorized guards it visits (in place) into
    ``lifted``, each over the index's range."""

    def __init__(self, plan: LoopPlan, varying: set[str], ctx: PassContext):
        self.plan, self.varying, self.ctx = plan, varying, ctx
        self.lifted: list[ast.expr] = []

    def visit_If(self, node: ast.If) -> ast.If:
        if not is_vectorized_guard(node):
            return self.generic_visit(node)
        index, kept = self.plan.iteration.index, []
        for g in conjuncts(node.test):
            if _value_check(g, index) and not loads(g) & self.varying:
                self.lifted.append(self._over_range(g))
            else:
                kept.append(g)
        node.test = ast.copy_location(
            kept[0] if len(kept) == 1 else ast.BoolOp(ast.And(), kept) if kept
            else ast.Constant(True), node.test)
        return node

    def _over_range(self, g: ast.expr) -> ast.expr:
        it = self.plan.iteration
        k = self.ctx.namer.new(it.index)
        every = replace("all(g for k in range(a, b, s))", loc=g, g=rename(clone(g), {it.index: k}),
                        k=k, a=it.start, b=it.stop, s=it.step)
        ast_marks.put(every.args[0], ast_marks.GENERATED, True)  # no loop of the user's
        return replace("r(lambda: e)", loc=g, r=self.ctx.bind(run_eagerly, "run_eagerly"), e=every)


def _value_check(g: ast.expr, index: str) -> bool:
    """``g`` reads ``index``, and only as an operand of comparisons."""
    reads = {id(n) for n in walk(g) if is_name(n, index)}
    operands = {id(x) for c in walk(g) if isinstance(c, ast.Compare)
                for x in (c.left, *c.comparators)}
    return bool(reads) and reads <= operands
