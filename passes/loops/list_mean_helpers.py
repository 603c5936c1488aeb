"""Same-module helpers that iterate a list and return the mean of its items, called on a list a
loop builds: the call goes through ``list_mean``, which takes the stacked items at once.

The helper recognised (``is_list_mean``) has this shape, names free, an optional filter whose
flag is a parameter, and any handling of the empty iterable::

    def mean(values, ignore_nan=False, empty=0):
        values = iter(values)
        if ignore_nan:                          (optional)
            values = filterfalse(isnan, values)
        try:
            n = 1
            acc = next(values)
        except StopIteration:
            ...                                 (``return empty``, ``raise ValueError(...)``)
        for n, v in enumerate(values, 2):
            acc += v                            (or ``acc = acc + v``)
        if n == 1:
            return acc
        return acc / n

A call ``mean(xs, ...)`` whose first argument is a list the function builds (every binding of
``xs`` is ``xs = []``, not a parameter) becomes ``_list_mean(xs, mean, ...)``; so does
``mean(f(x) for x in xs)`` (one ``for`` clause), as ``_list_mean([f(x) for x in xs], mean, ...)``:
the helper takes every item, one after the other, so computing them first changes nothing, and
``normalize_comprehensions`` vectorizes that list as the loop it is. On a list (the
loop ran as written) ``list_mean`` calls the helper as written. On the stacked items a vectorized
loop bound ``xs`` to (or the list of all its rows, ``_rows_of``), with at least two items and
the filter's flag false: the first item plus
the sum of the others, in place as the helper adds (a later read of ``xs[0]`` sees the sum, as
it sees the first item the helper changed), divided by their number; with fewer items, or the
flag set, the helper on the rows (copies when it would add into the first: rows of one stacked
tensor cannot be written in place), so the empty case returns or raises as the helper does.

The helper writes into its first item: ``normalize_comprehensions`` lets ``xs`` be stacked only
when every item appended to it is a new tensor (``makes_new_tensor``) and nothing else aliases
``xs``: then no other value sees that write.
"""
from __future__ import annotations

import ast
import inspect
import types

import torch

from ..ast_tools import PassContext, Transformer, replace
from ..errors import Unsupported
from .loop_dataflow import resolve_call


def list_mean(values, helper, known, flag, *args, **kwargs):
    """``helper(values, *args, **kwargs)``; ``known``: the helper recognised at rewrite time
    (see the module docstring), ``flag``: the name of its filter's parameter, or None."""
    stacked = values if isinstance(values, torch.Tensor) else _rows_of(values)
    if stacked is None or helper is not known:
        return helper(values, *args, **kwargs)
    filtered = flag is not None and inspect.signature(helper).bind(
        values, *args, **kwargs).arguments.get(flag, _default(helper, flag))
    if len(stacked) < 2 or filtered:
        rows = list(values) if len(stacked) < 2 else [r.clone() for r in stacked]
        return helper(rows, *args, **kwargs)
    acc = stacked[0]
    acc += stacked[1:].sum(0)
    return acc / len(stacked)


def _rows_of(values) -> torch.Tensor | None:
    """The tensor whose rows, all of them and in order, the list ``values`` holds (a vectorized
    loop whose appends are masked extends its list with ``v[mask].unbind(0)``, views the helper
    cannot add into), or None."""
    if not (type(values) is list and len(values) > 1 and isinstance(values[0], torch.Tensor)):
        return None
    base = values[0]._base
    if base is None or base.dim() == 0 or len(base) != len(values):
        return None
    first, step, shape = base.storage_offset(), base.stride(0), base.shape[1:]
    return base if all(isinstance(t, torch.Tensor) and t._base is base and t.shape == shape
                       and t.storage_offset() == first + k * step
                       for k, t in enumerate(values)) else None


def _default(helper, name: str):
    return inspect.signature(helper).parameters[name].default


def rewrite_calls(func: ast.FunctionDef, ctx: PassContext) -> None:
    """``mean(xs, ...)`` -> ``_list_mean(xs, mean, <mean as recognised>, flag, ...)`` in ``func``
    (in place)."""
    _Calls(_built_lists(func), ctx).visit(func)


def is_list_mean_call(call: ast.Call, ctx: PassContext) -> bool:
    """``call`` is a ``list_mean`` call ``rewrite_calls`` made."""
    return resolve_call(call.func, ctx) == f"{__name__}.list_mean"


def reads_every_item(call: ast.Call, ctx: PassContext) -> bool:
    """``call`` is a ``list_mean`` call of a helper without a filter: every item gets its share
    of the gradient (a filter may leave some out)."""
    return is_list_mean_call(call, ctx) and isinstance(call.args[3], ast.Constant) \
        and call.args[3].value is None


def _built_lists(func: ast.FunctionDef) -> set[str]:
    """Names every binding of which in ``func`` is ``name = []`` (not a parameter)."""
    params = {a.arg for n in ast.walk(func) if isinstance(n, ast.arguments)
              for a in n.posonlyargs + n.args + n.kwonlyargs + [n.vararg, n.kwarg] if a}
    empty, stores = set(), set()
    for n in ast.walk(func):
        if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name) \
                and isinstance(n.value, ast.List) and not n.value.elts:
            empty.add(id(n.targets[0]))
    for n in ast.walk(func):
        if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
            stores.add((n.id, id(n) in empty))
    return {name for name, is_empty in stores if is_empty} - params \
        - {name for name, is_empty in stores if not is_empty}


class _Calls(Transformer):
    def __init__(self, built: set[str], ctx: PassContext):
        self.built, self.ctx = built, ctx

    def visit_Call(self, node: ast.Call) -> ast.expr:
        self.generic_visit(node)
        helper = self.ctx.globals.get(node.func.id) if isinstance(node.func, ast.Name) else None
        if not (node.args and (isinstance(node.args[0], ast.Name) and node.args[0].id in self.built
                               or _one_clause(node.args[0]))
                and not any(isinstance(a, ast.Starred) for a in node.args)
                and isinstance(helper, types.FunctionType)):
            return node
        shape = _mean_shape(helper, self.ctx)
        if shape is None:
            return node
        items = node.args[0]
        if isinstance(items, ast.GeneratorExp):  # the helper takes every item: a list is the same
            items = ast.copy_location(ast.ListComp(items.elt, items.generators), items)
        call = replace("f(xs, h, known, flag)", loc=node, f=self.ctx.bind(list_mean, "list_mean"),
                       xs=items, h=node.func, known=self.ctx.bind(helper, "mean_helper"),
                       flag=ast.Constant(shape[0]))
        call.args += node.args[1:]
        call.keywords = node.keywords
        return call


def _one_clause(node: ast.expr) -> bool:
    """``node`` is a list comprehension or generator expression with one ``for`` clause."""
    return isinstance(node, (ast.ListComp, ast.GeneratorExp)) and len(node.generators) == 1 \
        and not node.generators[0].is_async


def _mean_shape(fn: types.FunctionType, ctx: PassContext) -> tuple[str | None] | None:
    """``(flag,)`` when ``fn`` is a mean helper (``flag``: its filter's parameter, or None);
    else None."""
    if any(b in fn.__globals__ for b in ("iter", "next", "enumerate", "StopIteration")):
        return None  # a builtin the helper reads is shadowed
    try:
        node = ctx.parse_function(fn).tree.body[0]
    except Unsupported:  # no source
        return None
    if not isinstance(node, ast.FunctionDef) or node.decorator_list or node.args.vararg \
            or node.args.kwarg or not node.args.args:
        return None
    params = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
    body = node.body[1:] if _is_docstring(node.body[0]) else node.body
    if not body or not _is(body[0], "x = iter(p)", p=params[0]):
        return None
    it = body[0].targets[0].id
    flag = None
    if isinstance(body[1], ast.If) and isinstance(body[1].test, ast.Name) \
            and body[1].test.id in params[1:] and not body[1].orelse and len(body[1].body) == 1 \
            and _is(body[1].body[0], "x = f(*a)", x=it) and body[1].body[0].value.args \
            and _is(body[1].body[0].value.args[-1], "it", it=it):
        flag = body[1].test.id
    rest = body[2 if flag else 1:]
    if len(rest) != 4 or not _first_item(rest[0], it):
        return None
    count, acc = rest[0].body[0].targets[0].id, rest[0].body[1].targets[0].id
    loop, last, ret = rest[1:]
    if not (_is(loop, "for (n, v) in enumerate(it, 2):\n    a += v", n=count, it=it, a=acc)
            or _is(loop, "for (n, v) in enumerate(it, 2):\n    a = a + v", n=count, it=it, a=acc)):
        return None
    if not (_is(last, "if n == 1:\n    return a", n=count, a=acc)
            and _is(ret, "return a / n", n=count, a=acc)):
        return None
    return (flag,)


def _first_item(node: ast.stmt, it: str) -> bool:
    """``try: n = 1; acc = next(it)`` ``except StopIteration: ...``."""
    return isinstance(node, ast.Try) and len(node.handlers) == 1 and not node.orelse \
        and not node.finalbody and _is(node.handlers[0].type, "StopIteration") \
        and len(node.body) == 2 and _is(node.body[0], "n = 1") \
        and _is(node.body[1], "a = next(it)", it=it) \
        and node.body[0].targets[0].id != node.body[1].targets[0].id


def _is(node: ast.AST, pattern: str, **names: str) -> bool:
    """``node`` is ``pattern`` with its one-letter names free (``x``, ``f``, ``n``, ...) unless
    given in ``names``; ``*a`` stands for any arguments."""
    want = ast.parse(pattern).body[0]
    if isinstance(want, ast.Expr) and not isinstance(node, ast.stmt):
        want = want.value
    return _match(want, node, names)


def _match(want: ast.AST, got: ast.AST, names: dict[str, str]) -> bool:
    if isinstance(want, ast.Name) and len(want.id) <= 2 and want.id not in ("it",) or \
            isinstance(want, ast.Name) and want.id in names:
        if not isinstance(got, ast.Name):
            return False
        return names.setdefault(want.id, got.id) == got.id
    if isinstance(want, ast.Call) and want.args and isinstance(want.args[0], ast.Starred):
        return isinstance(got, ast.Call) and _match(want.func, got.func, names)
    if type(want) is not type(got):
        return False
    for field, value in ast.iter_fields(want):
        other = getattr(got, field, None)
        if isinstance(value, list):
            if not isinstance(other, list) or len(value) != len(other) \
                    or not all(_match(w, g, names) for w, g in zip(value, other)):
                return False
        elif isinstance(value, ast.AST):
            if not isinstance(other, ast.AST) or not _match(value, other, names):
                return False
        elif field not in ("ctx", "type_comment") and value != other:
            return False
    return True


def _is_docstring(s: ast.stmt) -> bool:
    return isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) \
        and isinstance(s.value.value, str)
