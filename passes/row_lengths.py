"""``row_lengths(l)``: the lengths of a loop's rows (``mask[i, :l[i]] = 1``) as a tensor, for
generated code that compares positions with them all at once (``loops/length_masks_to_compares``).
A 1-D tensor of an index dtype is returned as it is; a 1-D numpy array of signed ints (lengths a
collate function moved to the host: ``seq_len.cpu().numpy()``) as a tensor of a copy (of
native byte order: torch reads no other), whose items slice as the numpy ints do; anything else
is None (the loop runs as written)."""
from __future__ import annotations

import torch

from .numpy_ints import signed_int_array


def row_lengths(l):
    if isinstance(l, torch.Tensor):
        return l if l.dim() == 1 and l.dtype in (torch.int64, torch.int32) else None
    if signed_int_array(l):
        return torch.tensor(l)  # not from_numpy: it warns for an array that is not writable
    return None
