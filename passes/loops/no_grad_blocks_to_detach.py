"""Stage: a ``with torch.no_grad():`` block of plain assignments in a loop body becomes the same
assignments, each value detached::

    with torch.no_grad():                  w = torch.sigmoid(x[i]).mean()
        w = torch.sigmoid(x[i]).mean()  ->  w = _detached(w)

A value computed with gradients enabled and then detached has the same value, dtype and shape as
one computed under ``no_grad``, and no gradient flows through it either (``passes/grad_free.py``:
every tensor in it, in tuples and ``torch.return_types`` too; numbers stay numbers). Taken only
when the block is nothing but ``name = <expr>`` statements with no in-place method call
(``x.add_(...)``) and no ``out=``: under ``no_grad`` an in-place update of a leaf that requires
gradients (a running centre, a memory bank) is allowed, with gradients enabled it raises. The
``with`` must be ``torch.no_grad()`` itself, with no ``as``. Writes into a tensor the block made
(a new tensor, no view, not made with ``requires_grad=``) are no such leaf: ``t[k] = v`` and one
in-place method ``t.fill_(v)`` on it are taken too, ``t`` detached after the last of them
(label smoothing's target row)::

    with torch.no_grad():                          t = torch.full_like(lp[i], e)
        t = torch.full_like(lp[i], e)        ->    t[y[i]] = 1 - s
        t[y[i]] = 1 - s                            t = _detached(t)
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, Transformer, is_name, replace, walk
from ..grad_free import detached
from .loop_dataflow import makes_new_tensor, resolve_call
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    plan.body = _Unwrap(ctx).statements(plan.body)
    return plan


class _Unwrap(Transformer):
    def __init__(self, ctx: PassContext):
        self.ctx = ctx

    def visit_For(self, node: ast.For) -> ast.For:
        return node  # an inner loop kept as written stays as written

    def visit_With(self, node: ast.With) -> ast.stmt | list[ast.stmt]:
        names = self._plain_no_grad(node)
        if names is None:
            return node
        out = []
        last = {name: k for k, name in enumerate(names)}  # detached once it is complete: a
        for k, (s, name) in enumerate(zip(node.body, names)):  # write into it sees it fresh
            out += [s] + (replace("v = f(v)", loc=s, v=name, f=self.ctx.bind(
                detached, "detached")) if last[name] == k else [])
        return out

    def _plain_no_grad(self, node: ast.With) -> list[str] | None:
        """The name each statement of a plain ``no_grad`` block binds or writes, or None."""
        if len(node.items) != 1 or node.items[0].optional_vars is not None:
            return None
        item = node.items[0].context_expr
        if not (isinstance(item, ast.Call) and not item.args and not item.keywords
                and resolve_call(item.func, self.ctx) == "torch.no_grad"):
            return None
        fresh: set[str] = set()  # tensors the block made: no leaf that requires grad
        names = []
        for s in node.body:
            name = _bound(s) or _written(s, fresh)
            if name is None:
                return None
            if isinstance(s, ast.Assign) and is_name(s.targets[0], name):
                made = makes_new_tensor(s.value, self.ctx) and not any(
                    k.arg == "requires_grad" for n in walk(s.value)
                    if isinstance(n, ast.Call) for k in n.keywords)
                fresh = fresh | {name} if made else fresh - {name}
            names.append(name)
        return names


def _bound(s: ast.stmt) -> str | None:
    """``name`` of ``name = <expr>`` with no in-place call."""
    if isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name) \
            and not _in_place(s.value):
        return s.targets[0].id
    return None


def _written(s: ast.stmt, fresh: set[str]) -> str | None:
    """``t`` of ``t[k] = v`` or ``t.fill_(v)`` (one in-place method) on a tensor the block made."""
    if isinstance(s, ast.Assign) and len(s.targets) == 1 \
            and isinstance(s.targets[0], ast.Subscript) and not _in_place(s.value) \
            and not _in_place(s.targets[0].slice):
        base = s.targets[0].value
    elif isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) \
            and isinstance(s.value.func, ast.Attribute) and s.value.func.attr.endswith("_") \
            and not any(_in_place(a) for a in s.value.args) \
            and not any(_in_place(k.value) or k.arg == "out" for k in s.value.keywords):
        base = s.value.func.value
    else:
        return None
    return base.id if isinstance(base, ast.Name) and base.id in fresh else None


def _in_place(value: ast.expr) -> bool:
    """A method call that writes its receiver, or a call with ``out=``."""
    return any(isinstance(n, ast.Call) and (
        isinstance(n.func, ast.Attribute) and n.func.attr.endswith("_")
        and not n.func.attr.startswith("_") or any(k.arg == "out" for k in n.keywords))
        for n in walk(value))
