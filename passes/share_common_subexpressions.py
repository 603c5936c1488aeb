"""Pass: an assignment that recomputes a value an earlier assignment of the same block holds reads
that name instead::

    _t = _dice_p * _dice_t                  _t = _dice_p * _dice_t
    _dice_inter = _t.sum(1)                 _dice_inter = _t.sum(1)
    _t_1 = _tversky_p * _tversky_t    ->    _t_1 = _t
    _tversky_tp = _t_1.sum(1)               _tversky_tp = _dice_inter

Values are compared after resolving plain copies (``_dice_p = _probs_row``: ``_dice_p`` reads as
``_probs_row``), so the same product in two helpers inlined with their own parameter names is
computed once. A value is shared only when recomputing it would give the same result:

- it is made of names, constants, operators, attribute and subscript loads and calls of ops of
  the registry (``ops``) without effect: nothing random, nothing in place, no ``out=``;
- both assignments are in one straight-line block, and every statement between them is such an
  assignment to a single name or a tuple of names (``v, i = d.min(0)``) of such a value: any
  other statement (a call with effects, an in-place update, a compound statement) may write into
  any tensor, so what was known is forgotten; binding a name forgets every value that reads or is
  held by it; values computing nothing (``0.0``, ``x.shape``) are not shared;
- both names are confined: everywhere in the module, each read of them is consumed by an
  operator or an op that makes a new tensor (possibly through ops returning views, such as
  ``reshape``), read for its metadata only (``OpSpec.metadata_operands``: ``x.expand_as(y)``'s
  ``y``) or copied to a confined name (``b = a``), and never augmented (``t += x``), so no
  in-place write reaches the shared tensor.

A value of an op that gives the same values transposed when its two operands are swapped
(``ops.OpSpec.swapped``: ``torch.cdist``), under elementwise ops on constants only, is also
shared across the blocks of ``if`` statements (two vectorized loops, each behind its guard),
checked at run time::

                                            _pair = None
    if <guard 1>:                           if <guard 1>:
        d = torch.cdist(p, g).square()  ->      d = torch.cdist(p, g).square()
                                                _pair = (d, p, g)
    if <guard 2>:                           if <guard 2>:
        e = torch.cdist(q, r).square()          e = _pair[0].mT if _pair is not None and
                                                    _pair[1] is r and _pair[2] is q else <as written>

when both names are confined, the value reads no other name than its two operands (and
``torch``), only ``if`` statements enclose either below their common block, and nothing that runs
between them can write into a tensor (every call one of the registry without effect, no
augmented or subscript assignment): the same objects then hold the same values.

A pair op read by another op that makes a new tensor of it, inside a value without effect, is
shared alone (helpers bound into the generated code count as the registry's ops they are
listed as, ``squared_distances``, ``min_of_all``)::

    a = _min_of_all(_squared_distances(p, g), 1)        _t = _squared_distances(p, g)
                                                        _pair = (_t, p, g)
                                                   ->   a = _min_of_all(_t, 1)
    b = _min_of_all(_squared_distances(g, p), 1)        b = _min_of_all(_transposed(_pair[0], g, p)
                                                                        if ... else
                                                                        _squared_distances(g, p), 1)

The first statement then runs after the record, so it must write nothing either. An op whose
registry entry has a ``swapped_fn`` is read through that function instead of the template
(``set_distances.transposed``: the same values, each use keeping its own backward).

A shared value takes one backward, for the sum of its uses' cotangents, where the original runs
one per use: the same gradient only where every local derivative of the value is finite or NaN
(a use whose cotangent is 0 gives ``0 * inf = NaN`` in the original, summed into ``g * inf``
when shared). So a value is shared only when each op it differentiates through has a derivative
``"constant"`` or ``"bounded"`` (``ops.OpSpec.derivative``), or is a product by a value that is
finite and takes no gradient: a name every binding of which in its scope is an integer or bool
tensor, maybe converted or viewed (``onehot = F.one_hot(y).to(p.dtype)``; ``p * onehot`` has
the derivative ``onehot``). A swapped pair op read through its ``swapped_fn`` keeps each use's
backward: it is shared when it is the shared value itself.
"""
from __future__ import annotations

import ast
import math

from . import ops
from .ast_tools import PassContext, replace, walk
from .loops.loop_dataflow import derivative, gradient_walk, operands, reads_values, resolve_call

# Nodes a shared value may contain besides calls (loads only: ``ctx`` is checked apart).
_PURE_NODES = (ast.Name, ast.Constant, ast.BinOp, ast.UnaryOp, ast.Compare, ast.IfExp, ast.Attribute,
               ast.Subscript, ast.Slice, ast.Tuple, ast.keyword, ast.Load, ast.operator, ast.unaryop,
               ast.cmpop)
# A value worth sharing computes something (``0.0`` or ``x.shape`` costs nothing to repeat).
_COMPUTES = (ast.Call, ast.BinOp, ast.Subscript)
# Parents through which a read passes its tensor on unchanged (the value itself, or a view of it).
_PASSES_ON = (ast.Subscript, ast.Attribute, ast.IfExp, ast.BoolOp, ast.Starred)


def transform(tree: ast.Module, ctx: PassContext) -> ast.Module:
    confined = _confined_names(tree, ctx)
    for scope in [tree, *(n for n in walk(tree) if isinstance(n, ast.FunctionDef))]:
        finite = _finite_without_grad(scope, ctx)
        for node in _in_scope(scope):
            for field in ("body", "orelse", "finalbody"):
                block = getattr(node, field, None)
                if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                    _share_in_block(block, confined, finite, ctx)
    _share_swapped(tree.body[0], confined, ctx)
    return tree


def _in_scope(scope: ast.AST):
    """The nodes of ``scope`` (itself first) outside the functions and classes it defines."""
    todo = [scope]
    for n in todo:
        yield n
        todo += [c for c in ast.iter_child_nodes(n)
                 if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                       ast.ClassDef))]


def _finite_without_grad(scope: ast.AST, ctx: PassContext) -> set[str]:
    """Names of ``scope`` that only ever hold finite values taking no gradient: every binding of
    them is an assignment of such a value (``_finite_value``)."""
    values: dict[str, list[ast.expr]] = {}
    assigned, other = set(), set()
    for node in _in_scope(scope):
        if _single_name_target(node) is not None:
            values.setdefault(node.targets[0].id, []).append(node.value)
            assigned.add(id(node.targets[0]))
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load) \
                and id(node) not in assigned:
            other.add(node.id)
        elif isinstance(node, ast.arg):
            other.add(node.arg)
        elif isinstance(node, ast.alias):
            other.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            other.update(node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                and node is not scope:
            other.add(node.name)
    finite: set[str] = set()
    while True:  # the least set closed under the bindings: a name read before it is known
        more = {name for name, vs in values.items() if name not in finite | other
                and all(_finite_value(v, finite, ctx) for v in vs)}
        if not more:
            return finite
        finite |= more


def _finite_value(value: ast.expr, finite: set[str], ctx: PassContext) -> bool:
    """``value`` is finite and takes no gradient: an integer or bool tensor (a comparison, an op
    whose result always is one), a finite number, a name of ``finite``, or a view, selection or
    conversion of such values."""
    if isinstance(value, ast.Name):
        return value.id in finite
    if isinstance(value, ast.Constant):
        return isinstance(value.value, (bool, int)) or isinstance(value.value, float) \
            and math.isfinite(value.value)
    if isinstance(value, ast.Compare):
        return True
    if isinstance(value, ast.Subscript):
        return _finite_value(value.value, finite, ctx)
    if isinstance(value, ast.IfExp):
        return _finite_value(value.body, finite, ctx) and _finite_value(value.orelse, finite, ctx)
    if not isinstance(value, ast.Call) or any(k.arg == "out" for k in value.keywords):
        return False
    spec = _call_spec(value, ctx)
    if spec is None:
        return False
    if spec.boolean or spec.integer == ():
        return True
    return spec.aliases and all(_finite_value(x, finite, ctx) for x in operands(value, ctx)
                                if reads_values(x, ctx))


def _backward_exact(value: ast.expr, finite: set[str], ctx: PassContext) -> bool:
    """One backward of ``value`` for the sum of several cotangents gives the sum of their
    backwards: no op it differentiates through may have an infinite local derivative."""
    return all(derivative(n, ctx) in ("constant", "bounded", "") or _scaled(n, finite, ctx)
               for n in gradient_walk(value, ctx))


def _scaled(node: ast.AST, finite: set[str], ctx: PassContext) -> bool:
    """``node`` is a product by a finite value taking no gradient (its derivative is finite)."""
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult) and (
        _finite_value(node.left, finite, ctx) or _finite_value(node.right, finite, ctx))


def _share_in_block(block: list[ast.stmt], confined: set[str], finite: set[str],
                    ctx: PassContext) -> None:
    held: dict[str, tuple[str, set[str]]] = {}  # dump of a resolved value -> (holder, names read)
    copies: dict[str, str] = {}  # name -> the name it is a plain copy of
    for stmt in block:
        target = _single_name_target(stmt)
        bound = _unpacked_names(stmt)
        if (target is None and bound is None) or not _pure(stmt.value, ctx):
            held.clear()  # it may write into any tensor, or rebind any name
            copies.clear()
            continue
        resolved = _resolved(stmt.value, copies)
        key = ast.dump(resolved)
        holder = held.get(key, (None,))[0]
        if target is not None and holder is not None and holder != target \
                and {holder, target} <= confined and _backward_exact(resolved, finite, ctx):
            stmt.value = ast.copy_location(ast.Name(holder, ast.Load()), stmt.value)
            resolved = ast.Name(holder, ast.Load())
        for name in bound or {target}:  # what the old binding of the name was is gone
            _forget(name, held, copies)
        if target is None:
            continue
        if isinstance(resolved, ast.Name):
            if resolved.id != target:
                copies[target] = resolved.id
        elif target not in _names(resolved) and any(isinstance(n, _COMPUTES) for n in walk(resolved)):
            held[key] = (target, _names(resolved))


def _forget(name: str, held: dict, copies: dict[str, str]) -> None:
    """Drop what reads or is held by ``name``, which an assignment binds anew."""
    for k, (h, reads) in list(held.items()):
        if name == h or name in reads:
            del held[k]
    for k, v in list(copies.items()):
        if name in (k, v):
            del copies[k]


def _unpacked_names(stmt: ast.stmt) -> set[str] | None:
    """The names ``a, b = <value>`` binds (a tuple or list of names), else None."""
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
            and isinstance(stmt.targets[0], (ast.Tuple, ast.List)) \
            and all(isinstance(e, ast.Name) for e in stmt.targets[0].elts):
        return {e.id for e in stmt.targets[0].elts}
    return None


def _single_name_target(stmt: ast.stmt) -> str | None:
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        return stmt.targets[0].id
    return None


def _resolved(value: ast.expr, copies: dict[str, str]) -> ast.expr:
    """``value`` with every name that is a plain copy read as the name it copies."""
    class Resolve(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.Name:
            return ast.Name(copies.get(node.id, node.id), ast.Load())
    return Resolve().visit(_copy(value))


def _copy(node: ast.expr) -> ast.expr:
    return ast.parse(ast.unparse(node), mode="eval").body


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in walk(node) if isinstance(n, ast.Name)}


def _pure(value: ast.expr, ctx: PassContext) -> bool:
    """Evaluating ``value`` again gives an equal result and has no effect."""
    for node in walk(value):
        if isinstance(node, ast.Call):
            if _call_spec(node, ctx) is None or any(k.arg == "out" for k in node.keywords):
                return False
        elif not isinstance(node, _PURE_NODES):
            return False
        elif isinstance(getattr(node, "ctx", None), (ast.Store, ast.Del)):
            return False
    return True


def _call_spec(call: ast.Call, ctx: PassContext) -> ops.OpSpec | None:
    """The registry's op of a call without effect, None for any other call."""
    name = _bound_helper(call.func, ctx) or resolve_call(call.func, ctx)
    meth = call.func.attr if name is None and isinstance(call.func, ast.Attribute) else None
    if name is None and meth is None:
        return None
    spell = name.rsplit(".", 1)[-1] if name else meth
    if ops.is_inplace(spell) or ops.effect(name, meth, call) is not None:
        return None
    if name is not None and ops.is_builtin(name):
        return ops.by_call(name, None)
    spec = ops.by_call(name, meth)
    return None if spec is ops.UNKNOWN or spec.aten is None else spec


def _bound_helper(func: ast.expr, ctx: PassContext) -> str | None:
    """The module path of a function an earlier pass bound into the generated code."""
    if isinstance(func, ast.Name) and func.id in ctx.bindings:
        fn = ctx.bindings[func.id]
        return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', func.id)}"
    return None


def _confined_names(tree: ast.AST, ctx: PassContext) -> set[str]:
    """Names each read of which is consumed into a new value (see the module docstring)."""
    parents = {id(child): node for node in walk(tree) for child in ast.iter_child_nodes(node)}
    escaped, seen = set(), set()
    copied: list[tuple[str, str]] = []  # (a, b) of ``b = a``: ``a`` escapes where ``b`` does
    for node in walk(tree):
        if isinstance(node, ast.Name):
            seen.add(node.id)
            copy = parents.get(id(node))
            if isinstance(node.ctx, ast.Load) and _single_name_target(copy) is not None \
                    and copy.value is node:
                copied.append((node.id, copy.targets[0].id))
            elif isinstance(node.ctx, ast.Load) and not _consumed(node, parents, ctx):
                escaped.add(node.id)
            elif isinstance(node.ctx, ast.Del):
                escaped.add(node.id)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            escaped.update(node.names)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            escaped.add(node.target.id)  # ``t += x`` writes into a tensor
    while any(b in escaped and a not in escaped for a, b in copied):
        escaped |= {a for a, b in copied if b in escaped}
    return seen - escaped


def _consumed(node: ast.expr, parents: dict, ctx: PassContext) -> bool:
    """What reads ``node`` makes a new value of it, past views and selections of it."""
    while True:
        parent = parents.get(id(node))
        if isinstance(parent, (ast.BinOp, ast.UnaryOp, ast.Compare)):
            return True
        if isinstance(parent, ast.Subscript) and node is parent.slice:
            return True
        if isinstance(parent, ast.IfExp) and node is parent.test:
            return True
        if isinstance(parent, ast.Attribute) and isinstance(parents.get(id(parent)), ast.Call) \
                and parents[id(parent)].func is parent:  # a method's receiver
            node, parent = parent, parents[id(parent)]
        if isinstance(parent, ast.Call):
            spec = _call_spec(parent, ctx)
            if spec is None or any(k.arg == "out" for k in parent.keywords):
                return False
            if _position(node, parent, ctx) in spec.metadata_operands:
                return True  # ``x.expand_as(y)``: only ``y``'s shape is read
            if not spec.aliases:  # a builtin (no aten op) may hand out views: only shape queries
                return spec.aten is not None or spec.shape_query
        elif not isinstance(parent, _PASSES_ON) and not isinstance(parent, ast.keyword):
            return False
        node = parent


def _position(node: ast.expr, call: ast.Call, ctx: PassContext) -> int | None:
    """Where ``node`` stands among ``call``'s positional operands (a method's receiver 0)."""
    parts = operands(call, ctx)
    parts = parts[:len(parts) - len(call.keywords)]
    return next((k for k, x in enumerate(parts) if x is node), None)


# The second of two swapped pair values (``_Site``): ``s`` the first's value as the second's
# (``OpSpec.swapped`` of ``p[0]``), ``v`` the value as written; what the first records for it.
_SWAPPED = "s if p is not None and p[1] is b and p[2] is a else v"
_RECORD = "p = (x, a, b)"


class _Site:
    """``target = value``, ``value`` a pair op (``swapped``) of two names under elementwise ops,
    or (``nested``) a pure value in which such a pair op is read by an op making a new tensor;
    ``chain``: its (block, index) from the function's body down, through ``if``s only."""

    def __init__(self, stmt: ast.Assign, chain: list, pair: ast.Call, spec: ops.OpSpec,
                 nested: bool = False):
        self.stmt, self.chain, self.pair, self.spec = stmt, chain, pair, spec
        self.target, self.nested = stmt.targets[0].id, nested

    def key(self) -> str:
        """The shared value (the pair op alone when nested) with its operands as placeholders."""
        a, b = self.pair.args[:2]
        self.pair.args[:2] = [ast.Name(n, ast.Load()) for n in ("_a", "_b")]
        try:
            return ast.dump(self.pair if self.nested else self.stmt.value) + str(self.nested)
        finally:
            self.pair.args[:2] = [a, b]

    def shareable(self, confined: set[str], ctx: PassContext) -> bool:
        """Nothing else can reach the shared tensor: the target holds it (confined), or the op
        reading it makes a new tensor; a nested first site's statement runs after the record.
        Its backward is each use's (``swapped_fn`` on the pair op alone), or exact summed."""
        shared = self.pair if self.nested else self.stmt.value
        if not (shared is self.pair if self.spec.swapped_fn else _backward_exact(shared, set(), ctx)):
            return False
        if self.nested:
            return _writes_nothing(self.stmt, ctx)
        return self.target in confined


def _share_swapped(fn: ast.FunctionDef, confined: set[str], ctx: PassContext) -> None:
    while True:  # each rewrite moves statements: the sites are found again
        sites = _sites(fn.body, [], ctx)
        match = next(((first, second) for i, first in enumerate(sites) for second in sites[i + 1:]
                      if second.key() == first.key() and first.shareable(confined, ctx)
                      and second.shareable(confined, ctx)
                      and _write_free_between(first.chain, second.chain, ctx)), None)
        if match is None:
            return
        _rewrite_swapped(*match, ctx)  # the second is no site any more


def _sites(block: list[ast.stmt], chain: list, ctx: PassContext) -> list[_Site]:
    found = []
    for i, stmt in enumerate(block):
        here = chain + [(block, i)]
        if isinstance(stmt, ast.If):
            found += _sites(stmt.body, here, ctx) + _sites(stmt.orelse, here, ctx)
        elif _single_name_target(stmt) is not None \
                and _single_name_target(stmt) not in _names(stmt.value):
            pair = _pair_call(stmt.value, ctx)
            nested = _nested_pair_call(stmt.value, ctx) if pair is None else None
            if pair is not None or nested is not None:
                found.append(_Site(stmt, here, *(pair or nested), nested=pair is None))
    return found


def _nested_pair_call(value: ast.expr, ctx: PassContext) -> tuple[ast.Call, ops.OpSpec] | None:
    """The one pair op of the pure ``value``, on two names, read by an op that makes a new
    tensor of it (``_min_of_all(_squared_distances(p, g), 1).sum(0)``)."""
    if not _pure(value, ctx):
        return None
    pairs = [(c, s) for c in walk(value) if isinstance(c, ast.Call)
             for s in [_call_spec(c, ctx)] if s is not None and s.swapped]
    if len(pairs) != 1:
        return None
    call = pairs[0][0]
    operands = call.args[:2]
    if len(operands) < 2 or not all(isinstance(a, ast.Name) for a in operands) \
            or operands[0].id == operands[1].id or call is value:
        return None
    parents = {id(child): node for node in walk(value) for child in ast.iter_child_nodes(node)}
    return pairs[0] if _consumed(call, parents, ctx) else None


def _pair_call(value: ast.expr, ctx: PassContext) -> tuple[ast.Call, ops.OpSpec] | None:
    """The one pair op of ``value`` and its spec, when it is called on two names and everything
    else is elementwise on constants (so it commutes with the transposition)."""
    calls = [n for n in walk(value) if isinstance(n, ast.Call)]
    specs = [_call_spec(c, ctx) for c in calls]
    pairs = [(c, s) for c, s in zip(calls, specs) if s is not None and s.swapped]
    if len(pairs) != 1 or not _pure(value, ctx) or any(
            s is not None and s is not pairs[0][1] and s.batched != "elementwise" for s in specs):
        return None
    call = pairs[0][0]
    operands = call.args[:2]
    if len(operands) < 2 or not all(isinstance(a, ast.Name) for a in operands) \
            or operands[0].id == operands[1].id:
        return None
    funcs = {id(c.func) for c in calls}
    for n in walk(value):
        if isinstance(n, (ast.Subscript, ast.Slice, ast.Tuple, ast.IfExp, ast.Compare)):
            return None  # selects, or is no elementwise op of the pair's values
        if isinstance(n, ast.Attribute) and id(n) not in funcs \
                and not isinstance(n.value, (ast.Name, ast.Attribute)):
            return None  # ``d.T``: an attribute of a value (``torch.nn`` is a module path)
        if isinstance(n, ast.Name) and n.id != ctx.torch_name and not any(n is a for a in operands):
            return None  # another value, or an operand outside the pair op
    return pairs[0]


def _write_free_between(first: list, second: list, ctx: PassContext) -> bool:
    """Nothing that runs after ``first``'s statement and before ``second``'s writes a tensor."""
    c = _common_level(first, second)
    (block, i), (other, j) = first[c], second[c]
    if block is not other or i >= j:
        return False  # exclusive branches, or not in this order
    between = [s for blk, k in first[c + 1:] for s in blk[k + 1:]] + block[i + 1:j]
    for (blk, k), (inner, k2) in zip(second[c:], second[c + 1:]):  # down the enclosing ``if``s
        between += [blk[k].test, *inner[:k2]]
    return all(_writes_nothing(n, ctx) for n in between)


# Helpers the loop passes bind into guards that only read what they are given
_READING_HELPERS = frozenset({"passes.loop_sums_keep_dtypes.rounds_gradients"})


def _writes_nothing(node: ast.AST, ctx: PassContext) -> bool:
    """``node`` binds names at most: no call that may have an effect, no augmented assignment
    (``t += x`` writes into a tensor), no store into a subscript or attribute, no new scope."""
    for n in walk(node):
        if isinstance(n, ast.Call) and _call_spec(n, ctx) is None \
                and _bound_helper(n.func, ctx) not in _READING_HELPERS:
            return False
        if isinstance(n, (ast.AugAssign, ast.Delete, ast.Global, ast.Nonlocal, ast.FunctionDef,
                          ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            return False
        if isinstance(n, (ast.Subscript, ast.Attribute)) and not isinstance(n.ctx, ast.Load):
            return False
    return True


def _common_level(first: list, second: list) -> int:
    """The depth of the deepest block both chains run through."""
    c = 0
    while c < min(len(first), len(second)) - 1 and first[c][0] is second[c][0] \
            and first[c][1] == second[c][1]:
        c += 1
    return c


def _rewrite_swapped(first: _Site, second: _Site, ctx: PassContext) -> None:
    name = ctx.namer.new("pair")
    loc = second.pair if second.nested else second.stmt.value
    a, b = second.pair.args[:2]
    first_value = replace("p[0]", loc=loc, p=name)
    if second.spec.swapped_fn is None:
        shared = replace(second.spec.swapped, loc=loc, x=first_value)
    else:
        shared = replace("f(x, a, b)", loc=loc, f=ctx.bind(second.spec.swapped_fn, "transposed"),
                         x=first_value, a=a, b=b)
    read = replace(_SWAPPED, loc=loc, s=shared, p=name, a=a, b=b, v=loc)
    if second.nested:
        _substitute(second.stmt, second.pair, read)
    else:
        second.stmt.value = read
    block, i = first.chain[-1]
    a, b = first.pair.args[:2]
    if first.nested:  # the pair op gets its own name, recorded before the statement reads it
        held = ctx.namer.new("t")
        read_held = ast.copy_location(ast.Name(held, ast.Load()), first.pair)
        _substitute(first.stmt, first.pair, read_held)
        block[i:i] = [ast.copy_location(ast.Assign([ast.Name(held, ast.Store())], first.pair),
                                        first.stmt),
                      *replace(_RECORD, loc=first.stmt, p=name, x=held, a=a, b=b)]
    else:
        block[i + 1:i + 1] = replace(_RECORD, loc=first.stmt, p=name, x=first.target, a=a, b=b)
    top, k = first.chain[_common_level(first.chain, second.chain)]
    top[k:k] = replace("p = None", loc=top[k], p=name)


def _substitute(root: ast.AST, old: ast.expr, new: ast.expr) -> None:
    """Put ``new`` where ``old`` (a node under ``root``) stands."""
    for node in walk(root):
        for field, value in ast.iter_fields(node):
            if value is old:
                setattr(node, field, new)
                return
            if isinstance(value, list) and any(v is old for v in value):
                value[[v is old for v in value].index(True)] = new
                return
