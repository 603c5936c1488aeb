"""Host syncs of one call: the ops that make the host wait for the device's data.

``count_host_syncs(fn, *args)`` runs ``fn`` forward and backward (when the result requires grad)
under a ``TorchDispatchMode`` and counts the ops that read a tensor's value on the host
(``.item()``, ``bool(t)``, ``int(t)``, ``torch.equal``) or whose result size depends on the data
(``nonzero``, ``masked_select``, ``unique``, indexing with a boolean mask ``x[m]`` and writing
through one ``x[m] = v``): on a GPU each one stalls until the device has caught up. On CPU they cost nothing extra, which is why they are counted rather than timed.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten
# Ops whose result the host needs the data for, by overload packet.
SYNCING = frozenset({_aten._local_scalar_dense, _aten.is_nonzero, _aten.equal, _aten.nonzero,
                     _aten.masked_select, _aten._unique2, _aten.unique_dim,
                     _aten.unique_consecutive, _aten.item})
# Indexing ops that sync when an index is a boolean mask (it is turned into positions).
MASK_INDEXED = frozenset({_aten.index, _aten.index_put, _aten.index_put_, _aten._index_put_impl_})


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        if packet in SYNCING or (packet in MASK_INDEXED and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] or ())):
            self.seen[packet.__name__] += 1
        return func(*args, **(kwargs or {}))


def count_host_syncs(fn: Callable, *args: Any, **kwargs: Any) -> Counter:
    """The syncing ops one call of ``fn`` (forward and backward) runs, by name."""
    with _Count() as mode:
        out = fn(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.sum().backward()
    return mode.seen
