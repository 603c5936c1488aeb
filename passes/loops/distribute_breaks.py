"""Loop distribution of a loop that a data-dependent ``break`` ends: its iterations counted first.

A loop body with one top-level ``if <test>: ...; break`` (or ``...; return <value>``: the same,
the iteration that returns running as written; ``find``) is split as any other
(``distribute_loops``), but its hoisted statements run only on the iterations the original
completes. Computed for the iterations after the ``break`` (or in the one that breaks, whose
values the statements after the ``if`` never read) they would get a zero cotangent there, NaN
where their local derivative is infinite (``log`` of 0: 0 * inf), and an op raising on such an
iteration's data (a class index out of range) would raise where the original does not. So the
``break`` test comes first, for every iteration: a vectorized loop of the test and of the
hoisted statements it reads (``test_slice``), none of whose ops raises on any value
(``partial_op``): they also run on the iterations after the ``break``, where only the tests
after the first that holds read them, and the tests take no gradient. One host read finds the
iteration that breaks (``first_break``), and the hoisted loop runs the iterations
before it (``prefix_loop``)::

    for i in range(len(x)):             <every iteration's `m[i] == 0` at once: `_tests`>
        l = F.cross_entropy(...)        _n = _first_break(_tests)
        if m[i] == 0:           ->      _stops = _tests.unbind(0)
            break                       if <the hoisted loop's runtime check>:
        print(l.item())                     <`l` of the iterations in range(_n) at once: `_l_all`>
                                            for i in range(len(x)):
                                                if i == _n:
                                                    l = F.cross_entropy(...)
                                                    if _stops[i]:
                                                        break
                                                l = _l_all[i]
                                                print(l.item())
                                        else:
                                            <the loop as written>

Over a ``range`` whose body but the ``if`` vectorizes whole (accumulators folded), there is no
residual loop: after the vectorized loop over ``range(_n)``, the iteration that breaks, if any,
runs as written but for its test, which holds there (``broken_iteration``)::

    for i in range(len(x)):             <every iteration's `m[i] == 0` at once: `_tests`>
        if m[i] == 0:                   _n = _first_break(_tests)
            total = total * 2   ->      _at = _n
            break                       <`total` summed over range(_n) at once; i = _n - 1>
        total += x[i].sum()             if _n < len(_tests):
                                            i = _at
                                            total = total * 2

In the residual loop, the iteration that breaks runs the statements before the ``if`` as written
(``breaking_iteration``), then the ``if`` on its stacked test, the value ``_n`` was found from:
it holds there, or it is not one element and ``bool`` raises as the original's does. So the
residual loop breaks at the same iteration, after the same effects.
"""
from __future__ import annotations

import ast

import torch

from .. import loop_rules as rules
from ..ast_tools import PassContext, clone, is_int, replace, unparse, walk
from .loop_dataflow import call_op, is_shape_query, loads, resolve_call
from .plan import Iteration

_TENSOR_COMPARISONS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)  # (no `in`, `is`)
# What ends the loop early: a ``return`` in it ends it as a ``break`` does, the function's value
# computed in the iteration that returns, as written (a loop holding one stays in the function:
# ``outline_kept_loops``).
_STOPS = (ast.Break, ast.Return)


def find(body: list[ast.stmt]) -> int | None:
    """The position of the top-level ``if`` (no ``else``) whose branch ends with the body's only
    ``break`` or ``return`` (inner loops' own ``break`` aside), or None."""
    found = [k for k, s in enumerate(body) if any(isinstance(n, _STOPS) for n in _own(s))]
    if len(found) != 1:
        return None
    s = body[found[0]]
    stops = [n for n in _own(s) if isinstance(n, _STOPS)]
    if isinstance(s, ast.If) and not s.orelse and len(stops) == 1 and s.body[-1] is stops[0]:
        return found[0]
    return None


def keyword(body: list[ast.stmt], at: int) -> str:
    """``break`` or ``return``: what ends the loop at the ``if`` at ``at``, for the report."""
    return "return" if isinstance(body[at].body[-1], ast.Return) else "break"


def the_break(body: list[ast.stmt], at: int | None) -> ast.Break | None:
    return body[at].body[-1] if at is not None else None


def _own(node: ast.AST):
    """The nodes of ``node`` outside inner loops and functions (their ``break`` is theirs)."""
    yield node
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.For, ast.AsyncFor, ast.While, ast.FunctionDef,
                                  ast.AsyncFunctionDef, ast.Lambda)):
            yield from _own(child)


def test_slice(body: list[ast.stmt], at: int, residual: dict[int, str],
               writes: list[set[str]]) -> list[int] | str:
    """The positions of the hoisted statements before the ``if`` at ``at`` whose values its
    test reads (through each other), or why the test cannot come first: another statement
    binds or changes what it reads (a residual one, before it or after it: the next
    iteration's test reads it). ``writes``: what each statement binds or may change."""
    needed, picked = loads(body[at].test), []
    for k in range(at - 1, -1, -1):
        if writes[k] & needed and k not in residual:
            picked.append(k)
            needed |= loads(body[k])
    for k, s in enumerate(body):
        changed = sorted(writes[k] & needed)
        if changed and k not in picked and k != at:
            where = " (residual)" if k in residual else ""
            return f"the `{keyword(body, at)}` test reads `{changed[0]}`, which line " \
                   f"{s.lineno}{where} binds or changes: the iterations cannot be counted first"
    return picked[::-1]


def truth_of(test: ast.expr, ctx: PassContext) -> ast.expr:
    """``test``, whose truth in each iteration the stacked tests give: ``not e`` of a bool
    tensor (a comparison, ``t.any()``, ``t.all()``: ``rules.TRUTH_REDUCTIONS``) as ``e == 0``,
    true where ``not`` is (NaN too), and ``bool`` of it raises alike on more than one element;
    Python's ``not`` of a value that varies per iteration has no vectorized form."""
    e = test.operand if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) else None
    if isinstance(e, ast.Compare) and all(isinstance(op, _TENSOR_COMPARISONS) for op in e.ops) \
            or isinstance(e, ast.Call) and call_op(e, ctx).reduce in rules.TRUTH_REDUCTIONS:
        return replace("e == 0", loc=test, e=clone(e))
    return test


def partial_op(nodes: list[ast.AST], seeds: set[str], index: str,
               ctx: PassContext) -> ast.AST | None:
    """An op of ``nodes`` that may raise on some values, or None: a call neither total nor made
    NaN/inf outside its domain (``OpSpec.total``, ``OpSpec.sanitize``: a loss's class index, an
    unknown function), a Python function raising on some values (``host_raises``: ``int`` of
    NaN, ``math.log`` of 0; not ``torch.log``), an integer division or remainder (by 0), a
    subscript by anything the runtime check does not bound (``_checked_index``)."""
    for n in (n for node in nodes for n in walk(node)):
        if isinstance(n, ast.Call) and not is_shape_query(n, ctx):
            op, name = call_op(n, ctx), resolve_call(n.func, ctx)
            if not (op.total or op.sanitize is not None) or op.host_raises and name \
                    and not name.startswith("torch."):
                return n
        if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.FloorDiv, ast.Mod)):
            return n
        if isinstance(n, ast.Subscript) and not _checked_index(n.slice, seeds, index):
            return n
    return None


def _checked_index(key: ast.expr, seeds: set[str], index: str) -> bool:
    """``key`` cannot be out of range on an iteration the runtime check lets through: the
    loop's ``index`` (``m[i]``: the vectorized loop checks ``len(m)`` first), a constant (out
    of range in every iteration, the first included), a slice of the iteration's values
    (``seeds``: slices do not raise). Unchecked: ``y[i - 1]``, ``w[c]`` by an element's value."""
    if isinstance(key, ast.Tuple):
        return all(_checked_index(e, seeds, index) for e in key.elts)
    if isinstance(key, ast.Slice):
        return loads(key) <= seeds
    return isinstance(key, ast.Constant) or isinstance(key, ast.Name) and key.id == index


def partial_reason(node: ast.AST, ctx: PassContext, word: str = "break") -> str:
    return f"{ctx.where(node)} `{unparse(node)}` may raise on the iterations after the " \
           f"`{word}`, and the `{word}` test needs it in every iteration to count them first"


def prefix_loop(node: ast.For, it: Iteration, n: str) -> ast.For:
    """``node``'s header over its first ``n`` iterations: a range's bounds, or each iterated
    sequence's first ``n`` items (``for k, row in enumerate(x[:_n])``)."""
    if it.elements:
        return ast.copy_location(ast.For(target=clone(node.target), iter=_heads(node.iter, n),
                                         body=node.body, orelse=[], type_comment=None), node)
    if is_int(it.step, 1):
        bounds = "range(n)" if is_int(it.start, 0) else "range(a, a + n)"
    else:
        bounds = "range(a, a + n * s, s)"
    header = replace(f"for i in {bounds}: pass", loc=node, i=clone(node.target), n=n,
                     a=clone(it.start), s=clone(it.step))[0]
    return ast.copy_location(ast.For(target=header.target, iter=header.iter, body=node.body,
                                     orelse=[], type_comment=None), node)


def _heads(iterable: ast.expr, n: str) -> ast.expr:
    """``iterable`` over its first ``n`` items: through ``enumerate`` (its sequence) and ``zip``
    (each of them), ``x[:n]`` of a sequence: the same items (views of a tensor's rows)."""
    if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Name) \
            and iterable.func.id in ("enumerate", "zip") and iterable.args:
        heads = iterable.args if iterable.func.id == "zip" else iterable.args[:1]
        args = [_heads(a, n) for a in heads] + clone(iterable.args[len(heads):])
        return ast.copy_location(ast.Call(clone(iterable.func), args,
                                          clone(iterable.keywords)), iterable)
    return replace("x[:n]", loc=iterable, x=clone(iterable), n=n)


def first_break(tests: torch.Tensor) -> int:
    """The first iteration whose ``break`` test holds (``bool`` of one element: NaN counts as
    true) or is not one element (``bool`` raises there), ``tests`` the test of every iteration
    stacked; their number when none. One host read."""
    rows = tests.reshape(len(tests), -1)
    hits = rows[:, 0].ne(0) if rows.shape[1] == 1 else torch.ones(
        len(tests), dtype=torch.bool, device=tests.device)
    return int(torch.where(hits.any(), hits.int().argmax(), len(tests)))


def counted(tests: ast.expr, stops: str | None, n: str, loc: ast.AST,
            ctx: PassContext) -> list[ast.stmt]:
    """``_n = <the iteration that breaks>``; ``_stops``: the residual loop's tests (none
    without a residual loop)."""
    helper = ctx.bind(first_break, "first_break")
    found = replace("n = h(t)", loc=loc, n=n, h=helper, t=tests)
    return found + (replace("stops = t.unbind(0)", loc=loc, t=tests, stops=stops) if stops else [])


def breaking_start(it: Iteration, names: tuple[str, str], loc: ast.AST) -> list[ast.stmt]:
    """``_at = a + _n * s``: the index of the iteration that breaks, found before the
    vectorized loop runs (it may bind the index, which the range's start may read: ``for t in
    range(t, T)``, a counted ``while``). ``names``: ``_n``, ``_at``."""
    if is_int(it.step, 1):
        template = "at = n" if is_int(it.start, 0) else "at = a + n"
    else:
        template = "at = a + n * s"
    return replace(template, loc=loc, at=names[1], n=names[0], a=clone(it.start),
                   s=clone(it.step))


def broken_iteration(body: list[ast.stmt], at: int, names: tuple[str, str, str],
                     tests: ast.expr) -> ast.If:
    """``if _n < len(_tests): i = _at; <the statements before the if at ``at``>; <its branch
    but the break>``: the iteration that breaks, after a vectorized loop of those before it,
    as written but for the test, which holds there: ``first_break`` found it so, or it is not
    one element, found at the first iteration, and no loop over no iterations is vectorized
    (the loop runs as written and ``bool`` raises there). ``names``: ``_n``, ``_at``, ``i``."""
    s = body[at]
    iteration = replace("if n < len(t):\n    i = at", loc=s, n=names[0], t=clone(tests),
                        i=names[2], at=names[1])[0]
    stop = s.body if isinstance(s.body[-1], ast.Return) else s.body[:-1]
    iteration.body += clone(body[:at]) + clone(stop)
    return iteration


def breaking_iteration(body: list[ast.stmt], at: int, names: tuple[str, str],
                       index: str) -> ast.If:
    """``if i == _n: <the statements before the if at ``at``>; if _stops[i]: <its branch>``:
    the iteration that breaks, as written; ``names``: ``_n``, ``_stops``."""
    s = body[at]
    breaks = replace("if stops[k]:\n    pass", loc=s, stops=names[1], k=index)[0]
    breaks.body = clone(s.body)
    iteration = replace("if k == n:\n    pass", loc=s, k=index, n=names[0])[0]
    iteration.body = clone(body[:at]) + [breaks]
    return iteration
