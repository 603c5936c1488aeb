"""A counted ``while`` loop becomes a ``for`` loop over a ``range``, so every loop stage (and
loop distribution) applies to it; a ``while`` loop that is not counted gets the exact reason.

A counted loop: the test is ``i < n`` (or ``i <= n``), the body's last statement ``i += 1`` (or
``i = i + 1``), ``i`` written nowhere else in the body, the bound ``n`` not changed by the body,
no ``continue`` (it would skip the increment). Behind a check that both are ints (a float bound,
a tensor counter, a bool run as written)::

    while i < n:                  if type(i) is int and type(n) is int:
        <body>                        '<marker>'
                                      for i in range(i, n):
        i += 1             ->             <body>
    <after>                           i = max(i, n)
                                  else:
                                      while i < n: ... (as written)
                                  <after>

``i = max(i, n)`` is the original's value of ``i`` after the loop: ``n`` after the last
iteration, ``i`` unchanged when it ran none; it is left out when nothing reads ``i`` afterwards.
A ``break`` in the body is allowed only then (after a ``break`` the original's ``i`` is the
iteration's, not ``n``). The loop's ``else`` clause runs after it, as it did when the test
became false (with no ``break``, that is always).

The bound is evaluated once instead of before every iteration: it reads only local names the
body does not bind, through attributes, subscripts, arithmetic and shape queries (``len(x)``,
``x.shape[0]``, ``x.size(0)``); one read through an object (``len(xs)``) only when the body
changes no object (``xs.append``, ``ys += ...``, ``obj.n = 0``, a call the registry does not
know with a name for argument: ``ys`` may be ``xs``).
"""
from __future__ import annotations

import ast

from .. import ast_marks, ops
from ..ast_tools import PassContext, clone, is_int, is_name, is_pure, replace, walk
from ..errors import Unsupported
from .loop_dataflow import call_op, live_after_loops, loads, stores_in

# Leads the ``for`` form; its else is the ``while`` loop as written, not rewritten or reported.
MARKER = "optimize_loss: the counted `while` loop at line {} runs as a `for` loop"
_NESTED = (ast.For, ast.AsyncFor, ast.While, ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
           ast.ClassDef)


def rewrite(func: ast.FunctionDef, ctx: PassContext) -> None:
    """Every counted ``while`` loop of ``func`` (outside nested functions) as its ``for`` loop,
    in place; the others marked with why each is kept (``ast_marks.NOT_COUNTED``)."""
    if not any(isinstance(n, ast.While) for n in walk(func)):
        return  # the usual case: no liveness to find
    live = live_after_loops(func)
    local = _local_names(func)

    def block(stmts: list[ast.stmt]) -> list[ast.stmt]:
        out = []
        for s in stmts:
            as_written = clone(s) if isinstance(s, ast.While) else None  # before its inner loops
            for field in ("body",) if is_counted_form(s) else ("body", "orelse", "finalbody"):
                if not isinstance(s, _NESTED[3:]) and isinstance(getattr(s, field, None), list):
                    setattr(s, field, block(getattr(s, field)))
            for h in getattr(s, "handlers", []) + getattr(s, "cases", []):
                h.body = block(h.body)
            if not isinstance(s, ast.While):
                out.append(s)
                continue
            try:
                out.append(_as_range(s, as_written, live.get(s, loads(func)), local, ctx))
            except Unsupported as exc:
                ast_marks.put(s, ast_marks.NOT_COUNTED, exc.reason)
                out.append(s)
        return out

    func.body = block(func.body)


def _as_range(loop: ast.While, original: ast.While, live_after: set[str], local: set[str],
              ctx: PassContext) -> ast.If:
    i, bound, inclusive = _counter_test(loop)
    body = loop.body[:-1]
    if not body or not _increments(loop.body[-1], i):
        raise Unsupported(_not_counted(loop, f"its last statement is not `{i} += 1`"), loop.lineno)
    if i in _bound(body) or i not in local:
        raise Unsupported(_not_counted(loop, f"the body also writes `{i}`" if i in local
                                       else f"`{i}` is not a local name"), loop.lineno)
    jumps = {type(n) for s in body for n in _own(s)}
    if ast.Continue in jumps:
        raise Unsupported(_not_counted(loop, f"a `continue` skips `{i} += 1`"), loop.lineno)
    if ast.Break in jumps and (loop.orelse or i in live_after):
        raise Unsupported(f"counted `while` loop with a `break`: after it `{i}` is the breaking "
                          "iteration's" + (" and its `else` clause is skipped" if loop.orelse
                                           else f", read after the loop"), loop.lineno)
    _check_bound(bound, body, local, loop, ctx)
    shadowed = sorted(local & {"type", "int", "max", "range"})  # the builtins its form calls
    if shadowed:
        raise Unsupported(f"counted `while` loop: `{shadowed[0]}` is a local name here, not the "
                          "builtin its `for` form calls", loop.lineno)
    stop = replace("n + 1", n=clone(bound)) if inclusive else clone(bound)
    ranged = ast.copy_location(ast.For(
        target=ast.Name(i, ast.Store()), iter=replace("range(i, n)", loop, i=i, n=stop),
        body=body, orelse=[], type_comment=None), loop)
    after = replace("i = max(i, n)", loop, i=i, n=clone(stop)) if i in live_after else []
    marker = ast.copy_location(ast.Expr(ast.Constant(MARKER.format(loop.lineno))), loop)
    return ast.copy_location(ast.If(
        test=replace("type(i) is int and type(n) is int", loop, i=i, n=clone(bound)),
        body=[marker, ranged] + after + loop.orelse, orelse=[original]), loop)


def is_counted_form(node: ast.AST) -> bool:
    """The ``if <ints>: <marker>; <for form> else: <while loop>`` this module emits."""
    head = MARKER.split("{}")[0]
    return (isinstance(node, ast.If) and len(node.orelse) == 1 and bool(node.body)
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
            and str(node.body[0].value.value).startswith(head))


def _counter_test(loop: ast.While) -> tuple[str, ast.expr, bool]:
    t = loop.test
    if not (isinstance(t, ast.Compare) and len(t.ops) == 1 and isinstance(t.left, ast.Name)
            and isinstance(t.ops[0], (ast.Lt, ast.LtE))):
        written = sorted(loads(t) & stores_in(loop.body))
        if written:
            raise Unsupported(
                "`while` loop whose test reads " + ", ".join(f"`{n}`" for n in written)
                + ", which the body computes: a recurrence (each iteration's test needs the one"
                " before it), so no iteration can be computed in advance", loop.lineno)
        raise Unsupported("`while` loop whose test reads nothing the body writes: it ends only "
                          "by a `break`, `return` or exception, no trip count to compute "
                          "iterations in advance", loop.lineno)
    return t.left.id, t.comparators[0], isinstance(t.ops[0], ast.LtE)


def _increments(s: ast.stmt, i: str) -> bool:
    if isinstance(s, ast.AugAssign):
        return is_name(s.target, i) and isinstance(s.op, ast.Add) and is_int(s.value, 1)
    return (isinstance(s, ast.Assign) and len(s.targets) == 1 and is_name(s.targets[0], i)
            and isinstance(s.value, ast.BinOp) and isinstance(s.value.op, ast.Add)
            and is_name(s.value.left, i) and is_int(s.value.right, 1))


def _check_bound(bound: ast.expr, body: list[ast.stmt], local: set[str], loop: ast.While,
                 ctx: PassContext) -> None:
    """Raises unless ``bound`` is certainly the same before every iteration: an int of names the
    body does not bind (ints do not change), or read through objects the body changes none of
    (any object it changes may be one of them, through another name)."""
    names = loads(bound) - {c.func.id for c in walk(bound)  # `len`: a shape query's builtin
                            if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
    why = ("its bound is not a plain expression of names and shape queries"
           if not is_pure(bound) else next(
               (f"its bound reads `{n}`, which the body binds" for n in sorted(names)
                if n in _bound(body)), None) or next(
               (f"its bound reads `{n}`, not a local name (a call may rebind it)"
                for n in sorted(names) if n not in local), None))
    if why is None and any(isinstance(n, (ast.Attribute, ast.Subscript, ast.Call))
                           for n in walk(bound)):  # through an object: an alias may change it
        why = next((f"its bound reads through an object, which the body may change "
                    f"(`{ast.unparse(e)}`)" for s in body for e in _handed_on(s, ctx)), None)
    if why:
        raise Unsupported(_not_counted(loop, why), loop.lineno)


def _bound(body: list[ast.stmt]) -> set[str]:
    """Names ``body`` binds or deletes."""
    return stores_in(body) | {t.id for n in walk(ast.Module(body, [])) if isinstance(n, ast.Delete)
                              for t in n.targets if isinstance(t, ast.Name)}


def _handed_on(s: ast.stmt, ctx: PassContext):
    """The expressions ``s`` may change the value of: receivers and arguments as a whole (a
    name or attribute, not a value computed from one) of calls but the registry's ops that do
    not work in place, targets written through or augmented."""
    for n in walk(s):
        if isinstance(n, ast.Call) and (call_op(n, ctx) is ops.UNKNOWN or isinstance(
                n.func, ast.Attribute) and ops.is_inplace(n.func.attr)):
            receiver = [n.func.value] if isinstance(n.func, ast.Attribute) else []
            yield from (e for e in receiver + n.args + [k.value for k in n.keywords]
                        if isinstance(e, (ast.Name, ast.Attribute, ast.Starred)))
        elif isinstance(n, (ast.Subscript, ast.Attribute)) and isinstance(n.ctx, (ast.Store,
                                                                                ast.Del)):
            yield n
        elif isinstance(n, ast.AugAssign):  # `xs += ys` extends a list
            yield n.target


def _own(node: ast.AST):
    """The nodes of ``node`` outside inner loops and functions (their jumps are theirs)."""
    yield node
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, _NESTED):
            yield from _own(child)


def _not_counted(loop: ast.While, why: str) -> str:
    return f"`while {ast.unparse(loop.test)}` is not a counted loop: {why}"


def _local_names(func: ast.FunctionDef) -> set[str]:
    """Names ``func`` binds or takes, less those declared ``global`` or ``nonlocal``."""
    a = func.args
    params = {p.arg for p in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if p}
    shared = {n for node in walk(func) if isinstance(node, (ast.Global, ast.Nonlocal))
              for n in node.names}
    return (params | stores_in(func.body)) - shared
