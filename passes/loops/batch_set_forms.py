"""Set forms of the batcher (``batch_loop_bodies``): a loop-varying point against a fixed set.

A point ``x`` (a loop input's rows, per item [D]) against a fixed ``w`` the check can evaluate
(``w``, ``self.w``, ``z1[i]``), reduced over the feature dim (``loop_rules.SIMILARITY_SET_FORMS``/
``DISTANCE_SET_FORMS``): ``F.cosine_similarity(x, w, dim=-1)`` -> ``normalized(x) @ normalized(w)``
for ``w`` [D], ``... @ normalized(w).t()`` for a set ``w`` [m, D]; ``((w - x) ** 2).sum(dim=-1)``
of a set -> ``torch.cdist(x, w, ...).square()`` with the original's backward (``set_distances``):
one matmul or cdist, no [n, m, D] intermediate in the forward.
Whether ``w`` is one point or a set is only known at run time: the batcher tries both
(``Scope.sets``), and what each form assumes is checked at run time.
"""
from __future__ import annotations

import ast

from .. import loop_rules as rules
from .. import ops
from ..ast_tools import unparse
from .batch_scope import Scope
from .batch_values import Rank, Val, ints, literal
from ..errors import Unsupported
from .loop_dataflow import call_op, method_name


def similarity(scope: Scope, node: ast.Call) -> tuple[ast.expr, Val]:
    """``F.cosine_similarity(x1, x2, dim, eps)``: a set form when one operand is a loop
    input's rows and the other fixed, else the same call with ``dim`` shifted."""
    params = rules.SIMILARITY_PARAMS
    args = dict(zip(params, node.args))
    for k in node.keywords:
        if k.arg in args or k.arg not in params:
            raise Unsupported(f"`{unparse(node)}`: arguments without a batched form")
        args[k.arg] = k.value
    dim = literal(args["dim"]) if "dim" in args else rules.SIMILARITY_DEFAULTS["dim"]
    eps = args.get("eps", ast.Constant(rules.SIMILARITY_DEFAULTS["eps"]))
    if len(node.args) > len(params) or not {"x1", "x2"} <= set(args) \
            or type(dim) is not int or scope.varies(eps):
        raise Unsupported(f"`{unparse(node)}`: arguments without a batched form")
    pair = _point_and_set(scope, args["x1"], args["x2"])
    if pair is not None:
        scope.set_forms = True
        if scope.sets or dim in (0, -1):
            return set_form(scope, node, rules.SIMILARITY_SET_FORMS, *pair, dim, eps)
    (a, av), (b, bv) = scope.expr(args["x1"]), scope.expr(args["x2"])
    val = scope.elementwise([av, bv], node)
    scope.require_dim(val.rank, dim, node)
    kws = [ast.keyword("dim", ast.Constant(dim + 1 if dim >= 0 else dim))] + (
        [ast.keyword("eps", eps)] if "eps" in args else [])
    return ast.copy_location(ast.Call(node.func, [a, b], kws), node), Val(True, val.rank - 1)


def _point_and_set(scope: Scope, a: ast.expr,
                   b: ast.expr) -> tuple[ast.Name, ast.expr] | None:
    """(``x``, ``w``): one operand a loop input's rows, the other evaluable before the loop."""
    for x, w in ((a, b), (b, a)):
        val = scope.vals.get(x.id) if isinstance(x, ast.Name) else None
        if val is not None and val.batched and val.source is not None \
                and val.rank is not None and scope.free(w) is not None:
            return x, w
    return None


def squared_distance(scope: Scope, node: ast.Call, op: ops.OpSpec, meth: str | None):
    """``((w - x) ** 2).sum(dim)`` (any spelling of the square, either order) of a point
    ``x`` and a fixed ``w``: (``x``, ``w``, dim); None for anything else."""
    if op.reduce != "sum":
        return None
    if meth is not None and len(node.args) <= 1:
        operand, rest = node.func.value, node.args
    elif meth is None and 1 <= len(node.args) <= 2:
        operand, rest = node.args[0], node.args[1:]
    else:
        return None
    keys = {k.arg: k.value for k in node.keywords}
    if set(keys) - {"dim"} or len(rest) + len(keys) != 1:
        return None
    diff = _squared(scope, operand)
    if not (isinstance(diff, ast.BinOp) and isinstance(diff.op, ast.Sub)):
        return None
    pair = _point_and_set(scope, diff.left, diff.right)
    return None if pair is None else (*pair, literal(rest[0] if rest else keys["dim"]))


def _squared(scope: Scope, node: ast.expr) -> ast.expr | None:
    """``e`` of ``e ** 2``, ``e.pow(2)``, ``e.square()``, ``torch.square(e)``, ..."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return node.left if ints([node.right]) == (2,) else None
    if not isinstance(node, ast.Call) or node.keywords:
        return None
    square = call_op(node, scope.ctx).square
    if square is None:
        return None
    if method_name(node, scope.ctx) is not None:
        return node.func.value if ints(node.args) == square else None
    return node.args[0] if node.args and ints(node.args[1:]) == square else None


def set_form(scope: Scope, node: ast.Call, forms: dict, x: ast.Name, w: ast.expr,
             dim: object, eps: ast.expr | None = None) -> tuple[ast.expr, Val]:
    """A point ``x`` (per item [D]) against a fixed ``w`` [D], or with ``sets`` a set of
    points [m, D], reduced over dim ``dim`` (the feature dim); ``eps``: of normalized
    operands (cosine similarity). What it assumes is checked at run time."""
    k = 2 if scope.sets else 1  # w.dim()
    if k not in forms or type(dim) is not int or dim not in (k - 1, -1):
        raise Unsupported(f"`{unparse(node)}`: arguments without a batched form")
    xv, text = scope.vals[x.id], scope.free(w)
    scope.require(xv.rank - 1, "==", node)
    scope.check(f"isinstance({text}, torch.Tensor) and {text}.dim() == {k} "
                f"and {text}.dtype == {xv.source}.dtype and {text}.dtype in "
                f"{rules.SET_FORM_DTYPES} and {text}.shape[-1] == {xv.source}.shape[-1]")
    form, rank = forms[k]
    if eps is not None:
        eps = eps if isinstance(eps, (ast.Constant, ast.Name)) else scope.named(eps)
        x, w = _normalized(scope, x, eps), _normalized(scope, scope.named(w), eps)
    return scope.sub(form, x=x, w=w), Val(True, Rank() + rank)


def _normalized(scope: Scope, x: ast.expr, eps: ast.expr) -> ast.expr:
    norm = scope.named(scope.sub(rules.NORM, x=x))
    return scope.sub(rules.NORMALIZED, x=x, n=norm, eps=eps)
