"""The product of a loop's stacked factors, ``v.prod(0)``, with the original's gradient, for
generated code.

The original multiplies factor by factor (``p = p * x[i]``): factor ``i``'s gradient is the
cotangent times the product of the other factors. ``prod``'s backward divides the product by the
factor instead (where no factor is 0): at a NaN or inf factor that is NaN / NaN or inf / inf, a
NaN gradient where the original's is the finite product of the others. So the fold of a product
accumulator calls this: ``prod`` for the value, and for the backward the products of the factors
before (an exclusive ``cumprod``) and after each one (the same, reversed), both differentiable
(double backward). Its vmap rule is derived (``generate_vmap_rule``): an outer loop may map over
the fold.
"""
from __future__ import annotations

import torch

from .dtype_queries import result_type
import operator

from .loop_sums_keep_dtypes import in_steps, kept_dtype, steps


class _Product(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(v):
        return v.prod(0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        v, = ctx.saved_tensors
        ones = torch.ones_like(v[:1])
        before = torch.cat([ones, v[:-1]]).cumprod(0)
        after = torch.cat([v[1:], ones]).flip(0).cumprod(0).flip(0)
        return grad * after * before


def product_onto(start, v: torch.Tensor) -> torch.Tensor:
    """``product(v)`` in the dtype of the original's products of the factors with ``start``
    (``start * v[0]``: an int16 start takes uint8 factors in int16, a float one in float)."""
    if not len(v):
        return product(v)
    dtype = result_type(start, v[0])
    if dtype.is_floating_point or dtype.is_complex:
        return product(v.to(dtype))
    return v.prod(0, dtype=dtype)


def product(v: torch.Tensor) -> torch.Tensor:
    """``v.prod(0)``; the gradient of each ``v[i]`` the product of the others. Narrow integer
    factors keep their dtype, as ``1 * x[i]`` does (wrapping around as the original's steps do);
    float16/bfloat16 factors multiplied one by one, rounded at every step as the original's."""
    if in_steps(v):
        return steps(operator.mul, v, 1)[-1]
    if v.is_floating_point() or v.is_complex():
        return _Product.apply(v)
    return v.prod(0, **kept_dtype(v))
