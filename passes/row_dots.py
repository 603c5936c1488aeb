"""``torch.dot`` of each row of a batched ``a`` [N, D] with the same row of ``b`` [N, D], or with
``b`` [D] the same in every iteration, for generated code (``batch_calls``' batched dot).

``torch.linalg.vecdot`` is that dot on all rows at once, and like ``torch.dot`` it refuses
operands of different dtypes; but it broadcasts, where ``torch.dot`` refuses vectors of different
lengths. Those raise here, so the vectorized form never returns what the loop would not: it
raises, and the loop then runs as written and raises its own error (an elementwise product
summed would have promoted a float32 row against a float64 one, silently)."""
from __future__ import annotations

import torch


def dot_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.dim() != 2 or b.dim() not in (1, 2) or a.shape[-1] != b.shape[-1] \
            or b.dim() == 2 and b.shape[0] != a.shape[0]:
        raise RuntimeError("dot_rows: vectors torch.dot refuses")
    return torch.linalg.vecdot(a, b)
