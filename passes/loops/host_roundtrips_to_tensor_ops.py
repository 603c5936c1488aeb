"""Host round trips on loop-varying values become tensor ops, inside a loop body being vectorized.

Under ``torch.vmap`` a per-iteration value is a batched tensor: it cannot become a Python number.
Only expressions that vary with the loop index are rewritten (``loop_rules.HOST_*`` tables)::

    int(labels[i])              ->  labels[i].long()
    float(w[i]) / t[i].item()   ->  w[i].detach() * 1.0 / t[i].detach()
    t[i].tolist()               ->  t[i].detach()
    math.log(p[i])              ->  torch.log(p[i].detach() * 1.0)
    min(a[i], b)  /  max(...)   ->  torch.where(b < a[i], b, a[i])   (Python's pick, ties too)
    sum(x[i]) / min(x[i])       ->  x[i].sum(0) / x[i].amin(0)       (builtins iterate dim 0)

Values the original pulled to the host carried no gradient, hence ``detach``. ``abs(t)`` needs
no rewrite (it is ``t.abs()``).
"""
from __future__ import annotations

import ast

from .. import ast_marks
from .. import loop_rules as rules
from ..ast_tools import PassContext, Transformer, replace
from .loop_dataflow import depends, method_name, resolve_call, variant_names
from .plan import LoopPlan


def rewrite(stmts: list[ast.stmt], variant: set[str], ctx: PassContext) -> list[ast.stmt]:
    """``stmts`` with every host round trip on a loop-varying value replaced (in place)."""
    tr = _HostToTensor(variant, ctx)
    return [tr.visit(s) for s in stmts]


class _HostToTensor(Transformer):
    def __init__(self, variant: set[str], ctx: PassContext):
        self.variant = variant
        self.ctx = ctx

    def _sub(self, template: str, node: ast.AST, **subs: ast.AST) -> ast.expr:
        return replace(template, loc=node, torch_name=self.ctx.torch_name, **subs)

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        # `s = max(s, e)` is a running max the vectorizer folds with amax: keep the builtin.
        value, target = node.value, node.targets[0]
        if (isinstance(value, ast.Call) and isinstance(target, ast.Name)
                and resolve_call(value.func, self.ctx) in rules.HOST_BUILTIN_PAIR
                and any(isinstance(a, ast.Name) and a.id == target.id for a in value.args)):
            value.args = [self.visit(a) for a in value.args]
            return node
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)  # innermost first: int(t[j].item())
        if node.keywords or not depends(node, self.variant, self.ctx):
            return node
        args = node.args
        meth = method_name(node, self.ctx)
        if meth in rules.HOST_METHODS and not args:
            return _kind(self._sub(rules.HOST_METHODS[meth], node, e=node.func.value), meth)
        name = resolve_call(node.func, self.ctx)
        if name in rules.HOST_CALLS and len(args) == 1:
            return _kind(self._sub(rules.HOST_CALLS[name], node, e=args[0]), name)
        if name in rules.HOST_MATH and len(args) == 1:
            fn = self._sub(rules.HOST_MATH[name], node)
            return self._sub("fn(e.detach() * 1.0)", node, fn=fn, e=args[0])
        if name in rules.HOST_BUILTIN_PAIR and len(args) == 2:
            return self._sub(rules.HOST_BUILTIN_PAIR[name], node, a=args[0], b=args[1])
        if name in rules.HOST_BUILTIN_ITER and len(args) == 1 \
                and not isinstance(args[0], (ast.List, ast.Tuple, ast.GeneratorExp, ast.ListComp)):
            return self._sub(rules.HOST_BUILTIN_ITER[name], node, e=args[0])
        return node


def _kind(node: ast.expr, host: str) -> ast.expr:
    """Remember which Python number the original produced here (``NUMBER_FOLD``)."""
    ast_marks.put(node, ast_marks.HOST_NUMBER, rules.HOST_NUMBER_KIND.get(host))
    return node


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    """Finds the names that vary with the iteration (``plan.variant``), then rewrites."""
    it = plan.iteration
    seeds = {it.index} | {name for name, _ in it.elements}
    plan.variant = variant_names(plan.body, seeds, ctx)
    plan.body = rewrite(plan.body, plan.variant, ctx)
    return plan
