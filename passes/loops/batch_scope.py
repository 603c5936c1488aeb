"""The batcher's scope (``batch_loop_bodies``): what it knows about the body's values, and the
runtime conditions its batched forms need (broadcasting, ranks, dims), collected as it goes."""
from __future__ import annotations

import ast
import dataclasses

from .. import loop_rules as rules
from ..ast_tools import Checks, PassContext, replace, unparse
from .. import number_operands
from ..item_broadcasts import broadcast_item
from .batch_values import Rank, Val, condition, highest, literal, source_of
from ..errors import Unsupported
from .loop_dataflow import call_op, is_shape_query, method_name, resolve_call


def int_size(node: ast.expr, ctx: PassContext) -> bool:
    """A Python int size: an int literal, ``r.shape[k]``, ``r.size(k)`` (``k`` an int literal)
    or ``len(r)``."""
    if type(literal(node)) is int:
        return True
    if isinstance(node, ast.Subscript):
        return isinstance(node.value, ast.Attribute) and node.value.attr == "shape" \
            and type(literal(node.slice)) is int
    return isinstance(node, ast.Call) and not node.keywords and len(node.args) == 1 and (
        resolve_call(node.func, ctx) == "len"
        or method_name(node, ctx) == "size" and type(literal(node.args[0])) is int)


class Scope:
    """The values of the body being batched (``vals``) and the runtime ``checks`` so far. The
    batcher walks the body (``expr``); the per-op handlers (``batch_calls``, ``batch_set_forms``)
    read and extend the scope through it."""

    def __init__(self, ctx: PassContext, loc: ast.AST, trips: ast.expr, sets: bool,
                 tensors: frozenset[str], lifts: bool = False):
        self.ctx = ctx
        self.sets = sets                      # fixed operands of set forms are sets of points
        self.lifts = lifts                    # per-item tensors of other ranks broadcast
        self.liftable = False                 # ... were met (batch tries ``lifts``)
        self.tensors = tensors                # names known to be tensors
        self.set_forms = False                # a set form was met (batch tries ``sets``)
        self.assigned: set[str] = set()       # names the body binds
        self.loc = loc
        self.trips = trips
        self.vals: dict[str, Val] = {}
        self.checks = Checks()                # runtime conditions
        self.inputs: set[str] = set()         # sources of the loop inputs whose rows are params
        self.pre: list[ast.stmt] = []        # temporaries of the statement being rewritten
        self.varying: dict[ast.AST, bool] = {}  # node -> whether it varies, for that statement

    def sub(self, template: str, **subs) -> object:
        return replace(template, loc=self.loc, torch_name=self.ctx.torch_name, **subs)

    def check(self, condition: str) -> None:
        """Add ``condition`` (source built from the inputs' ranks and dtypes) to the check."""
        self.checks.add(self.sub(condition))

    def require(self, diff: Rank, op: str, what: ast.AST) -> None:
        cond = condition(diff, op)
        if cond is False:
            raise Unsupported(f"`{unparse(what)}`: per-item ranks never fit its batched form")
        if cond is not True:
            self.check(cond)

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
            return e is None or type(literal(e)) is int \
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

    def varies(self, node: ast.AST) -> bool:
        """Whether ``node`` reads a batched value (shape queries included: they must change)."""
        if isinstance(node, ast.Name):
            return node.id in self.vals and self.vals[node.id].batched
        # ``expr`` asks this of every subexpression: each answer is kept for the statement (the
        # names it reads are bound before it)
        known = self.varying.get(node)
        if known is None:
            known = self.varying[node] = any(self.varies(c) for c in ast.iter_child_nodes(node))
        return known

    def fixed(self, node: ast.expr) -> Val:
        """A value the loop does not change; its leaves (see ``Val``)."""
        text = self.free(node)
        whole = text if text is not None and text in self.inputs else None
        rank = self.vals[node.id].fixed_rank if isinstance(node, ast.Name) \
            and node.id in self.vals else 1 if self.positions(node) else None
        return Val(False, leaves=self.leaves(node), whole=whole, fixed_rank=rank)

    def positions(self, node: ast.expr) -> bool:
        """``torch.arange(n)`` (``OpSpec.batched`` "positions") of int sizes: int literals,
        ``r.shape[k]``, ``r.size(k)``, ``len(r)``; no keyword but ``device``: int64, 1-D."""
        return isinstance(node, ast.Call) and call_op(node, self.ctx).batched == "positions" \
            and 1 <= len(node.args) <= 3 and all(k.arg == "device" for k in node.keywords) \
            and all(int_size(a, self.ctx) for a in node.args)

    def leaves(self, node: ast.expr) -> frozenset[str] | None:
        if isinstance(node, ast.Constant) or is_shape_query(node, self.ctx):
            return frozenset()  # a number, or a Python int/tuple
        if isinstance(node, ast.Name) and node.id in self.vals:
            return self.vals[node.id].leaves
        if isinstance(node, (ast.Name, ast.Attribute)):
            root = node
            while isinstance(root, ast.Attribute):
                root = root.value
            if not isinstance(root, ast.Name) or root.id in self.vals or root.id in self.assigned:
                return None  # an attribute of a value the body binds: no source before the loop
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
            if not all(isinstance(e, ast.Slice) or type(literal(e)) is int for e in entries):
                free = self.free(node) or self._new_axes(node, entries)  # ``z1[i]``,
                return None if free is None else frozenset({free})  # the check evaluates it
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
            sub = self.leaves(p)
            if sub is None:
                return None
            found |= sub
        return frozenset(found)

    def _new_axes(self, node: ast.Subscript, entries: list[ast.expr]) -> str | None:
        """``valid[:, None]``: a fixed operand indexed by new axes, full slices and int
        literals, as source the check evaluates; None for anything else."""
        new = [isinstance(e, ast.Constant) and e.value is None for e in entries]
        if not any(new) or self.free(node.value) is None or not all(
                n or type(literal(e)) is int or isinstance(e, ast.Slice)
                and e.lower is None and e.upper is None and e.step is None
                for n, e in zip(new, entries)):
            return None
        return unparse(node)

    def aligned(self, operands: list[tuple[ast.expr, Val]], node: ast.AST):
        """([operands], the result's facts) of an elementwise op: with ``sets``, per-item values
        next to a loop input itself get dims of size 1 after the loop dim up to its rank; per-item
        values of a lower rank than fixed positions (``Val.fixed_rank``) alike."""
        lifted = self._under_positions(operands, node)
        if lifted is not None:
            return lifted
        operands = _next_to_0d_items(self, operands)
        operands = _weak_ints(self, operands, node)
        operands = lifted_operands(self, operands, node)
        val = self.elementwise([v for _, v in operands], node, aligned=True)
        if not any(v.whole is not None and not v.batched for _, v in operands) or not self.sets:
            return [e for e, _ in operands], val
        out = []
        for e, v in operands:
            k = val.rank - v.rank if v.batched else Rank()
            if k != Rank():  # dims of size 1: a constant count (``v[:, None]``), or source
                e = self.sub(rules.BATCHED_UNDER_SET_CONST.format(nones=", None" * k.const), v=e) \
                    if not k.terms else self.sub(rules.BATCHED_UNDER_SET, v=e, k=self.sub(
                        source_of(k)))
            out.append(e)
        return out, val

    def _under_positions(self, operands: list[tuple[ast.expr, Val]], node: ast.AST):
        """``pos < L`` with fixed positions ``pos`` (1-D int64) and a per-item ``L`` of a lower
        rank (a 0-d length: per item a mask [T]) -> ``pos < L[:, None]``, the per-item values
        with dims of size 1 after the loop dim up to the positions' rank, behind the check that
        their rank is at most that. int64 positions promote alike next to a 0-d or a
        dimensioned value of any dtype, so the batched dtype is the per-item one. Other fixed
        operands must be numbers. None: no fixed positions, or items of at least their rank."""
        top = max((v.fixed_rank for _, v in operands if not v.batched and v.fixed_rank),
                  default=None)
        batched = [v for _, v in operands if v.batched]
        if top is None or any(v.rank is None for v in batched):
            return None
        rank = batched[0].rank
        positions = [ast.dump(e) for e, v in operands if not v.batched and v.fixed_rank]
        if condition(rank - top, ">=") is True or not all(
                v.tensor or v.integer is not None or self._int_bound(e)
                or self._weak_int(e, positions) for e, v in operands if v.batched):
            return None
        for cond in dict.fromkeys(c for _, v in operands if v.batched and not v.tensor
                                  for c in v.integer or ()):
            self.check(cond)
        for v in batched[1:]:
            self.require(v.rank - rank, "==", node)
        if any(not v.batched and not v.fixed_rank and v.leaves != frozenset()
               for _, v in operands):
            raise Unsupported(f"`{unparse(node)}`: a fixed tensor next to positions")
        self.require(Rank() + top - rank, ">=", node)
        k = Rank() + top - rank
        out = [e if not v.batched else self.sub(rules.BATCHED_UNDER_SET, v=e, k=self.sub(
            source_of(k))) if k.terms else self.sub(
            rules.BATCHED_UNDER_SET_CONST.format(nones=", None" * k.const), v=e)
            for e, v in operands]
        return out, Val(True, Rank() + top, tensor=True)

    def _int_bound(self, e: ast.expr) -> bool:
        """``e`` reads loop-varying values only through ops whose result is an int or raises
        (``OpSpec.int_or_raises``: ``slice_bound(L) + n * (slice_bound(L) < 0)``), combined
        with int literals and sizes by ``+``, ``-``, ``*`` and comparisons: an int per item. A
        per-item Python float next to positions would compare in the default dtype, a 0-d
        tensor in its own: only ints are alike in both."""
        if isinstance(e, ast.Call):
            return call_op(e, self.ctx).int_or_raises
        if isinstance(e, ast.BinOp):
            return isinstance(e.op, (ast.Add, ast.Sub, ast.Mult)) \
                and self._int_bound(e.left) and self._int_bound(e.right)
        if isinstance(e, ast.Compare):
            return all(self._int_bound(c) for c in [e.left] + e.comparators)
        return type(literal(e)) is int or int_size(e, self.ctx)

    def _weak_int(self, e: ast.expr, positions: list[str]) -> bool:
        """``h.to(torch.result_type(pos, 1))``: a host int ``h.item()`` next to the positions
        ``pos`` (``rules.HOST_WEAK``, the kind ``1`` once known, ``batch_loop_bodies``'
        ``_item_number``): int64, as the int compares with them."""
        if not (isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) and e.args
                and isinstance(e.args[0], ast.Call) and e.args[0].args
                and ast.dump(e.args[0].args[0]) in positions):
            return False
        spelled = replace(rules.HOST_WEAK_INT, h=e.func.value, t=e.args[0].args[0],
                          torch_name=self.ctx.torch_name)
        return ast.dump(spelled) == ast.dump(e)

    def elementwise(self, vals: list[Val], node: ast.AST, aligned: bool = False) -> Val:
        """Broadcasting of batched and fixed operands: the runtime conditions it needs.
        ``aligned``: the caller aligns per-item values with a loop input itself (``aligned``)."""
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
            rank = self.under_set(rank, batched, wholes, node)
        for v in vals:
            if v.batched or v.whole in wholes and self.sets:
                continue
            if v.fixed_rank is not None:  # fixed positions: aligned from the right
                self.require(rank - v.fixed_rank, ">=", node)
                continue
            if v.leaves is None:
                raise Unsupported(f"`{unparse(node)}`: the rank of a fixed operand is unknown")
            for leaf in sorted(v.leaves):
                self.fits(leaf, rank, node)
        return Val(True, rank)

    def under_set(self, rank: Rank, batched: list[Val], wholes: list[str],
                   node: ast.AST) -> Rank:
        """Per-item values of ``rank`` next to loop inputs ``wholes`` (tensors, checked by
        vectorize_loops) of one rank at least theirs: that rank. A per-item 0-d value promotes
        dtypes as a scalar, batched it is dimensioned: equal dtypes unless items have dims."""
        top = Rank.of(f"{wholes[0]}.dim()")
        for w in wholes[1:]:
            self.require(Rank.of(f"{w}.dim()") - top, "==", node)
        self.require(top - rank, ">=", node)
        dimensioned = condition(rank - 1, ">=")
        if dimensioned is True:
            return top
        sources = [v.source for v in batched]
        if None in sources:
            if dimensioned is False:
                raise Unsupported(f"`{unparse(node)}`: dtypes of a per-item 0-d value unknown")
            self.check(dimensioned)
            return top
        same = " and ".join(f"{w}.dtype == {s}.dtype" for w in wholes
                            for s in dict.fromkeys(sources) if s != w)
        if same:
            self.check(same if dimensioned is False else f"{dimensioned} or ({same})")
        return top

    def fits(self, leaf: str, rank: Rank, node: ast.AST) -> None:
        """``leaf`` is a Python number, or a tensor that aligns from the right (rank >= 1)."""
        number = f"not isinstance({leaf}, torch.Tensor)"
        positive = condition(rank - 1, ">=")
        conds = [c for c in (positive, condition(rank - Rank.of(f"{leaf}.dim()"), ">="))
                 if c is not True]
        if False in conds:  # 0-d items, or a tensor of higher rank than the item's (x next to x[i])
            conds = []
        if leaf in self.tensors:
            if not conds:
                raise Unsupported(f"`{unparse(node)}`: per-item values next to `{leaf}`, a "
                                  f"tensor of higher rank")
            self.check(" and ".join(conds))
        else:
            self.check(f"{number} or ({' and '.join(conds)})" if conds else number)

    def require_dim(self, rank: Rank, d: int, node: ast.AST) -> None:
        """``d`` in range per item: else dim -1 of a 0-d item would be the loop dim."""
        self.require(rank - d - 1 if d >= 0 else rank + d, ">=", node)


def lifted_operands(scope: Scope, operands: list[tuple[ast.expr, Val]], node: ast.AST,
                    numbers: ast.expr | None = None):
    """Two per-item tensors whose ranks may differ (``x[i] * w[i]``, ``x`` [B, D], ``w``
    [B]): with ``lifts``, each through ``item_broadcasts.broadcast_item`` (the one of
    fewer dims lifted, 0-d items cast to the items' result type; the second not when
    ``numbers`` says it holds Python numbers), of the larger rank;
    without, ``scope`` is ``liftable`` and the ranks must be equal (``elementwise``)."""
    if len(operands) != 2 or not all(v.batched and v.tensor and v.rank is not None
                                     for _, v in operands):
        return operands
    (a, av), (b, bv) = operands
    if condition(av.rank - bv.rank, "==") is True:
        return operands
    scope.liftable = True
    if not scope.lifts:
        return operands
    # lifted where its rank may be the lower one (a rank is never negative)
    low = [condition(v.rank - w.rank, ">=") is not True and w.rank != Rank()
           for v, w in ((av, bv), (bv, av))]
    a, b = (scope.named(a) if low[1] else a), (scope.named(b) if low[0] else b)
    fn = scope.ctx.bind(broadcast_item, "broadcast_item")
    rank = highest(av.rank, bv.rank)
    forms = [scope.sub(rules.BROADCAST_ITEM, fn=fn, a=a, b=b), scope.sub(
        rules.BROADCAST_ITEM, fn=fn, a=b, b=a) if numbers is None else scope.sub(
        rules.BROADCAST_NUMBERS, fn=fn, a=b, b=a, k=numbers)]
    return [(form if up else x, Val(True, rank, v.integer, tensor=True))
            for form, x, (_, v), up in zip(forms, (a, b), operands, low)]


def _weak_ints(scope: Scope, operands: list[tuple[ast.expr, Val]], node: ast.AST):
    """A per-item Python int (the loop index, int arithmetic of it) next to a per-item tensor
    in arithmetic: per item a weak scalar (``x[i] + i`` of int32 ``x`` is int32), batched an
    int64 tensor, which would promote: ``number_operands.weak_int`` casts it to the tensor's
    integer dtype."""
    if not isinstance(node, ast.BinOp) or len(operands) != 2:
        return operands
    out = list(operands)
    for k in (0, 1):
        (n, nv), (t, tv) = out[k], out[1 - k]
        if nv.batched and not nv.tensor and nv.integer == () and tv.batched and tv.tensor:
            t = scope.named(t)
            out[1 - k] = (t, tv)
            fn = scope.ctx.bind(number_operands.weak_int, "weak_int")
            out[k] = (scope.sub(f"{fn}(i, t)", i=n, t=t), nv)
            break
    return out


def _next_to_0d_items(scope: Scope, operands: list[tuple[ast.expr, Val]]):
    """A tensor named before the loop next to per-item values known 0-d, of a loop input
    (``labels == c``, ``c`` a class id of ``torch.unique(labels)``) is aligned like one
    (``under_set``): per item the result has its shape, batched the 0-d values get dims of
    size 1 up to its rank. Otherwise a 0-d item fits only next to numbers."""
    batched = [v for _, v in operands if v.batched]
    if not batched or not all(v.rank is not None and condition(v.rank - 1, ">=") is False
                              and v.source is not None for v in batched):
        return operands  # (a 0-d value of no known source: its dtype is not known)
    out = []
    for e, v in operands:
        if not v.batched and v.whole is None and v.fixed_rank is None \
                and isinstance(e, ast.Name) and v.leaves == frozenset({e.id}):
            v = dataclasses.replace(v, whole=e.id)
            if scope.sets:
                scope.check(f"isinstance({e.id}, torch.Tensor)")
        out.append((e, v))
    return out
