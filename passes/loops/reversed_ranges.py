"""Loop distribution of a loop over ``reversed(range(n))``: the hoisted loop runs forwards.

The vectorizer takes loops over ``range(...)``; a loop counting down is refused as a whole. Its
hoisted statements (``distribute_loops``) have no effect but the values they stack and read
nothing another iteration binds, so the order of their iterations changes nothing: the hoisted
loop runs over ``range(n)``, its values stacked by index, and the residual loop keeps the header
as written, reading iteration ``i``'s values at ``i``::

    for t in reversed(range(T)):                 <every step's `h` at once, over range(T)>
        h = torch.tanh(x[t] @ W).sum()    ->     _h_all = <stacked h>.unbind(0)
        g = h + gamma * g                        for t in reversed(range(T)):
                                                     h = _h_all[t]
                                                     g = h + gamma * g

Only ``reversed(range(stop))`` with one argument (the index is then the position in the
stacked values) and a plain loop variable; not with a ``break`` or ``return``, whose iterations
are counted first in the order they run. Likewise ``for x in reversed(xs)`` over a name: the
hoisted loop runs over ``xs``, the residual loop keeps the header as written and reads the
values of its ``k``-th iteration (``enumerate`` counts them) at ``-1 - k``::

    for r in reversed(rows):                     <every row's `l` at once, over `rows`>
        l = F.mse_loss(r, t)              ->     _l_all = <stacked l>.unbind(0)
        print(l.item())                          for _k, r in enumerate(reversed(rows)):
                                                     l = _l_all[-1 - _k]
                                                     print(l.item())
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, clone, replace
from .loop_dataflow import resolve_call


def forward(node: ast.For, ctx: PassContext) -> ast.For | None:
    """``node`` over ``range(stop)`` when it iterates ``reversed(range(stop))``, over ``xs``
    when it iterates ``reversed(xs)`` (a name), else None."""
    it = node.iter
    if not (isinstance(node.target, ast.Name) and _call_of(it, "reversed", ctx)
            and (_call_of(it.args[0], "range", ctx) or isinstance(it.args[0], ast.Name))):
        return None
    return ast.copy_location(ast.For(target=clone(node.target), iter=clone(it.args[0]),
                                     body=node.body, orelse=[], type_comment=None), node)


def _call_of(e: ast.expr, name: str, ctx: PassContext) -> bool:
    """``e`` is ``name(<one argument>)``, the builtin."""
    return isinstance(e, ast.Call) and resolve_call(e.func, ctx) == name \
        and len(e.args) == 1 and not e.keywords


def position(node: ast.For, k: str, ctx: PassContext) -> ast.expr:
    """Where the residual loop's ``k``-th iteration (``enumerate``'s count) reads its stacked
    values: ``-1 - k`` over ``reversed(xs)``, hoisted over ``xs``; else ``k``."""
    if forward(node, ctx) is not None and isinstance(node.iter.args[0], ast.Name):
        return replace("-1 - k", loc=node, k=k)
    return ast.copy_location(ast.Name(k, ast.Load()), node)
