"""Windows of one width at evenly spaced positions of a tensor, as one view, for generated code:
the stage ``loops/moving_slices_to_windows`` reads a loop's ``x[:, k * i + d:k * i + d + w]``
(``i`` the loop index) as row ``i`` of ``slice_windows(x, 1, lambda: (d, w, k, n))``.

``slice_windows(x, dim, bounds)``: ``bounds()`` gives ``(start, width, step, count)``; the result
has ``x``'s dims with ``dim`` replaced by two, ``count`` windows then ``width`` positions, window
``j`` holding ``x``'s positions ``start + step * j`` up to ``+ width`` along ``dim`` (``unfold``:
a view, no copy; its backward adds each window's cotangent at its positions, overlapping
windows included). The same elements, values and gradients as each slice, where every window
lies inside ``x``: all four Python ints, ``start >= 0``, ``width >= 1``, ``step >= 1``,
``count >= 1`` and the last window ending by ``x.shape[dim]``. Else None, and the loop runs as
written (Python's slicing clamps a window that leaves the tensor, or counts a negative start
from the end), also when ``bounds()`` raises (bounds of a type ``range`` or ``+`` refuse) and
for a sparse or nested ``x`` (no ``unfold``).

``window_count(ints)``: the windows a loop over a numpy array's ints (``numpy_ints``) reads at
its ints, counted from 0: the largest int plus 1, for a non-empty list of ints none negative
(Python counts a negative bound from the end); else ValueError, and the loop runs as written.
"""
from __future__ import annotations

import torch


def slice_windows(x, dim: int, bounds):
    if not isinstance(x, torch.Tensor) or x.layout != torch.strided or not 0 <= dim < x.dim():
        return None
    try:
        start, width, step, count = bounds()
    except (TypeError, ValueError):
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, width, step, count)):
        return None
    if not (start >= 0 and width >= 1 and step >= 1 and count >= 1
            and start + step * (count - 1) + width <= x.shape[dim]):
        return None
    return x.narrow(dim, start, x.shape[dim] - start).unfold(dim, width, step).movedim(-1, dim + 1)


def window_count(ints) -> int:
    if not (type(ints) is list and ints and all(type(v) is int and v >= 0 for v in ints)):
        raise ValueError("not a list of ints from 0")
    return max(ints) + 1
