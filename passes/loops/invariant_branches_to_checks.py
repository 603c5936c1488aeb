"""Stage: a top-level ``if`` of the body on a Python condition every iteration shares, a branch of
which leaves the iteration early (``continue``), becomes that branch, the condition joining the
loop's runtime check (when it does not hold, the loop runs as written)::

    for i in range(n):                       (runtime check: ... and self.hard is not None)
        a = sim[i][labels != labels[i]]      for i in range(n):
        if self.hard is not None:      ->        a = sim[i][labels != labels[i]]
            a = a[a > a.mean()]                  a = a[a > a.mean()]
            if len(a) < 1:                       if len(a) < 1:
                continue                             continue
        else:                                    total = total + a.sum()
            a = a * 2
        total = total + a.sum()

A ``continue`` under a condition that does not vary cannot be masked, and one nested in a tensor
condition under it neither; with the branch taken once for all iterations, the ``continue`` is a
top-level one the later stages mask. The branch is the one holding a ``continue`` (the ``if`` one
when both do): the condition being what the user switches hard mining and the like on with.

The condition must give the same answer in every iteration and be read only when the original
reads it, in the first iteration: it reads only names and their attributes (no call, no
subscript: nothing it evaluates can change or raise differently), none of which the loop binds
or writes into; it joins the checks read only once the loop runs at all (``helper_checks``).
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, root_name, unparse, walk
from .loop_dataflow import loads
from .plan import LoopPlan

# What the condition may be made of: names, their attributes, constants, comparisons, and/or/not.
_PLAIN = (ast.Name, ast.Attribute, ast.Constant, ast.Compare, ast.BoolOp, ast.UnaryOp,
          ast.Load, ast.cmpop, ast.boolop, ast.Not)


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    written = _written(plan)
    for k, s in enumerate(plan.body):
        if not (isinstance(s, ast.If) and _plain(s.test) and not loads(s.test) & written):
            continue
        if _leaves_early(s.body):
            branch, test = s.body, s.test
        elif _leaves_early(s.orelse):
            branch, test = s.orelse, ast.UnaryOp(ast.Not(), s.test)
        else:
            continue
        plan.helper_checks = plan.helper_checks + [plan.sub("t", t=test)]
        plan.taken_branches = plan.taken_branches + [unparse(test)]
        plan.body = plan.body[:k] + branch + plan.body[k + 1:]
        return stage(plan, ctx)  # the branch may hold another such `if`
    return plan


def _written(plan: LoopPlan) -> set[str]:
    """Names the loop binds (its header's too) or writes into (``self.x = ...``, ``m[k] = ...``)."""
    found = {n.id for n in walk(plan.node.target) if isinstance(n, ast.Name)}
    for n in (n for s in plan.body for n in walk(s)):
        if isinstance(n, (ast.Name, ast.Attribute, ast.Subscript)) \
                and isinstance(n.ctx, (ast.Store, ast.Del)):
            found.add(n.id if isinstance(n, ast.Name) else root_name(n))
    return found


def _plain(test: ast.expr) -> bool:
    return all(isinstance(n, _PLAIN) for n in walk(test))


def _leaves_early(stmts: list[ast.stmt]) -> bool:
    """A ``continue`` of this loop among ``stmts`` (not one of an inner loop)."""
    todo = list(stmts)
    while todo:
        s = todo.pop()
        if isinstance(s, ast.Continue):
            return True
        if isinstance(s, ast.If):
            todo += s.body + s.orelse
    return False
