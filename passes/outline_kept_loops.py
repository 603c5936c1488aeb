"""Pass: loops that stay loops run outside the compiled graph, so Dynamo does not unroll them.

Dynamo traces a Python loop by unrolling it: a kept loop of T iterations becomes a graph of T
copies of its body, and the first call's compile time grows with T (minutes for a few hundred
steps), for no gain in steady state (the ops are the same, one per step). Every ``for`` and
``while`` loop over steps left in the rewritten function -- loops the vectorizer keeps, the
residual loop of a distributed loop, the rest of a scan when its check fails -- becomes a nested
function that runs eagerly, through ``torch.compiler.disable`` (one graph break on each side
under ``torch.compile``; a plain call without it)::

    for t in range(T):                           def _kept_loop():
        s = torch.tanh(0.9 * s + x[t])    ->         nonlocal s, t
                                                     for t in range(T):
                                                         s = torch.tanh(0.9 * s + x[t])
                                                 _run_eagerly(_kept_loop)

Loops over steps: ``while`` loops and ``for`` loops over ``range(...)`` (also in ``reversed`` or
``enumerate``) whose bounds are not all small int literals. A loop over values (``for feat in
feats``, ``zip(preds, targets)``) has as many iterations as they have items, which only the call
knows: it runs eagerly when every value it iterates in step (``zip``'s arguments, ``enumerate``'s
and ``reversed``'s first) is a tensor with more than 16 rows or a list, tuple or range of more
than 16 items, else as written (a few heads or scales unroll into ops Inductor fuses; a graph
break would cost more than it saves). Each value is evaluated once, before the check::

    for i, feat in enumerate(x.unbind(0)):       _kept_iter = x.unbind(0)
        alpha = step(alpha, feat)         ->     if _iterates_many(_kept_iter):
                                                     def _kept_loop():
                                                         nonlocal alpha, feat, i
                                                         for i, feat in enumerate(_kept_iter):
                                                             alpha = step(alpha, feat)
                                                     _run_eagerly(_kept_loop)
                                                 else:
                                                     for i, feat in enumerate(_kept_iter):
                                                         alpha = step(alpha, feat)

The else branch is the loop itself, not a call of ``_kept_loop``: Dynamo breaks the graph to
call a function whose ``nonlocal`` names are not yet bound. A loop over a literal display or
string of at most 16 items stays as written; so does one over ``zip(*rows)``.

The names the loop binds are ``nonlocal``: the loop reads and writes the function's own
variables, so values, aliasing, and names left unbound by a loop that did not run are as before
(reading one raises ``NameError``, as ``UnboundLocalError`` is). Not outlined: loops with
``return``, ``yield`` or ``await`` (they act on the function itself), loops binding a name the
function declares ``global`` or ``nonlocal``, and the original loop a vectorized loop keeps as
its else branch (it runs only when the runtime check fails, and the report's run counters read
that branch).
"""
from __future__ import annotations

import ast

import torch

from .ast_tools import PassContext, Transformer, clone, own_scope, replace, walk
from .loops.loop_dataflow import stores
from .loops.runtime_checks import is_vectorized_guard

# Trip counts up to this are unrolled at no real cost to compile time.
_SMALL = 16
# Statements that act on the enclosing function: a loop holding one stays in it.
_OWN_FUNCTION = (ast.Return, ast.Yield, ast.YieldFrom, ast.Await, ast.Global, ast.Nonlocal)


def _call(loop):
    return loop()  # a kept loop returns None; a test on the host its value


run_eagerly = torch.compiler.disable(_call)


def iterates_many(*values) -> bool:
    """A loop iterating ``values`` in step runs more than ``_SMALL`` times: each is a tensor with
    more rows, or a list, tuple or range of more items (of a generator or a dict, the length is
    not known without consuming or copying it: its loop stays in the graph)."""
    return all((isinstance(v, (list, tuple, range)) or isinstance(v, torch.Tensor) and v.dim() > 0)
               and len(v) > _SMALL for v in values)


def transform(tree: ast.Module, ctx: PassContext) -> ast.Module:
    func = tree.body[0]
    declared = {n for s in walk(func) if isinstance(s, (ast.Global, ast.Nonlocal)) for n in s.names}
    outline = _Outline(ctx, declared)
    outline.visit(func)
    # `nonlocal x` needs a binding of x in the function: a name only the loop bound gets a bare
    # annotation, which makes it a local without assigning it (nor evaluating the annotation)
    missing = sorted(outline.nonlocal_names - _bound_by(func))
    at = 1 if ast.get_docstring(func) is not None else 0
    func.body[at:at] = [ast.copy_location(ast.AnnAssign(
        target=ast.Name(n, ast.Store()), annotation=ast.Name("object", ast.Load()), simple=1),
        func) for n in missing]
    return tree


def _over_steps(it: ast.expr) -> bool:
    """``range(...)`` (in ``reversed``/``enumerate``) with a bound that is no small literal."""
    while isinstance(it, ast.Call) and isinstance(it.func, ast.Name) \
            and it.func.id in ("reversed", "enumerate") and it.args:
        it = it.args[0]
    if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"):
        return False
    return not all(isinstance(a, ast.Constant) and isinstance(a.value, int)
                   and abs(a.value) <= _SMALL for a in it.args)


def _iterated(it: ast.expr) -> list[ast.expr] | None:
    """The values a ``for`` over ``it`` iterates in step: ``zip``'s arguments, ``enumerate``'s and
    ``reversed``'s first (nested too), else ``it`` itself; None when they are unpacked
    (``zip(*rows)``: how many, only the call knows)."""
    if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name)
            and it.func.id in ("zip", "enumerate", "reversed") and it.args):
        return [it]
    args = it.args if it.func.id == "zip" else it.args[:1]
    if any(isinstance(a, ast.Starred) for a in args):
        return None
    inner = [_iterated(a) for a in args]
    return None if None in inner else [v for vs in inner for v in vs]


def _few_literal(value: ast.expr) -> bool:
    """A display or string of at most ``_SMALL`` items, or a ``range`` of small literal bounds."""
    if isinstance(value, (ast.List, ast.Tuple, ast.Set)):
        return len(value.elts) <= _SMALL and not any(isinstance(e, ast.Starred) for e in value.elts)
    if isinstance(value, ast.Dict):
        return len(value.keys) <= _SMALL and None not in value.keys
    if isinstance(value, ast.Constant):
        return isinstance(value.value, (str, bytes)) and len(value.value) <= _SMALL
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) \
        and value.func.id == "range" and not _over_steps(value)


def _replaced(it: ast.expr, old: ast.expr, new: ast.expr) -> ast.expr:
    """The loop's iterable ``it`` with its node ``old`` (``it`` itself, or an argument of a
    ``zip``/``enumerate``/``reversed`` in it) replaced by ``new``."""
    if it is old:
        return new
    if isinstance(it, ast.Call):
        it.args = [_replaced(a, old, new) for a in it.args]
    return it


def _bound_by(func: ast.FunctionDef) -> set[str]:
    """The names ``func`` itself binds: its parameters and its statements' targets, not those
    of the functions nested in it, nor those of a vectorized loop's form (``keep_faster`` times
    a copy with the loop as written in its place: a vmapped body's ``def`` is gone)."""
    a = func.args
    names = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x}
    todo = list(func.body)
    while todo:
        s = todo.pop()
        names |= stores(s)
        if is_vectorized_guard(s):
            todo += s.orelse
        elif not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            todo += [c for c in ast.iter_child_nodes(s) if isinstance(c, ast.stmt)]
    return names


class _Outline(Transformer):
    def __init__(self, ctx: PassContext, declared: set[str]):
        self.ctx = ctx
        self.declared = declared
        self.depth = 0
        self.nonlocal_names: set[str] = set()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self.depth += 1  # only the function's own loops: nested functions run where they are
        if self.depth == 1:
            node.body = self._block(node.body)
        self.depth -= 1
        return node

    visit_AsyncFunctionDef = visit_Lambda = visit_ClassDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> ast.AST:
        node.body = self._block(node.body)
        if not is_vectorized_guard(node):
            node.orelse = self._block(node.orelse)
        return node

    def visit_With(self, node: ast.With) -> ast.AST:
        node.body = self._block(node.body)
        return node

    def visit_Try(self, node: ast.Try) -> ast.AST:
        for field in ("body", "orelse", "finalbody"):
            setattr(node, field, self._block(getattr(node, field)))
        for handler in node.handlers:
            handler.body = self._block(handler.body)
        return node

    def _block(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        out = []
        for s in stmts:
            if isinstance(s, ast.While) or (isinstance(s, ast.For) and _over_steps(s.iter)):
                out += self._outlined(s)
            elif isinstance(s, ast.For):
                out += self._outlined_over_values(s)
            else:
                out.append(self.visit(s))
        return out

    def _outlined_over_values(self, loop: ast.For) -> list[ast.stmt]:
        """A ``for`` over values: outlined behind ``iterates_many`` of them, each hoisted to a name
        (evaluated once, in its order) unless it is one."""
        values = _iterated(loop.iter)
        if values is None or any(_few_literal(v) for v in values) or self._bound(loop) is None:
            return [self.visit(loop)]
        names, hoisted = [], []
        for v in values:
            if not isinstance(v, ast.Name):
                name = ast.copy_location(ast.Name(self.ctx.namer.new("kept_iter"), ast.Load()), v)
                hoisted += replace("n = v", loc=v, n=name.id, v=v)
                loop.iter = _replaced(loop.iter, v, name)
                v = name
            names.append(v)
        as_written = self.visit(clone(loop))
        check = ast.Call(ast.Name(self.ctx.bind(iterates_many, "iterates_many"), ast.Load()),
                         names, [])
        body = self._outlined(loop, f"when it iterates more than {_SMALL} items")
        return hoisted + [ast.fix_missing_locations(ast.copy_location(
            ast.If(test=check, body=body, orelse=[as_written]), loop))]

    def _bound(self, loop: ast.For | ast.While) -> list[str] | None:
        """The names ``loop`` binds, which its function becomes ``nonlocal``; None when it
        cannot move to one: a `return` in a function defined in the loop (a vmapped body) is
        that function's; a `global`/`nonlocal` anywhere keeps the loop where its names resolve
        as written."""
        inner = [loop, *own_scope(loop)]
        bound = sorted(set().union(*(stores(n) for n in inner if isinstance(n, ast.stmt))))
        if any(isinstance(n, _OWN_FUNCTION) for n in inner) or set(bound) & self.declared \
                or any(isinstance(n, (ast.Global, ast.Nonlocal)) for n in walk(loop)):
            return None
        return bound

    def _outlined(self, loop: ast.For | ast.While, when: str = "") -> list[ast.stmt]:
        bound = self._bound(loop)
        if bound is None:
            return [loop]
        name = self.ctx.namer.new("kept_loop")
        runner = self.ctx.bind(run_eagerly, "run_eagerly")
        func = replace("def f():\n    pass", loc=loop)[0]
        func.name = name
        func.body = ([ast.copy_location(ast.Nonlocal(names=bound), loop)] if bound else []) + [loop]
        self.nonlocal_names |= set(bound)
        self._note(loop.lineno, when)
        return [func, ast.Expr(replace("run(f)", loc=loop, run=runner, f=name))]

    def _note(self, lineno: int, when: str) -> None:
        when = f", {when}" if when else ""
        for entry in self.ctx.report.loops:
            if entry.lineno == lineno and not entry.vectorized:
                entry.reason += "; under torch.compile it runs eagerly, outside the graph" \
                                f"{when} (Dynamo would unroll it)"
