"""Pass: the dtype queries of vectorized code stay in the compiled graph.

Vectorized code casts values to the dtypes the original's operations have: a number or 0-d
operand the loop does not change, read under a tensor condition, promotes weakly, but its
masked safe value ``torch.where(p, a, 1)`` would promote like a tensor, so it is cast to
``torch.result_type(x, a)`` (``tensor_branches_to_where``); values ``index_put_`` adds into a
tensor are cast where ``torch.can_cast`` allows (``effects_to_outputs``); an accumulator whose
dtype a fold would change runs the loop as written (``promoting_folds_run_as_written``). Dynamo
cannot put an op that returns a dtype or a bool, not a tensor, in its graph: each call is a graph
break, and inside ``torch.vmap`` the whole vmapped body then runs eagerly, so the compiled
rewrite gains nothing over the eager one.

In each vectorized form (the check and body of ``if <check>: <vectorized> else: <original>``),
a call of a query of ``QUERIES`` becomes a call of its helper, bound into the code: in eager, the
torch function itself; under Dynamo, torch's Python reference of the same rule
(``torch._prims_common``), which reads only dtypes, ranks and number types, so Dynamo evaluates
it while tracing, a constant of the graph::

    x / torch.where(p, beta, 1).to(torch.result_type(x, beta))
        ->  x / torch.where(p, beta, 1).to(_result_type(x, beta))

The original loop kept as the else branch is left as written, as is code outside the vectorized
forms (a function the passes do not change stays unchanged).
"""
from __future__ import annotations

import ast

from .ast_tools import PassContext, Transformer
from .dtype_queries import can_cast, result_type
from .loops.loop_dataflow import resolve_call
from .loops.runtime_checks import is_vectorized_guard


# The torch function (its name as ``resolve_call`` gives it) -> its traceable helper.
QUERIES = {"torch.result_type": result_type, "torch.can_cast": can_cast}


def transform(tree: ast.Module, ctx: PassContext) -> ast.Module:
    return _Queries(ctx).visit(tree)


class _Queries(Transformer):
    def __init__(self, ctx: PassContext):
        self.ctx = ctx
        self.vectorized = False  # in a vectorized form (not in the original it keeps)

    def visit_If(self, node: ast.If) -> ast.AST:
        if not is_vectorized_guard(node):
            return self.generic_visit(node)
        outer, self.vectorized = self.vectorized, True
        node.test = self.visit(node.test)
        node.body = [self.visit(s) for s in node.body]
        self.vectorized = False
        node.orelse = [self.visit(s) for s in node.orelse]
        self.vectorized = outer
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        helper = QUERIES.get(resolve_call(node.func, self.ctx)) if self.vectorized else None
        if helper is not None and not node.keywords:
            name = ast.Name(self.ctx.bind(helper, helper.__name__), ast.Load())
            node.func = ast.copy_location(name, node.func)
        return node
