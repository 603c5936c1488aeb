"""What optimize_loss did to a function, and why: ``fn.report`` / ``rewrite.explain(fn)``."""
from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from .stacked_views import why_not_stacked


@dataclass
class LoopReport:
    """One loop of the user's source. ``strategy`` is "kept" exactly when not vectorized.

    The run-time counts say what ran for a vectorized loop, counted by an instrumented eager
    copy of the rewritten function on the first call of each input signature (see
    ``passes.loop_run_counters``): how often its runtime check passed and the vectorized branch
    ran (``failed_runs`` of those raised), how often the loop ran as written, and the last reason
    for either."""
    filename: str
    lineno: int
    vectorized: bool
    strategy: str   # "batched", "vmap", "cumsum", "cumprod", "distributed", or "kept"
    reason: str     # why this strategy, or why the loop was kept
    vectorized_runs: int = 0
    failed_runs: int = 0
    original_runs: int = 0
    iterations: int = 0     # the iterations its vectorized runs stood for (``loop_ran``)
    last_failure: str = ""  # "check `...` was false" or "raised <error>"
    # Why it runs as written for a band of inputs although it ran vectorized (its vectorized
    # form timed alone was clearly slower: ``rewrite.loop_choice``); the last band's
    kept_at_run_time: str = ""
    vmap_runs: int = 0  # of the vectorized runs, those where a batched loop's vmap form ran

    def ran_as(self) -> str:
        """The strategy that ran: a batched loop whose counted vectorized runs all took its vmap
        form (its batched form's check was false) ran by vmap."""
        if self.strategy == "batched" and 0 < self.vectorized_runs <= self.vmap_runs:
            return "vmap"
        return self.strategy

    def runs(self) -> dict:
        return {"vectorized": self.vectorized_runs, "failed": self.failed_runs,
                "as_written": self.original_runs, "last_failure": self.last_failure,
                "kept_at_run_time": self.kept_at_run_time}

    def __str__(self) -> str:
        verdict = f"vectorized ({self.ran_as()})" if self.vectorized else "kept"
        return f"{self.filename}:{self.lineno}: loop {verdict}: {self.reason}{describe_runs(self.runs())}"


def describe_runs(runs: dict) -> str:
    """`` [ran: vectorized 3 (1 raised), as written 2; last: ...]``, or "" before any counted run."""
    if not (runs["vectorized"] or runs["as_written"]):
        return ""
    raised = f" ({runs['failed']} raised)" if runs["failed"] else ""
    last = f"; last: {runs['last_failure']}" if runs["last_failure"] else ""
    last += f"; {runs['kept_at_run_time']}" if runs.get("kept_at_run_time") else ""
    return f" [ran: vectorized {runs['vectorized']}{raised}, as written {runs['as_written']}{last}]"


def enclosing_loops(filename: str, lineno: int) -> frozenset[int]:
    """The lines of the ``for`` loops of the file ``filename`` whose statements hold line
    ``lineno``; none when the file cannot be read or parsed (source given as a string)."""
    try:
        with open(filename) as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return frozenset()
    return frozenset(n.lineno for n in ast.walk(tree)
                     if isinstance(n, ast.For) and n.lineno < lineno <= n.end_lineno)


@dataclass
class Fallback:
    """The original function runs (for ``signature``, or for every call when it is None), or
    what ``running`` names: the eager rewritten function, after torch.compile failed."""
    reason: str
    filename: str
    lineno: int | None
    pass_name: str | None = None
    signature: str | None = None
    running: str = "the original function"

    def __str__(self) -> str:
        where = f"{self.filename}:{self.lineno}" if self.lineno else self.filename
        scope = f" for inputs {self.signature}" if self.signature else ""
        by = f" (pass {self.pass_name})" if self.pass_name else ""
        return f"{where}: {self.running.removeprefix('the ')} runs{scope}{by}: {self.reason}"


@dataclass
class FormChoice:
    """Which form runs for one band of input signatures, and the times that chose it."""
    signature: str
    chosen: str          # "rewritten", "original" or "partial" (some loops as written)
    rewritten_s: float   # median time of each form over ``calls`` rounds of timed calls
    original_s: float
    calls: int
    backward: bool = False  # the times are forward+backward (else forward only)
    at_once: bool = False   # one call of each decided: the original was that many times slower
    # Not 0: the original was not run; ``original_s`` is this many loop iterations times the
    # least time of one (``rewrite.keep_faster.iteration_floor``)
    iterations: int = 0
    margin: float = 0.0  # a rewritten form runs only when it is this much faster
    # Loops that ran vectorized several times in one call each timed as written in a form of
    # its own, (line, runs of its vectorized form in one call) per loop: those that go back to
    # as written (faster so), and those that stay vectorized; ``partial_s``: the rewritten
    # function with the first ones as written (estimated from each loop's own form)
    partial_s: float | None = None
    as_written: tuple[tuple[int, int], ...] = ()
    vectorized: tuple[tuple[int, int], ...] = ()
    # Loops that ran vectorized and run as written in every rewritten form of the band, their
    # vectorized form timed alone clearly slower (``rewrite.loop_choice``): (line, its time
    # over the loop's as written)
    kept: tuple[tuple[int, float], ...] = ()

    def __str__(self) -> str:
        times = {"rewritten": self.rewritten_s, "original": self.original_s}
        if self.partial_s is not None and self.as_written:
            times["partial"] = self.partial_s
        what = "forward+backward" if self.backward else "forward"
        others = " and ".join(f"{'at least ' if f == 'original' and self.iterations else ''}"
                              f"{_ms(t)} for the {f}" for f, t in times.items() if f != self.chosen)
        if self.iterations:
            how = (f"not run: its loops run {self.iterations} iterations of at "
                   f"least {self.original_s / self.iterations * 1e6:.2g} µs each here")
        elif self.at_once:
            how = (f"one timed call each, {self.original_s / self.rewritten_s:.2g}x slower "
                   f"decides at once")
        else:
            how = f"medians of {self.calls} rounds of timed calls, compared within each round"
        if self.chosen == "original" and min(times.values()) < self.original_s:
            how += (f"; no rewritten form is {self.margin:.0%} faster, in the medians and in "
                    f"each form's best call")
        loops = "".join(f"; partial: the loop at line {line} as written, its vectorized form "
                        f"ran {runs} times in one call" for line, runs in self.as_written)
        loops += "".join(f"; the loop at line {line} stays vectorized (ran {runs} times in one "
                         f"call; not faster as written)" for line, runs in self.vectorized)
        loops += "".join(f"; the loop at line {line} kept as written at run time for this size: "
                         f"its vectorized form took {ratio:.2g}x the loop's time"
                         for line, ratio in self.kept)
        return (f"the {self.chosen} function runs for inputs {self.signature}: "
                f"{_ms(times[self.chosen])} per {what} call against {others} ({how}{loops})")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


@dataclass
class Report:
    function: str
    filename: str
    lineno: int
    loops: list[LoopReport] = field(default_factory=list)
    target_only: list[str] = field(default_factory=list)  # hoisted / target-only FX nodes
    fallbacks: list[Fallback] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)        # e.g. why FX tracing was skipped
    passes_run: list[str] = field(default_factory=list)
    original_source: str = ""
    rewritten_source: str = ""
    # Seconds the first calls of compiled signatures spent checking the compiled function
    # against the eager rewritten one (``verify_compiled``).
    check_seconds: float = 0.0
    forms: list[FormChoice] = field(default_factory=list)  # never slower: per band of signatures
    # Iterations the vectorized branches stood for, over the counted calls (``loop_ran``)
    iterations: int = 0

    def add_loop(self, lineno: int, vectorized: bool, strategy: str, reason: str) -> LoopReport:
        loop = LoopReport(self.filename, lineno, vectorized, strategy if vectorized else "kept", reason)
        self.loops.append(loop)
        return loop

    def loop_ran(self, lineno: int, vectorized: bool, failure: str = "",
                 trips: Callable[[], tuple] | None = None) -> None:
        """Count one run of the runtime check of the vectorized loop at ``lineno``; ``trips``
        gives, per level of the original loop nest, the sequences it iterates in step: the
        product of each level's shortest length is added to ``iterations`` (nothing when a
        sequence has no length or it raises)."""
        count = 0
        if vectorized and trips is not None:
            try:
                count = math.prod(min(len(s) for s in level) for level in trips())
            except Exception:
                pass  # an iterator, or a name the original binds first: the count stays low
        self.iterations += count
        loop = next((l for l in self.loops if l.lineno == lineno and l.vectorized), None)
        if loop is None:
            return
        loop.iterations += count
        if vectorized:
            loop.vectorized_runs += 1
        else:
            loop.original_runs += 1
        loop.last_failure = failure or loop.last_failure

    def ran_vectorized(self, loop: LoopReport) -> frozenset[int]:
        """The lines of the loops whose vectorized forms ran ``loop`` vectorized in the counted
        calls, without raising: its own line when its vectorized branch ran, else those of the
        loops of its file around it that ran so (an inner loop that is part of its outer loop's
        vectorized form counts no run of its own). Empty: it did not run vectorized."""
        if not loop.vectorized or loop.failed_runs:
            return frozenset()
        if loop.vectorized_runs:
            return frozenset({loop.lineno})
        return frozenset(l.lineno for l in self._around(loop)
                         if l.vectorized_runs and not l.failed_runs)

    def _around(self, loop: LoopReport) -> list[LoopReport]:
        """The reported loops of ``loop``'s file whose statements hold it."""
        around = enclosing_loops(loop.filename, loop.lineno)
        return [l for l in self.loops if l.filename == loop.filename and l.lineno in around]

    def _runs_around(self, loop: LoopReport) -> str:
        """For a vectorized loop with no counted run of its own: the counts of the innermost
        loop around it that counted runs, whose vectorized form holds its own (it runs only
        inside it), so that a report does not say "vectorized" of an inner loop whose outer loop
        ran as written every time; with none, once calls were counted, that the calls did not
        reach it (a branch not taken)."""
        if not loop.vectorized or loop.vectorized_runs or loop.original_runs:
            return ""
        outer = [l for l in self._around(loop) if l.vectorized_runs or l.original_runs]
        if not outer and any(l.vectorized_runs or l.original_runs for l in self.loops):
            return " [not reached in the counted calls]"
        return "".join(f" [ran: only within the vectorized form of line {l.lineno}, which ran "
                       f"vectorized {l.vectorized_runs}, as written {l.original_runs}]"
                       for l in sorted(outer, key=lambda l: l.lineno)[-1:])

    def loop_ran_by_vmap(self, lineno: int) -> None:
        """The vectorized branch of the batched loop at ``lineno`` ran its vmap form."""
        loop = next((l for l in self.loops if l.lineno == lineno and l.vectorized), None)
        if loop is not None:
            loop.vmap_runs += 1

    def loop_ran_as_written(self, lineno: int, reason: str) -> None:
        """The vectorized branch of the loop at ``lineno``, counted as run, ran the loop as
        written after all, for ``reason``."""
        loop = next((l for l in self.loops if l.lineno == lineno and l.vectorized), None)
        if loop is not None:
            loop.vectorized_runs -= 1
            loop.original_runs += 1
            loop.last_failure = reason

    def not_stacked(self, name: str, items: Any) -> str:
        """The reason a loop's check gives when the list ``name`` holds did not stack."""
        return (f"`{name}` was not a tensor or a list or tuple of tensors of one shape, dtype "
                f"and device: {why_not_stacked(items)}")

    def loop_failed(self, lineno: int, error: BaseException) -> None:
        """The vectorized branch of the loop at ``lineno`` raised ``error``."""
        loop = next((l for l in self.loops if l.lineno == lineno and l.vectorized), None)
        if loop is not None:
            loop.failed_runs += 1
            loop.last_failure = f"raised {type(error).__name__}: {error}".split("\n")[0]

    def __str__(self) -> str:
        lines = [f"optimize_loss report for {self.function} ({self.filename}:{self.lineno})"]
        if self.passes_run:
            lines.append("  passes: " + ", ".join(self.passes_run))
        lines += [f"  {loop}{self._runs_around(loop)}"
                  for loop in sorted(self.loops, key=lambda l: l.lineno)]
        if not self.loops:
            lines.append("  no loops")
        if self.target_only:
            lines.append("  target-only (hoisted, no autograd): " + ", ".join(self.target_only))
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  form: {f}" for f in self.forms]
        lines += [f"  fallback: {f}" for f in self.fallbacks]
        return "\n".join(lines)
