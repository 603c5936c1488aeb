"""Stage: a full ``max``/``min`` of an empty masked selection raises as the original did.

``masked_selections_to_where`` counts the iterations whose selection was empty; the vectorized
statements zero the counters first and raise the original's error right before the folds store
anything (the original raised before storing the results of later iterations)::

    <vectorized statements>          ->    _empty_max = 0
    <folds>                                <vectorized statements>
                                           torch._assert_async(torch.as_tensor(_empty_max == 0),
                                                               'max(): ...')
                                           <folds>

``torch._assert_async`` checks on the device: the vectorized path reads nothing back to the host
(no sync per call; on CPU it raises the same ``RuntimeError`` with the same message right away, on
a GPU it fails at the next sync as a device-side assert). The counters of iterations where a host
function raised (``plan.host_errors``, ``host_roundtrips_to_tensor_ops``) raise the original's
exception with ``if c: raise ...``, located at the call: the loop read those values on the host
anyway. Without counters the statements are unchanged.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, replace
from .loop_dataflow import stores
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    torch_name = ctx.torch_name
    checks = selection_checks(plan.empty_selections, plan.empty_selections_at, torch_name)
    for name, (exception, loc) in plan.host_errors.items():
        checks[name] = replace(f"if c:\n    raise {exception}", loc=loc, torch_name=torch_name,
                               c=name)
    plan.stmts = raise_if_counted(plan.stmts, plan.folds, checks, torch_name)
    return plan


def selection_checks(empty: dict[str, str], loc: ast.AST | None,
                     torch_name: str = "torch") -> dict[str, list[ast.stmt]]:
    """For each counter of ``empty`` (name -> message): the device-side check raising the
    original's ``RuntimeError`` when it is not 0, at ``loc``."""
    # two statements, so that replace gives statements (one Expr) rather than the bare call
    return {name: replace("torch._assert_async(torch.as_tensor(c == 0), m)\npass", loc=loc,
                          torch_name=torch_name, c=name, m=ast.Constant(message))[:1]
            for name, message in empty.items()}


def raise_if_counted(stmts: list[ast.stmt], folds: list[ast.stmt],
                     checks: dict[str, list[ast.stmt]], torch_name: str = "torch") -> list[ast.stmt]:
    """The vectorized loop's ``stmts`` (ending with ``folds``, which store its results) with
    the counters of ``checks`` (name -> the statements raising when it is not 0): zero
    before, checked right before the folds."""
    if not checks:
        return stmts
    cut = len(stmts) - len(folds)
    if not all(a is b for a, b in zip(stmts[cut:], folds)):
        cut = len(stmts)  # not the expected layout: check after everything
    counted = [f for f in stmts[cut:] if stores(f) & checks.keys()]
    rest = [f for f in stmts[cut:] if not stores(f) & checks.keys()]
    init = [s for name, check in checks.items()
            for s in replace("c = 0", loc=check[0], torch_name=torch_name, c=name)]
    return init + stmts[:cut] + counted + [s for c in checks.values() for s in c] + rest
