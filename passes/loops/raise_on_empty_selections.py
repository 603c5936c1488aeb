"""Stage: a full ``max``/``min`` of an empty masked selection raises as the original did.

``masked_selections_to_where`` counts the iterations whose selection was empty; the vectorized
statements zero the counters first and raise the original's error right before the folds store
anything (the original raised before storing the results of later iterations)::

    <vectorized statements>          ->    _empty_max = 0
    <folds>                                <vectorized statements>
                                           if _empty_max:
                                               raise RuntimeError('max(): ...')
                                           <folds>

The same for the counters of iterations where a host function raised (``plan.host_errors``,
``host_roundtrips_to_tensor_ops``): the original's exception, located at the call. Without such
counters the statements are unchanged.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, replace
from .loop_dataflow import stores
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    errors = {**selection_errors(plan.empty_selections, plan.empty_selections_at),
              **plan.host_errors}
    plan.stmts = raise_if_counted(plan.stmts, plan.folds, errors, ctx.torch_name)
    return plan


def selection_errors(empty: dict[str, str],
                     loc: ast.AST | None) -> dict[str, tuple[str, ast.AST | None]]:
    """The ``empty`` counters (name -> message) with the RuntimeError they raise, at ``loc``."""
    return {name: (f"RuntimeError({message!r})", loc) for name, message in empty.items()}


def raise_if_counted(stmts: list[ast.stmt], folds: list[ast.stmt],
                     errors: dict[str, tuple[str, ast.AST | None]],
                     torch_name: str = "torch") -> list[ast.stmt]:
    """The vectorized loop's ``stmts`` (ending with ``folds``, which store its results) with
    the counters of ``errors`` (name -> (exception source, location)): zero before, checked
    right before the folds, each raising at its location."""
    if not errors:
        return stmts
    cut = len(stmts) - len(folds)
    if not all(a is b for a, b in zip(stmts[cut:], folds)):
        cut = len(stmts)  # not the expected layout: check after everything
    counted = [f for f in stmts[cut:] if stores(f) & errors.keys()]
    rest = [f for f in stmts[cut:] if not stores(f) & errors.keys()]
    init, checks = [], []
    for name, (exception, loc) in errors.items():
        init += replace("c = 0", loc=loc, torch_name=torch_name, c=name)
        checks += replace(f"if c:\n    raise {exception}", loc=loc, torch_name=torch_name,
                          c=name)
    return init + stmts[:cut] + counted + checks + rest
