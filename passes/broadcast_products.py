"""Pass: the ops with a faster form for some operands call it, anywhere in the function
but in the loops kept as written.

An op whose registry entry has a ``dense_fn`` (``ops.OpSpec``) is called through it, with the
same arguments; the form runs the op itself for the operands it does not speed up. The cosine
similarity of every row with every other, as SimCLR's NT-Xent and its many copies write it, is
the case: ATen expands both operands to [N, N, D] before the product, where one contraction of
the normalized operands makes the [N, N] result (``passes/cosine_products.py``: the same values
within rounding of the sum, the same gradients, NaN and inf)::

    F.cosine_similarity(z.unsqueeze(1), z.unsqueeze(0), dim=2)
        ->  _broadcast_cosine_similarity(z.unsqueeze(1), z.unsqueeze(0), dim=2)

A call of an ``nn`` module attribute of such an op (``self.similarity_f = nn.CosineSimilarity(
dim=2)``, resolved as ``module_loss_calls`` resolves loss modules) calls the form with the
module's settings when the object is a plain module of that class, else the module::

    self.similarity_f(a, b)
        ->  (_broadcast_cosine_similarity(a, b, dim=self.similarity_f.dim,
                                              eps=self.similarity_f.eps)
             if _plain_loss_module(self.similarity_f, torch.nn.CosineSimilarity)
             else self.similarity_f(a, b))
"""
from __future__ import annotations

import ast

from . import ops
from .ast_tools import PassContext, Transformer, called_through, replace
from .loops.loop_dataflow import call_op, method_name
from .loops.module_loss_calls import MODULE_CALLS, functional_call, loss_class, plain_loss_module
from .loops.runtime_checks import as_written_branch
from .op_facts import MODULE_LOSSES


def _module_op(name: str) -> ops.OpSpec:
    """The registry's entry for the functional op a ``MODULE_CALLS`` module calls."""
    return ops.by_call(f"torch.nn.functional.{MODULE_CALLS[name][0]}", None)


# What a function's code names when it may call such an op: the op's names, and the classes of
# the ``nn`` modules whose call is the op (``optimize_called_helpers`` follows the helpers and
# methods that name one, as it follows those with a loop).
NAMES = frozenset({n for s in ops.REGISTRY if s.dense_fn for n in s.names}
                  | {c for c in MODULE_LOSSES if _module_op(c).dense_fn})


def transform(tree: ast.Module, ctx: PassContext) -> ast.Module:
    _Calls(ctx).visit(tree)
    return tree


class _Calls(Transformer):
    def __init__(self, ctx: PassContext):
        self.ctx = ctx

    def visit_If(self, node: ast.If) -> ast.AST:
        # A loop the vectorizer keeps as written (the fallback of a vectorized form, or a fold
        # that would promote) stays as written: only the other branch is this pass's.
        kept = as_written_branch(node)
        if kept is None:
            return self.generic_visit(node)
        if kept is node.orelse:
            node.body = self.statements(node.body)
        else:
            node.orelse = self.statements(node.orelse)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        op = call_op(node, self.ctx)
        if op.dense_fn is not None and method_name(node, self.ctx) is None:
            return called_through(node, op.dense_fn, self.ctx)
        name = loss_class(node, self.ctx)
        dense = _module_op(name).dense_fn if name else None
        if dense is None:
            return node
        form = functional_call(name, self.ctx.bind(dense, dense.__name__))
        return replace(f"{form} if plain(m, torch.nn.{name}) else call", node,
                       self.ctx.torch_name, a=node.args[0], b=node.args[1], m=node.func,
                       call=node, plain=self.ctx.bind(plain_loss_module, "plain_loss_module"))

