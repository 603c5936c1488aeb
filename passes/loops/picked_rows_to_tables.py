"""Stage: a vmapped body that reads an iterated value only as the row it picks of tensors the body
does not bind (``refs[t]``) is mapped by ``tabulated_maps.map_tabulated``.

Where an enclosing map batches that value and nothing else the body reads, its map evaluates
the body once per (iteration, row) pair and reads each iteration's pair, instead of once per
iteration and outer item (a loop over speakers inside a loop over their permutations); anywhere
else it is the map it replaces::

    def _body(_t, _e_row):                          def _body(_t, _e_row):
        ...sisnr(_e_row, refs[_t])...                   ...sisnr(_e_row, refs[_t])...
        return (torch.as_tensor(_acc_part),)    ->      return (torch.as_tensor(_acc_part),)
    _outs = _map_in_chunks(_body,                   _outs = _map_tabulated(_body, in_dims=(0, 0),
        in_dims=(0, 0))(p, ests)                        index=0, tables=(refs,))(p, ests)

The value is one of the loop's elements or row slices (the loop index is a range no map
batches); every read of it is the whole index of a subscript of a name the body (and nothing
in it) binds nowhere, the tables, in the order found. A body that reads no such value
keeps its map.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, is_name, walk
from ..chunked_maps import map_in_chunks
from ..tabulated_maps import map_tabulated
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    found = _mapped_call(plan, ctx)
    if found is None:
        return plan
    fn, call = found
    dims = next(k.value for k in call.keywords if k.arg == "in_dims")
    for k, (param, dim) in enumerate(zip(fn.args.args, dims.elts)):
        tables = _tables(fn, param.arg) if param.arg != plan.iteration.index else None
        if tables and isinstance(dim, ast.Constant) and dim.value == 0:
            call.func = ast.Name(ctx.bind(map_tabulated, "map_tabulated"), ast.Load())
            read = ast.Tuple([ast.Name(t, ast.Load()) for t in tables], ast.Load())
            call.keywords += [ast.keyword("index", ast.Constant(k)), ast.keyword("tables", read)]
            break
    return plan


def _mapped_call(plan: LoopPlan, ctx: PassContext) -> tuple[ast.FunctionDef, ast.Call] | None:
    """The body function of ``plan.mapped`` and its map ``_map_in_chunks(_body, in_dims=...)``."""
    fns = {s.name: s for s in plan.mapped if isinstance(s, ast.FunctionDef)}
    chunked = ctx.bind(map_in_chunks, "map_in_chunks")
    for s in plan.mapped:
        value = getattr(s, "value", None)
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Call) \
                and is_name(value.func.func, chunked) and value.func.args \
                and isinstance(value.func.args[0], ast.Name) and value.func.args[0].id in fns \
                and any(k.arg == "in_dims" and isinstance(k.value, ast.Tuple)
                        for k in value.func.keywords):
            return fns[value.func.args[0].id], value.func
    return None


def _tables(fn: ast.FunctionDef, name: str) -> list[str]:
    """The names ``fn`` reads ``name`` as the index of (``refs[name]``), in order; empty when it
    reads ``name`` otherwise, not at all, or binds one of those names (or ``name``) itself."""
    args = [n for n in walk(fn) if isinstance(n, ast.arguments) and n is not fn.args]
    nested = {a.arg for n in args for a in n.posonlyargs + n.args + n.kwonlyargs + [n.vararg,
                                                                                 n.kwarg] if a}
    bound = nested | {n.id for n in walk(fn) if isinstance(n, ast.Name)
                      and not isinstance(n.ctx, ast.Load)}
    picks = [n for n in walk(fn) if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Load)
             and is_name(n.slice, name) and isinstance(n.value, ast.Name)]
    reads = [n for n in walk(fn) if is_name(n, name)]
    tables = list(dict.fromkeys(p.value.id for p in picks))
    own = {a.arg for a in fn.args.args}
    if not picks or len(picks) != len(reads) or name in bound or set(tables) & (bound | own):
        return []
    return tables
