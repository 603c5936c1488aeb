"""Never slower than the original: per band of input signatures, a few of the user's calls time
the rewritten function against the original, and the faster runs from then on.

A rewrite can lose: an inner loop vectorized inside an outer loop that stays a loop pays its
runtime check and its ``torch.vmap`` set-up on every outer iteration, and a small loss pays the
wrapper and the compiled graph's guards. Neither shows in the source, so the choice is measured,
cheaply (the original is often a slow Python loop), and robustly (the machine may be busy):

- a band is every signature with the same structure (ranks, dtypes, devices, requires_grad, grad
  mode, flag values) whose tensor arguments hold a number of elements within the same power of
  ``BAND`` (``size_band``): variable sequence lengths share one decision instead of timing both
  forms at every new length, while a much larger input, where a loop has far more iterations,
  decides again;
- the first call of a signature runs as before (it compiles, checks, counts loop runs and the
  iterations the vectorized loops stood for); a band's ``FormTrial`` then times calls of the
  rewritten form and of the original in rounds, one call of each per round. When the original's
  loops alone take ``CLEAR`` times the rewritten form's first timed call (their iterations times
  ``iteration_floor``), the rewritten wins and the original never runs. When the first round's
  original is ``CLEAR`` times slower and takes ``EXPENSIVE_S`` or more, the rewritten wins at
  once: one run of a slow original, which the user would have paid anyway. From the second
  round on, a form ``CLEAR`` times slower loses, except an original whose best call took less
  than ``EXPENSIVE_S``: it stays through every round and check (its first calls can take
  several times its usual time, being its first runs at all, and load can hit it several
  rounds in a row; a wrong choice of a rewritten form slows every call, a repeated cheap
  original costs little). After ``PAIRS`` rounds the rewritten form runs only when it is
  ``MARGIN`` faster than the original both ways forms are compared: by the median over rounds
  of their ratio within a round (load that comes and goes, another process, the allocator
  giving memory back to the system and faulting it in again, which can add half to one call of
  a loss over large tensors, hits both forms of a round alike, and one slow call does not
  decide), and by each form's best call (load only adds time: a form's least time is its cost
  without load, and a few slow rounds do not decide). A rewrite about as fast gains nothing,
  and noise must not pick it;
- a vectorized loop that ran its vectorized form several times in one call (inside a loop that
  stays a loop) gets a form of its own, the rewritten function with that loop as written, and
  goes back to as written when that form is faster than the rewritten one: each loop on its own
  measured cost, so that side-by-side loops are not decided together;
- a vectorized loop whose vectorized form, timed alone at the band's first call, is clearly
  slower than the loop as written (``rewrite.loop_choice``: its region, which a whole call's
  time cannot separate from the rest of the call) is as written in every rewritten form of the
  band, the rewritten function's own among them (eager forms: there are no others with
  ``torch.compile``);
- a choice that was not clear is checked again, because timings on a busy machine can mislead:
  one more timed round after ``RECHECK_FIRST`` untimed calls, then after ``RECHECK_GROWTH`` times
  as many, ``RECHECKS`` times; each decides again from every round so far, and the last makes
  the choice final. Spaced out in time, the checks cost a few calls of the slower form over
  hundreds;
- a call is timed forward and, when its output requires grad, backward too: the backward is
  measured by hooks, from the output's backward starting to the gradient of the last input that
  requires grad, so the user's own backward call is the one timed (the model's backward beyond
  the loss's inputs is not counted). On the CPU a time is the smaller of the wall time and the
  process's CPU time: another process taking the core inflates the wall time but not the CPU
  time, while work spread over threads takes less wall time than CPU time. The rewritten form is
  timed with the wrapper's own work for it (saving the arguments it may change in place), which
  the original does not pay. A decision is taken at the start of the call after a round's last,
  when that call's backward has run; calls of different sizes are compared per element.

The report says which form runs for the band and why (``Report.forms``).
"""
from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils._pytree import tree_flatten

from passes.report import FormChoice

CLEAR = 2.0   # a form this many times slower loses without more timing
BAND = 4      # a decision holds for every size within one power of this of elements
EXPENSIVE_S = 0.05  # an original call this long is not repeated to confirm it is slower
MARGIN = 0.1  # the rewritten form runs only when it is this much faster (median ratio, best calls)
PAIRS = 4     # timed rounds (one call of each form) before a choice that is not clear
LOOP_FORMS = 3  # at most this many loops (those that ran vectorized most often) get a form each
TRIAL_CALLS = (2 + LOOP_FORMS) * PAIRS  # at most this many calls after a band's first are timed, then one chooses
RECHECK_FIRST = 8   # untimed calls between a choice that was not clear and its first check
RECHECK_GROWTH = 4  # each check waits this many times longer than the one before
RECHECKS = 4        # timed rounds after the first choice; the last makes it final


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
    return max(1, sum(t.numel() for t in _tensors((args, kwargs))))


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


class _Clock:
    """Seconds since it was made: wall time, or (``cpu``: every tensor on the CPU) the smaller
    of wall time and the process's CPU time."""

    def __init__(self, cpu: bool):
        self.cpu = cpu
        self.wall, self.used = time.perf_counter(), time.process_time() if cpu else 0.0

    def seconds(self) -> float:
        wall = time.perf_counter() - self.wall
        return min(wall, time.process_time() - self.used) if self.cpu else wall


def timed_call(fn: Callable, args: tuple, kwargs: dict) -> tuple[Any, Timing]:
    """``fn(*args, **kwargs)`` and its ``Timing``: forward time (``_Clock``), waiting for the
    device's queued work at both ends; its backward filled in by hooks when it runs. Tests
    replace it with a fake that makes one form slower."""
    inputs = _tensors((args, kwargs))  # once: arguments can hold lists of hundreds of tensors
    devices = _devices(inputs)
    _sync(devices)
    clock = _Clock(cpu=not devices)
    out = fn(*args, **kwargs)
    _sync(_devices(_tensors(out)) | devices)
    timing = Timing(clock.seconds())
    _time_backward(out, inputs + _parameters((args, kwargs)), timing, cpu=not devices)
    return out, timing


def _time_backward(out: Any, inputs: list[torch.Tensor], timing: Timing, cpu: bool) -> None:
    """Hooks that set ``timing.backward``: from the backward reaching an output to the gradient
    of the last of the tensor ``inputs`` (and module parameters) that requires grad. Where hooks
    cannot be set (a functorch transform), the forward alone counts."""
    outs = [t for t in _tensors(out) if t.grad_fn is not None]
    ins = [t for t in inputs if t.requires_grad]
    if not outs or not ins:
        return
    started: list[_Clock] = []

    def start(_: Any) -> None:
        started.append(_Clock(cpu))

    def end(_: Any) -> None:
        if started:
            timing.backward = started[0].seconds()
    try:
        for t in outs:
            t.grad_fn.register_prehook(start)  # goes with the graph
        timing.hooks = [t.register_hook(end) for t in ins]
    except RuntimeError:
        pass


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _parameters(tree: Any) -> list[torch.Tensor]:
    """The parameters of the modules in ``tree`` (a loss module's own, ``self``): a backward
    may reach only them (a learnable temperature, a discriminator the loss calls)."""
    return [p for m in tree_flatten(tree)[0] if isinstance(m, torch.nn.Module)
            for p in m.parameters()]


def _devices(tensors: list[torch.Tensor]) -> set[torch.device]:
    """The devices other than the CPU that ``tensors`` are on."""
    return {t.device for t in tensors if t.device.type != "cpu"}


def _sync(devices: set[torch.device]) -> None:
    for device in devices:
        torch.accelerator.synchronize(device)


class FormTrial:
    """Runs the calls of one band while it is being timed and checked, and hands ``decide`` the
    index of the faster form (into ``forms``: 0 the rewritten function, 1 the original, from 2
    rewritten forms with loops as written), the ``FormChoice`` that says why, and whether the
    choice is final (no more checks: the trial need not run the band's calls any more).

    The forms are timed in rounds, one call of each form still in the running, in an order that
    turns by one form every round (a call that follows another form's may find the allocator's
    memory warm or cold). More forms join after the band's first call when ``as_written`` is
    given and vectorized loops ran their vectorized form more than once in that call: per such
    loop (up to ``LOOP_FORMS``, those that ran most), the rewritten function with that loop
    alone as written (``as_written(lines)`` makes it). Every comparison is a median over rounds
    of the ratio of two forms' times in the same round (``_paired``): load that comes and goes
    hits both alike, and one slow call does not decide. A form ``CLEAR`` times slower than the
    fastest leaves the running (after one round: only an expensive original; never a cheap
    original); each loop goes back to as written when its form is faster than the rewritten one
    (``_loops_back``); the choice prefers the original unless the resulting rewritten form is
    ``MARGIN`` faster, in the medians and in the best calls. Before any of this, the loops that
    ``counted``'s judge finds clearly slower vectorized, each timed alone, are as written in
    every rewritten form (``_kept``): form 0 too, and they get no form of their own."""

    def __init__(self, rewritten: Callable, original: Callable, signature: str,
                 decide: Callable[[int, FormChoice, bool], None], first_elements: int,
                 trips: int = 0, as_written: Callable[[frozenset[int]], Callable] | None = None):
        self.forms = [rewritten, original]
        self.signature = signature  # the band, as the report says it
        self._decide = decide
        # The band's first call: its size, and the iterations its vectorized loops stood for
        # (``Report.iterations``, counted there; 0 when nothing was counted)
        self._first_elements = first_elements
        self.trips = trips
        self._as_written = as_written
        self.repeated: tuple[tuple[int, int], ...] = ()  # (line, vectorized runs) per loop form
        self._kept: dict[int, float] = {}  # loops as written in every rewritten form: line -> slowdown
        self._combined: dict[frozenset[int], int] = {}  # loops as written -> index in forms
        self._timings: list[tuple[int, Timing, int, int]] = []  # (form, timing, elements, round)
        self._live = [0, 1]  # the forms in the running
        self._due = [0, 1]   # the forms of this round not timed yet
        self._rounds = 0
        self._original_floor = math.inf  # the original's least time, when it is not run
        self._chosen: int | None = None
        self._final = False
        self._wait = 0  # untimed calls of the chosen form before the next round
        self._running = False  # a timed call is under way
        self._lock = threading.Lock()

    def counted(self, counting: Callable, report: Any,
                judge: Callable[[frozenset[int]], dict[int, float]] | None = None) -> Callable:
        """``counting`` (the loop-counting copy of the rewritten function, for the band's first
        call), adding the iterations it counts into ``report`` to ``trips``, and a form per loop
        that ran vectorized more than once. ``judge(lines)``, after that call: of the loops at
        ``lines``, which ran vectorized in it, those that run as written in every rewritten form
        of the band, with their vectorized form's time over the loop's (``rewrite.loop_choice``)."""
        def call(*args: Any, **kwargs: Any) -> Any:
            before = report.iterations
            runs = {loop.lineno: (loop.vectorized_runs, loop.failed_runs) for loop in report.loops}
            try:
                out = counting(*args, **kwargs)
            finally:
                self.trips += report.iterations - before
            added = {loop.lineno: (loop.vectorized_runs - runs[loop.lineno][0],
                                   loop.failed_runs - runs[loop.lineno][1]) for loop in report.loops}
            if judge is not None and self._as_written is not None:
                self._kept = judge(frozenset(line for line, (ran, failed) in added.items()
                                             if ran and not failed))
            repeated = [(line, ran) for line, (ran, _) in added.items()
                        if ran > 1 and line not in self._kept]
            self.repeated = tuple(sorted(repeated, key=lambda lr: -lr[1])[:LOOP_FORMS])
            if self._as_written is not None and (self.repeated or self._kept):
                loop_forms = [self._written({line}) for line, _ in self.repeated]
                with self._lock:
                    if self._kept:
                        self.forms[0] = self._written(set())
                    first = len(self.forms)
                    self.forms += loop_forms
                    self._live += range(first, len(self.forms))
                    self._due += range(first, len(self.forms))
            return out
        return call

    def _written(self, lines: set[int]) -> Callable:
        """The rewritten function with the loops at ``lines`` as written, and those the band's
        first call found slower vectorized (``_kept``)."""
        return self._as_written(frozenset(lines) | self._kept.keys())

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
            self._timings.append((form, timing, elements(args, kwargs), self._rounds))
            self._due.remove(form)
        return out

    def steady(self, *args: Any, **kwargs: Any) -> Any:
        """The form chosen so far, untimed: a call that must run what the next one like it
        runs (a checkpoint's forward and its recomputation) leaves the trial as it is."""
        return self.forms[0 if self._chosen is None else self._chosen](*args, **kwargs)

    def _next(self) -> tuple[int, bool]:
        """The form this call runs, and whether it is timed: untimed between the checks of a
        choice and after the last, and while another thread's timed call runs."""
        chosen = 0 if self._chosen is None else self._chosen
        if self._running or self._final:
            return chosen, False
        if self._wait:
            self._wait -= 1
            return chosen, False
        for _, timing, _, _ in self._timings:
            # The backward of an earlier call ran (or never will) before this call: a later
            # backward through a parameter passed again must not count for it.
            for hook in timing.hooks:
                hook.remove()
            timing.hooks = []
        verdict = self._estimate() if len(self._timings) == 1 and 1 in self._due else None
        if verdict is None and not self._due:
            self._rounds += 1
            verdict = self._after_round()
            turn = self._rounds % len(self._live)
            self._due = self._live[turn:] + self._live[:turn]
        if verdict is None:
            self._running = True
            return self._due[0], True
        self._chosen, choice, self._final = verdict
        if not self._final:
            self._wait = RECHECK_FIRST * RECHECK_GROWTH ** (self._rounds - PAIRS)
        self._decide(self._chosen, choice, self._final)
        return self._chosen, False

    def _estimate(self) -> tuple[int, FormChoice, bool] | None:
        """The original leaves the running without being run when its loops alone take
        ``CLEAR`` times the rewritten form's first timed call: ``trips`` iterations of at least
        ``iteration_floor()`` each, at the band's first call's size. The rewritten form wins
        then, unless loop forms are still to be timed against it."""
        form, timing, size, _ = self._timings[0]
        seconds = (timing.forward + (timing.backward or 0.0)) * self._first_elements / size
        at_least = self.trips * iteration_floor()
        if at_least < CLEAR * seconds:
            return None
        self._live.remove(1)
        self._due.remove(1)
        self._original_floor = at_least
        if len(self._live) > 1:
            return None
        return 0, self._choice(0, [{0: seconds}], (), with_backward=timing.backward is not None), True

    def _per_round(self) -> tuple[list[dict[int, float]], bool]:
        """Per round, each timed form's seconds, per element scaled to the first timed call's
        size; forward+backward when every timed call's backward ran, else forward only."""
        with_backward = all(t.backward is not None for _, t, _, _ in self._timings)
        scale = self._timings[0][2]
        rounds: list[dict[int, float]] = [{} for _ in range(self._rounds)]
        for form, t, size, number in self._timings:
            seconds = t.forward + (t.backward if with_backward else 0.0)
            rounds[number][form] = seconds * scale / size
        return rounds, with_backward

    def _after_round(self) -> tuple[int, FormChoice, bool] | None:
        """The choice after a round, and whether it is final; None to time another round."""
        rounds, with_backward = self._per_round()
        if self._rounds == 1:
            # Only a slow original leaves after one round, and only when another call of it would
            # cost much: a first call can be slow for its own reasons (the rewritten form's may be
            # its first run at all, the original's first in a while), and a cheap one repeats cheaply.
            first = rounds[0]
            others = min((s for f, s in first.items() if f != 1), default=math.inf)
            if 1 in first and first[1] >= max(CLEAR * others, EXPENSIVE_S):
                self._live.remove(1)
        else:
            # Each form over the fastest of its round; the least slow stays whatever its median
            # (rounds that each form won in turn can put every median at CLEAR)
            slowness = {f: _paired(rounds, f, lambda r: min(r[g] for g in self._live if g in r))
                        for f in self._live}
            least = min(slowness, key=slowness.__getitem__)
            # A cheap original stays through the rounds and the checks: its first calls can be
            # slow (its first run at all, memory faulted in) or hit by load several rounds in a
            # row, and choosing a slower rewritten form on such times would slow every call.
            cheap = _best(rounds, 1) < EXPENSIVE_S
            self._live = [f for f in self._live
                          if f == least or slowness[f] < CLEAR or (f == 1 and cheap)]
        if len(self._live) > 1 and self._rounds < PAIRS:
            return None
        back = _loops_back(rounds, range(2, 2 + len(self.repeated)))
        combined = self._form_with(back)
        # The rewritten form that runs when a rewritten form runs, over the original's time
        relative = (_paired(rounds, 0, lambda r: r[1]) if self._original_floor == math.inf
                    else _median(rounds, 0) / self._original_floor) * _estimated(rounds, back)
        # and each form's best call: load only adds time, so a form's least time is its cost
        # without load; the original runs unless both say the rewritten form is faster
        best = _best(rounds, 0) / _best(rounds, 1) * _estimated(rounds, back)
        chosen = 1 if 1 in self._live and max(relative, best) > 1 / (1 + MARGIN) else combined
        final = len(self._live) == 1 or self._rounds >= PAIRS + RECHECKS
        return chosen, self._choice(chosen, rounds, back, with_backward), final

    def _form_with(self, back: tuple[int, ...]) -> int:
        """The index in ``forms`` of the rewritten function with the loops of the loop forms
        ``back`` as written (made once, when more than one loop goes back)."""
        if len(back) < 2:
            return back[0] if back else 0
        lines = frozenset(self.repeated[f - 2][0] for f in back)
        if lines not in self._combined:
            self._combined[lines] = len(self.forms)
            self.forms.append(self._written(lines))
        return self._combined[lines]

    def _choice(self, chosen: int, rounds: list[dict[int, float]], back: tuple[int, ...],
                with_backward: bool) -> FormChoice:
        rewritten = _median(rounds, 0)
        original = (self._original_floor if self._original_floor < math.inf
                    else _median(rounds, 1))
        partial = None
        if self.repeated:  # the rewritten form with the loops that go back as written
            partial = rewritten * _estimated(rounds, back)
        return FormChoice(
            self.signature, "original" if chosen == 1 else "partial" if back and chosen > 1
            else "rewritten", rewritten, original, self._rounds or 1, with_backward,
            at_once=self._rounds == 1 and len(self._live) == 1 and 1 not in self._live,
            iterations=self.trips if self._original_floor < math.inf else 0,
            margin=MARGIN, partial_s=partial,
            as_written=tuple(self.repeated[f - 2] for f in back),
            vectorized=tuple(lr for f, lr in enumerate(self.repeated, 2) if f not in back),
            kept=tuple(sorted(self._kept.items())))


def _median(rounds: list[dict[int, float]], form: int) -> float:
    """The median of ``form``'s times over the rounds that timed it (inf: none did)."""
    times = [r[form] for r in rounds if form in r]
    return statistics.median(times) if times else math.inf


def _best(rounds: list[dict[int, float]], form: int) -> float:
    """The least of ``form``'s times over the rounds that timed it (inf: none did)."""
    return min((r[form] for r in rounds if form in r), default=math.inf)


def _paired(rounds: list[dict[int, float]], form: int,
            other: Callable[[dict[int, float]], float]) -> float:
    """The median over the rounds that timed ``form`` of its time over ``other(round)`` (a
    time of that round): ``form``'s time relative to another's, with what came and went
    during each round cancelled out. When one form was not timed in a round (it left, or
    raised), that round does not count (inf: no round counts)."""
    ratios = []
    for r in rounds:
        try:
            ratios.append(r[form] / max(other(r), 1e-12))
        except (KeyError, ValueError):
            pass
    return statistics.median(ratios) if ratios else math.inf


def _loops_back(rounds: list[dict[int, float]], loop_forms: range) -> tuple[int, ...]:
    """The loop forms whose loop goes back to as written: each one faster than the rewritten
    form (the median of their paired ratios below 1), each decided on its own time."""
    return tuple(f for f in loop_forms if _paired(rounds, f, lambda r: r[0]) < 1.0)


def _estimated(rounds: list[dict[int, float]], back: tuple[int, ...]) -> float:
    """The time of the rewritten form with the loops of ``back`` as written, over the rewritten
    form's: each loop saves what its own form saved (loops side by side add up). Noise can
    make the savings add up to the whole: never below half the fastest loop form's."""
    ratios = [_paired(rounds, f, lambda r: r[0]) for f in back]
    return max(1.0 - sum(1.0 - ratio for ratio in ratios), min(ratios, default=2.0) / 2)
