"""Loop rewrite: two nested ``range`` loops whose inner body does its work under a test of items
the indices read become one loop over the pairs that pass the test, selected on the device
first (``selected_pairs``); the vectorizer then vectorizes that loop as any other.

Pair-mining losses (lifted structure, contrastive pairs) walk every pair ``i < j`` and work only
on the pairs of one label. As masks, every pair's work would run: ``n * n`` bodies of which a
few count, where the loop as written pays only the test for the rest::

    for i in range(n):                      if (_pairs := run_eagerly(lambda: selected_pairs(
        t_i = target[i].item()                      range(n), lambda i: (i + 1, n),
        for j in range(i + 1, n):      ->           lambda i, j: (lambda t_i, t_j: pair_compare(
            t_j = target[j].item()                      '==', t_i, t_j))(pair_item(target, i, 'item'),
            if t_i == t_j:                              pair_item(target, j, 'item'))))) is not None:
                <work>                          'optimize_loss: loop at line 1 vectorized'
                                                _pair_i, _pair_j = _pairs
                                                for i, j in zip(_pair_i, _pair_j):  (vectorized)
                                                    t_i = target[i].item()
                                                    t_j = target[j].item()
                                                    <work>
                                            else:
                                                <the loops as written>

Taken: an outer ``for i in range(...)`` whose body is item reads then the inner loop; an inner
``for j in range(a, b)`` (``b`` alone: ``a`` is 0; step 1) whose bounds read ``i`` only in
``+``, ``-``, ``*``, whose body is item reads then ``if <test>: <work>`` (no else) or ``if
<test>: continue`` then the work. Item reads are ``name = x[k].item()``, ``int(x[k])``,
``float(x[k])`` (Python numbers) or ``x[k]`` (a 0-d tensor where the test reads it, else any
row) of a name or attribute ``x`` the loops do not bind, at ``k`` one of the two indices; the
test compares (``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``) items (bound or read in the test
itself), indices, literals and numbers the loops do not bind, joined by ``and``, ``or``,
``not``; a 0-d tensor item only with other such items and numbers (next to a host number it
would promote otherwise than the 0-d tensor does). The work reads
the indices only as whole subscript entries (``d[i]``, ``d[i, j]``: a 0-d int64 tensor indexes as
the int does), writes nothing the test or the bounds read, breaks nothing and returns nothing;
neither the indices nor the items are read after the loops. Every item read is checked at every
index the loops could visit (``selected_pairs``), so a read that would raise leaves the loops
as written, which raise it. The pairs come in the loops' order, so the work's effects do too;
the work runs at exactly the pairs the original runs it at.

The pair loop keeps the inner loop's line (its report entry); the outer loop's entry tells the
selection. When the pair loop is not vectorized, nothing changes.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

from ..ast_tools import PassContext, clone, is_name, is_pure, replace, unparse, walk
from ..outline_kept_loops import run_eagerly
from ..selected_pairs import (pair_all, pair_any, pair_compare, pair_item, pair_not, pair_number,
                              selected_pairs)
from .index_tests_to_selected_indices import index_entries_only
from .loop_dataflow import loads, resolve_call, stores_in, written_names

_COMPARE_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
                ast.GtE: ">="}
_BOUND_OPS = (ast.Add, ast.Sub, ast.Mult)
_KINDS = {"int": "int", "float": "float"}  # builtins converting an item, by name


@dataclass
class Pairs:
    check: ast.expr      # selects the pairs into ``pairs``; true when it could
    pairs: str           # the name bound to the two tensors of indices
    loop: ast.For        # the loop over the pairs, to vectorize
    why: str


@dataclass
class _Nest:
    outer: ast.For
    inner: ast.For
    items: dict[str, tuple[ast.expr, str, str]]  # name -> (tensor, index, kind)
    reads: list[ast.stmt]  # the item reads, outer then inner
    test: ast.expr
    work: list[ast.stmt]


def rewrite(node: ast.For, live_after: set[str], ctx: PassContext) -> Pairs | None:
    """``node`` as a loop over its selected pairs (see the module docstring), or None."""
    nest = _nest(node, ctx)
    if nest is None:
        return None
    i, j = node.target.id, nest.inner.target.id
    if ({i, j} | set(nest.items)) & live_after or not _work_allowed(nest, i, j) \
            or (loads(nest.test) - set(nest.items) - {i, j}) & stores_in(node.body) \
            or not _reads_inner_item(nest, j, ctx):
        return None
    test = _vectorized_test(nest.test, nest.items, {i, j}, ctx)
    if test is None:
        return None
    names = {"pairs": ctx.namer.new("pairs"), "pi": ctx.namer.new("pair_i"),
             "pj": ctx.namer.new("pair_j")}
    # a row the test does not read is only checked to read without raising
    used = loads(nest.test)
    items = [_read(item if name in used or item[2] != "tensor" else (*item[:2], "row"), ctx)
             for name, item in nest.items.items()]
    # the test reads its items by the user's names: the parameters of a function of them
    test_at = _lambda([i, j], ast.Call(_lambda(list(nest.items), test), items, []))
    select = _lambda([], replace("sel(outer, bounds, test)", sel=ctx.bind(
        selected_pairs, "selected_pairs"), outer=clone(node.iter), test=test_at,
        bounds=_lambda([i], ast.Tuple(list(_bounds(nest.inner.iter)), ast.Load()))))
    check = replace("(p := r(select)) is not None", loc=node, p=names["pairs"],
                    r=ctx.bind(run_eagerly, "run_eagerly"), select=select)
    loop = replace("for i, j in zip(pi, pj): pass", loc=nest.inner, i=i, j=j, pi=names["pi"],
                   pj=names["pj"])[0]
    loop.body = [clone(s) for s in nest.reads] + nest.work
    why = (f"its work runs only at the pairs (`{i}`, `{j}`) that pass `{unparse(nest.test)}` "
           f"(line {nest.test.lineno}), selected on the device first; the loop at line "
           f"{nest.inner.lineno} runs over those pairs")
    return Pairs(check, names["pairs"], loop, why)


def _nest(node: ast.For, ctx: PassContext) -> _Nest | None:
    """The two loops, their item reads, the inner test and the work it guards; None for any
    other shape."""
    if not (_range_loop(node, ctx) and node.body and isinstance(node.body[-1], ast.For)):
        return None
    inner = node.body[-1]
    if not _range_loop(inner, ctx) or len(inner.iter.args) > 2 \
            or node.target.id == inner.target.id:
        return None
    i, j = node.target.id, inner.target.id
    outer_reads, outer_tests, rest = _prefix(node.body[:-1], {i}, ctx)
    inner_reads, inner_tests, rest_inner = _prefix(inner.body, {i, j}, ctx)
    if rest or not rest_inner:
        return None
    last = rest_inner[0]
    if len(rest_inner) == 1 and isinstance(last, ast.If) and not last.orelse:
        inner_tests, rest_inner = inner_tests + [last.test], last.body
    tests = outer_tests + inner_tests
    items = {}
    for s in outer_reads + inner_reads:
        if s.targets[0].id in items:
            return None
        items[s.targets[0].id] = _item_read(s, {i} if s in outer_reads else {i, j}, ctx)
    bound = stores_in(node.body)
    tensors = {n for x, _, _ in items.values() for n in loads(x)}
    if not tests or tensors & bound or not _bounds_read_index(inner.iter, i, bound):
        return None
    test = tests[0] if len(tests) == 1 else ast.copy_location(ast.BoolOp(ast.And(), tests), tests[0])
    return _Nest(node, inner, items, outer_reads + inner_reads, test, rest_inner)


def _prefix(body: list[ast.stmt], indices: set[str],
            ctx: PassContext) -> tuple[list[ast.stmt], list[ast.expr], list[ast.stmt]]:
    """(the item reads, the tests ``if <t>: continue`` skips on, as ``not t``; the rest) of the
    statements leading ``body`` that are either."""
    reads, tests = [], []
    for k, s in enumerate(body):
        if _item_read(s, indices, ctx) is not None:
            reads.append(s)
        elif isinstance(s, ast.If) and not s.orelse and len(s.body) == 1 \
                and isinstance(s.body[0], ast.Continue):
            tests.append(ast.copy_location(ast.UnaryOp(ast.Not(), s.test), s.test))
        else:
            return reads, tests, body[k:]
    return reads, tests, []


def _reads_inner_item(nest: _Nest, j: str, ctx: PassContext) -> bool:
    """The test reads an item of the inner iteration (``t_j``, ``y[j]``): pairs of samples by
    their labels. A test of positions alone (``if j < length_i``) masks a ragged batch, which
    the masks of the loops' own forms cover at no gather."""
    inner = {name for name, (_, k, _) in nest.items.items() if k == j}
    return any(isinstance(n, ast.Name) and n.id in inner or _item_of(n, {j}, ctx) is not None
               for n in walk(nest.test))


def _range_loop(node: ast.For, ctx: PassContext) -> bool:
    """``for <name> in range(<pure args>)``, no else."""
    it = node.iter
    return isinstance(node.target, ast.Name) and isinstance(it, ast.Call) and not node.orelse \
        and not it.keywords and 1 <= len(it.args) <= 3 and resolve_call(it.func, ctx) == "range" \
        and all(is_pure(a) for a in it.args)


def _item_read(stmt: ast.stmt, indices: set[str], ctx: PassContext) -> tuple | None:
    """(tensor, index, kind) of ``name = <an item>`` (``_item_of``)."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)):
        return None
    return _item_of(stmt.value, indices, ctx)


def _item_of(call: ast.expr, indices: set[str], ctx: PassContext) -> tuple | None:
    """(tensor, index, kind) of ``x[k].item()`` / ``int(x[k])`` / ``float(x[k])``."""
    if isinstance(call, ast.Subscript):  # ``x[k]``, a 0-d tensor
        read, kind = call, "tensor"
    elif not isinstance(call, ast.Call) or call.keywords:
        return None
    elif isinstance(call.func, ast.Attribute) and call.func.attr == "item" and not call.args:
        read, kind = call.func.value, "item"
    elif isinstance(call.func, ast.Name) and len(call.args) == 1:
        read, kind = call.args[0], _KINDS.get(resolve_call(call.func, ctx))
    else:
        return None
    if kind is None or not isinstance(read, ast.Subscript) \
            or not isinstance(read.slice, ast.Name) or read.slice.id not in indices \
            or not all(isinstance(n, (ast.Name, ast.Attribute, ast.Load)) for n in walk(read.value)):
        return None
    return read.value, read.slice.id, kind


def _bounds_read_index(it: ast.Call, index: str, bound: set[str]) -> bool:
    """The inner range reads the outer ``index`` only in ``+``, ``-``, ``*`` (a tensor of
    indices answers as each int), and no other name the loops bind."""
    if any(isinstance(n, ast.Name) and n.id in bound - {index} for n in walk(it)):
        return False
    return all(_arithmetic_of(a, index) for a in it.args)


def _arithmetic_of(expr: ast.expr, index: str) -> bool:
    """``expr`` reads ``index`` only through ``+``, ``-``, ``*`` from its top."""
    if is_name(expr, index) or index not in loads(expr):
        return True
    return isinstance(expr, ast.BinOp) and isinstance(expr.op, _BOUND_OPS) \
        and _arithmetic_of(expr.left, index) and _arithmetic_of(expr.right, index)


def _bounds(it: ast.Call) -> tuple[ast.expr, ast.expr]:
    """(start, stop) of ``range(stop)`` / ``range(start, stop)``."""
    args = [clone(a) for a in it.args]
    return (ast.Constant(0), args[0]) if len(args) == 1 else (args[0], args[1])


def _work_allowed(nest: _Nest, i: str, j: str) -> bool:
    """The work reads the indices only as subscript entries, writes nothing the selection
    reads (the items' tensors, the bounds, the test's numbers), neither breaks nor returns."""
    work = nest.work
    if any(isinstance(n, (ast.Break, ast.Return, ast.Yield, ast.YieldFrom, ast.Global,
                          ast.Nonlocal)) for s in work for n in walk(s)):
        return False  # (a `break` in a loop of the work would do; none is kept simple)
    read = {n for x, _, _ in nest.items.values() for n in loads(x)} | loads(nest.test) \
        | loads(nest.inner.iter) | loads(nest.outer.iter) | {i, j} | set(nest.items)
    if written_names(work) & read:
        return False
    return all(_entries_only(k, work) for k in (i, j))


def _entries_only(index: str, work: list[ast.stmt]) -> bool:
    reads = any(is_name(n, index) for s in work for n in walk(s))
    return not reads or index_entries_only(index, work)


def _vectorized_test(test: ast.expr, items: dict, indices: set[str],
                     ctx: PassContext) -> ast.expr | None:
    """``test`` over tensors of items and indices: comparisons through ``pair_compare``, Python
    numbers through ``pair_number``, ``and``/``or``/``not`` through ``pair_all``/``pair_any``/
    ``pair_not``; None when it holds anything else."""
    if isinstance(test, ast.BoolOp):
        parts = [_vectorized_test(v, items, indices, ctx) for v in test.values]
        join = pair_all if isinstance(test.op, ast.And) else pair_any
        return None if None in parts else ast.Call(
            ast.Name(ctx.bind(join, join.__name__), ast.Load()), parts, [])
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        part = _vectorized_test(test.operand, items, indices, ctx)
        return None if part is None else ast.Call(
            ast.Name(ctx.bind(pair_not, "pair_not"), ast.Load()), [part], [])
    if not isinstance(test, ast.Compare) or any(type(op) not in _COMPARE_OPS for op in test.ops):
        return None
    found = [_operand(o, items, indices, ctx) for o in [test.left, *test.comparators]]
    if None in found:
        return None
    operands, kinds = [e for e, _ in found], {k for _, k in found}
    if "tensor" in kinds and kinds - {"tensor", "number"}:
        return None  # a tensor next to a host number promotes otherwise than as a column
    compare = ast.Name(ctx.bind(pair_compare, "pair_compare"), ast.Load())
    host = [ast.keyword("host", ast.Constant(False))] if "tensor" in kinds else []
    pairs = [ast.Call(compare, [ast.Constant(_COMPARE_OPS[type(op)]), a, b], host)
             for op, a, b in zip(test.ops, operands, operands[1:])]
    return pairs[0] if len(pairs) == 1 else ast.Call(
        ast.Name(ctx.bind(pair_all, "pair_all"), ast.Load()), pairs, [])


def _operand(node: ast.expr, items: dict, indices: set[str],
             ctx: PassContext) -> tuple[ast.expr, str] | None:
    """(the operand at every pair, its kind): an item or index as it is (a tensor standing for
    its Python numbers, "host", or its 0-d tensors, "tensor"); a literal or a name or attribute
    the loops do not bind through ``pair_number`` ("number")."""
    if isinstance(node, ast.Name) and node.id in indices:
        return ast.Name(node.id, ast.Load()), "host"
    if isinstance(node, ast.Name) and node.id in items:
        return ast.Name(node.id, ast.Load()), _host_or_tensor(items[node.id][2])
    item = _item_of(node, indices, ctx)  # read in the test itself
    if item is not None:
        return _read(item, ctx), _host_or_tensor(item[2])
    literal = isinstance(node, ast.Call) and len(node.args) == 1 and not node.keywords \
        and isinstance(node.args[0], ast.Constant) and resolve_call(node.func, ctx) in _KINDS
    if isinstance(node, ast.Constant) or literal or all(  # float("inf") is a number too
            isinstance(n, (ast.Name, ast.Attribute, ast.Load)) for n in walk(node)) \
            and not (loads(node) & (set(items) | indices)):
        return ast.Call(ast.Name(ctx.bind(pair_number, "pair_number"), ast.Load()),
                        [clone(node)], []), "number"
    return None


def _host_or_tensor(kind: str) -> str:
    return "tensor" if kind == "tensor" else "host"


def _read(item: tuple, ctx: PassContext) -> ast.expr:
    """``pair_item(x, k, kind)``: the item at every index of ``k``."""
    x, k, kind = item
    return replace("f(x, k, c)", f=ctx.bind(pair_item, "pair_item"), x=clone(x), k=k,
                   c=ast.Constant(kind))


def _lambda(params: list[str], body: ast.expr) -> ast.Lambda:
    args = ast.arguments([], [ast.arg(p) for p in params], None, [], [], None, [])
    return ast.Lambda(args, body)
