"""Calls of the batcher (``batch_loop_bodies``, whose docstring lists the batched forms): each op
is batched by the handler its ``OpSpec.batched`` names (``HANDLERS``), every loop-varying value
carrying the loop dim in front; cosine similarity and the set forms are in ``batch_set_forms``.
"""
from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass

from . import batch_set_forms as set_forms
from .. import loop_rules as rules
from .. import row_dots, row_losses, set_distances
from ..index_add_rows import index_add_rows
from .. import ast_marks, ops
from ..ast_tools import unparse
from .batch_scope import Scope, int_size, lifted_operands
from .batch_values import UNKNOWN, Rank, Val, condition, integer, literal
from ..errors import Unsupported
from .loop_dataflow import call_op, method_name


@dataclass(frozen=True)
class Call:
    """A call being batched: its op, the (batched) function or method, its operands (receiver
    first), positional and keyword arguments, each with its facts."""
    node: ast.Call
    op: ops.OpSpec
    func: ast.expr
    is_method: bool
    operands: list
    args: list
    kws: list


def call(scope: Scope, node: ast.Call) -> tuple[ast.expr, Val]:
    """The batched form of ``node`` and its facts; raises ``Unsupported``."""
    if any(isinstance(a, ast.Starred) for a in node.args) \
            or any(k.arg is None for k in node.keywords):
        raise Unsupported(f"`{unparse(node)}`: *args/**kwargs")
    op, meth = call_op(node, scope.ctx), method_name(node, scope.ctx)
    if op.batched == "similarity":
        return set_forms.similarity(scope, node)
    if op.batched == "mask_reshape":
        shaped = _mask_reshape(scope, node)
        if shaped is not None:
            return shaped
    if op.batched in ("mask_reshape", "sized_view") and meth is not None:
        shaped = _sized_view(scope, node)
        if shaped is not None:
            return shaped
    distance = set_forms.squared_distance(scope, node, op, meth)
    if distance is not None:
        scope.set_forms = True
        if scope.sets:
            fn = scope.ctx.bind(set_distances.squared_distances, "squared_distances")
            forms = {k: (form.format(fn=fn), rank)
                     for k, (form, rank) in rules.DISTANCE_SET_FORMS.items()}
            return set_forms.set_form(scope, node, forms, *distance)
    if meth is not None:
        recv, rv = scope.expr(node.func.value)
        func = ast.copy_location(ast.Attribute(recv, meth, ast.Load()), node.func)
        operands = [(recv, rv)]
        if rv.batched and op.batched == "flatten" and not node.args and not node.keywords:
            return _flatten(scope, recv, rv, node)
    else:
        func = node.func
        operands = []
    args = [scope.expr(a) for a in node.args]
    kws = [(k.arg, scope.expr(k.value)) for k in node.keywords]
    c = Call(node, op, func, meth is not None, operands + args + [v for _, v in kws], args, kws)
    kind = op.tensor_pair if op.tensor_pair and _tensor_pair(scope, c) else op.batched
    done = HANDLERS[kind](scope, c) if kind in HANDLERS else None
    if done is None:
        raise Unsupported(f"`{unparse(node.func)}(...)` has no batched form")
    return done


def _elementwise(scope: Scope, c: Call) -> tuple[ast.expr, Val]:
    c = _lifted(scope, c)
    val = scope.elementwise([v for _, v in c.operands], c.node)
    call = ast.Call(c.func, [a for a, _ in c.args], [ast.keyword(k, v) for k, (v, _) in c.kws])
    tensor = any(v.tensor for _, v in c.operands) \
        and not (c.op.may_be_number or c.op.int_or_raises)
    return ast.copy_location(call, c.node), Val(True, val.rank, _integer_of(c), tensor=tensor)


def _lifted(scope: Scope, c: Call) -> Call:
    """``c`` with its operands that broadcast as an operator's (``OpSpec.broadcasts``, two
    positional arguments of a function) lifted where their per-item ranks differ
    (``batch_scope.lifted_operands``)."""
    at, kind = c.op.broadcasts, c.op.broadcast_numbers
    if c.is_method or len(at) != 2 or max(at + (kind or 0,)) >= len(c.args):
        return c
    numbers = None if kind is None else c.args[kind][0]
    args = list(c.args)
    for k, done in zip(at, lifted_operands(scope, [args[k] for k in at], c.node, numbers)):
        args[k] = done
    return dataclasses.replace(c, args=args, operands=args + [v for _, v in c.kws])


def _tensor_pair(scope: Scope, c: Call) -> bool:
    """``torch.max(a, b)`` / ``a.max(b)`` with ``b`` a tensor (``OpSpec.tensor_pair``): a
    loop-varying ``b`` known to be a tensor in the original (the index, or a number taken from
    an item, would be a dim there), or a fixed one the check finds to be a tensor."""
    if len(c.operands) != 2 or c.kws:
        return False
    node, val = c.operands[1]
    if val.batched:
        return val.tensor
    text = scope.free(node)
    if text is None:
        return False
    scope.check(f"isinstance({text}, torch.Tensor)")
    return True


def _reduction(scope: Scope, c: Call) -> tuple[ast.expr, Val] | None:
    """``x.sum()`` over all elements, ``x.sum(d)`` and other ops with a dim."""
    if not c.is_method and not c.args:
        return None
    x, xv = c.operands[0]
    rest = c.args[1:] if not c.is_method else c.args
    if not rest and not c.kws and c.op.reduce is not None:
        return _full_reduction(scope, x, xv, c.op, c.node)
    if c.op.dim_rank is not None:
        return _dim_op(scope, c, x, xv, rest)
    return None


def _bound(names: tuple[str, ...], args: list, kws: list,
           keywords: tuple[str, ...] = ()) -> dict | None:
    """The call's arguments by parameter name: positional ones to ``names`` in order, keywords
    among ``names`` or ``keywords``; None for more positional ones, another or a repeated
    keyword (the batched form then leaves the call to vmap)."""
    given = dict(zip(names, args))
    if len(args) > len(names) or any(k in given or k not in names + keywords for k, _ in kws):
        return None
    return {**given, **dict(kws)}


def _norm(scope: Scope, c: Call) -> tuple[ast.expr, Val] | None:
    """``x.norm()``, ``torch.norm(x, p, dim, keepdim)`` with a number ``p`` (or "fro" over at most
    two dims): the vector norm torch.norm computes then, over the item dims, or ``dim`` shifted
    by one. A matrix norm (the nuclear one, "fro" over more dims), ``dtype=`` and a per-item
    norm keeping every dim have none."""
    x, xv = c.operands[0]
    given = _bound(("p", "dim", "keepdim"), c.args if c.is_method else c.args[1:], c.kws)
    if given is None:
        return None
    p, dim, keep = (literal(given[k][0]) if k in given else d
                    for k, d in (("p", "fro"), ("dim", None), ("keepdim", False)))
    dims = (dim,) if type(dim) is int else dim
    if p == "fro" and (dims is None or isinstance(dims, tuple) and len(dims) <= 2):
        p = 2  # what torch.norm passes to vector_norm for it
    if type(p) not in (int, float) or type(keep) is not bool or not xv.batched \
            or xv.rank is None or (dims is None and keep):
        return None
    if dims is None:
        return scope.sub(rules.BATCHED_ITEM_NORM, x=scope.named(x), p=ast.Constant(p)), \
            Val(True, Rank())
    if not isinstance(dims, tuple) or not dims or not all(type(d) is int for d in dims):
        return None
    for d in dims:
        scope.require_dim(xv.rank, d, c.node)
    shifted = ast.Constant(tuple(d + 1 if d >= 0 else d for d in dims))
    norm = scope.sub(rules.BATCHED_DIM_NORM, x=x, p=ast.Constant(p), d=shifted,
                     k=ast.Constant(keep))
    return norm, Val(True, xv.rank if keep else xv.rank - len(dims))


def _pairwise(scope: Scope, c: Call) -> tuple[ast.expr, Val] | None:
    """``F.pairwise_distance(a, b, p, eps, keepdim)``: the norm of ``a - b + eps`` over the last
    dim, the leading dims broadcast: the same call on the batched operands, items of rank >= 1
    (a 0-d item's last dim would be the loop dim). ``torch.dist(a, b, p)``: the norm of
    ``a - b`` over every element, a vector norm over the item dims."""
    dist = c.op.aten == "dist"
    names = ("x1", "x2", "p") if dist else ("x1", "x2", "p", "eps", "keepdim")
    given = _bound(names, ([c.operands[0]] if c.is_method else []) + c.args, c.kws)  # a.dist(b)
    if given is None or not {"x1", "x2"} <= set(given) \
            or any(v.batched for k, (_, v) in given.items() if k not in ("x1", "x2")):
        return None
    (a, av), (b, bv) = given["x1"], given["x2"]
    keep = literal(given["keepdim"][0]) if "keepdim" in given else False
    if type(keep) is not bool:
        return None
    val = scope.elementwise([av, bv], c.node)
    if dist:
        p = given["p"][0] if "p" in given else ast.Constant(2)
        diff = scope.named(scope.sub("a - b", a=a, b=b))
        return scope.sub(rules.BATCHED_ITEM_NORM, x=diff, p=p), Val(True, Rank())
    scope.require_dim(val.rank, -1, c.node)
    call = ast.Call(c.func, [a, b], [ast.keyword(k, given[k][0]) for k in names[2:] if k in given])
    return ast.copy_location(call, c.node), Val(True, val.rank if keep else val.rank - 1)


def _normalize(scope: Scope, c: Call) -> tuple[ast.expr, Val] | None:
    """``F.normalize(x, p, dim, eps)`` (``dim`` 1 unless given): the same call with ``dim``
    shifted by one, ``p`` and ``eps`` the same in every iteration."""
    given = _bound(rules.NORMALIZE_PARAMS, c.args, c.kws)
    if given is None:
        return None
    dim = literal(given["dim"][0]) if "dim" in given else rules.NORMALIZE_DIM
    (x, xv) = given.get("input", (None, Val(False)))
    if type(dim) is not int or not xv.batched or xv.rank is None \
            or any(v.batched for k, (_, v) in given.items() if k in ("p", "eps")):
        return None
    scope.require_dim(xv.rank, dim, c.node)
    kws = [ast.keyword(k, given[k][0]) for k in ("p", "eps") if k in given]
    call = ast.Call(c.func, [x], kws + [ast.keyword("dim", ast.Constant(dim + 1 if dim >= 0
                                                                        else dim))])
    return ast.copy_location(call, c.node), Val(True, xv.rank)


def _variance(scope: Scope, c: Call) -> tuple[ast.expr, Val] | None:
    """``x.var()``, ``x.std(dim, unbiased, keepdim)``, ``torch.var(x, unbiased=False)``,
    ``correction=``: over the item dims, or ``dim`` shifted by one; the options passed by
    keyword, the same in every iteration (a first positional bool is ``unbiased``)."""
    x, xv = c.operands[0]
    rest = c.args if c.is_method else c.args[1:]
    names = ("unbiased",) if rest and type(literal(rest[0][0])) is bool \
        else rules.VARIANCE_PARAMS
    given = _bound(names, rest, c.kws, rules.VARIANCE_KEYWORDS)
    if given is None:
        return None
    dim = literal(given.pop("dim")[0]) if "dim" in given else None
    keep = literal(given["keepdim"][0]) if "keepdim" in given else False
    dims = (dim,) if type(dim) is int else dim
    if type(keep) is not bool or not xv.batched or xv.rank is None \
            or any(v.batched for _, v in given.values()) or dims is None and keep:
        return None
    kws = [ast.keyword(k, v) for k, (v, _) in given.items()]
    if dims is None:
        x = scope.named(x)
        full = rules.BATCHED_ITEM_DIMS_REDUCTION.format(reduce=f"{c.op.aten}")
        items = scope.sub(full, x=x)
        for call in (n for n in ast.walk(items) if isinstance(n, ast.Call)
                     and isinstance(n.func, ast.Attribute) and n.func.attr == c.op.aten):
            call.keywords = kws
        return items, Val(True, Rank())
    if not isinstance(dims, tuple) or not dims or not all(type(d) is int for d in dims):
        return None
    for d in dims:
        scope.require_dim(xv.rank, d, c.node)
    shifted = ast.Constant(tuple(d + 1 if d >= 0 else d for d in dims))
    call = scope.sub(f"x.{c.op.aten}(d)", x=x, d=shifted)
    call.keywords = kws
    return call, Val(True, xv.rank if keep else xv.rank - len(dims))


def _one_hot(scope: Scope, c: Call) -> tuple[ast.expr, Val] | None:
    """``F.one_hot(t, n)`` of per-item class indices: the same call, a dim of ``n`` after the
    items' dims. ``n`` must be given and the same in every iteration: without it each item's
    width would be its own largest index plus one."""
    given = _bound(("input", "num_classes"), c.args, c.kws)
    if given is None:
        return None
    (t, tv), n = given.get("input", (None, Val(False))), given.get("num_classes")
    if n is None or n[1].batched or literal(n[0]) == -1 or not tv.batched or tv.rank is None:
        return None
    call = ast.Call(c.func, [t, n[0]], [])
    return ast.copy_location(call, c.node), Val(True, tv.rank + 1, ())


def _same_rank(scope: Scope, c: Call) -> tuple[ast.expr, Val] | None:
    """``a.expand_as(b)``, both loop-varying: the same call."""
    if len(c.args) != 1 or c.kws:
        return None
    vals = [v for _, v in c.operands]
    if not all(v.batched for v in vals):
        raise Unsupported(f"`{unparse(c.node)}`: an operand does not vary with the loop")
    val = scope.elementwise(vals, c.node)
    return ast.copy_location(ast.Call(c.func, [c.args[0][0]], []), c.node), Val(True, val.rank)


def _from_start(scope: Scope, c: Call) -> tuple[ast.expr, Val] | None:
    """``f(x, m, 0)`` reducing every dim of the items (``max_of_selected``), every operand
    loop-varying: ``f(x, m, 1)``."""
    *operands, start = c.args
    if c.kws or literal(start[0]) != 0:
        return None
    if not all(v.batched for _, v in operands):
        raise Unsupported(f"`{unparse(c.node)}`: an operand does not vary with the loop")
    call = ast.Call(c.func, [a for a, _ in operands] + [ast.Constant(1)], [])
    return ast.copy_location(call, c.node), Val(True, Rank())


def _dot(scope: Scope, c: Call) -> tuple[ast.expr, Val] | None:
    """``torch.dot(a, b)`` of 1-d items, or of items and a vector the same in every iteration:
    ``dot_rows(a, b)`` (``row_dots``: it raises where torch.dot would)."""
    if len(c.operands) != 2 or c.kws or not any(v.batched for _, v in c.operands):
        return None
    (a, av), (b, bv) = c.operands if c.operands[0][1].batched else c.operands[::-1]
    scope.require(av.rank - 1, "==", c.node)
    if bv.batched:
        scope.require(bv.rank - 1, "==", c.node)
    fn = scope.ctx.bind(row_dots.dot_rows, "dot_rows")
    return scope.sub(f"{fn}(a, b)", a=a, b=b), Val(True, Rank())


def _matmul(scope: Scope, c: Call) -> tuple[ast.expr, Val] | None:
    """``row @ W`` (``torch.matmul``, ``.matmul``) with ``W`` a 2-d tensor the same in every
    iteration: ``rows @ W``, items of the rows' rank. A loop-varying right operand (``v @ row``)
    has none: it would be multiplied as one matrix, not per item."""
    if len(c.operands) != 2 or c.kws:
        return None
    (a, av), (b, bv) = c.operands
    text = scope.free(b)
    if not av.batched or bv.batched or av.rank is None or text is None:
        return None
    scope.require(av.rank - 1, ">=", c.node)
    scope.check(f"isinstance({text}, torch.Tensor) and {text}.dim() == 2")
    return ast.copy_location(ast.BinOp(a, ast.MatMult(), b), c.node), Val(True, av.rank)


def _linear(scope: Scope, c: Call) -> tuple[ast.expr, Val] | None:
    """``F.linear(x, weight, bias)`` (``weight=``/``bias=`` by keyword too) with the parameters
    the same in every iteration: the same call on the batched items (``F.linear`` maps over
    every dim of ``x`` but the last), a 2-d ``weight`` keeping the items' rank; loop-varying
    parameters have none (``module_list_linears``' stacked heads: vmap)."""
    params = dict(zip(("weight", "bias"), c.args[1:])) | dict(c.kws)
    if c.is_method or not c.args or len(c.args) + len(c.kws) > 3 or "weight" not in params \
            or set(params) - {"weight", "bias"}:
        return None
    (x, xv), texts = c.args[0], {k: scope.free(v) for k, (v, _) in params.items()}
    if not xv.batched or xv.rank is None or None in texts.values() \
            or any(v.batched for _, v in params.values()):
        return None
    scope.require(xv.rank - 1, ">=", c.node)
    w, b = texts["weight"], texts.get("bias", "None")
    scope.check(f"isinstance({w}, torch.Tensor) and {w}.dim() == 2 and ({b} is None or "
                f"isinstance({b}, torch.Tensor) and {b}.dim() <= 1)")
    call = ast.Call(c.func, [a for a, _ in c.args], [ast.keyword(k, v) for k, (v, _) in c.kws])
    return ast.copy_location(call, c.node), Val(True, xv.rank)


def operator(scope: Scope, node: ast.BinOp, op: ops.OpSpec,
             operands: list[tuple[ast.expr, Val]]) -> tuple[ast.expr, Val]:
    """A Python operator whose op is no broadcast (``@``), by its op's handler."""
    c = Call(node, op, node, False, operands, operands, [])
    done = HANDLERS[op.batched](scope, c) if op.batched in HANDLERS else None
    if done is None:
        raise Unsupported(f"`{unparse(node)}` has no batched form")
    return done


def _result_type(scope: Scope, c: Call) -> tuple[ast.expr, Val] | None:
    """``torch.result_type(x, a)``: the same dtype for the batched items, the same in every
    iteration, unless a 0-d item meets a fixed tensor (0-d tensors promote more weakly than
    dimensioned ones, and the loop dim gives the item one): then the fixed ones must be numbers."""
    if c.kws:
        return None
    if any(v.batched and v.rank is None for _, v in c.operands):
        raise Unsupported(f"`{unparse(c.node)}`: per-item rank unknown")
    if not all(condition(v.rank - 1, ">=") is True for _, v in c.operands if v.batched):
        for node, v in c.operands:
            if v.batched or isinstance(node, ast.Constant):
                continue
            text = scope.free(node)
            if text is None:
                return None
            scope.check(f"not isinstance({text}, torch.Tensor)")
    call = ast.Call(c.func, [a for a, _ in c.args], [])
    return ast.copy_location(call, c.node), Val(False)


def _positions(scope: Scope, c: Call) -> tuple[ast.expr, Val] | None:
    """``torch.arange(r.shape[0], device=r.device)`` of a row ``r``: its sizes are the same in
    every iteration (``r.shape[0]`` is ``rows.shape[1]``), so the positions are one fixed 1-D
    int64 tensor, which per-item values of lower rank broadcast against (``Scope.aligned``).
    None: a size that varies, or not an int size."""
    if any(v.batched for _, v in c.operands) or not scope.positions(c.node):
        return None
    call = ast.Call(c.func, [a for a, _ in c.args], [ast.keyword(k, v) for k, (v, _) in c.kws])
    return ast.copy_location(call, c.node), Val(False, leaves=None, fixed_rank=1)


def _index_add(scope: Scope, c: Call) -> tuple[ast.expr, Val] | None:
    """``row.index_add(0, index, source)``, all three loop-varying, the index 1-D per item:
    ``index_add_rows(rows, index, source)``. None for another dim, ``alpha=`` or the function
    form."""
    if not c.is_method or len(c.args) != 3 or c.kws or literal(c.args[0][0]) != 0:
        return None
    (x, xv), (i, iv), (s, sv) = c.operands[0], c.args[1], c.args[2]
    if not (xv.batched and iv.batched and sv.batched) or iv.rank is None:
        return None
    scope.require(iv.rank - 1, "==", c.node)
    fn = scope.ctx.bind(index_add_rows, "index_add_rows")
    return scope.sub(f"{fn}(x, i, s)", x=x, i=i, s=s), Val(True, xv.rank, tensor=True)


def _pointwise_loss(scope: Scope, c: Call) -> tuple[ast.expr, Val]:
    return pointwise_loss(scope, c.node, c.args, c.kws)


def _class_loss(scope: Scope, c: Call) -> tuple[ast.expr, Val]:
    return class_loss(scope, c.node, c.args, c.kws)


def _mask_reshape(scope: Scope, node: ast.Call) -> tuple[ast.expr, Val] | None:
    """``m.reshape(h[m.shape, x.shape, ...])``, ``h`` a helper bound into the code that maps
    per-item shapes to a shape of ``x``'s rank (``MaskShape``, ``per_item_shapes``): the
    helper gets the per-item shapes, the loop dim goes in front. None: not this pattern."""
    arg = node.args[0] if len(node.args) == 1 and not node.keywords else None
    helper = arg.value if isinstance(arg, ast.Subscript) else None
    if not (isinstance(helper, ast.Name) and helper.id not in scope.vals
            and getattr(scope.ctx.bindings.get(helper.id), "per_item_shapes", False)):
        return None
    shapes = arg.slice.elts if isinstance(arg.slice, ast.Tuple) else []
    # the last ones: shapes of values broadcast against selected rows (``RowsMask``), of any
    # rank, and fixed ones as they are
    rows = len(shapes) - getattr(scope.ctx.bindings[helper.id], "operands", 0)
    if rows < 2 or not all(isinstance(s, ast.Attribute) and s.attr == "shape"
                           for s in shapes[:rows]) \
            or ast.dump(shapes[0].value) != ast.dump(node.func.value):
        raise Unsupported(f"`{unparse(node)}`: index without a batched form")
    done = [scope.expr(s.value) for s in shapes[:rows]]
    if not all(v.batched and v.rank is not None for _, v in done):
        raise Unsupported(f"`{unparse(node)}`: shapes of values that do not vary")
    (mask, mv), (_, base) = done[0], done[1]
    if getattr(scope.ctx.bindings[helper.id], "zero_d_adds_dim", True):
        scope.require(mv.rank - 1, ">=", node)  # a 0-d mask adds a dim (``x[True]``)
    for _, v in done[2:]:
        scope.require(v.rank - base.rank, "==", node)
    mask = scope.named(mask)
    per_item = ast.Tuple([scope.sub(rules.BATCHED_SHAPE, x=x) for x, _ in done]
                         + [_row_operand_shape(scope, s, node) for s in shapes[rows:]],
                         ast.Load())
    return scope.sub(rules.BATCHED_MASK_RESHAPE, m=mask, h=helper, shapes=per_item), \
        Val(True, base.rank)


def _row_operand_shape(scope: Scope, shape: ast.expr, node: ast.AST) -> ast.expr:
    """The per-item shape of a value broadcast against selected rows: ``x.shape[1:]`` of a
    batched ``x``, a fixed one's as it is."""
    if not scope.varies(shape):
        return shape
    if not (isinstance(shape, ast.Attribute) and shape.attr == "shape"):
        raise Unsupported(f"`{unparse(node)}`: index without a batched form")
    x, xv = scope.expr(shape.value)
    if not xv.batched:
        raise Unsupported(f"`{unparse(node)}`: index without a batched form")
    return scope.sub(rules.BATCHED_SHAPE, x=x)


def _flatten(scope: Scope, x: ast.expr, xv: Val, node: ast.AST):
    """``x.flatten()`` per item: rank 1."""
    if xv.rank is None:
        raise Unsupported(f"`{unparse(node)}`: per-item rank unknown")
    scope.require(xv.rank - 1, ">=", node)
    return scope.sub(rules.BATCHED_FLATTEN, x=x), Val(True, Rank() + 1)


def _sized_view(scope: Scope, node: ast.Call) -> tuple[ast.expr, Val] | None:
    """``x.view(*sizes)``, ``x.reshape(sizes)`` per item (``p.view(-1)``, ``p.view(n, -1)``),
    each size an int the same in every iteration: one view with the loop dim in front,
    ``x.view(len(x), *sizes)``, per-item rank the number of sizes. The same elements in the same
    order: the loop dim is the outermost, and the items' dims merge (view) exactly when each
    item's do. A per-item size mismatch raises there as in the loop (the loop then runs).
    None: not this pattern."""
    sizes = node.args[0].elts if len(node.args) == 1 and isinstance(
        node.args[0], (ast.Tuple, ast.List)) else node.args
    if node.keywords or not sizes or not all(_an_int(scope, s) for s in sizes):
        return None
    x, xv = scope.expr(node.func.value)
    if not xv.batched:
        return None
    x = scope.named(x)
    shaped = ast.Call(ast.Attribute(x, node.func.attr, ast.Load()),
                      [scope.sub("len(x)", x=x)] + [scope.expr(s)[0] for s in sizes], [])
    return ast.copy_location(shaped, node), Val(True, Rank() + len(sizes), xv.integer,
                                                tensor=xv.tensor)


def _item_size(scope: Scope, c: Call) -> tuple[ast.expr, Val] | None:
    """``p.size(k)``, ``k >= 0`` an int literal, ``p.size()``, ``p.numel()``, ``p.dim()`` of a
    batched ``p``: the items' (``rules.BATCHED_ITEM_METADATA``), Python ints or a torch.Size the
    same in every iteration (``k`` past the item's dims raises there; the loop then runs and
    raises as written)."""
    (x, xv), = c.operands[:1]
    k = literal(c.node.args[0]) if len(c.node.args) == 1 else None
    if not (c.is_method and xv.batched and not c.kws):
        return None
    if not c.node.args and c.node.func.attr in rules.BATCHED_ITEM_METADATA:
        return scope.sub(rules.BATCHED_ITEM_METADATA[c.node.func.attr], x=x), Val(False)
    if c.node.func.attr == "size" and type(k) is int and k >= 0:
        return scope.sub(f"x.size({k + 1})", x=x), Val(False)
    return None


def _an_int(scope: Scope, size: ast.expr) -> bool:
    """``size`` is a Python int in every iteration: a size ``int_size`` knows (an int literal,
    ``p.shape[0]``, ``p.size(1)``, ``len(p)``), or a name the check finds to be an int."""
    if int_size(size, scope.ctx):
        return True
    text = scope.free(size) if isinstance(size, ast.Name) else None
    if text is None:
        return False
    scope.check(f"type({text}) is int")
    return True


def _integer_of(c: Call) -> tuple[str, ...] | None:
    """Integer-ness through the elementwise ops that keep it (``OpSpec.integer``)."""
    keeps = c.op.integer
    if not keeps:
        return keeps
    if c.kws or len(c.operands) != max(keeps) + 1:
        return None
    return integer([c.operands[k] for k in keeps])


def _full_reduction(scope: Scope, x: ast.expr, xv: Val, op: ops.OpSpec, node: ast.AST):
    if not xv.batched:
        raise Unsupported(f"`{unparse(node)}` has no batched form")
    if op.reduce_fn:
        fn = scope.ctx.bind(op.reduce_fn, op.reduce_fn.__name__)
        return scope.sub(f"{fn}(x, 1)", x=x), Val(True, Rank(), tensor=xv.tensor)
    x = scope.named(x)
    # reshape(n, -1) is also right for per-item 0-d values (dim=() would reduce all), but
    # copies a non-contiguous x (rows moved to the front): reduce over the item dims then
    template = rules.BATCHED_ITEM_DIMS_REDUCTION if op.tuple_dims \
        else rules.BATCHED_FLAT_REDUCTION
    return scope.sub(template.format(reduce=op.reduce), x=x), Val(True, Rank(), tensor=xv.tensor)


def _dim_op(scope: Scope, c: Call, x: ast.expr, xv: Val, rest: list):
    """``x.sum(d)``, ``F.softmax(x, dim=d)``, ...: per-item dims shift by one."""
    node, func, change = c.node, c.func, c.op.dim_rank
    kws = [("dim" if k == "axis" else k, v) for k, v in c.kws]  # numpy's name torch takes too
    if not xv.batched or xv.rank is None:
        raise Unsupported(f"`{unparse(node)}` has no batched form")
    keys = dict((k, v) for k, v in kws)
    if len(keys) < len(kws) or len(rest) > 2 or set(keys) - {"dim", "keepdim"} or (rest and "dim" in keys):
        raise Unsupported(f"`{unparse(node)}`: arguments without a batched form")
    dim_node = rest[0][0] if rest else keys["dim"][0] if "dim" in keys else None
    keep = rest[1][0] if len(rest) == 2 else keys["keepdim"][0] if "keepdim" in keys else None
    dim = literal(dim_node) if dim_node is not None else UNKNOWN
    keepdim = literal(keep) if keep is not None else False
    dims = dim if isinstance(dim, tuple) else (dim,)
    if not dims or not all(type(d) is int for d in dims) or type(keepdim) is not bool \
            or (keepdim and change == 0):
        raise Unsupported(f"`{unparse(node)}`: dim must be an int literal")
    indexed = xv.rank + max(change, 0)  # dims index the input, or unsqueeze's output
    for d in dims:
        scope.require_dim(indexed, d, node)
    shifted = tuple(d + 1 if d >= 0 else d for d in dims)
    new_dim = ast.Constant(shifted if isinstance(dim, tuple) else shifted[0])
    new_rest = [(new_dim, None)] + rest[1:] if rest else []
    new_kws = [(k, (new_dim, None) if k == "dim" else v) for k, v in kws]
    call = ast.Call(func, [a for a, _ in new_rest] if c.is_method else
                    [x] + [a for a, _ in new_rest], [ast.keyword(k, v) for k, (v, _) in new_kws])
    rank = xv.rank if keepdim else xv.rank + change * len(dims)
    integer = xv.integer if c.op.integer == (0,) else None
    if ast_marks.get(node, ast_marks.LOOP_SUM):  # a Python `sum` of the item: over its dim 0
        ast_marks.put(call, ast_marks.LOOP_SUM, ast_marks.get(node, ast_marks.LOOP_SUM))
    return ast.copy_location(call, node), Val(True, rank, integer, tensor=xv.tensor)


def pointwise_loss(scope: Scope, node: ast.Call, args: list, kws: list, summed: bool = False,
                   mean: bool = False):
    """``F.mse_loss(a, b)``: elementwise losses, averaged (or summed) per item; ``summed``:
    their sum over the loop (``mean``: their mean), one call."""
    keys, checked = _loss_options(scope, node, kws, unreduced=True)
    reduction = keys.pop("reduction", ast.Constant("mean"))
    if len(args) != 2 or not all(isinstance(x, ast.Constant) or k in checked
                                 for k, x in keys.items()):
        raise Unsupported(f"`{unparse(node)}`: arguments without a batched form")
    (a, av), (b, bv) = args
    if not (av.batched or bv.batched):
        raise Unsupported(f"`{unparse(node)}`: an operand does not vary with the loop")
    if not (av.batched and bv.batched):
        (a, av), (b, bv) = _fixed_operand_expanded(scope, node, (a, av), (b, bv))
    val = scope.elementwise([av, bv], node)
    kw = [ast.keyword(k, x) for k, x in keys.items()]
    if literal(reduction) == "none":  # elementwise (a masked prefix's losses, reduced after it)
        if summed:
            raise Unsupported(f"`{unparse(node)}`: unreduced losses summed over the loop")
        call = ast.Call(node.func, [a, b], kw + [ast.keyword("reduction", reduction)])
        return ast.copy_location(call, node), Val(True, val.rank, tensor=True)
    if summed:  # one call with the per-item reduction over all items
        table = rules.AVERAGED_POINTWISE_LOSSES if mean else rules.SUMMED_POINTWISE_LOSSES
        call = ast.Call(node.func, [a, b], kw + [ast.keyword("reduction", reduction)])
        return scope.sub(_by_reduction(table, reduction), n=scope.trips, l=call, r=reduction), \
            Val(True, Rank())
    loss = scope.named(ast.Call(node.func, [a, b], kw + [
        ast.keyword("reduction", ast.Constant("none"))]))
    per_item = {r: f"l.reshape(len(l), -1).{r}(1)" for r in ("mean", "sum")}
    return scope.sub(_by_reduction(per_item, reduction), l=loss, r=reduction), \
        Val(True, Rank(), tensor=True)


def _loss_options(scope: Scope, node: ast.Call, kws: list, passed: tuple[str, ...] = (),
                  unreduced: bool = False) -> tuple[dict, set[str]]:
    """A loss call's options by keyword, and those checked: a literal is as written, a value
    the check can read before the loop (``scope.free``: ``criterion.reduction``, ``PAD``) joins
    the runtime check its option has in ``rules.CHECKED_LOSS_OPTIONS`` (unless the batched form
    takes it as it is: ``passed``, counted as checked); any other refuses. A literal reduction
    is ``'mean'`` or ``'sum'``, or with ``unreduced`` ``'none'``."""
    options, checked = {}, set()
    for k, (x, _) in kws:
        if literal(x) is UNKNOWN:
            if k not in rules.CHECKED_LOSS_OPTIONS or scope.free(x) is None:
                raise Unsupported(f"`{unparse(node)}`: arguments without a batched form")
            if k not in passed:
                scope.checks.add(scope.sub(rules.CHECKED_LOSS_OPTIONS[k], x=x))
            checked.add(k)
        options[k] = x
    reduction = options.get("reduction")
    if reduction is not None and "reduction" not in checked \
            and literal(reduction) not in ("mean", "sum") + ("none",) * unreduced:
        raise Unsupported(f"`{unparse(node)}`: arguments without a batched form")
    return options, checked


def _by_reduction(forms: dict[str, str], reduction: ast.expr) -> str:
    """The template of ``forms`` (by per-item reduction) for ``reduction``: a literal's, or
    both, picked at run time by ``r``."""
    if isinstance(reduction, ast.Constant):
        return forms[reduction.value]
    return rules.CHECKED_REDUCTION.format(**forms)


def _fixed_operand_expanded(scope: Scope, node: ast.Call, *operands: tuple) -> list:
    """A fixed tensor operand of the items' rank, expanded over the loop dim: the loss's
    backward then runs per item, as the loop's does (under vmap, or broadcast, it would not:
    a NaN where the original's gradient is finite). Its shape stays its own, so a size the
    original refuses is refused alike."""
    (batched, bv), = [(x, v) for x, v in operands if v.batched]
    fixed = [scope.free(x) for x, v in operands if not v.batched][0]
    cond = condition(bv.rank - Rank.of(f"{fixed}.dim()"), "==") if fixed is not None else False
    if cond is False:
        raise Unsupported(f"`{unparse(node)}`: an operand does not vary with the loop")
    scope.check(f"isinstance({fixed}, torch.Tensor)" + ("" if cond is True else f" and {cond}"))
    rows = scope.named(batched)
    return [(x, v) if v.batched else
            (scope.sub("f.expand(b.shape[:1] + f.shape)", f=x, b=rows), Val(True, bv.rank))
            for x, v in ((rows if v.batched else x, v) for x, v in operands)]


def class_loss(scope: Scope, node: ast.Call, args: list, kws: list, summed: bool = False):
    """``F.cross_entropy(x, t)`` per item, x [N, C] and t [N] class indices, or x [C] and t a
    0-d index; ``summed``: the sum over the loop (one call when the per-item reduction is a sum);
    ``reduction='none'``: the rows' losses, per item in t's shape (not summed over the loop).
    Label smoothing checked to be off (``_loss_options``) is left out; a class weight the loop
    does not change is passed, each item's mean divided by its own rows' weights
    (``row_losses.loss_of_items``)."""
    keys, checked = _loss_options(scope, node, kws, passed=("weight",), unreduced=not summed)
    reduction = keys.pop("reduction", ast.Constant("mean"))
    ignore = keys.pop("ignore_index", ast.Constant(-100))
    weight = {"w": keys.pop("weight")} if "weight" in keys else {}
    weighted = ", weight=w" if weight else ''
    if len(args) != 2 or type(literal(ignore)) is not int and "ignore_index" not in checked \
            or set(keys) - checked:
        raise Unsupported(f"`{unparse(node)}`: arguments without a batched form")
    (x, xv), (t, tv) = args
    if xv.batched and not tv.batched:
        x = scope.named(x)
        t, tv = _fixed_targets(scope, node, x, t)
    if not (xv.batched and tv.batched) or tv.integer is None:
        raise Unsupported(f"`{unparse(node)}`: targets not known to be class indices")
    _require_item_ranks(scope, node, xv.rank, tv.rank)
    for cond in tv.integer:
        scope.check(cond)
    if literal(reduction) in ("sum", "none") and (summed or literal(reduction) == "none"):
        # one call on all rows: their sum over the loop, or each row's loss in t's shape
        rows = scope.ctx.bind(row_losses.loss_of_rows, "loss_of_rows")
        return scope.sub(f"{rows}(F, x, t, r, ignore_index=i{weighted})", F=node.func, x=x,
                         t=t, r=reduction, i=ignore, **weight), \
            Val(True, tv.rank if literal(reduction) == "none" else Rank())
    items = scope.ctx.bind(row_losses.loss_of_items, "loss_of_items")
    per_item = scope.sub(f"{items}(F, x, t, r, ignore_index=i{weighted})", F=node.func, x=x,
                         t=t, r=reduction, i=ignore, **weight)
    return (scope.sub("e.sum(0)", e=per_item) if summed else per_item), Val(True, Rank())


def _require_item_ranks(scope: Scope, node: ast.Call, x: Rank, t: Rank) -> None:
    """Items of rows x [N, C] with targets [N], or of one row x [C] with a 0-d target (a row of
    the batch): x one dim above t, t at most 1-D."""
    scope.require(x - t - 1, "==", node)
    scope.require(Rank(const=1) - t, ">=", node)


def _fixed_targets(scope: Scope, node: ast.Call, rows: ast.Name, t: ast.expr) -> tuple:
    """The same class indices ``t`` for every item (several heads or parts scored against one
    label vector): expanded over the loop dim, checked to be an index tensor of rank 1 (a
    probability target, or any other rank, runs the loop's vmap form)."""
    fixed = scope.free(t)
    if fixed is None:
        raise Unsupported(f"`{unparse(node)}`: targets not known to be class indices")
    scope.check(f"isinstance({fixed}, torch.Tensor) and {fixed}.dim() == 1")
    return (scope.sub("f.expand(b.shape[:1] + f.shape)", f=t, b=rows),
            Val(True, Rank() + 1, (f"{fixed}.dtype in {rules.INDEX_DTYPES}",)))


# ``OpSpec.batched`` -> its handler: (expression, facts), or None when the call's arguments have
# no batched form. "similarity", "mask_reshape", "sized_view" and "flatten" are matched before
# the arguments are batched (``call``).
HANDLERS = {"elementwise": _elementwise, "reduction": _reduction, "same_rank": _same_rank,
            "dot": _dot, "matmul": _matmul, "result_type": _result_type, "pointwise_loss": _pointwise_loss,
            "class_loss": _class_loss, "from_start": _from_start, "positions": _positions,
            "index_add": _index_add, "linear": _linear, "norm": _norm,
            "pairwise": _pairwise, "normalize": _normalize,
            "variance": _variance, "one_hot": _one_hot, "item_size": _item_size}
