"""Shared by the loop-stage golden tests: a loop's plan right before a given stage, and a
readable rendering of the plan's fields."""
from __future__ import annotations

import ast

import numpy

from passes.ast_tools import PassContext, clone, fix_missing_locations, unparse
from passes.loops import (divisions_by_counters, gather_keyed_reads, loop_dataflow, materialize_iterators,
                          normalize_comprehensions, number_list_operands,
                          outer_dependent_ranges_to_masks, stack_tensor_lists, vectorize_loops)
from passes.loops.plan import LoopPlan, new_plan
from tests.loop_helpers import context, dedent, namespace


def plan_before(src: str, stage) -> tuple[LoopPlan, PassContext]:
    """(the plan of the function's first loop after the stages before ``stage``, the context)."""
    tree = ast.parse(dedent(src))
    ctx = context(tree, namespace(np=numpy))  # (no case but its own names numpy)
    return plan_at(tree, ctx, stage), ctx


def plan_at(tree: ast.Module, ctx: PassContext, stage) -> LoopPlan:
    """The plan of the first loop of ``tree``'s function after the stages before ``stage``.
    Inner loops are vectorized first, as the pass does."""
    func = tree.body[0]
    loop = next(s for s in func.body if isinstance(s, ast.For))
    inner = vectorize_loops._Vectorizer(ctx)
    inner.func, inner.live = func, loop_dataflow.live_after_loops(func)
    inner.outer_bounds = outer_dependent_ranges_to_masks.index_bounds(loop, ctx)
    inner.depth = 1  # inside the loop: its inner loops are planned as inner ones
    inner.generic_visit(loop)
    after, divided = loop_dataflow.divisions_after_loops(func).get(loop, (None, {}))
    plan = new_plan(loop, loop_dataflow.live_after_loops(func)[loop], ctx,
                    sole_divisors=divisions_by_counters.sole_divisors(func, loop, divided),
                    zeros=loop_dataflow.zero_before_loops(func).get(loop, set()),
                    divided=divided, buildable_lists=normalize_comprehensions
                    .lists_built_by_loops(func, ctx).get(loop, set()),
                    # only their own cases stack lists: the others read the user's names
                    list_names=stack_tensor_lists.list_names(func, ctx)
                    if stage in (stack_tensor_lists, number_list_operands) else frozenset(),
                    host_containers=gather_keyed_reads.host_containers(func)
                    if stage is gather_keyed_reads else frozenset(),
                    iterators=materialize_iterators.iterator_names(func, ctx)
                    if stage is materialize_iterators else {},
                    host_arrays=loop_dataflow.host_arrays_before_loops(func, ctx).get(loop, {}))
    for s in vectorize_loops.LOOP_STAGES[:vectorize_loops.LOOP_STAGES.index(stage)]:
        plan = s.stage(plan, ctx)
    return plan


def show(plan: LoopPlan, fields: tuple[str, ...]) -> str:
    """``fields`` of ``plan``, one section each: statements and expressions as source."""
    out = []
    for name in fields:
        value = getattr(plan, name, None)
        if name == "outline":  # the statements, compound ones with their bodies left out
            text = "\n".join(f"if {unparse(s.test)}: ..." if isinstance(s, ast.If) else
                             f"def {s.name}(...): ..." if isinstance(s, ast.FunctionDef) else
                             unparse(fix_missing_locations(clone(s))) for s in plan.stmts)
        elif name == "checks":
            text = " and ".join(unparse(c) for c in value.conditions)
        elif name == "iteration":
            text = "" if value is None else (
                f"{value.index} in range({unparse(value.start)}, {unparse(value.stop)}, "
                f"{unparse(value.step)})" + "".join(f"; {n} from {unparse(src)}"
                                                    for n, src in value.elements))
        elif name == "masked":
            text = "; ".join(f"{unparse(v)} under {m}" for v, m in value.values())
        elif name == "facts":
            text = "" if value is None else "\n".join(
                f"{e.kind} {e.name} {e.family}".rstrip() for e in value.effects.values())
        elif name == "row_slices":
            text = "; ".join(f"{x}[{', '.join(unparse(p) for p in row.prefix)}, a:b:s] as "
                             f"{row.param}" for (x, _), row in value.items())
        elif isinstance(value, list) and (not value or isinstance(value[0], ast.stmt)):
            text = unparse(fix_missing_locations(ast.Module(clone(value), [])))
        elif isinstance(value, list) and isinstance(value[0], ast.expr):
            text = "; ".join(unparse(x) for x in value)
        elif isinstance(value, ast.AST):
            text = unparse(value)
        else:
            text = repr(sorted(value) if isinstance(value, (set, dict)) else value)
        out.append(f"# {name}\n{text}".rstrip())
    return "\n".join(out) + "\n"
