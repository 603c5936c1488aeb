"""``torch.vmap(body, in_dims)`` for generated code, mapped over chunks of the iterations when
one iteration's values are large (``outline_body``).

A loop whose iterations each make large temporaries (a per-cloud ``[n, n]`` distance matrix of
a point-cloud loss) runs them, as written, in memory the allocator reuses from the iteration
before; mapped at once, each temporary holds every iteration's values. Past glibc's largest
``mmap`` threshold (32 MiB) each such temporary gets fresh pages from the kernel, which the
first write faults in, page by page, on every call: the vectorized chamfer loop of
``examples/real/pc_chamfer_nn_loop.py`` (16 clouds of 1024 points, 64 MiB temporaries) spent
over 40% of its time there and lost to the loop (0.65x). Mapped over chunks whose largest
value stays under ``BUDGET``, it keeps most of vmap's gain and none of that cost.

How large an iteration's values are is measured, not guessed: the first call for a body and
the shapes it maps over (and the tensors it closes over) runs whole under a dispatch mode that
notes the largest storage an op allocates (vmap's batched tensors, all iterations at once);
later calls of the same signature run in chunks of ``BUDGET`` bytes of that per iteration.
``chunk_size`` only splits the iterations and concatenates each output along the mapped dim:
each iteration computes the same ops on the same values, so values, gradients, dtypes and
exceptions are vmap's. Inside another vmapped body (whose iterations already share each op)
and under Dynamo (Inductor fuses the temporaries away) it is plain ``torch.vmap``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .ast_tools import closed_values

# Bytes of the largest value of one chunk: half glibc's largest mmap threshold, so a chunk's
# temporaries come from the heap again after the first (16 and 8 MiB chunks took the same time
# on the chamfer loop, 4 MiB ones 7% more: vmap's gain shrinks with the chunk).
BUDGET = 16 << 20
# Signatures remembered (a new one is measured again): a loss sees few.
_REMEMBERED = 1024
_per_iteration: dict[tuple, int] = {}


def map_in_chunks(body: Callable, in_dims: tuple) -> Callable[..., Any]:
    """``torch.vmap(body, in_dims)``, run over chunks of the iterations when an iteration's
    largest value (measured at the first call of a signature) exceeds ``BUDGET``."""
    def mapped(*args: Any) -> Any:
        if torch.compiler.is_compiling() or torch._C._functorch.maybe_current_level() is not None:
            return torch.vmap(body, in_dims)(*args)
        sizes = [a.shape[d] for a, d in zip(args, in_dims) if d is not None]
        key = _signature(body, args)
        if not sizes or key is None:
            return torch.vmap(body, in_dims)(*args)
        per_iteration = _per_iteration.get(key)  # one read: another thread may clear it
        if per_iteration is None:
            with _LargestValue() as seen:
                out = torch.vmap(body, in_dims)(*args)
            if len(_per_iteration) >= _REMEMBERED:
                _per_iteration.clear()
            _per_iteration[key] = seen.nbytes // max(sizes[0], 1)
            return out
        chunk = max(BUDGET // max(per_iteration, 1), 1)
        return torch.vmap(body, in_dims, chunk_size=chunk if chunk < sizes[0] else None)(*args)
    return mapped


def _signature(body: Callable, args: tuple) -> tuple | None:
    """What an iteration's sizes follow: the body's code and the shapes and dtypes of the
    tensors it maps over and closes over; None when an argument is not a tensor (nothing to
    key it by)."""
    if not all(isinstance(a, torch.Tensor) for a in args):
        return None
    closed = closed_values(body).values()
    return (body.__code__, *((a.shape, a.dtype, a.device) for a in args),
            *((c.shape, c.dtype) for c in closed if isinstance(c, torch.Tensor)))


class _LargestValue(TorchDispatchMode):
    """Notes the largest storage (in bytes) that an op allocates while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.nbytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # a storage an operand has is no allocation (a view here: expand, a row of the mapped
        # input, an in-place op's result; the mode sees no view marks, only storages)
        operands = {t.untyped_storage().data_ptr() for t in _strided((args, kwargs))}
        for value in _strided(out):
            if value.untyped_storage().data_ptr() not in operands:
                self.nbytes = max(self.nbytes, value.untyped_storage().nbytes())
        return out


def _strided(values: Any) -> list[torch.Tensor]:
    """The dense tensors among ``values`` (a sparse one has no storage to read)."""
    return [t for t in tree_flatten(values)[0]
            if isinstance(t, torch.Tensor) and t.layout == torch.strided]
