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
    (e.sum() + eps).log_()            ->     (e.sum() + eps).log()      (a temporary: nothing else sees it)

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
from ..ast_tools import PassContext, Transformer, unparse
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
            if new == [s]:
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
        """``s`` without in-place writes (or ``s`` itself)."""
        if not self.masked_only:
            _Temporaries(self).visit(s)
        target = s.targets[0] if isinstance(s, ast.Assign) and len(s.targets) == 1 else \
            s.target if isinstance(s, ast.AugAssign) else None
        if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
            name = target.value.id
            masked = isinstance(s, ast.Assign) and number_literal(s.value) \
                and is_boolean(target.slice, self.plan.masks, self.ctx)
            if (self.masked_only and not masked) or not self.writable(name, s):
                return [s]
            if masked:
                return self.masked_write(name, target.slice, s.value)
            value = s.value if isinstance(s, ast.Assign) else \
                ast.BinOp(ast.Subscript(target.value, target.slice, ast.Load()), s.op, s.value)
            at = self.ctx.namer.new(f"{name}_at")
            return self.plan.sub(rules.FUNCTIONAL_WRITE, p=at, t=name, k=target.slice, v=value)
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
            value = chain[-1].func.value
            for link in reversed(chain):  # innermost first: each link writes m in its dtype
                link.func.attr = _functional(link, s)
                link.func.value = value
                value = self.kept_dtype(name, link)
            return [ast.copy_location(ast.Assign([ast.Name(name, ast.Store())], value), s)]
        return [s]

    def kept_dtype(self, name: str, value: ast.expr) -> ast.expr:
        """``value``, written into the tensor ``name`` in place, in its dtype (or the write's
        error): ``inplace_results.inplace_result``."""
        helper = self.ctx.bind(inplace_result, "inplace_result")
        return ast.copy_location(ast.Call(ast.Name(helper, ast.Load()),
                                          [ast.Name(name, ast.Load()), value], []), value)

    def masked_write(self, name: str, mask: ast.expr, value: ast.expr) -> list[ast.stmt]:
        """``t[m] = v`` (``v`` a number) as ``t = torch.where(m, v, t)``, ``m`` shaped as
        indexing reads it; a comparison of Python values is a Python bool, made a tensor."""
        made = mask if self.is_tensor(mask) else self.plan.sub("torch.as_tensor(m)", m=mask)
        return self.plan.sub("k = m.reshape(shape[m.shape, t.shape])\nt = torch.where(k, v, t)",
                             k=self.ctx.namer.new(f"{name}_keep"), m=made, t=name, v=value,
                             shape=self.ctx.bind(WRITTEN_MASK, "written_mask"))

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


class _Temporaries(Transformer):
    """``(a + b).log_()`` -> ``(a + b).log()``: the receiver is a new tensor nothing else sees."""

    def __init__(self, writes: Writes):
        self.writes = writes

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if _inplace(node, self.writes.ctx) and self.writes.made(node.func.value):
            node.func.attr = _functional(node, node)
        return node


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
