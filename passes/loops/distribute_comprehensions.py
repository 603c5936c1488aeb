"""Loop distribution of a comprehension the vectorizer keeps whole.

A comprehension is a loop whose body is one statement that leaves the iteration. Its loop form::

    [elt for t in xs if c]          _items = []
    {k: v for t in xs}        ->    for _t in xs:
    {elt for t in xs}                   if c:
                                            _items.append(elt)   # _items[k] = v, _items.add(elt)

(the targets renamed apart, as the comprehension's scope keeps them; a nested loop per further
``for`` clause) goes through ``distribute_loops`` as a loop of the function would. A list
comprehension (or a set or dict one) that is the whole value of ``name = [...]`` outside the
function's loops (which may still vectorize it whole) is split when that pays: its element's
heavy operand is hoisted into one vectorized loop, a residual loop builds the list::

    ls = [(x[i] - y[i]).sum()                 <every item's sum at once: `_value_all`>
          for i in range(len(x))]       ->    _items = []
                                              for _i in range(len(x)):
                                                  _value = _value_all[_i]
                                                  _items.append(_value)
                                              ls = _items

behind the hoisted loop's check, the statement as written where it fails; not when ``ls`` may be
read in part after it and its items may have a NaN/inf derivative (the hoisted values' batched
backward would also run for the items the original never differentiates). A comprehension the
vectorizer takes as a loop of its own (``normalize_comprehensions.to_loop``) and refuses is split
by ``vectorize_loops`` (``told`` puts its reason in the user's names). Every other kept
comprehension's report entry says why it is not split: ``distribute_loops``' reason for its loop
form (nothing heavy to hoist, its ``for`` clause refused, ...), in the user's names, or that a
comprehension inside an expression has no statements to put two loops in. Asking leaves nothing
behind: the names the attempt took and the notes inlined helpers made are given back.
"""
from __future__ import annotations

import ast
import re
from typing import Callable

from ..ast_tools import PassContext, clone, rename, replace, walk
from ..errors import Unsupported
from . import distribute_loops, iteration, normalize_comprehensions
from .loop_dataflow import child_blocks, loads
from .plan import LoopPlan

# What the residual loop of a comprehension's loop form does (its one statement)
_RESIDUAL = "; residual loop: the comprehension's items, in order"

Vectorize = Callable[[LoopPlan, PassContext], LoopPlan]


def split_list(stmt: ast.stmt, func: ast.FunctionDef, masks: set[str], lists: dict,
               ctx: PassContext, vectorize: Vectorize
               ) -> tuple[distribute_loops.Fission, list[ast.stmt], ast.stmt] | str | None:
    """``name = [...]`` (``stmt``; a set or dict comprehension alike) as (the split of its loop
    form, the statements before the loop, the statement binding the list), why it is not split
    (the attempt given back, as ``verdict``'s), or None: ``stmt`` is no such statement."""
    comp = stmt.value if isinstance(stmt, ast.Assign) else None
    if not isinstance(comp, (ast.ListComp, ast.SetComp, ast.DictComp)) \
            or len(stmt.targets) != 1 or not isinstance(stmt.targets[0], ast.Name):
        return None
    point, notes = ctx.namer.checkpoint(), list(ctx.report.notes)
    init, loop, items, names = _loop_form(comp, ctx)
    fission = _header_refused(loop, ctx) or read_in_part(stmt, loop, items, func, ctx) \
        or distribute_loops.distribute(loop, loads(func) | {items}, masks, ctx, vectorize, lists)
    if isinstance(fission, str):
        ctx.namer.rollback(point)
        ctx.report.notes[:] = notes
        return _told(fission, items, names)
    bind = replace("name = items", loc=stmt, name=stmt.targets[0].id, items=items)
    fission.reason = _told(fission.reason, items, names) + _RESIDUAL
    return fission, init, bind[0]


def told(fission: distribute_loops.Fission | str, init: list[ast.stmt], loop: ast.For,
         comp: ast.expr) -> distribute_loops.Fission | str:
    """``fission`` (of ``loop``, the loop form of ``comp`` ``normalize_comprehensions.to_loop``
    makes, after ``init``), its reason in the user's names."""
    names = {a.id: b.id for a, b in zip(walk(comp.generators[0].target), walk(loop.target))
             if isinstance(a, ast.Name)}
    items = init[0].targets[0].id
    if isinstance(fission, str):
        return _told(fission, items, names)
    fission.reason = _told(fission.reason, items, names) + _RESIDUAL
    return fission


def verdict(comp: ast.expr, func: ast.FunctionDef, ctx: PassContext,
            vectorize: Vectorize) -> str:
    """Why ``comp`` (a comprehension of ``func``, not split by ``split_list``) is not
    distributed."""
    point, notes = ctx.namer.checkpoint(), list(ctx.report.notes)
    try:
        _, loop, items, names = _loop_form(comp, ctx)
        fission = _header_refused(loop, ctx) or distribute_loops.distribute(
            loop, loads(func) | {items}, set(), ctx, vectorize)
    finally:
        ctx.namer.rollback(point)
        ctx.report.notes[:] = notes
    if isinstance(fission, str):
        return _told(fission, items, names)
    return "its loop form would be split (" + fission.reason.split(";")[0] + "), but the " \
           "comprehension is not the whole value of an assignment to a name outside the " \
           "function's loops, where the hoisted and the residual loop would go"


def _header_refused(loop: ast.For, ctx: PassContext) -> str:
    """Why the vectorizer refuses ``loop``'s header ("" when it takes it): for a loop of the
    function the whole loop's refusal said it first, a comprehension's did not."""
    try:
        iteration.stage(LoopPlan(loop, set(), torch_name=ctx.torch_name), ctx)
    except Unsupported as exc:
        return f"its `for` clause is refused: {exc.reason}"
    return ""


def read_in_part(stmt: ast.stmt, loop: ast.For, items: str, func: ast.FunctionDef,
                 ctx: PassContext) -> str:
    """Why the list of the loop form ``loop`` (adding to ``items``) of the comprehension in
    ``stmt`` is not built by a residual loop ("" when it may be): the list is read in part after
    ``stmt`` (or returned: its caller may), and its items may have a NaN/inf derivative: the
    hoisted values' batched backward would also run for the items the original never
    differentiates. A list a reducer takes as a whole is read whole."""
    if not isinstance(getattr(stmt, "value", None), normalize_comprehensions.COMPREHENSIONS):
        return ""  # a reducer's argument, or a statement without a value
    if isinstance(stmt, ast.Return):
        return "the list is returned: its caller may read it in part"
    if not (isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)):
        return ""
    name = stmt.targets[0].id
    block = next(b for n in walk(func) if isinstance(n, ast.stmt) for b in child_blocks(n)
                 if any(s is stmt for s in b))
    appending = rename(clone(loop), {items: name})  # the loop form, in the block for `stmt`
    holder = ast.If(test=ast.Constant(True), body=[appending if s is stmt else s for s in block],
                    orelse=[])
    ops_ = normalize_comprehensions.lists_read_in_part(appending, func, ctx, holder)
    return f"`{name}` is read in part after it, and its items may have a NaN/inf derivative " \
        f"(`{ops_[name]}`)" if ops_ else ""


def _told(reason: str, items: str, names: dict[str, str]) -> str:
    """``reason`` in the user's names. The residual statement it lists is always the loop
    form's one statement, adding the element to the list: it is left out."""
    reason = reason.split("; residual loop:")[0].replace(f"`{items}`", "the comprehension's list")
    back = {made: name for name, made in names.items()}
    return re.sub(r"\b_\w+\b", lambda m: back.get(m.group(0), m.group(0)), reason)


def _loop_form(comp: ast.expr, ctx: PassContext
               ) -> tuple[list[ast.stmt], ast.For, str, dict[str, str]]:
    """``comp``'s loop form: (``_items = <empty>``, the loop, ``_items``, the renamed targets)."""
    names = {n.id: ctx.namer.new(n.id) for gen in comp.generators for n in walk(gen.target)
             if isinstance(n, ast.Name)}
    items = ctx.namer.new("items")

    def own(e: ast.AST) -> ast.AST:  # a copy in the loop form's names
        return rename(clone(e), names)

    if isinstance(comp, ast.DictComp):
        body = replace("items[k] = v", loc=comp, items=items, k=own(comp.key), v=own(comp.value))
    else:
        add = "add" if isinstance(comp, ast.SetComp) else "append"
        body = [ast.copy_location(ast.Expr(replace(f"items.{add}(e)", loc=comp, items=items,
                                                   e=own(comp.elt))), comp)]
    for k, gen in reversed(list(enumerate(comp.generators))):
        for test in reversed(gen.ifs):
            body = [ast.copy_location(ast.If(test=own(test), body=body, orelse=[]), comp)]
        # the first clause's iterable is evaluated outside the comprehension's scope
        body = [ast.copy_location(ast.For(target=own(gen.target), body=body, orelse=[],
                                          iter=own(gen.iter) if k else clone(gen.iter),
                                          type_comment=None), comp)]
    empty = "{}" if isinstance(comp, ast.DictComp) else \
        "set()" if isinstance(comp, ast.SetComp) else "[]"
    init = replace(f"items = {empty}", loc=comp, items=items)
    return init, ast.fix_missing_locations(body[0]), items, names
