"""Dtype queries generated code calls, traced by Dynamo as constants: in eager, the torch
function itself; under Dynamo, torch's Python reference of the same rule
(``torch._prims_common``), which reads only dtypes, ranks and number types
(``traceable_dtype_queries`` binds them in place of the torch functions)."""
from __future__ import annotations

import torch
from torch._prims_common import (ELEMENTWISE_TYPE_PROMOTION_KIND, can_safe_cast_to,
                                 elementwise_dtypes)


def result_type(a, b) -> torch.dtype:
    """``torch.result_type(a, b)``, traced by Dynamo as a constant."""
    if torch.compiler.is_compiling():
        return elementwise_dtypes(
            a, b, type_promotion_kind=ELEMENTWISE_TYPE_PROMOTION_KIND.DEFAULT)[1]
    return torch.result_type(a, b)


def can_cast(from_: torch.dtype, to: torch.dtype) -> bool:
    """``torch.can_cast(from_, to)``, traced by Dynamo as a constant."""
    if torch.compiler.is_compiling():
        return can_safe_cast_to(cast_to=to, cast_from=from_)
    return torch.can_cast(from_, to)


def opmath_type(a, b) -> torch.dtype:
    """The dtype ``a <op> b`` of ``+``, ``-``, ``*``, ``/`` computes in, ``b`` a Python number:
    ``result_type(a, b)``, but float32 for float16/bfloat16 (their kernels compute with the
    number in float32 and round the result once: the number is not rounded to 16 bits first)."""
    dtype = result_type(a, b)
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
