"""Stage: the body becomes a function of one iteration, mapped over all of them with vmap.

Its parameters are the index (when read, or when nothing else is iterated), the iterated
elements and the row slices, each bound to all iterations' values (``plan.params`` keeps them
for the batched form, loop axis in front)::

    for i in range(len(pred)):          def _body(_pred_row):
        loss += pred[i].sum()      ->       _loss_part = 0
                                            _loss_part = _loss_part + _pred_row.sum()
                                            return (torch.as_tensor(_loss_part),)
                                        _outs = _map_in_chunks(_body, in_dims=(0,))(
                                            pred if len(pred) == pred.shape[0] else pred[0:len(pred):1])
                                        _outs = (_outs[0].sum(0),)

A row slice covering the whole tensor is the tensor itself (a slice's backward zero-fills and
copies a full-size gradient). Sum partials leave summed over the loop, averaged ones divided by
the trip count. Under vmap a full ``max``/``min`` reduction sends a tie's gradient to one
element where eager splits it evenly: ``x.max()`` and ``torch.max(x)`` become the registry's
``reduce_fn`` (``full_extremes``: ``amax``'s split of ties, eager's gradient at NaN), other full
reductions its ``reduce``. A call whose gradients differ under vmap, or whose batching rule
makes a broadcast intermediate, calls the registry's ``vmap_fn`` there (``bce_with_logits``:
eager's gradient at an infinite logit; ``cosine_products``: a matrix product). Rows taken at
positions, ``x[p]`` with ``p`` a sort's indices (``OpSpec.positions``), become ``index_select``
there: vmap's rule for a batched advanced index is several times slower than its gather.
Rows taken at a mask the loop does not change, ``x[m]`` with ``m`` a name the body does not bind
(``pred[valid]``) in a loop no other loop encloses, become the bound ``masked_rows`` there: an ``index_select`` of the mask's
positions when ``m`` is a bool tensor of ``x``'s leading shape, ``x[m]`` otherwise (vmap's rule
for a boolean index is an advanced index of every masked dim, forward and backward).
The map is ``chunked_maps.map_in_chunks``: ``torch.vmap``, over chunks of the iterations when
one iteration's values are large (fresh pages for every all-iterations temporary cost more
than the loop saved).
"""
from __future__ import annotations

import ast

from .. import ast_marks, loop_sums_keep_dtypes
from ..ast_tools import PassContext, ScopedTransformer, Transformer, clone, replace
from ..chunked_maps import map_in_chunks
from ..masked_rows import masked_rows
from ..mapped_op_forms import EagerGradients
from .loop_dataflow import call_op, loads, method_name, stores_in
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
        dims.append(row.axis)
        value = plan.sub(f"v.movedim({dims[-1]}, 0)", v=inputs[-1]) if dims[-1] else inputs[-1]
        plan.params.append(BodyParam(row.param, value, ast.Name(name, ast.Load()), row.fixed))
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
    whole = [f"b == x.shape[{-1 if row.from_end else len(prefix)}]"] + [
        f"{v} == {k}" for v, k, bound in (("a", 0, it.start), ("s", 1, it.step))
        if not (isinstance(bound, ast.Constant) and bound.value == k)]
    # `x[:, :]` and `x[...]` are `x`
    kept = [x for x in prefix if not full_slice(x) and not row.from_end] and prefix
    all_rows = ast.Subscript(ast.Name(name, ast.Load()), ast.Tuple(kept, ast.Load())
                             if len(kept) > 1 else kept[0], ast.Load()) if kept else \
        ast.Name(name, ast.Load())
    return plan.sub(f"w if {' and '.join(whole)} else r", w=all_rows,
                    x=ast.Name(name, ast.Load()), a=it.start, s=it.step, b=it.stop, r=rows)


def _mapped(plan: LoopPlan, inputs: list[ast.expr], dims: list[int],
            ctx: PassContext) -> list[ast.stmt]:
    """``def _body(...)`` and its vmap over ``inputs``, binding ``plan.outs``."""
    fn = ctx.namer.new("body")
    floats = plan.python_floats()  # Python floats: float64, not the default dtype
    ret = ast.Return(ast.Tuple([plan.sub(
        "torch.as_tensor(v, dtype=torch.float64)" if o in floats else
        "torch.as_tensor(v).detach()" if o in plan.detached else "torch.as_tensor(v)", v=o)
        for o in plan.outputs], ast.Load()))
    func = ast.FunctionDef(
        name=fn, args=ast.arguments(posonlyargs=[], args=[ast.arg(p.name) for p in plan.params],
                                    kwonlyargs=[], kw_defaults=[], defaults=[]),
        body=_fixed_mask_reads(plan, ctx, _PositionReads(ctx).block([EagerGradients(ctx).visit(
            _TiesSplit(plan, ctx, True).visit(clone(s))) for s in plan.body])) + [ret],
        decorator_list=[], returns=None, type_params=[])
    ast_marks.put(func, ast_marks.MAPPED, True)
    vmap = plan.sub(f"{ctx.bind(map_in_chunks, 'map_in_chunks')}(f, in_dims={tuple(dims)!r})",
                    f=fn)
    mapped = [func] + plan.sub("o = c", o=plan.outs, c=ast.Call(vmap, inputs, []))
    summed, averaged = plan.summed_parts(), plan.averaged_parts()
    if summed:
        trips = plan.iteration.trips(plan)
        outs = [plan.sub(f"o[{k}]", o=plan.outs) for k in range(len(plan.outputs))]
        outs = [loop_sums_keep_dtypes.mark(plan.sub("o.sum(0)", o=o), plan.fold_starts.get(name))
                if name in summed else o for o, name in zip(outs, plan.outputs)]
        outs = [plan.sub("o / n", o=o, n=trips) if name in averaged else o
                for o, name in zip(outs, plan.outputs)]
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


# ``x[p]`` for int64 positions ``p`` (>= 0): the same values, gradients and error past the end;
# a 0-d ``x`` raises in indexing, where ``index_select`` would take it as one row.
TAKE = ("(torch.index_select(x, 0, p.reshape(-1)).reshape(p.shape + x.shape[1:]) if x.dim() "
        "else x[p])")


# statements whose expressions are evaluated once, in order; expressions evaluated only sometimes
_SIMPLE = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr)
_CONDITIONAL = (ast.IfExp, ast.BoolOp, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
                ast.GeneratorExp)


class _PositionReads(ScopedTransformer):
    """``x[p]`` -> ``TAKE`` in the vmapped body, ``x`` and ``p`` names, ``p`` bound to positions
    by the last top-level statement binding it: the indices of a sort (``v, p = torch.sort(...)``,
    ``torch.sort(...)[1]``, ``.indices``: ``OpSpec.positions_item``) or an op keeping them
    (``OpSpec.positions``: ``.detach()``, ``torch.where`` of two). Positions that are not a name,
    read where a simple statement always evaluates them, are bound to a fresh name first
    (``TAKE`` reads them three times). A name a compound statement (or a walrus) binds is not
    known inside it nor after it; nested functions and comprehensions are left as they are."""

    def __init__(self, ctx: PassContext):
        self.ctx, self.names = ctx, set()

    def block(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        out = []
        for s in stmts:
            stored = {n.id for n in ast.walk(s) if isinstance(n, ast.Name)
                      and isinstance(n.ctx, ast.Store)}
            bound = self._bound(s)
            walrus = any(isinstance(n, ast.NamedExpr) for n in ast.walk(s))
            if isinstance(s, _SIMPLE) and not walrus:
                for sub in self._unconditional_takes(s):
                    name = self.ctx.namer.new("positions")
                    out.append(ast.copy_location(ast.Assign(
                        [ast.Name(name, ast.Store())], sub.slice), s))
                    sub.slice = ast.Name(name, ast.Load())
                    self.names.add(name)
            else:
                self.names -= stored
            out.append(self.visit(s))
            self.names = (self.names - stored) | bound
        return out

    def _unconditional_takes(self, node: ast.AST) -> list[ast.Subscript]:
        """``x[<positions>]`` in ``node``, positions that are not a name, where every evaluation
        of the statement evaluates them (their ops are pure: evaluated first, the same)."""
        found = []
        for child in ast.iter_child_nodes(node):
            if isinstance(child, _CONDITIONAL):
                continue
            if isinstance(child, ast.Subscript) and isinstance(child.ctx, ast.Load) \
                    and isinstance(child.value, ast.Name) \
                    and not isinstance(child.slice, ast.Name) and self.positions(child.slice):
                found.append(child)
            else:
                found += self._unconditional_takes(child)
        return found

    def _bound(self, s: ast.stmt) -> set[str]:
        """The names ``s`` binds to positions."""
        if not isinstance(s, ast.Assign) or len(s.targets) != 1:
            return set()
        target = s.targets[0]
        if isinstance(target, ast.Name):
            return {target.id} if self.positions(s.value) else set()
        item = self._item(s.value)
        if isinstance(target, ast.Tuple) and item is not None and item < len(target.elts) \
                and not any(isinstance(e, ast.Starred) for e in target.elts) \
                and isinstance(target.elts[item], ast.Name):
            return {target.elts[item].id}
        return set()

    def _item(self, value: ast.expr) -> int | None:
        return call_op(value, self.ctx).positions_item if isinstance(value, ast.Call) else None

    def positions(self, e: ast.expr) -> bool:
        if isinstance(e, ast.Name):
            return e.id in self.names
        if isinstance(e, ast.Subscript) and isinstance(e.slice, ast.Constant):
            return self._item(e.value) is not None and e.slice.value == self._item(e.value)
        if isinstance(e, ast.Attribute):
            return e.attr == "indices" and self._item(e.value) is not None
        if not isinstance(e, ast.Call) or e.keywords:
            return False
        keeps = call_op(e, self.ctx).positions
        method = method_name(e, self.ctx) is not None
        operands = ([e.func.value] if method else []) + e.args
        if keeps is None or any(k >= len(operands) for k in keeps):
            return False
        kept = [operands[k] for k in keeps]
        # ``False``: the 0 a masked read takes where deselected (``torch.where(p, perm, False)``,
        # tensor_branches_to_where), a position in the other operand's int64
        return any(self.positions(o) for o in kept) and all(
            self.positions(o) or isinstance(o, ast.Constant) and o.value is False for o in kept)

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.ctx, ast.Load) and isinstance(node.value, ast.Name) \
                and isinstance(node.slice, ast.Name) and node.slice.id in self.names:
            return replace(TAKE, loc=node, torch_name=self.ctx.torch_name, x=node.value,
                           p=node.slice)
        return node


def _fixed_mask_reads(plan: LoopPlan, ctx: PassContext, body: list[ast.stmt]) -> list[ast.stmt]:
    """``body`` with ``_FixedMaskReads``, in the body of a loop no other loop nor vmapped caller
    encloses: there a name the body does not bind is the same in every iteration (an enclosing
    loop's values are mapped, and an outer loop reads its rows from them)."""
    return body if plan.inner or ctx.mapped else _FixedMaskReads(plan, ctx).block(body)


class _FixedMaskReads(ScopedTransformer):
    """``x[m]`` -> ``masked_rows(x, m)`` in the vmapped body, ``m`` a name neither a parameter of
    the body nor bound anywhere in it (a value of the function around the loop, the same in every
    iteration); nested functions and comprehensions are left as they are (their own names)."""

    def __init__(self, plan: LoopPlan, ctx: PassContext):
        self.ctx, self.bound = ctx, {p.name for p in plan.params}

    def block(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        self.bound |= stores_in(stmts) | {n.id for s in stmts for n in ast.walk(s)
                                          if isinstance(n, ast.Name)
                                          and not isinstance(n.ctx, ast.Load)}
        return [self.visit(s) for s in stmts]

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.ctx, ast.Load) and isinstance(node.slice, ast.Name) \
                and node.slice.id not in self.bound:
            return replace(f"{self.ctx.bind(masked_rows, 'masked_rows')}(x, m)", loc=node,
                           torch_name=self.ctx.torch_name, x=node.value, m=node.slice)
        return node
