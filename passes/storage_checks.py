"""Run-time helper of generated code: does a tensor a vectorized loop writes in place share its
memory with a tensor the loop reads?

The original's iterations see each other's writes through every alias of the written tensor
(``f(a[:-1], a[1:])`` or ``f(a, a)`` with ``y[k] += 1`` then a read of ``x[k]``: an iteration
reads the row an earlier one wrote), where the vectorized form reads every row before it writes
any. ``apart(t, others)`` is the check its branch runs behind: true when ``t`` is no tensor or
no tensor of ``others`` (or item of a list or tuple there) shares its memory. Eager: the same
storage (views of one storage that never overlap fail it too: the loop then runs as written).
Under torch.compile, where reading a storage breaks the graph: the same view base (``x``, its
views, views of its base); a ``detach()``ed copy of ``t`` there is no view of it and passes, and
Dynamo does not guard a base that is None (a graph traced on unaliased inputs runs for aliased
ones), so ``rewrite/runtime.py`` runs a call whose written argument shares memory with another
through the eager rewritten function, where this check reads storages.
"""
from __future__ import annotations

import torch


def apart(t, others: tuple) -> bool:
    if not isinstance(t, torch.Tensor):
        return True
    reads = [o for other in others for o in tensors_in(other)]
    if torch.compiler.is_compiling():
        return not any(_base(o) is _base(t) for o in reads)
    storage = t.untyped_storage().data_ptr()
    return not any(o.untyped_storage().data_ptr() == storage for o in reads)


def _base(t: torch.Tensor) -> torch.Tensor:
    return t if t._base is None else t._base


def tensors_in(value) -> list[torch.Tensor]:
    """``value`` itself when it is a tensor, the tensors of a list or tuple, else none."""
    items = value if type(value) in (list, tuple) else (value,)
    return [t for t in items if isinstance(t, torch.Tensor)]
