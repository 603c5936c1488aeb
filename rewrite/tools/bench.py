"""LossBench: ``python -m rewrite bench [SUITE_DIR] [--quick] [--cases a,b] [--json OUT] [--markdown OUT]``.

``--per-loop``: instead, each loop's own speedup (``rewrite.tools.bench_loops``); its JSON has
``meta``, ``cases`` (name -> ``case``, ``variants``: the raw ``optimized_per_loop`` job, its rows
in ``per_loop``, ``loops``: those rows with ``where``, ``class``, ``why`` and ``speedup``),
``counts`` (``bench_loops.loop_counts``) and ``targets`` (R1).

For every example module of the suite (``naive``, ``expert``, ``make_inputs(size)``, ``CASE``),
forward+backward at the ``bench`` size, median of repeats after warm-up, with a fixed thread count:
naive eager, ``torch.compile(naive)``, ``optimize_loss(naive)`` with ``compile=False`` and
``compile=True``, expert eager and expert compiled (first call and steady), plus the expert with a
precomputed target branch (``rewrite.split``) for ``CASE["fixed_target"]`` cases and the
``per_sample_*`` cases at B=256. Every optimized result is compared with the expert (values and
gradients, ``rewrite.testing.differences``) and a mismatch is marked in every table.

The measurements run in a worker process (``rewrite.tools.bench_worker``), one job (case, variant) after
the other; a job over its budget is killed and shown as ``> budget`` (a naive loop, or
torch.compile of one, can take minutes) and a new worker takes the jobs left. Compiles are cold
(Inductor caches off, Dynamo reset before each compiled variant) after a one-time Inductor
warm-up per worker, so first calls compare compile work only.

JSON (``--json``): ``meta`` (command, date, machine, cores, torch, python, threads, backend,
budget_s, compile_budget_s, min_time_s, quick, compiled_cases, bandwidth_gb_s, seconds),
``overhead`` (direct_us, wrapped_us, overhead_us: null when below measurement noise, below_noise,
rounds), ``cases`` (name -> ``case``: the CASE dict;
``variants``: name -> raw result (status "ok" / "over_budget" / "error", budget_s, first_s,
samples: per-call seconds, problems, error, and per variant rewrite_s, loops, fallbacks,
first_small_s, steady_small_s, min_bytes, inductor_warmup_s, check_s: the compiled-vs-eager check
in optimize_loss compiled's first call, host_syncs: [naive, optimized] per call at the small size,
paired_samples: per-call seconds of the call timed in alternating blocks, the expert at B=256 and
the original at bench size when it is close, P7); ``steady``: name -> {seconds, runs,
lower_bound}; ``best_optimized``, ``best_expert``; ``ratios``: name -> {value, lower_bound};
``roofline``; ``backend_rows``: see ``bench_report.backend_rows``; the backend variants' raw
results also have dynamo_s, passes_s, graph_nodes, rerolled_nodes, notes) and ``targets`` (id -> target, value, met: true / false / null, detail). Times are
in seconds; null is "not measured".
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime
import json
import os
import platform
import queue
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import bench_loops
from .bench_report import LABELS, analyse, backend_jobs, backend_markdown, fmt_time, markdown, targets
from .bench_worker import COMPILED
from ..decorator import optimize_loss

# --quick: bench sizes everywhere, but the slow parts (naive loops, Inductor compiles) on a diet.
QUICK = {"budget": 2.0, "compile_budget": 30.0, "min_time": 0.1, "compiled": ["slow_add"]}
FULL = {"budget": 60.0, "compile_budget": 120.0, "min_time": 1.0, "compiled": None}  # None: all
STARTUP_S = 60.0  # a worker importing torch and the example, before its first variant starts
GRACE_S = 1.0     # the worker stops its own repeats at the budget; the kill is the backstop


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", nargs="?", default="examples", metavar="SUITE_DIR",
                        help="directory of example modules (default: examples/)")
    parser.add_argument("--quick", action="store_true",
                        help=f"under 3 minutes: bench sizes, small budgets, compiled variants only "
                             f"on {', '.join(QUICK['compiled'])}")
    parser.add_argument("--cases", help="comma-separated case names (module stems)")
    parser.add_argument("--json", metavar="OUT", help="write all results as JSON")
    parser.add_argument("--markdown", metavar="OUT", help="write the README tables")
    parser.add_argument("--threads", type=int, help="torch threads (default: 1)")
    parser.add_argument("--backend", help="torch.compile backend (default: inductor)")
    parser.add_argument("--compiled", metavar="CASES",
                        help="cases that get compiled variants, \"\" for none (default: all; --quick: slow_add)")
    parser.add_argument("--budget", type=float, metavar="S",
                        help=f"seconds per eager variant (default {FULL['budget']:g}, --quick {QUICK['budget']:g})")
    parser.add_argument("--compile-budget", type=float, metavar="S",
                        help=f"seconds per compiled variant (default {FULL['compile_budget']:g}, "
                             f"--quick {QUICK['compile_budget']:g})")
    parser.add_argument("--backend-rows", action="store_true",
                        help='only the torch.compile(naive, backend="optimize_loss") rows: '
                             "cases with CASE['backend_rows'], all compiled")
    parser.add_argument("--per-loop", action="store_true",
                        help="only the per-loop speedups: each loop that ran vectorized, timed as "
                             "written against the rewritten function (rewrite.tools.bench_loops)")
    parser.add_argument("--min-time", type=float, metavar="S",
                        help=f"seconds of repeats per steady time (default {FULL['min_time']:g}, "
                             f"--quick {QUICK['min_time']:g})")


# -- the suite ------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    path: Path
    info: dict  # the module's CASE


def discover(suite: Path, names: list[str] | None) -> list[Case]:
    """Example modules of ``suite``, read without importing them: a module counts when it defines
    ``naive``, ``expert`` and ``make_inputs`` and a literal ``CASE`` at top level."""
    cases = []
    for path in sorted(suite.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        defs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        found = [n.value for n in tree.body if isinstance(n, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "CASE" for t in n.targets)]
        if {"naive", "expert", "make_inputs"} <= defs and found:
            try:
                cases.append(Case(path.stem, path, ast.literal_eval(found[0])))
            except ValueError:
                raise SystemExit(f"bench: {path}: CASE must be a literal dict") from None
    if names is not None:
        unknown = set(names) - {c.name for c in cases}
        if unknown:
            raise SystemExit(f"bench: no case named {', '.join(sorted(unknown))} in {suite}")
        cases = [c for c in cases if c.name in names]
    return cases


def plan(case: Case, compiled: bool) -> list[str]:
    """The variants of one case, cheap and bounded first; the naive ones, which may hit their
    budget, last."""
    variants = ["expert_eager", "optimized_eager"]
    if case.info.get("fixed_target") or case.info.get("target_preprocessing"):
        variants.append("optimized_cached")
    if case.info.get("fixed_target"):
        variants.append("expert_precomputed")
    if case.info.get("target_preprocessing"):
        variants.append("optimized_uncached")
    if case.name.startswith("per_sample_"):
        variants.append("optimized_eager@b256")  # its expert runs paired with it: one job
    if compiled:
        variants += ["expert_compiled", "optimized_compiled"]
    variants.append("naive_eager")
    if compiled:
        variants.append("naive_compiled")
        variants += [v for v in backend_jobs(case.info) if v not in variants]
    return variants


# -- running a case in workers --------------------------------------------------------------
@dataclass
class Settings:
    threads: int
    backend: str
    budget: float
    compile_budget: float
    min_time: float

    def budget_for(self, variant: str) -> float:
        return self.compile_budget if variant.partition("@")[0] in COMPILED else self.budget

    def first_budget_for(self, variant: str) -> float:
        """Until a job's first calls are done: an optimize_loss variant's include its choice of
        form, which may run the (slow) original once, first-call work like compiling."""
        base = variant.partition("@")[0]
        return self.compile_budget if base.startswith("optimized_") else self.budget_for(variant)


@dataclass
class Progress:
    cases: list[str]
    start: float = field(default_factory=time.perf_counter)

    def say(self, case: str, text: str) -> None:
        elapsed = time.perf_counter() - self.start
        print(f"[{elapsed:6.1f} s] {case} ({self.cases.index(case) + 1}/{len(self.cases)}): {text}",
              file=sys.stderr, flush=True)


def run_jobs(jobs: list[tuple[Case, str]], settings: Settings, progress: Progress) -> dict[str, dict]:
    """Results per case and variant. One worker runs the jobs in order; when a job hits its
    budget (or the worker dies), a new worker takes the jobs left."""
    raw: dict[str, dict] = {case.name: {} for case, _ in jobs}
    done = 0
    while done < len(jobs):
        done += _run_worker(jobs[done:], settings, raw, progress)
    return raw


def _run_worker(jobs: list[tuple[Case, str]], settings: Settings, raw: dict[str, dict],
                progress: Progress) -> int:
    """Run one worker over ``jobs``; returns how many of them it settled (measured, failed, or
    stopped at their budget)."""
    budgets = [settings.budget_for(variant) for _, variant in jobs]
    first_budgets = [settings.first_budget_for(variant) for _, variant in jobs]
    spec = {"jobs": [{"path": str(case.path), "variant": variant, "budget": budget,
                      "first_budget": first}
                     for (case, variant), budget, first in zip(jobs, budgets, first_budgets)],
            "threads": settings.threads, "backend": settings.backend, "min_time": settings.min_time}
    with tempfile.TemporaryFile("w+") as stderr:
        # Own session: the kill also reaches compile workers Inductor may have started.
        proc = subprocess.Popen([sys.executable, "-m", "rewrite.tools.bench_worker", json.dumps(spec)],
                                stdout=subprocess.PIPE, stderr=stderr, text=True,
                                start_new_session=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
        current, settled, deadline = None, 0, time.perf_counter() + STARTUP_S
        phase_budget = 0.0  # the current job's budget: for its first calls, then its steady ones

        def result(job: int) -> dict:
            case, variant = jobs[job]
            return raw[case.name].setdefault(variant, {"status": "running", "budget_s": budgets[job],
                                                       "samples": []})

        def say(job: int, text: str) -> None:
            case, variant = jobs[job]
            progress.say(case.name, f"{LABELS.get(variant, variant)}{text}")

        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                line = "timeout"
            if line == "timeout" or line is None:  # over budget, or the worker exited
                if line == "timeout":
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                if settled == len(jobs):
                    return settled
                job = settled if current is None else current
                if line == "timeout" and current is not None:
                    result(job)["status"] = "over_budget"
                    say(job, f": > {phase_budget:g} s budget, stopped")
                else:
                    stderr.seek(0)
                    tail = " ".join(stderr.read().split()[-40:])
                    result(job).update(status="error", error=f"worker stopped ({proc.returncode}): {tail}")
                    say(job, ": " + _describe(result(job)))
                return job + 1
            event = json.loads(line)
            job, kind = event.pop("job"), event.pop("event")
            if kind == "start":
                current, phase_budget = job, first_budgets[job]
                deadline = time.perf_counter() + phase_budget + GRACE_S
                result(job)
                say(job, f" (budget {phase_budget:g} s)")
            elif kind == "first":
                result(job)["first_s"] = event["seconds"]
            elif kind == "steady_budget":  # first calls done: the steady calls' own budget
                phase_budget = budgets[job]
                deadline = time.perf_counter() + phase_budget + GRACE_S
            elif kind == "sample":
                result(job)["samples"].append(event["seconds"])
            elif kind == "info":
                result(job).update(event)
            elif kind == "error":
                result(job).update(status="error", error=event["message"])
            elif kind == "done":
                if result(job)["status"] == "running":
                    result(job)["status"] = "ok"
                say(job, ": " + _describe(result(job)))
                current, settled, deadline = None, job + 1, time.perf_counter() + STARTUP_S


def _pump(stream: Any, lines: queue.Queue) -> None:
    for line in stream:
        if line.startswith("{"):
            lines.put(line)
    lines.put(None)


def _describe(result: dict) -> str:
    if result.get("status") == "error":
        return "error: " + result["error"]
    parts = []
    if "first_s" in result:
        parts.append(f"first {fmt_time(result['first_s'])}")
    if result["samples"]:
        parts.append(f"steady {fmt_time(statistics.median(result['samples']))} "
                     f"({len(result['samples'])} samples)")
    if result.get("problems"):
        parts.append("NOT EQUIVALENT")
    return ", ".join(parts) or "done"


# -- measurements in this process -----------------------------------------------------------
def machine() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def bandwidth_gb_s(nbytes: int, threads: int) -> float:
    """Copy bandwidth (bytes read + written per second) with ``nbytes`` read: the best of several
    copies, since a bound is what the machine can do (other load only slows copies down).

    Copies run on ``threads`` torch threads, the timed variants' count: a bound measured with more
    threads than the variants may use is not one they could reach. Also measured at each
    elementwise case's own size: tensors that fit in cache move faster."""
    torch.set_num_threads(threads)
    src = torch.ones(max(1, nbytes // 4))
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch: page faults are not bandwidth
    seconds = []
    for _ in range(max(10, min(200, int(2**28 / src.nbytes)))):
        start = time.perf_counter()
        dst.copy_(src)
        seconds.append(time.perf_counter() - start)
    return 2 * src.nbytes / min(seconds) / 1e9


def _nothing_to_rewrite(pred, target):
    return ((pred - target) ** 2).mean()


def wrapper_overhead_us(min_time: float) -> dict:
    """P5: per-call cost of ``optimize_loss(fn, compile=False)`` when nothing is rewritten.

    Direct and wrapped calls run in blocks that alternate within one loop, so drift and load hit
    both alike; the overhead is the median of the per-round differences. A median below zero is
    noise, not a negative cost: ``overhead_us`` is then None and ``below_noise`` true."""
    pred, target = torch.randn(16), torch.randn(16)
    wrapped = optimize_loss(_nothing_to_rewrite, compile=False)
    wrapped(pred, target)  # the one-time rewrite attempt is not per-call overhead
    block, direct, wrapped_us = 200, [], []
    end = time.perf_counter() + min_time
    while time.perf_counter() < end or len(direct) < 5:
        for fn, out in ((_nothing_to_rewrite, direct), (wrapped, wrapped_us)):
            start = time.perf_counter()
            for _ in range(block):
                fn(pred, target)
            out.append((time.perf_counter() - start) / block * 1e6)
    overhead = statistics.median(w - d for w, d in zip(wrapped_us, direct))
    return {"direct_us": statistics.median(direct), "wrapped_us": statistics.median(wrapped_us),
            "overhead_us": overhead if overhead >= 0 else None, "below_noise": overhead < 0,
            "rounds": len(direct)}


def command_line(args: argparse.Namespace) -> str:
    parts = ["python -m rewrite bench"]
    if args.suite != "examples":
        parts.append(args.suite)
    if args.quick:
        parts.append("--quick")
    if args.backend_rows:
        parts.append("--backend-rows")
    if args.per_loop:
        parts.append("--per-loop")
    for name in ("cases", "threads", "backend", "compiled", "budget", "compile_budget", "min_time",
                 "json", "markdown"):
        value = getattr(args, name)
        if value is not None:
            parts += ["--" + name.replace("_", "-"), str(value)]
    return " ".join(parts[:1] + [shlex.quote(p) for p in parts[1:]])


def compiled_cases(names: list[str], arg: str | None, default: list[str] | None,
                   quick: bool) -> list[str]:
    """The cases that get compiled variants: ``--compiled``'s comma-separated names (an empty
    value: none), else the default (None: all)."""
    wanted = [n for n in arg.split(",") if n] if arg is not None else default
    compiled = names if wanted is None else [n for n in names if n in wanted]
    if not compiled and arg is None and quick:
        compiled = names[:1]  # --quick on a suite without slow_add: still one compiled case
    return compiled


def run_bench(args: argparse.Namespace) -> int:
    defaults = QUICK if args.quick else FULL
    settings = Settings(threads=args.threads or 1, backend=args.backend or "inductor",
                        budget=args.budget or defaults["budget"],
                        compile_budget=args.compile_budget or defaults["compile_budget"],
                        min_time=args.min_time or defaults["min_time"])
    torch.set_num_threads(settings.threads)  # for the bandwidth and overhead measured here
    suite = Path(args.suite)
    cases = discover(suite, args.cases.split(",") if args.cases else None)
    if args.backend_rows:
        cases = [c for c in cases if c.info.get("backend_rows")]
    if not cases:
        print(f"bench: no examples in {suite}", file=sys.stderr)
        return 1
    names = [c.name for c in cases]
    progress = Progress(names)
    compiled = compiled_cases(names, args.compiled, defaults["compiled"], args.quick)
    if args.backend_rows:
        compiled = names
    if args.per_loop:
        compiled = []
    meta = {"command": command_line(args),
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "machine": machine(), "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "threads": settings.threads,
            "backend": settings.backend, "quick": args.quick, "budget_s": settings.budget,
            "compile_budget_s": settings.compile_budget, "min_time_s": settings.min_time,
            "compiled_cases": compiled}
    print(f"LossBench: {len(cases)} cases, {settings.threads} torch thread(s), {meta['machine']}, "
          f"torch {meta['torch']}; compiled variants on: {', '.join(compiled) or 'none'}", file=sys.stderr)
    if args.per_loop:
        return run_per_loop(args, suite, cases, settings, meta, progress)
    meta["bandwidth_gb_s"] = bandwidth_gb_s(2**28, settings.threads)
    overhead = wrapper_overhead_us(min(settings.min_time, 0.5))
    raw = run_jobs([(c, v) for c in cases for v in (backend_jobs(c.info) if args.backend_rows
                                                    else plan(c, c.name in compiled))], settings, progress)
    analysed = {}
    for case in cases:
        nbytes = raw[case.name].get("expert_eager", {}).get("min_bytes")
        footprint = bandwidth_gb_s(nbytes // 2, settings.threads) if case.info.get("elementwise") and nbytes else None
        analysed[case.name] = analyse(case.info, raw[case.name], meta["bandwidth_gb_s"], footprint)
    infos = {c.name: c.info for c in cases}
    tgts = targets(infos, analysed, raw, overhead)
    meta["seconds"] = time.perf_counter() - progress.start
    text = (backend_markdown(meta, infos, raw, analysed, tgts) if args.backend_rows
            else markdown(meta, infos, raw, analysed, tgts, overhead))
    cases_json = {c.name: {"case": c.info, "variants": raw[c.name], **analysed[c.name]} for c in cases}
    return _write(args, text, {"meta": meta, "overhead": overhead, "cases": cases_json, "targets": tgts})


def run_per_loop(args: argparse.Namespace, suite: Path, cases: list[Case], settings: Settings,
                 meta: dict, progress: Progress) -> int:
    """``--per-loop``: one job per case (``bench_worker.loop_speedups``), the per-loop table and
    the count of the loops with independent iterations that run vectorized ``SPEEDUP`` faster."""
    raw = run_jobs([(c, "optimized_per_loop") for c in cases], settings, progress)
    classes = bench_loops.loop_classes(suite)
    rows = {c.name: bench_loops.analyse_loops(c.name, raw[c.name].get("optimized_per_loop"), classes)
            for c in cases}
    counts = bench_loops.loop_counts([r for case_rows in rows.values() for r in case_rows],
                                     classes.INDEPENDENT if classes else None)
    target = bench_loops.loop_target(counts)
    meta["seconds"] = time.perf_counter() - progress.start
    cases_json = {c.name: {"case": c.info, "variants": raw[c.name], "loops": rows[c.name]} for c in cases}
    return _write(args, bench_loops.markdown(meta, rows, counts, target),
                  {"meta": meta, "cases": cases_json, "counts": counts, "targets": {"R1": target}})


def _write(args: argparse.Namespace, text: str, data: dict) -> int:
    """The markdown to stdout and ``--markdown``, ``data`` to ``--json``."""
    print(text)
    if args.markdown:
        _output(args.markdown).write_text(text)
    if args.json:
        _output(args.json).write_text(json.dumps(data, indent=1, default=_jsonable))
    print(f"LossBench: done in {data['meta']['seconds']:.0f} s", file=sys.stderr)
    return 0


def _output(name: str) -> Path:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _jsonable(obj: Any) -> Any:
    return dataclasses.asdict(obj)  # Time and Ratio
