"""Stage: the body becomes a function of one iteration, mapped over all of them with vmap.

Its parameters are the index (when read, or when nothing else is iterated), the iterated
elements and the row slices, each bound to all iterations' values (``plan.params`` keeps them
for the batched form, loop axis in front)::

    for i in range(len(pred)):          def _body(_pred_row):
        loss += pred[i].sum()      ->       _loss_part = 0
                                            _loss_part = _loss_part + _pred_row.sum()
                                            return (torch.as_tensor(_loss_part),)
                                        _outs = torch.vmap(_body, in_dims=(0,))(
                                            pred if len(pred) == pred.shape[0] else pred[0:len(pred):1])
                                        _outs = (_outs[0].sum(0),)

A row slice covering the whole tensor is the tensor itself (a slice's backward zero-fills and
copies a full-size gradient). Sum partials leave summed over the loop, averaged ones divided by
the trip count. Under vmap a full ``max``/``min`` reduction sends a tie's gradient to one
element where eager splits it evenly: ``x.max()`` and ``torch.max(x)`` become the registry's
``reduce_fn`` (``full_extremes``: ``amax``'s split of ties, eager's gradient at NaN), other full
reductions its ``reduce``. A call whose gradients differ under vmap, or whose batching rule
makes a broadcast intermediate, calls the registry's ``vmap_fn`` there (``bce_with_logits``:
eager's gradient at an infinite logit; ``cosine_products``: a matrix product).
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, Transformer, clone
from .loop_dataflow import call_op, loads, method_name
from .plan import BodyParam, LoopPlan, RowSlice
from .row_slices_to_params import full_slice
from .runtime_checks import proven_tensors


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    plan.body = [_TiesSplit(plan, ctx, False).visit(s) for s in plan.init + plan.body]
    it, inputs, dims = plan.iteration, [], []
    used = set().union(*(loads(s) for s in plan.body)) if plan.body else set()
    if it.index in used or not (it.elements or plan.row_slices):
        device = _device(plan)
        inputs.append(plan.sub("torch.arange(a, b, s" + (", device=d)" if device else ")"),
                               a=it.start, b=it.stop, s=it.step, d=device))
        dims.append(0)
        plan.params.append(BodyParam(it.index, inputs[-1]))
    for name, src in it.elements:
        # zip stops at the shortest: all of a tensor is itself (a slice's backward copies)
        inputs.append(src if len(it.elements) == 1 else plan.sub(
            "x if len(x) == n else x[:n]", x=src, n=it.stop))
        dims.append(0)
        plan.params.append(BodyParam(name, inputs[-1], src))
    for (name, _), row in plan.row_slices.items():
        inputs.append(_rows(plan, name, row))
        dims.append(sum(isinstance(x, ast.Slice) for x in row.prefix))
        fixed = sum(not isinstance(x, ast.Slice) for x in row.prefix)  # int entries drop a dim
        value = plan.sub(f"v.movedim({dims[-1]}, 0)", v=inputs[-1]) if dims[-1] else inputs[-1]
        plan.params.append(BodyParam(row.param, value, ast.Name(name, ast.Load()), fixed))
    plan.mapped = _mapped(plan, inputs, dims, ctx)
    return plan


def _rows(plan: LoopPlan, name: str, row: RowSlice) -> ast.expr:
    """``name[prefix..., a:b:s]``, or all rows: the tensor itself, or ``x[i]`` for
    ``x[i, a:b:s]``, whose backward needs no zero-filled copy for the slice (and once an outer
    loop maps ``x[i]``, no op at all)."""
    it, prefix = plan.iteration, row.prefix
    index = prefix + [ast.Slice(it.start, it.stop, it.step)]
    rows = ast.Subscript(ast.Name(name, ast.Load()),
                         ast.Tuple(index, ast.Load()) if prefix else index[0], ast.Load())
    whole = [f"b == x.shape[{len(prefix)}]"] + [
        f"{v} == {k}" for v, k, bound in (("a", 0, it.start), ("s", 1, it.step))
        if not (isinstance(bound, ast.Constant) and bound.value == k)]
    kept = [x for x in prefix if not full_slice(x)] and prefix  # `x[:, :]` is `x`
    all_rows = ast.Subscript(ast.Name(name, ast.Load()), ast.Tuple(kept, ast.Load())
                             if len(kept) > 1 else kept[0], ast.Load()) if kept else \
        ast.Name(name, ast.Load())
    return plan.sub(f"w if {' and '.join(whole)} else r", w=all_rows,
                    x=ast.Name(name, ast.Load()), a=it.start, s=it.step, b=it.stop, r=rows)


def _mapped(plan: LoopPlan, inputs: list[ast.expr], dims: list[int],
            ctx: PassContext) -> list[ast.stmt]:
    """``def _body(...)`` and its vmap over ``inputs``, binding ``plan.outs``."""
    fn = ctx.namer.new("body")
    ret = ast.Return(ast.Tuple([plan.sub("torch.as_tensor(v)", v=o) for o in plan.outputs],
                               ast.Load()))
    func = ast.FunctionDef(
        name=fn, args=ast.arguments(posonlyargs=[], args=[ast.arg(p.name) for p in plan.params],
                                    kwonlyargs=[], kw_defaults=[], defaults=[]),
        body=[_EagerGradients(ctx).visit(_TiesSplit(plan, ctx, True).visit(clone(s)))
              for s in plan.body] + [ret],
        decorator_list=[], returns=None, type_params=[])
    vmap = plan.sub(f"torch.vmap(f, in_dims={tuple(dims)!r})", f=fn)
    mapped = [func] + plan.sub("o = c", o=plan.outs, c=ast.Call(vmap, inputs, []))
    summed, averaged = plan.summed_parts(), plan.averaged_parts()
    if summed:
        trips = plan.iteration.trips(plan)
        outs = [plan.sub(f"o[{k}].sum(0) / n" if name in averaged else
                         f"o[{k}].sum(0)" if name in summed else f"o[{k}]", o=plan.outs, n=trips)
                for k, name in enumerate(plan.outputs)]
        mapped += plan.sub("o = v", o=plan.outs, v=ast.Tuple(outs, ast.Load()))
    return mapped


def _device(plan: LoopPlan) -> ast.expr | None:
    """Where the indexed tensors live: the loop index must be there too."""
    tensors = [x for x in proven_tensors(plan.checks.expr())
               if isinstance(x, (ast.Name, ast.Attribute))]
    return plan.sub("x.device", x=tensors[0]) if tensors else None


class _TiesSplit(Transformer):
    """``x.max()`` / ``torch.max(x)`` (all elements) -> the registry's ``reduce_fn`` in the
    vmapped body (``mapped``; the batched form finds the op itself), ``x.amax()`` ... for the
    others."""

    def __init__(self, plan: LoopPlan, ctx: PassContext, mapped: bool):
        self.plan, self.ctx, self.mapped = plan, ctx, mapped

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        op = call_op(node, self.ctx)
        method = method_name(node, self.ctx) is not None
        if not op.reduce or op.reduce in op.names or node.keywords \
                or len(node.args) != (0 if method else 1) or bool(op.reduce_fn) != self.mapped:
            return node
        x = node.func.value if method else node.args[0]
        if op.reduce_fn:
            return self.plan.sub(f"{self.ctx.bind(op.reduce_fn, op.reduce_fn.__name__)}(x, 0)", x=x)
        return self.plan.sub(f"x.{op.reduce}()", x=x)


class _EagerGradients(Transformer):
    """``f(...)`` -> ``vmap_fn(...)``, the same arguments, for the ops with a ``vmap_fn``."""

    def __init__(self, ctx: PassContext):
        self.ctx = ctx

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        op = call_op(node, self.ctx)
        if op.vmap_fn is None or method_name(node, self.ctx) is not None:
            return node
        fn = ast.Name(self.ctx.bind(op.vmap_fn, op.vmap_fn.__name__), ast.Load())
        return ast.copy_location(ast.Call(ast.copy_location(fn, node.func), node.args,
                                          node.keywords), node)
