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
from .ast_tools import PassContext, Transformer, replace
from .loops.loop_dataflow import call_op, method_name
from .loops.module_loss_calls import loss_class, plain_loss_module
from .loops.runtime_checks import is_as_written, is_vectorized_guard
from .op_facts import MODULE_LOSSES


# What a function's code names when it may call such an op: the op's names, and the classes of
# the ``nn`` modules whose call is the op (``optimize_called_helpers`` follows the helpers and
# methods that name one, as it follows those with a loop).
NAMES = frozenset({n for s in ops.REGISTRY if s.dense_fn for n in s.names}
                  | {c for c, (f, _) in MODULE_LOSSES.items() if ops.by_call(
                      f"torch.nn.functional.{f}", None).dense_fn})


def transform(tree: ast.Module, ctx: PassContext) -> ast.Module:
    _Calls(ctx).visit(tree)
    return tree


class _Calls(Transformer):
    def __init__(self, ctx: PassContext):
        self.ctx = ctx

    def visit_If(self, node: ast.If) -> ast.AST:
        # A loop the vectorizer keeps as written (the fallback of a vectorized form, or a fold
        # that would promote) stays as written: only the other branch is this pass's.
        if is_vectorized_guard(node):
            node.body = self.statements(node.body)
            return node
        if is_as_written(node):
            node.orelse = self.statements(node.orelse)
            return node
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        op = call_op(node, self.ctx)
        if op.dense_fn is not None and method_name(node, self.ctx) is None:
            fn = ast.Name(self.ctx.bind(op.dense_fn, op.dense_fn.__name__), ast.Load())
            return ast.copy_location(ast.Call(ast.copy_location(fn, node.func), node.args,
                                              node.keywords), node)
        name = loss_class(node, self.ctx)
        if name is None:
            return node
        function, settings = MODULE_LOSSES[name]
        dense = ops.by_call(f"torch.nn.functional.{function}", None).dense_fn
        if dense is None:
            return node
        keywords = "".join(f", {k}=m.{k}" for k in settings)
        return replace(f"form(a, b{keywords}) if plain(m, torch.nn.{name}) else call", node,
                       self.ctx.torch_name, form=self.ctx.bind(dense, dense.__name__),
                       a=node.args[0], b=node.args[1], m=node.func, call=node,
                       plain=self.ctx.bind(plain_loss_module, "plain_loss_module"))
