"""Stage: a loop whose body is an inner loop's vectorized form is batched over both loops at once.

An inner loop leaves in the outer body its choice ``if <check>: <batched> else: <vmap>``
(``ast_marks.FORMS_OF``), which ``batch_loop_bodies`` has no batched form for: the outer loop
maps it with ``torch.vmap``, whose dispatch and Dynamo guards every call pays. When the outer
body is that choice, followed only by the placements of the inner's written values
(``loop_rules.WRITE_PLACED``, row by row), and the inner body reads the outer iteration only
through rows of the outer rows (``P[a:b:s]``, ``P`` itself, ``P[j]`` at the inner index ``j``),
the inner body (its vmap form's function of one item) is batched by ``batch_loop_bodies``' rules
once over the two loop dims flattened into one (``A * B`` rows), its placements run on those
rows, and the outer outputs are unflattened to ``(A, B, ...)``; the outer vmap is the else::

    for i in range(A):                    if <the batched check, per row of both loops>:
        for j in range(B):                    _a_row = (<a's rows> if B == a.shape[1] else
            out[i, j] = a[i, j] + b[i, j]  ->               <a's rows>[:, 0:B:1]).flatten(0, 1)
                                              _b_row = ...
                                              _out_item = _a_row + _b_row
                                              _outs = (_out_item,)
                                              _out_item_1 = _outs[0].reshape(<placement>)
                                              _outs_1 = (_out_item_1.unflatten(0, (A, B)),)
                                          else:
                                              <the outer vmap around the inner's forms>

``P[j]`` is the rows ``<P's rows>[:, a:b:s]`` flattened and copied, behind ``a``, ``s`` literal
ints ``a >= 0``, ``s > 0`` and the check ``b <= <P's rows>.shape[1]`` (else the vmap form raises
as the original); the inner index itself, read elsewhere, is ``torch.arange(a, b, s).repeat(A)``.
What the inner range or a whole-rows test reads of an outer item (``row.shape[0]``) is read of the
whole tensor (``inline_inner_loops.lifted_to_tensors``). Every outer tensor read has the two loop
dims (``x.dim() >= 2 + <fixed entries>``). Nothing
else: any other read of the outer iteration, a summed inner output (its sum is per outer item)
or a moved loop dim keeps the outer vmap (the stage changes nothing).
"""
from __future__ import annotations

import ast

from .. import ast_marks
from .. import loop_rules as rules
from ..ast_tools import (Checks, PassContext, clone, fix_missing_locations, is_name, matched,
                         replace, unparse, walk)
from ..errors import Unsupported
from .batch_loop_bodies import batch_rows
from .batch_values import Param, Rank
from .inline_inner_loops import lifted_to_tensors
from .loop_dataflow import loads, resolve_call
from .plan import BodyParam, Iteration, LoopPlan
from .runtime_checks import proven_tensors


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    if not plan.unbatched:
        return plan
    try:
        check, flat = _both_levels(plan, ctx)
    except Unsupported:  # the outer vmap stays, and the reason it has
        return plan
    form = ast.If(check, flat, plan.mapped)
    ast_marks.put(form, ast_marks.FORMS_OF, plan.node.lineno)
    plan.stmts = [fix_missing_locations(ast.copy_location(s, plan.node))
                  for s in [form] + plan.folds]
    plan.batched_if, plan.unbatched = check, ""
    return plan


def _both_levels(plan: LoopPlan, ctx: PassContext) -> tuple[ast.expr, list[ast.stmt]]:
    """(check, statements binding ``plan.outs`` batched over both loops); raises
    ``Unsupported``."""
    body = [s for s in plan.body if not (isinstance(s, ast.Expr)
                                         and isinstance(s.value, ast.Constant))]
    if not body or ast_marks.get(body[0], ast_marks.FORMS_OF) is None or plan.detached:
        raise Unsupported("its body is not an inner loop's forms")
    fn, inner_outs, args = _mapped_inner(body[0])
    placed = [_placement(s, inner_outs) for s in body[1:]]
    if sorted(placed) != sorted(plan.outputs):
        raise Unsupported("its outputs are not the inner loop's placed writes")
    rows = {p.name: p for p in plan.params if p.rows_of is not None}
    varying = {p.name for p in plan.params} | {plan.iteration.index} | set(placed)
    names = [a.arg for a in fn.args.args]
    *stmts, ret = fn.body
    outputs = [_returned(x) for x in ret.value.elts]
    checks, index, arange, sliced, params = Checks(), None, None, None, []
    for name, arg in zip(names, args):
        arg = _Lifted(rows, varying, checks, plan, ctx).of(arg)
        if isinstance(arg, ast.Call) and resolve_call(arg.func, ctx) == "torch.arange":
            index, arange = name, arg
            continue
        value, outer, got = _rows_of_rows(arg, rows, varying)
        sliced = sliced or got
        params.append(_flat_param(name, value, rows[outer], checks, plan))
    if arange is None and sliced is None:
        raise Unsupported("the inner loop's range is not known")
    inner = _inner_iteration(arange or sliced)
    a_trips, b_trips = plan.iteration.trips(plan), inner.trips(plan)
    stmts = _PickedRows(rows, index, inner, checks, params, plan, ctx).block(stmts)
    if index is not None and any(index in loads(s) for s in stmts):
        params.insert(0, Param(index, plan.sub("r.repeat(n)", r=arange, n=a_trips), Rank(), (),
                               index=True))
    read = set().union(*(loads(s) for s in stmts)) - {p.name for p in params}
    if read & varying:
        raise Unsupported(f"the inner loop reads `{sorted(read & varying)[0]}` of the outer "
                          "iteration")
    tensors = frozenset(x.id for x in proven_tensors(plan.checks.expr())
                        if isinstance(x, ast.Name))
    trips = plan.sub("a * b", a=a_trips, b=b_trips)
    batched_check, flat = batch_rows(stmts, params, outputs, inner_outs, trips, tensors, ctx,
                                     plan.node)
    if batched_check is not None:
        checks.add(batched_check)
    unflattened = [plan.sub("o.unflatten(0, (a, b))", o=o, a=a_trips, b=b_trips)
                   for o in plan.outputs]
    flat += [clone(s) for s in body[1:]] + plan.sub(
        "o = v", o=plan.outs, v=ast.Tuple(unflattened, ast.Load()))
    return checks.expr(), flat


def _mapped_inner(forms: ast.If) -> tuple[ast.FunctionDef, str, list[ast.expr]]:
    """(the inner body function, the name of its outputs, its vmapped arguments) of the inner
    loop's vmap form ``def _body(...): ...; _outs = torch.vmap(_body, in_dims=(0, ...))(...)``:
    nothing after it (a summed output is summed per outer item)."""
    found = forms.orelse
    if len(found) != 2 or not isinstance(found[0], ast.FunctionDef) \
            or not isinstance(found[1], ast.Assign) or not isinstance(found[1].value, ast.Call):
        raise Unsupported("the inner loop's vmap form is not one mapped call")
    fn, call = found[0], found[1].value
    mapper = call.func
    dims = [k.value for k in getattr(mapper, "keywords", []) if k.arg == "in_dims"]
    if not (isinstance(mapper, ast.Call) and mapper.args and is_name(mapper.args[0], fn.name)
            and dims and isinstance(dims[0], ast.Tuple)
            and all(isinstance(d, ast.Constant) and d.value == 0 for d in dims[0].elts)
            and isinstance(found[1].targets[0], ast.Name)
            and isinstance(fn.body[-1], ast.Return) and isinstance(fn.body[-1].value, ast.Tuple)):
        raise Unsupported("the inner loop's vmap form is not one mapped call over dim 0")
    return fn, found[1].targets[0].id, call.args


def _returned(x: ast.expr) -> str:
    """``o`` of ``torch.as_tensor(o)`` (a detached output is refused: it is no write)."""
    if isinstance(x, ast.Call) and isinstance(x.func, ast.Attribute) and x.func.attr == \
            "as_tensor" and len(x.args) == 1 and isinstance(x.args[0], ast.Name):
        return x.args[0].id
    raise Unsupported(f"the inner loop returns `{unparse(x)}`")


def _placement(s: ast.stmt, inner_outs: str) -> str:
    """The name ``s`` binds to the placement of an inner output (``loop_rules.WRITE_PLACED``,
    cast for a plain write: ``WRITE_PLACED_CAST``)."""
    one = isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
    cast = matched(rules.WRITE_PLACED_CAST, s.value, ("p", "v", "out")) if one else None
    got = matched(rules.WRITE_PLACED, cast["p"] if cast else s.value, ("v", "out", "k")) \
        if one else None
    v = got and got["v"]
    if not (isinstance(v, ast.Subscript) and is_name(v.value, inner_outs)
            and isinstance(v.slice, ast.Constant) and inner_outs not in loads(got["out"])):
        raise Unsupported("the outer body has statements besides the inner loop's writes")
    return s.targets[0].id


def _rows_of_rows(arg: ast.expr, rows: dict[str, BodyParam],
                  varying: set[str]) -> tuple[ast.expr, str, ast.Slice | None]:
    """(the inner argument over both loops, flattened; the outer row it reads; its slice) for
    ``P``, ``P[a:b:s]`` and ``P if <c> else P[a:b:s]`` of an outer row ``P``."""
    whole = arg.body if isinstance(arg, ast.IfExp) else None
    part = arg.orelse if whole is not None else arg
    sliced = isinstance(part, ast.Subscript) and isinstance(part.slice, ast.Slice)
    outer = part.value if sliced else part
    if not (isinstance(outer, ast.Name) and outer.id in rows
            and (whole is None or is_name(whole, outer.id) and not loads(arg.test) & varying)):
        raise Unsupported(f"the inner loop maps `{unparse(arg)}`, not rows of an outer row")
    value = rows[outer.id].value
    # located at the row they stand for (a template's own location is its line 1)
    flat = replace("x[:, s]", x=value, s=part.slice, loc=value) if sliced else clone(value)
    if whole is not None:
        flat = ast.copy_location(ast.IfExp(arg.test, clone(value), flat), value)
    return replace("x.flatten(0, 1)", x=flat, loc=value), outer.id, part.slice if sliced else None


class _Lifted(ast.NodeTransformer):
    """An inner argument with what it reads of an outer item besides the rows it maps (the
    inner range's ``row.shape[0]``, a condition on it) as the same on the whole tensor
    (``inline_inner_loops.lifted_to_tensors``), their tensor checks added."""

    def __init__(self, rows: dict[str, BodyParam], varying: set[str], checks: Checks,
                 plan: LoopPlan, ctx: PassContext):
        self.rows, self.varying, self.checks, self.plan, self.ctx = rows, varying, checks, plan, ctx

    def of(self, arg: ast.expr) -> ast.expr:
        self.root = clone(arg)
        return self.visit(self.root)

    def visit(self, node: ast.AST) -> ast.AST:
        if not isinstance(node, ast.expr) or node is self.root \
                or isinstance(node, (ast.IfExp, ast.Subscript, ast.Slice)):  # around the rows
            return self.generic_visit(node)
        if not loads(node) & self.varying or isinstance(node, ast.Name) and node.id in self.rows:
            return node
        lifted = lifted_to_tensors(node, self.plan, self.ctx)
        if lifted is None:
            raise Unsupported(f"`{unparse(node)}` varies with the outer iteration")
        for check in lifted[:-1]:
            self.checks.add(check)
        return lifted[-1]


def _flat_param(name: str, value: ast.expr, row: BodyParam, checks: Checks,
                plan: LoopPlan) -> Param:
    """The parameter of the flattened rows ``value`` of the outer ``row`` (two loop dims
    checked)."""
    x, lost = row.rows_of, 2 + row.fixed
    checks.add(plan.sub(f"x.dim() >= {lost}", x=x))
    return Param(name, value, Rank.of(unparse(plan.sub("x.dim()", x=x)), -lost),
                 (unparse(plan.sub(f"x.dtype in {rules.INDEX_DTYPES}", x=x)),))


def _inner_iteration(bounds: ast.expr) -> Iteration:
    """The inner range, from its ``torch.arange(a, b, s, ...)`` or a row slice ``a:b:s``."""
    if isinstance(bounds, ast.Slice):
        parts = [bounds.lower, bounds.upper, bounds.step]
    else:
        parts = list(bounds.args)
    if len(parts) != 3 or any(p is None for p in parts):
        raise Unsupported("the inner loop's range is not `a:b:s`")
    return Iteration("", *parts)


class _PickedRows:
    """``P[j]``, an outer row at the inner index ``j``: a parameter of the rows ``P[:, a:b:s]``
    over both loops, flattened and copied (module docstring)."""

    def __init__(self, rows: dict[str, BodyParam], index: str | None, inner: Iteration,
                 checks: Checks, params: list[Param], plan: LoopPlan, ctx: PassContext):
        self.rows, self.index, self.inner = rows, index, inner
        self.checks, self.params, self.plan, self.ctx = checks, params, plan, ctx
        self.made: dict[str, str] = {}

    def block(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        stmts = [clone(s) for s in stmts]
        for s in stmts:
            for node in walk(s):
                for key, child in ast.iter_fields(node):
                    if isinstance(child, ast.expr) and self._picked(child):
                        setattr(node, key, self._param(child.value.id))
                    elif isinstance(child, list):
                        child[:] = [self._param(c.value.id) if isinstance(c, ast.expr)
                                    and self._picked(c) else c for c in child]
        return stmts

    def _picked(self, node: ast.expr) -> bool:
        return self.index is not None and isinstance(node, ast.Subscript) \
            and isinstance(node.ctx, ast.Load) and is_name(node.slice, self.index) \
            and isinstance(node.value, ast.Name) and node.value.id in self.rows

    def _param(self, outer: str) -> ast.Name:
        if outer not in self.made:
            it, row, plan = self.inner, self.rows[outer], self.plan
            if not (_literal(it.start, 0) and _literal(it.step, 1)):
                raise Unsupported("the inner range's start or step is not a literal int")
            name = self.made[outer] = self.ctx.namer.new(f"{outer.lstrip('_')}_picked")
            value = plan.sub("x[:, a:b:s].flatten(0, 1).clone()", x=row.value, a=it.start,
                             b=it.stop, s=it.step)
            param = _flat_param(name, value, row, self.checks, plan)
            self.checks.add(plan.sub("b <= v.shape[1]", b=it.stop, v=row.value))
            self.params.append(param)
        return ast.Name(self.made[outer], ast.Load())


def _literal(x: ast.expr, least: int) -> bool:
    """``x`` is an int literal of at least ``least``."""
    return isinstance(x, ast.Constant) and type(x.value) is int and x.value >= least
