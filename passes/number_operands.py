"""Items of a list or tuple of Python numbers as rows of a tensor, for generated code that reads
them as one row per iteration (``loops/number_list_operands``)::

    loss += dice * weight[i]     ->    loss += number_op(dice, _weight_row, _weight_kind, "mul")

``number_kind(w)``: ``float`` or ``int`` when ``w`` is a list or plain tuple of numbers all of
that exact type (no bools, no mixed types, ints in int64's range), else None. ``number_rows(w)``:
then the tensor of them in float64 or int64, which hold every such number exactly; else ``w``
itself (a tensor, a list of tensors: ``stack_tensor_lists`` stacks those).

``number_op(x, row, kind, op, reflected)``: ``x <op> row`` (``row <op> x`` when reflected) as
the original computes ``x <op> w[k]`` with a Python number: the number takes no part in type
promotion beyond its category, so the operation is in ``result_type(x, w[k])``, the same for
every item of one type, and the number is converted to it. Float16 and bfloat16 compute with the
number in float32 (their ops' opmath) and round the result, as their kernels do with a Python
number; rounding the number to 16 bits first would change the values. A number divided by a
tensor is ``Tensor.__rtruediv__``: the tensor's reciprocal (in its dtype) times the number. With ``kind`` None the
row is a tensor's own (the user's tensor, or stacked tensors) and the op is applied as it is.

``weak_int(i, t)``: the loop index ``i`` (an int64 arange batched, a Python int per item) as an
operand next to ``t``: per item a weak scalar, which keeps an integer ``t``'s dtype (``x[i] + i``
of int32 ``x`` is int32), so cast to it; next to floats as it is (it promotes alike, and a cast
to float16 would round it first).
"""
from __future__ import annotations

import operator

import torch

from .dtype_queries import result_type

# The operators generated code names (``number_list_operands``); each takes (x, w) in order.
OPERATORS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
             "truediv": operator.truediv}
# The dtype each kind of number is held in exactly, and the dtypes whose ops compute in float32.
HELD_IN = {float: torch.float64, int: torch.int64}
_REDUCED = (torch.float16, torch.bfloat16)
_INT64 = range(-2 ** 63, 2 ** 63)


def number_kind(w):
    if not (type(w) is list or isinstance(w, tuple) and type(w).__getitem__ is tuple.__getitem__
            and type(w).__iter__ is tuple.__iter__ and type(w).__len__ is tuple.__len__) or not w:
        return None
    kind = type(w[0])
    if kind not in HELD_IN or any(type(v) is not kind for v in w):
        return None
    return kind if kind is float or all(v in _INT64 for v in w) else None


def number_rows(w):
    kind = number_kind(w)
    return w if kind is None else torch.tensor(w, dtype=HELD_IN[kind])


def number_op(x, row, kind, op, reflected):
    fn = OPERATORS[op]
    if kind is None or not isinstance(x, torch.Tensor):
        return fn(row, x) if reflected else fn(x, row)
    dtype = result_type(x, kind(1))
    if dtype in _REDUCED:
        x, row = x.float(), row.to(device=x.device, dtype=torch.float32)
    else:
        row = row.to(device=x.device, dtype=dtype)
    if reflected and op == "truediv":  # Tensor.__rtruediv__: the reciprocal times the number
        out = (x.reciprocal() if dtype not in _REDUCED else x.to(dtype).reciprocal().float()) * row
    else:
        out = fn(row, x) if reflected else fn(x, row)
    return out.to(dtype) if dtype in _REDUCED else out


def weak_int(i: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return i if t.is_floating_point() or t.is_complex() else i.to(torch.result_type(t, 1))
