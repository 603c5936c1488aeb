"""A vectorized loop's per-iteration body becomes plain tensor code over all iterations at once.

``vectorize_loops`` outlines a loop body into a function of one iteration and maps it with
``torch.vmap``. When every op of the body has a batched form (``OpSpec.batched``), the body
is rewritten instead: every loop-varying value carries the loop dim in front, values that do not
vary stay as they are, and no vmap (nor its per-op dispatch) runs::

    def _body(_pred_row, _target_row):               if pred.dim() == target.dim():
        _loss_part = 0                                   _pred_row = pred[0:B:1]
        _loss_part = _loss_part + \\          ->          _target_row = target[0:B:1]
            ((_pred_row - _target_row) ** 2).mean()      _loss_part = 0
        return (torch.as_tensor(_loss_part),)            _t = (_pred_row - _target_row) ** 2
                                                         _loss_part = _loss_part + _t.reshape(len(_t), -1).mean(1)
                                                         _outs = (_loss_part,)
                                                     else:
                                                         <def _body ...; _outs = torch.vmap(...)>

The batched forms: elementwise ops and arithmetic as they are; reductions of all elements
``x.sum()`` -> ``x.sum(<the item dims>)``; ``dim=d`` -> ``dim=d + 1`` (negative dims
unchanged); ``x[k, 1:]`` with fixed entries -> ``x[:, k, 1:]``; the gather ``x[idx]`` ->
``x[torch.arange(len(x), device=x.device), idx]`` (``w[idx]`` unchanged when ``w`` does not vary;
``w[i]`` at the index of ``range(a, b, s)``, int literals ``a``, ``s``: ``w[a:b:s].clone()``;
``w[:, c]``, full slices then a per-item 0-d id, -> ``w[:, c].movedim(1, 0)``);
``F.mse_loss(a, b)`` and the other pointwise losses -> ``F.mse_loss(a, b, reduction="none")``
averaged per item (``reduction="none"``: the same call, elementwise); ``F.cross_entropy(x, t)``
on [N, C] items -> ``reduction="none"`` summed per item over the count of non-ignored targets
(what the mean divides by); a loss's option that is a name or attribute chain the loop does not
bind (``reduction=criterion.reduction``, the settings
of an ``nn`` loss module) behind a check of its value (``loop_rules.CHECKED_LOSS_OPTIONS``: no
smoothing, a mean or sum reduction picked at run time; a class loss's weight is passed, each item
averaged over its own rows' weights); ``torch.dot(a, b)`` (``b`` maybe the same in every
iteration) -> ``dot_rows(a, b)`` (``row_dots``); ``x.view(*sizes)``/``x.reshape(sizes)`` of int
sizes the same in every iteration -> ``x.view(len(x), *sizes)``; ``x.size(k)``, ``x.numel()``,
``x.dim()`` -> the items' (``loop_rules.BATCHED_ITEM_METADATA``); ``w[k, idx]`` (fixed ``w``, fixed ints ``k``) -> ``w[k][idx]``;
``F.cosine_similarity(a, b, dim=d)`` -> the same call with ``dim=d + 1``. Sizes of the items:
``r.shape[k]`` -> ``r.shape[k + 1]`` (a Python int, the same in every iteration), ``r.device``
as it is; ``torch.arange`` of such int sizes is one fixed 1-D int64 tensor, and a per-item value
of a lower rank next to it in an operator gets dims of size 1 after the loop dim: a ragged
prefix's mask ``pos < L`` (``ragged_slices_to_masks``, ``L`` per item 0-d) -> ``pos < L[:, None]``.

Set forms: a point ``x`` (a loop input's rows, per item [D]) against a fixed ``w`` the check can
evaluate (``w``, ``self.w``, ``z1[i]``), reduced over the feature dim
(``loop_rules.SIMILARITY_SET_FORMS``/``DISTANCE_SET_FORMS``): ``F.cosine_similarity(x, w, dim=-1)``
-> ``normalized(x) @ normalized(w)`` for ``w`` [D], ``... @ normalized(w).t()`` for a set ``w``
[m, D]; ``((w - x) ** 2).sum(dim=-1)`` of a set -> ``torch.cdist(x, w, ...).square()``: one matmul
or cdist, no [n, m, D] intermediate. A loop input itself is a set of its rows: an elementwise
operand ``labels`` next to a per-item value (``labels == labels[i]``, per item a broadcast to
``labels``' higher rank) -> ``labels == _labels_row[:, None]``, the per-item value with dims of
size 1 after the loop dim up to ``labels``' rank (``loop_rules.BATCHED_UNDER_SET``), the result
of ``labels``' rank. Whether ``w`` is one point or a set (per item: a broadcast to a higher rank)
is only known at run time, so a body with a set form is batched twice: with ``w`` of at most the
per-item rank (the rules above), and with ``w`` a set;
``if <first> or <second>: if <first>: ... else: ...``, vmap otherwise.

Sum accumulators are summed over the loop in the same code (``summed``): each update ``p = p + e``
becomes ``p = p + <sum of e over the loop>`` (``p = <sum>`` when ``p`` is still the int 0 it
starts at), fused into one op where that is exact (``OpSpec.summed``, ``loop_rules.SUMMED_*``):
``x.reshape(n, -1).sum(1).sum(0)`` -> ``x.sum()``, ``x.reshape(n, -1).mean(1).sum(0)`` ->
``x.mean() * n`` (the items of a batched tensor all have the same size; ``n`` the number of
iterations), per-item ``F.mse_loss`` and the other pointwise losses -> one
``reduction="sum"``/``"mean"`` call, per-item ``F.cross_entropy(..., reduction="sum")`` -> one
call; sums distribute over ``+``/``-``, and a factor that does not vary comes out (``c * e``,
``e / c``). Anything else is ``e.sum(0)``; per-item means of class losses stay per item (their
counts of non-ignored targets differ)::

    _loss_part = 0                                       _loss_part = 0
    _loss_part = _loss_part + \\                ->       _loss_part = \\
        ((_pred_row - _target_row) ** 2).mean()              ((_pred_row - _target_row) ** 2).mean() * n
    (per item)                                           (summed over the loop)

Outputs ``averaged`` (the loop's sum is only divided by ``n`` afterwards, see vectorize_loops)
get their mean over the loop instead (``loop_rules.AVERAGED_*``): ``x.mean() * n`` -> ``x.mean()``,
a pointwise loss's mean call without ``* n``, anything else its sum ``/ n``.

Shapes: per-item ranks are unknown when the function is rewritten, so each value's per-item rank
is an expression of the inputs' ranks (``pred.dim() - 1`` for ``pred[i]``), and what the batched
forms assume becomes the runtime check in front, vmap running otherwise:

* operands of an elementwise op have equal per-item ranks (a lower-rank operand would align its
  loop dim with a data dim of the other); where two per-item tensors' ranks may differ, a second
  form runs where they do (``batch_scope.lifted_operands``): the lower one gets dims of size 1
  after the loop dim (``item_broadcasts.broadcast_item``), its 0-d items cast to the items'
  result type (they promote by category only next to dimensioned ones, lifted they would not);
* an operand that does not vary is a Python number, or a tensor of at most the per-item rank with
  that rank >= 1 (it aligns from the right; and a 0-d tensor next to a per-item 0-d value
  promotes dtypes differently once that value has the loop dim);
* ``dim`` arguments are in range (dim -1 of a per-item 0-d value would be the loop dim);
* gather and class-loss indices are int64/int32 tensors (a bool index would be a mask);
* ``w[k, idx]``: ``w[k]`` drops one dim per entry (ints or 0-d indices, not lists or masks);
* set forms: ``x`` is per item [D]; ``w`` a tensor of rank 1 (or 2: a set) with ``x``'s dtype,
  float32/float64 (what cdist and the matmul take without promotion), and ``x``'s feature size
  (no broadcasting along the reduced dim);
* next to a loop input itself: per-item values of at most its rank, and per-item rank >= 1 or
  the dtype of the loop input whose rows they are equal to its (a per-item 0-d value promotes
  as a scalar, batched it is dimensioned; values of unknown dtype need rank >= 1).

Anything else (user functions, Python ``if``, shape queries on loop-varying values, an inner
vectorized loop) raises ``Unsupported`` with the reason: the loop is mapped with ``torch.vmap``.

Here the walk over statements and expressions; calls in ``batch_calls`` (a handler per
``OpSpec.batched``) and ``batch_set_forms``; what is known of values and the runtime checks in
``batch_scope``; ranks and value facts in ``batch_values``.
"""
from __future__ import annotations

import ast
import dataclasses

from ..errors import Unsupported

from .. import ast_marks
from .. import loop_rules as rules
from .. import loop_sums_keep_dtypes, ops
from ..ast_tools import PassContext, clone, fix_missing_locations, is_int, unparse, walk
from . import batch_calls as calls
from .batch_scope import Scope
from .batch_values import CONSTANT, Param, Rank, Val, integer, literal
from .loop_dataflow import UnwrapFixedOperands, call_op, fixed_operand_helpers, method_name
from .number_kinds import NUMBERS, int_sizes, number_kind, on_host
from .plan import BodyParam, LoopPlan
from .row_slices_to_params import rows_as_written
from .runtime_checks import proven_tensors

__all__ = ["Param", "Rank", "batch"]


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    """``plan.stmts``: the batched form of ``plan.body`` behind its own check, ``plan.mapped``
    (vmap) the else, then ``plan.folds``; when an op has no batched form, ``plan.mapped`` and the
    folds (``plan.unbatched`` says why)."""
    try:
        check, plain = batch(plan, ctx)
    except Unsupported as exc:  # an op without a batched form: vmap maps the body
        # the user's code, not the rewritten body's: a generated value as the code where it
        # stands (the ragged slice `x[i, :n]`, not `x[i].shape` its mask reads), then the row
        # parameters left as their reads
        plan.unbatched = rows_as_written(plan.quoted(exc.reason), plan)
        stmts = plan.mapped + plan.folds
    else:  # the check holds for the usual shapes; vmap is the general path
        forms = [] if check is None else [ast.If(check, plain, plan.mapped)]
        for node in forms:
            ast_marks.put(node, ast_marks.FORMS_OF, plan.node.lineno)
        stmts = (forms or plain) + plan.folds
        plan.batched_if = check
    plan.stmts = [fix_missing_locations(ast.copy_location(s, plan.node)) for s in stmts]
    return plan


def batch(plan: LoopPlan, ctx: PassContext) -> tuple[ast.expr | None, list]:
    """(runtime check or None when always true, statements binding ``plan.outs`` to the stacked
    outputs, the summed ones summed over the loop, the averaged ones of those averaged). Names
    the loop's check proves to be tensors are known to be tensors here. Raises ``Unsupported``.

    A body with a set form (a point against a fixed ``w``, see ``loop_rules.SIMILARITY_SET_FORMS``)
    is batched twice, for ``w`` of at most the per-item rank and for ``w`` a set of points: the
    check is that either holds, the code ``if <first check>: <first> else: <second>``. A body
    with per-item tensors whose ranks may differ alike: the second form lifts the lower ones."""
    trips = plan.iteration.trips(plan)
    tensors = frozenset(x.id for x in proven_tensors(plan.checks.expr())
                        if isinstance(x, ast.Name))

    params = [_param(p, plan) for p in plan.params]

    def attempt(sets: bool, lifts: bool = False) -> tuple[_Batcher, tuple | Unsupported]:
        b = _Batcher(ctx, plan.node, trips, plan.summed_parts(), plan.averaged_parts(), sets,
                     tensors, plan.fold_starts, lifts)
        try:  # the body stays as given
            return b, b.run(clone(plan.body), params, plan.outputs, plan.outs, plan.detached,
                            plan.python_floats())
        except Unsupported as exc:
            return b, exc
    first, done = attempt(sets=False)
    if first.set_forms:
        done = _either(done, attempt(sets=True)[1])
    elif first.liftable and not plan.inner:
        # per-item tensors whose ranks may differ: lifted where the first form's equal ranks
        # do not hold. An inner loop keeps its vmap form, which ``batch_both_loop_levels``
        # batches over both loops
        done = _either(done, attempt(sets=False, lifts=True)[1])
    if isinstance(done, Unsupported):
        raise done
    return done


def _either(done: tuple | Unsupported, other: tuple | Unsupported) -> tuple | Unsupported:
    """Two batched forms: ``if <first check>: <first> else: <other>`` behind either check
    (none: the other's holds always); the one there is when the other has none."""
    if isinstance(done, Unsupported):
        return done if isinstance(other, Unsupported) else other
    if isinstance(other, Unsupported) or done[0] is None:
        return done
    (check, stmts), (other_check, other_stmts) = done, other
    both = None if other_check is None else ast.BoolOp(ast.Or(), [clone(check), other_check])
    return both, [ast.If(check, stmts, other_stmts)]


def batch_rows(body: list[ast.stmt], params: list[Param], outputs: list[str], outs: str,
               trips: ast.expr, tensors: frozenset[str], ctx: PassContext,
               loc: ast.AST) -> tuple[ast.expr | None, list]:
    """``body`` batched over ``trips`` rows of ``params``, none of its outputs summed and no set
    forms: (runtime check or None when always true, statements binding ``outs`` to the stacked
    outputs). Raises ``Unsupported``."""
    return _Batcher(ctx, loc, trips, frozenset(), frozenset(), tensors=tensors).run(
        clone(body), params, outputs, outs, set())


def _param(p: BodyParam, plan: LoopPlan) -> Param:
    """A body parameter as the batcher sees it: rows of ``p.rows_of`` have its rank less one per
    dim the loop and the fixed entries take, and are integers when it is."""
    if p.rows_of is None:  # the loop index
        return Param(p.name, p.value, Rank(), (), index=True)
    rank = Rank() if isinstance(p.rows_of, ast.Name) and p.rows_of.id in plan.one_d \
        and not p.fixed else Rank.of(unparse(plan.sub("x.dim()", x=p.rows_of)), -1 - p.fixed)
    integer = unparse(plan.sub(f"x.dtype in {rules.INDEX_DTYPES}", x=p.rows_of))
    return Param(p.name, p.value, rank, (integer,))


def _source(p: Param) -> str | None:
    """What the runtime check evaluates for the batched rows of ``p`` (their dtype and last
    dim): the loop input (``x`` for ``x if <all rows> else x[a:b:s]``); None for the index."""
    if p.index:
        return None
    rows = p.batched.body if isinstance(p.batched, ast.IfExp) \
        and isinstance(p.batched.body, ast.Name) else p.batched
    return unparse(rows)


class _Batcher(Scope):
    """Walks the statements and expressions of the body; calls go to their op's handler."""

    def __init__(self, ctx: PassContext, loc: ast.AST, trips: ast.expr, summed: frozenset[str],
                 averaged: frozenset[str], sets: bool = False,
                 tensors: frozenset[str] = frozenset(), starts: dict[str, str] | None = None,
                 lifts: bool = False):
        super().__init__(ctx, loc, trips, sets, tensors, lifts)
        self.summed = summed
        self.averaged = averaged
        self.starts = starts or {}  # summed outputs -> what they are added onto (plan.fold_starts)
        self.onto: str | None = None  # ... that of the output being summed
        self.totals: set[str] = set()        # summed outputs holding their sum over the loop
        self.zeros: set[str] = set()          # names bound to the int 0 (a partial's start)
        self.index: tuple[str, ast.Call] | None = None  # the loop index and its arange

    def run(self, body: list[ast.stmt], params: list[Param], outputs: list[str],
            outs: str, detached: set[str],
            floats: frozenset[str] = frozenset()) -> tuple[ast.expr | None, list]:
        self.assigned = {n.id for s in body for n in walk(s)
                         if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        read = {n.id for s in body for n in walk(s)
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} | set(outputs)
        stmts = []
        for p in params:
            self.vals[p.name] = Val(True, p.rank, p.integer, source=_source(p),
                                    tensor=_source(p) is not None)
            index = p.index and p.name not in self.assigned
            if index:
                self.index = p.name, p.batched
            if _source(p) is not None:
                self.inputs.add(_source(p))
            if not index or p.name in read:  # an index the body never reads: no arange for it
                stmts += self.sub("p = x", p=p.name, x=p.batched)
        for s in body:
            stmts += self.stmt(s)
        stacked = []
        for name in outputs:
            self.onto = self.starts.get(name)
            if name in self.totals:
                stacked.append(ast.Name(name, ast.Load()))
            elif self.vals.get(name, CONSTANT).batched:
                stacked.append(self._summed(name) if name in self.summed else
                               ast.Name(name, ast.Load()))
            else:  # the same value in every iteration (a constant contribution; a Python
                # float of the items' sizes as float64, Python's double)
                dtype = ", dtype=torch.float64" if name in floats else ""
                each = self.sub(f"torch.as_tensor(o{dtype}).expand(n, *torch.as_tensor(o).shape)",
                                o=name, n=self.trips)
                stacked.append(self._summed(each) if name in self.summed else each)
            if name in self.averaged and name not in self.totals:
                stacked[-1] = self.sub("t / n", t=stacked[-1], n=self.trips)
            if name in detached:
                stacked[-1] = self.sub("t.detach()", t=stacked[-1])
        stmts += self.sub("o = v", o=outs, v=ast.Tuple(stacked, ast.Load()))
        check = self.checks.expr() if self.checks.conditions else None
        return check, stmts

    def stmt(self, s: ast.stmt) -> list[ast.stmt]:
        self.pre = []
        self.varying = {}
        if isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant):
            return [s]
        s = self._unmasked(s)
        if isinstance(s, ast.AugAssign) and isinstance(s.target, ast.Name):
            s = ast.copy_location(ast.Assign([ast.Name(s.target.id, ast.Store())], ast.BinOp(
                ast.Name(s.target.id, ast.Load()), s.op, s.value)), s)
        if isinstance(s, ast.Assign) and len(s.targets) == 1:
            target = s.targets[0]
            if isinstance(target, ast.Name) and _is_update(s.value, target.id, self.summed) \
                    and not self.vals.get(target.id, CONSTANT).batched:
                self.onto = self.starts.get(target.id)
                mean = target.id in self.averaged
                total = _stepped(self, s.value.right, self.total(s.value.right, mean)[0], mean)
                self.totals.add(target.id)
                # 0 + total is total when total is a (fresh, never bool) tensor
                value = total if target.id in self.zeros and isinstance(s.value.op, ast.Add) \
                    and self.varies(s.value.right) \
                    else ast.BinOp(ast.Name(target.id, ast.Load()), s.value.op, total)
                self.zeros.discard(target.id)
                return self.pre + [ast.copy_location(ast.Assign([target], value), s)]
            if isinstance(target, ast.Name):
                if is_int(s.value, 0):
                    self.zeros.add(target.id)
                else:
                    self.zeros.discard(target.id)
                value, val = self.expr(s.value)
                self.vals[target.id] = val
                return self.pre + [ast.copy_location(ast.Assign([target], value), s)]
            if isinstance(target, ast.Tuple) and isinstance(s.value, ast.Tuple) \
                    and len(target.elts) == len(s.value.elts) \
                    and all(isinstance(t, ast.Name) for t in target.elts):
                done = [self.expr(e) for e in s.value.elts]
                for t, (_, val) in zip(target.elts, done):
                    self.vals[t.id] = val
                    self.zeros.discard(t.id)
                value = ast.Tuple([v for v, _ in done], ast.Load())
                return self.pre + [ast.copy_location(ast.Assign([target], value), s)]
        line = ast_marks.get(s, ast_marks.FORMS_OF)
        if line is not None:
            raise Unsupported(f"the inner loop at line {line} picks its batched or vmapped form "
                              "by its items' shapes at run time, which has no batched form here")
        if isinstance(s, ast.FunctionDef):  # an inner loop's body, which vmap maps
            raise Unsupported(f"the inner loop at line {s.lineno} maps its body with vmap")
        first = unparse(s).strip().splitlines()[0]
        raise Unsupported(f"`{first}` has no batched form")

    def _unmasked(self, s: ast.stmt) -> ast.stmt:
        """``s`` with each ``h(p, w)`` (``FixedOperand``) as ``w``, behind the check that the
        names ``w`` is computed from take no gradient: a learnable ``w`` under a tensor
        condition is masked per item, in the vmap form."""
        helpers = fixed_operand_helpers(self.ctx)
        if not isinstance(s, (ast.Assign, ast.AugAssign)) \
                or not any(isinstance(n, ast.Name) and n.id in helpers for n in walk(s)):
            return s  # (other statements have no batched form)
        s = clone(s)
        for n in walk(s):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in helpers:
                leaves = self.leaves(n.args[1])
                if leaves is None or self.varies(n.args[1]):
                    raise Unsupported(f"`{unparse(n.args[1])}`: a value the loop does not "
                                      "change under a tensor condition, of unknown leaves")
                for leaf in sorted(leaves):
                    self.check(f"not (isinstance({leaf}, torch.Tensor) and {leaf}.requires_grad)")
        return UnwrapFixedOperands(helpers).visit(s)

    def total(self, node: ast.expr, mean: bool = False) -> tuple[ast.expr, Val]:
        """(the sum over the loop of ``node``'s per-item values, fused where exact, or with
        ``mean`` their mean; the per-item value's facts)."""
        if not self.varies(node):
            total = self.sub("e * n", e=node, n=self.trips)
            return self._divided(total) if mean else total, self.fixed(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            # the mean of the sum: the summed operands stay one expression for fuse_loss_idioms
            (left, lv), (right, rv) = self.total(node.left), self.total(node.right)
            total = ast.BinOp(left, node.op, right)
            return self._divided(total) if mean else total, _same_in_every_iteration(
                [(left, lv), (right, rv)]) if not (lv.batched or rv.batched) else \
                self.elementwise([lv, rv], node)  # (`o.shape[0] + 0.5` of stacked items)
        # c * e, e * c, e / c: the factor c that does not vary comes out of the sum
        factor_right = isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)) \
            and not self.varies(node.right)
        factor_left = isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult) \
            and not self.varies(node.left)
        if factor_right or factor_left:
            fixed, part = (node.left, node.right) if factor_left else (node.right, node.left)
            summed, val = self.total(part, mean)
            val = self.elementwise([val, self.fixed(fixed)], node) if val.batched else \
                _same_in_every_iteration([(part, val), (fixed, self.fixed(fixed))])
            new = ast.BinOp(fixed, node.op, summed) if fixed is node.left \
                else ast.BinOp(summed, node.op, fixed)
            return ast.copy_location(new, node), val
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            summed, val = self.total(node.operand, mean)
            return ast.copy_location(ast.UnaryOp(node.op, summed), node), val
        if isinstance(node, ast.Call) and not node.keywords and not any(
                isinstance(a, ast.Starred) for a in node.args):
            meth, summed = method_name(node, self.ctx), call_op(node, self.ctx).summed
            operand = node.func.value if meth is not None else node.args[0] if node.args else None
            if summed is not None and len(node.args) == (meth is None) and self.varies(operand):
                x, _ = self.expr(operand)
                return self.sub(summed[mean], x=x, n=self.trips), Val(True, Rank())
        if isinstance(node, ast.Call):
            batched = call_op(node, self.ctx).batched
            args = [self.expr(a) for a in node.args] if batched in (
                "pointwise_loss", "class_loss") else None
            kws = [(k.arg, self.expr(k.value)) for k in node.keywords] if args else None
            if batched == "pointwise_loss":
                return calls.pointwise_loss(self, node, args, kws, summed=True, mean=mean)
            if batched == "class_loss":
                total, val = calls.class_loss(self, node, args, kws, summed=True)
                return self._divided(total) if mean else total, val
        value, val = self.expr(node)
        # a value that reads the items but is the same for each (``x[i].shape[0]``): n times it
        total = self._summed(value) if val.batched else self.sub("e * n", e=value, n=self.trips)
        return self._divided(total) if mean else total, val

    def _summed(self, items: ast.expr | str) -> ast.expr:
        """``items.sum(0)``, the sum over the loop (``loop_sums_keep_dtypes`` keeps its dtype,
        or that of its addition onto ``onto``)."""
        return loop_sums_keep_dtypes.mark(self.sub("e.sum(0)", e=items), self.onto)

    def _divided(self, total: ast.expr) -> ast.expr:
        return self.sub("t / n", t=total, n=self.trips)

    def expr(self, node: ast.expr) -> tuple[ast.expr, Val]:
        value, val = self._expr(node)
        if val.tensor and ast_marks.get(node, ast_marks.HOST_NUMBER):  # a number as written
            val = dataclasses.replace(val, tensor=False)
        return value, val

    def _expr(self, node: ast.expr) -> tuple[ast.expr, Val]:
        if not self.varies(node):
            return node, self.fixed(node)
        if isinstance(node, ast.Name):
            return node, self.vals[node.id]
        if isinstance(node, ast.BinOp):
            op = ops.by_operator(type(node.op))
            operands = [self.expr(node.left), self.expr(node.right)]
            if op is not ops.UNKNOWN and op.batched != "elementwise":  # ``@``: no broadcast
                return calls.operator(self, node, op, operands)
            if not any(v.batched for _, v in operands):  # `o.shape[0] * o.shape[1]` of stacked
                return ast.copy_location(ast.BinOp(operands[0][0], node.op, operands[1][0]),
                                         node), _same_in_every_iteration(operands)
            (left, right), val = self.aligned(operands, node)
            val = Val(True, val.rank, integer(operands) if op.integer is not None
                      else val.integer, tensor=any(v.tensor for _, v in operands))
            return ast.copy_location(ast.BinOp(left, node.op, right), node), val
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Invert)):
            operand, val = self.expr(node.operand)
            return ast.copy_location(ast.UnaryOp(node.op, operand), node), val
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            operands = [self.expr(node.left), self.expr(node.comparators[0])]
            if not any(v.batched for _, v in operands):  # `o.shape[1] > 2` of stacked items
                return ast.copy_location(ast.Compare(operands[0][0], node.ops, [operands[1][0]]),
                                         node), _same_in_every_iteration(operands)
            (left, right), val = self.aligned(operands, node)
            return ast.copy_location(ast.Compare(left, node.ops, [right]), node), val
        if isinstance(node, ast.Call):
            return _number_of_sizes(self, node) or calls.call(self, node)
        if isinstance(node, ast.IfExp):
            return self._if_exp(node)
        if isinstance(node, ast.Attribute):
            # metadata (the same in every iteration), and its attributes: values that do not vary
            value, vv = self.expr(node.value)
            if vv.batched and node.attr in ops.BATCHED_ATTRIBUTES:
                return self.sub(ops.BATCHED_ATTRIBUTES[node.attr], x=value), Val(False)
            if not vv.batched:  # an attribute of metadata (``expr`` of a varying node)
                return ast.copy_location(ast.Attribute(value, node.attr, ast.Load()), node), vv
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            return _item_size(self, node) or self._subscript(node)
        if isinstance(node, ast.BoolOp):
            return _item_number(self, node)
        raise Unsupported(f"`{unparse(node)}` has no batched form")

    def _if_exp(self, node: ast.IfExp) -> tuple[ast.expr, Val]:
        """``a if c else b`` with ``c`` the same in every iteration (metadata): both branches
        loop-varying with one per-item rank, so the choice does not change what is batched."""
        test, tv = self.expr(node.test)
        (a, av), (b, bv) = self.expr(node.body), self.expr(node.orelse)
        if tv.batched or not (av.batched and bv.batched) or av.rank is None or bv.rank is None:
            raise Unsupported(f"`{unparse(node)}` has no batched form")
        self.require(av.rank - bv.rank, "==", node)
        return ast.copy_location(ast.IfExp(test, a, b), node), Val(True, av.rank)

    def _subscript(self, node: ast.Subscript) -> tuple[ast.expr, Val]:
        entries = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        base, bv = self.expr(node.value)
        if bv.batched and not any(self.varies(e) for e in entries):
            # fixed ints, slices, None, ...: the same selection after the loop dim
            kinds = [literal(e) if not isinstance(e, ast.Slice) else slice for e in entries]
            if not all(k is slice or k is None or k is Ellipsis or type(k) is int for k in kinds):
                raise Unsupported(f"`{unparse(node)}`: index without a batched form")
            full = ast.Slice(None, None, None)
            new = ast.Subscript(base, ast.Tuple([full] + list(entries), ast.Load()), ast.Load())
            rank = None if bv.rank is None else (
                bv.rank - sum(type(k) is int for k in kinds) + sum(k is None for k in kinds))
            return ast.copy_location(new, node), Val(True, rank, bv.integer, tensor=bv.tensor)
        if not bv.batched and len(entries) > 1:
            return _fixed_columns(self, node, entries) or self._fixed_gather(node, entries)
        if len(entries) != 1:
            raise Unsupported(f"`{unparse(node)}`: index without a batched form")
        idx, iv = self.expr(entries[0])
        if not iv.batched or iv.integer is None or iv.rank is None:
            raise Unsupported(f"`{unparse(node)}`: index not known to be an integer tensor")
        for cond in iv.integer:
            self.check(cond)
        if not bv.batched:  # w[idx]: per item w[idx_k], all at once w[idx]
            text = self.free(base)
            if text is None:
                raise Unsupported(f"`{unparse(node)}`: gather from a computed value")
            if not isinstance(base, ast.Name):  # (vectorize_loops checks names the loop indexes)
                self.check(f"isinstance({text}, torch.Tensor)")
            rank = iv.rank + Rank.of(f"{text}.dim()") - 1
            rows = _rows_at_index(self, base, text, idx)
            if rows is not None:
                return rows, Val(True, rank)
            return ast.copy_location(ast.Subscript(base, idx, ast.Load()), node), Val(True, rank)
        if bv.rank is None:
            raise Unsupported(f"`{unparse(node)}`: per-item rank unknown")
        self.require(iv.rank, "==", node)       # one index per item
        self.require(bv.rank - 1, ">=", node)
        base = self.named(base)
        new = self.sub("x[torch.arange(len(x), device=x.device), i]", x=base, i=idx)
        return new, Val(True, bv.rank - 1)

    def _fixed_gather(self, node: ast.Subscript, entries: list[ast.expr]):
        """``w[i, j]``: a fixed ``w`` at fixed ints ``i``, then a loop-varying index ``j`` ->
        ``w[i][j]``, when ``w[i]`` drops one dim per entry (ints: not index lists nor masks)."""
        *fixed, last = entries
        prefix = ast.Subscript(node.value, ast.Tuple(fixed, ast.Load()) if len(fixed) > 1
                               else fixed[0], ast.Load())
        base, text = self.free(node.value), self.free(prefix)
        if base is None or text is None or any(isinstance(e, ast.Slice) for e in fixed):
            raise Unsupported(f"`{unparse(node)}`: index without a batched form")
        self.check(f"isinstance({base}, torch.Tensor) and {text}.dim() == {base}.dim() - "
                   f"{len(fixed)}")
        return self._subscript(ast.copy_location(ast.Subscript(prefix, last, ast.Load()), node))


def _fixed_columns(b: _Batcher, node: ast.Subscript,
                   entries: list[ast.expr]) -> tuple[ast.expr, Val] | None:
    """``logits[:, c]``: a fixed tensor's full slices, then a per-item integer index of rank 0
    (a class id iterated from ``torch.unique(labels)``) -> ``logits[:, cs].movedim(1, 0)``, the
    columns of every iteration gathered at once (an index's backward adds into the same
    columns as the per-item ones); None for other subscripts (``_fixed_gather`` takes ints)."""
    *lead, last = entries
    if not all(isinstance(e, ast.Slice) and e.lower is e.upper is e.step is None for e in lead) \
            or not b.varies(last):
        return None
    idx, iv = b.expr(last)
    text = b.free(node.value)
    if not iv.batched or iv.integer is None or iv.rank is None or text is None:
        return None
    for cond in iv.integer:
        b.check(cond)
    b.require(iv.rank, "==", node)  # one index per item
    b.check(f"isinstance({text}, torch.Tensor) and {text}.dim() > {len(lead)}")
    gathered = ast.Subscript(node.value, ast.Tuple(lead + [idx], ast.Load()), ast.Load())
    value = b.sub(f"x.movedim({len(lead)}, 0)", x=ast.copy_location(gathered, node))
    return value, Val(True, Rank.of(f"{text}.dim()") - 1, tensor=True)


def _item_number(b: _Batcher, node: ast.BoolOp) -> tuple[ast.expr, Val]:
    """The kind of a host number ``h.item()`` (``rules.HOST_ITEM_NUMBER``) of a per-item
    ``h`` known to be an integer tensor: this pattern becomes ``1`` behind the check that
    it is one (``Val.integer``), so ``L.to(torch.result_type(s, 1))`` divides ``s`` as the
    Python int ``L`` does. Float lengths keep vmap (a weak scalar of another spelling)."""
    h = node.values[0].values[0].value.value if isinstance(node.values[0], ast.BoolOp) \
        and isinstance(node.values[0].values[0], ast.Attribute) \
        and isinstance(node.values[0].values[0].value, ast.Attribute) else None
    if h is None or ast.dump(b.sub(rules.HOST_ITEM_NUMBER, h=h)) != ast.dump(node):
        raise Unsupported(f"`{unparse(node)}` has no batched form")
    _, hv = b.expr(h)
    if not hv.batched or hv.integer is None or hv.rank is None:
        raise Unsupported(f"`{unparse(h)}`: a host number not known to be an int")
    b.require(hv.rank, "==", node)  # a 0-d item: ``.item()`` of more raises
    for cond in hv.integer:
        b.check(cond)
    return ast.copy_location(ast.Constant(1), node), CONSTANT


def _rows_at_index(batcher: _Batcher, w: ast.expr, text: str, idx: ast.expr) -> ast.expr | None:
    """``w[i]``, ``i`` the index of ``range(a, b, s)`` (int literals ``a >= 0``, ``s > 0``):
    all at once ``w[a:b:s].clone()``, the rows the gather ``w[torch.arange(a, b, s)]``
    copies, without an index tensor (Inductor then runs the elementwise ops over them as
    one flat loop), behind the check ``0 <= b <= len(w)`` (else the vmapped form raises as
    the original). None: not this pattern."""
    if batcher.index is None or not (isinstance(idx, ast.Name) and idx.id == batcher.index[0]):
        return None
    arange = batcher.index[1]
    if not (isinstance(arange, ast.Call) and len(arange.args) == 3):
        return None
    a, b, s = arange.args
    if not (type(literal(a)) is int and literal(a) >= 0
            and type(literal(s)) is int and literal(s) > 0):
        return None
    batcher.check(f"{text}.dim() > 0 and 0 <= {unparse(b)} <= {text}.shape[0]")
    return batcher.sub("w[a:b:s].clone()", w=w, a=a, b=b, s=s)


def _item_size(b: _Batcher, node: ast.Subscript) -> tuple[ast.expr, Val] | None:
    """``r.shape[k]`` of a batched ``r``, ``k >= 0`` an int literal -> ``r.shape[k + 1]``: the
    items of a batched tensor all have one shape, a Python int the same in every iteration
    (``k`` past the item's dims raises the same ``IndexError``). None: not this pattern."""
    shape, k = node.value, literal(node.slice)
    if not (isinstance(shape, ast.Attribute) and shape.attr == "shape"
            and type(k) is int and k >= 0):
        return None
    rows, val = b.expr(shape.value)
    if not (val.batched and val.tensor):
        return None
    return b.sub(f"r.shape[{k + 1}]", r=rows), Val(False)


def _number_of_sizes(b: _Batcher, node: ast.Call) -> tuple[ast.expr, Val] | None:
    """A Python number function of the items' sizes and literals (``math.sqrt(o.shape[0])``,
    ``round(len(o) / 3)``: ``number_kinds``), the same in every iteration: the call of their
    batched forms (``o.shape[1]`` of the stacked items). None: not this pattern."""
    if not (number_kind(node, b.ctx) in NUMBERS and on_host(node, lambda name: None)
            and method_name(node, b.ctx) is None and not int_sizes(node, b.ctx)):
        return None
    args = [b.expr(a) for a in node.args]
    if any(v.batched for _, v in args):
        raise Unsupported(f"`{unparse(node)}`: a Python number of batched values")
    return ast.copy_location(ast.Call(node.func, [a for a, _ in args], []), node), \
        _same_in_every_iteration(args)


def _same_in_every_iteration(operands: list[tuple[ast.expr, Val]]) -> Val:
    """The facts of an op of values that are the same in every iteration (items' sizes): not
    batched, computed from their leaves."""
    leaves = [v.leaves for _, v in operands]
    return Val(False, leaves=None if None in leaves else frozenset().union(*leaves))


def _stepped(b: _Batcher, node: ast.expr, total: ast.expr, mean: bool) -> ast.expr:
    """``total``, the sum over the loop of ``node``'s per-item values fused into other ops
    (``x.sum()``, ``F.mse_loss(..., reduction='sum')``, ``c * x.sum(0)``, ``e * n``), as
    ``summed_in_steps(total, <the per-item values' loop sum>)``: float16/bfloat16 per-item values
    are added one by one (``loop_sums_keep_dtypes``), as the original adds them, where a fused op
    accumulates in float32 and rounds once. The per-item values are computed only then (in a
    function of the temporaries they need, or a lambda)."""
    plain = total.left if mean and isinstance(total, ast.BinOp) else total
    if ast_marks.get(plain, ast_marks.LOOP_SUM):
        return total  # already the loop sum of the per-item values
    pre, b.pre = b.pre, []
    value, val = b.expr(node) if b.varies(node) else (node, None)
    if val is not None and val.batched:
        items = b._summed(value)
    else:  # the same value in every iteration (a stacked item's `o.shape[0]` too), added once
        items = b._summed(b.sub("torch.as_tensor(o).expand(n, *torch.as_tensor(o).shape)",
                                o=value, n=b.trips))
    items = b._divided(items) if mean else items
    temporaries, b.pre = b.pre, pre
    fn = b.ctx.bind(loop_sums_keep_dtypes.summed_in_steps, "summed_in_steps")
    if not temporaries:
        return b.sub(f"{fn}(t, lambda: v)", t=total, v=items)
    name = b.ctx.namer.new("items_sum")
    b.pre += b.sub(f"def {name}():\n    pass")
    b.pre[-1].body = temporaries + [ast.Return(items)]
    return b.sub(f"{fn}(t, {name})", t=total)


def _is_update(value: ast.expr, name: str, summed: frozenset[str]) -> bool:
    """``p = p + e`` / ``p = p - e`` of a summed output ``p``."""
    return (name in summed and isinstance(value, ast.BinOp)
            and isinstance(value.op, (ast.Add, ast.Sub)) and isinstance(value.left, ast.Name)
            and value.left.id == name and name not in {n.id for n in walk(value.right)
                                                       if isinstance(n, ast.Name)})
