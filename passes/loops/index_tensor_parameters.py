"""Which arguments of a call to a helper of the module the helper takes as well as a 0-d integer
tensor as the Python int it gets in the original.

A loop mapped with ``torch.vmap`` hands its index to the functions its body calls as a 0-d int64
tensor batched over the iterations; a function testing it in Python (``if j == 0:``, ``range(j)``,
``x[:j]``) then fails. A plain function of the same module (same globals, same file) whose
parameter ``j`` it never rebinds and reads only

- as a whole entry of a subscript (``x[j]``, ``x[s, j]``: a 0-d integer tensor indexes as the int
  does),
- in the exclusion of one index of its own ``for`` loop (``if u == j: continue`` first in the
  body, or ``if u != j:`` as the whole body) whose calls are all total or made safe under a mask
  (``may_fail_masked``): the loop's stages make that test a mask, and the test whether any
  iteration passes holds without reading ``j`` when the loop has two iterations or more
  (``fold_accumulators``); a call that may fail on the excluded iteration keeps the loop, whose
  ``if`` would test the batched tensor in Python (the caller's loop is kept instead),
- as the cut ``torch.cat((x[:j], x[j + 1:]))`` (``cuts_at_tensor_indices`` gathers for a tensor),

gets the same values from a tensor ``j``. A form of the helper that still cannot take one (its
loop kept at run time, a single iteration) raises, and the runtime runs the original loss.
"""
from __future__ import annotations

import ast

from .. import ops
from ..ast_tools import PassContext, is_name, walk
from ..errors import Unsupported
from .excluded_items_to_masks import _slice, two_slices_joined
from .inline_helper_calls import bound_arguments, inlinable_helper
from .loop_dataflow import call_op, method_name, module_function, resolve_call, stores


def index_tensor_arguments(call: ast.Call, ctx: PassContext) -> set[str]:
    """The names ``call`` passes to parameters of a module helper that takes them as 0-d integer
    tensors too (module docstring); empty for any other call."""
    fn = module_function(call.func, ctx, ctx.local_names or ())
    if fn is None:
        return set()
    try:
        parsed = ctx.parse_function(fn)
        node = parsed.tree.body[0]
        given = bound_arguments(call, fn, node)
    except Unsupported:
        return set()
    if parsed.filename != ctx.filename:
        return set()
    return {a.id for param, a in given
            if isinstance(a, ast.Name) and _takes_tensor(node, param, ctx)}


def _takes_tensor(func: ast.FunctionDef, param: str, ctx: PassContext) -> bool:
    if any(param in stores(n) for n in walk(func) if isinstance(n, ast.stmt) and n is not func):
        return False
    safe: set[int] = set()
    for n in walk(func):
        if isinstance(n, ast.Subscript):  # whole entries
            entries = n.slice.elts if isinstance(n.slice, ast.Tuple) else [n.slice]
            safe |= {id(e) for e in entries if is_name(e, param)}
        elif isinstance(n, ast.For) and not may_fail_masked(n.body, ctx):
            safe |= _compared_with_index(n, param)
        elif isinstance(n, ast.Call):
            safe |= _cut_bounds(n, param, ctx)
    return all(id(n) in safe for n in walk(func) if is_name(n, param))


def _compared_with_index(loop: ast.For, param: str) -> set[int]:
    """``param`` in the exclusion of one index of the loop (its target, or the first of ``for
    i, x in enumerate(...)``): ``if i == param: continue`` first in its body, or ``if i !=
    param:`` (either side) as its whole body, without ``else``."""
    target = loop.target.elts[0] if isinstance(loop.target, ast.Tuple) and loop.target.elts \
        else loop.target
    first = loop.body[0]
    if not (isinstance(target, ast.Name) and isinstance(first, ast.If) and not first.orelse
            and isinstance(first.test, ast.Compare) and len(first.test.ops) == 1):
        return set()
    skip = isinstance(first.test.ops[0], ast.Eq) and len(first.body) == 1 \
        and isinstance(first.body[0], ast.Continue)
    only = isinstance(first.test.ops[0], ast.NotEq) and len(loop.body) == 1
    sides = [first.test.left, first.test.comparators[0]]
    if not (skip or only) or not any(is_name(x, target.id) for x in sides):
        return set()
    return {id(x) for x in sides if is_name(x, param)}


def _cut_bounds(call: ast.Call, param: str, ctx: PassContext) -> set[int]:
    """``param`` as the bounds of ``torch.cat((x[:param], x[param + 1:]))``."""
    pair = two_slices_joined(call, ctx, frozenset(n.id for n in walk(call)
                                                  if isinstance(n, ast.Name)))
    if pair is None or not (_slice(pair[0].slice, None, param)
                            and _slice(pair[1].slice, param, None)):
        return set()
    return {id(n) for c in walk(call) if isinstance(c, ast.Slice) for n in walk(c)
            if is_name(n, param)}


def may_fail(call: ast.Call, ctx: PassContext) -> bool:
    """``call`` is not known to be total (``OpSpec.total``) nor made safe under a mask
    (``OpSpec.sanitize``): ``tensor_branches_to_where`` would not run it on excluded iterations."""
    op = call_op(call, ctx)
    return not (op.total or op.sanitize is not None or op.shape_query)


def may_fail_masked(stmts: list[ast.AST], ctx: PassContext) -> bool:
    """A call in ``stmts`` that computes a value (not an effect such as ``append``) and may fail
    (``may_fail``), looked for in the helpers the body inlines too."""
    for call in (n for s in stmts for n in walk(s) if isinstance(n, ast.Call)):
        helper = inlinable_helper(call, ctx)
        if helper is not None:
            if may_fail_masked(helper.body, ctx):
                return True
        elif may_fail(call, ctx) and not ops.effect(resolve_call(call.func, ctx),
                                                    method_name(call, ctx), call):
            return True
    return False
