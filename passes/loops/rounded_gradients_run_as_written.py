"""Stage: a loop whose iterations all add to the gradient of one float16/bfloat16 tensor runs
as written where that tensor requires grad.

The original's autograd adds each iteration's part of the gradient of a tensor the body reads
whole (``s = s + x[i] * w``: every iteration's ``MulBackward`` sends ``w`` a part) into ``w``'s
gradient one part at a time, in ``w``'s dtype, rounding after each addition (the engine runs the
nodes by their creation order, latest first: the last iteration's part first). A vectorized loop
reads ``w`` once, broadcast over the loop's dim, and its backward reduces the parts in one sum
(float32 accumulation, one rounding): 600 parts in bfloat16 differ in the last bits. So what the
body as written reads from before the loop (names and attributes; the body's own names are
followed to what they are computed from; not through indices, comparisons, shape queries or
detached values) joins the runtime check: where one is, or holds (a module's parameters, a
list's items, an object's attributes), a float16/bfloat16 tensor that requires grad, with grad
mode on, the loop runs as written (``loop_sums_keep_dtypes.rounds_gradients``)::

    for i in range(n):                   if <check> and not _rounds_gradients(w):
        s = s + x[i] * w         ->          <vectorized statements>
                                         else:
                                             <the loop as written>

Rows at the loop's index (``x[i]``, ``x[i, 0]``, the loop's elements) are left out: each
iteration's part reaches its own row, and what the other iterations add there is 0 (exact);
not in an inner loop or comprehension of the body, which reads the row in each of its own
iterations. So are the lists the body appends to (no gradient flows into the list).

An inner loop's check joins no outer loop's (``inline_inner_loops`` drops it, ``is_check``): the
outer loop's own check reads what the inner loop reads, through what its body binds, rows at
the outer index included (the inner loop reads them in each of its iterations).
"""
from __future__ import annotations

import ast
import builtins
import types

from ..ast_tools import PassContext, unparse, walk
from ..loop_sums_keep_dtypes import holds_16_bit, rounds_gradients
from .invariant_values_take_no_grad import as_written_body, bindings_of, module_constant
from .loop_dataflow import method_name, operands, resolve_call, stops_gradient
from .normalize_comprehensions import COMPREHENSIONS
from .plan import LoopPlan

REASON = ("; while {} hold{} no float16/bfloat16 tensor that requires grad, else the loop runs "
          "as written: the original adds each iteration's part of its gradient in 16 bits, in "
          "turn, a vectorized loop sums the parts at once")
RESTARTED = ("; while {} hold no float16/bfloat16 tensor, else the loop runs as written: an "
             "inner loop adds 16-bit items onto a start its outer body binds again, which the "
             "original rounds after each addition")
# methods that put their arguments into a list: no gradient flows into the list itself
_LIST_PUTS = frozenset({"append", "extend", "insert"})
# In an inner loop a row is read once per iteration of both loops only when it is at the inner
# `range` loops' indices too (``x[i, j]``); this name, no identifier, is in no index: a `while`,
# comprehension or loop over anything else reads the row again
_AGAIN = "*"


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    body = as_written_body(plan.node.body)
    reads = _Reads(plan, body, ctx)
    found: dict[str, ast.expr] = {}
    for s, nested in _statements(body, frozenset(), ctx):
        for expr in (c for c in ast.iter_child_nodes(s) if isinstance(c, ast.expr)):
            for leaf in _leaves(expr, reads, set(), nested):
                found.setdefault(unparse(leaf), leaf)
    if found:
        fn = ctx.bind(rounds_gradients, "rounds_gradients")
        plan.check(f"not {fn}({', '.join(map(_read_safely, found))})")
        names = ", ".join(f"`{x}`" for x in found)
        plan.no_grad_reason += REASON.format(names, "s" if len(found) == 1 else "")
    if plan.restarted_steps:
        _restarted_steps(plan, body, reads)
    return plan


def _restarted_steps(plan: LoopPlan, body: list[ast.stmt], reads: "_Reads") -> None:
    """An inner fold of 16-bit items onto a start the outer body binds again (not to zeros):
    what the loop reads, rows included, holds no float16/bfloat16 tensor, else it runs as
    written (``inline_inner_loops`` sets ``plan.restarted_steps``)."""
    found: dict[str, ast.expr] = {}
    for s, _ in _statements(body, frozenset(), reads.ctx):
        for expr in (c for c in ast.iter_child_nodes(s) if isinstance(c, ast.expr)):
            for leaf in _leaves(expr, reads, set(), frozenset({_AGAIN})):
                found.setdefault(unparse(leaf), leaf)
    fn = reads.ctx.bind(holds_16_bit, "holds_16_bit")
    plan.check(f"not {fn}({', '.join(map(_read_safely, found))})")
    plan.no_grad_reason += RESTARTED.format(", ".join(f"`{x}`" for x in found))


def _read_safely(source: str) -> str:
    """An attribute leaf ``a.b.c`` read as ``getattr(getattr(a, 'b', None), 'c', None)``: the
    body may read it only under a condition, where it exists (``if cfg.weight is not None``)."""
    *names, last = source.split(".")
    return source if not names else f"getattr({_read_safely('.'.join(names))}, {last!r}, None)"


def is_check(g: ast.expr, ctx: PassContext) -> bool:
    """``g`` is the check this stage makes."""
    return isinstance(g, ast.UnaryOp) and isinstance(g.op, ast.Not) \
        and isinstance(g.operand, ast.Call) and isinstance(g.operand.func, ast.Name) \
        and ctx.bindings.get(g.operand.func.id) is rounds_gradients


def _statements(body: list[ast.stmt], nested: frozenset[str], ctx: PassContext):
    """Each statement of ``body``, nested ones too, with the indices a row read there must be
    at besides the loop's (the inner loops' around it; ``_AGAIN``: it is read again)."""
    for s in body:
        yield s, nested
        for field in ("body", "orelse", "finalbody"):
            yield from _statements(getattr(s, field, []), nested | _indices(s, field, ctx), ctx)
        for handler in getattr(s, "handlers", []):
            yield from _statements(handler.body, nested, ctx)


def _indices(s: ast.stmt, field: str, ctx: PassContext) -> frozenset[str]:
    """The index names an inner loop's body reads rows at: its `range` target."""
    if not isinstance(s, (ast.For, ast.While)) or field != "body":
        return frozenset()
    ranged = isinstance(s, ast.For) and isinstance(s.target, ast.Name) \
        and isinstance(s.iter, ast.Call) and resolve_call(s.iter.func, ctx) == "range"
    return frozenset({s.target.id if ranged else _AGAIN})


class _Reads:
    """What a leaf search knows: the loop's plan, the body's bindings, the context."""
    def __init__(self, plan: LoopPlan, body: list[ast.stmt], ctx: PassContext):
        self.plan, self.bindings, self.ctx = plan, bindings_of(body), ctx
        it = plan.iteration
        self.elements = {n for n, _ in it.elements} | {
            n.id for n in walk(plan.node.target) if isinstance(n, ast.Name)}
        self.index = it.index
        # the iterables of the body's loops: a name they bind is read item by item, and the
        # iterable where the loop statement is (its own read)
        self.iterables = {n.iter for n in walk(ast.Module(body, []))
                          if isinstance(n, (ast.For, ast.comprehension))}

    def is_constant(self, name: str) -> bool:
        """``name`` is a global or builtin module, class or function: no tensor."""
        if self.ctx.local_names is not None and name in self.ctx.local_names:
            return False
        value = self.ctx.globals.get(name, getattr(builtins, name, None))
        return isinstance(value, (type, types.ModuleType, types.FunctionType,
                                  types.BuiltinFunctionType))

    def is_row(self, expr: ast.Subscript, nested: frozenset[str]) -> bool:
        """``x[i]``, ``x[i, :, 0]``: a row of a tensor read before the loop, at the index (and
        at the ``nested`` inner loops' indices)."""
        index = expr.slice.elts if isinstance(expr.slice, ast.Tuple) else [expr.slice]
        names = {e.id for e in index if isinstance(e, ast.Name)}
        return isinstance(expr.value, ast.Name) and expr.value.id not in self.bindings \
            and {self.index, *nested} <= names


def _leaves(expr: ast.AST, reads: _Reads, seen: set[str],
            nested: frozenset[str]) -> list[ast.expr]:
    """The names and attributes ``expr`` reads from before the loop that a gradient may reach
    (``nested``: the inner loops' indices around it, ``_statements``)."""
    if isinstance(expr, ast.Name):
        return _name_leaves(expr, reads, seen, nested)
    if isinstance(expr, ast.Constant) or stops_gradient(expr, reads.ctx):
        return []
    if isinstance(expr, ast.Attribute):
        root = expr.value
        while isinstance(root, ast.Attribute):
            root = root.value
        if isinstance(root, ast.Name) and root.id not in reads.bindings \
                and root.id != reads.index and root.id not in reads.elements:
            return [] if module_constant(expr, reads.ctx) else [expr]
        return _leaves(expr.value, reads, seen, nested)
    if isinstance(expr, ast.Subscript):  # no gradient flows to an index
        return [] if reads.is_row(expr, nested) else \
            _leaves(expr.value, reads, seen, nested)
    if isinstance(expr, (*COMPREHENSIONS, ast.Lambda)):
        nested = nested | {_AGAIN}
    children = list(ast.iter_child_nodes(expr))
    if isinstance(expr, ast.Call):
        children = operands(expr, reads.ctx)
        if method_name(expr, reads.ctx) in _LIST_PUTS:
            children = children[1:]
        elif isinstance(expr.func, ast.Name) and reads.ctx.local_names is not None \
                and expr.func.id in reads.ctx.local_names:
            children.append(expr.func)  # a module the function holds in a local name: `fc(v)`
    return [leaf for c in children for leaf in _leaves(c, reads, seen, nested)]


def _name_leaves(expr: ast.Name, reads: _Reads, seen: set[str], nested: frozenset[str]) -> list:
    """A name's leaves: itself when read from before the loop; the loop's elements' iterable
    when an inner loop reads them (none at the top of the body: a row each); what the body
    binds it to."""
    name = expr.id
    if not isinstance(expr.ctx, ast.Load) or name == reads.index or name in seen:
        return []
    if name in reads.elements:
        return _leaves(reads.plan.node.iter, reads, {name}, nested | {_AGAIN}) if nested else []
    if name not in reads.bindings:
        return [] if reads.is_constant(name) else [expr]
    seen.add(name)
    return [leaf for v in reads.bindings[name] if v is not None and v not in reads.iterables
            for leaf in _leaves(v, reads, seen, nested)]
