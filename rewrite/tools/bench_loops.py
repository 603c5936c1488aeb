"""LossBench per loop (``python -m rewrite bench SUITE_DIR --per-loop``): what each loop's
vectorized form gains, measured loop by loop.

A case's speedup over its naive code mixes every loop with the work around them: a loss with
several loops, or with much work outside its loops, is not much faster even when each loop is.
Here each loop that ran vectorized in the first call (the report's run-time counts: by itself,
or inside an outer loop's vectorized form) is timed twice at the ``bench`` size, forward+backward,
in rounds that alternate its two forms (``bench_worker.loop_speedups``); a speedup is the median
over rounds of the as-written form's time over the vectorized one's (CPU times on one thread),
with its 95% interval:

- the loop's own (``loop_speedup``, what the count judges): its region alone
  (``OptimizedFunction.loop_region``: the guard ``if <check>: <vectorized> else: <the loop>``
  as a function of what it read in a call, ``bench_worker.region_steps``), the guard against
  its loop as written; for an inner loop the region of the outer loop whose vectorized form
  runs it, for a helper's loop in a vmapped body its caller's. Where a region cannot be
  isolated, the whole call's speedup stands for it (nearer 1 than the loop's own);
- the whole call's (``call_speedup``): the rewritten function (``compile=False``) against the
  same function with that loop as written (``OptimizedFunction.rewritten_with_loops_as_written``;
  with the outer loop whose vectorized form runs it, and the loop whose vmapped body calls a
  helper's loop that cannot run as written there).

A loop that the choice of form at the first call runs as written from then on, its vectorized
form timed alone clearly slower (``rewrite.loop_choice``), says so in the column "ran in the
first call"; its speedup stays its vectorized form's, as measured here.

A suite may classify its loops by what their iterations do (``SUITE_DIR/loop_classes.py``:
``loop_class(case, line)`` and ``INDEPENDENT``, as ``examples/real/`` does): the count then says
how many of the loops with independent iterations run vectorized at least ``SPEEDUP`` times
faster, against the goal of ``SHARE`` of them.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

from .bench_report import Ratio, cpu_paired_ratio, mark, paired_ratio, run_line

SPEEDUP = 1.5  # a loop counts as faster vectorized from this speedup (median of rounds)
SHARE = 0.85   # of the loops with independent iterations, this many should


def loop_classes(suite: Path) -> ModuleType | None:
    """The suite's ``loop_classes.py``, imported from its file; None when it has none."""
    path = suite / "loop_classes.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(f"lossbench_loop_classes_{suite.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loop_speedup(row: dict) -> Ratio | None:
    """The loop's own speedup: its region as written over vectorized (``region``), else, when
    the region could not be isolated, the whole call's (``call_speedup``: the work around the
    loop is in both forms, so it is nearer 1 than the loop's own); None when it was not timed."""
    return call_speedup(row.get("region")) or call_speedup(row)


def call_speedup(row: dict | None) -> Ratio | None:
    """The as-written form over the vectorized one, round by round: CPU times when they were
    taken (one thread), else wall times; None when it was not timed."""
    row = row or {}
    return cpu_paired_ratio(row) or paired_ratio(row.get("paired_samples"), row.get("samples"))


def analyse_loops(case: str, result: dict | None, classes: ModuleType | None) -> list[dict]:
    """The rows of one case's ``optimized_per_loop`` job, each with its ``where`` (path:line,
    the path relative to the working directory when under it), ``class`` and ``why`` (from the
    suite's classes; None without them) and ``speedup``."""
    rows = []
    for row in (result or {}).get("per_loop") or []:
        kind, why = classes.loop_class(case, row["line"]) if classes else (None, None)
        path = os.path.relpath(row["file"]) if row["file"].startswith(os.getcwd()) else row["file"]
        rows.append({**row, "where": f"{path}:{row['line']}", "class": kind, "why": why,
                     "speedup": loop_speedup(row), "call_speedup": call_speedup(row)})
    return rows


def loop_counts(rows: list[dict], independent: str | None) -> dict:
    """Loops in all, vectorized, running vectorized, and of the loops of class ``independent``:
    how many, how many ran vectorized, how many of those with a speedup of at least
    ``SPEEDUP`` (median), and with their whole interval at or above it."""
    mine = [r for r in rows if independent is not None and r["class"] == independent]
    fast = [r for r in mine if r["ran_vectorized"] and r["speedup"] and r["speedup"].value >= SPEEDUP]
    return {"loops": len(rows), "vectorized": sum(r["vectorized"] for r in rows),
            "running": sum(r["ran_vectorized"] for r in rows), "independent": len(mine),
            "independent_running": sum(r["ran_vectorized"] for r in mine), "fast": len(fast),
            "clearly_fast": sum(r["speedup"].low >= SPEEDUP for r in fast)}


def loop_target(counts: dict) -> dict:
    """The goal on loops with independent iterations, as a target entry (``bench_report.targets``)."""
    n = counts["independent"]
    value = (f"{counts['fast']}/{n} ({100 * counts['fast'] / n:.0f}%) run vectorized ≥ {SPEEDUP:g}× "
             f"faster ({counts['clearly_fast']} with the whole 95% interval so); "
             f"{counts['independent_running']}/{n} run vectorized") if n else "not measured"
    return {"target": f"≥ {SHARE:.0%} of the loops with independent iterations run vectorized, "
                      f"≥ {SPEEDUP:g}× faster than the loop as written (median of rounds)",
            "value": value, "met": counts["fast"] >= SHARE * n if n else None, "detail": ""}


def markdown(meta: dict, rows: dict[str, list[dict]], counts: dict, target: dict) -> str:
    """The per-loop document: how it was measured, the count, and a row per loop."""
    out = ["# LossBench per loop", "", run_line(meta), "",
           f"Each loop that ran vectorized in the first call at the `bench` size (the report's "
           f"run-time counts) is timed twice, forward+backward, in rounds alternating its two "
           f"forms for at least {meta['min_time_s']:g} s within {meta['budget_s']:g} s each; a "
           f"speedup is the median over rounds of the as-written form's time over the vectorized "
           f"one's ({'CPU' if meta['threads'] == 1 else 'wall'} times), with its 95% interval. "
           f"**Speedup of the loop** (R1 is judged on it): the loop's region alone, the runtime "
           f"check with the vectorized form against the loop as written, as functions of the "
           f"values the region read in a call at that size (tensors detached, requiring grad as "
           f"they did), backward from the tensors it leaves (the names read after it, the "
           f"live-ins it changes) with fixed random cotangents; the region is the guard of the "
           f"line in the column \"region\": the loop's own, or that of the loop around it whose "
           f"vectorized form runs it. Where the region could not be isolated (the reason is "
           f"given), the whole call's speedup stands for it (nearer 1 than the loop's own). "
           f"**Whole call**: the rewritten function (`compile=False`) against the same function "
           f"with the loops in the column \"timed as written\" as written (with the loop around "
           f"it whose vectorized form ran it, for an inner loop; with the loop whose vmapped body "
           f"calls it, for a helper's loop that cannot run as written inside it). \"Kept as "
           f"written at run time\": the optimized function's first call timed the loop's region "
           f"too, found its vectorized form clearly slower and runs it as written from then on; "
           f"its speedup is still the vectorized form's.", "",
           f"{counts['loops']} loops, {counts['vectorized']} reported vectorized, "
           f"{counts['running']} ran vectorized.", "",
           "| | target | measured | met |", "| --- | --- | --- | --- |",
           f"| R1 | {target['target']} | {target['value']} | {mark(target['met'])} |", "",
           "| loop | class | report | ran in the first call | timed as written | region | "
           "speedup of the loop | whole call |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for case_rows in rows.values():
        out += [_row(row) for row in case_rows]
    return "\n".join(out + [""])


def _row(row: dict) -> str:
    report = f"vectorized ({row['strategy']})" if row["vectorized"] else "kept"
    runs = row["runs"]
    ran = f"vectorized {runs['vectorized']}, as written {runs['as_written']}"
    ran += f", {runs['failed']} raised" if runs["failed"] else ""
    # the choice of form at the first call runs it as written from then on (``rewrite.loop_choice``)
    ran += "; then kept as written at run time: slower vectorized" if runs.get("kept_at_run_time") else ""
    if row["ran_vectorized"] and not runs["vectorized"]:
        ran += " (inside the vectorized form of line " + ", ".join(
            str(line) for line in row["as_written"] if line != row["line"]) + ")"
    region, whole = row.get("region") or {}, row.get("call_speedup")
    if row.get("error"):
        speedup = f"not timed, as written it raised {row['error']}"
    elif row["speedup"] is not None:
        speedup = f"{row['speedup']} {mark(row['speedup'].value >= SPEEDUP)}"
        speedup += f" (whole call: region not isolated, {region['error']})" if "error" in region else ""
    else:
        reached = runs["vectorized"] or runs["as_written"] or row["ran_vectorized"]
        why = f": {runs['last_failure']}" if runs["last_failure"] else ""  # the check that was false
        speedup = "–" if not row["vectorized"] else \
            f"did not run vectorized{why}" if reached else "not reached in the call"
    timed = ", ".join(map(str, row.get("as_written", []))) or "–"
    return (f"| {row['where']} | {row['class'] or '–'} | {report} | "
            f"{ran if row['vectorized'] else '–'} | {timed} | {region.get('line', '–')} | "
            f"{speedup} | {whole if whole is not None else '–'} |")
