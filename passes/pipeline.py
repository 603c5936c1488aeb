"""The pass pipelines: each one literal ordered list, and the runner that reports failures.

A failing pass is re-raised as ``RewriteError("pass X failed after [A, B]: ...")`` chained to
the cause. ``dump`` (the decorator's ``debug_dir``) receives readable Python after every pass.
"""
from __future__ import annotations

import ast
from typing import Callable

import torch.fx

from .errors import RewriteError, Unsupported

from . import (annotate_grad_dependence, check_supported, cuts_at_tensor_indices, fuse_loss_idioms,
               broadcast_products, hoist_target_subgraph, loop_sums_keep_dtypes, mapped_op_forms,
               mapped_writes_to_functional, optimize_called_helpers, outline_kept_loops, reroll_unrolled_loops,
               share_common_subexpressions, traceable_dtype_queries)
from .loops import vectorize_loops
from .ast_tools import PassContext, unparse

# Runs before AST_PIPELINE; refuses whole functions, with a reason.
CHECKER = check_supported

# AST passes, in order: each entry is a module with ``transform(tree, ctx) -> tree``.
AST_PIPELINE: list = [
    # vectorize_loops runs its stages (passes/loops/, vectorize_loops.LOOP_STAGES) on a copy of
    # each loop: a loop is rewritten only when every stage can do its share, so they are not
    # separate passes (helpers are inlined only in the vectorized copy of a loop body, whose
    # runtime check also checks they are still the same functions).
    vectorize_loops,
    # after vectorize_loops: the cuts in loops are its stages'; this one takes the function's own
    cuts_at_tensor_indices,
    fuse_loss_idioms,  # after vectorize_loops: the idioms it fuses are mostly that pass's output
    # after vectorize_loops (helpers inlined side by side repeat their values) and fuse_loss_idioms
    # (a shared value read by name would hide an idiom's operands from it)
    share_common_subexpressions,
    # after share_common_subexpressions: it shares calls of registry ops, not of bound forms
    broadcast_products,
    # after broadcast_products: a dense form is taken first; in a helper that runs under vmap
    mapped_op_forms,
    # in a helper that runs under vmap: after vectorize_loops (the writes its loops leave after
    # them) and before outline_kept_loops (a kept loop's writes, rebinding the name)
    mapped_writes_to_functional,
    optimize_called_helpers,  # after vectorize_loops: it reads calls by the helpers' own names
    # after fuse_loss_idioms and share_common_subexpressions: they match the `.sum(0)` it rewrites
    loop_sums_keep_dtypes,
    # after every pass that emits vectorized forms: it rewrites their dtype queries, which
    # the loop stages read as torch functions (ops of the registry)
    traceable_dtype_queries,
    outline_kept_loops,  # last: the loops every other pass left as loops (and their calls)
]

# FX passes, in order: each entry is a module with ``run(gm) -> PassResult``; facts go to
# ``node.meta`` under the keys of ``passes.meta_keys``.
FX_PIPELINE: list = [
    reroll_unrolled_loops,     # first: it replaces nodes, whose facts the next pass computes
    annotate_grad_dependence,  # before every pass that reads GRAD_DEPENDENCE
    hoist_target_subgraph,     # after every pass that rewrites nodes: it splits the graph in two
]

Dump = Callable[[str, str], None]  # (step name, readable Python)


def pass_name(p) -> str:
    return p.__name__.rsplit(".", 1)[-1]


def run_ast_pipeline(tree: ast.Module, ctx: PassContext, dump: Dump | None = None) -> ast.Module:
    """Check, then run every AST pass; ``ctx.report.passes_run`` lists what ran."""
    if dump:
        dump("parsed", unparse(tree))
    try:
        CHECKER.check(tree, ctx)
    except Unsupported as exc:
        raise RewriteError(f"not rewritten: {exc.reason}", ctx.filename, exc.lineno,
                           pass_name(CHECKER)) from exc
    for p in AST_PIPELINE:
        name = pass_name(p)
        try:
            tree = p.transform(tree, ctx)
        except Exception as exc:
            raise _failure(name, ctx.report.passes_run, exc, ctx.filename, ctx.report.lineno) from exc
        ctx.report.passes_run.append(name)
        if dump:
            dump(name, unparse(tree))
    return tree


def run_fx_pipeline(gm: torch.fx.GraphModule, filename: str, done: list[str],
                    dump: Dump | None = None, lineno: int | None = None,
                    passes: list | None = None) -> torch.fx.GraphModule:
    """Run every FX pass (or those of ``passes``, in ``FX_PIPELINE``'s order) on ``gm``;
    ``done`` collects the names of passes that ran."""
    if dump:
        dump("fx_traced", _readable(gm))
    for p in FX_PIPELINE if passes is None else [p for p in FX_PIPELINE if p in passes]:
        name = pass_name(p)
        try:
            result = p.run(gm)
        except Exception as exc:
            raise _failure(name, done, exc, filename, lineno) from exc
        gm = result.graph_module
        done.append(name)
        if dump:
            dump(f"fx_{name}", _readable(gm))
    return gm


def _readable(gm: torch.fx.GraphModule) -> str:
    # print_readable includes submodules (after the split: target_transform and core).
    return gm.print_readable(print_output=False)


def _failure(name: str, done: list[str], exc: Exception, filename: str,
             lineno: int | None) -> RewriteError:
    lineno = getattr(exc, "lineno", None) or lineno  # else the function's own line
    reason = exc.reason if isinstance(exc, Unsupported) else f"{type(exc).__name__}: {exc}"
    return RewriteError(f"pass {name} failed after [{', '.join(done)}]: {reason}",
                        filename, lineno, name)
