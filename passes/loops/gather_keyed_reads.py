"""Stage: reads of a list or dict the function builds, at a key the iteration computes, are
gathered in front of the loop and stacked, so the vectorized form reads the rows of one tensor.

Real losses keep tensors in host containers and index them by something other than the loop's
own index: the next part of a dict of parts (``part[i + 1]``), a frame of a dict keyed by tuples
(``outputs[('color', f, scale)]``). Such a read ``c[k]`` is gathered when ``c`` is a name the
function holds as a list, tuple or dict, never a tensor (``plan.host_containers``: a display or
comprehension bound in the function or the enclosing one, a parameter indexed by a string),
which the body reads only as ``c[...]`` (no call could change its items), and ``k`` a pure
expression without slices of the loop's index or elements and of names the body does not bind.
The gather runs the loop's own header again, the items are stacked when they agree
(``stack_tensor_lists``' template) and the body reads the row of the iteration::

    part = {}                                   part = {}
    ...                                         ...
    for i in range(n - 1):              ->      try:
        loss += ce(part[i + 1], y)                  _part_rows = [part[i + 1] for i in range(n - 1)]
                                                except Exception:
                                                    _part_rows = None
                                                _part_rows = torch.stack(tuple(_part_rows)) if ...
                                                for i in range(n - 1):      (the plan's body)
                                                    loss += ce(_part_rows[i], y)

An element the body no longer reads (not read after the loop either) leaves the iteration: the
vectorized form counts the index only, so a list of ints (frame ids) needs no tensor. Items that
do not stack (other shapes, numbers, ``None`` from a key that raised: the original may never
reach it, or raise its own error first) fail the guard's ``isinstance`` check and the loop runs
as written. Only loops counting from 0 by 1 are gathered (the row of an iteration is its
index). A name that may be a tensor (a parameter only indexed, ``refs[t]``) is not gathered: a
tensor's rows are read in one batched index today, a Python gather would be slower.

A write into an item of a host container (``part[i] = x[i]``) is refused: the vectorized form
writes tensors only, it could never run.
"""
from __future__ import annotations

import ast

from .. import ast_marks
from ..ast_tools import (PassContext, ScopedTransformer, clone, is_int, is_name, is_pure, unparse,
                         walk)
from ..errors import Unsupported
from .loop_dataflow import container_names, loads, stores_in
from .plan import LoopPlan
from .stack_tensor_lists import stacked_template

_GATHER = """
try:
    rows = [read for target in iterable]
except Exception:  # a key the original never reached, or after its own error: it runs as written
    rows = None
"""

_SCOPES = (ast.FunctionDef, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    _refuse_container_writes(plan)
    it = plan.iteration
    if not (is_int(it.start, 0) and is_int(it.step, 1)):
        return plan
    bound = stores_in(plan.body)
    own = {it.index} | {name for name, _ in it.elements}
    containers = {c for c in plan.host_containers - bound if _only_indexed(c, plan.body)}
    reads: dict[str, str] = {}  # unparsed read -> the gathered rows' name
    for sub in _reads(plan.body):
        keyed = loads(sub.slice)
        if not (isinstance(sub.value, ast.Name) and sub.value.id in containers) \
                or is_name(sub.slice, it.index) or not _host_key(sub.slice) \
                or not keyed & own or keyed & bound or unparse(sub) in reads:
            continue
        rows = ctx.namer.new(f"{sub.value.id}_rows")
        reads[unparse(sub)] = rows
        plan.prelude += _gathered(plan, ctx, sub, rows)
        plan.gathered[rows] = unparse(sub)
    if not reads:
        return plan
    plan.body = [_Rows(reads, it.index).visit(s) for s in plan.body]
    read = set().union(*(loads(s) for s in plan.body)) | plan.live_after
    it.elements = [(name, src) for name, src in it.elements if name in read]
    return plan


def _refuse_container_writes(plan: LoopPlan) -> None:
    for n in (n for s in plan.body for n in walk(s)):
        if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Store) \
                and isinstance(n.value, ast.Name) and n.value.id in plan.host_containers:
            raise Unsupported(f"`{unparse(n)} = ...` writes into `{n.value.id}`, a list or dict "
                              "the function builds: the vectorized form writes tensors only",
                              getattr(n, "lineno", None))


def _only_indexed(name: str, body: list[ast.stmt]) -> bool:
    """The body reads ``name`` only as ``name[key]``: no call could change its items."""
    indexed = {id(n.value) for s in body for n in walk(s) if isinstance(n, ast.Subscript)}
    return all(id(n) in indexed for s in body for n in walk(s) if is_name(n, name))


def _reads(body: list[ast.stmt]) -> list[ast.Subscript]:
    """The subscripts ``body`` reads, outside nested scopes (their names are their own)."""
    found, todo = [], list(body)
    while todo:
        n = todo.pop()
        if isinstance(n, _SCOPES):
            continue
        if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Load):
            found.append(n)
        todo += ast.iter_child_nodes(n)
    return sorted(found, key=lambda n: (n.lineno, n.col_offset))


def _gathered(plan: LoopPlan, ctx: PassContext, sub: ast.Subscript, rows: str) -> list[ast.stmt]:
    """The statements gathering ``sub`` over the loop's header into ``rows``, stacked."""
    node = plan.node
    gather = plan.sub(_GATHER, rows=rows, read=clone(sub), target=clone(node.target),
                      iterable=clone(node.iter))
    stack = plan.sub(f"s = {stacked_template(ctx)}", s=rows, x=ast.Name(rows, ast.Load()),
                     v=ctx.namer.new("v"))
    for n in walk(ast.Module(gather + stack, [])):
        if isinstance(n, (ast.ListComp, ast.GeneratorExp)):
            ast_marks.put(n, ast_marks.GENERATED, True)
    return gather + stack


def host_containers(func: ast.FunctionDef) -> frozenset[str]:
    """Names ``func`` holds as lists, tuples or dicts, never tensors: those every binding of
    which is a display or a comprehension, and parameters it indexes by a string (``d['key']``,
    ``d[('color', i)]``)."""
    shown = container_names(func)
    other = {n.id for n in walk(func) if isinstance(n, ast.Name)
             and isinstance(n.ctx, ast.Store)} - shown
    keyed = {n.value.id for n in walk(func) if isinstance(n, ast.Subscript)
             and isinstance(n.value, ast.Name) and _string_key(n.slice)}
    params = _parameters(func)
    return frozenset((shown - params) | (keyed & params - other))


def _string_key(key: ast.expr) -> bool:
    return any(isinstance(e, ast.Constant) and isinstance(e.value, str)
               for e in (key.elts if isinstance(key, ast.Tuple) else [key]))


def _host_key(key: ast.expr) -> bool:
    """A key a list or dict takes: a pure expression, no slice (a tensor's rows)."""
    return is_pure(key) and not any(isinstance(n, ast.Slice) for n in walk(key))


def free(names: frozenset[str], func: ast.FunctionDef) -> frozenset[str]:
    """``names`` of the enclosing function that ``func`` reads as they are (binds none of)."""
    bound = {n.id for n in walk(func) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return names - bound - _parameters(func)


def _parameters(func: ast.FunctionDef) -> set[str]:
    return {a.arg for a in walk(func) if isinstance(a, ast.arg)}


class _Rows(ScopedTransformer):
    """The gathered reads -> the row of the iteration."""

    def __init__(self, reads: dict[str, str], index: str):
        self.reads, self.index = reads, index

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        rows = self.reads.get(unparse(node)) if isinstance(node.ctx, ast.Load) else None
        if rows is None:
            return self.generic_visit(node)
        return ast.copy_location(ast.Subscript(ast.Name(rows, ast.Load()),
                                               ast.Name(self.index, ast.Load()), ast.Load()), node)
