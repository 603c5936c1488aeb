"""A vectorized loop's per-iteration body becomes plain tensor code over all iterations at once.

``vectorize_loops`` outlines a loop body into a function of one iteration and maps it with
``torch.vmap``. When every op of the body has a batched form (``loop_rules.BATCHED_*``), the body
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
``x.sum()`` -> ``x.reshape(len(x), -1).sum(1)``; ``dim=d`` -> ``dim=d + 1`` (negative dims
unchanged); ``x[k, 1:]`` with fixed entries -> ``x[:, k, 1:]``; the gather ``x[idx]`` ->
``x[torch.arange(len(x), device=x.device), idx]`` (``w[idx]`` unchanged when ``w`` does not vary);
``F.mse_loss(a, b)`` and the other pointwise losses -> ``F.mse_loss(a, b, reduction="none")``
averaged per item; ``F.cross_entropy(x, t)`` on [N, C] items -> ``reduction="none"`` summed per item
over the count of non-ignored targets (what the mean divides by); ``torch.dot(a, b)`` ->
``(a * b).sum(1)``.

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
* gather and class-loss indices are int64/int32 tensors (a bool index would be a mask).

Anything else (user functions, Python ``if``, shape queries on loop-varying values, an inner
vectorized loop) raises ``Unsupported`` with the reason: the loop is mapped with ``torch.vmap``.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

from rewrite.errors import Unsupported

from . import loop_rules as rules
from .ast_tools import PassContext, replace, unparse
from .loop_dataflow import is_shape_query, method_name, resolve_call


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


_CONSTANT = _Val(False)


def batch(body: list[ast.stmt], params: list[Param], outputs: list[str], outs: str,
          trips: ast.expr, ctx: PassContext, loc: ast.AST, summed: frozenset[str] = frozenset(),
          averaged: frozenset[str] = frozenset()) -> tuple[ast.expr | None, list]:
    """(runtime check or None when always true, statements binding ``outs`` to the stacked
    outputs, the ``summed`` ones summed over the loop, the ``averaged`` ones of those averaged).
    ``trips``: the number of iterations. Raises ``Unsupported``."""
    b = _Batcher(ctx, loc, trips, summed, averaged)
    stmts = []
    for p in params:
        b.vals[p.name] = _Val(True, p.rank, p.integer)
        stmts += b.sub("p = x", p=p.name, x=p.batched)
    for s in body:
        stmts += b.stmt(s)
    stacked = []
    for name in outputs:
        if name in b.totals:
            stacked.append(ast.Name(name, ast.Load()))
        elif b.vals.get(name, _CONSTANT).batched:
            stacked.append(b.sub("o.sum(0)" if name in summed else "o", o=name))
        else:  # the same value in every iteration (a constant contribution)
            stacked.append(b.sub("torch.as_tensor(o).expand(n, *torch.as_tensor(o).shape)"
                                 + (".sum(0)" if name in summed else ""), o=name, n=trips))
        if name in averaged and name not in b.totals:
            stacked[-1] = b.sub("t / n", t=stacked[-1], n=trips)
    stmts += b.sub("o = v", o=outs, v=ast.Tuple(stacked, ast.Load()))
    checks = [b.sub(text) for text in b.checks]
    check = (checks[0] if len(checks) == 1 else ast.BoolOp(ast.And(), checks)) if checks else None
    return check, stmts


def _condition(diff: Rank, op: str) -> str | bool:
    """``diff <op> 0`` as Python source, or its truth when no input rank is involved."""
    if not diff.terms:
        return diff.const == 0 if op == "==" else diff.const >= 0
    left = [_times(t, c) for t, c in diff.terms if c > 0] + ([str(diff.const)] if diff.const > 0 else [])
    right = [_times(t, -c) for t, c in diff.terms if c < 0] + ([str(-diff.const)] if diff.const < 0 else [])
    return f"{' + '.join(left) or '0'} {op} {' + '.join(right) or '0'}"


def _times(term: str, c: int) -> str:
    return term if c == 1 else f"{c} * {term}"


_UNKNOWN = object()


def _literal(node: ast.expr) -> object:
    """The value of a literal (``-1``, ``(0, 2)``, ``None``); ``_UNKNOWN`` for anything else."""
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        return _UNKNOWN


class _Batcher:
    def __init__(self, ctx: PassContext, loc: ast.AST, trips: ast.expr, summed: frozenset[str],
                 averaged: frozenset[str]):
        self.ctx = ctx
        self.loc = loc
        self.trips = trips
        self.summed = summed
        self.averaged = averaged
        self.totals: set[str] = set()        # summed outputs holding their sum over the loop
        self.vals: dict[str, _Val] = {}
        self.zeros: set[str] = set()          # names bound to the int 0 (a partial's start)
        self.checks: dict[str, None] = {}    # runtime conditions, in order, without duplicates
        self.pre: list[ast.stmt] = []        # temporaries of the statement being rewritten

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

    # ------------------------------------------------------------------------------------------
    def stmt(self, s: ast.stmt) -> list[ast.stmt]:
        self.pre = []
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
                if isinstance(s.value, ast.Constant) and type(s.value.value) is int \
                        and s.value.value == 0:
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
            name, meth = resolve_call(node.func, self.ctx), method_name(node, self.ctx)
            op = meth if meth is not None else rules.BATCHED_DIM_FUNCS.get(name)
            operand = node.func.value if meth is not None else node.args[0] if node.args else None
            if op in rules.SUMMED_FULL_REDUCTIONS and len(node.args) == (meth is None) \
                    and self._varies(operand):
                x, _ = self.expr(operand)
                table = rules.AVERAGED_FULL_REDUCTIONS if mean else rules.SUMMED_FULL_REDUCTIONS
                return self.sub(table[op], x=x, n=self.trips), _Val(True, Rank())
        if isinstance(node, ast.Call):
            name = resolve_call(node.func, self.ctx)
            args = [self.expr(a) for a in node.args] if name in (
                rules.BATCHED_POINTWISE_LOSSES | rules.BATCHED_CLASS_LOSSES) else None
            kws = [(k.arg, self.expr(k.value)) for k in node.keywords] if args else None
            if name in rules.BATCHED_POINTWISE_LOSSES:
                return self._pointwise_loss(node, args, kws, summed=True, mean=mean)
            if name in rules.BATCHED_CLASS_LOSSES:
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
            (left, lv), (right, rv) = self.expr(node.left), self.expr(node.right)
            val = self._elementwise([lv, rv], node)
            if isinstance(node.op, rules.INTEGER_BINOPS):
                val = _Val(True, val.rank, _integer([(left, lv), (right, rv)]))
            return ast.copy_location(ast.BinOp(left, node.op, right), node), val
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Invert)):
            operand, val = self.expr(node.operand)
            return ast.copy_location(ast.UnaryOp(node.op, operand), node), val
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            (left, lv), (right, rv) = self.expr(node.left), self.expr(node.comparators[0])
            new = ast.Compare(left, node.ops, [right])
            return ast.copy_location(new, node), self._elementwise([lv, rv], node)
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            return self._subscript(node)
        raise Unsupported(f"`{unparse(node)}` has no batched form")

    def _varies(self, node: ast.AST) -> bool:
        """Whether ``node`` reads a batched value (shape queries included: they must change)."""
        return any(isinstance(n, ast.Name) and n.id in self.vals and self.vals[n.id].batched
                   for n in ast.walk(node))

    def _fixed(self, node: ast.expr) -> _Val:
        """A value the loop does not change; its leaves (see ``_Val``)."""
        return _Val(False, leaves=self._leaves(node))

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
                return None
            parts = [node.value] + [b for e in entries if isinstance(e, ast.Slice)
                                    for b in (e.lower, e.upper, e.step) if b is not None]
        elif isinstance(node, ast.Call) and not any(isinstance(a, ast.Starred) for a in node.args):
            name, meth = resolve_call(node.func, self.ctx), method_name(node, self.ctx)
            if not (name in rules.BATCHED_ELEMENTWISE or name in rules.BATCHED_DIM_FUNCS
                    or meth in rules.BATCHED_ELEMENTWISE_METHODS
                    or meth in rules.BATCHED_FULL_REDUCTIONS or meth in rules.BATCHED_DIM_OPS):
                return None
            parts = ([node.func.value] if meth else []) + node.args + [k.value for k in node.keywords]
        else:
            return None
        found: set[str] = set()
        for p in parts:
            sub = self._leaves(p)
            if sub is None:
                return None
            found |= sub
        return frozenset(found)

    def _elementwise(self, vals: list[_Val], node: ast.AST) -> _Val:
        """Broadcasting of batched and fixed operands: the runtime conditions it needs."""
        batched = [v for v in vals if v.batched]
        rank = batched[0].rank
        if any(v.rank is None for v in batched):
            raise Unsupported(f"`{unparse(node)}`: per-item rank unknown")
        for v in batched[1:]:
            self.require(v.rank - rank, "==", node)
        for v in vals:
            if v.batched:
                continue
            if v.leaves is None:
                raise Unsupported(f"`{unparse(node)}`: the rank of a fixed operand is unknown")
            for leaf in sorted(v.leaves):
                self._fits(leaf, rank, node)
        return _Val(True, rank)

    def _fits(self, leaf: str, rank: Rank, node: ast.AST) -> None:
        """``leaf`` is a Python number, or a tensor that aligns from the right (rank >= 1)."""
        number = f"not isinstance({leaf}, torch.Tensor)"
        positive = _condition(rank - 1, ">=")
        if positive is False:
            self.checks[number] = None
            return
        conds = [c for c in (positive, _condition(rank - Rank.of(f"{leaf}.dim()"), ">="))
                 if c is not True]
        self.checks[f"{number} or ({' and '.join(conds)})"] = None

    # ------------------------------------------------------------------------------------------
    def _call(self, node: ast.Call) -> tuple[ast.expr, _Val]:
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None
                                                                  for k in node.keywords):
            raise Unsupported(f"`{unparse(node)}`: *args/**kwargs")
        name, meth = resolve_call(node.func, self.ctx), method_name(node, self.ctx)
        if meth is not None:
            recv, rv = self.expr(node.func.value)
            func = ast.copy_location(ast.Attribute(recv, meth, ast.Load()), node.func)
            operands = [(recv, rv)]
        else:
            func = node.func
            operands = []
        args = [self.expr(a) for a in node.args]
        kws = [(k.arg, self.expr(k.value)) for k in node.keywords]
        operands += args + [v for _, v in kws]
        vals = [v for _, v in operands]
        if name in rules.BATCHED_ELEMENTWISE or meth in rules.BATCHED_ELEMENTWISE_METHODS:
            val = self._elementwise(vals, node)
            call = ast.Call(func, [a for a, _ in args], [ast.keyword(k, v) for k, (v, _) in kws])
            return (ast.copy_location(call, node),
                    _Val(True, val.rank, self._integer_of(name, meth, operands, kws)))
        op = meth if meth is not None else rules.BATCHED_DIM_FUNCS.get(name)
        if op is not None and (op in rules.BATCHED_DIM_OPS or op in rules.BATCHED_FULL_REDUCTIONS):
            x, xv = operands[0] if meth is not None else args[0]
            rest = args if meth is not None else args[1:]
            if not rest and not kws and op in rules.BATCHED_FULL_REDUCTIONS:
                return self._full_reduction(x, xv, op, node)
            if op in rules.BATCHED_DIM_OPS:
                return self._dim_op(node, func, x, xv, op, rest, kws, meth is not None)
        if name in rules.BATCHED_POINTWISE_LOSSES:
            return self._pointwise_loss(node, args, kws)
        if name in rules.BATCHED_CLASS_LOSSES:
            return self._class_loss(node, args, kws)
        if (name == "torch.dot" and len(args) == 2 or meth == "dot" and len(args) == 1) \
                and not kws and all(v.batched for v in vals):
            a, b = operands[0][0] if meth else args[0][0], args[-1][0]
            for v in vals:
                self.require(v.rank - 1, "==", node)
            return self.sub("(a * b).sum(1)", a=a, b=b), _Val(True, Rank())
        raise Unsupported(f"`{unparse(node.func)}(...)` has no batched form")

    def _integer_of(self, name: str | None, meth: str | None, operands: list, kws: list):
        """Integer-ness through the elementwise ops that keep it."""
        if meth in rules.INTEGER_METHODS:
            return ()
        if meth in ("detach", "clone") and len(operands) == 1:
            return operands[0][1].integer
        if name == "torch.where" and len(operands) == 3 and not kws:
            return _integer(operands[1:])
        if name in ("torch.zeros_like", "torch.ones_like") and len(operands) == 1:
            return operands[0][1].integer
        return None

    def _full_reduction(self, x: ast.expr, xv: _Val, op: str, node: ast.AST):
        if not xv.batched:
            raise Unsupported(f"`{unparse(node)}` has no batched form")
        x = self.named(x)  # reshape(n, -1): also right for per-item 0-d values
        reduce = rules.BATCHED_FULL_REDUCTIONS[op]
        return self.sub(f"x.reshape(len(x), -1).{reduce}(1)", x=x), _Val(True, Rank())

    def _dim_op(self, node, func, x, xv, op, rest, kws, is_method):
        """``x.sum(d)``, ``F.softmax(x, dim=d)``, ...: per-item dims shift by one."""
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
                or (keepdim and rules.BATCHED_DIM_OPS[op] == 0):
            raise Unsupported(f"`{unparse(node)}`: dim must be an int literal")
        change = rules.BATCHED_DIM_OPS[op]
        indexed = xv.rank + max(change, 0)  # dims index the input, or unsqueeze's output
        for d in dims:  # in range per item: else dim -1 of a 0-d item would be the loop dim
            self.require(indexed - d - 1 if d >= 0 else indexed + d, ">=", node)
        shifted = tuple(d + 1 if d >= 0 else d for d in dims)
        new_dim = ast.Constant(shifted if isinstance(dim, tuple) else shifted[0])
        new_rest = [(new_dim, None)] + rest[1:] if rest else []
        new_kws = [(k, (new_dim, None) if k == "dim" else v) for k, v in kws]
        call = ast.Call(func, [a for a, _ in new_rest] if is_method else
                        [x] + [a for a, _ in new_rest], [ast.keyword(k, v) for k, (v, _) in new_kws])
        rank = xv.rank if keepdim else xv.rank + change * len(dims)
        integer = xv.integer if op == "unsqueeze" else None
        return ast.copy_location(call, node), _Val(True, rank, integer)

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
        if len(entries) != 1:
            raise Unsupported(f"`{unparse(node)}`: index without a batched form")
        idx, iv = self.expr(entries[0])
        if not iv.batched or iv.integer is None or iv.rank is None:
            raise Unsupported(f"`{unparse(node)}`: index not known to be an integer tensor")
        for cond in iv.integer:
            self.checks[cond] = None
        if not bv.batched:  # w[idx]: per item w[idx_k], all at once w[idx]
            if not isinstance(base, ast.Name) or base.id in self.vals:
                raise Unsupported(f"`{unparse(node)}`: gather from a computed value")
            # vectorize_loops checks that a tensor indexed by the loop is a tensor
            rank = iv.rank + Rank.of(f"{base.id}.dim()") - 1
            return ast.copy_location(ast.Subscript(base, idx, ast.Load()), node), _Val(True, rank)
        if bv.rank is None:
            raise Unsupported(f"`{unparse(node)}`: per-item rank unknown")
        self.require(iv.rank, "==", node)       # one index per item
        self.require(bv.rank - 1, ">=", node)
        base = self.named(base)
        new = self.sub("x[torch.arange(len(x), device=x.device), i]", x=base, i=idx)
        return new, _Val(True, bv.rank - 1)


def _is_update(value: ast.expr, name: str, summed: frozenset[str]) -> bool:
    """``p = p + e`` / ``p = p - e`` of a summed output ``p``."""
    return (name in summed and isinstance(value, ast.BinOp)
            and isinstance(value.op, (ast.Add, ast.Sub)) and isinstance(value.left, ast.Name)
            and value.left.id == name and name not in {n.id for n in ast.walk(value.right)
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
