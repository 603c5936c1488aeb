"""Stage: work the loop does not vary, under an ``if`` on loop indices only, runs once before the
vectorized form, when at least one iteration meets the test.

A tensor condition becomes a mask, so its branch runs on every iteration; a call that is not
known to be total (a user helper, a loss) may fail or give NaN on the iterations the condition
excludes, and keeps the loop (``tensor_branches_to_where``). When the ``if``'s test reads only
loop indices (this loop's and enclosing ones), literals and values the loop does not bind
(``if spk == c``, ``if c != self.ignore``: Python ints and attributes in the original) and the
branch's assignments read nothing that varies with the iteration, the branch computes the same
values in every iteration it runs in. It then runs once, in front of the vectorized form, into
fresh names, and the branch only binds its names to them (a total read, which the mask merges)::

    for c, cen in enumerate(cens):          check: any(s == _k for _k in range(0, len(cens), 1))
        if s == c:                    ->    _cen = own_centroid(emb, s, u)      (once, first)
            cen = own_centroid(emb, s, u)   (body:) if s == c: cen = _cen
        out[c] = cos(u, cen)                        out[c] = cos(u, cen)

The test is evaluated on the host, in Python, for every index, as the original does; when no
index meets it the loop runs as written (the branch never runs, so neither does its work). Taken
only for branches of plain name assignments, one of them calling something not total (else the
mask already handles the branch), with no call with an effect (random numbers, I/O, mutation):
the original's calls, run once per selected iteration, give one value. An ``else`` stays as
written (``if k == j: c = own(...)`` / ``else: c = cents[k]``): it runs on every iteration under
the mask, as any branch does, and is refused there when it may fail. So does the conditional
expression ``c = own(...) if k == j else cents[k]``, as that ``if``/``else``.
Enclosing loops' indices handed to a function the registry does not know must be Python ints
(``type(u) is int``, part of the check): such a function may test them in Python, which an
enclosing loop mapping over its index with vmap would break; that loop is then kept, with this
one vectorized in each of its iterations. Not those a helper of the module takes as 0-d integer
tensors too (``index_tensor_parameters``).
"""
from __future__ import annotations

import ast

from .. import ast_marks, ops
from ..ast_tools import PassContext, clone, rename, replace, walk
from .index_tensor_parameters import index_tensor_arguments, may_fail
from .loop_dataflow import call_op, method_name, resolve_call, stores_in
from .plan import LoopPlan

# Nodes an index test may consist of besides names (and attributes of names it does not bind).
_TEST_NODES = (ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Constant, ast.expr_context,
               ast.operator, ast.cmpop, ast.boolop, ast.unaryop)


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    bound = stores_in(plan.body) | {name for name, _ in it.elements} | {it.index}
    plan.body = [_picked_by_if(s, it.index, bound, ctx) for s in plan.body]
    for s in plan.body:
        if isinstance(s, ast.If) and on_indices(s.test, it.index, bound) \
                and _invariant_work(s.body, bound, ctx):
            s.body = _hoisted(s, plan, ctx)
    return plan


def _picked_by_if(s: ast.stmt, index: str, bound: set[str], ctx: PassContext) -> ast.stmt:
    """``c = own(...) if k == j else cents[k]``, whose first arm is such work under an index
    test, as the ``if``/``else`` statement it means; any other statement as it is."""
    if not (isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.value, ast.IfExp)
            and on_indices(s.value.test, index, bound)):
        return s
    pick = s.value
    arms = [ast.copy_location(ast.Assign([clone(s.targets[0])], arm), s)
            for arm in (pick.body, pick.orelse)]
    if not _invariant_work(arms[:1], bound, ctx):
        return s
    return ast.copy_location(ast.If(pick.test, arms[:1], arms[1:]), s)


def on_indices(test: ast.expr, index: str, bound: set[str]) -> bool:
    """``test`` reads the loop index, else only literals, names the body does not bind (outer
    indices among them) and their attributes, through arithmetic and comparisons."""
    names = {n.id for n in walk(test) if isinstance(n, ast.Name)}
    return index in names and not (names - {index}) & bound and all(
        isinstance(n, _TEST_NODES + (ast.Name,))
        or isinstance(n, ast.Attribute) and isinstance(n.value, (ast.Name, ast.Attribute))
        for n in walk(test))


def _invariant_work(stmts: list[ast.stmt], bound: set[str], ctx: PassContext) -> bool:
    """Plain name assignments reading nothing the loop binds but what they bind themselves
    (in order), without effects, at least one calling something not total."""
    own, heavy = set(), False
    for s in stmts:
        if not (isinstance(s, ast.Assign) and len(s.targets) == 1
                and isinstance(s.targets[0], ast.Name)):
            return False
        reads = {n.id for n in walk(s.value) if isinstance(n, ast.Name)}
        if reads & (bound - own):
            return False
        for call in (n for n in walk(s.value) if isinstance(n, ast.Call)):
            if ops.effect(resolve_call(call.func, ctx), method_name(call, ctx), call):
                return False
            heavy |= may_fail(call, ctx)
        own.add(s.targets[0].id)
    return heavy


def _int_arguments(stmts: list[ast.stmt], plan: LoopPlan, ctx: PassContext) -> list[ast.expr]:
    """Enclosing loops' indices handed to functions the registry does not know are Python ints
    in the original, which such a function may test in Python: checked to be ints (an enclosing
    loop mapping over this one then keeps its iterations, with this loop vectorized in each)."""
    args = {a.id for s in stmts for n in walk(s) if isinstance(n, ast.Call)
            and call_op(n, ctx) is ops.UNKNOWN
            for a in n.args + [k.value for k in n.keywords] if isinstance(a, ast.Name)
            and a.id not in index_tensor_arguments(n, ctx)}
    return [replace("type(i) is int", loc=plan.node, i=i)  # not discharged as a bound check
            for i in sorted(args & plan.outer_indices)]


def _hoisted(s: ast.If, plan: LoopPlan, ctx: PassContext) -> list[ast.stmt]:
    """Moves ``s``'s assignments, into fresh names, to ``plan.first`` behind a check that some
    index meets ``s.test``; returns the branch binding the user's names to them."""
    it = plan.iteration
    fresh = {t.id: ctx.namer.new(t.id) for a in s.body for t in a.targets}
    for a in s.body:
        plan.first.append(rename(clone(a), fresh))
    k = ctx.namer.new("k")
    test = rename(clone(s.test), {it.index: k})
    some = replace("any(t for k in range(a, b, c))", loc=s.test, t=test, k=k, a=it.start,
                   b=it.stop, c=it.step)
    for n in walk(some):
        if isinstance(n, ast.GeneratorExp):  # no loop of the user's: not reported
            ast_marks.put(n, ast_marks.GENERATED, True)
    # after the loop's own checks: the bounds are ints and the loop runs at all
    plan.helper_checks = plan.helper_checks + [some] + _int_arguments(s.body, plan, ctx)
    return [ast.copy_location(ast.Assign([ast.Name(u, ast.Store())], ast.Name(f, ast.Load())), s)
            for u, f in fresh.items()]
