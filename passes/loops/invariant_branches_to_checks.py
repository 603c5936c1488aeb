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

An ``if`` on such a condition anywhere in the body's ``if``s, a branch of which writes in place
into a value the iteration may share with another (what ``inplace_writes_to_functional``
refuses, told by a dry run of it on a copy of the body), becomes its other branch, the condition
that takes it joining the checks: an optional feature switched off is vectorized, switched on
the loop runs as written (where it would have anyway)::

    for i in range(c):                       (runtime check: ... and self.weight is None)
        d = dice(p[:, i], t[:, i])           for i in range(c):
        if self.weight is not None:    ->        d = dice(p[:, i], t[:, i])
            d *= self.weight[i]                  total += d
        total += d

The same dry run refuses the loop at a write it refuses under any other ``if``: the later stages
would mask that ``if`` (``tensor_branches_to_where``), and a masked ``d *= w`` computes a copy,
where the original writes into what ``d`` shares memory with.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, clone, root_name, unparse, walk
from ..errors import Unsupported
from .inplace_writes_to_functional import Writes
from .loop_dataflow import loads
from .plan import LoopPlan

# What the condition may be made of: names, their attributes, constants, comparisons, and/or/not.
_PLAIN = (ast.Name, ast.Attribute, ast.Constant, ast.Compare, ast.BoolOp, ast.UnaryOp,
          ast.Load, ast.cmpop, ast.boolop, ast.Not)


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    return _drop_refused_writes(_take_leaving_branches(plan), ctx)


def _take_leaving_branches(plan: LoopPlan) -> LoopPlan:
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
        return _take_leaving_branches(plan)  # the branch may hold another such `if`
    return plan


def _drop_refused_writes(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    written = _written(plan)
    copy = clone(plan.body)  # the dry run rewrites what it walks
    # by node, not id(): the dry run frees nodes of the copy, and makes new ones
    twin = {c: o for cs, os in zip(copy, plan.body) for c, o in zip(walk(cs), walk(os))}
    writes = Writes(plan, ctx, {name for name, _ in plan.iteration.elements},
                    switch=lambda s: _plain(s.test) and not loads(s.test) & written)
    names = ctx.namer.checkpoint()
    try:
        writes.block(copy)
    except Unsupported:
        if writes.refused_in_branch:  # later stages would mask the `if`, its write made a copy
            raise
        # a write refused at the top: inplace_writes_to_functional keeps the loop, with its
        # reason, after the stages whose reasons come first
    finally:
        ctx.namer.rollback(names)  # the names the dry run's rewrites made are not used
    if writes.switched:
        plan.body = _take(plan.body, {twin[s]: body for s, body, _ in writes.switched},
                          plan)
        plan.switched_writes = plan.switched_writes + [why for _, _, why in writes.switched]
    return plan


def _take(stmts: list[ast.stmt], taken: dict[ast.If, bool], plan: LoopPlan) -> list[ast.stmt]:
    """``stmts`` with the ``if``s of ``taken`` (whether their body is taken) replaced by
    the branch taken, the condition taking it joining the checks."""
    out = []
    for s in stmts:
        if isinstance(s, ast.If) and s in taken:
            test = s.test if taken[s] else _negated(s.test)
            plan.helper_checks = plan.helper_checks + [plan.sub("t", t=test)]
            plan.taken_branches = plan.taken_branches + [unparse(test)]
            out += _take(s.body if taken[s] else s.orelse, taken, plan)
            continue
        if isinstance(s, ast.If):
            s.body, s.orelse = _take(s.body, taken, plan), _take(s.orelse, taken, plan)
        out.append(s)
    return out


def _negated(test: ast.expr) -> ast.expr:
    """``not test``; ``x is None`` for ``x is not None`` (and back), as the user would write it."""
    flips = {ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in flips:
        return ast.Compare(test.left, [flips[type(test.ops[0])]()], test.comparators)
    return ast.UnaryOp(ast.Not(), test)


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
