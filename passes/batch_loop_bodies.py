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
``x[torch.arange(len(x), device=x.device), idx]`` (``w[idx]`` unchanged when ``w`` does not vary);
``F.mse_loss(a, b)`` and the other pointwise losses -> ``F.mse_loss(a, b, reduction="none")``
averaged per item; ``F.cross_entropy(x, t)`` on [N, C] items -> ``reduction="none"`` summed per item
over the count of non-ignored targets (what the mean divides by); ``torch.dot(a, b)`` ->
``(a * b).sum(1)``; ``w[k, idx]`` (fixed ``w``, fixed ints ``k``) -> ``w[k][idx]``;
``F.cosine_similarity(a, b, dim=d)`` -> the same call with ``dim=d + 1``.

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
starts at), fused into one op where that is exact (``loop_rules.SUMMED_*``):
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
  loop dim with a data dim of the other);
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
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

from .errors import Unsupported

from . import loop_rules as rules
from . import ops
from .ast_tools import PassContext, clone, is_int, replace, unparse, walk
from .loop_dataflow import call_op, is_shape_query, method_name, resolve_call


@dataclass(frozen=True)
class Rank:
    """A per-item rank: ``const + sum(coeff * term)``; terms are rank expressions of the inputs
    (``"pred.dim()"``), which the runtime check may compare."""
    terms: tuple[tuple[str, int], ...] = ()
    const: int = 0

    @staticmethod
    def of(term: str, const: int = 0) -> "Rank":
        return Rank(((term, 1),), const)

    def __add__(self, other: "Rank | int") -> "Rank":
        if isinstance(other, int):
            return Rank(self.terms, self.const + other)
        coeffs = dict(self.terms)
        for term, c in other.terms:
            coeffs[term] = coeffs.get(term, 0) + c
        return Rank(tuple(sorted((t, c) for t, c in coeffs.items() if c)),
                    self.const + other.const)

    def __sub__(self, other: "Rank | int") -> "Rank":
        if isinstance(other, int):
            return self + -other
        return self + Rank(tuple((t, -c) for t, c in other.terms), -other.const)


@dataclass(frozen=True)
class Param:
    """A parameter of the outlined body: its name, what it is bound to with the loop dim in
    front, its per-item rank, and the conditions making it an integer tensor (None: unknown)."""
    name: str
    batched: ast.expr
    rank: Rank
    integer: tuple[str, ...] | None


@dataclass(frozen=True)
class _Val:
    """What the rewrite knows about a value of the body."""
    batched: bool                             # carries the loop dim in front
    rank: Rank | None = None                  # batched: per-item rank (None: unknown)
    integer: tuple[str, ...] | None = None    # conditions making it an integer tensor
    # Not batched: the free names it is computed from by elementwise ops, reductions and fixed
    # indexing (so its rank is at most theirs); None when other ops are involved.
    leaves: frozenset[str] | None = frozenset()
    # Batched rows of a loop input: source the runtime check can evaluate (dtype, last dim).
    source: str | None = None
    # Not batched: a loop input itself (its source), a set of the rows the body is given.
    whole: str | None = None


_CONSTANT = _Val(False)


def batch(body: list[ast.stmt], params: list[Param], outputs: list[str], outs: str,
          trips: ast.expr, ctx: PassContext, loc: ast.AST, summed: frozenset[str] = frozenset(),
          averaged: frozenset[str] = frozenset(),
          tensors: frozenset[str] = frozenset()) -> tuple[ast.expr | None, list]:
    """(runtime check or None when always true, statements binding ``outs`` to the stacked
    outputs, the ``summed`` ones summed over the loop, the ``averaged`` ones of those averaged).
    ``trips``: the number of iterations; ``tensors``: names known to be tensors (the caller's
    check proves it). Raises ``Unsupported``.

    A body with a set form (a point against a fixed ``w``, see ``loop_rules.SIMILARITY_SET_FORMS``)
    is batched twice, for ``w`` of at most the per-item rank and for ``w`` a set of points: the
    check is that either holds, the code ``if <first check>: <first> else: <second>``."""
    def attempt(sets: bool) -> tuple[_Batcher, tuple | Unsupported]:
        b = _Batcher(ctx, loc, trips, summed, averaged, sets, tensors)
        try:
            return b, b.run(clone(body), params, outputs, outs)  # body stays as given
        except Unsupported as exc:
            return b, exc
    first, done = attempt(sets=False)
    if first.set_forms:
        _, other = attempt(sets=True)
        if isinstance(done, Unsupported):
            done = done if isinstance(other, Unsupported) else other
        elif not isinstance(other, Unsupported) and done[0] is not None:
            (check, stmts), (other_check, other_stmts) = done, other
            both = None if other_check is None \
                else ast.BoolOp(ast.Or(), [clone(check), other_check])
            done = both, [ast.If(check, stmts, other_stmts)]
    if isinstance(done, Unsupported):
        raise done
    return done


def _condition(diff: Rank, op: str) -> str | bool:
    """``diff <op> 0`` as Python source, or its truth when no input rank is involved."""
    if not diff.terms:
        return diff.const == 0 if op == "==" else diff.const >= 0
    left = [_times(t, c) for t, c in diff.terms if c > 0] + ([str(diff.const)] if diff.const > 0 else [])
    right = [_times(t, -c) for t, c in diff.terms if c < 0] + ([str(-diff.const)] if diff.const < 0 else [])
    return f"{' + '.join(left) or '0'} {op} {' + '.join(right) or '0'}"


def _source_of(rank: Rank) -> str:
    """``rank`` as Python source (``x.dim() - t.dim() + 1``)."""
    parts = [(f" - {_times(t, -c)}" if c < 0 else f" + {_times(t, c)}")
             for t, c in sorted(rank.terms, key=lambda term: term[1] < 0)]
    if rank.const:
        parts.append(f" - {-rank.const}" if rank.const < 0 else f" + {rank.const}")
    text = "".join(parts) or " + 0"
    return text[3:] if text.startswith(" + ") else "-" + text[3:]


def _times(term: str, c: int) -> str:
    return term if c == 1 else f"{c} * {term}"


_UNKNOWN = object()


def _literal(node: ast.expr) -> object:
    """The value of a literal (``-1``, ``(0, 2)``, ``None``); ``_UNKNOWN`` for anything else."""
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        return _UNKNOWN


def _source(p: Param) -> str | None:
    """What the runtime check evaluates for the batched rows of ``p`` (their dtype and last
    dim): the loop input (``x`` for ``x if <all rows> else x[a:b:s]``); None for the index."""
    if not p.rank.terms:
        return None
    rows = p.batched.body if isinstance(p.batched, ast.IfExp) \
        and isinstance(p.batched.body, ast.Name) else p.batched
    return unparse(rows)


class _Batcher:
    def __init__(self, ctx: PassContext, loc: ast.AST, trips: ast.expr, summed: frozenset[str],
                 averaged: frozenset[str], sets: bool = False,
                 tensors: frozenset[str] = frozenset()):
        self.ctx = ctx
        self.sets = sets                      # fixed operands of set forms are sets of points
        self.tensors = tensors                # names known to be tensors
        self.set_forms = False                # a set form was met (batch tries ``sets``)
        self.assigned: set[str] = set()       # names the body binds
        self.loc = loc
        self.trips = trips
        self.summed = summed
        self.averaged = averaged
        self.totals: set[str] = set()        # summed outputs holding their sum over the loop
        self.vals: dict[str, _Val] = {}
        self.zeros: set[str] = set()          # names bound to the int 0 (a partial's start)
        self.checks: dict[str, None] = {}    # runtime conditions, in order, without duplicates
        self.inputs: set[str] = set()         # sources of the loop inputs whose rows are params
        self.pre: list[ast.stmt] = []        # temporaries of the statement being rewritten
        self.varying: dict[int, tuple] = {}  # id(node) -> (node, _varies), for that statement

    def run(self, body: list[ast.stmt], params: list[Param], outputs: list[str],
            outs: str) -> tuple[ast.expr | None, list]:
        self.assigned = {n.id for s in body for n in walk(s)
                         if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        stmts = []
        for p in params:
            self.vals[p.name] = _Val(True, p.rank, p.integer, source=_source(p))
            if _source(p) is not None:
                self.inputs.add(_source(p))
            stmts += self.sub("p = x", p=p.name, x=p.batched)
        for s in body:
            stmts += self.stmt(s)
        stacked = []
        for name in outputs:
            if name in self.totals:
                stacked.append(ast.Name(name, ast.Load()))
            elif self.vals.get(name, _CONSTANT).batched:
                stacked.append(self.sub("o.sum(0)" if name in self.summed else "o", o=name))
            else:  # the same value in every iteration (a constant contribution)
                stacked.append(self.sub("torch.as_tensor(o).expand(n, *torch.as_tensor(o).shape)"
                                        + (".sum(0)" if name in self.summed else ""), o=name,
                                        n=self.trips))
            if name in self.averaged and name not in self.totals:
                stacked[-1] = self.sub("t / n", t=stacked[-1], n=self.trips)
        stmts += self.sub("o = v", o=outs, v=ast.Tuple(stacked, ast.Load()))
        checks = [self.sub(text) for text in self.checks]
        check = (checks[0] if len(checks) == 1 else ast.BoolOp(ast.And(), checks)) if checks \
            else None
        return check, stmts

    def sub(self, template: str, **subs) -> object:
        return replace(template, loc=self.loc, torch_name=self.ctx.torch_name, **subs)

    def require(self, diff: Rank, op: str, what: ast.AST) -> None:
        cond = _condition(diff, op)
        if cond is False:
            raise Unsupported(f"`{unparse(what)}`: per-item ranks never fit its batched form")
        if cond is not True:
            self.checks[cond] = None

    def named(self, node: ast.expr) -> ast.Name:
        """``node`` as a name, to use it twice: a temporary unless it is one already."""
        if isinstance(node, ast.Name):
            return node
        name = self.ctx.namer.new("t")
        self.pre += self.sub("t = v", t=name, v=node)
        return ast.Name(name, ast.Load())

    def free(self, node: ast.expr) -> str | None:
        """``node`` as source the runtime check can evaluate before the loop: names the body
        does not bind, their attributes, indexed by int literals, such names and slices of
        them (``z1[i]``, ``self.centers``); None for anything else."""
        def bound(e: ast.expr | None) -> bool:
            return e is None or type(_literal(e)) is int \
                or isinstance(e, ast.Name) and self.free(e) is not None
        if isinstance(node, ast.Name):
            ok = node.id not in self.vals and node.id not in self.assigned
        elif isinstance(node, ast.Attribute):
            ok = self.free(node.value) is not None
        elif isinstance(node, ast.Subscript):
            entries = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            ok = self.free(node.value) is not None and all(
                all(bound(b) for b in (e.lower, e.upper, e.step)) if isinstance(e, ast.Slice)
                else e is not None and bound(e) for e in entries)
        else:
            ok = False
        return unparse(node) if ok else None

    # ------------------------------------------------------------------------------------------
    def stmt(self, s: ast.stmt) -> list[ast.stmt]:
        self.pre = []
        self.varying = {}
        if isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant):
            return [s]
        if isinstance(s, ast.AugAssign) and isinstance(s.target, ast.Name):
            s = ast.copy_location(ast.Assign([ast.Name(s.target.id, ast.Store())], ast.BinOp(
                ast.Name(s.target.id, ast.Load()), s.op, s.value)), s)
        if isinstance(s, ast.Assign) and len(s.targets) == 1:
            target = s.targets[0]
            if isinstance(target, ast.Name) and _is_update(s.value, target.id, self.summed) \
                    and not self.vals.get(target.id, _CONSTANT).batched:
                total, _ = self.total(s.value.right, mean=target.id in self.averaged)
                self.totals.add(target.id)
                # 0 + total is total when total is a (fresh, never bool) tensor
                value = total if target.id in self.zeros and isinstance(s.value.op, ast.Add) \
                    and self._varies(s.value.right) \
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
        first = unparse(s).strip().splitlines()[0]
        raise Unsupported(f"`{first}` has no batched form")

    def total(self, node: ast.expr, mean: bool = False) -> tuple[ast.expr, _Val]:
        """(the sum over the loop of ``node``'s per-item values, fused where exact, or with
        ``mean`` their mean; the per-item value's facts)."""
        if not self._varies(node):
            total = self.sub("e * n", e=node, n=self.trips)
            return self._divided(total) if mean else total, self._fixed(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            # the mean of the sum: the summed operands stay one expression for fuse_loss_idioms
            (left, lv), (right, rv) = self.total(node.left), self.total(node.right)
            total = ast.BinOp(left, node.op, right)
            return self._divided(total) if mean else total, self._elementwise([lv, rv], node)
        # c * e, e * c, e / c: the factor c that does not vary comes out of the sum
        factor_right = isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)) \
            and not self._varies(node.right)
        factor_left = isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult) \
            and not self._varies(node.left)
        if factor_right or factor_left:
            fixed, part = (node.left, node.right) if factor_left else (node.right, node.left)
            summed, val = self.total(part, mean)
            val = self._elementwise([val, self._fixed(fixed)], node)
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
            if summed is not None and len(node.args) == (meth is None) and self._varies(operand):
                x, _ = self.expr(operand)
                return self.sub(summed[mean], x=x, n=self.trips), _Val(True, Rank())
        if isinstance(node, ast.Call):
            batched = call_op(node, self.ctx).batched
            args = [self.expr(a) for a in node.args] if batched in (
                "pointwise_loss", "class_loss") else None
            kws = [(k.arg, self.expr(k.value)) for k in node.keywords] if args else None
            if batched == "pointwise_loss":
                return self._pointwise_loss(node, args, kws, summed=True, mean=mean)
            if batched == "class_loss":
                total, val = self._class_loss(node, args, kws, summed=True)
                return self._divided(total) if mean else total, val
        value, val = self.expr(node)
        total = self.sub("e.sum(0)", e=value)
        return self._divided(total) if mean else total, val

    def _divided(self, total: ast.expr) -> ast.expr:
        return self.sub("t / n", t=total, n=self.trips)

    def expr(self, node: ast.expr) -> tuple[ast.expr, _Val]:
        if not self._varies(node):
            return node, self._fixed(node)
        if isinstance(node, ast.Name):
            return node, self.vals[node.id]
        if isinstance(node, ast.BinOp):
            operands = [self.expr(node.left), self.expr(node.right)]
            (left, right), val = self._aligned(operands, node)
            if ops.by_operator(type(node.op)).integer is not None:
                val = _Val(True, val.rank, _integer(operands))
            return ast.copy_location(ast.BinOp(left, node.op, right), node), val
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Invert)):
            operand, val = self.expr(node.operand)
            return ast.copy_location(ast.UnaryOp(node.op, operand), node), val
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            (left, right), val = self._aligned([self.expr(node.left),
                                                self.expr(node.comparators[0])], node)
            return ast.copy_location(ast.Compare(left, node.ops, [right]), node), val
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.IfExp):
            return self._if_exp(node)
        if isinstance(node, ast.Attribute):
            # metadata (the same in every iteration), and its attributes: values that do not vary
            value, vv = self.expr(node.value)
            if vv.batched and node.attr in ops.BATCHED_ATTRIBUTES:
                return self.sub(ops.BATCHED_ATTRIBUTES[node.attr], x=value), _Val(False)
            if not vv.batched:  # an attribute of metadata (``expr`` of a varying node)
                return ast.copy_location(ast.Attribute(value, node.attr, ast.Load()), node), vv
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            return self._subscript(node)
        raise Unsupported(f"`{unparse(node)}` has no batched form")

    def _if_exp(self, node: ast.IfExp) -> tuple[ast.expr, _Val]:
        """``a if c else b`` with ``c`` the same in every iteration (metadata): both branches
        loop-varying with one per-item rank, so the choice does not change what is batched."""
        test, tv = self.expr(node.test)
        (a, av), (b, bv) = self.expr(node.body), self.expr(node.orelse)
        if tv.batched or not (av.batched and bv.batched) or av.rank is None or bv.rank is None:
            raise Unsupported(f"`{unparse(node)}` has no batched form")
        self.require(av.rank - bv.rank, "==", node)
        return ast.copy_location(ast.IfExp(test, a, b), node), _Val(True, av.rank)

    def _varies(self, node: ast.AST) -> bool:
        """Whether ``node`` reads a batched value (shape queries included: they must change)."""
        if isinstance(node, ast.Name):
            return node.id in self.vals and self.vals[node.id].batched
        # ``expr`` asks this of every subexpression: each answer is kept for the statement (the
        # names it reads are bound before it; the entry holds the node, so its id stays its own)
        known = self.varying.get(id(node))
        if known is None:
            known = self.varying[id(node)] = (node, any(
                self._varies(c) for c in ast.iter_child_nodes(node)))
        return known[1]

    def _fixed(self, node: ast.expr) -> _Val:
        """A value the loop does not change; its leaves (see ``_Val``)."""
        text = self.free(node)
        whole = text if text is not None and text in self.inputs else None
        return _Val(False, leaves=self._leaves(node), whole=whole)

    def _leaves(self, node: ast.expr) -> frozenset[str] | None:
        if isinstance(node, ast.Constant) or is_shape_query(node, self.ctx):
            return frozenset()  # a number, or a Python int/tuple
        if isinstance(node, ast.Name) and node.id in self.vals:
            return self.vals[node.id].leaves
        if isinstance(node, (ast.Name, ast.Attribute)):
            root = node
            while isinstance(root, ast.Attribute):
                root = root.value
            if not isinstance(root, ast.Name):
                return None
            if resolve_call(root, self.ctx) == "torch":
                return frozenset()  # torch.float32, torch.pi
            return frozenset({unparse(node)})
        parts: list[ast.expr] = []
        if isinstance(node, ast.BinOp):
            parts = [node.left, node.right]
        elif isinstance(node, ast.UnaryOp):
            parts = [node.operand]
        elif isinstance(node, ast.Compare):
            parts = [node.left] + node.comparators
        elif isinstance(node, ast.Subscript):  # fixed ints and slices: the rank does not grow
            entries = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            if not all(isinstance(e, ast.Slice) or type(_literal(e)) is int for e in entries):
                free = self.free(node)  # ``z1[i]``: the check evaluates it
                return None if free is None else frozenset({free})
            parts = [node.value] + [b for e in entries if isinstance(e, ast.Slice)
                                    for b in (e.lower, e.upper, e.step) if b is not None]
        elif isinstance(node, ast.Call) and not any(isinstance(a, ast.Starred) for a in node.args):
            if call_op(node, self.ctx).batched not in ("elementwise", "reduction"):
                return None  # (their result has at most the rank of their operands)
            parts = ([node.func.value] if method_name(node, self.ctx) else []) + node.args \
                + [k.value for k in node.keywords]
        else:
            return None
        found: set[str] = set()
        for p in parts:
            sub = self._leaves(p)
            if sub is None:
                return None
            found |= sub
        return frozenset(found)

    def _aligned(self, operands: list[tuple[ast.expr, _Val]], node: ast.AST):
        """([operands], the result's facts) of an elementwise op: with ``sets``, per-item values
        next to a loop input itself get dims of size 1 after the loop dim up to its rank."""
        val = self._elementwise([v for _, v in operands], node, aligned=True)
        if not any(v.whole is not None and not v.batched for _, v in operands) or not self.sets:
            return [e for e, _ in operands], val
        out = []
        for e, v in operands:
            k = val.rank - v.rank if v.batched else Rank()
            if k != Rank():  # dims of size 1: a constant count (``v[:, None]``), or source
                e = self.sub(rules.BATCHED_UNDER_SET_CONST.format(nones=", None" * k.const), v=e) \
                    if not k.terms else self.sub(rules.BATCHED_UNDER_SET, v=e, k=ast.parse(
                        _source_of(k), mode="eval").body)
            out.append(e)
        return out, val

    def _elementwise(self, vals: list[_Val], node: ast.AST, aligned: bool = False) -> _Val:
        """Broadcasting of batched and fixed operands: the runtime conditions it needs.
        ``aligned``: the caller aligns per-item values with a loop input itself (``_aligned``)."""
        batched = [v for v in vals if v.batched]
        rank = batched[0].rank
        if any(v.rank is None for v in batched):
            raise Unsupported(f"`{unparse(node)}`: per-item rank unknown")
        for v in batched[1:]:
            self.require(v.rank - rank, "==", node)
        wholes = sorted({v.whole for v in vals if not v.batched and v.whole is not None}) \
            if aligned else []
        if wholes:
            self.set_forms = True  # batch() tries the loop input as a set of its rows
        if wholes and self.sets:
            rank = self._under_set(rank, batched, wholes, node)
        for v in vals:
            if v.batched or v.whole in wholes and self.sets:
                continue
            if v.leaves is None:
                raise Unsupported(f"`{unparse(node)}`: the rank of a fixed operand is unknown")
            for leaf in sorted(v.leaves):
                self._fits(leaf, rank, node)
        return _Val(True, rank)

    def _under_set(self, rank: Rank, batched: list[_Val], wholes: list[str],
                   node: ast.AST) -> Rank:
        """Per-item values of ``rank`` next to loop inputs ``wholes`` (tensors, checked by
        vectorize_loops) of one rank at least theirs: that rank. A per-item 0-d value promotes
        dtypes as a scalar, batched it is dimensioned: equal dtypes unless items have dims."""
        top = Rank.of(f"{wholes[0]}.dim()")
        for w in wholes[1:]:
            self.require(Rank.of(f"{w}.dim()") - top, "==", node)
        self.require(top - rank, ">=", node)
        dimensioned = _condition(rank - 1, ">=")
        if dimensioned is True:
            return top
        sources = [v.source for v in batched]
        if None in sources:
            if dimensioned is False:
                raise Unsupported(f"`{unparse(node)}`: dtypes of a per-item 0-d value unknown")
            self.checks[dimensioned] = None
            return top
        same = " and ".join(f"{w}.dtype == {s}.dtype" for w in wholes
                            for s in dict.fromkeys(sources) if s != w)
        if same:
            self.checks[same if dimensioned is False else f"{dimensioned} or ({same})"] = None
        return top

    def _fits(self, leaf: str, rank: Rank, node: ast.AST) -> None:
        """``leaf`` is a Python number, or a tensor that aligns from the right (rank >= 1)."""
        number = f"not isinstance({leaf}, torch.Tensor)"
        positive = _condition(rank - 1, ">=")
        conds = [c for c in (positive, _condition(rank - Rank.of(f"{leaf}.dim()"), ">="))
                 if c is not True]
        if False in conds:  # 0-d items, or a tensor of higher rank than the item's (x next to x[i])
            conds = []
        if leaf in self.tensors:
            if not conds:
                raise Unsupported(f"`{unparse(node)}`: per-item values next to `{leaf}`, a "
                                  f"tensor of higher rank")
            self.checks[" and ".join(conds)] = None
        else:
            self.checks[f"{number} or ({' and '.join(conds)})" if conds else number] = None

    # ------------------------------------------------------------------------------------------
    def _call(self, node: ast.Call) -> tuple[ast.expr, _Val]:
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None
                                                                  for k in node.keywords):
            raise Unsupported(f"`{unparse(node)}`: *args/**kwargs")
        op, meth = call_op(node, self.ctx), method_name(node, self.ctx)
        if op.batched == "similarity":
            return self._similarity(node)
        if op.batched == "mask_reshape":
            shaped = self._mask_reshape(node)
            if shaped is not None:
                return shaped
        distance = self._squared_distance(node, op, meth)
        if distance is not None:
            self.set_forms = True
            if self.sets:
                return self._set_form(node, rules.DISTANCE_SET_FORMS, *distance)
        if meth is not None:
            recv, rv = self.expr(node.func.value)
            func = ast.copy_location(ast.Attribute(recv, meth, ast.Load()), node.func)
            operands = [(recv, rv)]
            if rv.batched and op.batched == "flatten" and not node.args and not node.keywords:
                return self._flatten(recv, rv, node)
        else:
            func = node.func
            operands = []
        args = [self.expr(a) for a in node.args]
        kws = [(k.arg, self.expr(k.value)) for k in node.keywords]
        call = _Call(node, op, func, meth is not None, operands + args + [v for _, v in kws],
                     args, kws)
        done = getattr(self, _HANDLERS[op.batched])(call) if op.batched in _HANDLERS else None
        if done is None:
            raise Unsupported(f"`{unparse(node.func)}(...)` has no batched form")
        return done

    def _elementwise_call(self, c: "_Call") -> tuple[ast.expr, _Val]:
        val = self._elementwise([v for _, v in c.operands], c.node)
        call = ast.Call(c.func, [a for a, _ in c.args], [ast.keyword(k, v) for k, (v, _) in c.kws])
        return ast.copy_location(call, c.node), _Val(True, val.rank, self._integer_of(c))

    def _reduction_call(self, c: "_Call") -> tuple[ast.expr, _Val] | None:
        """``x.sum()`` over all elements, ``x.sum(d)`` and other ops with a dim."""
        if not c.is_method and not c.args:
            return None
        x, xv = c.operands[0]
        rest = c.args[1:] if not c.is_method else c.args
        if not rest and not c.kws and c.op.reduce is not None:
            return self._full_reduction(x, xv, c.op, c.node)
        if c.op.dim_rank is not None:
            return self._dim_op(c, x, xv, rest)
        return None

    def _same_rank_call(self, c: "_Call") -> tuple[ast.expr, _Val] | None:
        """``a.expand_as(b)``, both loop-varying: the same call."""
        if len(c.args) != 1 or c.kws:
            return None
        vals = [v for _, v in c.operands]
        if not all(v.batched for v in vals):
            raise Unsupported(f"`{unparse(c.node)}`: an operand does not vary with the loop")
        val = self._elementwise(vals, c.node)
        return ast.copy_location(ast.Call(c.func, [c.args[0][0]], []), c.node), _Val(True, val.rank)

    def _dot_call(self, c: "_Call") -> tuple[ast.expr, _Val] | None:
        """``torch.dot(a, b)`` of 1-d items: ``(a * b).sum(1)``."""
        if len(c.operands) != 2 or c.kws or not all(v.batched for _, v in c.operands):
            return None
        for _, v in c.operands:
            self.require(v.rank - 1, "==", c.node)
        (a, _), (b, _) = c.operands
        return self.sub("(a * b).sum(1)", a=a, b=b), _Val(True, Rank())

    def _pointwise_loss_call(self, c: "_Call") -> tuple[ast.expr, _Val]:
        return self._pointwise_loss(c.node, c.args, c.kws)

    def _class_loss_call(self, c: "_Call") -> tuple[ast.expr, _Val]:
        return self._class_loss(c.node, c.args, c.kws)

    def _mask_reshape(self, node: ast.Call) -> tuple[ast.expr, _Val] | None:
        """``m.reshape(h[m.shape, x.shape, ...])``, ``h`` a helper bound into the code that maps
        per-item shapes to a shape of ``x``'s rank (``MaskShape``, ``per_item_shapes``): the
        helper gets the per-item shapes, the loop dim goes in front. None: not this pattern."""
        arg = node.args[0] if len(node.args) == 1 and not node.keywords else None
        helper = arg.value if isinstance(arg, ast.Subscript) else None
        if not (isinstance(helper, ast.Name) and helper.id not in self.vals
                and getattr(self.ctx.bindings.get(helper.id), "per_item_shapes", False)):
            return None
        shapes = arg.slice.elts if isinstance(arg.slice, ast.Tuple) else []
        if len(shapes) < 2 or not all(isinstance(s, ast.Attribute) and s.attr == "shape"
                                      for s in shapes) \
                or ast.dump(shapes[0].value) != ast.dump(node.func.value):
            raise Unsupported(f"`{unparse(node)}`: index without a batched form")
        done = [self.expr(s.value) for s in shapes]
        if not all(v.batched and v.rank is not None for _, v in done):
            raise Unsupported(f"`{unparse(node)}`: shapes of values that do not vary")
        (mask, mv), (_, base) = done[0], done[1]
        self.require(mv.rank - 1, ">=", node)  # a 0-d mask adds a dim (``x[True]``)
        for _, v in done[2:]:
            self.require(v.rank - base.rank, "==", node)
        mask = self.named(mask)
        per_item = ast.Tuple([self.sub(rules.BATCHED_SHAPE, x=x) for x, _ in done], ast.Load())
        return self.sub(rules.BATCHED_MASK_RESHAPE, m=mask, h=helper, shapes=per_item), \
            _Val(True, base.rank)

    def _flatten(self, x: ast.expr, xv: _Val, node: ast.AST):
        """``x.flatten()`` per item: rank 1."""
        if xv.rank is None:
            raise Unsupported(f"`{unparse(node)}`: per-item rank unknown")
        self.require(xv.rank - 1, ">=", node)
        return self.sub(rules.BATCHED_FLATTEN, x=x), _Val(True, Rank() + 1)

    @staticmethod
    def _integer_of(c: "_Call") -> tuple[str, ...] | None:
        """Integer-ness through the elementwise ops that keep it (``OpSpec.integer``)."""
        keeps = c.op.integer
        if not keeps:
            return keeps
        if c.kws or len(c.operands) != max(keeps) + 1:
            return None
        return _integer([c.operands[k] for k in keeps])

    def _full_reduction(self, x: ast.expr, xv: _Val, op: ops.OpSpec, node: ast.AST):
        if not xv.batched:
            raise Unsupported(f"`{unparse(node)}` has no batched form")
        x = self.named(x)
        # reshape(n, -1) is also right for per-item 0-d values (dim=() would reduce all), but
        # copies a non-contiguous x (rows moved to the front): reduce over the item dims then
        template = rules.BATCHED_ITEM_DIMS_REDUCTION if op.tuple_dims \
            else rules.BATCHED_FLAT_REDUCTION
        return self.sub(template.format(reduce=op.reduce), x=x), _Val(True, Rank())

    def _dim_op(self, c: "_Call", x: ast.expr, xv: _Val, rest: list):
        """``x.sum(d)``, ``F.softmax(x, dim=d)``, ...: per-item dims shift by one."""
        node, func, kws, change = c.node, c.func, c.kws, c.op.dim_rank
        if not xv.batched or xv.rank is None:
            raise Unsupported(f"`{unparse(node)}` has no batched form")
        keys = dict((k, v) for k, v in kws)
        if len(rest) > 2 or set(keys) - {"dim", "keepdim"} or (rest and "dim" in keys):
            raise Unsupported(f"`{unparse(node)}`: arguments without a batched form")
        dim_node = rest[0][0] if rest else keys["dim"][0] if "dim" in keys else None
        keep = rest[1][0] if len(rest) == 2 else keys["keepdim"][0] if "keepdim" in keys else None
        dim = _literal(dim_node) if dim_node is not None else _UNKNOWN
        keepdim = _literal(keep) if keep is not None else False
        dims = dim if isinstance(dim, tuple) else (dim,)
        if not dims or not all(type(d) is int for d in dims) or type(keepdim) is not bool \
                or (keepdim and change == 0):
            raise Unsupported(f"`{unparse(node)}`: dim must be an int literal")
        indexed = xv.rank + max(change, 0)  # dims index the input, or unsqueeze's output
        for d in dims:
            self._require_dim(indexed, d, node)
        shifted = tuple(d + 1 if d >= 0 else d for d in dims)
        new_dim = ast.Constant(shifted if isinstance(dim, tuple) else shifted[0])
        new_rest = [(new_dim, None)] + rest[1:] if rest else []
        new_kws = [(k, (new_dim, None) if k == "dim" else v) for k, v in kws]
        call = ast.Call(func, [a for a, _ in new_rest] if c.is_method else
                        [x] + [a for a, _ in new_rest], [ast.keyword(k, v) for k, (v, _) in new_kws])
        rank = xv.rank if keepdim else xv.rank + change * len(dims)
        integer = xv.integer if c.op.integer == (0,) else None
        return ast.copy_location(call, node), _Val(True, rank, integer)

    def _require_dim(self, rank: Rank, d: int, node: ast.AST) -> None:
        """``d`` in range per item: else dim -1 of a 0-d item would be the loop dim."""
        self.require(rank - d - 1 if d >= 0 else rank + d, ">=", node)

    def _similarity(self, node: ast.Call) -> tuple[ast.expr, _Val]:
        """``F.cosine_similarity(x1, x2, dim, eps)``: a set form when one operand is a loop
        input's rows and the other fixed, else the same call with ``dim`` shifted."""
        params = rules.SIMILARITY_PARAMS
        args = dict(zip(params, node.args))
        for k in node.keywords:
            if k.arg in args or k.arg not in params:
                raise Unsupported(f"`{unparse(node)}`: arguments without a batched form")
            args[k.arg] = k.value
        dim = _literal(args["dim"]) if "dim" in args else rules.SIMILARITY_DEFAULTS["dim"]
        eps = args.get("eps", ast.Constant(rules.SIMILARITY_DEFAULTS["eps"]))
        if len(node.args) > len(params) or not {"x1", "x2"} <= set(args) \
                or type(dim) is not int or self._varies(eps):
            raise Unsupported(f"`{unparse(node)}`: arguments without a batched form")
        pair = self._point_and_set(args["x1"], args["x2"])
        if pair is not None:
            self.set_forms = True
            if self.sets or dim in (0, -1):
                return self._set_form(node, rules.SIMILARITY_SET_FORMS, *pair, dim, eps)
        (a, av), (b, bv) = self.expr(args["x1"]), self.expr(args["x2"])
        val = self._elementwise([av, bv], node)
        self._require_dim(val.rank, dim, node)
        kws = [ast.keyword("dim", ast.Constant(dim + 1 if dim >= 0 else dim))] + (
            [ast.keyword("eps", eps)] if "eps" in args else [])
        return ast.copy_location(ast.Call(node.func, [a, b], kws), node), _Val(True, val.rank - 1)

    def _point_and_set(self, a: ast.expr, b: ast.expr) -> tuple[ast.Name, ast.expr] | None:
        """(``x``, ``w``): one operand a loop input's rows, the other evaluable before the loop."""
        for x, w in ((a, b), (b, a)):
            val = self.vals.get(x.id) if isinstance(x, ast.Name) else None
            if val is not None and val.batched and val.source is not None \
                    and val.rank is not None and self.free(w) is not None:
                return x, w
        return None

    def _squared_distance(self, node: ast.Call, op: ops.OpSpec, meth: str | None):
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
        diff = self._squared(operand)
        if not (isinstance(diff, ast.BinOp) and isinstance(diff.op, ast.Sub)):
            return None
        pair = self._point_and_set(diff.left, diff.right)
        return None if pair is None else (*pair, _literal(rest[0] if rest else keys["dim"]))

    def _squared(self, node: ast.expr) -> ast.expr | None:
        """``e`` of ``e ** 2``, ``e.pow(2)``, ``e.square()``, ``torch.square(e)``, ..."""
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            return node.left if _ints([node.right]) == (2,) else None
        if not isinstance(node, ast.Call) or node.keywords:
            return None
        square = call_op(node, self.ctx).square
        if square is None:
            return None
        if method_name(node, self.ctx) is not None:
            return node.func.value if _ints(node.args) == square else None
        return node.args[0] if node.args and _ints(node.args[1:]) == square else None

    def _set_form(self, node: ast.Call, forms: dict, x: ast.Name, w: ast.expr, dim: object,
                  eps: ast.expr | None = None) -> tuple[ast.expr, _Val]:
        """A point ``x`` (per item [D]) against a fixed ``w`` [D], or with ``sets`` a set of
        points [m, D], reduced over dim ``dim`` (the feature dim); ``eps``: of normalized
        operands (cosine similarity). What it assumes is checked at run time."""
        k = 2 if self.sets else 1  # w.dim()
        if k not in forms or type(dim) is not int or dim not in (k - 1, -1):
            raise Unsupported(f"`{unparse(node)}`: arguments without a batched form")
        xv, text = self.vals[x.id], self.free(w)
        self.require(xv.rank - 1, "==", node)
        self.checks[f"isinstance({text}, torch.Tensor) and {text}.dim() == {k} "
                    f"and {text}.dtype == {xv.source}.dtype and {text}.dtype in "
                    f"{rules.SET_FORM_DTYPES} and {text}.shape[-1] == {xv.source}.shape[-1]"] = None
        form, rank = forms[k]
        if eps is not None:
            eps = eps if isinstance(eps, (ast.Constant, ast.Name)) else self.named(eps)
            x, w = self._normalized(x, eps), self._normalized(self.named(w), eps)
        return self.sub(form, x=x, w=w), _Val(True, Rank() + rank)

    def _normalized(self, x: ast.expr, eps: ast.expr) -> ast.expr:
        norm = self.named(self.sub(rules.NORM, x=x))
        return self.sub(rules.NORMALIZED, x=x, n=norm, eps=eps)

    def _pointwise_loss(self, node: ast.Call, args: list, kws: list, summed: bool = False,
                        mean: bool = False):
        """``F.mse_loss(a, b)``: elementwise losses, averaged (or summed) per item; ``summed``:
        their sum over the loop (``mean``: their mean), one call."""
        keys = {k: x for k, (x, _) in kws}
        reduction = _literal(keys.pop("reduction", ast.Constant("mean")))
        if len(args) != 2 or reduction not in ("mean", "sum") \
                or not all(isinstance(x, ast.Constant) for x in keys.values()):
            raise Unsupported(f"`{unparse(node)}`: arguments without a batched form")
        (a, av), (b, bv) = args
        if not (av.batched and bv.batched):  # a fixed operand would broadcast (and warn)
            raise Unsupported(f"`{unparse(node)}`: an operand does not vary with the loop")
        self._elementwise([av, bv], node)
        if summed:  # one call with the per-item reduction over all items
            kw = [ast.keyword(k, x) for k, x in keys.items()] + [
                ast.keyword("reduction", ast.Constant(reduction))]
            table = rules.AVERAGED_POINTWISE_LOSSES if mean else rules.SUMMED_POINTWISE_LOSSES
            return self.sub(table[reduction], n=self.trips,
                            l=ast.Call(node.func, [a, b], kw)), _Val(True, Rank())
        kw = [ast.keyword(k, x) for k, x in keys.items()] + [ast.keyword("reduction",
                                                                          ast.Constant("none"))]
        loss = self.named(ast.Call(node.func, [a, b], kw))
        return self.sub(f"l.reshape(len(l), -1).{reduction}(1)", l=loss), _Val(True, Rank())

    def _class_loss(self, node: ast.Call, args: list, kws: list, summed: bool = False):
        """``F.cross_entropy(x, t)`` per item, x [N, C], t [N] class indices; ``summed``: the
        sum over the loop (one call when the per-item reduction is a sum)."""
        keys = {k: x for k, (x, _) in kws}
        reduction = _literal(keys.pop("reduction", ast.Constant("mean")))
        ignore = _literal(keys.pop("ignore_index", ast.Constant(-100)))
        if len(args) != 2 or reduction not in ("mean", "sum") or type(ignore) is not int or keys:
            raise Unsupported(f"`{unparse(node)}`: arguments without a batched form")
        (x, xv), (t, tv) = args
        if not (xv.batched and tv.batched) or tv.integer is None:
            raise Unsupported(f"`{unparse(node)}`: targets not known to be class indices")
        self.require(xv.rank - 2, "==", node)
        self.require(tv.rank - 1, "==", node)
        for cond in tv.integer:
            self.checks[cond] = None
        if summed and reduction == "sum":
            return self.sub(f"F(x.flatten(0, 1), t.flatten(), reduction='sum', "
                            f"ignore_index={ignore})", F=node.func, x=x, t=t), _Val(True, Rank())
        t = self.named(t)
        loss = self.named(self.sub(
            f"F(x.flatten(0, 1), t.flatten(), reduction='none', ignore_index={ignore})"
            ".view(t.shape)", F=node.func, x=x, t=t))
        if reduction == "sum":
            return self.sub("l.sum(1)", l=loss), _Val(True, Rank())
        per_item = self.sub(f"l.sum(1) / (t != {ignore}).sum(1)", l=loss, t=t)
        return (self.sub("e.sum(0)", e=per_item) if summed else per_item), _Val(True, Rank())

    # ------------------------------------------------------------------------------------------
    def _subscript(self, node: ast.Subscript) -> tuple[ast.expr, _Val]:
        entries = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        base, bv = self.expr(node.value)
        if bv.batched and not any(self._varies(e) for e in entries):
            # fixed ints, slices, None, ...: the same selection after the loop dim
            kinds = [_literal(e) if not isinstance(e, ast.Slice) else slice for e in entries]
            if not all(k is slice or k is None or k is Ellipsis or type(k) is int for k in kinds):
                raise Unsupported(f"`{unparse(node)}`: index without a batched form")
            full = ast.Slice(None, None, None)
            new = ast.Subscript(base, ast.Tuple([full] + list(entries), ast.Load()), ast.Load())
            rank = None if bv.rank is None else (
                bv.rank - sum(type(k) is int for k in kinds) + sum(k is None for k in kinds))
            return ast.copy_location(new, node), _Val(True, rank)
        if not bv.batched and len(entries) > 1:
            return self._fixed_gather(node, entries)
        if len(entries) != 1:
            raise Unsupported(f"`{unparse(node)}`: index without a batched form")
        idx, iv = self.expr(entries[0])
        if not iv.batched or iv.integer is None or iv.rank is None:
            raise Unsupported(f"`{unparse(node)}`: index not known to be an integer tensor")
        for cond in iv.integer:
            self.checks[cond] = None
        if not bv.batched:  # w[idx]: per item w[idx_k], all at once w[idx]
            text = self.free(base)
            if text is None:
                raise Unsupported(f"`{unparse(node)}`: gather from a computed value")
            if not isinstance(base, ast.Name):  # (vectorize_loops checks names the loop indexes)
                self.checks[f"isinstance({text}, torch.Tensor)"] = None
            rank = iv.rank + Rank.of(f"{text}.dim()") - 1
            return ast.copy_location(ast.Subscript(base, idx, ast.Load()), node), _Val(True, rank)
        if bv.rank is None:
            raise Unsupported(f"`{unparse(node)}`: per-item rank unknown")
        self.require(iv.rank, "==", node)       # one index per item
        self.require(bv.rank - 1, ">=", node)
        base = self.named(base)
        new = self.sub("x[torch.arange(len(x), device=x.device), i]", x=base, i=idx)
        return new, _Val(True, bv.rank - 1)

    def _fixed_gather(self, node: ast.Subscript, entries: list[ast.expr]):
        """``w[i, j]``: a fixed ``w`` at fixed ints ``i``, then a loop-varying index ``j`` ->
        ``w[i][j]``, when ``w[i]`` drops one dim per entry (ints: not index lists nor masks)."""
        *fixed, last = entries
        prefix = ast.Subscript(node.value, ast.Tuple(fixed, ast.Load()) if len(fixed) > 1
                               else fixed[0], ast.Load())
        base, text = self.free(node.value), self.free(prefix)
        if base is None or text is None or any(isinstance(e, ast.Slice) for e in fixed):
            raise Unsupported(f"`{unparse(node)}`: index without a batched form")
        self.checks[f"isinstance({base}, torch.Tensor) and {text}.dim() == {base}.dim() - "
                    f"{len(fixed)}"] = None
        return self._subscript(ast.copy_location(ast.Subscript(prefix, last, ast.Load()), node))


@dataclass(frozen=True)
class _Call:
    """A call being batched: its op, the (batched) function or method, its operands (receiver
    first), positional and keyword arguments, each with its facts."""
    node: ast.Call
    op: ops.OpSpec
    func: ast.expr
    is_method: bool
    operands: list
    args: list
    kws: list


# ``OpSpec.batched`` -> the _Batcher method batching the call (None: no batched form).
_HANDLERS = {"elementwise": "_elementwise_call", "reduction": "_reduction_call",
             "same_rank": "_same_rank_call", "dot": "_dot_call",
             "pointwise_loss": "_pointwise_loss_call", "class_loss": "_class_loss_call"}


def _is_update(value: ast.expr, name: str, summed: frozenset[str]) -> bool:
    """``p = p + e`` / ``p = p - e`` of a summed output ``p``."""
    return (name in summed and isinstance(value, ast.BinOp)
            and isinstance(value.op, (ast.Add, ast.Sub)) and isinstance(value.left, ast.Name)
            and value.left.id == name and name not in {n.id for n in walk(value.right)
                                                       if isinstance(n, ast.Name)})


def _integer(operands: list[tuple[ast.expr, _Val]]) -> tuple[str, ...] | None:
    """Conditions making the result of integer-preserving ops an integer tensor; None: unknown.
    Python int constants keep the dtype."""
    conds: list[str] = []
    for node, val in operands:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            continue
        if not val.batched or val.integer is None:
            return None
        conds += val.integer
    return tuple(dict.fromkeys(conds))


def _ints(nodes: list[ast.expr]) -> tuple[int, ...] | None:
    """The values of int literals (``(2,)`` for ``[2]``); None when one is anything else."""
    values = tuple(_literal(n) for n in nodes)
    return values if all(type(v) is int for v in values) else None
