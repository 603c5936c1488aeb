"""Pass: in a helper that runs under ``torch.vmap`` at every call, a write into a tensor the
helper made filled with one number becomes a new tensor bound to the same name.

Under vmap a tensor made of numbers alone (``neg = torch.zeros(n)``) has no batch dimension, and
a value made of the arguments has one: written in place, the second into the first raises at
every call ("inplace arithmetic ... `other` being vmapped over but `self` not"). So does the
write a vectorized loop of the helper leaves after it. Its functional form (``loop_rules.
FUNCTIONAL_WRITE``) is a new tensor, batched as its operands are; the same values, gradients
and dtype (the value cast to the tensor's, as the write casts it)::

    def one(self, i, j, z):                    def one(self, i, j, z):
        neg = torch.zeros(n)                       neg = torch.zeros(n)
        ...                                        ...
        neg[0:n:1] = <stacked values>      ->      _neg_at = torch.arange(neg.numel(), ...)[0:n:1]
                                                   neg = neg.flatten().scatter(0, ...).view(neg.shape)
    t[k] += v                              ->      the same, writing ``t[k] + v``

Only for a name every binding of which is such a constructor (``loop_rules.FILLED_TENSORS``,
without ``requires_grad``/``out``) in the helper's own scope, no parameter, ``global`` or
``nonlocal``, bound in no nested function, and whose memory no other value may share: a
statement binding, appending, passing or iterating over it or a part of it (``row = neg[1:]``,
``lst.append(neg)``, ``f(neg)``) leaves every write into it as written (the functional form
would not change that other value, as the original does). Reading it in operations, tests and
``return`` is no such statement. A function rewritten for calls outside vmap is left as it is.
"""
from __future__ import annotations

import ast

from . import loop_rules as rules
from .ast_tools import SCOPES, PassContext, Transformer, own_scope, replace, walk
from .loops.inplace_writes_to_functional import aliases
from .loops.loop_dataflow import filled_number

# Statements whose expressions are read for their truth or handed back: no alias outlives them.
_NOT_SHARING = (ast.If, ast.While, ast.Assert, ast.Return)


def transform(tree: ast.Module, ctx: PassContext) -> ast.Module:
    if not ctx.mapped:
        return tree
    func = tree.body[0]
    names = fresh_names(func, ctx)
    return FunctionalWrites(names, ctx).visit(tree) if names else tree


def fresh_names(func: ast.FunctionDef, ctx: PassContext) -> set[str]:
    """The locals of ``func`` bound only to filled constructors, sharing memory with nothing
    (what this pass rewrites the writes of)."""
    own = list(own_scope(func))
    made = {id(s.targets[0]) for s in own if isinstance(s, ast.Assign) and len(s.targets) == 1
            and isinstance(s.targets[0], ast.Name) and filled_number(s.value, ctx) is not None}
    names = {n.id for n in own if isinstance(n, ast.Name) and id(n) in made}
    names -= {n.id for n in own if isinstance(n, ast.Name)
              and not isinstance(n.ctx, ast.Load) and id(n) not in made}
    names -= {a.arg for a in walk(func.args) if isinstance(a, ast.arg)}
    for scope in (n for n in walk(func) if isinstance(n, SCOPES) and n is not func):
        names -= {n.id for n in walk(scope) if isinstance(n, ast.Name)
                  and not isinstance(n.ctx, ast.Load)}
        names -= {a.arg for a in walk(scope) if isinstance(a, ast.arg)}
        defaults = [] if isinstance(scope, ast.ClassDef) else \
            scope.args.defaults + scope.args.kw_defaults  # values the function keeps
        names -= set().union(*(aliases(d, ctx) for d in defaults if d is not None))
    names -= {x for n in walk(func) if isinstance(n, (ast.Global, ast.Nonlocal)) for x in n.names}
    order = list(_statements(func))
    return {t for t in names if not _outlived(t, order, ctx)}


def _statements(node: ast.AST):
    """The statements under ``node`` in source order, those of the functions it defines too."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.stmt):
            yield child
        if not isinstance(child, ast.expr):
            yield from _statements(child)


def _outlived(t: str, order: list[ast.stmt], ctx: PassContext) -> bool:
    """A value that may share ``t``'s memory is read after a write into ``t``, or kept where
    it cannot be followed (appended, passed, iterated over, an attribute): the functional form
    would not change it, as the original's write does. A name bound to a part of ``t``
    (``row = t[0:n]``, a vectorized loop's snapshot of the rows it reads) and read only up to
    the write, outside any loop that also writes ``t``, is no such value."""
    writes = [k for k, s in enumerate(order) if written_into(s, {t})]
    sharing, bound = {t}, []
    for k, s in enumerate(order):
        if isinstance(s, _NOT_SHARING + SCOPES) or k in writes or not set().union(
                *(aliases(e, ctx) for e in _kept_values(s))) & sharing:
            continue
        if not isinstance(s, ast.Assign) or not all(isinstance(x, ast.Name) for x in s.targets):
            return True
        sharing |= {x.id for x in s.targets}
        bound.append(k)
    if not bound:
        return False
    first = min((w for w in writes if w > bound[0]), default=len(order))
    loops = [(k, k + len(list(_statements(s)))) for k, s in enumerate(order)
             if isinstance(s, (ast.For, ast.AsyncFor, ast.While))]
    return any(a <= b <= z and a <= w <= z for a, z in loops for b in bound for w in writes) \
        or any(k > first or isinstance(s, SCOPES)
               for k, s in enumerate(order) if _reads(s, sharing - {t}))


def _reads(s: ast.stmt, names: set[str]) -> bool:
    """``s``'s own expressions name one of ``names``; a function it defines, free (it may run
    after the write, wherever it is defined)."""
    if isinstance(s, SCOPES):
        local = {a.arg for a in walk(s) if isinstance(a, ast.arg)} | {
            n.id for n in walk(s) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
        return any(isinstance(n, ast.Name) and n.id in names - local for n in walk(s))
    return any(isinstance(n, ast.Name) and n.id in names
               for e in ast.iter_child_nodes(s) if isinstance(e, ast.expr) for n in walk(e))


def _kept_values(s: ast.stmt) -> list[ast.expr]:
    """The expressions of ``s`` whose values it may keep: bound, appended, iterated over."""
    if isinstance(s, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr)):
        return [s.value] if s.value is not None else []
    if isinstance(s, (ast.For, ast.AsyncFor)):
        return [s.iter]
    if isinstance(s, (ast.With, ast.AsyncWith)):
        return [i.context_expr for i in s.items]
    return [e for e in ast.iter_child_nodes(s) if isinstance(e, ast.expr)]


def written_into(s: ast.stmt, names: set[str]) -> str | None:
    """The name of ``names`` that ``s``, ``t[k] = v`` or ``t[k] op= v``, writes into."""
    targets = s.targets if isinstance(s, ast.Assign) else \
        [s.target] if isinstance(s, ast.AugAssign) else []
    if len(targets) == 1 and isinstance(targets[0], ast.Subscript) \
            and isinstance(targets[0].value, ast.Name) and targets[0].value.id in names:
        return targets[0].value.id
    return None


class FunctionalWrites(Transformer):
    """``t[k] = v`` / ``t[k] op= v`` -> ``t`` rebound to its functional form, for ``names``,
    in the function's own scope."""

    def __init__(self, names: set[str], ctx: PassContext):
        self.names, self.ctx, self.depth = names, ctx, 0

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self.depth += 1  # the function itself, then the ones it defines: left as they are
        if self.depth == 1:
            self.generic_visit(node)
        self.depth -= 1
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        return node  # its own scope

    def visit_Assign(self, node: ast.Assign) -> ast.AST | list[ast.stmt]:
        return self.functional(node, node.value)

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST | list[ast.stmt]:
        read = ast.Subscript(node.target.value, node.target.slice, ast.Load()) \
            if isinstance(node.target, ast.Subscript) else None
        return self.functional(node, read and ast.BinOp(read, node.op, node.value))

    def functional(self, node: ast.stmt, value: ast.expr | None) -> ast.AST | list[ast.stmt]:
        name = written_into(node, self.names)
        if name is None:
            return node
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        return replace(rules.FUNCTIONAL_WRITE, loc=node, torch_name=self.ctx.torch_name,
                       p=self.ctx.namer.new(f"{name}_at"), t=name, k=target.slice, v=value)
