"""Stage: a loop whose items are dicts or records runs as written, decided here (not by a
run-time check that could never hold).

The vectorized form stacks the items a loop iterates, as elements or picked by its index
(``xs[i]``), into one tensor. An item the body reads at a string key (``t["labels"]``: DETR's
targets, one dict per image) or at an attribute tensors do not have (``inst.gt_classes``:
detectron2's instances, a module of a ``ModuleList``) is not a tensor, and a tensor read so
raises: the stacking check would be false on every call, and the report would call vectorized a
loop that never runs so::

    num_boxes = sum(len(t["labels"]) for t in targets)
        ->  kept: its items are read at the key `'labels'`: dicts, not tensors

Only this loop's own items: a name the body binds again is not looked at, and loop
distribution (which reads the header alone) may still hoist the statements that do not read them.
"""
from __future__ import annotations

import ast

import torch

from ..ast_tools import PassContext, is_name, unparse, walk
from ..errors import Unsupported
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    stored = {n.id for s in plan.body for n in walk(s)
              if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    elements = {name for name, _ in it.elements} - stored
    index = it.index if it.index_is_user and it.index not in stored else None
    for n in (n for s in plan.body for n in walk(s)):
        if not (isinstance(n, (ast.Subscript, ast.Attribute)) and _is_item(n.value, elements, index)):
            continue  # (the reasons quote the key, not the item: a comprehension's is renamed)
        if isinstance(n, ast.Subscript) and (isinstance(n.slice, ast.JoinedStr) or isinstance(
                n.slice, ast.Constant) and isinstance(n.slice.value, str)):
            raise Unsupported(f"its items are read at the key `{unparse(n.slice)}`: dicts, not "
                              "tensors", n.lineno)
        if isinstance(n, ast.Attribute) and not hasattr(torch.Tensor, n.attr):
            raise Unsupported(f"its items are read at `.{n.attr}`, which tensors do not have: "
                              "records, not tensors", n.lineno)
    return plan


def _is_item(expr: ast.expr, elements: set[str], index: str | None) -> bool:
    """``expr`` is an element name or ``xs[i]`` at the loop index ``i``."""
    if isinstance(expr, ast.Name):
        return expr.id in elements
    return index is not None and isinstance(expr, ast.Subscript) \
        and isinstance(expr.value, ast.Name) and is_name(expr.slice, index)
