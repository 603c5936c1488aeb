"""Marks the AST passes leave on nodes for later passes: declared here and nowhere else.

A mark is an attribute of the node; ``clone`` and ``replace`` copy it with the node (it is never
an AST node or a list). Read and set marks through ``get`` and ``put``.
"""
from __future__ import annotations

import ast
from typing import Any

# str on an expression: the Python number ("int" or "float") the original computed there, where
# the rewrite computes a tensor (``x.item()`` -> ``x.detach()``): accumulated values fold back.
HOST_NUMBER = "host_number"
# set[str] on a vectorized loop's guard: the lists it binds to their stacked items, whose
# consumers an outer loop inlining it reads directly.
BOUND_LISTS = "bound_lists"
# bool on a boolean-mask selection ``x[m]`` masked_selections_to_where converts: the loop check
# does not refuse it.
WHERE_CONVERTED = "where_converted"
# str on the dense stand-in ``torch.where(_keep, x, False)`` of a selection ``x[m]`` that
# masked_selections_to_where makes: the name of the mask ``m`` (``_keep`` is ``m`` reshaped).
SELECTS = "selects"
# bool on a count of a selection (``len(x[m])``, ``x[m].numel()``) it converts: a tensor that
# varies per iteration, no shape query (a condition on it is a tensor condition).
SELECTION_COUNT = "selection_count"
# bool on a comprehension the rewrite wrote (``stack_tensor_lists``'s check of a list's items):
# not the user's, so not in the report.
GENERATED = "generated"
# str on a statement the rewrite made of one of the user's in another function (a method's,
# inlined with fresh names): that statement as the user wrote it, for reasons to quote.
WRITTEN_AS = "written_as"
# frozenset[str] on a statement: the targets of its walrus expressions (a cache).
# int on the ``if <check>: <batched> else: <vmapped>`` by which a vectorized loop picks its form at
# run time: the user's line of that loop (an outer loop's reason names it, not the check).
FORMS_OF = "forms_of"
WALRUS_TARGETS = "walrus_targets"
# str on an inner loop's fold of an accumulator every update of which is conditional: the
# counter of the iterations that selected one, by which the outermost vectorized loop guards its
# own fold (``fold_accumulators``).
SELECTED_BY = "selected_by"
# ast.expr on such a fold where only conditions on loop indices select: the Python test, on the
# outer loops' indices, of whether an iteration selected one (no device read).
SELECTED_WHEN = "selected_when"
# True or str on a ``v.sum(0)`` over a loop's axis a loop pass emits: ``loop_sums_keep_dtypes``
# makes it keep narrow integer dtypes (str: the name it is added onto, whose dtype it takes too),
# after the passes that match ``.sum(0)``.
LOOP_SUM = "loop_axis_sum"
# True on a statement of an inner loop's vectorized form inlined into the outer body: an
# accumulator update there adds the inner loop's fold, several of the original's steps.
INLINED = "inlined"
# str on a ``while`` loop that is not counted: why (the report's reason for keeping it).
NOT_COUNTED = "not_counted"
# bool on the operand of the ``int(r)`` by which a vectorized loop folds a Python-int accumulator
# (``count += 1``): a sum of integer items, never NaN or inf, so that ``int()`` raises on nothing
# (an outer loop vectorizing the fold counts no raises of it, and keeps no ``raise``).
INTEGER_FOLD = "integer_fold"
# type on a ``Cls(...)`` call whose ``__init__`` has a rewrite (``optimize_called_helpers``: its
# callee becomes ``constructed(Cls, ...)``): the class of the object it makes, which a name
# bound to it still holds (its ``forward`` is rewritten too).
CONSTRUCTED = "constructed_class"
# str on the ``_items = torch.tensor(obj.attr) if <ints> else obj.attr`` a loop over the ints an
# object holds iterates (``index_tuples_to_tensors``): ``obj.attr``. An outer loop that changes nothing
# of ``obj`` binds the same value in every iteration (``first_item_checks``).
HELD_SEQUENCE = "held_sequence"
# bool on the ``def`` of a vectorized loop's body that ``torch.vmap`` maps (``outline_body``):
# every call in it runs under vmap (``optimize_called_helpers`` rewrites its helpers for that).
MAPPED = "mapped"


def get(node: ast.AST, key: str, default: Any = None) -> Any:
    return node.__dict__.get(key, default)


def put(node: ast.AST, key: str, value: Any) -> None:
    setattr(node, key, value)
