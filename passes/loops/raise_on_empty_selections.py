"""Stage: a full ``max``/``min`` of an empty masked selection raises as the original did.

``masked_selections_to_where`` counts the iterations whose selection was empty; the vectorized
statements zero the counters first and raise the original's error right before the folds store
anything (the original raised before storing the results of later iterations)::

    <vectorized statements>          ->    _empty_max = 0
    <folds>                                <vectorized statements>
                                           if _empty_max:
                                               raise RuntimeError('max(): ...')
                                           <folds>

Without such selections the statements are unchanged.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, replace
from .loop_dataflow import stores
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    plan.stmts = raise_if_empty(plan.stmts, plan.folds, plan.empty_selections,
                                plan.empty_selections_at, ctx.torch_name)
    return plan


def raise_if_empty(stmts: list[ast.stmt], folds: list[ast.stmt], empty: dict[str, str],
                   loc: ast.AST | None, torch_name: str = "torch") -> list[ast.stmt]:
    """The vectorized loop's ``stmts`` (ending with ``folds``, which store its results) with
    the ``empty`` counters (name -> error message): zero before, checked right before the
    folds. New statements are located at ``loc``."""
    if not empty:
        return stmts
    cut = len(stmts) - len(folds)
    if not all(a is b for a, b in zip(stmts[cut:], folds)):
        cut = len(stmts)  # not the expected layout: check after everything
    counted = [f for f in stmts[cut:] if stores(f) & empty.keys()]
    rest = [f for f in stmts[cut:] if not stores(f) & empty.keys()]
    init, checks = [], []
    for name, message in empty.items():
        init += replace("c = 0", loc=loc, torch_name=torch_name, c=name)
        checks += replace(f"if c:\n    raise RuntimeError({message!r})", loc=loc,
                          torch_name=torch_name, c=name)
    return init + stmts[:cut] + counted + checks + rest
