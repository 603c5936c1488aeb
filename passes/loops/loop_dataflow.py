"""Data-flow analysis of ``for`` loops, for the vectorizer. Analysis only: nothing is rewritten.

* Liveness over the whole function (backward, structured, fixpoint over loops): the names read
  after each loop, e.g. ``t`` below is live after the loop, so the loop cannot be vectorized::

      for i in range(n):
          t = x[i] * 2
      return t

* Must-definedness over one iteration of the body (forward): a name read before it is defined
  in the iteration, and defined somewhere in the body, carries a value from the previous
  iteration (reaching definitions over the back edge): ``s`` in ``s = s + x[i]``.
* Dependence on the loop index (forward fixpoint, data and control dependence): the names whose
  value varies per iteration. Shape queries (``x.shape``, ``len(x)``) never vary.
* Classification of each loop-carried or mutated name into an ``Effect`` the vectorizer knows
  how to batch (accumulator, prefix scan, appended list, indexed write), or ``Unsupported``
  with the reason the loop is kept.
"""
from __future__ import annotations

import ast
import builtins
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .. import ast_marks
from ..accumulating_writes import index_accumulate
from ..loop_sums_keep_dtypes import identity_of
from ..errors import Unsupported

from .. import loop_rules as rules
from .. import ops
from ..ast_tools import PassContext, is_int, is_name, root_name, unparse, walk, write_target

# Python containers built in place: a list, tuple or dict display or comprehension.
DISPLAYS = (ast.List, ast.Tuple, ast.Dict, ast.ListComp, ast.DictComp)


# ---------------------------------------------------------------------------------------------
# Names read and written


def loads(node: ast.AST) -> set[str]:
    """Names read anywhere in ``node`` (nested lambdas included: their free names are reads)."""
    return {n.id for n in walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def free_loads(node: ast.AST) -> set[str]:
    """Names ``node`` reads, not those its comprehensions bind (their own scope's)."""
    nodes = list(walk(node))
    if not any(isinstance(n, _COMPREHENSIONS) for n in nodes):
        return {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    out, todo = set(), [(node, frozenset())]
    while todo:
        n, bound = todo.pop()
        if isinstance(n, _COMPREHENSIONS):  # the first iterable is read in the enclosing scope
            first, inner = n.generators[0], bound | comprehension_names(n)
            rest = (n.key, n.value) if isinstance(n, ast.DictComp) else (n.elt,)
            todo += [(first.iter, bound)] + [(c, inner) for c in (
                first.target, *first.ifs, *n.generators[1:], *rest)]
        elif isinstance(n, ast.Name):
            out |= {n.id} - bound if isinstance(n.ctx, ast.Load) else set()
        else:
            todo += [(c, bound) for c in ast.iter_child_nodes(n)]
    return out


_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


def comprehension_names(comp: ast.expr) -> set[str]:
    """The names a comprehension binds."""
    return {n.id for g in comp.generators for n in walk(g.target) if isinstance(n, ast.Name)}


def stores(stmt: ast.stmt) -> set[str]:
    """Names a simple statement (or a compound statement's header) binds."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names}
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        targets = [stmt.target]
    elif isinstance(stmt, (ast.With, ast.AsyncWith)):
        targets = [i.optional_vars for i in stmt.items if i.optional_vars is not None]
    elif isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
        targets = [stmt.target]
    else:
        targets = []
    names = {n.id for t in targets for n in walk(t)
             if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    if not isinstance(stmt, (ast.If, ast.For, ast.While, ast.With, ast.Try)):  # walrus
        walrus = ast_marks.get(stmt, ast_marks.WALRUS_TARGETS)
        if walrus is None:  # cached on the node: passes never add or remove a walrus
            walrus = frozenset(n.target.id for n in walk(stmt) if isinstance(n, ast.NamedExpr))
            ast_marks.put(stmt, ast_marks.WALRUS_TARGETS, walrus)
        names |= walrus
    return names



def stores_in(stmts: list[ast.stmt]) -> set[str]:
    """Names bound anywhere in ``stmts``, nested statements included."""
    return set().union(*(stores(n) for s in stmts for n in walk(s) if isinstance(n, ast.stmt)))


def written_names(stmts: list[ast.stmt]) -> set[str]:
    """Names ``stmts`` bind, and those a statement writes into in place (``t[k] = v``,
    ``t.add_(v)``)."""
    written = stores_in(stmts)
    for s in (n for s in stmts for n in walk(s) if isinstance(n, ast.stmt) and mutates_local(n)):
        targets = [s.value.func.value] if isinstance(s, ast.Expr) else \
            getattr(s, "targets", [getattr(s, "target", None)])
        written |= {r for r in map(root_name, targets) if r is not None}
    return written


def stmt_loads(stmt: ast.stmt) -> set[str]:
    """Names a simple statement reads; ``s += e`` reads ``s``; a nested ``def`` reads its free
    names (its parameters and locals are its own)."""
    if isinstance(stmt, ast.FunctionDef):
        params = {a.arg for a in walk(stmt.args) if isinstance(a, ast.arg)}
        own = params | {n for s in walk(stmt) if isinstance(s, ast.stmt) and s is not stmt
                        for n in stores(s)}
        outer = [*stmt.decorator_list, *stmt.args.defaults,
                 *(d for d in stmt.args.kw_defaults if d is not None)]
        return set().union(*(loads(e) for e in outer)) | (
            set().union(*(loads(s) for s in stmt.body)) - own)
    names = free_loads(stmt)
    if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
        names.add(stmt.target.id)
    return names


def header_exprs(stmt: ast.stmt) -> list[ast.expr]:
    """The expressions a compound statement evaluates itself (not its body)."""
    if isinstance(stmt, (ast.If, ast.While)):
        return [stmt.test]
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        return [stmt.iter]
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        return [i.context_expr for i in stmt.items]
    return []


# ---------------------------------------------------------------------------------------------
# Liveness


def live_after_loops(func: ast.FunctionDef) -> dict[ast.stmt, set[str]]:
    """For every ``for`` and ``while`` loop in ``func``, the names live right after it."""
    record: dict[ast.stmt, set[str]] = {}
    _live_block(func.body, set(), None, record)
    return record


def child_blocks(stmt: ast.stmt) -> list[list[ast.stmt]]:
    """The statement lists directly inside a compound statement (empty for a simple one)."""
    return [getattr(stmt, f, []) for f in ("body", "orelse", "finalbody")] \
        + [h.body for h in getattr(stmt, "handlers", [])] \
        + [c.body for c in getattr(stmt, "cases", [])]


def zero_before_loops(func: ast.FunctionDef) -> dict[ast.stmt, set[str]]:
    """For every ``for`` loop in ``func``, the local names certainly bound to the int
    ``0`` when it starts: ``s = 0`` earlier in the same block, and no statement in between
    mentions ``s``. The loop's sum then starts from 0, and ``0 + total`` is ``total``."""
    return {loop: zeros(names) for loop, names in numbers_before_loops(func).items()}


def zeros(numbers: dict[str, int | float]) -> set[str]:
    """The names of ``numbers`` (``numbers_before_loops``) that hold the int 0."""
    return {n for n, v in numbers.items() if type(v) is int and v == 0}


def numbers_before_loops(func: ast.FunctionDef) -> dict[ast.stmt, dict[str, int | float]]:
    """As ``zero_before_loops``, the names certainly bound to a Python number literal (``0.0``,
    ``1``, ``-2.5``) when each loop starts, with their numbers: a sum started from one has its
    items' dtype (a Python number does not widen a tensor's), or that of a number the items'
    sum meets as well."""
    return _bound_before_loops(func, _number_literal)


def _number_literal(v: ast.expr) -> int | float | None:
    sign = -1 if isinstance(v, ast.UnaryOp) and isinstance(v.op, ast.USub) else 1
    if isinstance(v, ast.UnaryOp) and isinstance(v.op, (ast.USub, ast.UAdd)):
        v = v.operand
    return sign * v.value if isinstance(v, ast.Constant) and type(v.value) in (int, float) \
        else None


def filled_before_loops(func: ast.FunctionDef, ctx: PassContext) -> dict[ast.stmt, dict[str, int]]:
    """For every ``for`` loop in ``func``, the local names certainly bound to a new
    tensor every element of which is one number (``rules.FILLED_TENSORS``: ``torch.zeros(...)``,
    ``x.new_ones(...)``, ``torch.ones_like(x)``, not requiring grad) when it starts, with that
    number: made earlier in the same block, and no statement in between mentions the name (so
    nothing aliases or writes it)."""
    return _bound_before_loops(func, lambda v: filled_number(v, ctx))


def filled_number(expr: ast.expr, ctx: PassContext) -> int | None:
    """The number every element of the tensor ``expr`` makes is (``rules.FILLED_TENSORS``), or
    None: not such a constructor, or one given ``requires_grad`` or ``out``."""
    if not isinstance(expr, ast.Call) or any(k.arg in ("requires_grad", "out", None)
                                             for k in expr.keywords):
        return None
    name, method = method_name(expr, ctx), True
    if name is None:  # only torch's own: a function of the user's may be called ``ones``
        name, method = resolve_call(expr.func, ctx) or "", False
        name = name.removeprefix("torch.") if name.startswith("torch.") else ""
    number, is_method = rules.FILLED_TENSORS.get(name, (None, None))
    return number if is_method is method else None


def float_filled(e: ast.expr, ctx: PassContext) -> bool:
    """``torch.zeros(n)`` / ``torch.ones(n)`` without ``dtype=``: a new float tensor of one
    number (``filled_number``), whose writes ``inplace_writes_to_functional`` makes functional.
    Not a ``_like`` or method form, nor a given dtype: a boolean one written per iteration would
    index under vmap, and ``check_mapped_body`` refuses its writes as written (the registry has
    no ``zeros``/``ones`` for that reason)."""
    return filled_number(e, ctx) is not None and method_name(e, ctx) is None \
        and not (resolve_call(e.func, ctx) or "").endswith("_like") \
        and not any(k.arg == "dtype" for k in e.keywords)


def host_arrays_before_loops(func: ast.FunctionDef,
                             ctx: PassContext) -> dict[ast.stmt, dict[str, ast.expr]]:
    """For every ``for`` loop in ``func``, the local names certainly bound to a new numpy array
    (``rules.NUMPY_ARRAY_MAKERS``: ``R = np.zeros((n, n))``) when it starts, with the call: as
    ``_bound_before_loops`` finds them, also in the loops the loop around holds when it
    rebinds no such name (an inner loop writing ``R[i, j]``)."""
    def made(v: ast.expr) -> ast.expr | None:
        return v if isinstance(v, ast.Call) \
            and resolve_call(v.func, ctx) in rules.NUMPY_ARRAY_MAKERS else None
    return _bound_before_loops(func, made, into_loops=True)


def _bound_before_loops(func: ast.FunctionDef, fact: Callable[[ast.expr], Any],
                        into_loops: bool = False) -> dict[ast.stmt, dict[str, Any]]:
    """For every ``for`` loop in ``func``, the local names ``n`` certainly holding
    ``fact(v)`` (not None) when it starts: ``n = v`` (or ``n, m = v, u``) earlier in the same
    block, and no statement in between mentions ``n``. Compound statements in between end it (they
    may rebind anything), and so do ``global``/``nonlocal`` names (a call could rebind them); the
    branches of an ``if`` start with what holds before it, less the names its test mentions (a
    counted ``while`` loop's ``for`` form stands in an ``if``). ``into_loops``: a ``for`` loop's
    body starts with what holds before the loop, less the names the loop binds anywhere."""
    shared = {n for node in walk(func) if isinstance(node, (ast.Global, ast.Nonlocal))
              for n in node.names}
    record: dict[ast.stmt, dict[str, Any]] = {}

    def block(stmts: list[ast.stmt], known: dict[str, Any]) -> None:
        for stmt in stmts:
            if isinstance(stmt, ast.For):
                record[stmt] = dict(known)
            pairs = _assigned_pairs(stmt)
            if pairs:
                mentioned = {n.id for n in walk(stmt) if isinstance(n, ast.Name)}
                known = {k: v for k, v in known.items() if k not in mentioned}
                known.update((n, f) for n, v in pairs
                             if n not in shared and (f := fact(v)) is not None)
                continue
            children = child_blocks(stmt)
            if any(children):
                tested = {n.id for n in walk(stmt.test) if isinstance(n, ast.Name)} \
                    if isinstance(stmt, ast.If) else None
                if into_loops and isinstance(stmt, ast.For):
                    tested = {n.id for n in walk(stmt) if isinstance(n, ast.Name)
                              and not isinstance(n.ctx, ast.Load)}
                inherited = {} if tested is None else \
                    {k: v for k, v in known.items() if k not in tested}
                known = {}
                for child in children:
                    block(child, dict(inherited))
            else:
                mentioned = {n.id for n in walk(stmt) if isinstance(n, ast.Name)}
                known = {k: v for k, v in known.items() if k not in mentioned}

    block(func.body, {})
    return record


def _assigned_pairs(stmt: ast.stmt) -> list[tuple[str, ast.expr]]:
    """(name, value) of each name ``stmt`` binds: ``n = v``, or ``a, b = u, v`` (a tuple of
    names to a tuple display of as many values); [] for anything else."""
    if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1:
        return []
    target, value = stmt.targets[0], stmt.value
    if isinstance(target, ast.Name):
        return [(target.id, value)]
    if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) \
            and len(target.elts) == len(value.elts) \
            and all(isinstance(t, ast.Name) for t in target.elts):
        return [(t.id, v) for t, v in zip(target.elts, value.elts)]
    return []


def divisions_after_loops(func: ast.FunctionDef) -> dict[ast.stmt, tuple[ast.stmt, dict[str, str]]]:
    """For every ``for`` loop in ``func`` (not inside another loop) followed directly by
    ``return E`` or ``s = E``: that statement, and the names it reads only as ``s / d`` (true
    division by the same ``d``; for ``s = E`` only the rebound ``s``), with ``d``'s source: the
    idiom ``return loss / B`` after ``for i in range(B): loss += ...``, a mean over the loop."""
    record: dict[ast.stmt, tuple[ast.stmt, dict[str, str]]] = {}

    def block(stmts: list[ast.stmt], in_loop: bool) -> None:
        for stmt, after in zip(stmts, stmts[1:] + [None]):
            if isinstance(stmt, ast.For) and not in_loop and after is not None:
                divided = _divided_names(after)
                if divided:
                    record[stmt] = (after, divided)
            nested = in_loop or isinstance(stmt, (ast.For, ast.AsyncFor, ast.While))
            for child in child_blocks(stmt):
                block(child, nested)

    block(func.body, False)
    return record


def _divided_names(stmt: ast.stmt) -> dict[str, str]:
    if isinstance(stmt, ast.Return) and stmt.value is not None:
        value, names = stmt.value, None
    elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
            and isinstance(stmt.targets[0], ast.Name):
        value, names = stmt.value, {stmt.targets[0].id}
    else:
        return {}
    divisors: dict[str, set[str]] = {}
    inside: set[int] = set()
    for n in walk(value):
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) and isinstance(n.left, ast.Name):
            divisors.setdefault(n.left.id, set()).add(unparse(n.right))
            inside.add(id(n.left))
    reads = [n for n in walk(value) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]
    other = {n.id for n in reads if id(n) not in inside}
    return {name: next(iter(ds)) for name, ds in divisors.items()
            if len(ds) == 1 and name not in other and (names is None or name in names)}


def _live_block(stmts: list[ast.stmt], out: set[str], loop: tuple[set, set] | None,
                record: dict[ast.stmt, set[str]]) -> set[str]:
    live = set(out)
    for stmt in reversed(stmts):
        live = _live_stmt(stmt, live, loop, record)
    return live


def _live_stmt(stmt: ast.stmt, out: set[str], loop: tuple[set, set] | None,
               record: dict[ast.stmt, set[str]]) -> set[str]:
    if isinstance(stmt, ast.If):
        return (loads(stmt.test) | _live_block(stmt.body, out, loop, record)
                | _live_block(stmt.orelse, out, loop, record))
    if isinstance(stmt, (ast.For, ast.AsyncFor, ast.While)):
        exit_live = _live_block(stmt.orelse, out, loop, record)
        head = set(exit_live)
        while True:  # fixpoint: the head's liveness feeds the body through the back edge
            body_in = _live_block(stmt.body, head, (out, head), record)
            if isinstance(stmt, ast.While):
                new = exit_live | body_in | loads(stmt.test)
            else:
                new = exit_live | (body_in - stores(stmt))
            if new <= head:
                break
            head |= new
        record[stmt] = record.get(stmt, set()) | out
        if isinstance(stmt, (ast.For, ast.AsyncFor)):
            return head | loads(stmt.iter)
        return head
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        inner = _live_block(stmt.body, out, loop, record) - stores(stmt)
        return inner | set().union(*(loads(e) for e in header_exprs(stmt)))
    if isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
        # Any statement may raise into a handler: over-approximate (safe: more is live).
        parts = [stmt.body, stmt.orelse, stmt.finalbody] + [h.body for h in stmt.handlers]
        return out | set().union(*(_live_block(p, out, loop, record) for p in parts))
    if isinstance(stmt, ast.Return):
        return loads(stmt) if stmt.value else set()
    if isinstance(stmt, ast.Raise):
        return loads(stmt)
    if isinstance(stmt, ast.Break):
        return set(loop[0]) if loop else set(out)
    if isinstance(stmt, ast.Continue):
        return set(loop[1]) if loop else set(out)
    return (out - stores(stmt)) | stmt_loads(stmt)


# ---------------------------------------------------------------------------------------------
# Calls


def module_function(func: ast.expr, ctx: PassContext,
                    shadowed: frozenset | tuple = ()) -> types.FunctionType | None:
    """The function of the module that ``func`` names: a plain name, not one of ``shadowed``
    (the calling function's locals, when the call is in it), bound in the module's globals to a
    Python function defined there (same globals); else None."""
    if not isinstance(func, ast.Name) or func.id in shadowed:
        return None
    fn = ctx.globals.get(func.id)
    return fn if isinstance(fn, types.FunctionType) and fn.__globals__ is ctx.globals else None


def resolve_call(func: ast.expr, ctx: PassContext) -> str | None:
    """Canonical dotted name of a called function ("torch.log", "max"), None for methods."""
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None
    root = func.id
    obj = ctx.globals.get(root, None)
    if isinstance(obj, types.ModuleType):
        base = obj.__name__
    elif root == ctx.torch_name:
        base = "torch"
    elif root in ctx.globals:
        if parts:
            return None  # attribute of a non-module object: a method call
        if obj is getattr(builtins, root, None):
            return root
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', root)}"
    elif parts and root in ops.DEFAULT_ALIASES:
        base = ops.DEFAULT_ALIASES[root]
    elif parts:
        return None  # method of a local value
    elif root in ctx.bindings:  # a function of ``passes`` that generated code calls
        obj = ctx.bindings[root]
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', root)}"
    else:
        return root
    return ".".join([base] + parts[::-1])


def method_name(call: ast.Call, ctx: PassContext) -> str | None:
    """``x.log()`` -> "log"; None for module functions (``torch.log(x)``) and plain calls."""
    if isinstance(call.func, ast.Attribute) and resolve_call(call.func, ctx) is None:
        return call.func.attr
    return None


def call_op(call: ast.Call, ctx: PassContext) -> ops.OpSpec:
    """The registry's entry for the function or method ``call`` calls (``ops.UNKNOWN``), or for
    the op its one-operand form is (``OpSpec.operand_only``)."""
    spec = ops.by_call(resolve_call(call.func, ctx), method_name(call, ctx))
    if spec.operand_only and len(call.args) == 1 and not call.keywords \
            and not isinstance(call.args[0], ast.Starred):
        return ops.by_call(None, spec.operand_only)
    return spec


def written_through(recv: ast.expr, ctx: PassContext) -> ast.expr:
    """What a method called on ``recv`` acts on: ``m`` for ``m.mul_(a)`` (an in-place method
    returns its receiver), ``recv`` itself otherwise."""
    while isinstance(recv, ast.Call) and method_name(recv, ctx) \
            and ops.is_inplace(method_name(recv, ctx)):
        recv = recv.func.value
    return recv


def makes_new_tensor(expr: ast.expr, ctx: PassContext) -> bool:
    """``expr`` is a tensor op's result with memory of its own: no view, no operand returned as it
    is (arithmetic on Python numbers included: no memory to share)."""
    if isinstance(expr, (ast.BinOp, ast.UnaryOp, ast.Compare)):
        return True
    if not isinstance(expr, ast.Call):
        return False
    op = call_op(expr, ctx)
    return op.aten is not None and not (op.aliases or op.effect or op.shape_query
                                        or op.host_number or op.host)


def may_be_nonfinite(node: ast.AST, ctx: PassContext) -> ast.AST | None:
    """An op of ``node`` whose derivative may be NaN/inf (not ``"constant"``, see
    ``derivative``), or None. A backward run with a zero cotangent for an item the original never
    differentiated gives 0 * inf = NaN there: at a NaN/inf input even a total op's derivative
    may be NaN/inf."""
    return next((n for n in gradient_walk(node, ctx)
                 if derivative(n, ctx) not in ("constant", "")), None)


def gradient_walk(node: ast.AST, ctx: PassContext):
    """The nodes of ``node`` a gradient may flow through: not inside comparisons, shape queries
    or calls giving Python numbers or detached values (``x.item()``, ``x.detach()``)."""
    todo = [node]
    while todo:
        n = todo.pop()
        yield n
        if not stops_gradient(n, ctx):
            todo += ast.iter_child_nodes(n)


def stops_gradient(node: ast.AST, ctx: PassContext) -> bool:
    """No gradient flows through ``node`` into what it reads: a comparison, a shape query, a
    Python number or a detached value made of a tensor (``x.item()``, ``bool(x)``,
    ``x.detach()``)."""
    return isinstance(node, ast.Compare) or is_shape_query(node, ctx) or isinstance(
        node, ast.Call) and (ops.gives_number(call_op(node, ctx))
                             or method_name(node, ctx) == "detach")


def derivative(node: ast.AST, ctx: PassContext) -> str | None:
    """How the derivative of the op ``node`` depends on the values (``OpSpec.derivative``:
    "constant", "bounded" or None); "" when ``node`` is no op on values (a name, a constant, a
    shape query, a subscript: it passes the cotangent on as it is). Python numbers (``x.item()``)
    take no gradient: "constant". Sums and differences, and
    products and quotients by something that reads no values (``2 * x``, ``x / n.shape[0]``),
    are "constant"; so are calls on no values at all."""
    if isinstance(node, ast.UnaryOp):
        return "constant"  # -x, +x, not x, ~x
    if isinstance(node, ast.BinOp):
        left, right = reads_values(node.left, ctx), reads_values(node.right, ctx)
        if isinstance(node.op, (ast.Add, ast.Sub)) or not (left or right) or isinstance(
                node.op, ast.Mult) and not (left and right) or isinstance(
                node.op, ast.Div) and not right:
            return "constant"
        return ops.by_operator(type(node.op)).derivative
    if not isinstance(node, ast.Call) or is_shape_query(node, ctx):
        return ""
    op = call_op(node, ctx)
    if op.aliases or op.boolean or op.metadata_only or ops.gives_number(op) or not any(
            reads_values(x, ctx) for x in operands(node, ctx)) \
            or (resolve_call(node.func, ctx) or "").startswith("math."):  # a Python float
        return "constant"
    return op.derivative


def operands(call: ast.Call, ctx: PassContext) -> list[ast.expr]:
    """What ``call`` computes from: its receiver (a method's), arguments and keyword values."""
    recv = [call.func.value] if method_name(call, ctx) is not None else []
    return recv + list(call.args) + [k.value for k in call.keywords]


def reads_values(expr: ast.AST, ctx: PassContext) -> bool:
    """Whether ``expr`` reads a value that may be a tensor: a name outside shape queries and
    called functions' names (``torch.exp`` reads no value, ``w.exp()`` reads ``w``)."""
    if isinstance(expr, ast.Name):
        return True
    if isinstance(expr, ast.Constant) or is_shape_query(expr, ctx):
        return False
    if isinstance(expr, ast.Call):
        return any(reads_values(x, ctx) for x in operands(expr, ctx))
    return any(reads_values(c, ctx) for c in ast.iter_child_nodes(expr))


def is_shape_query(node: ast.AST, ctx: PassContext) -> bool:
    if isinstance(node, ast.Attribute) and node.attr in ops.METADATA_ATTRIBUTES:
        return True
    return isinstance(node, ast.Call) and call_op(node, ctx).shape_query


def fixed_operand_helpers(ctx: PassContext) -> set[str]:
    """The names generated code calls ``tensor_branches_to_where``'s ``FixedOperand`` by:
    ``h(p, w)`` is ``w`` itself wherever ``w`` takes no gradient (a Python number always)."""
    return {k for k, v in ctx.bindings.items() if getattr(v, "fixed_under_mask", False)}


class UnwrapFixedOperands(ast.NodeTransformer):
    """Replaces each call ``h(p, w)`` of a helper named in ``helpers`` by ``w``."""

    def __init__(self, helpers: set[str]):
        self.helpers = helpers

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        return node.args[1] if isinstance(node.func, ast.Name) and node.func.id in self.helpers \
            else node


def depends(expr: ast.AST, variant: set[str], ctx: PassContext) -> bool:
    """Whether ``expr``'s value can differ between iterations."""
    if isinstance(expr, ast.Name):
        return expr.id in variant
    if ast_marks.get(expr, ast_marks.SELECTION_COUNT):
        return True  # a selection's count (`len(f)`, `f.shape[0]`) varies with its mask
    if is_shape_query(expr, ctx):
        return False
    return any(depends(c, variant, ctx) for c in ast.iter_child_nodes(expr))


# ---------------------------------------------------------------------------------------------
# Loop body facts


@dataclass
class Effect:
    """A statement whose per-iteration result leaves the iteration, and how it combines."""
    kind: str                # "acc", "scan", "append" or "write"
    name: str                # the accumulator, list or written tensor
    stmt: ast.stmt
    value: ast.expr          # contribution / appended value / written value
    family: str = ""         # acc, scan: rules.FAMILY_*; write: in-place op ("" for `=`)
    negate: bool = False     # acc: `s -= e` contributes -e
    steps: int = 1           # acc: the additions (products) of `s` the update makes: `s + a - b` 2
    scan_of: str = ""        # append/write of a scanned accumulator's running value
    masked: bool = False     # runs under a tensor condition


@dataclass
class LoopFacts:
    effects: dict[ast.stmt, Effect] = field(default_factory=dict)   # by statement
    variant: set[str] = field(default_factory=set)
    assigned: set[str] = field(default_factory=set)
    masked: bool = False     # a tensor-guarded `continue` masks later statements

    def of_kind(self, kind: str) -> list[Effect]:
        return [e for e in self.effects.values() if e.kind == kind]


# FunctionDef: a helper defined per iteration is a local value (and how a vectorized inner loop
# reaches its outer loop: as an outlined body function).
_ALLOWED = (ast.Assign, ast.AugAssign, ast.Expr, ast.If, ast.Pass, ast.Continue, ast.FunctionDef)
_STMT_REASONS = {
    ast.Break: "`break`: the trip count depends on the data",
    ast.Return: "`return` inside the loop",
    ast.While: "inner `while` loop",
    ast.For: "inner loop that could not be vectorized",
    ast.Try: "`try` inside the loop",
    ast.With: "`with` inside the loop",
    ast.Raise: "`raise` inside the loop",
    ast.Assert: "`assert` inside the loop (data-dependent check)",
    ast.Delete: "`del` inside the loop",
    ast.Import: "import inside the loop",
}


def analyze(body: list[ast.stmt], index: str, seeds: set[str], live_after: set[str],
            ctx: PassContext) -> LoopFacts:
    """Facts about a loop body over ``index`` whose per-iteration inputs are ``seeds`` (the
    index and the iterated elements).

    Raises ``Unsupported`` with the reason when the loop cannot be vectorized.
    """
    _check_statements(body, top=True)
    facts = LoopFacts(assigned=set().union(*(stores(s) for s in _simple_stmts(body))))
    for name in sorted(seeds & facts.assigned):
        line = next(s.lineno for s in _simple_stmts(body) if name in stores(s))
        raise Unsupported(f"the loop body rebinds the loop variable `{name}` (line {line})")
    carried = {}
    exposed_reads(body, set(seeds), facts.assigned, carried)
    facts.variant = variant_names(body, seeds, ctx)
    facts.masked = any(is_guarded_continue(s) for s in body)
    _check_calls(body, facts.assigned, ctx)
    _classify(body, facts, carried, "none", ctx)
    _check_accumulator_reads(body, facts, carried, ctx)
    _check_effect_reads(body, facts, index, ctx)
    _check_mask_indexing(body, ctx)
    _check_writes(facts, index, ctx)
    for name in sorted((facts.assigned | seeds) & live_after):
        if not any(e.name == name and e.kind in ("acc", "scan") for e in facts.effects.values()):
            raise Unsupported(f"`{name}` is read after the loop (its last-iteration value)")
    return facts


def _simple_stmts(stmts: list[ast.stmt]):
    for s in stmts:
        yield s
        if isinstance(s, ast.If):
            yield from _simple_stmts(s.body)
            yield from _simple_stmts(s.orelse)


def is_guarded_continue(stmt: ast.stmt) -> bool:
    """``if c: ...; continue`` (no else) at the top of the body: a mask on what follows."""
    return (isinstance(stmt, ast.If) and not stmt.orelse and bool(stmt.body)
            and isinstance(stmt.body[-1], ast.Continue))


def _check_statements(stmts: list[ast.stmt], top: bool) -> None:
    for s in stmts:
        if not isinstance(s, _ALLOWED):
            reason = _STMT_REASONS.get(type(s), f"`{type(s).__name__}` statement in the loop")
            raise Unsupported(reason, s.lineno)
        if isinstance(s, ast.Continue) and not top:
            raise Unsupported("`continue` nested under several conditions", s.lineno)
        if isinstance(s, ast.Continue):
            raise Unsupported("unconditional `continue`", s.lineno)
        if isinstance(s, ast.If):
            guarded = top and is_guarded_continue(s)
            _check_statements(s.body[:-1] if guarded else s.body, top=False)
            _check_statements(s.orelse, top=False)
        if not isinstance(s, ast.If) and any(
                isinstance(n, (ast.Yield, ast.YieldFrom, ast.Await, ast.Global, ast.Nonlocal))
                for n in walk(s)):
            raise Unsupported("yield, await, global or nonlocal inside the loop", s.lineno)


def exposed_reads(stmts: list[ast.stmt], defined: set[str], assigned: set[str],
             carried: dict[str, ast.stmt]) -> tuple[set[str], bool]:
    """Forward must-definedness: record names read before any definition in the iteration.

    Returns (names surely defined after ``stmts``, whether control falls through).
    """
    defined = set(defined)
    for s in stmts:
        if isinstance(s, ast.Continue):
            return defined, False
        if isinstance(s, ast.If):
            for name in loads(s.test) - defined:
                if name in assigned:
                    carried.setdefault(name, s)
            d1, f1 = exposed_reads(s.body, defined, assigned, carried)
            d2, f2 = exposed_reads(s.orelse, defined, assigned, carried)
            through = [d for d, f in ((d1, f1), (d2, f2)) if f]
            if not through:
                return defined, False
            defined = set.intersection(*through)
            continue
        for name in stmt_loads(s) - defined:
            if name in assigned:
                carried.setdefault(name, s)
        defined |= stores(s)
    return defined, True


def variant_names(body: list[ast.stmt], seeds: set[str], ctx: PassContext) -> set[str]:
    """Names whose value depends on ``seeds`` through data or control flow in ``body``."""
    variant = set(seeds)
    written: dict[int, set[str]] = {}  # id(statement) -> what it binds or mutates

    def visit(stmts: list[ast.stmt], control: bool) -> bool:
        changed = False
        for s in stmts:
            if isinstance(s, ast.If):
                c = control or depends(s.test, variant, ctx)
                changed |= visit(s.body, c) | visit(s.orelse, c)
                continue
            if id(s) not in written:
                written[id(s)] = _written(s)
            new = written[id(s)] - variant  # nothing new: the costly `depends` can be skipped
            if new and (control or depends(s, variant, ctx) or (
                    isinstance(s, ast.AugAssign) and depends(s.target, variant, ctx))):
                variant.update(new)
                changed = True
        return changed

    while visit(body, False):
        pass
    return variant


def _written(s: ast.stmt) -> set[str]:
    """Names a simple statement binds or mutates: ``t[k] = v`` mutates ``t``, and so do
    ``t.add_(v)`` and ``lst.append(v)``."""
    targets = stores(s)
    for t in getattr(s, "targets", [getattr(s, "target", None)]):
        if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name):
            targets.add(t.value.id)
    if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) \
            and isinstance(s.value.func, ast.Attribute) \
            and isinstance(s.value.func.value, ast.Name):
        targets.add(s.value.func.value.id)
    return targets


def _check_calls(body: list[ast.stmt], assigned: set[str], ctx: PassContext) -> None:
    appends = {id(s.value) for s in _simple_stmts(body) if _is_append(s, assigned)}
    views = _bound_to_parts(body, ctx)
    for s in body:
        for call in (n for n in walk(s) if isinstance(n, ast.Call)):
            meth = method_name(call, ctx)
            effect = ops.effect(resolve_call(call.func, ctx), meth, call)
            if effect == "random":
                raise Unsupported(f"random op `{unparse(call.func)}`: each iteration draws "
                                  "different numbers", call.lineno)
            if effect == "io":
                raise Unsupported(f"I/O call `{unparse(call.func)}` in the loop", call.lineno)
            if effect == "storage":
                raise Unsupported(f"`{unparse(call.func)}` addresses memory by strides and offset: "
                                  "on a row they reach the whole batch", call.lineno)
            if effect == "autograd":
                raise Unsupported(f"`{unparse(call.func)}(...)` runs autograd on each iteration's "
                                  "own graph, which a batched or vmapped body does not have",
                                  call.lineno)
            op = ops.by_call(resolve_call(call.func, ctx), meth)
            wrong = op.vmap_wrong
            if wrong is not None and (not wrong or {k.arg for k in call.keywords} & set(wrong)):
                raise Unsupported(f"`{unparse(call.func)}(...)` has wrong gradients under vmap"
                                  + (f" with `{'`, `'.join(wrong)}`" if wrong else ""), call.lineno)
            if op.vmap_loops:
                raise Unsupported(f"`{unparse(call.func)}(...)` has no batched form, and vmap "
                                  "would run it once per iteration itself (no batching rule: "
                                  "a performance warning, no faster than the loop)", call.lineno)
            if meth and (effect == "mutates" or ops.is_inplace(meth)) \
                    and id(call) not in appends:
                recv = written_through(call.func.value, ctx)
                # a local value (not a part of another: `c = centers[y[i]]` is a view), or a
                # temporary nothing else sees (written functionally)
                if not (isinstance(recv, ast.Name) and recv.id in assigned - views
                        or effect is None and makes_new_tensor(recv, ctx)):
                    where = "a part of another value" if isinstance(recv, ast.Name) \
                        and recv.id in views else "defined outside the loop"
                    raise Unsupported(f"`{unparse(call.func)}(...)` mutates `{unparse(recv)}`, "
                                      + where, call.lineno)


def _bound_to_parts(body: list[ast.stmt], ctx: PassContext) -> set[str]:
    """Names the body binds to a part or an alias of another value: ``c = centers[y[i]]``, ``c =
    x.view(-1)``, ``c = r``; writing into them writes into that value."""
    def part(value: ast.expr) -> bool:
        if isinstance(value, (ast.Subscript, ast.Attribute, ast.Name)):
            return True
        return isinstance(value, ast.Call) and call_op(value, ctx).aliases \
            and method_name(value, ctx) is not None and part(value.func.value)
    return {t.id for s in body for n in walk(s) if isinstance(n, ast.Assign) and part(n.value)
            for t in n.targets if isinstance(t, ast.Name)}


def _classify(stmts: list[ast.stmt], facts: LoopFacts, carried: dict[str, ast.stmt],
              cond: str, ctx: PassContext) -> None:
    """Record the effect of every statement. ``cond``: "none", "variant" or "invariant" -- the
    kind of condition guarding ``stmts`` (a tensor condition, or a Python one)."""
    for s in stmts:
        if isinstance(s, ast.If):
            kind = "variant" if (cond == "variant" or depends(s.test, facts.variant, ctx)) else (
                "invariant" if cond == "none" else cond)
            if is_guarded_continue(s):
                if kind != "variant":
                    raise Unsupported(f"`continue` under a Python condition (line {s.lineno})",
                                      s.lineno)
                _classify(s.body[:-1], facts, carried, "variant", ctx)
                cond = "variant"  # everything after a guarded continue is masked
                continue
            _classify(s.body, facts, carried, kind, ctx)
            _classify(s.orelse, facts, carried, kind, ctx)
            continue
        effect = _effect_of(s, facts, carried, ctx)
        if effect is None:
            if cond == "variant" and mutates_local(s):
                raise Unsupported("in-place write under a tensor condition", s.lineno)
            continue
        # tensor conditions select the appended tensors (not the items of a display)
        if effect.kind == "append" and (cond == "invariant" or cond == "variant" and isinstance(
                effect.value, (ast.Tuple, ast.List, ast.Dict, ast.Set, ast.Constant))):
            raise Unsupported(f"`{effect.name}.append` under a condition: the list length "
                              "depends on the data", s.lineno)
        if effect.kind == "append" and any(e.kind == "append" and e.name == effect.name
                                           for e in facts.effects.values()):
            raise Unsupported(f"`{effect.name}` appended twice per iteration: its items "
                              "interleave, one batched value per append would not", s.lineno)
        if effect.kind == "write" and cond == "invariant":
            raise Unsupported(f"write into `{effect.name}` under a Python condition", s.lineno)
        if effect.kind == "acc" and effect.family not in rules.FAMILY_IDENTITY and cond != "none":
            raise Unsupported(f"running {effect.family.split('_')[-1]} of `{effect.name}` under "
                              "a condition", s.lineno)
        effect.masked = cond == "variant"
        facts.effects[s] = effect


def _is_append(s: ast.stmt, assigned: set[str]) -> bool:
    """``lst.append(e)`` as a statement, ``lst`` defined outside the loop."""
    call = getattr(s, "value", None)
    return (isinstance(s, ast.Expr) and isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute) and call.func.attr == "append"
            and isinstance(call.func.value, ast.Name) and call.func.value.id not in assigned
            and len(call.args) == 1 and not call.keywords)


def mutates_local(s: ast.stmt) -> bool:
    """``s`` writes in place: into an item or attribute (``t[k] = v``, ``t[k] += v``, ``o.a =
    v``) or by an in-place method (``t.clamp_(0)``)."""
    targets = getattr(s, "targets", [getattr(s, "target", None)])
    if any(isinstance(t, (ast.Subscript, ast.Attribute)) for t in targets):
        return True
    return (isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
            and isinstance(s.value.func, ast.Attribute) and ops.is_inplace(s.value.func.attr))


def _not_inlined(call: ast.expr, ctx: PassContext) -> str:
    """Why the same-module helper ``call`` calls was not inlined (the report's note), if it was
    refused: what it does is then the helper's, a writer of rows of its arguments say."""
    name = getattr(getattr(call, "func", None), "id", None)
    prefix = f"helper {name} is not inlined: "
    note = next((n for n in ctx.report.notes if n.startswith(prefix)), None)
    return f" ({note})" if name and note else ""


def _effect_of(s: ast.stmt, facts: LoopFacts, carried: dict[str, ast.stmt],
               ctx: PassContext) -> Effect | None:
    """The effect of a simple statement, None for a purely local one."""
    if isinstance(s, (ast.FunctionDef, ast.Pass)):
        return None
    if isinstance(s, ast.Expr):
        call = s.value
        if isinstance(call, ast.Constant):
            return None
        if _is_append(s, facts.assigned):
            return Effect("append", call.func.value.id, s, call.args[0])
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) \
                and isinstance(written_through(call.func.value, ctx), ast.Name) \
                and written_through(call.func.value, ctx).id in facts.assigned:
            return None  # method on a local value (e.g. t.clamp_(0), t.mul_(a).add_(b))
        if isinstance(call, ast.Call) and call.args and resolve_call(call.func, ctx) == \
                f"{index_accumulate.__module__}.{index_accumulate.__qualname__}":
            # an inner loop's `m[i, l[i, j]] += v`: several slots per outer iteration
            raise Unsupported(f"the inner loop adds into `{unparse(call.args[0])}` at slots its "
                              "data picks, several per iteration of this loop, which batches "
                              "one slot per iteration only", s.lineno)
        raise Unsupported(f"`{unparse(s).strip()}` is evaluated for its side effects"
                          f"{_not_inlined(call, ctx)}", s.lineno)
    targets = s.targets if isinstance(s, ast.Assign) else [s.target]
    if len(targets) != 1 or not isinstance(targets[0], (ast.Name, ast.Subscript)):
        names = set().union(*(stores(ast.Assign(targets=[t], value=s.value)) for t in targets))
        if names & carried.keys():
            raise _recurrence(sorted(names & carried.keys())[0], s)
        if any(isinstance(n, (ast.Attribute, ast.Subscript)) for t in targets for n in walk(t)
               if isinstance(getattr(n, "ctx", None), ast.Store)):
            raise Unsupported(f"assigns `{unparse(targets[0])}`: mutates an object", s.lineno)
        return None
    target = targets[0]
    if isinstance(target, ast.Subscript):
        base = target.value
        if isinstance(base, ast.Name) and base.id in facts.assigned:
            return None  # writes into a local tensor
        if not isinstance(base, ast.Name):
            raise Unsupported(f"writes into `{unparse(base)}`: not a plain name", s.lineno)
        if isinstance(s, ast.AugAssign):
            op = rules.WRITE_AUGOPS.get(type(s.op))
            if op is None:
                raise Unsupported(f"`{unparse(s).strip()}`: unsupported in-place op", s.lineno)
            return Effect("write", base.id, s, s.value, family=op)
        return Effect("write", base.id, s, s.value)
    name = target.id
    if name not in carried:
        return None
    acc = _match_accumulator(s, name, ctx)
    if acc is None:
        raise _recurrence(name, s)
    return acc


def _match_accumulator(s: ast.stmt, name: str, ctx: PassContext) -> Effect | None:
    """``s += e``, ``s = s + a - b`` (any +/- chain with ``+s`` once), ``s = a * s * b``,
    ``s = torch.maximum(s, e)``, ``s = max(s, e)``, ...: the contribution, without ``s``."""
    if isinstance(s, ast.AugAssign):
        family = rules.ACC_BINOPS.get(type(s.op))
        if family is None or name in loads(s.value):
            return None
        return Effect("acc", name, s, s.value, family, negate=isinstance(s.op, ast.Sub))
    value = s.value
    if isinstance(value, ast.BinOp) and type(value.op) in rules.ACC_BINOPS:
        family = rules.ACC_BINOPS[type(value.op)]
        ops = (ast.Add, ast.Sub) if family == "sum" else (ast.Mult,)
        terms = _chain(value, ops, False)
        own = [k for k, (t, neg) in enumerate(terms) if is_name(t, name)]
        if len(own) != 1 or terms[own[0]][1]:
            return None
        rest = [t for k, t in enumerate(terms) if k != own[0]]
        if any(name in loads(t) for t, _ in rest):
            return None  # `s` inside another term: a recurrence
        if len(rest) == 1:  # s = s - e: contributes -e
            return Effect("acc", name, s, rest[0][0], family, negate=rest[0][1])
        return Effect("acc", name, s, _rebuild(rest, family), family, steps=len(rest))
    if isinstance(value, ast.Call) and len(value.args) == 2 and not value.keywords:
        family = rules.ACC_CALLS.get(resolve_call(value.func, ctx) or "")
        a, b = value.args
        if family and is_name(a, name) and name not in loads(b):
            return Effect("acc", name, s, b, family)
        if family and is_name(b, name) and name not in loads(a):
            return Effect("acc", name, s, a, family)
    return None


def _chain(node: ast.expr, ops: tuple, neg: bool) -> list[tuple[ast.expr, bool]]:
    """Flatten ``a + b - c`` into signed terms [(a, False), (b, False), (c, True)]."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ops):
        right_neg = neg ^ isinstance(node.op, ast.Sub)
        return _chain(node.left, ops, neg) + _chain(node.right, ops, right_neg)
    return [(node, neg)]


def _rebuild(terms: list[tuple[ast.expr, bool]], family: str) -> ast.expr:
    first, neg = terms[0]
    expr = ast.UnaryOp(ast.USub(), first) if neg else first
    for t, neg in terms[1:]:
        op = ast.Mult() if family == "prod" else (ast.Sub() if neg else ast.Add())
        expr = ast.BinOp(expr, op, t)
    return ast.copy_location(expr, first)


def _recurrence(name: str, s: ast.stmt) -> Unsupported:
    return Unsupported(f"`{name}` is a loop-carried recurrence: {unparse(s).strip()} "
                       f"(line {s.lineno})", s.lineno)


def _check_accumulator_reads(body: list[ast.stmt], facts: LoopFacts,
                             carried: dict[str, ast.stmt], ctx: PassContext) -> None:
    """An accumulator read elsewhere in the body is a prefix scan (only written or appended
    after its single top-level update) or a recurrence."""
    accs: dict[str, list[Effect]] = {}
    for e in facts.of_kind("acc"):
        accs.setdefault(e.name, []).append(e)
    for name in carried:
        if name not in accs:
            raise _recurrence(name, carried[name])
    # (an inner loop's partial reading the running value for its start's dtype, type and shape
    # only, `identity_of(loss, 0)`, reads the outer start there: what the items add promotes
    # both alike)
    read = {id(s): _value_loads(s, ctx) if not isinstance(s, ast.If) else loads(s.test)
            for s in _simple_stmts(body)} if accs else {}  # once, not per accumulator
    for name, updates in accs.items():
        if len({e.family for e in updates}) > 1:
            raise _recurrence(name, updates[-1].stmt)
        if len(updates) > 1 and updates[0].family in rules.FAMILY_PICK:
            # one pick over the loop axis would see one item per iteration, not each update's
            raise Unsupported(f"`{name}` is a running builtin max/min updated twice in the loop "
                              f"body (lines {updates[0].stmt.lineno} and "
                              f"{updates[1].stmt.lineno}): its pick is kept as written",
                              updates[1].stmt.lineno)
        update_ids = {id(e.stmt) for e in updates}
        readers = [s for s in _simple_stmts(body) if id(s) not in update_ids
                   and name in read[id(s)]]
        if not readers:
            continue
        update = updates[0]
        top = [id(s) for s in body]
        scan_ok = (len(updates) == 1 and update.family in rules.FAMILY_SCAN
                   and id(update.stmt) in top and not facts.masked)
        for r in readers:
            eff = facts.effects.get(r)
            if not (scan_ok and eff is not None and eff.kind in ("append", "write")
                    and not eff.family and is_name(eff.value, name) and id(r) in top
                    and top.index(id(r)) > top.index(id(update.stmt))):
                raise Unsupported(f"`{name}` is read in the loop body (line {r.lineno}) after "
                                  f"being updated: a loop-carried recurrence"
                                  + _updated_in_place(update.stmt), r.lineno)
            eff.scan_of = name
        update.kind = "scan"


def _value_loads(s: ast.stmt, ctx: PassContext) -> set[str]:
    """``stmt_loads(s)`` but for the names ``s`` reads only as an inner loop's partial start,
    ``identity_of(loss, 0)`` (``fold_accumulators``): their type, dtype and shape."""
    starts = {k for k, v in ctx.bindings.items() if v is identity_of}
    calls = [n for n in walk(s) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
             and n.func.id in starts and n.args and isinstance(n.args[0], ast.Name)]
    if not calls:
        return stmt_loads(s)
    started = {c.args[0] for c in calls}
    elsewhere = {n.id for n in walk(s) if isinstance(n, ast.Name) and n not in started}
    return stmt_loads(s) - ({c.args[0].id for c in calls} - elsewhere)


def _updated_in_place(update: ast.stmt) -> str:
    """Why a running value updated by ``s += e`` and read in its step is not scanned either (see
    ``linear_recurrences_to_scans``): the scan would not raise where the loop's backward does."""
    if not (isinstance(update, ast.AugAssign) and isinstance(update.target, ast.Name)):
        return ""
    s = update.target.id
    return (f" (`{unparse(update).strip()}` changes `{s}` in place: where autograd saved it for "
            f"a read such as `torch.log({s})`, the loop's backward raises, which a scan would "
            f"not; `{s} = {s} + ...` is scanned)")


def _reads_of(node: ast.AST, name: str, ctx: PassContext) -> list[ast.Name]:
    """Occurrences of ``name`` in ``node``, except inside shape queries (``out.dim()``)."""
    if is_name(node, name):
        return [node]
    if is_shape_query(node, ctx):
        return []
    return [n for c in ast.iter_child_nodes(node) for n in _reads_of(c, name, ctx)]


def is_boolean(expr: ast.expr, boolean: set[str], ctx: PassContext, typed: bool = True) -> bool:
    """Whether ``expr`` is (syntactically) a boolean tensor: a comparison, logic, a mask name.
    Not ``typed``: also what may be one, ``*``/``+`` of comparisons (``(c > lo) * (c <= hi)``:
    an int of Python bools, a mask of tensors), for a refusal to err on the safe side."""
    if isinstance(expr, ast.Name):
        return expr.id in boolean
    if isinstance(expr, (ast.Compare, ast.BoolOp)):
        return True
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, (ast.Not, ast.Invert)):
        return is_boolean(expr.operand, boolean, ctx, typed)
    if isinstance(expr, ast.BinOp) and type(expr.op) in rules.MASK_BINOPS:
        return all(is_boolean(e, boolean, ctx, typed) for e in (expr.left, expr.right)) \
            and (not typed or mask_operands_typed(expr, ctx))
    if isinstance(expr, ast.Call):
        kept = dtype_source(expr, ctx)
        return call_op(expr, ctx).boolean or kept is not None and is_boolean(kept, boolean, ctx,
                                                                               typed)
    return False


def mask_operands_typed(expr: ast.BinOp, ctx: PassContext) -> bool:
    """Whether ``expr``, of ``rules.MASK_BINOPS`` on two masks, is a mask: an operator that
    makes ints of Python bools needs a surely-tensor operand (``is_tensor_boolean``)."""
    return not rules.MASK_BINOPS[type(expr.op)] \
        or any(is_tensor_boolean(e, ctx) for e in (expr.left, expr.right))


def is_tensor_boolean(expr: ast.expr, ctx: PassContext) -> bool:
    """``expr`` is a call of a boolean op (``x.gt(t)``, ``torch.isnan(x)``): a bool tensor, never
    a Python bool (Python numbers have no such methods, and the torch functions take tensors)."""
    return isinstance(expr, ast.Call) and call_op(expr, ctx).boolean


def dtype_source(call: ast.Call, ctx: PassContext) -> ast.expr | None:
    """The operand whose dtype ``call``'s result has (``OpSpec.dtype_of``: a view, a copy, a
    ``*_like`` of it); None when the call is given a dtype (``torch.ones_like(m,
    dtype=torch.long)``, ``m.view(torch.int8)``, ``m.view(x.dtype)``)."""
    at, given = call_op(call, ctx).dtype_of, operands(call, ctx)
    if at is None or at >= len(given) or any(k.arg == "dtype" for k in call.keywords) or any(
            isinstance(a, ast.Attribute) and (a.attr == "dtype" or isinstance(
                getattr(torch, a.attr, None), torch.dtype)) for a in call.args):
        return None
    return given[at]


def makes_boolean(expr: ast.expr, ctx: PassContext) -> bool:
    """Whether ``expr`` is a call that makes a boolean tensor by its ``dtype`` argument:
    ``torch.ones(n, dtype=torch.bool)``, ``torch.ones_like(row, dtype=torch.bool)``."""
    return isinstance(expr, ast.Call) and any(
        k.arg == "dtype" and resolve_call(k.value, ctx) == "torch.bool" for k in expr.keywords)


def mask_names(func: ast.FunctionDef, ctx: PassContext, made_boolean: bool = False) -> set[str]:
    """The names ``func`` binds only to boolean tensors (``mask = t.eq(c)``, ``m = a > b``; with
    ``made_boolean``, also ``m = torch.ones(n, dtype=torch.bool)``)."""
    found: dict[str, bool] = {}
    for s in (n for n in walk(func) if isinstance(n, ast.stmt) and n is not func):
        boolean = isinstance(s, ast.Assign) and len(s.targets) == 1 \
            and isinstance(s.targets[0], ast.Name) and (
                is_boolean(s.value, set(), ctx) or made_boolean and makes_boolean(s.value, ctx))
        for name in stores(s):
            found[name] = found.get(name, True) and boolean
    return {name for name, boolean in found.items() if boolean}


def _check_mask_indexing(body: list[ast.stmt], ctx: PassContext) -> None:
    """``x[mask]`` selects a data-dependent number of elements: no batched form. Selections
    ``masked_selections_to_where`` converts are marked ``where_converted``: not refused. A mask
    the body makes (``keep = torch.ones_like(row, dtype=torch.bool)``; ``keep[i] = False``)
    selects so too, and what may be a mask (not ``typed``: a refusal errs on the safe side),
    said so: ``(c > lo) * (c <= hi)`` is converted written with ``&``."""
    boolean: set[str] = set()
    maybe: set[str] = set()  # ... only untyped
    for s in _simple_stmts(body):
        for sub in (n for n in walk(s) if isinstance(n, ast.Subscript)):
            if ast_marks.get(sub, ast_marks.WHERE_CONVERTED, False):
                continue
            entries = write_entries(sub)
            if any(is_boolean(e, boolean | maybe, ctx, typed=False) for e in entries):
                hint = "" if any(is_boolean(e, boolean, ctx) for e in entries) else \
                    " (a mask only if its comparisons are of tensors: `*`/`+` of comparisons " \
                    "make ints of Python bools; with `&`/`|` the selection can be converted)"
                raise Unsupported(f"boolean mask indexing `{unparse(sub)}`: the number of "
                                  f"selected elements varies per iteration{hint}", s.lineno)
        if isinstance(s, ast.Assign) and (is_boolean(s.value, boolean | maybe, ctx, typed=False)
                                          or makes_boolean(s.value, ctx)):
            typed = is_boolean(s.value, boolean, ctx) or makes_boolean(s.value, ctx)
            (boolean if typed else maybe).update(
                t.id for t in s.targets if isinstance(t, ast.Name))


def _check_effect_reads(body: list[ast.stmt], facts: LoopFacts, index: str,
                        ctx: PassContext) -> None:
    """Appended lists may not be read in the body. A written tensor may only be read at the
    iteration's own slot (``out[i]`` where ``out[i] = ...`` is written), before the first write:
    then no iteration sees another's writes (dependence distance 0)."""
    mentioned: dict[int, set[str]] = {}  # id(expr) -> the names in it, walked once
    for name, kind in {(e.name, e.kind) for e in facts.effects.values()
                       if e.kind in ("append", "write")}:
        slots = {_slot(write_target(e.stmt), index) for e in facts.of_kind("write")
                 if e.name == name}
        written = False
        for s in _simple_stmts(body):
            own = facts.effects.get(s)
            exprs = header_exprs(s) if isinstance(s, ast.If) else [s]
            if own is not None and own.name == name:
                exprs = [own.value] + ([write_target(own.stmt).slice] if kind == "write" else [])
            for expr in exprs:
                if id(expr) not in mentioned:
                    mentioned[id(expr)] = {n.id for n in walk(expr) if isinstance(n, ast.Name)}
                if name not in mentioned[id(expr)]:
                    continue  # most statements: no read of `name`, no slot of it
                own_slot = [n for n in walk(expr) if isinstance(n, ast.Subscript)
                            and is_name(n.value, name) and len(slots) == 1
                            and _slot(n, index) in slots and None not in slots and not written]
                reads = _reads_of(expr, name, ctx)
                if len(reads) > len(own_slot) or any(
                        _reads_of(n.slice, name, ctx) for n in own_slot):
                    verb = "appending to" if kind == "append" else "writing"
                    raise Unsupported(f"reads `{name}` while {verb} it (line {s.lineno})",
                                      s.lineno)
            written |= own is not None and own.name == name


def _slot(sub: ast.Subscript, index: str) -> int | None:
    """Position of the bare loop index in ``sub``'s entries (only ints and slices before it)."""
    entries = write_entries(sub)
    for k, e in enumerate(entries):
        if is_name(e, index):
            return k
        if isinstance(e, ast.Starred) or _is_ellipsis(e) or (
                isinstance(e, ast.Constant) and e.value is None):
            return None
    return None


def write_entries(target: ast.Subscript) -> list[ast.expr]:
    sl = target.slice
    return list(sl.elts) if isinstance(sl, ast.Tuple) else [sl]


def _check_writes(facts: LoopFacts, index: str, ctx: PassContext) -> None:
    """``out[..., i, ...] = v``: the loop index bare in one position, everything else fixed; or
    element indices only (no slices), some data-dependent: ``out[i, t[i]] = v`` (the bare ``i``
    keeps the slots of different iterations apart), ``counts[t[i]] += 1`` (without ``i`` the
    slots may repeat: only ``+=``/``-=``, which add up in any order)."""
    for eff in facts.of_kind("write"):
        target = write_target(eff.stmt)
        same = [e for e in facts.of_kind("write") if e.name == eff.name]
        if eff.masked and not eff.family and (
                len({unparse(write_target(e.stmt)) for e in same}) > 1
                or any(e.family for e in same)):
            raise Unsupported(f"conditional write `{unparse(target)}` mixed with other writes "
                              f"into `{eff.name}`", eff.stmt.lineno)
        entries = write_entries(target)
        at = [k for k, e in enumerate(entries) if is_name(e, index)]
        others = [e for k, e in enumerate(entries) if k not in at]
        if len(at) <= 1 and any(data_index(e, facts, ctx) for e in others):
            # the index or its offset keeps the slots of different iterations apart
            apart = bool(at) or any(index_offset(e, index, facts, ctx) is not None for e in others)
            _check_data_indexed_write(eff, entries, apart)
            continue
        if len(at) != 1:
            raise Unsupported(f"write `{unparse(target)}` is not indexed by the loop index "
                              "alone: iterations may write the same element", eff.stmt.lineno)
        for e in others:
            if depends(e, facts.variant, ctx) or loads(e) & facts.assigned \
                    or isinstance(e, ast.Starred) or _is_ellipsis(e):
                raise Unsupported(f"write `{unparse(target)}`: index `{unparse(e)}` varies or "
                                  "is not a fixed int/slice", eff.stmt.lineno)
    _check_write_order(facts, index, ctx)


def _check_write_order(facts: LoopFacts, index: str, ctx: PassContext) -> None:
    """Several writes into one tensor run statement by statement in the vectorized form (all of
    the first write's iterations, then the second's), interleaved in the original: exact when no
    slot one write hits in an iteration is hit by another write in a later one. Proven when every
    target has the loop index (or the same ``i + c``) at one position, when the writes all add
    (``+=``/``-=``, any order), or when they all store one constant."""
    by_name: dict[str, list[Effect]] = {}
    for eff in facts.of_kind("write"):
        by_name.setdefault(eff.name, []).append(eff)
    for name, effs in by_name.items():
        targets = [write_entries(write_target(e.stmt)) for e in effs]
        if len({str([unparse(x) for x in t]) for t in targets}) < 2:
            continue
        if all(e.family in rules.WRITE_ACCUMULATE for e in effs) or (
                all(isinstance(e.value, ast.Constant) for e in effs)
                and len({repr(e.value.value) for e in effs}) == 1):
            continue
        if any(_same_iteration_slot([t[k] for t in targets], index, facts, ctx)
               for k in range(min(map(len, targets)))):
            continue
        first, second = effs[0].stmt, effs[1].stmt
        raise Unsupported(f"writes `{unparse(write_target(first))}` and "
                          f"`{unparse(write_target(second))}` into `{name}` may hit one element "
                          "in different iterations, whose order the vectorized form changes",
                          second.lineno)


def _same_iteration_slot(entries: list[ast.expr], index: str, facts: LoopFacts,
                         ctx: PassContext) -> bool:
    """Every entry is the loop index, or every one the same ``i + c``: slots of different
    iterations differ there."""
    if all(is_name(e, index) for e in entries):
        return True
    return len({unparse(e) for e in entries}) == 1 \
        and index_offset(entries[0], index, facts, ctx) is not None


def data_index(entry: ast.expr, facts: LoopFacts, ctx: PassContext) -> bool:
    """A write's index entry whose value differs between iterations (other than the bare index)."""
    return depends(entry, facts.variant, ctx) or bool(loads(entry) & facts.assigned)


def index_offset(entry: ast.expr, index: str, facts: LoopFacts, ctx: PassContext) -> ast.expr | None:
    """``c`` of the write index ``i + c``, ``c + i`` or ``i - c`` (``i`` the loop index, ``c``
    the same in every iteration): one integer per iteration, a different one each; else None."""
    if not (isinstance(entry, ast.BinOp) and isinstance(entry.op, (ast.Add, ast.Sub))):
        return None
    c = entry.right if is_name(entry.left, index) else entry.left if (
        isinstance(entry.op, ast.Add) and is_name(entry.right, index)) else None
    return None if c is None or data_index(c, facts, ctx) else c


def _check_data_indexed_write(eff: Effect, entries: list[ast.expr], by_index: bool) -> None:
    target = unparse(write_target(eff.stmt))
    if any(isinstance(e, (ast.Slice, ast.Starred)) or _is_ellipsis(e)
           or (isinstance(e, ast.Constant) and e.value is None) for e in entries):
        raise Unsupported(f"write `{target}`: a data-dependent index next to slices",
                          eff.stmt.lineno)
    if eff.masked:
        raise Unsupported(f"conditional write `{target}` at a data-dependent slot",
                          eff.stmt.lineno)
    if not by_index and eff.family not in rules.WRITE_ACCUMULATE:
        raise Unsupported(f"write `{target}` at data-dependent slots: iterations may hit the same "
                          "element (only `+=` / `-=` add up in any order)", eff.stmt.lineno)


def _is_ellipsis(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is Ellipsis


def container_names(node: ast.AST) -> set[str]:
    """Names ``node`` binds only to list, tuple or dict displays or comprehensions (no other
    binding, comprehension variables and unpacking included): a builtin on them iterates the
    container (``sum(parts)``), not a tensor's dim 0."""
    made = [t for n in walk(node) if isinstance(n, ast.Assign) and isinstance(n.value, DISPLAYS)
            for t in n.targets if isinstance(t, ast.Name)]
    other = {n.id for n in walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
             and not any(n is t for t in made)}
    return {t.id for t in made} - other
