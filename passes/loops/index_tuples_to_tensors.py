"""Stage: a loop over the index tuples ``itertools`` makes from ranges (``permutations(range(n))``,
``combinations(range(n), r)``, ``product(range(a), range(b))``) iterates the rows of the int64
tensor of those tuples, when the body uses each tuple only as a sequence of indices; a loop over
the ints an object holds (``self.idc``) iterates their int64 tensor (below).

Permutation-invariant losses (speech separation) score every assignment of estimates to
references and keep the best; the tuples are Python ints, which vmap cannot map over. Each row of
the tensor holds a tuple's ints in order, so its length, its items and the items picked by them
(``refs[t]``) are the same::

    for p in permutations(range(n)):      ->   _tuples = _index_rows(list(permutations(range(n))))
        scores.append(score(p))                    <vectorized over the rows of _tuples>
                                               else: the loop as written, over the tuples

``tabulated_maps.index_rows`` is ``torch.tensor(tuples, dtype=torch.int64)`` that also holds the
tuples, so that a map over them can tell on the host, reading no tensor, which rows an inner
loop picks (``tabulated_maps``).

Taken when every read of the loop's element is ``len(p)``, an item ``x[p[0]]`` indexing a name,
an iteration over ``p`` or ``enumerate(p)`` whose items are used only as whole indices of names
(``x[t]``), or an argument
of a function the enclosing function defines (once) whose parameter is read only so. A tuple
compared, printed, joined or used as an index itself (``x[p]`` picks one item of a tuple, rows
of a tensor) keeps the loop as written.

A tuple unpacked into names (``for a, b in combinations(range(n), r=2)``, pair losses) iterates
the tensor's columns zipped, when each name is read only as a whole entry of subscripts and the
tuples' length is known to be the names' (``r`` a literal, the ranges of ``product``; else the
original's unpacking raises)::

    for a, b in combinations(range(n), 2):  ->  _tuples = _index_rows(list(combinations(
        loss += (x[a] * x[b]).sum()                 range(n), 2))).reshape(-1, 2)
                                                <vectorized over zip(_tuples[:, 0], _tuples[:, 1])>

A loop over a sequence of ints an object holds (``for c in self.idc``, the classes a boundary
loss sums over), its element read only as a whole entry of subscripts (``probs[:, c]``: a 0-d
int64 tensor indexes as the int does), iterates the int64 tensor of them when at run time it is a
list or plain tuple of ints (not bools, which index as masks); anything else is iterated as it
is, the loop as written when that is no tensor::

    for c in self.idc:                    ->   _items = torch.tensor(self.idc) if <a list or
        loss += (p[:, c] * d[:, c]).mean()         tuple of ints> else self.idc
                                               <vectorized over the items of _items>

A loop over the Python ints of a 1-D integer tensor (``for c in torch.unique(labels).tolist()``,
``classes.tolist()``), its element read only as a whole entry of subscripts or compared by
``==``/``!=`` with a name (checked to be a tensor: a 0-d int64 tensor compares as the int does),
iterates the tensor itself, made once in front of the check as the ``tolist()`` call makes it,
when at run time it is a 1-D int64/int32 tensor (a uint8 item would index as a mask)::

    for c in torch.unique(y).tolist():    ->   _listed = torch.unique(y)
        loss += bce(p[:, c], (y == c) * 1.)     _items = _listed if <a 1-D int64/int32 tensor>
                                                   else None
                                               <vectorized over the items of _items>

A loop over a numpy array that numpy functions reading only their arguments make
(``ops.NUMPY_READING_FUNCTIONS``: ``np.delete(np.arange(n), k)``, the other views of a multi-crop
loss), its element read only as a whole entry of subscripts or in slice bounds (``output[bs *
v:bs * (v + 1)]``, which ``moving_slices_to_windows`` reads as rows of one view at ``v``),
and not after the loop, iterates the int64 tensor of its ints when at run time it is a 1-D array of signed ints
(``numpy_ints``, run eagerly: Dynamo would trace numpy as tensors and break at ``tolist``); the
ints' name is ``plan.item_ints[v]``. The array is made again in front of the loop: the same
exception, before any iteration, when a call raises. A top-level ``np.arange`` is a range
(``iteration``)::

    for v in np.delete(np.arange(n), k):  ->   _ints = run_eagerly(lambda: numpy_ints(
        ... output[bs * v:bs * (v + 1)]            np.delete(np.arange(n), k)))
                                               _items = torch.tensor(_ints) if <a list of
                                                   ints> else _ints
                                               <vectorized over the items of _items>
"""
from __future__ import annotations

import ast

from .. import ast_marks, ops
from ..ast_tools import PassContext, is_name, is_pure, is_shape_call, unparse, walk
from ..numpy_ints import numpy_ints
from ..outline_kept_loops import run_eagerly
from ..tabulated_maps import index_rows
from .index_tests_to_selected_indices import index_entries_only
from .iteration import bound_before, made_by_op
from .loop_dataflow import resolve_call
from .plan import LoopPlan
from .stack_tensor_lists import INTS, index_only

# The itertools functions whose tuples, made from ranges, hold ints only.
_INDEX_TUPLES = {"itertools.permutations", "itertools.combinations",
                 "itertools.combinations_with_replacement", "itertools.product"}


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    node, it = plan.node, plan.node.iter
    if {n.id for n in walk(node.target) if isinstance(n, ast.Name)} & plan.live_after:
        return plan  # read after the loop: a Python tuple or int there, a tensor's row here
    if isinstance(node.target, ast.Tuple):
        return _unpacked(plan, ctx)
    if not isinstance(node.target, ast.Name):
        return plan
    if _index_tuples(it, ctx) and _read_as_indices(node.target.id, node.body, plan.local_defs,
                                                   set()):
        made = ctx.namer.new("tuples")
        plan.prelude += plan.sub(f"t = {ctx.bind(index_rows, 'index_rows')}(list(it))", t=made,
                                 it=it)
    elif _held_sequence(it) and index_entries_only(node.target.id, node.body):
        made = ctx.namer.new("items")
        made_from = plan.sub(f"t = torch.tensor(x) if {INTS} else x", t=made, x=it,
                             v=ctx.namer.new("v"))
        for n in (n for n in walk(made_from[0]) if isinstance(n, ast.GeneratorExp)):
            ast_marks.put(n, ast_marks.GENERATED, True)  # not the user's: no loop to report
        ast_marks.put(made_from[0], ast_marks.HELD_SEQUENCE, unparse(it))
        plan.prelude += made_from
    elif not plan.inner and _listed_ints(it, ctx) \
            and _compared_names(node.target.id, node.body) is not None:
        made = ctx.namer.new("items")
        plan.prelude += _listed_tensor(it.func.value, made, plan, ctx)
        plan.one_d.add(made)
        for other in _compared_names(node.target.id, node.body):
            plan.check("isinstance(x, torch.Tensor)", x=ast.Name(other, ast.Load()))
    elif not plan.inner and _numpy_array(it, ctx) \
            and _entries_or_bounds_only(node.target.id, node.body):
        # an inner loop's prelude would be a statement of the outer body: planned again as not
        # inner when the outer loop is kept
        ints, made = ctx.namer.new("ints"), ctx.namer.new("items")
        plan.prelude += plan.sub(f"n = {ctx.bind(run_eagerly, 'run_eagerly')}(lambda: "
                                 f"{ctx.bind(numpy_ints, 'numpy_ints')}(it))", n=ints, it=it)
        made_from = plan.sub(f"t = torch.tensor(x) if {INTS} else x", t=made,
                             x=ast.Name(ints, ast.Load()), v=ctx.namer.new("v"))
        for n in (n for n in walk(made_from[0]) if isinstance(n, ast.GeneratorExp)):
            ast_marks.put(n, ast_marks.GENERATED, True)
        plan.prelude += made_from
        plan.item_ints[node.target.id] = ints
        plan.arrays[made] = unparse(it)
    else:
        return plan
    # the stages read the loop over the tensor; the guard's else keeps the user's loop
    rows = ast.copy_location(ast.Name(made, ast.Load()), it)
    plan.node = ast.copy_location(ast.For(node.target, rows, node.body, node.orelse), node)
    return plan


def _unpacked(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    """``for a, b in combinations(range(n), 2)``: the columns of the tuples' tensor zipped, when
    each name is read only as a whole entry of subscripts and every tuple has as many ints as
    the target names (``_tuple_length``; else the original's unpacking raises)."""
    node, it = plan.node, plan.node.iter
    names = [e.id for e in node.target.elts if isinstance(e, ast.Name)]
    if len(names) != len(node.target.elts) or len(set(names)) != len(names) \
            or not _index_tuples(it, ctx) or _tuple_length(it, ctx) != len(names) \
            or not all(index_entries_only(n, node.body) for n in names):
        return plan
    made = ctx.namer.new("tuples")
    plan.prelude += plan.sub(f"t = {ctx.bind(index_rows, 'index_rows')}(list(it)).reshape(-1, k)",
                             t=made, it=it, k=ast.Constant(len(names)))
    columns = ", ".join(f"{made}[:, {k}]" for k in range(len(names)))
    plan.node = ast.copy_location(ast.For(node.target, ast.copy_location(
        plan.sub(f"zip({columns})"), it), node.body, node.orelse), node)
    return plan


def _tuple_length(it: ast.Call, ctx: PassContext) -> int | None:
    """The ints in each tuple ``it`` makes: ``r`` of ``combinations(range(n), r)`` (a literal,
    by position or keyword), the ranges of ``product``; None when not known before it runs."""
    if resolve_call(it.func, ctx) == "itertools.product":
        return None if it.keywords else len(it.args)
    r = it.args[1] if len(it.args) == 2 else next(
        (k.value for k in it.keywords if k.arg == "r"), None) if len(it.args) == 1 else None
    return r.value if isinstance(r, ast.Constant) and type(r.value) is int else None


def _listed_ints(it: ast.expr, ctx: PassContext) -> bool:
    """``e.tolist()``, ``e`` a name, a shape expression or a tensor op's call without effects
    (``torch.unique(labels).tolist()``) on such operands."""
    if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute)
            and it.func.attr == "tolist" and not it.args and not it.keywords):
        return False
    return is_pure(it.func.value, is_shape_call) or made_by_op(it.func.value, ctx)


def _compared_names(name: str, body: list[ast.stmt]) -> set[str] | None:
    """The names ``name`` is compared with by ``==``/``!=`` (``labels == c``), when every read
    of ``name`` is such a comparison or a whole entry of a subscript (``probs[:, c]``); else
    None. A 0-d int64 tensor compares with a tensor and indexes as the int does."""
    others: set[str] = set()
    taken: set[ast.expr] = set()  # the reads, keyed by node
    for n in (n for s in body for n in walk(s)):
        if isinstance(n, ast.Subscript):
            parts = n.slice.elts if isinstance(n.slice, ast.Tuple) else [n.slice]
            taken |= {p for p in parts if is_name(p, name)}
        if isinstance(n, ast.Compare) and len(n.ops) == 1 \
                and isinstance(n.ops[0], (ast.Eq, ast.NotEq)):
            pair = [n.left, n.comparators[0]]
            for this, other in (pair, pair[::-1]):
                if is_name(this, name) and isinstance(other, ast.Name) and other.id != name:
                    taken.add(this)
                    others.add(other.id)
    reads = {n for s in body for n in walk(s) if is_name(n, name)}
    return others if reads and reads <= taken else None


def _listed_tensor(e: ast.expr, made: str, plan: LoopPlan, ctx: PassContext) -> list[ast.stmt]:
    """``e`` bound once in the prelude (``iteration.bound_before``: a method's receiver that is
    no tensor is not called there), then ``made`` that value when it is a 1-D int64/int32
    tensor (its ``tolist()`` the Python ints of its items, in order), else None (the check
    fails: the loop as written lists ``e``)."""
    value = bound_before(e, "listed", plan, ctx)
    return plan.sub("t = v if isinstance(v, torch.Tensor) and v.dim() == 1 and v.dtype "
                    "in (torch.int64, torch.int32) else None", t=made, v=value)


def _held_sequence(it: ast.expr) -> bool:
    """``it`` reads an attribute of a name (``self.idc``, ``cfg.classes``): what an object
    holds, a list of ints in the losses that iterate it."""
    return isinstance(it, ast.Attribute) and isinstance(it.value, ast.Name)


def _numpy_array(it: ast.expr, ctx: PassContext) -> bool:
    """``it`` calls numpy functions that only read their arguments, on values the loop may read
    again (not a top-level ``np.arange``: a range)."""
    def reading(call: ast.Call) -> bool:
        return resolve_call(call.func, ctx) in ops.NUMPY_READING_FUNCTIONS or is_shape_call(call)
    return isinstance(it, ast.Call) and resolve_call(it.func, ctx) in ops.NUMPY_READING_FUNCTIONS \
        and resolve_call(it.func, ctx) != "numpy.arange" and is_pure(it, reading)


def _entries_or_bounds_only(name: str, body: list[ast.stmt]) -> bool:
    """``name`` is read, and only as a whole entry of a subscript (``x[v]``) or in the bounds
    of a slice the subscript reads (``x[bs * v:bs * (v + 1)]``)."""
    taken: set[ast.expr] = set()  # the reads, keyed by node
    for n in (n for s in body for n in walk(s) if isinstance(n, ast.Subscript)):
        parts = n.slice.elts if isinstance(n.slice, ast.Tuple) else [n.slice]
        taken |= {p for p in parts if is_name(p, name)}
        if isinstance(n.ctx, ast.Load):
            taken |= {r for p in parts if isinstance(p, ast.Slice) for r in walk(p)
                      if is_name(r, name)}
    reads = {n for s in body for n in walk(s) if is_name(n, name)}
    return bool(reads) and reads <= taken


def _index_tuples(it: ast.expr, ctx: PassContext) -> bool:
    """``it`` calls an itertools tuple maker on ranges (and an int length)."""
    if not (isinstance(it, ast.Call) and resolve_call(it.func, ctx) in _INDEX_TUPLES
            and all(k.arg == "r" for k in it.keywords) and it.args):
        return False
    ranges = [a for a in it.args if isinstance(a, ast.Call) and resolve_call(a.func, ctx) == "range"]
    return it.args[:len(ranges)] == ranges and all(
        isinstance(a, (ast.Constant, ast.Name)) for a in it.args[len(ranges):])


def _read_as_indices(name: str, body: list[ast.AST], defs: dict[str, ast.FunctionDef],
                     seen: set[str]) -> bool:
    """Every read of ``name`` in ``body`` is ``len(name)``, an item at an int ``x[name[0]]`` or
    an iteration whose items only index names (``x[t]``), or an argument of a local function
    whose parameter is read only so."""
    taken: set[int] = set()
    for s in body:
        for n in walk(s):
            if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) \
                    and isinstance(n.slice, ast.Subscript) and is_name(n.slice.value, name) \
                    and isinstance(n.slice.slice, ast.Constant) \
                    and type(n.slice.slice.value) is int:  # x[p[0]]
                taken.add(id(n.slice.value))
            elif isinstance(n, ast.Call) and _taken_call(n, name, defs, seen):
                taken.add(id(next(a for a in n.args if is_name(a, name))))
            elif isinstance(n, (ast.For, ast.comprehension)) and _iterates(n, name):
                scope = n.body if isinstance(n, ast.For) else _comprehension_of(n, s)
                item = n.target.elts[1] if isinstance(n.target, ast.Tuple) else n.target
                if not (isinstance(item, ast.Name) and index_only(item.id, scope)):
                    return False
                taken.add(id(n.iter.args[0] if isinstance(n.iter, ast.Call) else n.iter))
    reads = [n for s in body for n in walk(s) if is_name(n, name)]
    return all(id(n) in taken for n in reads)


def _taken_call(call: ast.Call, name: str, defs: dict[str, ast.FunctionDef],
                seen: set[str]) -> bool:
    """``len(name)``, or ``f(..., name, ...)`` for a local ``f`` reading its parameter so."""
    if isinstance(call.func, ast.Name) and call.func.id == "len":
        return len(call.args) == 1 and is_name(call.args[0], name)
    at = [k for k, a in enumerate(call.args) if is_name(a, name)]
    fn = defs.get(call.func.id) if isinstance(call.func, ast.Name) else None
    if fn is None or len(at) != 1 or call.keywords or fn.name in seen \
            or at[0] >= len(fn.args.args) or fn.args.posonlyargs:
        return False
    param = fn.args.args[at[0]].arg
    return _read_as_indices(param, fn.body, defs, seen | {fn.name})


def _iterates(loop: ast.For | ast.comprehension, name: str) -> bool:
    """``for x in name`` or ``for k, x in enumerate(name)``."""
    it = loop.iter
    if is_name(it, name):
        return isinstance(loop.target, ast.Name)
    return (isinstance(it, ast.Call) and is_name(it.func, "enumerate") and len(it.args) == 1
            and is_name(it.args[0], name) and isinstance(loop.target, ast.Tuple)
            and len(loop.target.elts) == 2)


def _comprehension_of(gen: ast.comprehension, stmt: ast.AST) -> list[ast.expr]:
    """The expressions of the comprehension ``gen`` belongs to that may read its target."""
    comp = next(n for n in walk(stmt) if isinstance(n, (ast.ListComp, ast.SetComp, ast.GeneratorExp,
                                                        ast.DictComp)) and gen in n.generators)
    exprs = [comp.key, comp.value] if isinstance(comp, ast.DictComp) else [comp.elt]
    return exprs + [c for g in comp.generators for c in g.ifs]
