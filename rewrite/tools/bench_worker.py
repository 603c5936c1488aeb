"""LossBench worker: measures (example, variant) jobs in a subprocess, so that the bench can stop
any job at its time budget (a naive loop or a torch.compile of one can take minutes).

``python -m rewrite.tools.bench_worker SPEC_JSON``; SPEC has ``jobs`` (each ``path``: an example file,
``variant``: one that ``build`` knows, with ``@b<N>`` for the first N rows of the bench inputs,
``budget``: seconds for the steady calls, ``first_budget``: for the calls before them), ``threads``, ``backend`` and ``min_time``. Every result is written to stdout as one JSON line, tagged with its
job's index, as soon as it is known (``start``, ``first``, ``steady_budget``, ``sample``, ``info``,
``error``, ``done``), so a worker killed at a budget still leaves the calls that finished.
"""
from __future__ import annotations

import functools
import gc
import importlib.util
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from passes.report import Report

from ..backend import backend as rewrite_backend
from ..decorator import optimize_loss
from ..keep_faster import TRIAL_CALLS
from ..offline_split import split
from ..loop_choice import region_steps
from ..runtime import VmappedRegion
from ..testing import differences, differentiable_inputs
from .host_syncs import count_host_syncs

COMPILED = {"naive_compiled", "optimized_compiled", "expert_compiled", "backend_compiled"}
# At bench size, float32 sums over 1e5-1e6 terms in another order (vectorized, or fused by
# Inductor) drift past rewrite.testing's small-size defaults near zero; a wrong rewrite is off by
# far more. The small-size check against the naive code keeps the defaults.
BENCH_TOLERANCE = (1e-3, 1e-4)  # rtol, atol
PER_SAMPLE_ROWS = 256  # loop target L3 judges per-sample losses at B=256 (first rows of the bench inputs)

_out = sys.stdout


def emit(event: str, job: int, **fields: Any) -> None:
    _out.write(json.dumps({"event": event, "job": job, **fields}) + "\n")
    _out.flush()


@functools.lru_cache(maxsize=None)
def load_example(path: str) -> Any:
    """Import an example module from its file (its directory goes on sys.path, as for a script)."""
    path = Path(path).resolve()
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"lossbench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_inputs(module: Any, size: str) -> tuple:
    """The inputs of ``size``: ``small``, ``bench``, or ``b<N>``, the first N rows of the bench inputs."""
    if not size.startswith("b") or size == "bench":
        return module.make_inputs(size)
    inputs = module.make_inputs("bench")
    rows = next(a.shape[0] for a in inputs if isinstance(a, torch.Tensor) and a.dim())
    return tuple(_first_rows(a, rows, int(size[1:])) for a in inputs)


def _first_rows(a: Any, rows: int, keep: int) -> Any:
    # Only tensors batched like the first one are cut; weights and scalars stay whole.
    if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == rows:
        return a[:keep].detach().clone().requires_grad_(a.requires_grad)
    return a


def fwd_bwd(fn: Callable, inputs: tuple) -> Callable[[], None]:
    """One training step's worth of loss work: forward, then the gradients of every input
    that requires grad (``autograd.grad``, so no ``.grad`` accumulates between repeats)."""
    wrt = list(differentiable_inputs(inputs, {}).values())

    def call() -> None:
        out = fn(*inputs)
        if wrt and out.requires_grad:
            torch.autograd.grad(out, wrt, torch.ones_like(out), allow_unused=True)
    return call


def timed(call: Callable[[], None]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


# An original at most this many times slower than the rewrite is timed alongside it (P7), for
# at least this long and this many rounds of the two (within the job's budget).
PAIR_WITHIN = 3.0
P7_MIN_TIME = 1.0
P7_MIN_ROUNDS = 16
LOOP_ROUNDS = 12  # rounds of a loop's per-loop speedup (within the budget): an interval from 6


def past_trial(call: Callable[[], None], fn: Any, deadline: float) -> None:
    """Run the calls in which the optimized function ``fn`` times its rewritten form against the
    original for these inputs (``rewrite.keep_faster``), up to the call that makes the first
    choice: they belong to the first calls, not the steady state (the checks of a close choice
    at spaced calls after it do)."""
    report = fn.report
    for _ in range(TRIAL_CALLS + 1):
        if time.perf_counter() > deadline or report.forms or report.fallbacks \
                or fn.rewritten_function() is fn.__wrapped__:
            return
        call()


def steady(call: Callable[[], None], deadline: float, min_time: float, max_samples: int = 50,
           previous: float = 0.0, job: int | None = None,
           paired: Callable[[], None] | None = None, min_samples: int = 3) -> list[float]:
    """Per-call seconds after warm-up, one sample per block of calls, at least ``min_samples``
    and ``min_time`` seconds of them unless ``deadline`` comes first.

    The warm-up call is also the estimate that sizes the blocks (>= 2 ms each, so timer
    resolution and Python noise stay out of microsecond-scale numbers). ``previous`` is the
    expected cost of that call (an eager first call), to stop before it when it cannot fit.
    Samples are emitted for ``job`` as they come. ``paired``: a second call timed in blocks of
    the same size that alternate with ``call``'s, which of the two goes first turning every
    round, so that drift, noise and order hit both alike (for ratios of a few percent); its
    samples are emitted at the end as info ``paired_samples``, and on one thread the process CPU
    time of both calls' blocks as ``cpu_samples`` and ``paired_cpu_samples``, round by round
    (another process taking the core inflates wall time, not CPU time)."""
    gc.collect()
    if time.perf_counter() + previous > deadline:
        return []
    samples, other, cpu = alternating(
        call, paired, deadline, min_time, max_samples, min_samples,
        None if job is None else lambda seconds: emit("sample", job, seconds=seconds))
    if paired and job is not None:
        emit("info", job, paired_samples=other, **({"cpu_samples": cpu[0], "paired_cpu_samples": cpu[1]}
                                                   if cpu[0] else {}))
    return samples


def alternating(call: Callable[[], None], paired: Callable[[], None] | None, deadline: float,
                min_time: float, max_samples: int, min_samples: int,
                on_sample: Callable[[float], None] | None = None
                ) -> tuple[list[float], list[float], tuple[list[float], list[float]]]:
    """``steady``'s rounds: per-call seconds of ``call`` and of ``paired`` (none without it),
    one sample of each per round after the estimate call, and on one thread (else empty) the
    process CPU time per call of both blocks, round by round; ``on_sample`` gets each of
    ``call``'s samples as it comes."""
    estimate = timed(call)
    samples, other = [estimate], [timed(paired)] if paired else []
    if on_sample is not None:
        on_sample(estimate)
    block = max(1, int(2e-3 / max(estimate, 1e-7)))
    calls = [c for c in (call, paired) if c]
    cpu: tuple[list[float], list[float]] = ([], [])
    start = time.perf_counter()
    while len(samples) < max_samples and (time.perf_counter() - start < min_time or len(samples) < min_samples):
        if time.perf_counter() + 1.5 * estimate * block * len(calls) > deadline:
            break
        turn = zip(calls, (samples, other), cpu)
        for fn, out, used in (turn if len(samples) % 2 else reversed(list(turn))):
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(block):
                fn()
            out.append((time.perf_counter() - t0) / block)
            used.append((time.process_time() - c0) / block)
        if on_sample is not None:
            on_sample(samples[-1])
    one_thread = torch.get_num_threads() == 1
    return samples, other, cpu if one_thread and paired else ([], [])


_warmed_up = False


def warm_up_inductor(backend: str) -> None:
    """The first torch.compile in a process pays one-time imports and set-up; pay it here so that
    every measured first call pays only its own compilation."""
    global _warmed_up
    fn = torch.compile(lambda x: (x.sin() * 2).sum(), backend=backend)
    x = torch.randn(8, requires_grad=True)
    fn(x).backward()
    _warmed_up = True


class Counted:
    """A Dynamo backend that runs ``backend`` and keeps the seconds spent in it and the node
    count of every graph it was given."""

    def __init__(self, backend: Callable):
        self.backend, self.seconds, self.nodes = backend, 0.0, []

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list, **kwargs: Any) -> Callable:
        self.nodes.append(len(gm.graph.nodes))
        start = time.perf_counter()
        try:
            return self.backend(gm, example_inputs, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


class ThroughBackend:
    """``torch.compile(fn, backend="optimize_loss")``, with ``backend`` as ``rewrite.backend``'s
    inner compiler. ``info()``: what compiling did so far: the node counts of Dynamo's graphs
    before and after our passes, the passes' seconds (all of the backend's time but the inner
    compiler's), and the loops re-rolled or left (the report's notes)."""

    def __init__(self, fn: Callable, backend: str):
        self.report = Report(fn.__name__, fn.__code__.co_filename, fn.__code__.co_firstlineno)
        self.inner = Counted(torch._dynamo.lookup_backend(backend))
        self.outer = Counted(rewrite_backend(inner=self.inner, report=self.report))
        self.compiled = torch.compile(fn, backend=self.outer)

    def __call__(self, *args: Any) -> Any:
        return self.compiled(*args)

    def info(self) -> dict:
        return {"graph_nodes": self.outer.nodes, "rerolled_nodes": self.inner.nodes,
                "passes_s": self.outer.seconds - self.inner.seconds, "notes": self.report.notes}


def dynamo_seconds() -> float | None:
    """Seconds Dynamo spent since the last ``compilation_time_metrics.clear()`` outside the
    backends it called (tracing bytecode, building graphs and guards), from its own timers."""
    metrics = torch._dynamo.utils.compilation_time_metrics
    if "_compile.compile_inner" not in metrics:
        return None
    return sum(metrics["_compile.compile_inner"]) - sum(metrics.get("OutputGraph.call_user_compiler", []))


def build(base: str, module: Any, backend: str, inputs: tuple) -> Callable:
    if base in COMPILED:
        torch.compiler.reset()  # no compiled code left from earlier variants: a cold first call
        torch._dynamo.utils.compilation_time_metrics.clear()
    if base == "naive_eager":
        return module.naive
    if base == "naive_compiled":
        return torch.compile(module.naive, backend=backend)
    if base == "expert_eager":
        return module.expert
    if base == "expert_compiled":
        return torch.compile(module.expert, backend=backend)
    if base == "backend_compiled":
        return ThroughBackend(module.naive, backend)
    if base == "optimized_eager":
        return optimize_loss(module.naive, compile=False)
    if base == "optimized_compiled":
        return optimize_loss(module.naive, compile=True, backend=backend)
    if base == "optimized_per_loop":  # timed loop by loop (``loop_speedups``)
        return optimize_loss(module.naive, compile=False)
    if base == "optimized_cached":
        # Dynamo captures the graph so the target branch is hoisted and cached; eager kernels,
        # so the comparison with the hand-precomputed expert measures the caching alone.
        return optimize_loss(module.naive, backend="eager")
    if base == "optimized_uncached":  # the same without hoisting: what hoisting and caching buy
        return optimize_loss(module.naive, backend="eager", hoist=False)
    if base == "expert_precomputed":
        return precomputed_expert(module, inputs)
    raise ValueError(f"unknown variant {base!r}")


def precomputed_expert(module: Any, inputs: tuple) -> Callable:
    """The expert who runs the target branch once by hand (``rewrite.split``'s documented
    baseline): the target part runs here, outside the timed calls; the result takes the same
    arguments as the loss and runs only the gradient path."""
    target_transform, core = split(module.expert, *inputs)
    fixed = target_transform(*[a for a in inputs if isinstance(a, torch.Tensor) and not a.requires_grad])
    return lambda *args: core(*[a for a in args if isinstance(a, torch.Tensor) and a.requires_grad], *fixed)


def rewrite_info(module: Any) -> dict:
    """Rewrite time (parse + passes + rebuild, no torch.compile; input-independent by
    construction: it runs before inputs are seen) and what the passes did."""
    seconds = []
    for _ in range(3):
        fresh = optimize_loss(module.naive, compile=False)
        seconds.append(timed(lambda: fresh.report))
    report = fresh.report
    return {"rewrite_s": statistics.median(seconds), "loops": loop_rows(report),
            "fallbacks": [str(f) for f in report.fallbacks],
            "passes": report.passes_run}


def loop_rows(report: Report) -> list[list]:
    """Per loop of ``report``: line, vectorized, strategy, reason, how often its vectorized form
    ran in the counted calls (0 before any call), and whether it ran vectorized in them, by
    itself or inside an outer loop's vectorized form (``Report.ran_vectorized``)."""
    return [[loop.lineno, loop.vectorized, loop.ran_as(), loop.reason, loop.vectorized_runs,
             bool(report.ran_vectorized(loop))] for loop in report.loops]


def run_job(job: int, path: str, name: str, budget: float, spec: dict,
            first_budget: float) -> None:
    deadline = time.perf_counter() + first_budget  # the first calls' (``Settings``), then budget
    base, _, size = name.partition("@")
    size = size or "bench"
    module = load_example(path)
    if base in COMPILED and not _warmed_up:
        emit("info", job, inductor_warmup_s=timed(lambda: warm_up_inductor(spec["backend"])))
    if base == "optimized_eager" and size == "bench":
        emit("info", job, **rewrite_info(module))
    inputs = make_inputs(module, size)
    fn = build(base, module, spec["backend"], inputs)
    call = fwd_bwd(fn, inputs)
    first = timed(call)
    emit("first", job, seconds=first)
    if base == "optimized_per_loop":
        loop_speedups(fn, inputs, budget, spec["min_time"], lambda: emit("steady_budget", job),
                      lambda rows: emit("info", job, per_loop=rows))
        return
    if base == "optimized_eager" and size == "bench":
        # The report after the first call, which counted its loops' runs: what the calls reached
        # and ran, replacing what ``rewrite_info`` read before any call (``fallbacks`` too)
        emit("info", job, loops=loop_rows(fn.report), fallbacks=[str(f) for f in fn.report.fallbacks])
    if base in COMPILED:  # of which: Dynamo's own time, and for the backend, our passes'
        emit("info", job, dynamo_s=dynamo_seconds(), **(fn.info() if base == "backend_compiled" else {}))
    if base == "optimized_compiled":  # of which: the first call's compiled-vs-eager check
        emit("info", job, check_s=fn.report.check_seconds)
    if base == "expert_eager" and size == "bench":
        # Roofline: the least traffic of any implementation reads every input once and writes
        # every gradient once.
        tensors = [a for a in inputs if isinstance(a, torch.Tensor)]
        emit("info", job, min_bytes=sum(t.nbytes * (1 + t.requires_grad) for t in tensors))
    if base not in ("naive_eager", "expert_eager"):
        # Never time a wrong result silently: the expert is the reference (checked equal to the
        # naive version by the examples' own tests, and fast at bench size).
        emit("info", job, problems=differences(module.expert, fn, inputs, {}, *BENCH_TOLERANCE))
    if base == "optimized_eager" and size == "bench":
        # The same rewrite at the small size: its own fresh wrapper, compared with the naive code.
        small = make_inputs(module, "small")
        fresh = optimize_loss(module.naive, compile=False)
        small_call = fwd_bwd(fresh, small)
        first_small = timed(small_call)
        samples = steady(small_call, deadline, 0.1, 10)  # none when the budget is spent
        emit("info", job, first_small_s=first_small, problems_small=differences(module.naive, fresh, small, {}),
             **({"steady_small_s": statistics.median(samples)} if samples else {}))
        # Host syncs of one steady call (after the calls above), the naive code's and the rewrite's.
        emit("info", job, host_syncs=[sum(count_host_syncs(f, *small).values()) for f in (module.naive, fresh)])
    if base.startswith("optimized_"):
        past_trial(call, fn, deadline)
        # The choice of form is a first-call cost, like compiling: the steady calls get their
        # own budget (the harness restarts its clock at this event too).
        emit("steady_budget", job)
        deadline = time.perf_counter() + budget
    if base == "optimized_eager" and size == "b256":
        # The B=256 target is a ratio of a few percent: time the expert in alternating blocks of
        # the same process instead of as a job of its own.
        steady(call, deadline, spec["min_time"], max_samples=250, previous=first, job=job,
               paired=fwd_bwd(module.expert, inputs))
    elif base == "backend_compiled":
        # Target B1 is a ratio too: the compiled expert (compiled again here, after the first
        # call was timed) in alternating blocks.
        expert = fwd_bwd(torch.compile(module.expert, backend=spec["backend"]), inputs)
        expert()
        steady(call, deadline, spec["min_time"], max_samples=250, job=job, paired=expert)
    elif base == "optimized_compiled" and size == "bench":
        # The column: its own blocks (next to an expert far slower than itself, blocks
        # alternating with the expert's start with cold caches, up to 3x slower). Then target P1,
        # a ratio of a few percent: the compiled expert in alternating blocks, their CPU times.
        steady(call, deadline, spec["min_time"], job=job)
        expert = fwd_bwd(torch.compile(module.expert, backend=spec["backend"]), inputs)
        expert()
        _, _, cpu = alternating(call, expert, deadline, spec["min_time"], 250, 3)
        emit("info", job, p1_cpu_samples=cpu[0], p1_expert_cpu_samples=cpu[1])
    elif base == "optimized_eager" and size == "bench" and original_is_close(fn):
        # Target P7 (never slower) is a ratio near 1 here: the original in alternating blocks,
        # enough rounds for the median of their ratios to have a useful interval.
        steady(call, deadline, max(spec["min_time"], P7_MIN_TIME), previous=first, job=job,
               paired=fwd_bwd(module.naive, inputs), min_samples=P7_MIN_ROUNDS + 1)
    else:
        steady(call, deadline, spec["min_time"], previous=0.0 if base in COMPILED else first, job=job)
    if base == "optimized_eager" and size == "bench":
        # Which form ran the steady calls, and the timings that chose it (``Report.forms``)
        emit("info", job, forms=[str(f) for f in fn.report.forms], runs_original=runs_original(fn))


def loop_speedups(fn: Any, inputs: tuple, budget: float, min_time: float,
                  started: Callable[[], None], done: Callable[[list[dict]], None]) -> None:
    """Per loop of ``fn``'s report after its first call: what it is and what ran (``runs``, and
    ``ran_vectorized``: by itself or inside an outer loop's vectorized form, counted in that
    call), and for a loop that ran vectorized, the rewritten function with that loop as written
    (``as_written``: its line, those of the loops whose vectorized form ran it, and the one
    whose vmapped body calls it when as written it cannot run there: ``_runnable_form``) timed
    against the rewritten function, forward+backward, in alternating rounds for at least
    ``min_time`` and ``LOOP_ROUNDS`` rounds within ``budget`` seconds per loop (``samples``,
    ``paired_samples``: the rewritten function's and the loop's form's seconds per call; on one
    thread also their CPU times, ``cpu_samples`` and ``paired_cpu_samples``); then, in the
    same way, the loop's region alone (``region``: ``_timed_region``). ``started()`` before
    each of the two; ``done(rows)`` with the rows so far after each loop."""
    report, rows = fn.report, []
    rewritten = fwd_bwd(fn.rewritten_function(), inputs)
    ran = [report.ran_vectorized(loop) for loop in report.loops]
    # a caller as written with the loops its vectorized form ran: its branch as written may
    # plan them again (vectorized, calling the helper under vmap)
    callers = [[loop.lineno] + [other.lineno for other, within in zip(report.loops, ran)
                                if loop.lineno in within and other is not loop]
               for loop, lines in zip(report.loops, ran) if lines == {loop.lineno}]
    for loop, lines in zip(report.loops, ran):
        row = {"file": loop.filename, "line": loop.lineno, "vectorized": loop.vectorized,
               "strategy": loop.ran_as(), "runs": loop.runs(), "ran_vectorized": bool(lines)}
        rows.append(row)
        if lines:
            started()
            try:
                row["as_written"], kept = _runnable_form(fn, lines | {loop.lineno}, callers, inputs)
                samples, paired, cpu = alternating(rewritten, kept, time.perf_counter() + budget,
                                                   min_time, 250, LOOP_ROUNDS)
            except Exception as exc:
                message = str(exc).partition("\n")[0][:200]
                row["error"] = f"{type(exc).__name__}: {message}"
            else:
                row.update(samples=samples, paired_samples=paired, cpu_samples=cpu[0],
                           paired_cpu_samples=cpu[1])
                started()
                row["region"] = _timed_region(fn, row["as_written"], callers, inputs, budget, min_time)
        done(rows)


def _timed_region(fn: Any, lines: list[int], callers: list[list[int]], inputs: tuple, budget: float,
                  min_time: float) -> dict:
    """The loop's own time: the region of the loops at ``lines`` (``OptimizedFunction.loop_region``:
    ``line``, the guard that is the region, with that of the first of ``callers`` whose region
    holds it when it runs inside a vmapped body; ``live_ins``; ``live_outs``, with the live-ins
    it changes) vectorized against as written (``region_steps``), in alternating rounds as the
    whole call's (``samples``: vectorized, ``paired_samples``: as written; on one thread their
    CPU times); ``error`` instead when it cannot be isolated or run."""
    error = None
    for caller in [[]] + [c for c in callers if c[0] not in lines]:
        try:
            region = fn.loop_region(lines + caller, *inputs)
            vectorized, written, names = region_steps(region)
            samples, paired, cpu = alternating(vectorized, written, time.perf_counter() + budget,
                                               min_time, 250, LOOP_ROUNDS)
        except Exception as exc:
            error = error or f"{type(exc).__name__}: {str(exc).partition(chr(10))[0][:200]}"
            if not isinstance(exc, VmappedRegion):  # only then is the region its caller's
                break
        else:
            return {"line": region.line, "live_ins": sorted(region.live_ins), "live_outs": names,
                    "samples": samples, "paired_samples": paired, "cpu_samples": cpu[0],
                    "paired_cpu_samples": cpu[1]}
    return {"error": error}


def _runnable_form(fn: Any, lines: set[int], callers: list[list[int]],
                   inputs: tuple) -> tuple[list[int], Callable[[], None]]:
    """The lines and the call (forward+backward) of the rewritten function with the loops at
    ``lines`` as written, called once to see it run; when it raises, with the first loop of
    ``callers`` as written too with which it runs (a loop of a helper that another loop's
    vmapped body calls cannot run as written inside it: with that loop as written, and the
    loops its vectorized form ran, which its branch as written may vectorize again, it runs),
    else the first error."""
    error = None
    for caller in [set()] + [set(c) for c in callers if c[0] not in lines]:
        form = sorted(lines | caller)
        call = fwd_bwd(fn.rewritten_with_loops_as_written(form), inputs)
        try:
            call()
        except Exception as exc:
            error = error or exc
        else:
            return form, call
    raise error


def original_is_close(fn: Any) -> bool:
    """The optimized function's choice of form found the original at most ``PAIR_WITHIN`` times
    slower, or chose it, or nothing was timed (nothing rewritten: the original runs); never when
    the original was not run (its time is only a lower bound from its loop iterations)."""
    forms = fn.report.forms
    return not forms or (not forms[-1].iterations
                         and forms[-1].original_s <= PAIR_WITHIN * forms[-1].rewritten_s)


def runs_original(fn: Any) -> bool:
    """The optimized function's steady calls ran the original function itself: nothing was
    rewritten, the rewritten form fell back, or the choice of form kept the original."""
    forms = fn.report.forms
    if forms:
        return forms[-1].chosen == "original"
    # a fallback after torch.compile failed runs the eager rewrite, not the original
    return fn.rewritten_function() is fn.__wrapped__ or any(
        f.running == "the original function" for f in fn.report.fallbacks)


def main(argv: list[str]) -> int:
    global _out
    spec = json.loads(argv[0])
    # Results own stdout; anything the example or torch prints goes to stderr.
    _out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    torch.set_num_threads(spec["threads"])
    # Cold compiles, as on a user's first run: no on-disk graph cache from earlier bench runs.
    torch._inductor.config.force_disable_caches = True
    for job, item in enumerate(spec["jobs"]):
        emit("start", job)
        try:
            run_job(job, item["path"], item["variant"], item["budget"], spec, item["first_budget"])
        except Exception as exc:
            print(traceback.format_exc(), file=sys.stderr)
            emit("error", job, message=f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300])
        emit("done", job)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
