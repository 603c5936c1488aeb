"""``slice_bound(a)``: ``a``, a bound the original slices with (``x[i, :L[i]]``), for generated
code that compares positions with it instead (``loops/ragged_slices_to_masks``). A float (a
Python float, a floating tensor) raises the ``TypeError`` slicing raises, where a comparison
would take it as a number; anything else is returned as it is."""
from __future__ import annotations

import torch


def slice_bound(a):
    if isinstance(a, float):
        raise TypeError("slice indices must be integers or None or have an __index__ method")
    if isinstance(a, torch.Tensor) and (a.is_floating_point() or a.is_complex()):
        raise TypeError("only integer tensors of a single element can be converted to an index")
    return a
