"""Stage: a ``range`` loop whose whole body runs under a test of its index only iterates the
int64 tensor of the indices that meet the test, computed on the host first.

Per-class losses skip a class by its index (``if c != self.ignore_index:``, ``if c == ignore:
continue``). As a mask, the skipped class's work would still run, and a call not known to be
total (a user module, a loss) keeps the loop (``tensor_branches_to_where``). The test reads
only the index, literals and values the loop does not bind (their attributes too): Python ints
and objects in the original, which tests them one index after the other. Tested the same way
before the loop, the indices that pass leave a loop over exactly the iterations the original
runs, with no condition left::

    for c in range(C):                      _selected = torch.tensor(run_eagerly(lambda:
        if c != self.ignore:          ->        [c for c in range(C) if c != self.ignore]),
            loss += dice(p[:, c], t[:, c])      dtype=torch.int64)
                                            <vectorized over the items of _selected>
                                            else: the loop as written

    for c in range(C):                      (the same, with ``not c == ignore``; the body the
        if c == ignore:                     statements after the ``continue``)
            continue
        loss += dice(p[:, c], t[:, c])

Taken for loops not inside another being vectorized, whose work calls something not known to be
total (a body of total ops is cheaper masked than gathered), when the body is one ``if`` without
``else`` or starts with ``if <test>: continue``, and the index is read in the body only as a
whole entry of a subscript (``x[c]``, ``x[:, c]``: a 0-d int64 tensor indexes as the int does)
and not after the loop. When no index passes, the tensor is empty and the loop runs as written
(it runs no iteration either). A test that raises raises the original's exception, before any
iteration's work (which has no effect a vectorized loop keeps in order anyway). Tests are run
eagerly under torch.compile (Dynamo would unroll the host loop, specialising the bounds).
"""
from __future__ import annotations

import ast

from .. import ast_marks
from ..ast_tools import PassContext, clone, is_name, walk
from ..outline_kept_loops import run_eagerly
from .hoist_calls_under_index_tests import on_indices
from .index_tensor_parameters import may_fail_masked
from .loop_dataflow import resolve_call, stores_in
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    node = plan.node
    if plan.inner:  # its prelude would be a statement of the outer body (the outer loop's masks
        return plan  # take the test); planned again as not inner when the outer loop is kept
    if not (isinstance(node.target, ast.Name) and isinstance(node.iter, ast.Call)
            and resolve_call(node.iter.func, ctx) == "range" and not node.iter.keywords
            and not node.orelse and node.target.id not in plan.live_after):
        return plan
    index = node.target.id
    split = _selection(node.body, index)
    if split is None:
        return plan
    test, body = split
    if ctx.mapped and _reads_whole_names(test, index):
        return plan  # under vmap an argument may be a batched tensor: no host test (a mask)
    if index in stores_in(body) or not index_entries_only(index, body) \
            or not may_fail_masked(body, ctx):
        return plan  # a body of total ops: its mask is cheaper than gathering the items
    selected = ctx.namer.new("selected")
    indices = plan.sub("[i for i in it if t]", i=index, it=node.iter, t=test)
    ast_marks.put(indices, ast_marks.GENERATED, True)
    plan.prelude += plan.sub("s = torch.tensor(r(lambda: l), dtype=torch.int64)", s=selected,
                             r=ctx.bind(run_eagerly, "run_eagerly"), l=indices)
    # the stages read the loop over the selected indices; the guard's else keeps the user's loop
    items = ast.copy_location(ast.Name(selected, ast.Load()), node.iter)
    plan.node = ast.copy_location(ast.For(node.target, items, body, []), node)
    return plan


def _selection(body: list[ast.stmt], index: str) -> tuple[ast.expr, list[ast.stmt]] | None:
    """(the test an iteration runs its work under, that work), or None."""
    first = body[0]
    if not (isinstance(first, ast.If) and not first.orelse
            and on_indices(first.test, index, stores_in(body))):
        return None
    if len(body) == 1:
        return first.test, first.body
    if len(first.body) == 1 and isinstance(first.body[0], ast.Continue):
        return ast.copy_location(ast.UnaryOp(ast.Not(), clone(first.test)), first.test), body[1:]
    return None


def _reads_whole_names(test: ast.expr, index: str) -> bool:
    """``test`` reads a name other than ``index`` as a whole value (not only its attributes:
    ``self.ignore`` is the object's, ``j`` may be what a vmapped caller passes)."""
    roots = {id(n.value) for n in walk(test) if isinstance(n, ast.Attribute)}
    return any(isinstance(n, ast.Name) and n.id != index and id(n) not in roots
               for n in walk(test))


def index_entries_only(index: str, body: list[ast.stmt]) -> bool:
    """``index`` is read, and only as a whole entry of a subscript (``x[i]``, ``x[:, i]``)."""
    entries = set()
    for n in (n for s in body for n in walk(s) if isinstance(n, ast.Subscript)):
        parts = n.slice.elts if isinstance(n.slice, ast.Tuple) else [n.slice]
        entries |= {id(p) for p in parts if is_name(p, index)}
    reads = {id(n) for s in body for n in walk(s) if is_name(n, index)}
    return bool(reads) and reads <= entries
