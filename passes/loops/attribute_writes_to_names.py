"""Stage: a tensor the loop writes into through an attribute (``self.returns[step] = v``, a
rollout storage's buffers) is written through a name bound to it in front of the loop's guard::

    for step in range(T):                           _returns = getattr(self, 'returns', None)
        self.returns[step] = gae[step] + v[step] ->  for step in range(T):
                                                         _returns[step] = gae[step] + v[step]

The name holds the same tensor object, so the vectorized write (one slice assignment
``_returns[a:b] = stacked``) mutates the user's tensor in place, as the loop does; the stages
after this one take writes into plain names only. Every read of the attribute in the body reads
the name too, so the vectorizer sees the body read what it writes. Taken when the attribute is
a chain of attribute reads on a name (``self.returns``, ``self.storage.returns``) and the body
neither binds an attribute of that name (``self.returns = ...``) nor calls a method of it or
hands it to a call (``self.reset()``, ``update(self)`` could bind the attribute again), and not
for an inner loop (the binding would be a statement of the outer loop's body). Else the body is
left as it is (and the write keeps the loop). ``number_list_operands`` reads a module's list of
numbers through such a name too (``read_through_name``). The name is bound to ``getattr(self,
'returns', None)`` (``guarded_read``): in front of the guard it is read also when the loop has
no iterations, where the original reads nothing, so a missing attribute must fail the guard (a
tensor, or a list it stacks) instead of raising; the loop as written then raises where the
original does. Reports show it as the user's chain (``unguarded``).
"""
from __future__ import annotations

import ast
import copy

from ..ast_tools import PassContext, unparse, walk
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    if plan.inner:
        return plan
    # by node, not id(): the loop below replaces attributes, and new names may get freed ids
    parents = {c: n for s in plan.body for n in walk(s) for c in ast.iter_child_nodes(n)}
    written = {unparse(n.value): n.value for s in plan.body for n in walk(s)
               if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Store)
               and root(n.value) is not None}
    for chain, node in sorted(written.items()):
        if only_read(root(node), plan.body, parents):
            read_through_name(plan, node, ctx)
    return plan


def read_through_name(plan: LoopPlan, node: ast.Attribute, ctx: PassContext) -> str:
    """The body's reads of the attribute chain ``node`` read a name bound to it in front of the
    guard (reported as the chain); the name, bound to None where the object lacks the attribute
    (``guarded_read``): the body reads its items at the loop index, so the guard fails on None
    (it asks for a tensor, or a list it stacks)."""
    chain = unparse(node)
    name = ctx.namer.new(node.attr)
    plan.prelude += plan.sub("n = a", n=name, a=guarded_read(node))
    plan.user_names[name] = chain
    # the loop iterating it (``enumerate(self.quantiles)``) iterates the name too
    it = plan.iteration
    it.elements = [(e, ast.copy_location(ast.Name(name, ast.Load()), src)
                    if unparse(src) == chain else src) for e, src in it.elements]
    for s in plan.body + [ast.Expr(it.stop)]:
        for n in walk(s):
            for field, child in ast.iter_fields(n):
                if isinstance(child, ast.Attribute) and unparse(child) == chain:
                    setattr(n, field, ast.copy_location(ast.Name(name, ast.Load()), child))
    return name


def guarded_read(node: ast.Attribute) -> ast.expr:
    """``self.cfg.weight`` as ``getattr(getattr(self, 'cfg', None), 'weight', None)``: read in
    front of the guard, or in it, also when the loop has no iterations, where the original
    reads nothing; None (a failed guard: the loop as written reads it, where the original does)
    where an attribute is missing."""
    value = guarded_read(node.value) if isinstance(node.value, ast.Attribute) else node.value
    return ast.copy_location(ast.Call(ast.Name("getattr", ast.Load()),
                                      [value, ast.Constant(node.attr), ast.Constant(None)], []),
                             node)


def unguarded(e: ast.AST, written: frozenset[str] = frozenset()) -> ast.AST:
    """A copy of ``e`` with its ``guarded_read`` forms the attribute chains the user wrote; a
    ``getattr`` call of ``written`` (the user's own, as ``written_getattrs`` spells them) stays."""
    e = copy.deepcopy(e)

    def generated(c: ast.AST) -> bool:
        return _guarded(c) and unparse(c) not in written

    for n in walk(e):
        for field, child in ast.iter_fields(n):
            if generated(child):
                setattr(n, field, _unguarded_chain(child, written))
            elif isinstance(child, list):
                child[:] = [_unguarded_chain(c, written) if generated(c) else c for c in child]
    return _unguarded_chain(e, written) if generated(e) else e


def written_getattrs(source: str) -> frozenset[str]:
    """The ``getattr(x, 'a', None)`` calls of the user's ``source``, as ``unparse`` spells them."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return frozenset()
    return frozenset(unparse(n) for n in walk(tree) if _guarded(n))


def _unguarded_chain(e: ast.expr, written: frozenset[str]) -> ast.expr:
    value = e.args[0]
    inner = _unguarded_chain(value, written) if _guarded(value) and unparse(value) not in written \
        else value
    return ast.Attribute(inner, e.args[1].value, ast.Load())


def _guarded(e: ast.AST) -> bool:
    return isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "getattr" \
        and len(e.args) == 3 and isinstance(e.args[1], ast.Constant) \
        and isinstance(e.args[2], ast.Constant) and e.args[2].value is None


def root(e: ast.expr) -> str | None:
    """The name under a chain of attribute reads (``self`` of ``self.a.b``), None for others."""
    if not isinstance(e, ast.Attribute):
        return None
    while isinstance(e, ast.Attribute):
        e = e.value
    return e.id if isinstance(e, ast.Name) else None


def only_read(base: str, body: list[ast.stmt], parents: dict[ast.AST, ast.AST]) -> bool:
    """Every use of ``base`` in ``body`` is ``base.x`` read, ``base.x`` is not called, and no
    attribute chain on ``base`` is bound."""
    for s in body:
        for n in walk(s):
            if isinstance(n, ast.Attribute) and not isinstance(n.ctx, ast.Load) \
                    and root(n) == base:
                return False
            if not (isinstance(n, ast.Name) and n.id == base):
                continue
            attr = parents.get(n)
            if not (isinstance(attr, ast.Attribute) and isinstance(attr.ctx, ast.Load)
                    and isinstance(n.ctx, ast.Load)):
                return False
            call = parents.get(attr)
            if isinstance(call, ast.Call) and call.func is attr:
                return False
    return True
