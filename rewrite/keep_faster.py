"""Never slower than the original: per band of input signatures, a few of the user's calls time
the rewritten function against the original, and the faster runs from then on.

A rewrite can lose: an inner loop vectorized inside an outer loop that stays a loop pays its
runtime check and its ``torch.vmap`` set-up on every outer iteration, and a small loss pays the
wrapper and the compiled graph's guards. Neither shows in the source, so the choice is measured,
cheaply (the original is often a slow Python loop):

- a band is every signature with the same structure (ranks, dtypes, devices, requires_grad, grad
  mode, flag values) whose tensor arguments hold a number of elements within the same power of
  ``BAND`` (``size_band``): variable sequence lengths share one decision instead of timing both
  forms at every new length, while a much larger input, where a loop has far more iterations,
  decides again;
- the first call of a signature runs as before (it compiles, checks, counts loop runs and the
  iterations the vectorized loops stood for); a band's ``FormTrial`` then times one call of the
  rewritten form. When the original's loops alone take ``CLEAR`` times that (their iterations
  times ``iteration_floor``), the rewritten wins and the original never runs. Otherwise one call
  of the original is timed; when it is ``CLEAR`` times slower and takes ``EXPENSIVE_S`` or more
  the rewritten wins at once: one run of a slow original, which the user would have paid
  anyway. Otherwise one more call of each (first calls can be slow for their own reasons), and
  each form's best counts;
- a call is timed forward and, when its output requires grad, backward too: the backward is
  measured by hooks, from the output's backward starting to the gradient of the last input that
  requires grad, so the user's own backward call is the one timed (the model's backward beyond
  the loss's inputs is not counted). The decision is taken at the start of the call after the
  trial's last, when that backward has run; calls of different sizes are compared per element.

The report says which form runs for the band and why (``Report.forms``).
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils._pytree import tree_flatten

from passes.report import FormChoice

FORMS = ("rewritten", "original")
CLEAR = 2.0   # one timed call of each decides when the original is this many times slower
BAND = 4      # a decision holds for every size within one power of this of elements
EXPENSIVE_S = 0.05  # an original call this long is not repeated to confirm it is slower
# Which form each call of a trial runs (an index into FORMS): a pair, then a second pair when the
# first does not decide.
_SCHEDULE = (0, 1, 0, 1)
TRIAL_CALLS = len(_SCHEDULE)  # at most this many calls after a signature's first are timed


@dataclass
class Timing:
    """One timed call: its forward seconds, and its backward's once hooks saw it run."""
    forward: float
    backward: float | None = None
    hooks: list = field(default_factory=list)  # on the inputs: removed at the next trial call


def size_band(args: tuple, kwargs: dict) -> int:
    """The band of a call's sizes: ``floor(log_BAND(elements))`` of its tensor arguments."""
    return int(math.log(elements(args, kwargs), BAND))


def elements(args: tuple, kwargs: dict) -> int:
    """Elements in the tensor arguments of a call (at least 1)."""
    return max(1, sum(t.numel() for t in tree_flatten((args, kwargs))[0]
                      if isinstance(t, torch.Tensor)))


_FLOOR: list[float] = []  # iteration_floor's measurement, once per process


def iteration_floor() -> float:
    """The least time one iteration of a Python loop over a tensor's rows takes here: a step of
    the loop, one indexing op and one arithmetic op, without autograd (a loop the rewrite
    vectorized does at least that per iteration: it reads a row and computes with it). The
    best of 3 timed loops of 64 iterations, measured once."""
    if not _FLOOR:
        rows = torch.zeros(64, 1)
        best = math.inf
        with torch.no_grad():
            for _ in range(3):
                start = time.perf_counter()
                for i in range(64):
                    rows[i] + 1
                best = min(best, (time.perf_counter() - start) / 64)
        _FLOOR.append(best)
    return _FLOOR[0]


def timed_call(fn: Callable, args: tuple, kwargs: dict) -> tuple[Any, Timing]:
    """``fn(*args, **kwargs)`` and its ``Timing``: forward wall time, waiting for the device's
    queued work at both ends; its backward filled in by hooks when it runs. Tests replace it with
    a fake that makes one form slower."""
    _sync((args, kwargs))
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    _sync(out)
    timing = Timing(time.perf_counter() - start)
    _time_backward(out, args, kwargs, timing)
    return out, timing


def _time_backward(out: Any, args: tuple, kwargs: dict, timing: Timing) -> None:
    """Hooks that set ``timing.backward``: from the backward reaching an output to the gradient
    of the last input that requires grad. Where hooks cannot be set (a functorch transform),
    the forward alone counts."""
    outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.grad_fn is not None]
    ins = [t for t in tree_flatten((args, kwargs))[0]
           if isinstance(t, torch.Tensor) and t.requires_grad]
    if not outs or not ins:
        return
    started: list[float] = []

    def start(_: Any) -> None:
        started.append(time.perf_counter())

    def end(_: Any) -> None:
        if started:
            timing.backward = time.perf_counter() - started[0]
    try:
        for t in outs:
            t.grad_fn.register_prehook(start)  # goes with the graph
        timing.hooks = [t.register_hook(end) for t in ins]
    except RuntimeError:
        pass


def _sync(tree: Any) -> None:
    devices = {t.device for t in tree_flatten(tree)[0]
               if isinstance(t, torch.Tensor) and t.device.type != "cpu"}
    for device in devices:
        torch.accelerator.synchronize(device)


class FormTrial:
    """Runs the calls of one band while it is being timed, then hands ``decide`` the index of the
    faster form (into ``FORMS``) and the ``FormChoice`` that says why."""

    def __init__(self, rewritten: Callable, original: Callable, signature: str,
                 decide: Callable[[int, FormChoice], None], first_elements: int, trips: int = 0):
        self.forms = (rewritten, original)
        self._signature = signature
        self._decide = decide
        # The band's first call: its size, and the iterations its vectorized loops stood for
        # (``Report.iterations``, counted there; 0 when nothing was counted)
        self._first_elements = first_elements
        self.trips = trips
        self._timings: list[tuple[int, Timing, int]] = []  # (form, timing, elements)
        self._chosen: int | None = None
        self._running = False  # a timed call is under way
        self._lock = threading.Lock()

    def counted(self, counting: Callable, report: Any) -> Callable:
        """``counting`` (the loop-counting copy of the rewritten function, for the band's first
        call), adding the iterations it counts into ``report`` to ``trips``."""
        def call(*args: Any, **kwargs: Any) -> Any:
            before = report.iterations
            try:
                return counting(*args, **kwargs)
            finally:
                self.trips += report.iterations - before
        return call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            form, timed = self._next()
        if not timed:
            return self.forms[form](*args, **kwargs)
        try:
            out, timing = timed_call(self.forms[form], args, kwargs)
        finally:
            self._running = False
        with self._lock:
            self._timings.append((form, timing, elements(args, kwargs)))
        return out

    def _next(self) -> tuple[int, bool]:
        """The form this call runs, and whether it is timed: untimed once the trial is decided,
        and while another thread's timed call runs (the rewritten form then)."""
        if self._chosen is not None or self._running:
            return (0 if self._chosen is None else self._chosen), False
        for _, timing, _ in self._timings:
            # The backward of an earlier call ran (or never will) before this call: a later
            # backward through a parameter passed again must not count for it.
            for hook in timing.hooks:
                hook.remove()
            timing.hooks = []
        n = len(self._timings)
        verdict = self._estimate() if n == 1 else None
        if verdict is None and (n < 2 or n == 3 or (n == 2 and self._verdict(clear_only=True) is None)):
            self._running = True
            return _SCHEDULE[n], True
        self._chosen, choice = verdict or self._verdict(clear_only=False)
        self._decide(self._chosen, choice)
        return self._chosen, False

    def _estimate(self) -> tuple[int, FormChoice] | None:
        """The rewritten form, without running the original, when the original's loops alone
        take ``CLEAR`` times the rewritten form's first timed call: ``trips`` iterations of at
        least ``iteration_floor()`` each, at the band's first call's size."""
        form, timing, size = self._timings[0]
        seconds = (timing.forward + (timing.backward or 0.0)) * self._first_elements / size
        at_least = self.trips * iteration_floor()
        if at_least < CLEAR * seconds:
            return None
        return 0, FormChoice(self._signature, FORMS[0], seconds, at_least, 1,
                             timing.backward is not None, True, self.trips)

    def _verdict(self, clear_only: bool) -> tuple[int, FormChoice] | None:
        """The faster form and why: from the first pair when one form is ``CLEAR`` times slower
        (``clear_only``), else from each form's best. Per element, scaled to the first call's
        size; forward+backward when every timed call's backward ran, else forward only."""
        with_backward = all(t.backward is not None for _, t, _ in self._timings)
        scale = self._timings[0][2]
        best = [math.inf, math.inf]
        for form, t, size in self._timings:
            seconds = t.forward + (t.backward if with_backward else 0.0)
            best[form] = min(best[form], seconds * scale / size)
        slower = max(best) / max(min(best), 1e-12)
        # Only a slow original is dropped at once, and only when another call of it would cost
        # much: a first call can be slow for its own reasons (the rewritten form's may be its
        # first run at all, the original's first in a while), and a cheap one repeats cheaply.
        if clear_only and not (best[1] >= CLEAR * best[0] and best[1] >= EXPENSIVE_S):
            return None
        chosen = int(best[1] < best[0])
        calls = len(self._timings) // 2
        return chosen, FormChoice(self._signature, FORMS[chosen], best[0], best[1], calls,
                                  with_backward, slower >= CLEAR and calls == 1)
