"""Stage: an item of a list of ``nn.Linear`` modules at the loop index, called, becomes
``F.linear`` with that item's weight and bias, read from the stacked weights and biases.

Prediction heads per step or per level are kept as ``nn.ModuleList([nn.Linear(c, z) for _ in
range(T)])`` and called one per iteration (CPC's ``self.Wk[i](c_t)``). The call has no batched
form, but the stacked parameters do::

    for i in range(T):                          _Wk_weight, _Wk_bias = linear_parameters(self.Wk)
        linear = self.Wk[i]           ->        for i in range(T):      (the plan's body)
        pred[i] = linear(c_t)                       pred[i] = torch.nn.functional.linear(
                                                        c_t, _Wk_weight[i], _Wk_bias[i])

Taken: ``M[i](x)`` with ``M`` a name or attribute the body does not bind and ``i`` the loop
index, or ``f(x)`` with ``f`` bound once in the body to ``M[i]`` and read only in such calls
(not after the loop); one positional argument. ``linear_parameters`` runs in front of the
guard, at run time: ``M`` must be an ``nn.ModuleList`` or ``nn.Sequential`` whose every item
is exactly an ``nn.Linear`` that calling would run as written (``plain_loss_module``: no hook,
no own ``forward``), all with a bias and weights of one shape, dtype and device; else it gives
``None`` and the loop runs as written. Weights that are evenly spaced rows of one tensor (a
``functional_call`` with every head's weights in one tensor) are stacked as a view of it
(``stacked_views``): no copy forward, no full-size zero-filled gradient per row backward.
``nn.Linear.forward`` is ``F.linear(x, weight, bias)``: the same values, and the gradients
reach each module's parameters through the stack.
"""
from __future__ import annotations

import ast
from typing import Any

import torch

from ..ast_tools import PassContext, Transformer, clone, is_name, is_pure, walk
from ..stacked_views import stack_items
from .module_loss_calls import plain_loss_module
from .plan import LoopPlan

_CONTAINERS = (torch.nn.ModuleList, torch.nn.Sequential)


def linear_parameters(modules: Any) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
    """The stacked weights and biases of ``modules``, a list of plain ``nn.Linear`` modules
    with biases and one weight shape, dtype and device; ``(None, None)`` for anything else."""
    if type(modules) not in _CONTAINERS or len(modules) == 0:
        return None, None
    items = list(modules)
    first = items[0]
    if not all(plain_loss_module(m, torch.nn.Linear) and m.bias is not None
               and m.weight.shape == first.weight.shape and m.weight.dtype == first.weight.dtype
               and m.weight.device == first.weight.device and m.bias.dtype == first.weight.dtype
               for m in items):
        return None, None
    return stack_items(tuple(m.weight for m in items)), stack_items(tuple(m.bias for m in items))


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    index = plan.iteration.index
    bound = {n.id for s in plan.body for n in walk(s)
             if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    # an object the loop assigns an attribute of (`self.heads = ...`) may hold other modules
    bound |= {n.value.id for s in plan.body for n in walk(s) if isinstance(n, ast.Attribute)
              and isinstance(n.ctx, ast.Store) and isinstance(n.value, ast.Name)}
    aliases = _aliases(plan, index, bound)
    linears = _Linears(plan, ctx, index, bound, aliases)
    body = [linears.visit(s) for s in clone(plan.body)]
    # taken only when every read of an alias was such a call: its binding then goes
    if not linears.stacked or any(isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
                                  and n.id in aliases for s in body for n in walk(s)):
        return plan
    plan.body = [s for s in body if not _binds(s, aliases)]
    plan.prelude += linears.prelude
    for check in linears.checks:
        plan.checks.add(check)
    return plan


def _aliases(plan: LoopPlan, index: str, bound: set[str]) -> dict[str, ast.expr]:
    """``f = M[i]`` at the body's top level, ``f`` bound once and not read after the loop."""
    found = {}
    for s in plan.body:
        if _assigns_name(s) and _item(s.value, index, bound) \
                and s.targets[0].id not in plan.live_after:
            found[s.targets[0].id] = s.value.value
    stores = [n.id for s in plan.body for n in walk(s)
              if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)]
    return {name: m for name, m in found.items() if stores.count(name) == 1}


def _item(node: ast.expr, index: str, bound: set[str]) -> bool:
    """``M[i]``: ``M`` a name or attribute the body does not bind."""
    return isinstance(node, ast.Subscript) and is_name(node.slice, index) \
        and isinstance(node.value, (ast.Name, ast.Attribute)) and is_pure(node.value) \
        and not ({n.id for n in walk(node.value) if isinstance(n, ast.Name)} & bound)


def _assigns_name(s: ast.stmt) -> bool:
    return isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)


def _binds(s: ast.stmt, aliases: dict[str, ast.expr]) -> bool:
    return _assigns_name(s) and s.targets[0].id in aliases


class _Linears(Transformer):
    def __init__(self, plan: LoopPlan, ctx: PassContext, index: str, bound: set[str],
                 aliases: dict[str, ast.expr]):
        self.plan, self.ctx, self.index, self.bound, self.aliases = plan, ctx, index, bound, aliases
        self.stacked: dict[str, tuple[str, str]] = {}  # unparsed M -> (weights, biases)
        self.prelude: list[ast.stmt] = []
        self.checks: list[ast.expr] = []

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        f = node.func
        modules = self.aliases.get(f.id) if isinstance(f, ast.Name) else \
            f.value if _item(f, self.index, self.bound) else None
        if modules is None or len(node.args) != 1 or node.keywords \
                or isinstance(node.args[0], ast.Starred):
            return node
        weight, bias = self._stacked(modules)
        return self.plan.sub("torch.nn.functional.linear(x, w[i], b[i])", x=node.args[0],
                             w=weight, b=bias, i=ast.Name(self.index, ast.Load()))

    def _stacked(self, modules: ast.expr) -> tuple[str, str]:
        key = ast.unparse(modules)
        if key not in self.stacked:
            stem = key.split(".")[-1]
            weight, bias = self.ctx.namer.new(f"{stem}_weight"), self.ctx.namer.new(f"{stem}_bias")
            self.prelude += self.plan.sub(
                "w, b = stack(m)", w=weight, b=bias, m=clone(modules),
                stack=self.ctx.bind(linear_parameters, "linear_parameters"))
            self.checks.append(self.plan.sub("w is not None", w=ast.Name(weight, ast.Load())))
            self.stacked[key] = weight, bias
        return self.stacked[key]
