"""``numpy_ints(x)``: the ints of a numpy array a loop iterates (``for v in np.delete(
np.arange(n), k)``, multi-crop losses), as a list of Python ints, for generated code that
iterates their int64 tensor (``loops/index_tuples_to_tensors``) and counts the windows they
pick (``slice_windows.window_count``). Only a 1-D array of signed ints of native byte order
(what ``np.arange``/``np.delete`` of Python ints make): a numpy int in ``bs * v`` is the Python
int's value wherever a tensor's slice bound can be. Anything else is returned as it is (no
tensor: the loop runs as written).
"""
from __future__ import annotations

import sys


def numpy_ints(x):
    return x.tolist() if signed_int_array(x) else x


def signed_int_array(x) -> bool:
    """``x`` is a 1-D numpy array of signed ints of native byte order (torch reads no other)."""
    numpy = sys.modules.get("numpy")  # an array exists only where numpy was imported
    return numpy is not None and type(x) is numpy.ndarray and x.ndim == 1 \
        and x.dtype.kind == "i" and x.dtype.isnative
