"""``selection_window(m, start, stop)``: the mask of the elements of ``x`` that ``x[m][start:stop]``
takes (``loops/sliced_selections_to_masks``).

An element selected by the bool tensor ``m`` has a rank, its position in ``x[m]`` (``m``'s
elements counted in row-major order, as boolean indexing takes them). ``x[m][start:stop]`` takes
the selected elements whose rank lies in the slice's range, in the same order, so it is
``x[selection_window(m, start, stop)]``: one boolean-mask selection, of the same values with the
same gradients (both index ``x`` at the same positions). Negative and missing bounds follow
Python's slices, with the number selected (``m.sum()``, a tensor: nothing is read on the host)
as the length. The bounds are what slicing takes as an int (``operator.index``: an int, a 0-d
integer tensor). A mask that is no bool tensor raises ``TypeError``: ``x[idx][a:b]`` of integer
positions is no selection by rank.
"""
from __future__ import annotations

import operator

import torch


def selection_window(m, start, stop):
    if not (isinstance(m, torch.Tensor) and m.dtype == torch.bool):
        raise TypeError(f"selection_window: the mask is not a bool tensor: {type(m).__name__}")
    rank = m.flatten().cumsum(0).view(m.shape) - 1  # the position in x[m] of a selected element
    keep = m
    for bound, inside in ((start, operator.ge), (stop, operator.lt)):
        if bound is not None:
            k = operator.index(bound)
            keep = keep & inside(rank, k if k >= 0 else m.sum() + k)
    return keep
