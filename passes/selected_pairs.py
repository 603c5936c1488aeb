"""The pairs of two nested ``range`` loops that pass a test of items the indices read, for
generated code: the stage ``loops/pair_tests_to_selected_pairs`` makes the loops one loop over
the pairs ``selected_pairs`` returns.

``selected_pairs(outer, inner, test)``: ``outer`` is the outer loop's ``range``; ``inner(i)``
the inner ``range``'s ``(start, stop)`` at the outer indices ``i`` (a 1-D int64 tensor);
``test(i, j)`` the test at every pair (``i`` a column of indices, ``j`` a row), reading items
through ``pair_item``, Python numbers through ``pair_number``, comparing them by
``pair_compare`` and joining comparisons by ``pair_all``, ``pair_any`` and ``pair_not``. The
result is two 1-D int64 tensors, the ``i`` and the ``j`` of the pairs that pass, in the order
the loops visit them. It is None where the loops' Python could read another value or raise:
bounds that are not ints, an item of a tensor that is not 1-D, of a complex or wide unsigned
dtype, an index outside its tensor (over every index the loops could visit), a number that is
not an int, float or bool (a tensor compares as a tensor), a value an int64 or float64 would
not hold, or anything that raises. The loops then run as written (and raise their own error).

Comparisons are Python's: ``.item()`` gives a Python int (of an integer or bool tensor) or a
float (float64 holds every float dtype's values exactly), ``int()`` truncates a float,
``float()`` rounds an int to the nearest float64. Ints are compared as int64; a comparison
with a float in float64, after checking that its ints are within 2**53 (exact in float64).
Items read as tensors (``x[k]``, 0-d) are compared as tensors, with each other and with Python
numbers only: a column of them promotes with a Python number, or with another such column, as
the 0-d tensors do.
"""
from __future__ import annotations

import operator
from typing import Callable

import torch

_COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
            ">": operator.gt, ">=": operator.ge}
_EXACT_IN_FLOAT = 2 ** 53
_WIDE_UNSIGNED = tuple(getattr(torch, f"uint{b}") for b in (16, 32, 64) if hasattr(torch, f"uint{b}"))


class _Refused(Exception):
    """A value the loops' Python could read otherwise: they run as written."""


def selected_pairs(outer: range, inner: Callable, test: Callable):
    try:
        return _pairs(outer, inner, test)
    except Exception:  # noqa: BLE001 - refused, or raised: the loops run as written and raise theirs
        return None


def _pairs(outer: range, inner: Callable, test: Callable) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(outer, range):
        raise _Refused
    i = torch.arange(outer.start, outer.stop, outer.step)
    start, stop = (_bound(b, i) for b in inner(i))
    lo = int(start.min()) if len(i) else 0
    hi = max(lo, int(stop.max())) if len(i) else 0
    j = torch.arange(lo, hi)
    in_range = (j >= start[:, None]) & (j < stop[:, None])
    passed = torch.as_tensor(test(i[:, None], j[None, :]))
    mask = in_range.to(passed.device) & passed
    first, second = mask.nonzero(as_tuple=True)
    return i.to(mask.device)[first], j.to(mask.device)[second]


def _bound(value, i: torch.Tensor) -> torch.Tensor:
    """A ``range`` bound at every outer index, as int64 (``range`` takes ints only)."""
    if type(value) is int:
        return torch.full_like(i, value)
    if isinstance(value, torch.Tensor) and value.dtype == torch.int64 and value.shape == i.shape:
        return value.cpu()
    raise _Refused


def pair_item(x, index: torch.Tensor, kind: str) -> torch.Tensor | None:
    """``x[k].item()`` (``kind`` "item"), ``int(x[k])`` or ``float(x[k])`` at every ``k`` of
    ``index``: int64 standing for Python ints, float64 for floats; ``x[k]`` itself ("tensor",
    compared as tensors); or nothing, only the check that ``x[k]`` reads a row of a tensor,
    list or tuple ("row": a read the test does not use, which must not raise either)."""
    if kind == "row" and isinstance(x, (list, tuple)) \
            or isinstance(x, torch.Tensor) and x.dim() >= 1 and x.layout == torch.strided:
        _in_range(index, len(x))
    else:
        raise _Refused
    if kind == "row":
        return None
    if x.dim() != 1 or x.is_complex() or x.dtype in _WIDE_UNSIGNED:
        raise _Refused
    value = x.detach()[index.to(x.device)]
    if kind == "tensor":
        return value
    if kind == "float" or (kind == "item" and value.is_floating_point()):
        return value.double()
    if value.is_floating_point():  # int() truncates; of NaN or inf it raises
        if not bool(value.isfinite().all()) or bool((value.abs() >= 2.0 ** 63).any()):
            raise _Refused
        return value.trunc().long()
    return value.long()


def _in_range(index: torch.Tensor, n: int) -> None:
    if index.numel() and not (-n <= int(index.min()) and int(index.max()) < n):
        raise _Refused


def pair_number(value):
    """A Python number the test reads: ints as int64 holds them, floats; else refused."""
    if type(value) in (bool, int) and -2 ** 63 <= value < 2 ** 63:
        return int(value)
    if type(value) is float:
        return value
    raise _Refused


def pair_compare(op: str, a, b, host: bool = True):
    """``a <op> b`` of Python numbers or the tensors standing for them, as Python compares; of
    items read as tensors (not ``host``), as tensors compare."""
    if host and (_floating(a) or _floating(b)):
        a, b = _as_float(a), _as_float(b)
    return _COMPARE[op](a, b)


def _floating(v) -> bool:
    return isinstance(v, float) or isinstance(v, torch.Tensor) and v.is_floating_point()


def _as_float(v):
    if isinstance(v, torch.Tensor) and not v.is_floating_point():
        if v.numel() and bool((v.abs() > _EXACT_IN_FLOAT).any()):
            raise _Refused
        return v.double()
    if isinstance(v, int):
        if abs(v) > _EXACT_IN_FLOAT:
            raise _Refused
        return float(v)
    return v


def pair_all(*values):
    out = torch.as_tensor(values[0])
    for v in values[1:]:
        out = torch.logical_and(out, torch.as_tensor(v))
    return out


def pair_any(*values):
    out = torch.as_tensor(values[0])
    for v in values[1:]:
        out = torch.logical_or(out, torch.as_tensor(v))
    return out


def pair_not(value):
    return torch.logical_not(torch.as_tensor(value))
