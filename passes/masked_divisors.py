"""``masked_divisor(p, x, a)``: the divisor of ``x / a`` (``x // a``, ``x % a``) computed for
every iteration where the original divides only under the mask ``p``, ``a`` the same in every
iteration (``loops/tensor_branches_to_where``)::

    if diff.abs() < beta:                   _cond = diff.abs() < beta
        out[i] = 0.5 * diff ** 2 / beta ->  ... 0.5 * d ** 2 / _masked_divisor(_cond, _t, beta)

A Python number other than 0 and NaN is returned as it is: every quotient by it has a finite
derivative, so the deselected iterations pass no NaN on, and dividing by the number itself
rounds as the original does (and keeps no divisor tensor for the backward). Anything else (0,
NaN, a tensor) becomes ``a`` where ``p`` holds and 1 elsewhere, in the dtype of ``x / a``: a
tensor broadcast by the mask would promote like a tensor, where the original's weak number or
0-d tensor does not.
"""
from __future__ import annotations

import torch

from .dtype_queries import result_type


def masked_divisor(p, x, a):
    if type(a) in (int, float) and a != 0 and a == a:
        return a
    dtype = result_type(x, a)
    return torch.where(p, torch.zeros_like(p, dtype=dtype) + a, 1).to(dtype)
