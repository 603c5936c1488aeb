"""Which Python number an effect's value is in the original (analysis for ``effects_to_outputs``).

A loop adding up or appending values computed from its items' sizes and literals only
(``s += math.sqrt(o.shape[0])``, ``n += len(o) // 2``, ``1.0 / o.numel()``, ``x.size(1) ** 0.5``,
``k = o.shape[-1]`` then ``math.log(k)``) adds Python ints or floats, the same in every iteration.
The vectorized form computes them once, or per item under vmap, as Python numbers too, and folds
them back into the original's type (``loop_rules.NUMBER_FOLD``); a float is carried as float64,
Python's double, not the default dtype's float32.

Kinds: ``"int"``, ``"float"``, a host number's mark (``ast_marks.HOST_NUMBER``: ``"item"``...),
``"tensor"``, or ``"unknown"``: a Python number whose type depends on the data (``min(n, 0.5)``,
``n ** k`` of an int ``k`` that may be negative), which the caller refuses.
"""
from __future__ import annotations

import ast
from typing import Callable

from .. import ast_marks
from .. import loop_rules as rules
from .. import ops
from ..ast_tools import PassContext
from .batch_scope import int_size
from .batch_values import literal
from .loop_dataflow import call_op, method_name, resolve_call

NUMBERS = frozenset({"int", "float"})


def number_kind(value: ast.expr, ctx: PassContext,
                bound: Callable[[str], ast.expr | None] = lambda name: None,
                seen: frozenset[str] = frozenset()) -> str:
    """What the original adds: a Python int/float literal, a host number, an int of a tensor's
    metadata (``len(o)``, ``o.shape[0]``: ``int_sizes``), a number function of numbers
    (``rules.NUMBER_FUNCTIONS``, ``math`` functions, ``float(o.shape[0])``), a name ``bound``
    once in the body to one, or a tensor; for the terms ``loop_dataflow`` joins (``s = s -
    a.item() + b.item()``), what they add up to, and for a conditional expression what both its
    values are."""
    def kind_of(node: ast.expr) -> str:
        return number_kind(node, ctx, bound, seen)

    if isinstance(value, ast.Constant) and type(value.value) in (int, float):
        return type(value.value).__name__
    kind = ast_marks.get(value, ast_marks.HOST_NUMBER) or ("int" if int_sizes(value, ctx) else None)
    if kind:
        return kind
    if isinstance(value, ast.Name) and value.id not in seen and bound(value.id) is not None:
        return number_kind(bound(value.id), ctx, bound, seen | {value.id})
    if isinstance(value, ast.Call):
        return _call_kind(value, [kind_of(a) for a in value.args], ctx)
    if isinstance(value, ast.UnaryOp):
        return kind_of(value.operand) if isinstance(value.op, (ast.USub, ast.UAdd)) else "tensor"
    if isinstance(value, ast.IfExp):  # `o.shape[0] if c else 1`: what both branches are
        kinds = {kind_of(value.body), kind_of(value.orelse)}
        return kinds.pop() if len(kinds) == 1 else "unknown" if kinds <= NUMBERS else "tensor"
    if not isinstance(value, ast.BinOp):
        return "tensor"
    kinds = {kind_of(value.left), kind_of(value.right)}
    if "unknown" in kinds:  # (next to a tensor: a tensor)
        return "tensor" if "tensor" in kinds else "unknown"
    if kinds <= NUMBERS:
        return _operator_kind(value.op, value.right, kinds)
    return "tensor" if "tensor" in kinds or not isinstance(value.op, (ast.Add, ast.Sub)) else \
        "float" if "float" in kinds else "item" if "item" in kinds else "int"


def _operator_kind(op: ast.operator, right: ast.expr, kinds: set[str]) -> str:
    """The Python number ``a <op> b`` makes of numbers of ``kinds``: a float with a float or
    after ``/``, an int of ints (to a literal power: a negative one, ``n ** -1``, makes a float)."""
    if isinstance(op, ast.Pow) and kinds == {"int"}:
        k = literal(right)
        return "unknown" if type(k) is not int else "int" if k >= 0 else "float"
    if isinstance(op, (*rules.INT_OPERATORS, ast.Div, ast.Pow)):
        return "float" if isinstance(op, ast.Div) or "float" in kinds else "int"
    return "unknown"  # bit operators: ints, or a TypeError of floats


def _call_kind(call: ast.Call, kinds: list[str], ctx: PassContext) -> str:
    """The Python number a number function makes of numbers of ``kinds`` (its arguments')."""
    if call.keywords or not kinds or not set(kinds) <= NUMBERS:
        return "unknown" if "unknown" in kinds and "tensor" not in kinds else "tensor"
    fn = resolve_call(call.func, ctx)
    made = call_op(call, ctx).host_number if len(kinds) == 1 else None  # int(), float()
    if made is None and len(kinds) == 1 and ops.by_host_math(fn).functions:
        made = "float"
    made = made or rules.NUMBER_FUNCTIONS.get((fn, len(kinds)))
    if made == "pow":
        return _operator_kind(ast.Pow(), call.args[1], set(kinds))
    if made == "same":
        return kinds[0] if len(set(kinds)) == 1 else "unknown"
    return kinds[0] if made == "first" else made if made in NUMBERS else "tensor"


def int_sizes(value: ast.expr, ctx: PassContext) -> bool:
    """``value`` is a Python int of a tensor's metadata in the original (``len(o)``,
    ``o.shape[k]``, ``o.size(k)``: ``batch_scope.int_size``; ``o.size()[k]``; ``o.numel()``,
    ``o.dim()``: ``rules.INT_SIZE_QUERIES``), whose vectorized form is a tensor."""
    if isinstance(value, ast.Subscript) and isinstance(value.value, ast.Call) \
            and not value.value.args and method_name(value.value, ctx) == "size":
        value = ast.Subscript(value.value.func.value, value.slice)  # `o.size()[0]`: `o.shape[0]`
        value.value = ast.Attribute(value.value, "shape")
    return int_size(value, ctx) or isinstance(value, ast.Call) and not value.args \
        and not value.keywords and method_name(value, ctx) in rules.INT_SIZE_QUERIES


def on_host(value: ast.expr, bound: Callable[[str], ast.expr | None],
            seen: frozenset[str] = frozenset()) -> bool:
    """No part of ``value``, nor of what the names it reads are ``bound`` to, is a host number
    the rewrite computes as a tensor (``ast_marks.HOST_NUMBER``: ``.item()``, the loop index):
    a Python number in the vectorized form too."""
    for node in ast.walk(value):
        if ast_marks.get(node, ast_marks.HOST_NUMBER):
            return False
        if isinstance(node, ast.Name) and node.id not in seen and bound(node.id) is not None \
                and not on_host(bound(node.id), bound, seen | {node.id}):
            return False
    return True
