"""Stage: ``x.masked_select(m)`` (``torch.masked_select(x, m)``) by a mask becomes the selection
``x.expand_as(m)[m]``, which ``masked_selections_to_where`` turns into masked dense ops.

``masked_select`` keeps the elements of ``x`` where the boolean ``m`` holds, after broadcasting
the two, in row-major order: so does indexing the view of ``x`` broadcast to ``m``'s shape, the
usual case being equal shapes (the chatbot tutorial's per-step NLL of the non-padding tokens)::

    ce = -torch.log(probs.gather(1, y[t].view(-1, 1)).squeeze(1))
    loss += ce.masked_select(mask[t]).mean()
->
    ce = -torch.log(probs.gather(1, y[t].view(-1, 1)).squeeze(1))
    _selected = ce.expand_as(mask[t])
    loss += _selected[mask[t]].mean()

Where ``m`` would have to broadcast to ``x`` instead, ``expand_as`` raises and the decorator runs
the original. Indexing by an integer tensor gathers where ``masked_select`` raises, so ``m`` must
be boolean: a comparison, boolean logic or a boolean op, a name the function binds to those only
(``plan.masks``), or a row of a name the loop does not bind (``mask[t]``), or such a row bound
to a name once in the body (an inlined helper's parameter); that name being a boolean tensor
then joins the loop's runtime check (else the loop runs as written) and it counts as a mask for
the stages after. Taken in simple statements (not in the headers of compound ones), without
keywords, ``x`` a name, attribute or subscript by names and numbers, ``m`` without calls (it is
read twice).

A mask of the shape of ``x`` itself, made of ``x`` by elementwise arithmetic, comparisons and
boolean logic with numbers and full reductions, needs no broadcast: the selection is ``x[m]``
(``m`` read once, so it may call those reductions). A second selection from a first one's result
is then one ``masked_selections_to_where`` takes by its values::

    neg = sim[i].masked_select(labels != labels[i])       _selected = sim[i].expand_as(labels != labels[i])
    neg = neg.masked_select(neg + 0.1 > pos.min())  ->    neg = _selected[labels != labels[i]]
                                                          neg = neg[neg + 0.1 > pos.min()]
"""
from __future__ import annotations

import ast

from .. import ast_marks
from ..ast_tools import PassContext, Transformer, clone, is_pure, replace
from .loop_dataflow import call_op, is_boolean, loads, method_name, resolve_call, stores_in
from .masked_selections_to_where import _simple
from .masked_selections_to_where import rewrite as to_where
from .plan import LoopPlan

# The calls taken: the method (receiver, then mask) and the function (its two arguments).
METHOD = "masked_select"
FUNCTION = "torch.masked_select"
BOOLEAN_CHECK = "isinstance(m, torch.Tensor) and m.dtype == torch.bool"
_SIMPLE_STMTS = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Return)


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    selects = _Selects(plan, ctx)
    body = selects.block(clone(plan.body))
    if not selects.made:
        return plan
    masks = frozenset(plan.masks | selects.checked)
    it = plan.iteration
    dense = to_where(body, {it.index} | {name for name, _ in it.elements}, ctx, masks)  # marks
    if not all(ast_marks.get(s, ast_marks.WHERE_CONVERTED, False) for s in selects.made):
        plan.selections_kept = dense.refused  # the calls stay, and the loop is kept with
        return plan                           # their reason, and why
    plan.body = body
    for name in sorted(selects.checked):
        plan.check(BOOLEAN_CHECK, m=ast.Name(name, ast.Load()))
    plan.masks |= selects.checked
    return plan


class _Selects(Transformer):
    def __init__(self, plan: LoopPlan, ctx: PassContext):
        self.plan, self.ctx = plan, ctx
        self.bound = stores_in(plan.body)
        self.rows = _rows_bound_once(plan.body)  # name -> the row it is bound to
        self.checked: set[str] = set()   # names the runtime check requires boolean
        self.pre: list[ast.stmt] = []
        self.made: list[ast.Subscript] = []

    def block(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        out = []
        for s in stmts:
            if isinstance(s, _SIMPLE_STMTS):
                self.pre = []
                s = self.visit(s)
                out += self.pre
            else:
                for field in ("body", "orelse", "finalbody"):
                    if isinstance(getattr(s, field, None), list):
                        setattr(s, field, self.block(getattr(s, field)))
            out.append(s)
        return out

    def visit_Call(self, call: ast.Call) -> ast.expr:
        self.generic_visit(call)
        found = self._operands(call)
        m = self._mask(found[1]) if found is not None else None
        if m is None:
            return call
        if _shaped_as(m, found[0], self.ctx):  # nothing to broadcast
            made = replace("s[m]", loc=call, s=found[0], m=m)
        elif not is_pure(m):  # read twice below
            return call
        else:
            name = self.ctx.namer.new("selected")
            self.pre += replace("s = x.expand_as(m)", loc=call, s=name, x=found[0], m=clone(m))
            made = replace("s[m]", loc=call, s=name, m=m)
        self.made.append(made)
        return made

    def _operands(self, call: ast.Call) -> tuple[ast.expr, ast.expr] | None:
        if call.keywords:
            return None
        if method_name(call, self.ctx) == METHOD and len(call.args) == 1:
            found = call.func.value, call.args[0]
        elif resolve_call(call.func, self.ctx) == FUNCTION and len(call.args) == 2:
            found = call.args[0], call.args[1]
        else:
            return None
        return found if _simple(found[0]) else None

    def _mask(self, m: ast.expr) -> ast.expr | None:
        """``m`` when it is boolean, or the row of a name whose check makes it so (then checked;
        a name bound to the row is read as the row again, which the selection's form reads as a
        mask); else None."""
        if is_boolean(m, self.plan.masks, self.ctx):
            return m
        if isinstance(m, ast.Name) and m.id in self.rows:
            m = clone(self.rows[m.id])
        root = _root(m)
        if not isinstance(root, ast.Name) or loads(m) & self.bound:
            return None
        self.checked.add(root.id)
        return m


def _shaped_as(m: ast.expr, x: ast.expr, ctx: PassContext) -> bool:
    """``m`` has the shape of the name ``x``: elementwise arithmetic, comparisons and boolean
    logic of ``x`` with numbers and full reductions (``x.masked_select(x + 0.1 > y.min())``)."""
    if isinstance(m, ast.Name):
        return isinstance(x, ast.Name) and m.id == x.id
    parts = [m.left, *m.comparators] if isinstance(m, ast.Compare) else \
        [m.left, m.right] if isinstance(m, ast.BinOp) else \
        [m.operand] if isinstance(m, ast.UnaryOp) else []
    return any(_shaped_as(p, x, ctx) for p in parts) and all(
        _shaped_as(p, x, ctx) or _scalar(p, ctx) for p in parts)


def _scalar(e: ast.expr, ctx: PassContext) -> bool:
    """A number, a full reduction (``y.min()``, ``torch.sum(y)``), or arithmetic and methods of
    the registry's elementwise ops of those (``y.min() * y.sum().sign()``): no dims to
    broadcast."""
    if isinstance(e, ast.Constant):
        return type(e.value) in (int, float, bool)
    if isinstance(e, ast.UnaryOp):
        return _scalar(e.operand, ctx)
    if isinstance(e, ast.BinOp):
        return _scalar(e.left, ctx) and _scalar(e.right, ctx)
    if not (isinstance(e, ast.Call) and not e.keywords):
        return False
    if call_op(e, ctx).batched == "elementwise" and method_name(e, ctx) and not e.args:
        return _scalar(e.func.value, ctx)
    return call_op(e, ctx).reduce is not None and len(e.args) == (0 if method_name(e, ctx) else 1)


def _rows_bound_once(body: list[ast.stmt]) -> dict[str, ast.expr]:
    """Names the body binds once, at its top level, to a name or a subscript (``m = mask[t]``)."""
    stored = [n.id for s in body for n in ast.walk(s)
              if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)]
    return {s.targets[0].id: s.value for s in body if isinstance(s, ast.Assign)
            and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
            and stored.count(s.targets[0].id) == 1 and _simple(s.value)}


def _root(e: ast.expr) -> ast.expr:
    """The tensor ``e`` reads elements of: ``mask`` for ``mask[t]``, ``mask[t][b]``."""
    while isinstance(e, ast.Subscript):
        e = e.value
    return e
