"""Stage: inner loops already vectorized become their vectorized statements in the outer body.

Inner loops are vectorized first; an outer loop then maps over the inner's vectorized form
(nested vmap). The inner's runtime check must not depend on the outer iteration: it joins the
outer loop's check (``plan.inner_checks``)::

    for i in range(n):                          for i in range(n):
        if <inner check>:                           <inner vectorized statements>
            'optimize_loss: loop ... vectorized' ->
            <inner vectorized statements>
        else:
            <inner loop as written>

``isinstance(i, int)`` on the outer index is dropped (the outer loop makes ``i`` a slice), and
lists an inner loop bound to its stacked items have their consumers read them directly
(``normalize_comprehensions.bound_list_consumers``).

A check on an item of an outer tensor (the outer element ``spk`` of ``for spk in emb``, or a row
``x[i]`` of the outer index) holds for every item when it holds for the whole tensor: items of a
tensor are tensors of one shape. It is lifted, behind ``isinstance(emb, torch.Tensor)``::

    isinstance(spk, torch.Tensor) and spk.dim() > 0 and len(spk) > 0
        ->  isinstance(emb, torch.Tensor) and emb.dim() - 1 > 0 and emb.shape[1] > 0

A check reading only the types and shapes of values the outer body binds from such items by tensor
ops first (``p = scores.gather(0, index)[0]``) is the same in every iteration: it is evaluated once,
on the first item, in front of the loop (``first_item_checks``). Any other read of the outer
iteration in a check keeps the outer loop as written.

A check ``type(row) is list`` holds in every iteration when the outer body bound ``row = []``
before the inner loop (and not again since), and ``not isinstance(t, torch.Tensor)`` when it
bound ``t = x.item()``: they are dropped. The inner's device-side checks of
its counters of empty max/min selections leave the inlined statements with the counters'
zeroing: the counters sum over the outer loop, whose check (``plan.empty_selections``) raises
the same error after it, as one loop's would. The inner's check of what its iterations add to
16-bit gradients is dropped too: the outer's (``rounded_gradients_run_as_written``) covers it.

An inner fold that runs the inner loop as written when it would promote an accumulator's dtype
(``promoting_folds_run_as_written``) becomes its folds: the outer loop's folds of that
accumulator check the same promotion, on the sum over both loops (``plan.uses_where``). One that
would wrap an integer sum started from a wider value leaves that check to the outer loop's fold
of the same accumulator; a sum or product the outer body starts again is reduced in the dtype of
its fold onto that start (``plan.fold_starts``: ``loop_sum_onto``, ``product_onto``).
"""
from __future__ import annotations

import ast

from .. import ast_marks
from ..ast_tools import PassContext, Transformer, clone, is_int, is_name, replace, unparse, walk
from ..errors import Unsupported
from ..loop_sums_keep_dtypes import steps_differ
from . import normalize_comprehensions, rounded_gradients_run_as_written
from .first_item_checks import FirstItemChecks
from .loop_dataflow import depends, loads, resolve_call, stores, stores_in
from .plan import LoopPlan
from .promoting_folds_run_as_written import PROMOTED
from .runtime_checks import conjuncts, is_as_written, is_storage_check, is_vectorized_guard

# starts of which an inner fold's 16-bit steps are the steps from 0 (``_zeros``)
_ZEROS = frozenset({"torch.zeros", "torch.zeros_like"})


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    seeds = {it.index} | {n for n, _ in it.elements}
    lift = _LiftToTensor(it.index, dict(it.elements), seeds | stores_in(plan.body), ctx)
    forms = _InlinedForms(it.index, lift.blocked, ctx)
    first = FirstItemChecks(plan, ctx)
    plan.body = _inline(plan.body, seeds, plan.inner_checks, (lift, first), forms, ctx)
    if first.checks:
        checked = ctx.namer.new("first_item_ok")
        plan.prelude += first.prelude(checked)
        plan.inner_checks.append(ast.Name(checked, ast.Load()))
        plan.first_item_values = first.values()
    plan.empty_selections.update(forms.empty)
    plan.uses_where |= forms.bails
    # (the inner's own folds, inlined, bind an accumulator of this loop: its folds check it)
    plan.restarted_steps |= not all(_zeros(s, name, ctx) for s in walk(ast.Module(plan.body, []))
                                    if isinstance(s, ast.stmt)
                                    and not ast_marks.get(s, ast_marks.INLINED)
                                    for name in forms.restarts if name in stores(s))
    return plan


def _zeros(stmt: ast.stmt, name: str, ctx: PassContext) -> bool:
    """``stmt`` binds ``name`` to new zeros (``torch.zeros(...)``, ``x.new_zeros(...)``): the
    16-bit steps of an inner fold onto them are the steps from 0 (``steps_differ`` may not know
    it: its start is a tensor)."""
    v = stmt.value if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
        and is_name(stmt.targets[0], name) else None
    return isinstance(v, ast.Call) and (resolve_call(v.func, ctx) in _ZEROS or isinstance(
        v.func, ast.Attribute) and v.func.attr == "new_zeros")


def lifted_to_tensors(expr: ast.expr, plan: LoopPlan, ctx: PassContext) -> list[ast.expr] | None:
    """``expr`` on items of this loop's tensors as the same on the whole tensors (``len(spk)``
    -> ``emb.shape[1]``), after a check that each is a tensor; None when it reads anything else
    that varies with the iteration."""
    it = plan.iteration
    seeds = {it.index} | {n for n, _ in it.elements}
    return _LiftToTensor(it.index, dict(it.elements), seeds | stores_in(plan.body),
                         ctx).lifted(expr)


def _inline(body: list[ast.stmt], seeds: set[str], checks: list[ast.expr],
            lifts: tuple["_LiftToTensor", FirstItemChecks], forms: "_InlinedForms",
            ctx: PassContext, fresh: dict[str, str] | None = None,
            top: bool = True) -> list[ast.stmt]:
    """``body`` with its vectorized inner loops inlined; their checks appended to ``checks``
    (lifted to the outer tensors, or, on values the body derives from them, to its first item).
    ``fresh``: names the outer body bound before ``body`` to a new list (``row = []``) or a
    Python number (``t = x.item()``) -> "list" or "number"; ``top``: ``body`` is the outer's."""
    fresh, (lift, first) = fresh or {}, lifts
    assigned = stores_in(body)
    out, stacked = [], set()
    for k, s in enumerate(body):
        if is_vectorized_guard(s):
            stacked |= ast_marks.get(s, ast_marks.BOUND_LISTS, set())
            for g in conjuncts(s.test):
                if _is_int_check(g, seeds) or _is_list_check(g, _kind(fresh, "list")) \
                        or _is_not_tensor_check(g, _kind(fresh, "number")):
                    continue  # the inner writes out[i, ...]: this loop makes i a slice; and
                    # `row = []` / `t = x.item()` earlier in this iteration hold in every one
                if is_storage_check(g, ctx) or rounded_gradients_run_as_written.is_check(g, ctx):
                    continue  # this loop's own check covers what the inner one writes and reads
                if loads(g) & (seeds | assigned):
                    lifted = lift.lifted(g)
                    if lifted is None:
                        why = first.take(g, body[:k]) if top else "it is under a condition"
                        if why is None:
                            continue
                        raise Unsupported(f"the inner loop at line {s.lineno} needs a "
                                          f"per-iteration runtime check: {unparse(g)} ({why})")
                    seen = {unparse(c) for c in checks}
                    for c in lifted:  # each once (lifted checks share their tensor checks)
                        if unparse(c) not in seen:
                            seen.add(unparse(c))
                            checks.append(c)
                    continue
                checks.append(g)
            inlined = forms.lift_empty_checks(forms.visit(ast.Module(s.body[1:], [])).body)
            for t in inlined:
                ast_marks.put(t, ast_marks.INLINED, True)
            out += inlined
        elif isinstance(s, ast.If):
            s.body = _inline(s.body, seeds, checks, lifts, forms, ctx, fresh, False)
            s.orelse = _inline(s.orelse, seeds, checks, lifts, forms, ctx, fresh, False)
            out.append(s)
        else:
            out.append(s)
        fresh = {n: k for n, k in fresh.items() if n not in stores(s)} | _fresh(s)
    if stacked:  # lists an inlined loop built: the stacked items here
        block = ast.Module(out, [])
        normalize_comprehensions.bound_list_consumers(block, stacked, ctx, stacked=True)
        out = block.body
    return out


def _empty_check(s: ast.stmt) -> tuple[str | None, str]:
    """(counter, message) of ``torch._assert_async(torch.as_tensor(c == 0), message)``."""
    call = s.value if isinstance(s, ast.Expr) else None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and call.func.attr == "_assert_async" and len(call.args) == 2
            and isinstance(call.args[1], ast.Constant) and isinstance(call.args[0], ast.Call)
            and len(call.args[0].args) == 1 and isinstance(call.args[0].args[0], ast.Compare)):
        return None, ""
    test = call.args[0].args[0]
    if not (isinstance(test.left, ast.Name) and isinstance(test.ops[0], ast.Eq)
            and len(test.ops) == 1 and is_int(test.comparators[0], 0)):
        return None, ""
    return test.left.id, call.args[1].value


def _fresh(s: ast.stmt) -> dict[str, str]:
    """``{row: "list"}`` for ``row = []`` (a list display), ``{t: "number"}`` for
    ``t = x.item()``, else nothing."""
    value = s.value if isinstance(s, ast.Assign) and len(s.targets) == 1 \
        and isinstance(s.targets[0], ast.Name) else None
    number = isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) \
        and value.func.attr == "item" and not value.args and not value.keywords
    kind = "list" if isinstance(value, ast.List) else "number" if number else None
    return {s.targets[0].id: kind} if kind else {}


def _kind(fresh: dict[str, str], kind: str) -> set[str]:
    return {n for n, k in fresh.items() if k == kind}


def _is_not_tensor_check(g: ast.expr, numbers: set[str]) -> bool:
    """``not isinstance(t, torch.Tensor)`` for one of ``numbers`` (bound by ``.item()``)."""
    return isinstance(g, ast.UnaryOp) and isinstance(g.op, ast.Not) \
        and _is_type_check(g.operand, numbers, ".Tensor")


def _is_int_check(g: ast.expr, names: set[str]) -> bool:
    """``isinstance(i, int)`` for one of ``names``."""
    return _is_type_check(g, names, "int")


def _is_list_check(g: ast.expr, names: set[str]) -> bool:
    """``type(row) is list`` for one of ``names`` (``runtime_checks``' check of appended lists)."""
    return isinstance(g, ast.Compare) and len(g.ops) == 1 and isinstance(g.ops[0], ast.Is) \
        and is_name(g.comparators[0], "list") and isinstance(g.left, ast.Call) \
        and is_name(g.left.func, "type") and len(g.left.args) == 1 \
        and isinstance(g.left.args[0], ast.Name) and g.left.args[0].id in names


def _is_type_check(g: ast.expr, names: set[str], kind: str) -> bool:
    """``isinstance(i, <kind>)`` for one of ``names``; a ``kind`` starting with a dot is an
    attribute of that name (``.Tensor``: ``torch.Tensor`` however torch is spelled)."""
    return (isinstance(g, ast.Call) and isinstance(g.func, ast.Name) and g.func.id == "isinstance"
            and len(g.args) == 2 and isinstance(g.args[0], ast.Name) and g.args[0].id in names
            and (isinstance(g.args[1], ast.Name) and g.args[1].id == kind
                 or kind.startswith(".") and isinstance(g.args[1], ast.Attribute)
                 and g.args[1].attr == kind[1:]))


class _InlinedForms(Transformer):
    """In an inner loop's vectorized statements: ``if <a fold would promote>: <the inner loop
    as written> else: <folds>`` -> ``<folds>`` (``bails`` says whether there was one), and the
    batched form for a host-number outer index (``if not isinstance(i, torch.Tensor) and ...:``)
    -> its vmap form, the one that runs where the outer loop makes ``i`` a tensor, and so does
    the choice between the inner's batched and vmap forms (``ast_marks.FORMS_OF``) by a check on
    more than the shapes of the outer iteration's values (``requires_grad``): a Python condition
    on them has one value only as written."""

    def __init__(self, index: str, blocked: set[str], ctx: PassContext):
        self.index, self.bails = index, False
        self.restarts: set[str] = set()  # the starts of 16-bit folds in steps (``steps_differ``)
        self.blocked, self.ctx = blocked, ctx  # names that vary with the outer iteration
        self.empty: dict[str, str] = {}  # the inner loops' counters of empty selections

    def lift_empty_checks(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        """``stmts`` without the checks of the inner's counters of empty max/min selections
        (``raise_on_empty_selections``) and their zeroing: the counters count over the outer
        loop too, whose own check raises the same error after it."""
        checks = {c: m for c, m in map(_empty_check, stmts) if c is not None}
        self.empty.update(checks)
        return [s for s in stmts if _empty_check(s)[0] is None and not (
            isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
            and s.targets[0].id in checks and isinstance(s.value, ast.Constant))]

    def visit_If(self, node: ast.If) -> ast.AST | list[ast.stmt]:
        if is_as_written(node):
            self.bails |= PROMOTED in node.body[0].value.value
            self.restarts |= {c.args[0].id for c in walk(node.test) if isinstance(c, ast.Call)
                              and isinstance(c.func, ast.Name) and c.args
                              and self.ctx.bindings.get(c.func.id) is steps_differ
                              and isinstance(c.args[0], ast.Name)}
            return [self.visit(s) for s in node.orelse]
        if any(isinstance(g, ast.UnaryOp) and isinstance(g.op, ast.Not) and _is_type_check(
                g.operand, {self.index}, ".Tensor") for g in conjuncts(node.test)):
            return [self.visit(s) for s in node.orelse]
        if ast_marks.get(node, ast_marks.FORMS_OF) is not None \
                and depends(node.test, self.blocked, self.ctx):
            return [self.visit(s) for s in node.orelse]
        return self.generic_visit(node)


class _LiftToTensor(Transformer):
    """A check on items of outer tensors -> the same check on the whole tensors (module
    docstring). ``items``: outer element name -> the tensor it iterates; rows ``x[index]`` of a
    name not bound in the body are items of ``x`` too; ``blocked``: names that vary with the
    outer iteration."""

    def __init__(self, index: str, items: dict[str, ast.expr], blocked: set[str],
                 ctx: PassContext):
        self.index, self.items, self.blocked, self.ctx = index, items, blocked, ctx
        self.used: dict[str, ast.expr] = {}

    def lifted(self, g: ast.expr) -> list[ast.expr] | None:
        """``[isinstance(x, torch.Tensor) for each tensor x read, the lifted g]``, or None."""
        self.used = {}
        new = self.visit(clone(g))
        if loads(new) & self.blocked:
            return None
        return [replace("isinstance(x, torch.Tensor)", loc=g, torch_name=self.ctx.torch_name, x=x)
                for x in self.used.values()] + [new]

    def _tensor(self, item: ast.expr) -> ast.expr | None:
        """The tensor ``item`` is an item of, if it is one."""
        if isinstance(item, ast.Name) and item.id in self.items:
            tensor = self.items[item.id]
        elif isinstance(item, ast.Subscript) and is_name(item.slice, self.index) \
                and isinstance(item.value, ast.Name) and item.value.id not in self.blocked:
            tensor = item.value
        else:
            return None
        self.used.setdefault(unparse(tensor), tensor)
        return clone(tensor)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        f, args = node.func, node.args
        if isinstance(f, ast.Name) and f.id in ("isinstance", "len") and args \
                and not node.keywords and (f.id == "len" or unparse(args[-1]).endswith(".Tensor")):
            x = self._tensor(args[0])
            if x is not None:  # an item of a tensor is a tensor; its length is size 1
                template = "isinstance(x, t)" if f.id == "isinstance" else "x.shape[1]"
                return replace(template, loc=node, x=x, t=args[-1])
        if isinstance(f, ast.Attribute) and f.attr in _ITEM_METHODS and not args \
                and not node.keywords:
            x = self._tensor(f.value)
            if x is not None:
                return replace(_ITEM_METHODS[f.attr], loc=node, x=x)
        return self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        x = self._tensor(node.value) if node.attr in _ITEM_ATTRIBUTES else None
        if x is None:
            return self.generic_visit(node)
        return replace(_ITEM_ATTRIBUTES[node.attr], loc=node, x=x)


# What an item's shape facts are in terms of its tensor ``x`` (the item drops dim 0).
_ITEM_METHODS = {"dim": "(x.dim() - 1)", "size": "x.shape[1:]", "is_floating_point":
                 "x.is_floating_point()", "is_complex": "x.is_complex()"}
_ITEM_ATTRIBUTES = {"ndim": "(x.ndim - 1)", "shape": "x.shape[1:]", "dtype": "x.dtype",
                    "device": "x.device"}
