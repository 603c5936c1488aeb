"""Stage: in-place writes on tensors the iteration creates become their functional forms.

The body is mapped with vmap and compiled: in-place writes there are what Inductor miscompiles
(gradients off), so the body never keeps one. A tensor an op of the iteration made, whose memory
no other value shares, is rebound to the written value instead::

    m = torch.clamp(s - c + 1, min=0)        m = torch.clamp(s - c + 1, min=0)
    m[c] = 0                          ->     _m_at = torch.arange(m.numel(), device=m.device).view(m.shape)[c]
                                             m = m.flatten().scatter(0, _m_at.flatten(), torch.as_tensor(0, dtype=m.dtype, device=m.device).expand(_m_at.shape).flatten()).view(m.shape)
    m[c] += v                         ->     the same, writing ``m[c] + v``
    m += 1                            ->     m = _inplace_result(m, m + 1)
    m.clamp_(min=0)                   ->     m = _inplace_result(m, m.clamp(min=0))
    m.mul_(0.5).add_(1)               ->     m = _inplace_result(m, _inplace_result(m, m.mul(0.5)).add(1))
    loss = loss + w[i] * (a - b).log_()  ->  _v = w[i]
                                             _tmp = a - b
                                             loss = loss + _v * _inplace_result(_tmp, _tmp.log())

A temporary written in place (nothing else sees it) is bound to a name first, so its write keeps
its dtype too (``(x[i] > 0).long().log_()`` raises, ``(x[i] * 2).mul_(w64)`` stays float32). What
the statement evaluates before it that could raise or call is bound first, in order, so the first
exception is the original's; a temporary under a condition of its expression (``a if c else
b.log_()``, ``and``, a comprehension) is refused.

``_inplace_result`` (``passes/inplace_results.py``) keeps the tensor's dtype as the write does
(``m = torch.zeros(3); m += x64[i]`` stays float32) and raises the write's error where the result
cannot be cast to it.

A float tensor of one number the iteration makes (``t = torch.zeros(n)``, no ``dtype=``:
``loop_dataflow.float_filled``) is such a tensor too (a one-hot made per sample).

``s += v`` on a name the iteration bound to a Python number (``temp = 0.0`` at the top of the
body, then an inner loop's ``temp += partial``) writes nothing in place in the original either: a
number shares no memory, whatever else read it, so it becomes ``s = s + v``.

A write into a tensor that may share memory with another value (a row of an input, a view, a name
bound to the same tensor, an appended item) is refused: its functional form would not change the
other value, as the original does. So is a write into a name bound to a part of another value
(``c = centers[y[i]]``, then ``c += v`` or ``c[:] = v``), whatever that value is: a row of a
tensor is a view of it. Writes into values not known to be tensors (local lists) stay.
"""
from __future__ import annotations

import ast
from collections.abc import Callable

import torch

from .. import loop_rules as rules
from .. import ops
from ..ast_tools import PassContext, replace, unparse, walk
from ..errors import Unsupported
from ..inplace_results import inplace_result
from .batch_values import number_literal
from .loop_dataflow import (call_op, float_filled, is_boolean, is_shape_query, loads,
                            makes_new_tensor, method_name, stores)
from .masked_selections_to_where import WRITTEN_MASK
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    writes = Writes(plan, ctx, {r.param for r in plan.row_slices.values()}
                    | {name for name, _ in it.elements})
    writes.block(plan.init, rewrite=False)
    plan.body = writes.block(plan.body)
    return plan


class Writes:
    """Walks the body in order: which names hold tensors (``tensors``), which of them an op of
    the iteration made (``fresh``), which may share memory with another value (``shared``), and
    which hold Python numbers (``numbers``: they share memory with nothing).
    ``masked_only``: rewrite only boolean masks' writes of numbers (``masked_writes_to_where``);
    ``only``: rewrite only the statements it accepts (the others are walked, as written)."""

    def __init__(self, plan: LoopPlan, ctx: PassContext, tensors: set[str],
                 masked_only: bool = False, switch: Callable[[ast.If], bool] | None = None,
                 only: Callable[[ast.stmt], bool] | None = None):
        self.plan, self.ctx, self.masked_only, self.switch = plan, ctx, masked_only, switch
        self.only = only
        self.tensors, self.fresh, self.shared = set(tensors), set(), set()
        self.numbers: set[str] = set()
        # (if, whether its body was taken, why the other branch's write was refused)
        self.switched: list[tuple[ast.If, bool, str]] = []
        self.depth = 0  # of the `if`s around the statement walked
        self.refused_in_branch = False  # the last refusal was of a write under an `if`

    def block(self, stmts: list[ast.stmt], rewrite: bool = True) -> list[ast.stmt]:
        out = []
        for s in stmts:
            if isinstance(s, ast.If):
                out += self.branches(s, rewrite)
                continue
            new = self.stmt(s) if rewrite and (self.only is None or self.only(s)) else [s]
            if new[-1] is s:  # what it binds (after the temporaries bound before it)
                self.track(s)
            out += new  # a rewritten write: its tensor stays new, and copies what it writes
        return out

    def branches(self, s: ast.If, rewrite: bool) -> list[ast.stmt]:
        """``s`` with its branches rewritten. With ``switch``: a branch with a refused write,
        under a condition ``switch`` accepts, is dropped and the other one taken (``switched``)."""
        before = (set(self.tensors), set(self.fresh), set(self.shared), set(self.numbers))
        try:
            s.body = self.branch(s.body, rewrite)
        except Unsupported as exc:
            if not (self.switch and self.switch(s)):
                raise
            self.tensors, self.fresh, self.shared, self.numbers = before
            self.switched.append((s, False, exc.reason))
            return self.branch(s.orelse, rewrite)
        after_body = (self.tensors, self.fresh, self.numbers)
        self.tensors, self.fresh, self.numbers = before[0], before[1], before[3]
        try:
            s.orelse = self.branch(s.orelse, rewrite)
        except Unsupported as exc:
            if not (self.switch and self.switch(s)):
                raise
            self.tensors, self.fresh, self.numbers = after_body
            self.switched.append((s, True, exc.reason))
            return s.body
        self.tensors &= after_body[0]  # what both branches leave
        self.fresh &= after_body[1]
        self.numbers &= after_body[2]
        return [s]

    def branch(self, stmts: list[ast.stmt], rewrite: bool) -> list[ast.stmt]:
        self.depth += 1  # a refusal notes it when made (``refusal``)
        try:
            return self.block(stmts, rewrite)
        finally:
            self.depth -= 1  # also after a refused branch a switch drops

    def stmt(self, s: ast.stmt) -> list[ast.stmt]:
        """``s`` without in-place writes (or ``s`` itself), after the temporaries it binds."""
        before = [] if self.masked_only else self.temporaries(s)
        return before + self.write(s)

    def write(self, s: ast.stmt) -> list[ast.stmt]:
        """``s`` (its temporaries bound) without in-place writes (or ``s`` itself)."""
        target = s.targets[0] if isinstance(s, ast.Assign) and len(s.targets) == 1 else \
            s.target if isinstance(s, ast.AugAssign) else None
        if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
            name = target.value.id
            masked = isinstance(s, ast.Assign) and number_literal(s.value) \
                and is_boolean(target.slice, self.plan.masks, self.ctx)
            if (self.masked_only and not masked) or not self.writable(name, s):
                return [s]
            if masked:
                return self.masked_write(name, target.slice, s.value, s)
            value = s.value if isinstance(s, ast.Assign) else \
                ast.BinOp(ast.Subscript(target.value, target.slice, ast.Load()), s.op, s.value)
            at = self.ctx.namer.new(f"{name}_at")
            # at the write: a reason quoting the functional form's code quotes the user's write
            return replace(rules.FUNCTIONAL_WRITE, loc=s, torch_name=self.plan.torch_name, p=at,
                           t=name, k=target.slice, v=value)
        if self.masked_only:
            return [s]
        if isinstance(s, ast.AugAssign) and isinstance(target, ast.Name):
            if target.id in self.shared or (target.id in self.tensors
                                             and target.id not in self.fresh):
                raise self.refusal(s, target.id)
            value = ast.copy_location(ast.BinOp(ast.Name(target.id, ast.Load()), s.op, s.value), s)
            if target.id in self.fresh:  # a tensor: the write keeps its dtype
                value = self.kept_dtype(target.id, value)
            return [ast.copy_location(ast.Assign([ast.Name(target.id, ast.Store())], value), s)]
        call = s.value if isinstance(s, ast.Expr) else None
        chain = _inplace_chain(call, self.ctx)  # m.mul_(a).add_(b): each link writes m
        if chain and isinstance(chain[-1].func.value, ast.Name):
            name = chain[-1].func.value.id
            if not self.writable(name, s):  # no list has `x_()` methods: a tensor
                raise self.refusal(s, name)
            value = self.functional_chain(name, chain, s)
            return [ast.copy_location(ast.Assign([ast.Name(name, ast.Store())], value), s)]
        return [s]

    def functional_chain(self, name: str, chain: list[ast.Call], s: ast.stmt) -> ast.expr:
        """The value the in-place ``chain`` (outermost first) on the tensor ``name`` leaves."""
        value = ast.Name(name, ast.Load())
        for link in reversed(chain):  # innermost first: each link writes m in its dtype
            link.func.attr = _functional(link, s)
            link.func.value = value
            value = self.kept_dtype(name, link)
        return value

    def temporaries(self, s: ast.stmt) -> list[ast.stmt]:
        """Bindings to run before ``s``, which ``s`` then reads: each new tensor an in-place
        chain of ``s`` writes (innermost first), and before it, in order, what ``s`` evaluates
        before it that could raise or call (the first error stays the original's)."""
        before: list[ast.stmt] = []
        while chain := self.temporary_chain(s):
            path = _path_to(s, chain[0])
            for parent, child in zip(path, path[1:]):
                earlier = _evaluated_before(parent, child) if isinstance(s, _SIMPLE) else None
                if earlier is None:
                    raise Unsupported(f"`{self.plan.quote(chain[0])}`: an in-place op on a "
                                      "temporary evaluated under a condition or in a compound "
                                      "statement", s.lineno)
                for holder, e in earlier:
                    before += self.bound_parts(e, holder)
            tmp = self.ctx.namer.new("tmp")
            before.append(self.binding(tmp, chain[-1].func.value, s))
            _replace(path[-2], chain[0], self.functional_chain(tmp, chain, s))
        return before

    def temporary_chain(self, s: ast.stmt) -> list[ast.Call]:
        """The first in-place chain (outermost first) of ``s`` on a new tensor, inner ones first."""
        links = {c.func.value for c in walk(s) if isinstance(c, ast.Call)
                 and _inplace(c, self.ctx)}  # nodes: hashed by identity
        for node in _post_order(s):
            chain = _inplace_chain(node, self.ctx) if node not in links else []
            if chain and self.made(chain[-1].func.value):
                return chain
        return []

    def bound_parts(self, e: ast.expr, parent: ast.AST) -> list[ast.stmt]:
        """Bindings of ``e`` (a child of ``parent``), or of the parts of it that could raise or
        call: a name or a number needs none, nor a module attribute or a method looked up."""
        if isinstance(e, (ast.Name, ast.Constant)) or _dotted(e):
            return []
        if isinstance(e, (ast.Attribute, ast.Starred)):
            return self.bound_parts(e.value, e)
        if isinstance(e, ast.Subscript) and isinstance(e.ctx, ast.Store):  # `t[k] += ...`
            return self.bound_parts(e.value, e) + self.bound_parts(e.slice, e)
        name = self.ctx.namer.new("v")
        bound = self.binding(name, e, e)
        _replace(parent, e, ast.Name(name, ast.Load()))
        return [bound]

    def binding(self, name: str, e: ast.expr, at: ast.AST) -> ast.stmt:
        """``name = e``, tracked (a new tensor ``e`` is fresh)."""
        s = ast.copy_location(ast.Assign([ast.Name(name, ast.Store())], e), at)
        self.track(s)
        return s

    def kept_dtype(self, name: str, value: ast.expr) -> ast.expr:
        """``value``, written into the tensor ``name`` in place, in its dtype (or the write's
        error): ``inplace_results.inplace_result``."""
        helper = self.ctx.bind(inplace_result, "inplace_result")
        return ast.copy_location(ast.Call(ast.Name(helper, ast.Load()),
                                          [ast.Name(name, ast.Load()), value], []), value)

    def masked_write(self, name: str, mask: ast.expr, value: ast.expr,
                     s: ast.stmt) -> list[ast.stmt]:
        """``t[m] = v`` (``v`` a number) as ``t = torch.where(m, v, t)``, ``m`` shaped as
        indexing reads it; a comparison of Python values is a Python bool, made a tensor."""
        made = mask if self.is_tensor(mask) else self.plan.sub("torch.as_tensor(m)", m=mask)
        return replace("k = m.reshape(shape[m.shape, t.shape])\nt = torch.where(k, v, t)", loc=s,
                       torch_name=self.plan.torch_name, k=self.ctx.namer.new(f"{name}_keep"),
                       m=made, t=name, v=value, shape=self.ctx.bind(WRITTEN_MASK, "written_mask"))

    def writable(self, name: str, s: ast.stmt) -> bool:
        """``name`` is a tensor the iteration made and nothing else shares (refused when it is a
        tensor, or a value bound to a part of another, that may share memory); False for values
        not known to be tensors."""
        if name in self.fresh and name not in self.shared:
            return True
        if name in self.tensors or name in self.shared:
            raise self.refusal(s, name)
        return False

    def refusal(self, s: ast.stmt, name: str) -> Unsupported:
        self.refused_in_branch = self.depth > 0
        return Unsupported(f"`{self.plan.quote(s).strip()}` writes in place into `{name}`, "
                           "which may share memory with another value (a functional form would "
                           "not change that value)", s.lineno)

    def track(self, s: ast.stmt) -> None:
        """What ``s`` (free of in-place writes) binds, and what it makes share memory."""
        value = getattr(s, "value", None)
        if isinstance(s, ast.FunctionDef) or value is None:
            return
        shares = aliases(value, self.ctx) - self.numbers  # a number is a value, not memory
        self.shared |= shares
        name = s.targets[0].id if isinstance(s, ast.Assign) and len(s.targets) == 1 \
            and isinstance(s.targets[0], ast.Name) else None
        tensor, made = name and self.is_tensor(value), name and self.made(value)
        bound = stores(s)
        self.tensors -= bound
        self.fresh -= bound
        self.numbers -= bound
        self.shared -= bound - shares  # a name bound anew shares what its new value shares
        if name and number_literal(value):
            self.numbers.add(name)
        if tensor:
            self.tensors.add(name)
        if made:
            self.fresh.add(name)
        elif name and shares:  # `c = centers[y[i]]`: a view, whatever `centers` is
            self.shared.add(name)

    def made(self, e: ast.expr) -> bool:
        """A new tensor, made by an op of the iteration (or a view of one nothing else sees)."""
        if isinstance(e, (ast.BinOp, ast.UnaryOp, ast.Compare)):
            return self.is_tensor(e)
        if not isinstance(e, ast.Call):
            return False
        if call_op(e, self.ctx).aliases and method_name(e, self.ctx):
            return not isinstance(e.func.value, ast.Name) and self.made(e.func.value)
        # a leaf made with ``requires_grad=``: writing into it raises, its functional form not
        return makes_new_tensor(e, self.ctx) and not any(k.arg == "requires_grad"
                                                         for k in e.keywords) \
            or float_filled(e, self.ctx)

    def is_tensor(self, e: ast.expr) -> bool:
        if isinstance(e, ast.Name):
            return e.id in self.tensors
        if isinstance(e, (ast.Subscript, ast.Attribute)):
            return not (isinstance(e, ast.Attribute) and e.attr in ops.METADATA_ATTRIBUTES) \
                and self.is_tensor(e.value)
        if isinstance(e, ast.BinOp):
            return self.is_tensor(e.left) or self.is_tensor(e.right)
        if isinstance(e, (ast.UnaryOp, ast.Compare)):
            return any(self.is_tensor(c) for c in ast.iter_child_nodes(e))
        if isinstance(e, ast.Call):
            op = call_op(e, self.ctx)
            return op.aten is not None and not (op.shape_query or op.host_number or op.host)
        return False

def aliases(e: ast.expr, ctx: PassContext) -> set[str]:
    """Names whose memory the value of ``e`` may share (a view, the value itself, a container
    holding it)."""
    if isinstance(e, ast.Name):
        return {e.id}
    if isinstance(e, (ast.Constant, ast.BinOp, ast.UnaryOp, ast.Compare)) \
            or is_shape_query(e, ctx):
        return set()
    if isinstance(e, (ast.Subscript, ast.Attribute, ast.Starred)):
        return aliases(e.value, ctx)
    if isinstance(e, ast.Call) and call_op(e, ctx).aten is not None \
            and not call_op(e, ctx).aliases:  # a new tensor, or a number
        return set()
    if isinstance(e, (ast.Call, ast.Tuple, ast.List, ast.Set, ast.IfExp, ast.BoolOp)):
        return set().union(*(aliases(c, ctx) for c in ast.iter_child_nodes(e)
                              if isinstance(c, ast.expr)))
    return loads(e)


def _inplace(call: ast.Call, ctx: PassContext) -> bool:
    meth = method_name(call, ctx)
    return bool(meth) and ops.is_inplace(meth) and ops.effect(None, meth) is None


def _inplace_chain(call: ast.expr | None, ctx: PassContext) -> list[ast.Call]:
    """The in-place calls of ``m.mul_(a).add_(b)``, outermost first ([] unless ``call`` is one)."""
    chain = []
    while isinstance(call, ast.Call) and _inplace(call, ctx):
        chain.append(call)
        call = call.func.value
    return chain


def _functional(call: ast.Call, at: ast.AST) -> str:
    name = call.func.attr[:-1]
    if not callable(getattr(torch.Tensor, name, None)):
        raise Unsupported(f"`{unparse(call.func)}(...)`: an in-place op without a functional "
                          "form", at.lineno)
    return name


_SIMPLE = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Return)


def _post_order(node: ast.AST):
    """The nodes of ``node``, each after what it evaluates first (an assignment's value before
    its targets)."""
    children = [node.value, *node.targets] if isinstance(node, ast.Assign) \
        else list(ast.iter_child_nodes(node))
    for child in children:
        yield from _post_order(child)
    yield node


def _path_to(s: ast.stmt, node: ast.AST) -> list[ast.AST]:
    """The nodes from ``s`` down to ``node``."""
    if s is node:
        return [s]
    for child in ast.iter_child_nodes(s):
        if path := _path_to(child, node):
            return [s] + path
    return []


def _evaluated_before(parent: ast.AST,
                      child: ast.AST) -> list[tuple[ast.AST, ast.expr]] | None:
    """The children of ``parent`` evaluated before ``child``, each with the node holding it (a
    keyword argument's value: the keyword); None where ``child`` is
    evaluated under a condition (a branch of ``if``-``else``, ``and``/``or``, a chained
    comparison, a comprehension, a lambda) or in an order its fields do not follow (a dict)."""
    if isinstance(parent, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
                           ast.GeneratorExp, ast.Dict, ast.JoinedStr, ast.comprehension)) \
            or isinstance(parent, (ast.IfExp, ast.BoolOp, ast.Compare)) \
            and child is not _first(parent) \
            and not (isinstance(parent, ast.Compare) and child is parent.comparators[0]):
        return None
    order = [parent.value, *parent.targets] if isinstance(parent, ast.Assign) \
        else list(ast.iter_child_nodes(parent))
    return [(c, c.value) if isinstance(c, ast.keyword) else (parent, c)
            for c in order[:order.index(child)] if isinstance(c, (ast.expr, ast.keyword))]


def _first(e: ast.expr) -> ast.expr:
    return e.test if isinstance(e, ast.IfExp) else \
        e.values[0] if isinstance(e, ast.BoolOp) else e.left


def _dotted(e: ast.expr) -> bool:
    """``torch.nn.functional``: a module attribute (no call, no index)."""
    return isinstance(e, ast.Name) or isinstance(e, ast.Attribute) and _dotted(e.value)


def _replace(parent: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for field, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, field, new)
        elif isinstance(value, list) and old in value:  # nodes compare by identity
            value[value.index(old)] = new
