"""Stage: an ``if``/``else`` whose every branch ends by appending to the same list appends once,
after it, the value merged from the branches::

    if c:                                   if c:
        a = f(x[i])                             a = f(x[i])
        lst.append(a * 2)           ->          _lst_value = a * 2
    elif d:                                 elif d:
        lst.append(g(x[i]))                     _lst_value = g(x[i])
    else:                                   else:
        lst.append(x[i])                        _lst_value = x[i]
                                            lst.append(_lst_value)

Every iteration appends exactly one item, so the list's length does not depend on the data.
Exact: the append is the last thing each branch does, so doing it right after the ``if`` keeps
every evaluation in its order; only the fresh name is new. ``elif`` chains merge from the
innermost ``if`` out. The ``if`` then assigns the same name in every branch, which
``tensor_branches_to_where`` turns into ``torch.where`` when the condition is a tensor (a Python
condition stays an ``if``), and the append is the unconditional effect ``lst.append(e)``.

An ``if`` without ``else`` whose branch appends and ends with ``continue``, followed by statements
that end by appending to the same list, is that ``if``/``else`` first (the same statements run in
the same order)::

    if c:                                   if c:
        lst.append(a)                           lst.append(a)
        continue                    ->      else:
    b = f(x[i])                                 b = f(x[i])
    lst.append(b)                               lst.append(b)
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, replace
from .continues_to_else import continues_to_else
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    plan.body = _merge(continues_to_else(plan.body, _appends_then_continues), ctx)
    return plan


def _appends_then_continues(s: ast.If, rest: list[ast.stmt]) -> bool:
    """``if c: ...; lst.append(a); continue`` (no ``else``) whose following statements end with
    ``lst.append(b)`` and hold no other ``continue``: the ``if``/``else`` it equals merges."""
    return (not s.orelse and len(s.body) >= 2 and isinstance(s.body[-1], ast.Continue)
            and bool(rest) and _appended(s.body[-2]) is not None
            and _appended(s.body[-2]) == _appended(rest[-1])
            and not any(isinstance(n, ast.Continue) for t in rest for n in ast.walk(t)))


def _merge(stmts: list[ast.stmt], ctx: PassContext, made: dict[ast.stmt, str] | None = None
           ) -> list[ast.stmt]:
    """``made``: the appends this stage wrote, with the name they append (an ``elif``'s merged
    append becomes an assignment to that same name). By node, not id(): a popped one is freed."""
    made = {} if made is None else made
    out = []
    for s in stmts:
        out.append(s)
        if not isinstance(s, ast.If):
            continue
        s.body, s.orelse = _merge(s.body, ctx, made), _merge(s.orelse, ctx, made)
        lst = _appended_by_every_branch(s)
        if lst is None:
            continue
        value = next((made[b[-1]] for b in (s.body, s.orelse) if b[-1] in made), None)
        value = value or ctx.namer.new(f"{lst}_value")
        loc = s.orelse[-1]
        for branch in (s.body, s.orelse):
            append = branch.pop()
            if append not in made:
                branch.append(replace("v = e", loc=append, v=value, e=append.value.args[0])[0])
        call = replace("lst.append(v)", loc=loc, lst=ast.Name(lst, ast.Load()),
                       v=ast.Name(value, ast.Load()))
        out.append(ast.copy_location(ast.Expr(call), loc))
        made[out[-1]] = value
    return out


def _appended_by_every_branch(s: ast.If) -> str | None:
    """The list both branches of ``s`` end by appending to, if any."""
    names = {_appended(branch[-1]) if branch else None for branch in (s.body, s.orelse)}
    return names.pop() if len(names) == 1 else None


def _appended(s: ast.stmt) -> str | None:
    """``lst`` of a statement ``lst.append(e)``."""
    call = s.value if isinstance(s, ast.Expr) else None
    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and call.func.attr == "append" and isinstance(call.func.value, ast.Name)
            and len(call.args) == 1 and not isinstance(call.args[0], ast.Starred)
            and not call.keywords):
        return call.func.value.id
    return None
