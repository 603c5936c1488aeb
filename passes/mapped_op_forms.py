"""Pass: in a helper that runs under ``torch.vmap`` at every call, ops whose gradients differ
under vmap, or whose batching rule is slow, call the registry's ``vmap_fn`` there.

A vectorized loop's vmapped body calls the registry's ``vmap_fn`` of such an op
(``outline_body``; ``bce_with_logits``: eager's gradient at an infinite logit, and about 1.2x
faster than functorch's composite, forward and backward). A helper the body calls runs under the same vmap:
``optimize_called_helpers`` rewrites it for that (``PassContext.mapped``), and this pass gives
its calls the same forms::

    def focal(x, t, gamma=2.0):                          def focal(x, t, gamma=2.0):
        logpt = F.binary_cross_entropy_with_logits(  ->      logpt = _binary_cross_entropy_with_logits(
            x, t, reduction="none")                              x, t, reduction="none")
        return ((1 - torch.exp(-logpt)) ** gamma                 return ...
                * logpt).mean()

(the same arguments; a method spelling is left as it is). A function rewritten for calls
outside vmap is left as it is: the ``vmap_fn`` forms are slower there.
"""
from __future__ import annotations

import ast

from . import ops
from .ast_tools import PassContext, Transformer, called_through
from .loops.loop_dataflow import call_op, method_name

# What a function's code names when it may call such an op (``optimize_called_helpers``
# follows, from a vmapped body, the helpers that name one).
NAMES = frozenset(n for s in ops.REGISTRY if s.vmap_fn for n in s.names)


def transform(tree: ast.Module, ctx: PassContext) -> ast.Module:
    return EagerGradients(ctx).visit(tree) if ctx.mapped else tree


class EagerGradients(Transformer):
    """``f(...)`` -> ``vmap_fn(...)``, the same arguments, for the ops with a ``vmap_fn``."""

    def __init__(self, ctx: PassContext):
        self.ctx = ctx

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        op = call_op(node, self.ctx)
        if op.vmap_fn is None or method_name(node, self.ctx) is not None:
            return node
        return called_through(node, op.vmap_fn, self.ctx)
