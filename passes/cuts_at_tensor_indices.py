"""Pass: every item but the one at an index parameter, ``torch.cat((x[:j], x[j + 1:]))``, is a
gather when the index is a tensor, which ``torch.vmap`` maps.

A helper called from a loop body gets the loop's index as an argument (GE2E's
``calc_new_centroids(dvecs, centroids, spkr, utt)`` drops utterance ``utt`` of speaker ``spkr``);
when the loop is mapped with ``torch.vmap`` the index is a 0-d tensor batched over the
iterations, and a slice bound of it needs its Python value, which vmap refuses (``.item()``).
For ``0 <= j < n`` (``n`` the size of the sliced dim) the two slices keep the ``n - 1``
positions ``q + (q >= j)``, ``q`` counting ``0 .. n - 2``, in order (``without_item``)::

    def calc(x, s, j):                                def calc(x, s, j):
        e = torch.cat((x[s, :j], x[s, j + 1:]))  ->      e = (_without_item(x[s], j) if
                                                              _index_tensors(j, s) else
                                                              torch.cat((x[s, :j], x[s, j + 1:])))

Same values and gradients: each kept item is read once, at the same position. A ``j`` outside
``[0, n)`` cannot be checked on the host under vmap; its positions are made out of bounds
(``n``), so the indexing raises and the runtime runs the original function. The gather is taken
when ``j`` is a 0-d integer tensor and each index before the slices an int or a 0-d integer
tensor (each drops its dim, as it does before the slices); else (a Python int: the usual call)
the slices run as written.

Taken: ``torch.cat`` of exactly the two slices, in this order, along dim 0, of a name,
attribute or subscript by names and numbers, with only single indices (names, int literals)
before them, where ``j`` is a parameter of the function it never rebinds; in the function's own
statements, not in its loops (whose stages handle their cuts) or nested functions.
"""
from __future__ import annotations

import ast

import torch

from .ast_tools import PassContext, Transformer, clone, replace, walk
from .loops.excluded_items_to_masks import _slice, two_slices_joined
from .loops.loop_dataflow import stores_in


def without_item(x: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """``torch.cat((x[:j], x[j + 1:]))`` for a 0-d integer tensor ``j`` in ``[0, len(x))``;
    for another ``j`` the indexing raises (no position is out of range when ``len(x) < 2``:
    the slices as written)."""
    n = x.shape[0]
    if n < 2:
        return torch.cat((x[:j], x[j + 1:]))
    q = torch.arange(n - 1, device=x.device)
    return x[torch.where((j >= 0) & (j < n), q + (q >= j), n)]


def index_tensors(j: object, *leading: object) -> bool:
    """``j`` is a 0-d integer tensor and every index before the slices an int or one."""
    return _integer_scalar(j) and all(type(a) is int or _integer_scalar(a) for a in leading)


def _integer_scalar(a: object) -> bool:
    return isinstance(a, torch.Tensor) and a.dim() == 0 and a.dtype != torch.bool \
        and not a.dtype.is_floating_point and not a.dtype.is_complex


def transform(tree: ast.Module, ctx: PassContext) -> ast.Module:
    func = tree.body[0]
    args = func.args
    params = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
    cuts = _Cuts(params - stores_in(func.body), ctx)
    func.body = [cuts.visit(s) for s in func.body]
    return tree


class _Cuts(Transformer):
    def __init__(self, indices: set[str], ctx: PassContext):
        self.indices, self.ctx = indices, ctx

    def visit_For(self, node: ast.AST) -> ast.AST:
        return node  # a loop's cuts are its stages' (or it runs as written)

    visit_AsyncFor = visit_While = visit_FunctionDef = visit_AsyncFunctionDef = visit_For
    visit_Lambda = visit_ClassDef = visit_For

    def visit_Call(self, call: ast.Call) -> ast.expr:
        self.generic_visit(call)
        if not self.indices:
            return call
        pair = two_slices_joined(call, self.ctx, frozenset(n.id for n in walk(call)
                                                           if isinstance(n, ast.Name)))
        if pair is None:
            return call
        before, after = pair
        j = next((j for j in sorted(self.indices) if _slice(before.slice, None, j)), None)
        if j is None or not _slice(after.slice, j, None):
            return call
        check = replace("check(j)", loc=call, check=self.ctx.bind(index_tensors, "index_tensors"),
                        j=ast.Name(j, ast.Load()))
        check.args += [clone(a) for a in _leading(before.value)]
        return replace("without(x, j) if check else call", loc=call, check=check, call=call,
                       without=self.ctx.bind(without_item, "without_item"),
                       x=clone(before.value), j=ast.Name(j, ast.Load()))


def _leading(row: ast.expr) -> list[ast.expr]:
    """The names indexing ``row`` last: ``a, b`` of ``x[a, b]``, which ``two_slices_joined``
    takes as the single indices before the slices of ``x[a, b, :j]``."""
    if not isinstance(row, ast.Subscript):
        return []
    entries = row.slice.elts if isinstance(row.slice, ast.Tuple) else [row.slice]
    return [e for e in entries if isinstance(e, ast.Name)]
