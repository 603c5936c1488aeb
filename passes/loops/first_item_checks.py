"""Inner-loop checks on values the outer body derives from its items, evaluated once, on the
outer loop's first item, in front of the loop (``inline_inner_loops`` asks for them).

Real code computes an inner loop's operands from the outer items first::

    for s in range(pred.shape[0]):
        p = pred[s][:K].mm(onehot[1:].t()).gather(0, index)[0]
        a = (batch[s].sum(1) + 1)[1:]
        for i in range(len(p)):            inner check: isinstance(p, torch.Tensor) and
            ...                                         len(p) <= a.shape[0] and len(p) > 0

Such a check reads ``p`` and ``a`` only through their types and shapes (``isinstance``, ``len``,
``.shape``, ``.dim()``, ...), and they are bound once, at the top of the body, by tensor ops
without effects whose result shapes follow from their operands' shapes, from rows ``x[s]`` of
tensors the body does not bind, the loop's elements and values that do not vary. Their types and
shapes are then the same in every iteration (the items of a tensor have one shape; the mapped
body presents every item with it, and a value whose shape followed an item's data would make
the mapped form raise, not differ), so the check holds for every iteration when it holds for the
first. That is computed in front of the loop, under fresh names, its failure (no first item, or
one the statements raise on) leaving the loop as written, which raises its own error::

    try:
        _s = 0
        _p = pred[_s][:K].mm(...)...          (the statements the check reads, renamed)
        _a = (batch[_s].sum(1) + 1)[1:]
        _first_ok = isinstance(_p, torch.Tensor) and len(_p) <= _a.shape[0] and len(_p) > 0
    except Exception:
        _first_ok = False

and the outer loop's check reads ``_first_ok``. Refused (the outer loop kept, with the reason):
a check reading such a value's data (``n > 0`` for ``n = lengths[s].item()``), values made by
host round trips (``.item()``, ``int()``), ops whose result shape follows their data
(``nonzero``, ``masked_select``, ...), selections by a per-item index or mask (``x[s][m[s]]``),
any other read of the loop index, a value bound more than once or under a condition, calls that
are not tensor ops (a module, a helper) and ops with effects (random, in place).
"""
from __future__ import annotations

import ast

from .. import ast_marks, ops
from ..ast_tools import PassContext, clone, is_name, rename, root_name, unparse, walk
from .loop_dataflow import (call_op, comprehension_names, free_loads, loads, method_name,
                            resolve_call, stores, stores_in)
from .plan import LoopPlan
from .runtime_checks import is_vectorized_guard

# Builtins whose result follows from their operands' shapes.
_SHAPE_BUILTINS = frozenset({"len", "range"})
_PASSED = (ast.Constant, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Tuple, ast.List, ast.Slice,
           ast.keyword, ast.Attribute, ast.Load, ast.operator, ast.unaryop, ast.cmpop)

_PROBE = """
try:
    pass
except Exception:  # no first item, or the statements raise on it: the loop runs as written
    ok = False
"""


class FirstItemChecks:
    """The inner checks to evaluate on the outer loop's first item (module docstring)."""

    def __init__(self, plan: LoopPlan, ctx: PassContext):
        it = plan.iteration
        self.plan, self.ctx, self.index = plan, ctx, it.index
        self.elements = dict(it.elements)
        self.blocked = {it.index} | set(self.elements) | stores_in(plan.body)
        # how often the body binds each name: a value bound twice may differ per iteration
        self.bound = [n for s in plan.body for t in walk(s) if isinstance(t, ast.stmt)
                      for n in stores(t)]
        self.checks: list[ast.expr] = []
        self.chain: list[ast.Assign] = []
        self.rows: set[str] = set()  # ``x`` of the rows ``x[index]`` the chain reads

    def take(self, g: ast.expr, before: list[ast.stmt]) -> str | None:
        """Take ``g`` when it holds for every iteration if for the first (module docstring),
        ``before`` the top-level statements of the outer body in front of the inner loop; else
        the reason it cannot be."""
        derived = loads(g) & self.blocked
        if self.index in derived:
            return f"it reads `{self.index}`, which differs per iteration"
        read = sorted(n for n in derived if not _shape_only(g, {n}))
        if read:
            return f"it reads the value of `{read[0]}`, not only its type and shape"
        negated = [n for n in walk(g) if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not)
                   and loads(n.operand) & derived]
        if negated:  # the values the vectorized form computes from the items are tensors
            return f"`{unparse(negated[0])}` on a value computed from the items"
        chain = self._chain(derived, before)
        if isinstance(chain, str):
            return chain
        # in the body's order (``before`` holds every earlier inner loop's statements too)
        self.chain = [s for s in before if any(s is c for c in self.chain + chain)]
        if all(unparse(g) != unparse(c) for c in self.checks):  # inner loops share checks
            self.checks.append(g)
        return None

    def values(self) -> list[str]:
        """The names of the body's values the checks taken read."""
        return sorted(set().union(*(loads(g) for g in self.checks)) & self.blocked)

    def prelude(self, check: str) -> list[ast.stmt]:
        """The statements computing ``check``: the checks taken, on the first item."""
        names = {n: self.ctx.namer.new(n) for s in self.chain for n in stores(s)}
        names[self.index] = self.ctx.namer.new(self.index)
        read = set().union(*(loads(s) for s in self.chain))
        first = self.plan.sub("i = a", i=names[self.index], a=self.plan.iteration.start)
        for e in sorted(read & set(self.elements)):
            names[e] = self.ctx.namer.new(e)
            first += self.plan.sub("e = x[0]", e=names[e], x=self.elements[e])
        body = first + [rename(clone(s), names) for s in self.chain]
        # the items are tensors in the vectorized form (stacked): as written too (not numbers)
        items = [self.plan.sub("x[i]", x=x, i=names[self.index]) for x in sorted(self.rows)] \
            + [ast.Name(names[e], ast.Load()) for e in sorted(read & set(self.elements))]
        test = ast.BoolOp(ast.And(), [self.plan.sub("isinstance(x, torch.Tensor)", x=x)
                                      for x in items]
                          + [rename(clone(g), names) for g in self.checks])
        [probe] = self.plan.sub(_PROBE, ok=check)
        probe.body = body + self.plan.sub("ok = t", ok=check, t=test)
        return [probe]

    def _chain(self, names: set[str], before: list[ast.stmt]) -> list[ast.Assign] | str:
        """The statements of ``before`` binding ``names`` and, before each, what it reads; or
        why there are none."""
        chain, todo = [], [(n, len(before)) for n in sorted(names - set(self.elements))]
        while todo:
            name, limit = todo.pop()
            at = [k for k, s in enumerate(before[:limit]) if name in stores(s)]
            if self.bound.count(name) != 1 or len(at) != 1 or not _assigns(before[at[0]], name):
                return f"`{name}` is not bound once, at the top of the body, before it is read"
            s = before[at[0]]
            held = ast_marks.get(s, ast_marks.HELD_SEQUENCE)
            if held is not None and self._changed(held.split(".")[0]):
                return (f"the ints `{held}` holds may differ per iteration: "
                        f"{self._changed(held.split('.')[0])}")
            if held is None and not self._uniform(s.value, self.blocked):
                return f"`{unparse(s)}`: its shape may differ per iteration (or it has effects)"
            if all(s is not c for c in chain):
                chain.append(s)
                todo += [(n, at[0]) for n in sorted(free_loads(s.value) & self.blocked
                                                    - set(self.elements) - {self.index})]
        return chain

    def _changed(self, obj: str) -> str | None:
        """Why ``obj``, whose held ints a statement of the body made a tensor of
        (``index_tuples_to_tensors``), may differ between iterations: the outer body binds it, or
        its code as written may change it (a store into it, a call of its methods or with it or
        a part of it as an argument); None when it cannot."""
        if obj in self.blocked:
            return f"`{obj}` is bound in the loop"
        changes = [s for t in self.plan.body for n, s in _written(t, t) if _may_change(n, obj)]
        return (f"`{unparse(changes[0]).splitlines()[0]}` (line {changes[0].lineno}) may change "
                f"`{obj}`") if changes else None

    def _uniform(self, node: ast.AST, blocked: set[str]) -> bool:
        """``node`` has one type and shape in every iteration, and no effect."""
        if isinstance(node, ast.Name):
            return node.id != self.index
        if isinstance(node, ast.Subscript):
            if is_name(node.slice, self.index) and isinstance(node.value, ast.Name) \
                    and node.value.id not in blocked:
                self.rows.add(node.value.id)  # the vectorized form reads it as a tensor's row
                return True
            return not loads(node.slice) & blocked and self._uniform(node.slice, blocked) \
                and self._uniform(node.value, blocked)
        if isinstance(node, ast.Call):
            return self._uniform_call(node, blocked)
        if isinstance(node, (ast.ListComp, ast.GeneratorExp)):
            inner = blocked - comprehension_names(node)
            return not free_loads(node) & blocked and all(
                self._uniform(n, inner) for g in node.generators for n in (g.iter, *g.ifs)) \
                and self._uniform(node.elt, inner)
        return isinstance(node, _PASSED) and all(
            self._uniform(c, blocked) for c in ast.iter_child_nodes(node))

    def _uniform_call(self, call: ast.Call, blocked: set[str]) -> bool:
        """A tensor op without effects whose result shape follows its operands' shapes, on a
        value the iteration computes (a method) or a ``torch`` function."""
        name, meth = resolve_call(call.func, self.ctx), method_name(call, self.ctx)
        spec = call_op(call, self.ctx)
        if spec.data_shape or spec.host or spec.host_number \
                or ops.effect(name, meth, call) is not None or (meth and ops.is_inplace(meth)):
            return False
        if meth is not None:
            receiver = call.func.value
            if not loads(receiver) & blocked or not self._uniform(receiver, blocked):
                return False  # a method of an object (a module, a logger): may do anything
        elif not (name or "").startswith("torch.") and name not in _SHAPE_BUILTINS:
            return False
        return all(self._uniform(a, blocked) for a in [*call.args, *call.keywords])


def _written(node: ast.AST, stmt: ast.stmt):
    """The nodes of ``node`` (in the statement ``stmt``) as the user wrote it, each with the
    innermost statement holding it: an inner loop vectorized before as its loop as written,
    without the tensor of held ints made in front of it."""
    if is_vectorized_guard(node):
        for s in node.orelse:
            yield from _written(s, s)
    elif ast_marks.get(node, ast_marks.HELD_SEQUENCE) is None:
        yield node, stmt
        for child in ast.iter_child_nodes(node):
            yield from _written(child, child if isinstance(child, ast.stmt) else stmt)


def _may_change(node: ast.AST, obj: str) -> bool:
    """``node`` stores into ``obj`` (``obj.a = v``, ``obj.a[k] = v``, ``del obj.a``) or calls
    what may: a method of it or of what it holds, a call given it or a part of it."""
    if isinstance(node, (ast.Attribute, ast.Subscript)) and not isinstance(node.ctx, ast.Load):
        return root_name(node) == obj
    if isinstance(node, ast.Call):
        return root_name(node.func) == obj and not is_name(node.func, obj) or any(
            root_name(a) == obj for a in [*node.args, *(k.value for k in node.keywords)])
    return False


def _assigns(s: ast.stmt, name: str) -> bool:
    return isinstance(s, ast.Assign) and len(s.targets) == 1 and is_name(s.targets[0], name)


def _shape_only(g: ast.AST, names: set[str]) -> bool:
    """``g`` reads ``names`` only through their types and shapes."""
    if isinstance(g, ast.Name):
        return g.id not in names
    x, others = _queried(g)
    if isinstance(x, ast.Name):
        return not any(loads(a) & names for a in others)
    return all(_shape_only(c, names) for c in ast.iter_child_nodes(g))


def _queried(g: ast.AST) -> tuple[ast.expr | None, list[ast.AST]]:
    """The operand of a type or shape query (``isinstance(x, T)``, ``len(x)``, ``x.shape``,
    ``x.dim()`` and the other shape methods) and the query's other operands."""
    if isinstance(g, ast.Attribute) and g.attr in ops.METADATA_ATTRIBUTES:
        return g.value, []
    if not isinstance(g, ast.Call):
        return None, []
    f = g.func
    if isinstance(f, ast.Name) and f.id in ("isinstance", "len") and g.args:
        return g.args[0], [*g.args[1:], *g.keywords]
    if isinstance(f, ast.Attribute) and ops.by_call(None, f.attr).shape_query:
        return f.value, [*g.args, *g.keywords]
    return None, []
