"""Stage: the loop header becomes the plan's ``Iteration``; the body is copied into the plan.

``for i in range(a, b, s)`` iterates the index ``i`` from ``a`` to ``b`` by ``s`` (so does
``np.arange(a, b, s)`` where its numpy ints only index); ``for x, y in zip(xs, ys)`` iterates
elements (a fresh index ``_i`` up to ``min(len(xs), len(ys))``); ``for k, x in enumerate(xs,
start)`` both (``k`` from ``start`` to ``start + len(xs)``)::

    for k, x in enumerate(xs):    ->    Iteration(index="k", start=0, stop=len(xs), step=1,
                                                  elements=[("x", xs)])

Bounds and iterated values are evaluated again before the loop: they must be names or shape
expressions (``is_pure``). An iterated value may also be a view of a tensor (``for src in
est.transpose(0, 1)``, ``x.permute(2, 0, 1)``: a registry op that aliases its receiver and has
no effect); the check then asks that the receiver is a tensor first, so no other object's method
of that name is called again. An iterated value that a tensor op without effects makes
(``for c in torch.unique(target)``, ``labels.unique()``) is bound to a fresh name in front of the
check, once, as Python evaluates it once; the plan iterates that name. ``for ... else`` and
targets that unpack elements are refused.
"""
from __future__ import annotations

import ast

from .. import ops
from ..ast_tools import (PassContext, clone, is_int, is_name, is_pure, is_shape_call, unparse,
                         walk)
from ..errors import Unsupported
from .loop_dataflow import call_op, method_name, resolve_call
from .plan import Iteration, LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    node = plan.node
    if node.orelse:
        raise Unsupported("`for ... else`")
    plan.iteration = _iteration(plan, ctx)
    _views_of_tensors(plan, plan.iteration.elements)
    _elements_not_called(plan, plan.iteration.elements)
    plan.body = clone(node.body)
    return plan


def _iteration(plan: LoopPlan, ctx: PassContext) -> Iteration:
    target, it = plan.node.target, plan.node.iter
    fn = resolve_call(it.func, ctx) if isinstance(it, ast.Call) else None
    if fn == "reversed" and isinstance(target, ast.Name) and len(it.args) == 1 \
            and not it.keywords and isinstance(it.args[0], ast.Call) \
            and resolve_call(it.args[0].func, ctx) == "range" and not it.args[0].keywords \
            and 1 <= len(it.args[0].args) <= 2:
        # `reversed(range(a, b))` is `range(b - 1, a - 1, -1)`: the same ints, in the same order
        args = it.args[0].args
        for a in args:
            _require_pure(a, "range bound")
        start, stop = ([ast.Constant(0)] + args)[-2:]
        return Iteration(target.id, plan.sub("b - 1", b=stop), plan.sub("a - 1", a=start),
                         ast.Constant(-1))
    if fn in ("range", "numpy.arange") and isinstance(target, ast.Name) and not it.keywords \
            and 1 <= len(it.args) <= 3:
        if fn == "numpy.arange":
            _numpy_index(plan, target.id, it)
        args = list(it.args)
        for a in args:
            _require_pure(a, "range bound")
        start, stop, step = ([ast.Constant(0)] + args + [ast.Constant(1)])[:3] \
            if len(args) == 1 else (args + [ast.Constant(1)])[:3]
        return Iteration(target.id, start, stop, step)
    if fn == "enumerate" and isinstance(target, ast.Tuple) and len(target.elts) == 2 \
            and isinstance(target.elts[0], ast.Name) and not it.keywords:
        offset = it.args[1] if len(it.args) == 2 else ast.Constant(0)
        _require_pure(offset, "enumerate start")
        inner = Iteration("", offset, offset, ast.Constant(1))
        _elements(target.elts[1], it.args[0], inner, plan, ctx)
        inner.index = target.elts[0].id
        trip = _trip(plan, inner.elements)
        inner.stop = trip if is_int(offset, 0) else plan.sub("a + n", a=offset, n=trip)
        return inner
    result = Iteration(ctx.namer.new("i"), ast.Constant(0), ast.Constant(0), ast.Constant(1),
                       index_is_user=False)
    _elements(target, it, result, plan, ctx)
    result.stop = _trip(plan, result.elements)
    return result


def _numpy_index(plan: LoopPlan, index: str, it: ast.Call) -> None:
    """``for i in np.arange(a, b)`` iterates numpy ints: the same values as ``range`` when the
    bounds are ints (the guard checks them) and the step an int literal, and the same results
    where ``i`` is only read inside indices (``x[i - 1]``, ``m[i]``). Anywhere else (arithmetic,
    after the loop) a numpy int may act differently from a Python int: refused."""
    if len(it.args) == 3 and not (isinstance(it.args[2], ast.Constant)
                                  and type(it.args[2].value) is int):
        raise Unsupported(f"`{unparse(it)}`: a step other than an int literal")
    inside = {id(n) for s in plan.node.body for sub in walk(s) if isinstance(sub, ast.Subscript)
              for n in walk(sub.slice)}
    reads = [n for s in plan.node.body for n in walk(s) if is_name(n, index)]
    if index in plan.live_after or any(id(n) not in inside for n in reads):
        raise Unsupported(f"`{index}` of `{unparse(it)}` is a numpy int read outside an index")


def _elements(target: ast.expr, iterable: ast.expr, into: Iteration, plan: LoopPlan,
              ctx: PassContext) -> None:
    fn = resolve_call(iterable.func, ctx) if isinstance(iterable, ast.Call) else None
    if fn == "zip" and isinstance(target, ast.Tuple) and not iterable.keywords \
            and len(target.elts) == len(iterable.args):
        for t, src in zip(target.elts, iterable.args):
            _elements(t, src, into, plan, ctx)
        return
    if not isinstance(target, ast.Name):
        raise Unsupported(f"loop target `{unparse(target)}` unpacks elements")
    if not is_pure(iterable, _view_or_shape) and not plan.inner and made_by_op(iterable, ctx):
        # (not in an inner loop: its prelude would be a statement of the outer loop's body)
        name = bound_before(iterable, "iterated", plan, ctx)
        if call_op(iterable, ctx).one_d and not iterable.keywords \
                and len(iterable.args) == (method_name(iterable, ctx) is None):
            plan.one_d.add(name.id)
        iterable = name
    _require_pure(iterable, "iterated value", _view_or_shape)
    into.elements.append((target.id, iterable))


def made_by_op(e: ast.expr, ctx: PassContext) -> bool:
    """``e`` is a tensor op's call without effects (``torch.unique(target)``, ``labels.unique()``)
    on operands the check may read again."""
    if not isinstance(e, ast.Call):
        return False
    op = call_op(e, ctx)
    operands = e.args + [k.value for k in e.keywords] + (
        [e.func.value] if method_name(e, ctx) else [])
    return op.aten is not None and op.effect is None and not (
        op.host or op.host_number or op.python_number) \
        and all(is_pure(a, _view_or_shape) for a in operands)


def bound_before(e: ast.expr, stem: str, plan: LoopPlan, ctx: PassContext) -> ast.Name:
    """A fresh name the prelude binds to ``e``'s value, in front of the check: Python evaluates
    an iterated value once, before the first iteration, and so does the prelude. A method's
    receiver that is not a tensor gives None (the check then fails, and the loop as written
    calls the method, once); the loop as written evaluates a tensor op's value again, with no
    effect, to the same value."""
    name = ast.copy_location(ast.Name(ctx.namer.new(stem), ast.Load()), e)
    recv = e.func.value if isinstance(e, ast.Call) and method_name(e, ctx) else None
    plan.prelude += plan.sub("n = e", n=name, e=e) if recv is None else \
        plan.sub("n = e if isinstance(r, torch.Tensor) else None", n=name, e=e, r=recv)
    return name


def _elements_not_called(plan: LoopPlan, elements: list[tuple[str, ast.expr]]) -> None:
    """Items iterated as elements are stacked as tensors: an item the body calls (``fn(x, t)``
    over ``zip(weights, preds, fns)``) is a function, and the stacking check could never hold."""
    names = {name for name, _ in elements}
    for n in (n for s in plan.node.body for n in walk(s)):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names:
            raise Unsupported(f"`{n.func.id}` is called: its items are functions, not tensors",
                              n.lineno)


def _trip(plan: LoopPlan, elements: list[tuple[str, ast.expr]]) -> ast.expr:
    lens = [plan.sub("len(x)", x=src) for _, src in elements]
    if len(lens) == 1:
        return lens[0]
    return ast.Call(ast.Name("min", ast.Load()), lens, [])


def _require_pure(expr: ast.expr, what: str, call_ok=is_shape_call) -> None:
    if not is_pure(expr, call_ok):
        raise Unsupported(f"{what} `{unparse(expr)}` is not a plain name or shape expression")


def _view_or_shape(call: ast.Call) -> bool:
    return is_shape_call(call) or _view(call)


def _view(call: ast.Call) -> bool:
    """``x.transpose(0, 1)``: a tensor method without effects whose result aliases ``x``."""
    f = call.func
    return isinstance(f, ast.Attribute) and ops.is_pure_method(f.attr) \
        and ops.by_call(None, f.attr).aliases


def _views_of_tensors(plan: LoopPlan, elements: list[tuple[str, ast.expr]]) -> None:
    """Check first that the receivers of the views in iterated values are tensors."""
    for _, src in elements:
        for n in walk(src):
            if isinstance(n, ast.Call) and _view(n):
                plan.check("isinstance(r, torch.Tensor)", r=n.func.value)
