"""Tensor conditions inside a loop body being vectorized become masks (if-conversion).

Under ``torch.vmap`` a condition on a loop-varying tensor cannot steer Python control flow, so
both branches run and a per-iteration mask selects. Python conditions (not loop-varying) stay
``if`` statements. With ``_c`` a fresh name::

    if y[i] > 0.5:                       _c = torch.ne(y[i] > 0.5, False)
        t = torch.log(p[i])        ->    t = torch.log(torch.where(_c, <p[i], 0 where not _c>, 1))
    else:                                _nc = torch.logical_not(_c)
        t = torch.log(1 - p[i])          t = torch.where(_nc, torch.log(torch.where(_nc, 1 - p[i], 1)), t)

    if target[i] == ignore:              _c = torch.ne(target[i] == ignore, False)
        continue                   ->    _keep = torch.logical_not(_c)
    loss += -logp[i, target[i]]          (contribution masked by _keep; index where(_keep, target[i], 0))

The trap: a deselected branch still runs, and NaN/inf there poisons gradients through
``torch.where`` (0 * inf = NaN). So under a mask the iteration's values the branch reads (names
that vary with it, ``x[i]``) are 0 where deselected (NaN/inf inputs never reach its ops;
``torch.where(p, x, False)``: ``False`` is 0 in ``x``'s dtype, with no zeros of its size
allocated and filled), so are the values it reads that the loop does not change and that take
a gradient (a weight read whole: ``FixedOperand``; 0 * inf in its gradient otherwise), every
op with ``OpSpec.sanitize`` gets its risky operand replaced by a safe value (the "double where":
log(0) of those zeros), loop-varying subscripts read index 0 where deselected, and any call not
known to be total (``OpSpec.total``: user functions, losses with index targets, ...) raises
``Unsupported``: the loop is kept. A fixed operand made safe that way is cast to the dtype the
original operation had (``beta`` in ``d ** 2 / beta`` stays a weak Python number). An operation
the loop does not change, of fixed values and numbers (``1.0 / self.scale``), is one fixed value:
``_fixed_operand(p, 1.0 / self.scale, <made safe operand by operand>)``, the operation as written
unless it takes a gradient. Of Python numbers it is the original's Python float (double
precision; made safe as tensors it was a float32 tensor, 1e-8 off in a float64 loss); one that
raises (``1.0 / 0``) fails the loop's runtime check (``NumbersRun``): the loop runs as written
and raises where the original raises.

A value computed before the condition, in every iteration, and read under it (hard-example
mining: ``l = F.cross_entropy(x[i:i+1], y[i:i+1])``, ``if l.item() > th: s += l``) is computed
again where the branch reads it, from its inputs with the deselected iterations detached::

    l = F.cross_entropy(x[i:i+1], y[i:i+1])       (as written: the condition reads it)
    ... s += F.cross_entropy(torch.where(_c, x[i:i+1], x[i:i+1].detach()), ...) where _c

The original never differentiates ``l`` for a deselected iteration; zeros read in place of
``l`` would still run its backward there (0 * NaN at a NaN row). The recomputation has the
original's values in every iteration (its ops ran on them before the condition: none is
checked or made safe), and ``torch.where`` gives its inputs exactly 0 where deselected. Only
values whose derivative may be NaN/inf (``loop_dataflow.may_be_nonfinite``) are recomputed,
and only where a gradient may flow (not in comparisons); a value read under the condition
after something it reads was rebound is read as a zeroed leaf, as before.

A selection's dense stand-in ``torch.where(_keep, x, False)`` (``masked_selections_to_where``,
``ast_marks.SELECTS``) under a condition that holds in every iteration where its mask ``m``
selects something (``if m.sum() == 0: continue``, ``if m.any():``, ``selection_test``; a
conjunction when each part does) reads ``x`` as it is: ``_keep`` is false in every deselected
iteration, so the stand-in is 0 there and ``x``'s gradient is exactly 0 there, as with the zeroed
read, and NaN/inf in ``x`` reach no op (one ``where`` per selection instead of three)::

    m = target[i] > 0                    _keep = m.reshape(...)
    if m.sum() == 0:               ->    d = torch.where(_keep, pred[i], False) - ...
        continue                         (not torch.where(_keep, torch.where(<_mask>, pred[i],
    d = pred[i][m] - target[i][m]         False), False))

A mask bound again after its test is another mask: the fact goes with the binding.

A detached value (``Variable(helper(fg[perm]))``, ``x.detach()``) may call what is not known
to be total: it takes no gradient, and is 0 where deselected, whatever the calls give there (one
raising makes the vectorized form fail, and the loop runs as written). A tuple assignment of
new names (``values, perm = torch.sort(errors)``) runs under the mask as written: nothing to
merge. An operand of ``and``/``or`` that does not vary may be a Python value (``only_present
and fg.sum() == 0``): ``torch.as_tensor`` of it.

A name bound again under a mask keeps its value where the mask is off: ``torch.where(c, v, x)``,
both shapes checked alike at run time (``_merged_shape``; per item, batched alike, when both
vary with the iteration; as values under vmap when one does not): ``v = v.sum()`` or ``v =
fill`` under ``c`` gives the name one shape or the other by iteration, which one merge would
broadcast (the vectorized form raises and the original runs). A number literal, or a name bound
to one, is not checked (it broadcasts in the arithmetic that reads it as the original's does).
A name first bound under the same mask takes the new value as it is (its old one is no value
of the original where the mask is off): a helper reshaping its argument, inlined under ``if k
!= ignore:``.

Effect statements (accumulations, appends, writes) stay in place, their values made safe under
their masks: ``plan.masked`` maps each to (safe value, mask or None), for ``effects_to_outputs``.
"""
from __future__ import annotations

import ast
import builtins
import operator

import torch

from .. import ast_marks
from ..errors import Unsupported

from .. import ops
from ..ast_tools import PassContext, Transformer, clone, replace, root_name, unparse, walk
from ..masked_divisors import masked_divisor
from .loop_dataflow import (call_op, depends, is_shape_query, loads, may_be_nonfinite,
                            method_name, stores, stores_in)
from .batch_values import number_literal
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    """Straight-line body: tensor ``if``s and guarded ``continue``s as masks."""
    plan.body = _Converter(plan, ctx).block(plan.body, None, set())
    return plan


class _Converter:
    def __init__(self, plan: LoopPlan, ctx: PassContext):
        self.plan = plan
        self.facts = plan.facts
        self.index = plan.iteration.index
        self.ctx = ctx
        self.pre: list[ast.stmt] = []  # temporaries of ``expr``, run before its statement
        self.boolean: set[str] = set()       # see ``_note``
        self.fresh: dict[str, str] = {}
        self.varying: set[str] = set()  # names bound to a value varying with the iteration
        self.numbers: set[str] = set()  # names bound to a number literal
        # name -> its value, computed before any condition (see the module docstring)
        self.recompute: dict[str, ast.expr] = {}
        # condition name -> (m, e): it holds exactly when the mask ``m`` selects nothing (e) or
        # something (not e); mask name -> the masks ``m`` that select something only where it
        # holds (see ``Sanitize.visit_Call``)
        self.tests: dict[str, tuple[str, bool]] = {}
        self.implied: dict[str, frozenset[str]] = {}

    def _sub(self, template: str, loc: ast.AST, **subs) -> object:
        return replace(template, loc=loc, torch_name=self.ctx.torch_name, **subs)

    def _mask(self, template: str, loc: ast.AST, **subs) -> tuple[str, list[ast.stmt]]:
        name = self.ctx.namer.new("mask")
        return name, self._sub(f"m = {template}", loc, m=name, **subs)

    def _and(self, pred: str | None, cond: str, loc: ast.AST) -> tuple[str, list[ast.stmt]]:
        if pred is None:
            return cond, []
        name, stmts = self._mask("torch.logical_and(p, c)", loc, p=pred, c=cond)
        self.implied[name] = self.implied.get(pred, frozenset()) & self.implied.get(cond, frozenset())
        if {pred, cond} <= self.plan.index_masks:
            self.plan.index_masks.add(name)
            tests = self.plan.index_tests
            tests[name] = self._sub("p and c", loc, p=tests[pred], c=tests[cond])
        return name, stmts

    def _negated(self, cond: str, loc: ast.AST) -> tuple[str, list[ast.stmt]]:
        name, stmts = self._mask("torch.logical_not(c)", loc, c=cond)
        if cond in self.tests:
            mask, empty = self.tests[name] = self.tests[cond][0], not self.tests[cond][1]
            self.implied[name] = frozenset({mask}) if not empty else frozenset()
        if cond in self.plan.index_masks:
            self.plan.index_masks.add(name)
            self.plan.index_tests[name] = self._sub("not c", loc, c=self.plan.index_tests[cond])
        return name, stmts

    def block(self, stmts: list[ast.stmt], pred: str | None, defined: set[str]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for s in stmts:
            self._forget(s)
            if isinstance(s, ast.If) and depends(s.test, self.facts.variant, self.ctx):
                cond, stmts_ = self._tensor_if(s, pred, defined)
                out += stmts_
                if s.body and isinstance(s.body[-1], ast.Continue):  # guarded continue
                    keep, stmts_ = self._negated(cond, s)
                    pred, more = self._and(pred, keep, s)
                    out += stmts_ + more
                continue
            if isinstance(s, ast.If):  # Python condition: stays a Python `if`
                s.body = self.block(s.body, pred, set(defined)) or [ast.Pass()]
                s.orelse = self.block(s.orelse, pred, set(defined))
                defined |= self._assigned_in(s)
                self._forget(s)  # what one branch bound may not hold after the `if`
                out.append(s)
                continue
            if isinstance(s, (ast.Pass, ast.Continue)) or (
                    isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)):
                continue
            effect = self.facts.effects.get(s)
            if effect is not None:
                self.plan.masked[s] = self.expr(effect.value, pred), pred
                self.plan.uses_where |= pred is not None
                out += self._flush() + [s]
                continue
            out += self._local(s, pred, defined)
        return out

    def _tensor_if(self, s: ast.If, pred: str | None,
                   defined: set[str]) -> tuple[str, list[ast.stmt]]:
        """The branches under their masks; returns (condition name, statements)."""
        cond = self.ctx.namer.new("cond")
        test = _tensor_logic(self.expr(s.test, pred), self.ctx,
                             lambda e: depends(e, self.facts.variant, self.ctx))
        # ``ne(t, False)``: the truth of ``t``, a bool ``t`` as it is (``ne(t, 0)`` would compare
        # it as int64, which Inductor's vectorized kernels convert lane by lane)
        out = self._flush() + self._sub("c = torch.ne(t, False)", s, c=cond, t=test)
        found = selection_test(s.test, self.ctx)
        if found is not None:
            self.tests[cond] = found
            self.implied[cond] = frozenset({found[0]}) if not found[1] else frozenset()
        if self._on_indices(s.test):
            self.plan.index_masks.add(cond)
            self.plan.index_tests[cond] = clone(s.test)
        then_pred, more = self._and(pred, cond, s)
        out += more
        body = s.body[:-1] if s.body and isinstance(s.body[-1], ast.Continue) else s.body
        out += self.block(body, then_pred, defined)
        if s.orelse:
            neg, more = self._negated(cond, s)
            out += more
            else_pred, more = self._and(pred, neg, s)
            out += more + self.block(s.orelse, else_pred, defined)
        return cond, out

    def _forget(self, s: ast.stmt) -> None:
        """Drop the values to recompute that ``s`` may change: what it binds, a name an effect
        writes into, or anything a statement neither assignment nor effect reads."""
        changed = set()
        for n in walk(s):
            if isinstance(n, ast.stmt):
                effect = self.facts.effects.get(n)
                changed |= stores(n) | ({effect.name} if effect else set()) | (
                    loads(n) if isinstance(n, ast.Expr) and not effect else set())
        for name, value in list(self.recompute.items()):
            if name in changed or loads(value) & changed:
                del self.recompute[name]
        # a mask bound again is another mask than the one a condition tested
        self.tests = {c: t for c, t in self.tests.items() if t[0] not in changed}
        self.implied = {c: m - changed for c, m in self.implied.items()}

    def _on_indices(self, test: ast.expr) -> bool:
        """``test`` is arithmetic and comparisons of loop indices, literals and names the loop
        does not bind (``if i == j``): Python ints in the original, which then reads nothing back
        from a device for it."""
        ints = {self.index} | self.plan.outer_indices
        other = self.facts.variant | stores_in(self.plan.node.body)  # rows, values of the body
        return all(isinstance(n, (ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Constant,
                                  ast.expr_context, ast.operator, ast.cmpop, ast.boolop,
                                  ast.unaryop)) or isinstance(n, ast.Name)
                   and (n.id in ints or n.id not in other) for n in walk(test))

    def _local(self, s: ast.stmt, pred: str | None, defined: set[str]) -> list[ast.stmt]:
        """A statement touching only iteration-local names: merged under the mask."""
        if pred is None:
            defined |= stores(s)
            self._note(s, None)
            if isinstance(s, ast.Assign) and len(s.targets) == 1 \
                    and isinstance(s.targets[0], ast.Name) \
                    and s.targets[0].id not in loads(s.value) \
                    and may_be_nonfinite(s.value, self.ctx) is not None:
                self.recompute[s.targets[0].id] = s.value
            return [s]
        if isinstance(s, ast.AugAssign) and isinstance(s.target, ast.Name):
            value = ast.copy_location(ast.BinOp(left=ast.Name(s.target.id, ast.Load()), op=s.op,
                                                right=s.value), s)  # located: templates take it
            s = ast.copy_location(ast.Assign(targets=[s.target], value=value), s)
        if _unpacks_into_new_names(s, defined):  # nothing to merge: every name is new here
            value = self.expr(s.value, pred)
            defined |= stores(s)
            self._note(s, pred)
            return self._flush() + self._sub("x = v", s, x=s.targets[0], v=value)
        if not (isinstance(s, ast.Assign) and len(s.targets) == 1
                and isinstance(s.targets[0], ast.Name)):
            raise Unsupported(f"`{unparse(s).strip()}` under a tensor condition", s.lineno)
        name = s.targets[0].id
        varies = self._varies(s.value)  # before `expr`, which rewrites it in place
        value = self.expr(s.value, pred)
        # a name first bound under this same mask holds no value of the original where it is
        # off: bound again (`a = a.sum()`, a helper reshaping its argument) it takes the new
        # value as it is (a merge would broadcast the old one's shape into it)
        merged = name in defined and self.fresh.get(name) != pred
        if merged:  # keep the previous value where the mask is off
            value = self._merged(s, pred, value, name, varies)
        defined.add(name)
        self._note(s, None if merged else pred)
        if varies:
            self.varying.add(name)
        return self._flush() + self._sub("x = v", s, x=name, v=value)

    def _merged(self, s: ast.stmt, pred: str, value: ast.expr, name: str,
                varies: bool) -> ast.expr:
        """``name`` bound again to ``value`` (``s``'s, made safe; ``varies``: it varies with the
        iteration) where ``pred`` holds, kept where not; their shapes checked alike
        (``MergedShape``): by their per-item shapes when both vary (tensors in the vectorized
        body, batched alike), else as values (a Python number is not checked: it broadcasts
        as the original's would where it is read; nor is a number literal, or a name bound to
        one)."""
        if number_literal(value) or name in self.numbers:
            return self._sub("torch.where(p, v, x)", s, p=pred, v=value, x=name)
        helper = self.ctx.bind(MERGED_SHAPE, "merged_shape")
        if not (name in self.varying and varies):
            return self._sub("torch.where(p, h(v, x), x)", s, p=pred, v=value, x=name, h=helper)
        if not isinstance(value, ast.Name):  # computed once: its shape is read too
            temp = self.ctx.namer.new("t")
            self.pre += self._sub("t = v", s, t=temp, v=value)
            value = ast.Name(temp, ast.Load())
        return self._sub("torch.where(p.reshape(h[p.shape, v.shape, x.shape]), v, x)", s, p=pred,
                         v=value, x=name, h=helper)

    def _varies(self, e: ast.expr) -> bool:
        """``e`` varies with the iteration, also through names earlier stages made."""
        return depends(e, self.facts.variant | self.varying, self.ctx)

    def _note(self, s: ast.stmt, pred: str | None) -> None:
        """What ``s`` binds: a bool value (no gradient), or a value computed under ``pred``
        alone (from zeroed leaves): neither needs zeroing when read under ``pred``."""
        for name in stores(s):
            self.boolean.discard(name)
            self.fresh.pop(name, None)
            self.varying.discard(name)
            self.numbers.discard(name)
        unpacked = _unpacked_names(s)
        if unpacked:  # `s, perm = torch.sort(...)`: each item a value of the call's
            self.varying |= unpacked if self._varies(s.value) else set()
            self.fresh.update(dict.fromkeys(unpacked, pred) if pred is not None else {})
        if not (isinstance(s, ast.Assign) and len(s.targets) == 1
                and isinstance(s.targets[0], ast.Name)):
            return
        name, value = s.targets[0].id, s.value
        if self._varies(value):
            self.varying.add(name)
        if number_literal(value):
            self.numbers.add(name)
        if isinstance(value, ast.Compare) or isinstance(value, ast.Call) and (
                call_op(value, self.ctx).boolean or call_op(value, self.ctx).aliases
                and isinstance(value.func, ast.Attribute)
                and isinstance(value.func.value, ast.Name)
                and value.func.value.id in self.boolean):  # a view of a mask
            self.boolean.add(name)
        elif pred is not None:
            self.fresh[name] = pred

    def _flush(self) -> list[ast.stmt]:
        pre, self.pre[:] = list(self.pre), []
        return pre

    def expr(self, e: ast.expr, pred: str | None) -> ast.expr:
        """``e`` made safe to evaluate on iterations where ``pred`` is false."""
        if pred is None:
            return e
        sanitize = Sanitize(pred, self.facts.variant, self.index, self.ctx, self.pre)
        sanitize.quiet = self.boolean | {n for n, p in self.fresh.items() if p == pred}
        sanitize.recompute = self.recompute
        sanitize.selecting = self.implied.get(pred, frozenset())
        safe = sanitize.safe(e)
        for check in sanitize.checks:
            self.plan.checks.add(check)
        return safe

    def _assigned_in(self, s: ast.If) -> set[str]:
        """Names ``s`` binds (not its effects': their statements are rewritten later)."""
        return set().union(*(stores(n) for n in walk(s) if isinstance(n, ast.stmt)
                             and n not in self.facts.effects))


# ``count <op> number`` of a count of a mask's true elements (``OpSpec.counts_true``): whether
# it holds exactly when the mask selects nothing (True) or exactly when it selects something.
_COUNT_TESTS = {(ast.Eq, 0): True, (ast.LtE, 0): True, (ast.Lt, 1): True,
                (ast.NotEq, 0): False, (ast.Gt, 0): False, (ast.GtE, 1): False}


def selection_test(test: ast.expr, ctx: PassContext) -> tuple[str, bool] | None:
    """(m, empty) when ``test`` holds exactly when the mask named ``m`` selects nothing
    (``empty``: ``m.sum() == 0``, ``not m.any()``) or exactly when it selects something
    (``m.any()``, ``m.sum() > 0``). A non-bool ``m`` makes no stand-in of ``x[m]`` (``torch.where``
    raises on it), so what the test means for one does not matter."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        found = selection_test(test.operand, ctx)
        return None if found is None else (found[0], not found[1])
    empty = False
    if isinstance(test, ast.Compare):
        number = test.comparators[0] if len(test.comparators) == 1 else None
        if not (isinstance(number, ast.Constant) and type(number.value) is int):
            return None
        empty = _COUNT_TESTS.get((type(test.ops[0]), number.value))
        test = test.left
    counted = _counted(test, ctx)
    return None if counted is None or empty is None else (counted, empty)


def _counted(e: ast.expr, ctx: PassContext) -> str | None:
    """``m`` of ``m.sum()``, ``m.any()``, ``torch.sum(m)``."""
    if not (isinstance(e, ast.Call) and call_op(e, ctx).counts_true and not e.keywords):
        return None
    method = method_name(e, ctx) is not None
    if len(e.args) != (0 if method else 1):
        return None
    operand = e.func.value if method else e.args[0]
    return operand.id if isinstance(operand, ast.Name) else None


def _unpacks_into_new_names(s: ast.stmt, defined: set[str]) -> bool:
    """``a, b = e`` binding names no earlier statement of the body bound (``values, perm =
    torch.sort(x)``): under a mask it keeps its targets as they are, with nothing to merge."""
    return bool(_unpacked_names(s)) and not stores(s) & defined


def _tensor_logic(test: ast.expr, ctx: PassContext, varies) -> ast.expr:
    """Python ``and``/``or``/``not``/chained comparisons call ``bool()``: use tensor logic. An
    operand that does not vary (``varies``) may be a Python value (``only_present and
    fg.sum() == 0``): ``torch.as_tensor`` of it (a tensor stays itself)."""
    def sub(template: str, **subs) -> ast.expr:
        return replace(template, loc=test, torch_name=ctx.torch_name, **subs)

    if isinstance(test, ast.BoolOp):
        fn = "torch.logical_and" if isinstance(test.op, ast.And) else "torch.logical_or"
        vals = [_tensor_logic(v, ctx, varies) if varies(v) else sub("torch.as_tensor(v)", v=v)
                for v in test.values]
        acc = vals[0]
        for v in vals[1:]:
            acc = sub(f"{fn}(torch.ne(a, False), torch.ne(b, False))", a=acc, b=v)
        return acc
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return sub("torch.logical_not(torch.ne(a, False))",
                   a=_tensor_logic(test.operand, ctx, varies))
    if isinstance(test, ast.Compare) and len(test.ops) > 1:
        parts = [ast.Compare(left=l, ops=[op], comparators=[r]) for l, op, r in
                 zip([test.left] + test.comparators[:-1], test.ops, test.comparators)]
        return _tensor_logic(ast.copy_location(ast.BoolOp(op=ast.And(), values=parts), test), ctx,
                             varies)
    return test


class BranchShape:
    """``_branch_shape[c.shape, x.shape]``: ``x``'s rank of 1s, the shape a one-element condition
    ``c`` takes to select among ``x``'s elements without changing ``x``'s shape. Shapes only:
    batch_loop_bodies passes each item's shapes (``per_item_shapes``)."""
    per_item_shapes = True
    zero_d_adds_dim = False  # unlike a mask's ``x[True]`` (``masked_selections_to_where``)

    def __getitem__(self, shapes: tuple) -> tuple[int, ...]:
        return (1,) * len(shapes[1])


BRANCH_SHAPE = BranchShape()


def _unpacked_names(s: ast.stmt) -> set[str]:
    """The names ``a, b = v`` binds (a tuple of plain names); none for other statements."""
    target = s.targets[0] if isinstance(s, ast.Assign) and len(s.targets) == 1 else None
    if isinstance(target, ast.Tuple) and all(isinstance(e, ast.Name) for e in target.elts):
        return {e.id for e in target.elts}
    return set()


class MergedShape(BranchShape):
    """``_merged_shape[c.shape, v.shape, x.shape]``: ``_branch_shape``'s answer for the merge
    ``torch.where(c, v, x)`` of a name bound again under ``c`` (``v``) over its value before
    (``x``). Raises when their shapes differ (``v = v.sum()``): the original's name has one
    shape or the other by iteration, where a merge would broadcast one into the other.
    ``_merged_shape(v, x)``: ``v``, checked so, where one of them does not vary (``x`` the
    iteration's value under vmap; not batched)."""

    def __getitem__(self, shapes: tuple) -> tuple[int, ...]:
        _same_shapes(shapes[1], shapes[2])
        return super().__getitem__(shapes)

    def __call__(self, v, x):
        if isinstance(v, torch.Tensor) and isinstance(x, torch.Tensor):
            _same_shapes(v.shape, x.shape)
        return v


def _same_shapes(new: tuple, old: tuple) -> None:
    if tuple(new) != tuple(old):
        raise RuntimeError(f"a value of shape {list(old)} bound again under a tensor condition to "
                           f"one of shape {list(new)}: its shape depends on the condition in each "
                           "iteration")


MERGED_SHAPE = MergedShape()


class FixedOperand:
    """``_fixed_operand(p, w)``: ``w``, a value the loop does not change (not a row of the
    iteration: a weight read whole), read by a branch under the one-element condition ``p``
    (``detached``: ``w`` detached where not, the same values, for a value recomputed there).
    A deselected iteration's zero cotangent times an infinite or NaN local derivative at ``w``
    (``w`` holding inf, or an op overflowing) would be NaN in ``w``'s gradient, where the
    original, which never ran the branch there, has 0: so a ``w`` that takes a gradient is
    ``w`` where ``p`` holds and zeros where not (``torch.where`` passes 0 there, exactly); any
    other ``w`` (a Python number, a tensor without gradient) is itself. batch_loop_bodies
    batches it as ``w`` behind the check that ``w`` takes no gradient (``fixed_under_mask``);
    otherwise vmap runs the body with the per-item mask."""
    fixed_under_mask = True

    def __init__(self, detached: bool = False):
        self.detached = detached

    def __call__(self, p, w, safe=None):
        if not (isinstance(w, torch.Tensor) and w.requires_grad):
            return w
        if safe is not None:  # a fixed operation's value made safe operand by operand
            return safe
        return torch.where(p.reshape((1,) * w.dim()), w,
                           w.detach() if self.detached else torch.zeros_like(w))


FIXED_OPERAND = FixedOperand()
DETACHED_OPERAND = FixedOperand(detached=True)


class NumbersRun:
    """``_numbers_run("truediv", x, a)``, in the loop's runtime check: False when ``x`` and
    ``a`` are Python numbers whose operation raises (``1.0 / 0``: ``ZeroDivisionError``,
    ``10.0 ** 400``: ``OverflowError``). A fixed operation of numbers runs once for all
    iterations in the vectorized loop, where the original runs it only on the selected ones:
    then the loop runs as written, and raises where the original raises."""

    def __call__(self, name: str, x, a) -> bool:
        if not (type(x) in (int, float) and type(a) in (int, float)):
            return True
        try:
            getattr(operator, name)(x, a)
        except ArithmeticError:
            return False
        return True


NUMBERS_RUN = NumbersRun()
# The Python operators ``OpSpec.sanitize`` makes safe, by their ``operator`` function.
_OPERATOR_NAMES = {ast.Div: "truediv", ast.FloorDiv: "floordiv", ast.Mod: "mod", ast.Pow: "pow"}
_DIVISIONS = (ast.Div, ast.FloorDiv, ast.Mod)  # a fixed divisor made safe by masked_divisor
_METADATA = frozenset({"shape", "ndim", "dtype", "device"})  # attributes without gradient
# The 0 a deselected iteration reads: ``False`` is 0 in every dtype and promotes none (a
# full-size ``zeros_like`` would be allocated and filled at the batched value's size).
ZERO = "False"


def _branch_shape(ctx: PassContext) -> str:
    """The name ``BRANCH_SHAPE`` is bound to in the generated code."""
    return ctx.bind(BRANCH_SHAPE, "branch_shape")


class Sanitize(Transformer):
    """Replace risky operands by safe values where ``pred`` is false; refuse unknown calls."""

    def __init__(self, pred: str, variant: set[str], index: str, ctx: PassContext,
                 pre: list[ast.stmt] | None = None):
        self.pred = pred
        self.variant = variant
        self.index = index
        self.ctx = ctx
        self.pre = pre  # statements to run first; None: no fixed operand gets its dtype cast
        # the iteration's values read here (leaves) are zero where deselected (``_leaf``)
        self.leaves = pre is not None
        self.at: ast.expr | None = None  # the expression ``safe`` makes safe
        self.quiet: set[str] = set()     # names read as they are (no gradient, or safe already)
        self.recompute: dict[str, ast.expr] = {}  # names computed again where read (_Converter)
        self.detached = False  # in a recomputed value: leaves detached where deselected
        self.selecting: frozenset[str] = frozenset()  # masks selecting only where pred holds
        self.opaque = False    # in a detached value: any call may run, its result is zeroed
        self.checks: list[ast.expr] = []  # for the loop's runtime check (``NumbersRun``)

    def safe(self, e: ast.expr) -> ast.expr:
        """``e`` made safe (``visit``, located at ``e`` where generated nodes have no place)."""
        self.at = e
        return self.visit(e)

    def _safe(self, operand: ast.expr, safe: str) -> ast.expr:
        return replace(f"torch.where(p, a, {safe})", loc=self._loc(operand),
                       torch_name=self.ctx.torch_name, p=self.pred, a=operand)

    def _zeroed(self, index: ast.expr) -> ast.expr:
        """Index 0 where deselected, in the index's own dtype (a bool mask stays a mask)."""
        return replace("torch.where(p, a, torch.zeros_like(a))", loc=self._loc(index),
                       torch_name=self.ctx.torch_name, p=self.pred, a=index)

    def _leaf(self, value: ast.expr) -> ast.expr:
        """An iteration's value the branch reads, 0 where deselected: a deselected iteration
        then computes on zeros, whose values and local derivatives the sanitized ops keep
        finite, so its zero cotangent stays zero (NaN/inf inputs would make it NaN). The
        one-element condition takes the value's rank (``BranchShape``), not its own shape."""
        if not isinstance(value, ast.Name):  # computed once
            name = self.ctx.namer.new("t")
            self.pre += replace("t = x", loc=self._loc(value), t=name, x=value)
            value = ast.Name(name, ast.Load())
        other = "a.detach()" if self.detached else ZERO
        return replace(f"torch.where(p.reshape(h[p.shape, a.shape]), a, {other})",
                       loc=self._loc(value), torch_name=self.ctx.torch_name, p=self.pred,
                       a=value, h=_branch_shape(self.ctx))

    def _unknown(self, node: ast.AST) -> bool:
        """A call that is neither total, nor made safe, nor a shape query."""
        if not isinstance(node, ast.Call) or is_shape_query(node, self.ctx):
            return False
        op = call_op(node, self.ctx)
        return not (op.total or op.sanitize is not None)

    def _detached_call(self, node: ast.Call) -> ast.expr:
        """``x.detach()`` / ``Variable(x)`` takes no gradient: the calls in ``x`` may be
        unknown (a user helper, ``_unknown``), since its value is 0 where deselected (``_leaf``), whatever
        they give there (NaN/inf never reaches a value or, as a factor, a zero cotangent). One
        raising there makes the vectorized form fail, and the loop runs as written."""
        self.opaque = True
        try:
            node = self.visit_Call(node)
        finally:
            self.opaque = False
        return self._leaf(node)

    def _loc(self, node: ast.expr) -> ast.AST | None:
        """``node``, or the expression being made safe when ``node`` was generated unlocated."""
        located = getattr(node, "lineno", None) is not None \
            and getattr(node, "end_lineno", None) is not None
        return node if located else self.at

    def _fixed(self, value: ast.expr) -> ast.expr:
        """A value the loop does not change read by the branch (``FixedOperand``)."""
        helper = self.ctx.bind(DETACHED_OPERAND, "detached_operand") if self.detached \
            else self.ctx.bind(FIXED_OPERAND, "fixed_operand")
        return replace("h(p, w)", loc=self._loc(value), p=self.pred, w=value, h=helper)

    def _is_fixed(self, node: ast.expr) -> bool:
        """``node`` reads a value the loop does not change: a local or parameter of the
        function (not a module, global, builtin or helper bound into the generated code), not
        a shape or dtype."""
        root = node
        while isinstance(root, (ast.Attribute, ast.Subscript)):
            if isinstance(root, ast.Attribute) and root.attr in _METADATA:
                return False
            root = root.value
        return self.leaves and isinstance(node.ctx, ast.Load) and isinstance(root, ast.Name) \
            and root.id not in self.quiet | {self.index} | self.ctx.globals.keys() \
            | self.ctx.bindings.keys() \
            and not hasattr(builtins, root.id) and not depends(node, self.variant, self.ctx)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if is_shape_query(node, self.ctx):  # metadata: no gradient
            return node
        selected = node.args[1] if ast_marks.get(node, ast_marks.SELECTS) in self.selecting \
            else None
        if selected is not None and root_name(selected) not in self.recompute:
            # ``torch.where(k, x, False)``, the stand-in of ``x[m]``, where ``m`` selects
            # something only in iterations ``pred`` selects: it is 0 wherever ``pred`` is false
            # and ``x``'s gradient is 0 there, the values of ``x`` themselves need no zeroing
            # (``x``'s indices still do)
            quiet, self.quiet = self.quiet, self.quiet | {root_name(selected)}
            try:
                node.args[1] = self.visit(selected)
            finally:
                self.quiet = quiet
            return node
        if call_op(node, self.ctx).aten == "detach" and self.leaves and not self.opaque \
                and any(self._unknown(n) for n in walk(node) if n is not node):
            return self._detached_call(node)
        if method_name(node, self.ctx) is not None:  # the receiver is data, a function is not
            node.func.value = self.visit(node.func.value)
        node.args = [self.visit(a) for a in node.args]
        for k in node.keywords:
            k.value = self.visit(k.value)
        op = call_op(node, self.ctx)
        if self.detached:  # the original's values: it ran on them
            return node
        if op.sanitize is not None:
            k, safe = op.sanitize
            if method_name(node, self.ctx) is not None:  # the receiver is argument 0
                k -= 1
            if k < 0:
                node.func.value = self._safe(node.func.value, safe)
            elif k < len(node.args):
                node.args[k] = self._safe(node.args[k], safe)
            return node
        if op.total or self.opaque:
            return node
        raise Unsupported(f"`{unparse(node.func)}(...)` would also run on iterations its "
                          "tensor condition excludes, and may fail or give NaN there",
                          node.lineno)

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        whole = self._fixed_operation(node)
        self.generic_visit(node)
        if whole is not None:  # itself, unless it takes a gradient: then made safe (FixedOperand)
            self.checks.append(replace("r(n, x, a)", loc=self._loc(node), x=whole.left,
                                       a=whole.right, n=ast.Constant(
                                           _OPERATOR_NAMES[type(node.op)]),
                                       r=self.ctx.bind(NUMBERS_RUN, "numbers_run")))
            helper = self.ctx.bind(FIXED_OPERAND, "fixed_operand")
            return replace("h(p, w, s)", loc=self._loc(node), p=self.pred, w=whole,
                           s=self._sanitized(node), h=helper)
        return self._sanitized(node)

    def _fixed_operation(self, node: ast.BinOp) -> ast.BinOp | None:
        """A copy of ``node`` as written when it is an operation the loop does not change, of
        fixed values and numbers, that ``OpSpec.sanitize`` would make safe (``1.0 /
        self.scale``). Of Python numbers the original computes a Python number: in double
        precision, weak against tensors, raising ``ZeroDivisionError`` where it raises; made
        safe operand by operand, the numbers would become tensors of the default dtype."""
        if not self.leaves or self.detached or self.pre is None \
                or ops.by_operator(type(node.op)).sanitize is None \
                or type(node.op) not in _OPERATOR_NAMES:
            return None
        fixed = all(isinstance(n, (ast.BinOp, ast.UnaryOp, ast.Constant, ast.operator,
                                   ast.unaryop, ast.expr_context))
                    or isinstance(n, (ast.Name, ast.Attribute)) and self._is_fixed(n)
                    for n in walk(node))
        return clone(node) if fixed else None

    def _sanitized(self, node: ast.BinOp) -> ast.expr:
        rule = ops.by_operator(type(node.op)).sanitize
        if rule is None or self.detached:
            return node
        k, safe = rule
        if isinstance(node.op, ast.Pow) and isinstance(node.right, ast.Constant) \
                and isinstance(node.right.value, int) and node.right.value >= 0:
            return node  # x ** 2 is total
        side, other = ("left", "right")[k], ("right", "left")[k]
        operand = getattr(node, side)
        safe_operand = self._safe(operand, safe)
        if self.pre is not None and not depends(operand, self.variant, self.ctx):
            # a fixed operand (``beta``, often a Python number) broadcast by the mask would
            # promote like a tensor: cast to the dtype the original operation has, and made a
            # tensor of that dtype before the mask (which would make a Python float a float32
            # tensor where the original divides a float64 by the float itself)
            if not isinstance(getattr(node, other), (ast.Name, ast.Constant)):
                name = self.ctx.namer.new("t")
                self.pre += replace("t = x", loc=node, t=name, x=getattr(node, other))
                setattr(node, other, ast.Name(name, ast.Load()))
            template = "d(p, x, a)" if isinstance(node.op, _DIVISIONS) else \
                f"torch.where(p, torch.zeros_like(p, dtype=torch.result_type(x, a)) + a, {safe})" \
                ".to(torch.result_type(x, a))"
            safe_operand = replace(template, loc=operand, torch_name=self.ctx.torch_name,
                                   d=self.ctx.bind(masked_divisor, "masked_divisor"),
                                   p=self.pred, x=getattr(node, other), a=operand)
        setattr(node, side, safe_operand)
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        recompute, self.recompute = self.recompute, {}  # a comparison takes no gradient
        self.generic_visit(node)
        self.recompute = recompute
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if self.leaves and isinstance(node.ctx, ast.Load) and node.id in self.recompute \
                and node.id not in self.quiet:
            return self._recomputed(node.id)
        if self.leaves and isinstance(node.ctx, ast.Load) and node.id in self.variant \
                and node.id != self.index and node.id not in self.quiet:
            return self._leaf(node)
        return self._fixed(node) if self._is_fixed(node) else node

    def _recomputed(self, name: str) -> ast.expr:
        """The value of ``name`` computed again from its inputs, detached where deselected."""
        value = clone(self.recompute[name])
        detached, self.detached = self.detached, True
        recompute, self.recompute = self.recompute, {
            k: v for k, v in self.recompute.items() if k != name}
        try:
            return self.visit(value)
        finally:
            self.detached, self.recompute = detached, recompute

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if self._is_fixed(node):  # ``self.w`` whole
            return self._fixed(node)
        return self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        leaves, self.leaves = self.leaves, False  # indices carry no gradient
        node.slice = self.visit(node.slice)
        # ``x[i]``, ``row[j]``: the selected elements are the leaf, not all of ``x``
        chain = root_name(node.value) is not None and (
            root_name(node.value) not in self.quiet or not depends(node, self.variant, self.ctx))
        self.leaves = leaves and not chain
        node.value = self.visit(node.value)
        self.leaves = leaves
        sl = node.slice
        entries = sl.elts if isinstance(sl, ast.Tuple) else [sl]
        safe = [self._zeroed(e) if (not self.detached and not isinstance(e, ast.Slice)
                                       and not (isinstance(e, ast.Name) and e.id == self.index)
                                       and depends(e, self.variant, self.ctx)) else e
                for e in entries]
        node.slice = ast.Tuple(safe, ast.Load()) if isinstance(sl, ast.Tuple) else safe[0]
        if self.leaves and chain and isinstance(node.ctx, ast.Load) \
                and depends(node, self.variant, self.ctx):
            return self._leaf(node)
        return self._fixed(node) if chain and self._is_fixed(node) else node
