"""Never slower than the original: per input signature, time the rewritten function against the
original over its first calls and keep the faster.

A rewrite can lose: an inner loop vectorized inside an outer loop that stays a loop pays its
runtime check and its ``torch.vmap`` set-up on every outer iteration, and a small loss pays the
wrapper and the compiled graph's guards. Neither shows in the source, so the choice is measured.
The first call of a signature runs as before (it compiles, checks, counts loop runs); a
``FormTrial`` then runs the next calls: one untimed call of the original (its own warm-up), then
``TIMED_CALLS`` timed calls of each form, alternating so that a neighbour's load hits both alike;
each form's best time counts (one call can be many times slower than the next on a busy machine,
so no single pair decides).
The form with the smaller best forward time runs for that signature from then on, and the
report says which and why (``Report.forms``). Only the forward call is timed: the wrapper never
sees the backward, whose ops mirror the forward's, so it is taken to rank the forms the same.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import torch
from torch.utils._pytree import tree_flatten

from passes.report import FormChoice

TIMED_CALLS = 3
FORMS = ("rewritten", "original")
# Which form each call of a trial runs (an index into FORMS); only the first is untimed.
_SCHEDULE = (1,) + (0, 1) * TIMED_CALLS
TRIAL_CALLS = len(_SCHEDULE)  # calls after a signature's first before its form is settled


def timed_call(fn: Callable, args: tuple, kwargs: dict) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and its wall time, waiting for the device's queued work at both
    ends. Tests replace it with a fake that makes one form slower."""
    _sync((args, kwargs))
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    _sync(out)
    return out, time.perf_counter() - start


def _sync(tree: Any) -> None:
    devices = {t.device for t in tree_flatten(tree)[0]
               if isinstance(t, torch.Tensor) and t.device.type != "cpu"}
    for device in devices:
        torch.accelerator.synchronize(device)


class FormTrial:
    """Runs the calls of one signature while it is being timed, then hands ``decide`` the
    faster form and the ``FormChoice`` that says why."""

    def __init__(self, rewritten: Callable, original: Callable, signature: str,
                 decide: Callable[[Callable, FormChoice], None]):
        self._forms = (rewritten, original)
        self._signature = signature
        self._decide = decide
        self._calls = 0
        self._best = [float("inf"), float("inf")]
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            n = self._calls
            self._calls += 1
        if n >= TRIAL_CALLS:  # decided meanwhile (another thread): the rewritten runs
            return self._forms[0](*args, **kwargs)
        form = _SCHEDULE[n]
        out, seconds = timed_call(self._forms[form], args, kwargs)
        if n:
            with self._lock:
                self._best[form] = min(self._best[form], seconds)
        if n == TRIAL_CALLS - 1:
            self._finish()
        return out

    def _finish(self) -> None:
        rewritten_s, original_s = self._best
        chosen = 1 if original_s < rewritten_s else 0
        self._decide(self._forms[chosen], FormChoice(self._signature, FORMS[chosen], rewritten_s,
                                                     original_s, TIMED_CALLS))
