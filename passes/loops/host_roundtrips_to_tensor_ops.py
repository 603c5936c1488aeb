"""Host round trips on loop-varying values become tensor ops, inside a loop body being vectorized.

Under ``torch.vmap`` a per-iteration value is a batched tensor: it cannot become a Python number.
Only expressions that vary with the loop index are rewritten (``OpSpec.host*`` facts)::

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
from .. import ops
from ..ast_tools import PassContext, Transformer, replace
from .loop_dataflow import call_op, depends, method_name, resolve_call, variant_names
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
                and ops.by_call(resolve_call(value.func, self.ctx), None).host_pair
                and any(isinstance(a, ast.Name) and a.id == target.id for a in value.args)):
            value.args = [self.visit(a) for a in value.args]
            return node
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)  # innermost first: int(t[j].item())
        if node.keywords or not depends(node, self.variant, self.ctx):
            return node
        args, op = node.args, call_op(node, self.ctx)
        if method_name(node, self.ctx) is not None:
            if op.host is None or args:
                return node
            return _kind(self._sub(op.host, node, e=node.func.value), op)
        math = ops.by_host_math(resolve_call(node.func, self.ctx))
        if math.functions and len(args) == 1:
            fn = self._sub(math.functions[0], node)
            return self._sub("fn(e.detach() * 1.0)", node, fn=fn, e=args[0])
        if op.host is not None and len(args) == 1 \
                and not isinstance(args[0], (ast.List, ast.Tuple, ast.GeneratorExp, ast.ListComp)):
            return _kind(self._sub(op.host, node, e=args[0]), op)
        if op.host_pair is not None and len(args) == 2:
            return self._sub(op.host_pair, node, a=args[0], b=args[1])
        return node


def _kind(node: ast.expr, op: ops.OpSpec) -> ast.expr:
    """Remember which Python number the original produced here (``NUMBER_FOLD``)."""
    ast_marks.put(node, ast_marks.HOST_NUMBER, op.host_number)
    return node


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    """Finds the names that vary with the iteration (``plan.variant``), then rewrites."""
    it = plan.iteration
    seeds = {it.index} | {name for name, _ in it.elements}
    plan.variant = variant_names(plan.body, seeds, ctx)
    plan.body = rewrite(plan.body, plan.variant, ctx)
    return plan
