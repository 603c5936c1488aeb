"""Comprehensions reduced by ``sum``/``torch.stack``/``torch.cat``/``torch.tensor``, or bound to a
name only such consumers read, as loops.

The vectorizer handles them exactly like the equivalent loop (same checks, same strategies).
The comprehension's variables are renamed (they never leaked out of it)::

    loss = sum(w[i] * x[i] for i in range(n) if m[i])     _acc = 0
                                                 ->      for _k in range(n):
                                                             if m[_k]:
                                                                 _acc = _acc + w[_k] * x[_k]
                                                         loss = _acc

    out = torch.stack([f(r) for r in rows])      ->      _items = []
                                                         for _r in rows:
                                                             _items.append(f(_r))
                                                         out = torch.stack(_items)

A mean helper's call ``_list_mean([...], mean, ...)`` (``list_mean_helpers``) is such a
reducer: it takes the stacked items as they are. ``torch.stack``/``torch.cat`` along a literal
``dim`` take the same route (the vectorizer moves
the stacked dim there, ``loop_rules.LIST_CONSUMERS_ALONG_DIM``), and so does a returned list,
``return [f(r) for r in rows]`` -> ``return list(_items)`` (the rows of the stacked items).

A list bound to a name, ``xs = [f(r) for r in rows]``, is taken when ``xs`` is bound nowhere else
and every read of it is answered the same by the tensor of the stacked items (``stackable_lists``):
``len(xs)``, ``xs[k]``, ``for v in xs``, ``max(xs)``/``min(xs)``, and the consumers of
``loop_rules.BOUND_LIST_CONSUMERS`` (``sum(xs)``, ``torch.stack(xs)``, ...), which
``bound_list_consumers`` turns into ``(xs.sum(0) if isinstance(xs, torch.Tensor) else sum(xs))``:
the vectorized statement binds ``xs`` to the stacked items, the original one to the list. A
same-module mean helper's call ``list_mean_helpers`` rewrote (``_list_mean(xs, mean, ...)``)
reads ``xs`` whole too, and writes only into its first item (not counted as a modification
when every appended item is a new tensor and nothing aliases ``xs``). Nothing
reachable from ``xs`` may be modified in place (a row of the stacked tensor is not the list's own
object, so aliasing could differ). When a read takes only some items (``xs[k]``, ``max(xs)``,
iteration), the item's ops must be total (``loop_dataflow.may_be_nonfinite``): the batched
backward also runs for the items the original never differentiates, 0 * inf = NaN::

    xs = [f(r) for r in rows]        ->      _items = []
                                             for _r in rows:
                                                 _items.append(f(_r))
                                             xs = _items

Only comprehensions the statement always evaluates are taken (not inside a lambda, a
conditional expression, or a short-circuit operand), with one ``for`` clause. Every other
comprehension is kept, with the reason ``kept_reason`` gives.
"""
from __future__ import annotations

import ast

from .. import loop_rules as rules
from .. import loop_sums_keep_dtypes, ops
from ..ast_tools import (PassContext, Transformer, clone, fix_missing_locations, rename, replace,
                        root_name, unparse, walk)
from . import list_mean_helpers
from .loop_dataflow import (call_op, child_blocks, gradient_walk, makes_new_tensor,
                            may_be_nonfinite, method_name, resolve_call)

REDUCERS = frozenset({"sum", "torch.stack", "torch.cat", "torch.tensor"})
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
# Nodes whose children are all evaluated whenever the node is.
_ALWAYS_EVALUATED = (ast.Assign, ast.AugAssign, ast.Return, ast.Expr, ast.BinOp, ast.UnaryOp,
                     ast.Call, ast.keyword, ast.Attribute, ast.Subscript, ast.Tuple, ast.List,
                     ast.Starred, ast.Name, ast.Constant, ast.Slice, ast.Load, ast.Store,
                     ast.operator, ast.unaryop)


def to_loop(stmt: ast.stmt, ctx: PassContext, lists: frozenset[str] = frozenset()
            ) -> tuple[list[ast.stmt], ast.For, ast.stmt, ast.expr] | None:
    """(initialisation, loop, the statement using its result, the comprehension) for the
    first reducible comprehension of ``stmt``, or None. ``lists``: names bound to a list
    ``stackable_lists`` accepts. ``stmt`` itself is not modified."""
    if _bound_list(stmt, lists):
        stmt = clone(stmt)
        call = ast.Call(ast.Name("list", ast.Load()), [stmt.value], [])  # stands for the list
    elif _returned_list(stmt):  # `return [...]` -> `return list(_items)`: a list of the rows
        stmt = clone(stmt)
        call = stmt.value = ast.copy_location(
            ast.Call(ast.Name("list", ast.Load()), [stmt.value], []), stmt.value)
    elif _find(stmt, ctx) is None:
        return None
    else:
        stmt = clone(stmt)
        call = _find(stmt, ctx)
    comp = call.args[0]
    gen = comp.generators[0]
    renames = {n.id: ctx.namer.rename(n.id) for n in walk(gen.target) if isinstance(n, ast.Name)}
    target, elt = rename(gen.target, renames), rename(comp.elt, renames)
    conds = [rename(c, renames) for c in gen.ifs]
    sub = dict(loc=comp, torch_name=ctx.torch_name)
    if resolve_call(call.func, ctx) == "sum":
        acc = ctx.namer.new("acc")
        init = replace("a = s", a=acc, s=call.args[1] if len(call.args) > 1 else ast.Constant(0),
                       **sub)
        step = replace("a = a + e", a=acc, e=elt, **sub)
        result = ast.Name(acc, ast.Load())
    else:
        acc = ctx.namer.new("items")
        init = replace("a = []", a=acc, **sub)
        step = replace("a.append(e)", a=acc, e=elt, **sub)
        step = [ast.Expr(step)]
        call.args[0] = ast.Name(acc, ast.Load())
        result = call
    for c in reversed(conds):
        step = [ast.copy_location(ast.If(test=c, body=step, orelse=[]), comp)]
    loop = ast.copy_location(ast.For(target=target, iter=gen.iter, body=step, orelse=[]), comp)
    if stmt.value is comp:  # `xs = [...]` -> `xs = _items`
        stmt.value = ast.copy_location(ast.Name(acc, ast.Load()), comp)
    else:
        _Replace(call if result is not call else None, result).visit(stmt)
    return init, fix_missing_locations(loop), stmt, comp


def lists_reduced_next(func: ast.FunctionDef, ctx: PassContext) -> dict[ast.stmt, ast.stmt]:
    """``xs = [f(r) for r in rows]`` right before the only statement reading that list, whose
    value is a reducer ``_find`` takes with ``xs`` as its list (``y = torch.cat(xs, dim=1)``,
    ``return sum(xs)``): by the binding, that statement. ``reduced_where_read``
    puts the comprehension in the reducer, as if written there. ``xs`` is read nowhere else, or
    that statement binds it again (a name reused for the list and its reduction,
    ``loss = [...]; loss = torch.cat(loss, dim=1)``): either way no other read sees the list.
    Not in a function with ``try`` (a handler could read ``xs`` after the reducer raises), nor
    for ``global``/``nonlocal`` names."""
    if any(isinstance(n, (ast.Try, ast.Global, ast.Nonlocal)) for n in walk(func)):
        return {}
    reads: dict[str, int] = {}
    for n in walk(func):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            reads[n.id] = reads.get(n.id, 0) + 1
    found = {}
    for block in [func.body] + [b for n in walk(func) if isinstance(n, ast.stmt) and n is not func
                                for b in child_blocks(n)]:
        for stmt, reader in zip(block, block[1:]):
            name = stmt.targets[0].id if isinstance(stmt, ast.Assign) \
                and isinstance(stmt.targets[0], ast.Name) else None
            if not (_bound_list(stmt, frozenset({name}))
                    and isinstance(reader, (ast.Assign, ast.Return, ast.Expr))):
                continue
            call = reader.value
            rebinds = isinstance(reader, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in reader.targets)
            if isinstance(call, ast.Call) and call.args and isinstance(call.args[0], ast.Name) \
                    and call.args[0].id == name \
                    and sum(isinstance(n, ast.Name) and n.id == name
                            and isinstance(n.ctx, ast.Load) for n in walk(reader)) == 1 \
                    and (rebinds or reads[name] == 1) \
                    and _find(merged := reduced_where_read(stmt, reader), ctx) is merged.value:
                found[stmt] = reader
    return found


def reduced_where_read(stmt: ast.Assign, reader: ast.stmt) -> ast.stmt:
    """``reader`` (see ``lists_reduced_next``) with the list ``stmt`` binds written in place of
    its name."""
    reader = clone(reader)
    reader.value.args[0] = clone(stmt.value)
    return reader


def _bound_list(stmt: ast.stmt, lists: frozenset[str]) -> bool:
    return (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id in lists
            and isinstance(stmt.value, ast.ListComp) and len(stmt.value.generators) == 1
            and not stmt.value.generators[0].is_async)


def _returned_list(stmt: ast.stmt) -> bool:
    return (isinstance(stmt, ast.Return) and isinstance(stmt.value, ast.ListComp)
            and len(stmt.value.generators) == 1 and not stmt.value.generators[0].is_async)


def _find(node: ast.AST, ctx: PassContext) -> ast.Call | None:
    if not isinstance(node, _ALWAYS_EVALUATED):
        return None
    if isinstance(node, ast.Call) and list_mean_helpers.is_list_mean_call(node, ctx) \
            and isinstance(node.args[0], ast.ListComp) \
            and not any(isinstance(n, COMPREHENSIONS) for a in node.args[1:] + node.keywords
                        for n in walk(a)):
        return node  # a mean helper takes the list whole (its other arguments: no comprehension)
    if (isinstance(node, ast.Call) and node.args
            and isinstance(node.args[0], (ast.ListComp, ast.GeneratorExp))
            and len(node.args[0].generators) == 1 and not node.args[0].generators[0].is_async
            and resolve_call(node.func, ctx) in REDUCERS
            and (len(node.args) == 1 and not node.keywords
                 or resolve_call(node.func, ctx) == "sum" and len(node.args) == 2
                 and not node.keywords or joining_dim(node, ctx) is not None)):
        return node
    for child in ast.iter_child_nodes(node):
        found = _find(child, ctx)
        if found is not None:
            return found
    return None


def joining_dim(call: ast.Call, ctx: PassContext) -> int | None:
    """The ``dim`` along which ``torch.stack``/``torch.cat`` joins its items, positional or
    keyword (0 when not given), when it is an integer literal; else None."""
    if resolve_call(call.func, ctx) not in rules.LIST_CONSUMERS_ALONG_DIM \
            or any(k.arg != "dim" for k in call.keywords):
        return None
    dims = call.args[1:] + [k.value for k in call.keywords]
    if not dims:
        return 0
    try:
        dim = ast.literal_eval(dims[0]) if len(dims) == 1 else None
    except ValueError:  # not a literal
        return None
    return dim if type(dim) is int else None


def kept_reason(comp: ast.expr, func: ast.FunctionDef, ctx: PassContext) -> str:
    """Why a comprehension no rule took runs as written: what it is, or what reads its result
    (``func``: the function it is in)."""
    if isinstance(comp, (ast.SetComp, ast.DictComp)):
        return "set/dict comprehension: only lists and generators of tensors are stacked"
    if len(comp.generators) > 1 or comp.generators[0].is_async:
        return "comprehension with several `for` clauses (or `async for`)"
    if isinstance(comp.elt, ast.Dict):
        return "its items are dicts: only tensors are stacked"
    parents = {id(c): n for n in walk(func) for c in ast.iter_child_nodes(n)}
    parent = parents.get(id(comp))
    if isinstance(parent, ast.Call) and comp in parent.args:
        if resolve_call(parent.func, ctx) in REDUCERS:
            return (f"`{unparse(parent.func)}(...)` has other arguments than the list, a start "
                    "of `sum` and a literal `dim`, or is not always evaluated")
        return (f"its result is handed to `{unparse(parent.func)}(...)`, not reduced by "
                "sum/torch.stack/torch.cat/torch.tensor: the list itself is needed")
    if isinstance(parent, ast.BinOp):
        return f"its list is an operand of `{unparse(parent)}`: the list itself is needed"
    if isinstance(parent, ast.Assign) and len(parent.targets) == 1 \
            and isinstance(parent.targets[0], ast.Name):
        return _bound_reason(parent, func, parents, ctx)
    return ("its result is not reduced by sum/torch.stack/torch.cat/torch.tensor where it is "
            "always evaluated, nor bound to a name only len, indexing, iteration, max/min and "
            "those read")


def _bound_reason(stmt: ast.Assign, func: ast.FunctionDef, parents: dict[int, ast.AST],
                  ctx: PassContext) -> str:
    """Why the list ``stmt`` binds to a name is not stacked: the name's first other binding or
    read a tensor of the items would not answer the same way."""
    name = stmt.targets[0].id
    for n in walk(func):
        if isinstance(n, ast.arg) and n.arg == name:
            return f"bound to `{name}`, also a parameter"
        if not isinstance(n, ast.Name) or n.id != name or n is stmt.targets[0]:
            continue
        if not isinstance(n.ctx, ast.Load):
            how = "bound again"
        elif not _same_on_stacked(n, parents[id(n)], ctx):
            how = f"read by `{unparse(parents[id(n)])}`"
        else:
            continue
        return (f"bound to `{name}`, which is {how} (line {n.lineno}): only len, indexing, "
                "iteration, max/min and sum/torch.stack/torch.cat/torch.tensor read a tensor of "
                "its items as they read the list")
    op = may_be_nonfinite(stmt.value.elt, ctx)
    if op is not None and _reads_some_items(func, name, parents, ctx):
        return f"bound to `{name}`, which " + rules.READ_IN_PART.format(op=unparse(op))
    return f"bound to `{name}`, whose items may be modified in place"


# ---------------------------------------------------------------------------------------------
# Lists bound to a name


def stackable_lists(func: ast.FunctionDef, ctx: PassContext) -> frozenset[str]:
    """Names ``xs`` of ``xs = [...]`` statements whose reads a tensor of the stacked items
    answers the same way (see the module docstring)."""
    parents = {id(c): n for n in walk(func) for c in ast.iter_child_nodes(n)}
    bound: dict[str, int] = {}
    for n in walk(func):
        if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
            bound[n.id] = bound.get(n.id, 0) + 1
        elif isinstance(n, ast.arg):
            bound[n.arg] = 2  # a parameter (of the function or a nested one): not only the list
    items = {s.targets[0].id: s.value.elt for s in walk(func) if isinstance(s, ast.stmt)
             and _bound_list(s, frozenset(bound)) and bound[s.targets[0].id] == 1}
    return frozenset(name for name in items
                     if all(_same_on_stacked(n, parents[id(n)], ctx) for n in walk(func)
                            if isinstance(n, ast.Name) and n.id == name
                            and isinstance(n.ctx, ast.Load))
                     and not _mutated_aliases(func, name, ctx)
                     and not (may_be_nonfinite(items[name], ctx)
                              and _reads_some_items(func, name, parents, ctx)))


def lists_built_by_loops(func: ast.FunctionDef, ctx: PassContext) -> dict[ast.stmt, set[str]]:
    """For every ``for`` loop in ``func``, the lists it may build as the stacked
    items: ``lst = []`` right before it (nothing in between mentions ``lst``), and the statements
    after it, up to one rebinding ``lst``, read ``lst`` only as a tensor of its items answers
    (``torch.stack(lst)``, ``len(lst)``, ``lst[k]``, ...); nothing reachable from ``lst`` is
    modified in place. The loop is one that appends (the vectorizer checks that)::

        scores = []
        for k in range(n):                 a vectorized loop binds `scores` to the stacked items
            scores.append(f(k))
        scores = torch.stack(scores)       (scores if isinstance(scores, torch.Tensor) else ...)
    """
    parents = {id(c): n for n in walk(func) for c in ast.iter_child_nodes(n)}
    shared = {n for node in walk(func) if isinstance(node, (ast.Global, ast.Nonlocal))
              for n in node.names}
    record: dict[ast.stmt, set[str]] = {}

    def reads_ok(stmt: ast.stmt, name: str) -> bool:
        return all(_same_on_stacked(n, parents[id(n)], ctx) for n in walk(stmt)
                   if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load))

    def built(after: list[ast.stmt], name: str, top: bool) -> int | None:
        """The position of the rebinding (``len(after)``: the function's end), or None."""
        for k, stmt in enumerate(after):
            if not reads_ok(stmt, name):
                return None
            if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name
                                                    for t in stmt.targets):
                return k
            if any(isinstance(n, ast.Name) and n.id == name and not isinstance(n.ctx, ast.Load)
                   for n in walk(stmt)):
                return None  # rebound somewhere inside: what follows is unknown
        # the end of the function; the end of a block may be followed by anything
        return len(after) if top else None

    def aliased(loop: ast.For, after: list[ast.stmt], end: int, name: str) -> bool:
        """Whether what may alias the list's items is modified in place: up to its rebinding
        when that binds a value of its own (``xs = torch.cat(xs, dim=1)``: later reads of ``xs``
        are not the list) and no other name is bound from the list, else in the function."""
        region = ast.Module([loop] + after[:end + 1], [])
        if end < len(after) and _made_anew(after[end].value, ctx) and not any(
                _reads(value, {name}) and not (isinstance(target, ast.Name) and target.id == name)
                for n in walk(region) if not isinstance(n, ast.comprehension)
                for target, value in _bindings(n)):
            return _mutated_aliases(region, name, ctx)
        return _mutated_aliases(func, name, ctx)

    def block(stmts: list[ast.stmt], top: bool = False) -> None:
        empty: set[str] = set()
        for k, stmt in enumerate(stmts):
            if isinstance(stmt, ast.For):
                ends = {n: built(stmts[k + 1:], n, top) for n in empty - shared}
                record[stmt] = {n for n, end in ends.items() if end is not None
                                    and not aliased(stmt, stmts[k + 1:], end, n)}
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
                    and isinstance(stmt.targets[0], ast.Name) and isinstance(stmt.value, ast.List) \
                    and not stmt.value.elts:
                empty.add(stmt.targets[0].id)
                continue
            empty -= {n.id for n in walk(stmt) if isinstance(n, ast.Name)}
            for child in child_blocks(stmt):
                block(child)

    block(func.body, top=True)
    return record


def lists_read_in_part(loop: ast.For, func: ast.FunctionDef, ctx: PassContext,
                       around: ast.AST | None = None) -> dict[str, str]:
    """The lists ``loop`` appends items to (``xs.append(e)``) whose computation may have a NaN/inf
    derivative (``may_be_nonfinite``, through the body's assignments ``e`` reads), and that may
    be read other than whole once it ends (``_reads_some_items``): by the statements after it in
    its block, up to and including one binding the name again; when none does, anywhere else in
    ``func`` (another iteration of an enclosing loop, or a caller given the list, may read it).
    A binding that maps every item (``xs = [x.mean(1) for x in xs]``, ``_maps_every_item``)
    reads each and keeps it in the graph: the reads go on to the next binding. Each with that
    op, quoted. ``around`` holds the loop when ``func`` does not (an enclosing loop's copy)."""
    appends = [(n.func.value.id, n.args[0]) for n in walk(loop) if isinstance(n, ast.Call)
               and isinstance(n.func, ast.Attribute) and n.func.attr == "append"
               and isinstance(n.func.value, ast.Name) and len(n.args) == 1]
    block = next((b for n in walk(around or func) if isinstance(n, ast.stmt)  # not ``a if c else b``
                  for b in child_blocks(n) if any(s is loop for s in b)), [])
    after = block[next((k for k, s in enumerate(block) if s is loop), len(block)) + 1:]
    found = {}
    for name, value in appends:
        op = may_be_nonfinite(ast.Tuple(_computed_from(value, loop, ctx), ast.Load()), ctx)
        if op is None:
            continue
        rebound, maps = _rebinding(after, name, 0), []
        while rebound is not None and _maps_every_item(after[rebound], name, ctx):
            maps.append(after[rebound])  # `xs = [f(x) for x in xs]`: each item read, mapped
            rebound = _rebinding(after, name, rebound + 1)
        if rebound is None and maps:
            maps = []  # the mapped list may be read anywhere: as before, by the whole function
        reads = _added_to_dropped([s for s in after[:rebound + 1] if not any(s is m for m in maps)]
                                  if rebound is not None else func.body, name)
        parents = {id(c): n for n in walk(reads) for c in ast.iter_child_nodes(n)}
        if _reads_some_items(reads, name, parents, ctx):
            found[name] = unparse(op)
    return found


def _rebinding(stmts: list[ast.stmt], name: str, start: int) -> int | None:
    """The position of the first statement from ``start`` on binding ``name`` (``name = ...``)."""
    return next((k for k in range(start, len(stmts)) if isinstance(stmts[k], ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == name for t in stmts[k].targets)), None)


def _maps_every_item(stmt: ast.Assign, name: str, ctx: PassContext) -> bool:
    """``name = [f(x) for x in name]``: one generator, no condition, ``f(x)`` a value the
    gradient flows through from ``x`` (each item of the list is in the new one's graph), and no
    other read of the list."""
    comp = stmt.value
    if not (len(stmt.targets) == 1 and isinstance(comp, ast.ListComp)
            and len(comp.generators) == 1):
        return False
    gen = comp.generators[0]
    return not gen.ifs and not gen.is_async and isinstance(gen.iter, ast.Name) \
        and gen.iter.id == name and isinstance(gen.target, ast.Name) \
        and any(isinstance(n, ast.Name) and n.id == gen.target.id
                for n in gradient_walk(comp.elt, ctx)) \
        and not any(isinstance(n, ast.Name) and n.id == name for n in walk(comp.elt))


def _computed_from(value: ast.expr, loop: ast.For, ctx: PassContext) -> list[ast.expr]:
    """``value`` and the values the loop body assigns to the names it reads where a gradient
    flows (``gradient_walk``), transitively."""
    assigned = {}
    for n in walk(loop):
        if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and n.value is not None:
            for t in getattr(n, "targets", [getattr(n, "target", None)]):
                for m in walk(t):
                    if isinstance(m, ast.Name):
                        assigned.setdefault(m.id, []).append(n.value)
    found, todo, seen = [], [value], set()
    while todo:
        e = todo.pop()
        found.append(e)
        for m in gradient_walk(e, ctx):
            if isinstance(m, ast.Name) and m.id in assigned and m.id not in seen:
                seen.add(m.id)
                todo += assigned[m.id]
    return found


def _added_to_dropped(stmts: list[ast.stmt], name: str) -> ast.Module:
    """``stmts`` without the calls adding items to ``name`` (``name.append(e)``: ``e`` stays)."""
    class Drop(ast.NodeTransformer):
        def visit_Call(self, node: ast.Call) -> ast.AST:
            self.generic_visit(node)
            if isinstance(node.func, ast.Attribute) and node.func.attr in ("append", "extend") \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == name:
                return ast.Tuple(node.args, ast.Load())
            return node
    return Drop().visit(ast.Module([clone(s) for s in stmts], []))


def _same_on_stacked(name: ast.Name, parent: ast.AST, ctx: PassContext) -> bool:
    """A read of the list that a tensor of its stacked items answers the same way."""
    if isinstance(parent, ast.Call):
        if list_mean_helpers.is_list_mean_call(parent, ctx):
            return parent.args[0] is name and not any(_reads(a, {name.id}) for a in parent.args[1:]
                                                      + [k.value for k in parent.keywords])
        fn = resolve_call(parent.func, ctx)
        return not parent.keywords and (
            fn in rules.ITERATES_ARGUMENTS and name in parent.args
            or (fn in rules.BOUND_LIST_CONSUMERS or fn in rules.READS_ONE_LIST)
            and parent.args == [name])
    if isinstance(parent, ast.Subscript):  # one item; a slice would give a list vs a tensor
        return parent.value is name and not isinstance(parent.slice, (ast.Slice, ast.Tuple))
    return isinstance(parent, (ast.For, ast.comprehension)) and parent.iter is name


def _reads_some_items(node: ast.AST, name: str, parents: dict[int, ast.AST],
                      ctx: PassContext) -> bool:
    """Whether ``node`` reads the list ``name`` other than whole (``READS_EVERY_ITEM``), as a
    truth value (``if xs``, ``not xs``: its length) or as Python numbers, which take no gradient
    (``[x.item() for x in xs]``, the per-class values a loss logs)."""
    return any(not (isinstance(p := parents[id(n)], ast.Call)
                    and (resolve_call(p.func, ctx) in rules.READS_EVERY_ITEM
                         or list_mean_helpers.reads_every_item(p, ctx))
                    or isinstance(p, (ast.If, ast.IfExp, ast.While)) and p.test is n
                    or isinstance(p, ast.UnaryOp) and isinstance(p.op, ast.Not)
                    or isinstance(p, ast.comprehension) and _items_as_numbers(p, node, ctx))
               for n in walk(node)
               if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load))


def _items_as_numbers(gen: ast.comprehension, node: ast.AST, ctx: PassContext) -> bool:
    """``[x.item() for x in xs]``, ``(float(x) for x in xs)`` (the comprehension of ``gen`` in
    ``node``): each item only made a Python number (``OpSpec.host_number``), under no
    condition."""
    comp = next(c for c in walk(node) if gen in getattr(c, "generators", ()))
    if not (isinstance(comp, (ast.ListComp, ast.SetComp, ast.GeneratorExp))
            and comp.generators == [gen] and not gen.ifs and isinstance(gen.target, ast.Name)):
        return False
    parents = {c: n for n in walk(comp.elt) for c in ast.iter_child_nodes(n)}
    reads = [n for n in walk(comp.elt) if isinstance(n, ast.Name) and n.id == gen.target.id]

    def as_number(n: ast.Name) -> bool:
        up = parents.get(n)
        call = parents.get(up) if isinstance(up, ast.Attribute) and up.value is n else up
        return isinstance(call, ast.Call) and (call.func is up and up is not n or call.args == [n]) \
            and not call.keywords and call_op(call, ctx).host_number is not None
    return bool(reads) and all(map(as_number, reads))


def _mutated_aliases(func: ast.FunctionDef, name: str, ctx: PassContext) -> bool:
    """Whether something that may alias an item of ``name`` (names bound from expressions
    reading it, lists it is appended to) is modified in place, or passed to a function that
    might do so (anything but torch's and the builtins)."""
    tainted, grown = {name}, True
    while grown:  # fixpoint: aliases of aliases
        grown = False
        for n in walk(func):
            for target, value in _bindings(n):
                if _reads(value, tainted):
                    new = {t.id for t in walk(target) if isinstance(t, ast.Name)} - tainted
                    tainted |= new
                    grown |= bool(new)
    for n in walk(func):
        if isinstance(n, (ast.AugAssign, ast.Assign)):
            targets = n.targets if isinstance(n, ast.Assign) else [n.target]
            for t in targets:
                inplace = isinstance(n, ast.AugAssign) or not isinstance(t, ast.Name)
                if inplace and not isinstance(t, ast.Tuple) and root_name(t) in tainted:
                    return True
        if isinstance(n, ast.Call):
            method = n.func.attr if isinstance(n.func, ast.Attribute) else ""
            if method.endswith("_") and root_name(n.func.value) in tainted \
                    or any(k.arg == "out" for k in n.keywords):
                return True
            if list_mean_helpers.is_list_mean_call(n, ctx) and tainted == {name} \
                    and _appends_new_tensors(func, name, ctx):
                continue  # it writes into the first item, which nothing else sees
            fn = resolve_call(n.func, ctx)
            # builtins that never modify their arguments (I/O ones too), and torch functions
            trusted = fn is not None and (fn.startswith("torch.")
                                          or ops.is_builtin(fn, effects=(None, "io")))
            if not trusted and ops.OBJECT_METHODS.get(method) != "mutates" and any(_reads(a, tainted) for a in n.args
                                                  + [k.value for k in n.keywords]):
                return True
    return False


def _made_anew(value: ast.expr, ctx: PassContext) -> bool:
    """``value`` shares no memory with what it reads: a new tensor (``makes_new_tensor``), a view
    of one (``x.mean(1).unsqueeze(1)``), or a list of such items."""
    if isinstance(value, ast.ListComp):
        return _made_anew(value.elt, ctx)
    if isinstance(value, ast.Call) and call_op(value, ctx).aliases and method_name(value, ctx):
        return _made_anew(value.func.value, ctx)
    return makes_new_tensor(value, ctx)


def _appends_new_tensors(func: ast.FunctionDef, name: str, ctx: PassContext) -> bool:
    """Every ``name.append(e)`` in ``func`` appends a tensor with memory of its own."""
    return all(makes_new_tensor(n.args[0], ctx) for n in walk(func)
               if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
               and n.func.attr == "append" and isinstance(n.func.value, ast.Name)
               and n.func.value.id == name and len(n.args) == 1)


def _bindings(n: ast.AST) -> list[tuple[ast.expr, ast.expr]]:
    """(target, value) pairs through which ``target`` may alias what ``value`` reads."""
    if isinstance(n, ast.Assign):
        return [(t, n.value) for t in n.targets]
    if isinstance(n, ast.AugAssign) and isinstance(n.value, (ast.List, ast.Tuple, ast.Name)):
        return [(n.target, n.value)]  # lst += [x]; a number or tensor `+=` makes a new object
    if isinstance(n, (ast.For, ast.comprehension)):
        return [(n.target, n.iter)]
    if isinstance(n, ast.NamedExpr):
        return [(n.target, n.value)]
    if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) \
            and ops.OBJECT_METHODS.get(n.func.attr) == "mutates":  # lst.append(x): lst holds x
        return [(n.func.value, ast.Tuple(n.args, ast.Load()))]
    return []


def _reads(node: ast.AST, names: set[str]) -> bool:
    return any(isinstance(n, ast.Name) and n.id in names for n in walk(node))


def bound_list_consumers(node: ast.AST, names: set[str], ctx: PassContext,
                         stacked: bool = False) -> None:
    """``sum(xs)`` -> ``(xs.sum(0) if isinstance(xs, torch.Tensor) else sum(xs))`` for the
    ``names`` a vectorized statement binds to stacked items (``loop_rules.BOUND_LIST_CONSUMERS``);
    just ``xs.sum(0)`` where ``xs`` is known to be ``stacked``."""
    _Consumers(names, ctx, stacked).visit(node)


class _Consumers(Transformer):
    def __init__(self, names: set[str], ctx: PassContext, stacked: bool):
        self.names = names
        self.ctx = ctx
        self.stacked = stacked

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        template = rules.BOUND_LIST_CONSUMERS.get(resolve_call(node.func, self.ctx))
        if not (template and len(node.args) == 1 and not node.keywords
                and isinstance(node.args[0], ast.Name) and node.args[0].id in self.names):
            return node
        sub = dict(loc=node, torch_name=self.ctx.torch_name, v=node.args[0])
        # Python's `sum(xs)` adds from 0: a loop sum (``loop_sums_keep_dtypes``)
        consumer = loop_sums_keep_dtypes.mark(replace(template, **sub))
        if self.stacked:
            return consumer
        return replace("(f if isinstance(v, torch.Tensor) else c)", f=consumer, c=node, **sub)


class _Replace(Transformer):
    """Replace the reducing call (for ``sum``) by the accumulator."""

    def __init__(self, call: ast.Call | None, result: ast.expr):
        self.call = call
        self.result = result

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if node is self.call:
            return ast.copy_location(self.result, node)
        return self.generic_visit(node)
