"""LossBench numbers and tables: times from the workers' raw results, ratios, the project's
performance targets (P1-P6) and loop targets (L1-L3), and the markdown the README's tables come
from."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from .bench_worker import COMPILED, PER_SAMPLE_ROWS

LABELS = {
    "naive_eager": "naive eager", "naive_compiled": "torch.compile(naive)",
    "optimized_eager": "optimize_loss compile=False", "optimized_compiled": "optimize_loss compile=True",
    "expert_eager": "expert eager", "expert_compiled": "torch.compile(expert)",
    "expert_precomputed": "expert, target branch precomputed",
    "optimized_cached": "optimize_loss, target branch cached (backend eager)",
    "optimized_uncached": "optimize_loss, hoist=False (backend eager)",
    "expert_eager@b256": f"expert eager B={PER_SAMPLE_ROWS}",
    "optimized_eager@b256": f"optimize_loss compile=False B={PER_SAMPLE_ROWS}",
    "backend_compiled": 'torch.compile(naive, backend="optimize_loss")',
}
TIMED = ("naive_eager", "naive_compiled", "optimized_eager", "optimized_compiled", "expert_eager",
         "expert_compiled", "expert_precomputed", "optimized_cached", "optimized_uncached",
         "expert_eager@b256",
         "optimized_eager@b256")


@dataclass
class Time:
    seconds: float
    runs: int  # calls behind a steady time (1: a single call stands in for it); 0: a first call or a budget
    lower_bound: bool = False  # stopped at the budget: the true time is larger

    def __str__(self) -> str:
        if self.lower_bound:
            return f"> {fmt_time(self.seconds)} (budget)"
        return fmt_time(self.seconds) + (" (1 run)" if self.runs == 1 else "")


@dataclass
class Ratio:
    value: float
    lower_bound: bool = False
    # A median of per-round ratios: the 95% interval of that median (``median_interval``)
    low: float | None = None
    high: float | None = None

    def __str__(self) -> str:
        band = "" if self.low is None else (" (too few rounds for an interval)" if math.isinf(self.high)
                                            else f" ({self.low:.3g}–{self.high:.3g})")
        return ("> " if self.lower_bound else "") + (f"{self.value:.3g}×" if self.value < 1000 else f"{self.value:,.0f}×") + band

    def meets(self, limit: float, at_most: bool = True) -> bool | None:
        """Whether the target holds; None when a lower bound cannot tell. With an interval, the
        limit within it counts as met: the measurement cannot tell the ratio from the limit."""
        if self.low is not None:
            if math.isinf(self.high):
                return None
            return self.low <= limit if at_most else self.high >= limit
        if at_most:
            return self.value <= limit if not self.lower_bound or self.value > limit else None
        return self.value >= limit if not self.lower_bound or self.value >= limit else None


def median_interval(values: list[float]) -> tuple[float, float]:
    """The 95% interval of the median of ``values`` from their order statistics (no assumption
    on their distribution: the ranks n/2 ± 0.98·sqrt(n), counted from 1, clamped to the ends);
    none (0 to infinity) from fewer than 6 values: even their whole range holds the median with
    less than 95% (1 - 2^(1-n))."""
    ordered, n = sorted(values), len(values)
    if n < 6:
        return 0.0, math.inf
    half = 0.98 * math.sqrt(n)
    return (ordered[max(0, math.floor(n / 2 - half) - 1)],
            ordered[min(n - 1, math.ceil(n / 2 + half) - 1)])


def ratio(a: Time | None, b: Time | None) -> Ratio | None:
    """a / b; None when either is missing or b is only a lower bound (the ratio would tell nothing)."""
    if a is None or b is None or b.lower_bound:
        return None
    return Ratio(a.seconds / b.seconds, a.lower_bound)


def fmt_time(s: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(s) >= scale or unit == "µs":
            return f"{s / scale:.3g} {unit}"
    raise AssertionError("unreachable")


def show(r: Ratio | None, limit: float | None = None, at_most: bool = True) -> str:
    if r is None:
        return "–"
    return f"{r} {mark(r.meets(limit, at_most))}" if limit is not None else str(r)


def _never_slower_cell(name: str, analysed: dict, raw: dict, overhead: dict) -> str:
    found = analysed[name]["ratios"]["original_vs_optimized_eager"]
    if found is None:
        return "–"
    same = " (runs the original)" if same_function_share(name, analysed, raw, overhead) is not None else ""
    return f"{found}{same} {mark(never_slower_verdict(name, analysed, raw, overhead))}"


def mark(met: bool | None) -> str:
    return {True: "✓", False: "✗", None: "–"}[met]


# -- from raw results to numbers ------------------------------------------------------------
def steady_time(result: dict | None, eager: bool) -> Time | None:
    """Median steady time; for an eager variant stopped early, its single call (or the budget as
    a lower bound). A compiled variant's first call includes compilation: never a steady time."""
    if not result or result.get("status") == "error":
        return None
    samples = result.get("samples") or []
    if samples:
        return Time(statistics.median(samples), len(samples))
    if eager and "first_s" in result:
        return Time(result["first_s"], 1)
    if result.get("status") == "over_budget":
        return Time(result["budget_s"], 0, lower_bound=True)
    return None


def paired_time(result: dict | None) -> Time | None:
    """Median of the samples a job took of its paired call (``bench_worker.steady``)."""
    paired = (result or {}).get("paired_samples")
    return Time(statistics.median(paired), len(paired)) if paired else None


def cpu_paired_ratio(result: dict | None) -> Ratio | None:
    """The paired call's CPU time over the timed call's: the median over rounds of the ratio of
    their two adjacent blocks (``bench_worker.steady``), with its 95% interval; None when the
    job did not take them."""
    result = result or {}
    return paired_ratio(result.get("paired_cpu_samples"), result.get("cpu_samples"))


def paired_ratio(paired: list[float] | None, timed: list[float] | None) -> Ratio | None:
    """The median over rounds of ``paired``'s time over ``timed``'s (the two blocks of a round),
    with its 95% interval; None without rounds."""
    ratios = [p / c for p, c in zip(paired or [], timed or []) if c > 0]
    return Ratio(statistics.median(ratios), False, *median_interval(ratios)) if ratios else None


def compiled_vs_expert(result: dict | None, expert_own: Time | None,
                       best_expert: Time | None) -> Ratio | None:
    """optimize_loss compiled over the best expert from the compiled job's rounds alternating
    with the compiled expert (after its own steady blocks): their CPU time ratio (median over
    rounds, with its interval; a loaded machine inflates wall time, not CPU time), scaled by how
    much faster than the compiled expert the best expert ran in their own jobs (1 when the
    compiled expert is the best); None when the job did not take them."""
    result = result or {}
    # the expert's time over optimize_loss's
    paired = paired_ratio(result.get("p1_expert_cpu_samples"), result.get("p1_cpu_samples"))
    if paired is None or expert_own is None or best_expert is None:
        return None
    scale = expert_own.seconds / best_expert.seconds

    def over(v: float) -> float:
        return math.inf if v == 0 else scale / v

    return Ratio(over(paired.value), False, over(paired.high), over(paired.low))


def first_time(result: dict | None) -> Time | None:
    if not result or result.get("status") == "error":
        return None
    if "first_s" in result:
        return Time(result["first_s"], 0)
    if result.get("status") == "over_budget":
        return Time(result["budget_s"], 0, lower_bound=True)
    return None


def equivalent(result: dict | None) -> bool:
    return bool(result) and not result.get("problems") and not result.get("problems_small")


def analyse(info: dict, variants: dict[str, dict], bandwidth_gb_s: float,
            footprint_gb_s: float | None) -> dict:
    """Times, ratios and roofline of one case; each None when not measured.

    Bandwidths: of a large (DRAM) copy, and of a copy of this case's size (elementwise cases)."""
    steady = {v: steady_time(variants.get(v), v.partition("@")[0] not in COMPILED) for v in TIMED}
    steady["expert_eager@b256"] = paired_time(variants.get("optimized_eager@b256"))
    # Never slower: the original timed in blocks alternating with optimize_loss compile=False's
    # when that job ran it (a ratio near 1: drift and load hit both alike), else its own job's.
    original = paired_time(variants.get("optimized_eager")) or steady["naive_eager"]
    # A result that is not equivalent is never the "best" time.
    optimized = [steady[v] for v in ("optimized_eager", "optimized_compiled", "optimized_cached")
                 if steady[v] and equivalent(variants.get(v))]
    experts = [steady[v] for v in ("expert_eager", "expert_compiled") if steady[v] and not steady[v].lower_bound]
    best_opt = min(optimized, key=lambda t: (t.lower_bound, t.seconds), default=None)
    best_expert = min(experts, key=lambda t: t.seconds, default=None)
    ratios = {
        # Where optimize_loss is fastest compiled, from its rounds with the compiled expert.
        "optimized_vs_best_expert": (best_opt is steady["optimized_compiled"] and compiled_vs_expert(
            variants.get("optimized_compiled"), steady["expert_compiled"], best_expert))
        or ratio(best_opt, best_expert),
        "naive_vs_optimized": ratio(steady["naive_eager"], best_opt),
        # Never slower: the original run eagerly against optimize_loss compile=False, same run;
        # not when the optimized time is its first call standing in (rewrite and trial included).
        # From CPU times when the two alternated on one thread: on a loaded machine the wall
        # times of the same code differ by tens of percent.
        "original_vs_optimized_eager": (cpu_paired_ratio(variants.get("optimized_eager"))
                                        or ratio(original, steady["optimized_eager"]))
        if steady["optimized_eager"] is None or steady["optimized_eager"].runs != 1 else None,
        "first_call_vs_compiled_expert": ratio(first_time(variants.get("optimized_compiled")),
                                               first_time(variants.get("expert_compiled"))),
        "optimized_vs_precomputed": ratio(steady["optimized_cached"], steady["expert_precomputed"]),
        "optimized_vs_uncached_expert": ratio(steady["optimized_cached"], steady["expert_eager"]),
        "hoisted_vs_not_hoisted": ratio(steady["optimized_cached"], steady["optimized_uncached"]),
        f"optimized_vs_expert_b{PER_SAMPLE_ROWS}": ratio(steady["optimized_eager@b256"], steady["expert_eager@b256"]),
    }
    roofline = None
    nbytes = variants.get("expert_eager", {}).get("min_bytes")
    if info.get("elementwise") and nbytes and footprint_gb_s:
        bound = Time(nbytes / (bandwidth_gb_s * 1e9), 1)
        same_size = Time(nbytes / (footprint_gb_s * 1e9), 1)
        roofline = {"bytes": nbytes, "bound_s": bound.seconds, "optimized_over_bound": ratio(best_opt, bound),
                    "expert_over_bound": ratio(best_expert, bound), "footprint_gb_s": footprint_gb_s,
                    "footprint_bound_s": same_size.seconds,
                    "optimized_over_footprint_bound": ratio(best_opt, same_size)}
    return {"steady": steady, "best_optimized": best_opt, "best_expert": best_expert,
            "ratios": ratios, "roofline": roofline, "backend_rows": backend_rows(info, variants)}


def backend_jobs(info: dict) -> list[str]:
    """The variants behind the backend rows: per size of ``CASE["backend_rows"]`` (``bench`` or
    ``b<N>``, the first N rows), torch.compile of the expert, of naive through our backend, and
    of naive with the default backend (the slowest, last)."""
    return [f"{kind}_compiled{'' if size == 'bench' else '@' + size}"
            for size in info.get("backend_rows", ()) for kind in ("expert", "backend", "naive")]


def backend_rows(info: dict, variants: dict[str, dict]) -> list[dict]:
    """One row per size of ``CASE["backend_rows"]``: steady and first-call times of the three
    compiled variants, the first calls split into Dynamo's own time, our passes (backend only)
    and the rest (inner compile of forward and backward, and the run: first call minus the
    others minus one steady call), node counts before and after our passes, and the ratios of
    targets B1 and B2. A row whose backend got no graph says so (``skipped``)."""
    rows = []
    jobs = backend_jobs(info)
    for size, (expert, ours, naive) in zip(info.get("backend_rows", ()), zip(*[iter(jobs)] * 3)):
        results = {"expert": variants.get(expert), "backend": variants.get(ours), "naive": variants.get(naive)}
        steady = {k: steady_time(r, eager=False) for k, r in results.items()}
        first = {k: first_time(r) for k, r in results.items()}
        split = {k: _first_call_split(r, first[k], steady[k]) for k, r in results.items()}
        result = results["backend"] or {}
        paired = result.get("paired_samples")  # the expert, alternating with the backend
        paired_expert = Time(statistics.median(paired), len(paired)) if paired else steady["expert"]
        rows.append({"size": size, "jobs": {"expert": expert, "backend": ours, "naive": naive},
                     "steady": steady, "first": first, "split": split,
                     "graph_nodes": result.get("graph_nodes"), "rerolled_nodes": result.get("rerolled_nodes"),
                     "rerolled": sum(note.startswith("re-rolled") for note in result.get("notes", [])),
                     "skipped": result.get("graph_nodes") == [],
                     "backend_vs_expert": ratio(steady["backend"], paired_expert),
                     "naive_vs_backend_first": ratio(first["naive"], first["backend"])})
    return rows


def _first_call_split(result: dict | None, first: Time | None, steady: Time | None) -> dict | None:
    """Dynamo, passes and compile seconds of a first call (None: not measured)."""
    if not result or first is None or first.lower_bound or result.get("dynamo_s") is None or steady is None:
        return None
    passes = result.get("passes_s", 0.0)
    return {"dynamo_s": result["dynamo_s"], "passes_s": passes,
            "compile_s": first.seconds - result["dynamo_s"] - passes - steady.seconds}


def first_call_overheads(info: dict) -> tuple[float | None, float | None]:
    """First call minus steady time of a fresh ``optimize_loss(compile=False)``, small and bench."""
    small = info["first_small_s"] - info["steady_small_s"] if "steady_small_s" in info else None
    bench = info["first_s"] - statistics.median(info["samples"]) if info.get("samples") and "first_s" in info else None
    return small, bench


def targets(cases: dict[str, dict], analysed: dict[str, dict], raw: dict[str, dict], overhead: dict) -> dict:
    """Each target: what it asks, the measured value, met (True/False, None: not measured or a
    budget-capped number cannot tell) and the cases that miss it. ``cases``: name -> CASE."""
    out: dict[str, dict] = {}

    def put(key: str, target: str, value: str, met: bool | None, detail: str = "") -> None:
        out[key] = {"target": target, "value": value, "met": met, "detail": detail}

    def per_case(key: str, limit: float, names: Any = cases,
                 at_most: bool = True) -> tuple[dict[str, Ratio], list[str], bool | None]:
        found = {n: analysed[n]["ratios"][key] for n in names if analysed[n]["ratios"][key] is not None}
        missed = [n for n, r in found.items() if r.meets(limit, at_most) is False]
        verdicts = [r.meets(limit, at_most) for r in found.values()]
        met = False if missed else (True if found and len(found) == len(names) and all(verdicts) else None)
        return found, missed, met

    def worst(found: dict[str, Ratio], total: int) -> str:
        if not found:
            return "not measured"
        name = max(found, key=lambda n: found[n].value)
        return f"worst {found[name]} ({name}); {len(found)}/{total} cases measured"

    found, missed, met = per_case("optimized_vs_best_expert", 1.1)
    put("P1", "steady fwd+bwd of optimize_loss ≤ 1.1× the faster expert (eager or compiled), every case",
        worst(found, len(cases)), met, ("missed: " + ", ".join(f"{n} {found[n]}" for n in missed)) if missed else "")

    loops = [n for n, c in cases.items() if c.get("loops") == "vectorize"]
    speedups = [analysed[n]["ratios"]["naive_vs_optimized"] for n in loops]
    speedups = [r for r in speedups if r is not None]
    if speedups:
        median = statistics.median(r.value for r in speedups)
        # Budget-capped speedups at or below the median could lie above it: the median is then a bound.
        r = Ratio(median, any(s.lower_bound and s.value <= median for s in speedups))
        put("P2", "≥ 50× faster than naive eager (median over loop cases)",
            f"median {r} over {len(speedups)}/{len(loops)} loop cases", r.meets(50, at_most=False))
    else:
        put("P2", "≥ 50× faster than naive eager (median over loop cases)", "not measured", None)

    compiled = [n for n in cases if "optimized_compiled" in raw[n]]
    found, missed, met = per_case("first_call_vs_compiled_expert", 1.5, compiled)
    put("P3", "first call ≤ 1.5× torch.compile(expert) first call", worst(found, len(compiled)),
        met, ("missed: " + ", ".join(missed)) if missed else "")

    fixed = [n for n, c in cases.items() if c.get("fixed_target")]
    rows = [(n, analysed[n]["ratios"]["optimized_vs_precomputed"], analysed[n]["ratios"]["optimized_vs_uncached_expert"])
            for n in fixed]
    rows = [(n, p, u) for n, p, u in rows if p is not None and u is not None and equivalent(raw[n].get("optimized_cached"))]
    put("P4", "cached fixed-target loss ≤ 1.1× expert with precomputed target branch, and faster than the uncached expert",
        "; ".join(f"{n}: {p} of precomputed, {u} of uncached" for n, p, u in rows) or "not measured",
        (all(p.meets(1.1) and u.meets(1.0) for _, p, u in rows) and len(rows) == len(fixed)) if rows else None)

    put("P5", "wrapper overhead ≤ 10 µs per call when nothing is rewritten",
        f"{fmt_overhead(overhead)} ({overhead['wrapped_us']:.2f} vs {overhead['direct_us']:.2f} µs direct)",
        overhead["below_noise"] or overhead["overhead_us"] <= 10)

    roof = {n: analysed[n]["roofline"]["optimized_over_bound"] for n in cases
            if analysed[n]["roofline"] and analysed[n]["roofline"]["optimized_over_bound"]}
    elementwise = [n for n, c in cases.items() if c.get("elementwise")]
    put("P6", "large elementwise loss within 2× of the memory-bandwidth bound", worst(roof, len(elementwise)),
        (all(r.meets(2) for r in roof.values()) and len(roof) == len(elementwise)) if roof else None)

    if "slow_add" in cases:
        r = analysed["slow_add"]["ratios"]["naive_vs_optimized"]
        put("L1", "slow_add at bench size ≥ 1000× faster than the eager loop", str(r) if r else "not measured",
            r.meets(1000, at_most=False) if r else None)
        info = raw["slow_add"].get("optimized_eager", {})
        small, bench = first_call_overheads(info) if "rewrite_s" in info else (None, None)
        put("L2", "rewrite time independent of trip count (slow_add small vs bench)",
            f"rewrite {fmt_time(info['rewrite_s'])}; first-call overhead {fmt_time(small)} (small) vs "
            f"{fmt_time(bench)} (bench)" if small is not None and bench is not None else "not measured",
            abs(bench - small) <= max(small, 2e-3) if small is not None and bench is not None else None)
    put("P7", *never_slower(cases, analysed, raw, overhead))
    per_sample = [n for n in cases if n.startswith("per_sample_")]
    found, missed, met = per_case(f"optimized_vs_expert_b{PER_SAMPLE_ROWS}", 1.2, per_sample)
    put("L3", f"per-sample losses at B={PER_SAMPLE_ROWS} within 1.2× of expert eager, compile=False",
        ", ".join(f"{n} {r}" for n, r in found.items()) or "not measured", met)
    out.update(backend_targets(analysed))
    return out


# Where optimize_loss's steady calls ran the original function itself, the two sides of P7's
# paired ratio differ only by the wrapper's dispatch: the ratio of two runs of the same code
# drifts by 1-3% on a busy machine (0.993x and 0.994x with nothing rewritten), far more than the
# microseconds P5 measures precisely. Such a case is judged by the wrapper's share of the call.
SAME_FUNCTION_SHARE = 0.01


def same_function_share(name: str, analysed: dict[str, dict], raw: dict[str, dict],
                        overhead: dict) -> float | None:
    """The wrapper's dispatch (P5) as a share of the original's call, where optimize_loss's
    steady calls ran the original itself (``bench_worker.runs_original``); else None."""
    original = analysed[name]["steady"]["naive_eager"]
    if not (raw[name].get("optimized_eager", {}).get("runs_original") and original):
        return None
    return (0.0 if overhead["below_noise"] else overhead["overhead_us"] * 1e-6) / original.seconds


def never_slower_verdict(name: str, analysed: dict[str, dict], raw: dict[str, dict],
                         overhead: dict) -> bool | None:
    share = same_function_share(name, analysed, raw, overhead)
    if share is not None:
        return share <= SAME_FUNCTION_SHARE
    found = analysed[name]["ratios"]["original_vs_optimized_eager"]
    return None if found is None else found.meets(1.0, at_most=False)


def never_slower(cases: dict[str, dict], analysed: dict[str, dict], raw: dict[str, dict],
                 overhead: dict) -> tuple[str, str, bool | None, str]:
    """P7: target, value, verdict and the cases that miss it."""
    found = {n: analysed[n]["ratios"]["original_vs_optimized_eager"] for n in cases}
    found = {n: r for n, r in found.items() if r is not None}
    verdicts = {n: never_slower_verdict(n, analysed, raw, overhead) for n in found}
    same = {n: same_function_share(n, analysed, raw, overhead) for n in found}
    same = {n: share for n, share in same.items() if share is not None}
    missed = [n for n, v in verdicts.items() if v is False]
    met = False if missed else (True if found and len(found) == len(cases) and all(verdicts.values()) else None)
    value = f"{len(found)}/{len(cases)} cases measured" if found else "not measured"
    slowest = min((n for n in found if n not in same), key=lambda n: found[n].value, default=None)
    if slowest:
        value = f"lowest {found[slowest]} ({slowest}); {value}"
    if same:
        value += (f"; {len(same)} ran the original itself, the wrapper's dispatch at most "
                  f"{100 * max(same.values()):.2g}% of the call ({', '.join(sorted(same))})")
    return ("never slower: original eager time / optimize_loss compile=False time ≥ 1.0× (within its "
            "95% interval), every case; where the steady calls ran the original itself, the "
            f"wrapper's dispatch (P5) ≤ {SAME_FUNCTION_SHARE:.0%} of the call",
            value, met, ("missed: " + ", ".join(f"{n} {found[n]}" for n in missed)) if missed else "")


def backend_targets(analysed: dict[str, dict]) -> dict:
    """B1 and B2 over the backend rows that were measured (none: no such targets); rows whose
    loop Dynamo ran eagerly (no graph reached the backend) are listed, not judged."""
    rows = [(f"{n} {r['size']}", r) for n, a in analysed.items() for r in a["backend_rows"]
            if r["first"]["backend"] is not None]
    if not rows:
        return {}
    b256 = [(n, r) for n, r in rows if r["size"] == "b256"]
    return {"B1": _backend_target('torch.compile(naive, backend="optimize_loss") steady ≤ 1.2× '
                                  "torch.compile(expert)", rows, "backend_vs_expert", 1.2, True),
            "B2": _backend_target('torch.compile(naive, backend="optimize_loss") first call ≥ 5× faster '
                                  "than torch.compile(naive)'s at B=256", b256, "naive_vs_backend_first", 5, False)}


def _backend_target(target: str, rows: list[tuple[str, dict]], key: str, limit: float, at_most: bool) -> dict:
    found = {n: r[key] for n, r in rows if not r["skipped"] and r[key] is not None}
    verdicts = {n: r.meets(limit, at_most) for n, r in found.items()}
    missed = [n for n, v in verdicts.items() if v is False]
    skipped = [n for n, r in rows if r["skipped"]]
    detail = "; ".join(filter(None, ["missed: " + ", ".join(missed) if missed else "",
                                     "not judged, Dynamo ran the loop eagerly: " + ", ".join(skipped)
                                     if skipped else ""]))
    return {"target": target, "value": ", ".join(f"{n} {r}" for n, r in found.items()) or "not measured",
            "met": False if missed else (True if found and all(verdicts.values()) else None), "detail": detail}


# -- markdown -------------------------------------------------------------------------------
def fmt_overhead(overhead: dict) -> str:
    return "below measurement noise" if overhead["below_noise"] else f"{overhead['overhead_us']:.2f} µs"


def markdown(meta: dict, cases: dict[str, dict], raw: dict, analysed: dict, tgts: dict, overhead: dict) -> str:
    compiled = ", ".join(meta["compiled_cases"]) or "none"
    out = ["# LossBench results", "", run_line(meta), "",
           f"Forward+backward at each example's `bench` size; steady = median over blocks of calls "
           f"(each ≥ 2 ms) after a warm-up call, until {meta['min_time_s']:g} s or 50 blocks. "
           f"Budgets: {meta['budget_s']:g} s per eager variant, "
           f"{meta['compile_budget_s']:g} s per compiled variant; `> x (budget)`: stopped there, "
           f"`(1 run)`: one call fit. Compiled variants (cold compile, Inductor caches off) ran on: "
           f"{compiled}. Every optimized and compiled result is compared with the expert at bench "
           f"size (values and gradients, float32, rtol 1e-3, atol 1e-4); `optimize_loss compile=False` "
           f"also with the naive code at the small size (`rewrite.testing` defaults).", "",
           "## Targets", "", "| | target | measured | met |", "| --- | --- | --- | --- |"]
    for key, t in tgts.items():
        detail = f" — {t['detail']}" if t["detail"] else ""
        out.append(f"| {key} | {t['target']} | {t['value']}{detail} | {mark(t['met'])} |")

    out += ["", "## Steady forward+backward", "",
            "Loops: from the report of `optimize_loss compile=False` after its first call at bench "
            "size, helpers' loops included; `(k ran so)`: only k of the vectorized loops ran "
            "vectorized in that call, by themselves or inside an outer loop's vectorized form (a "
            "runtime check was false, or it raised). Optimized / best expert: where optimize_loss "
            "is fastest compiled, the CPU time ratio of its blocks of calls alternating in one "
            "process with torch.compile(expert)'s, after the blocks of its column (median over "
            "rounds, with its 95% interval; times the expert columns' own ratio when the eager "
            "expert is the faster), else the ratio of the columns.", "",
            "| case | loops | distributed | naive eager | torch.compile(naive) | optimize_loss eager "
            "| optimize_loss compiled | expert eager | expert compiled | optimized / best expert "
            "| naive / optimized | optimized / original (eager) | equivalent |",
            "| --- " * 13 + "|"]
    for name in cases:
        s, r, variants = analysed[name]["steady"], analysed[name]["ratios"], raw[name]
        cells = [_cell(s[v], variants.get(v)) for v in ("naive_eager", "naive_compiled", "optimized_eager",
                                                       "optimized_compiled", "expert_eager", "expert_compiled")]
        out.append(f"| {name} | {_loops(variants.get('optimized_eager'), cases[name])} | "
                   f"{distributed_count(variants.get('optimized_eager'))} | " + " | ".join(cells)
                   + f" | {show(r['optimized_vs_best_expert'], 1.1)} | {show(r['naive_vs_optimized'])} "
                   f"| {_never_slower_cell(name, analysed, raw, overhead)} | {_check(variants)} |")
    out += loop_summary(cases, raw, analysed)

    out += ["", "## First call and rewrite time", "",
            "Rewrite: parse + passes + rebuild, no torch.compile (it runs before any input is seen). "
            "First-call overhead: first call − steady call of a fresh `optimize_loss(compile=False)`.", "",
            "Check: the part of optimize_loss compiled's first call spent comparing the compiled function "
            "with the eager rewritten one (`verify_compiled`).", "",
            "| case | rewrite | first-call overhead small / bench | optimize_loss compiled first call | of which check "
            "| torch.compile(naive) first call | torch.compile(expert) first call | optimized / expert first call |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in cases:
        variants = raw[name]
        info = variants.get("optimized_eager", {})
        overheads = first_call_overheads(info) if info else (None, None)
        check = variants.get("optimized_compiled", {}).get("check_s")
        firsts = [_cell(first_time(variants.get(v)), variants.get(v))
                  for v in ("optimized_compiled", "naive_compiled", "expert_compiled")]
        firsts.insert(1, "–" if check is None else fmt_time(check))
        out.append(f"| {name} | {fmt_time(info['rewrite_s']) if 'rewrite_s' in info else '–'} | "
                   + " / ".join("–" if x is None else fmt_time(x) for x in overheads) + " | "
                   + " | ".join(firsts) + f" | {show(analysed[name]['ratios']['first_call_vs_compiled_expert'], 1.5)} |")

    syncs = {n: raw[n]["optimized_eager"]["host_syncs"] for n in cases
             if "host_syncs" in raw[n].get("optimized_eager", {})}
    if syncs:
        out += ["", "## Host syncs per call", "",
                "Ops that make the host wait for the device's data (`.item()`, `bool(t)`, data-dependent "
                "sizes; `rewrite/tools/host_syncs.py`) in one forward+backward call at the small size: on a "
                "GPU each one stalls the device.", "", "| case | naive | optimize_loss |", "| --- | --- | --- |"]
        out += [f"| {name} | {naive} | {optimized} |" for name, (naive, optimized) in syncs.items()]

    roof = [n for n in cases if analysed[n]["roofline"]]
    if roof:
        out += ["", "## Memory-bandwidth roofline (elementwise cases)", "",
                "Bytes the loss must touch: every input read once, every gradient written once. Bound: "
                f"those bytes at the best bandwidth of a large (256 MB) tensor copy measured in this run "
                f"on {meta['threads']} torch thread(s), as the timed variants, {meta['bandwidth_gb_s']:.1f} GB/s "
                "(P6). A case whose tensors fit in cache can beat it: "
                "the last column uses a copy of the case's own size instead.", "",
                "| case | bytes | bound | best optimize_loss | optimized / bound | best expert / bound "
                "| optimized / same-size-copy bound |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for name in roof:
            rf, a = analysed[name]["roofline"], analysed[name]
            out.append(f"| {name} | {rf['bytes'] / 1e6:.3g} MB | {fmt_time(rf['bound_s'])} | "
                       f"{_cell(a['best_optimized'], None)} | {show(rf['optimized_over_bound'], 2)} | "
                       f"{show(rf['expert_over_bound'])} | {show(rf['optimized_over_footprint_bound'])} "
                       f"({rf['footprint_gb_s']:.3g} GB/s) |")

    fixed = [n for n, c in cases.items() if c.get("fixed_target")]
    if fixed:
        out += ["", "## Fixed target (cached target branch)", "",
                "| case | optimize_loss, cached (backend eager) | expert, target precomputed | expert uncached "
                "| optimized / precomputed | optimized / uncached |", "| --- | --- | --- | --- | --- | --- |"]
        for name in fixed:
            s, r, variants = analysed[name]["steady"], analysed[name]["ratios"], raw[name]
            out.append(f"| {name} | " + " | ".join(_cell(s[v], variants.get(v)) for v in
                                                   ("optimized_cached", "expert_precomputed", "expert_eager"))
                       + f" | {show(r['optimized_vs_precomputed'], 1.1)} | {show(r['optimized_vs_uncached_expert'], 1.0)} |")

    preprocessing = [n for n, c in cases.items() if c.get("target_preprocessing")]
    if preprocessing:
        out += ["", "## Target preprocessing inside the loss: with and without hoisting", "",
                "Both through torch.compile with the eager backend (Dynamo's graph, eager kernels), "
                "called with the same target tensors each step, as with fixed targets or full-batch "
                "training; with a fresh target every step, hoisting only saves autograd bookkeeping.", "",
                "| case | hoisted and cached | hoist=False | hoisted / not hoisted |",
                "| --- | --- | --- | --- |"]
        for name in preprocessing:
            s, r, variants = analysed[name]["steady"], analysed[name]["ratios"], raw[name]
            out.append(f"| {name} | " + " | ".join(_cell(s[v], variants.get(v)) for v in
                                                   ("optimized_cached", "optimized_uncached"))
                       + f" | {show(r['hoisted_vs_not_hoisted'])} |")

    per_sample = [n for n in cases if n.startswith("per_sample_")]
    if per_sample:
        out += ["", f"## Per-sample losses at B={PER_SAMPLE_ROWS} (first rows of the bench inputs)", "",
                "The expert and `optimize_loss` are timed in alternating blocks of calls in one process "
                "(a few percent apart: separate runs would differ by their own noise).", "",
                "| case | optimize_loss compile=False | expert eager | ratio |", "| --- | --- | --- | --- |"]
        for name in per_sample:
            s, variants = analysed[name]["steady"], raw[name]
            out.append(f"| {name} | " + " | ".join(_cell(s[v], variants.get(v)) for v in
                                                   ("optimized_eager@b256", "expert_eager@b256"))
                       + f" | {show(analysed[name]['ratios'][f'optimized_vs_expert_b{PER_SAMPLE_ROWS}'], 1.2)} |")

    out += backend_section(cases, raw, analysed)

    out += ["", "## Wrapper overhead", "",
            f"`optimize_loss(fn, compile=False)` on a function with nothing to rewrite: "
            f"{overhead['wrapped_us']:.2f} µs per call vs {overhead['direct_us']:.2f} µs calling `fn` "
            f"directly, in alternating blocks: {fmt_overhead(overhead)} overhead.", ""]
    problems = [(name, v, r) for name in cases for v, r in raw[name].items()
                if r.get("status") == "error" or not equivalent(r)]
    if problems:
        out += ["## Errors and mismatches", ""]
        for name, v, r in problems:
            what = r.get("error") or "; ".join(r.get("problems") or r.get("problems_small"))
            out.append(f"- {name}, {LABELS.get(v, v)}: {what[:300]}")
        out.append("")
    return "\n".join(out)


def run_line(meta: dict) -> str:
    return (f"`{meta['command']}` — {meta['date']}; {meta['machine']}; torch {meta['torch']}, "
            f"Python {meta['python']}; {meta['threads']} torch thread(s); torch.compile backend "
            f"`{meta['backend']}`; took {meta['seconds']:.0f} s.")


def backend_markdown(meta: dict, cases: dict[str, dict], raw: dict, analysed: dict, tgts: dict) -> str:
    """The tables of a ``--backend-rows`` run: its targets and the backend section."""
    out = ["# LossBench: the torch.compile backend option", "", run_line(meta), "",
           "| | target | measured | met |", "| --- | --- | --- | --- |"]
    for key in ("B1", "B2"):
        t = tgts.get(key)
        if t:
            detail = f" — {t['detail']}" if t["detail"] else ""
            out.append(f"| {key} | {t['target']} | {t['value']}{detail} | {mark(t['met'])} |")
    return "\n".join(out + backend_section(cases, raw, analysed) + [""])


def backend_section(cases: dict[str, dict], raw: dict, analysed: dict) -> list[str]:
    """Markdown lines of the backend rows (none when no case has them)."""
    rows = [(name, row) for name in cases for row in analysed[name]["backend_rows"]]
    if not rows:
        return []
    out = ["", '## torch.compile(naive, backend="optimize_loss")', "",
           "Dynamo unrolls the naive loop into one copy of its body per iteration; the backend "
           "re-rolls the copies into one vmapped computation before the inner compiler sees the "
           "graph. Graph nodes: Dynamo's graph → the graph the inner compiler got. First call "
           "(cold, forward+backward) = Dynamo (its own timers: bytecode tracing, graph, guards) "
           "+ our passes (the backend's time outside the inner compiler) + compile (the rest "
           "minus one steady call: the inner compile of forward and backward). Backend / expert: "
           "from blocks of calls alternating in one process (the two steady columns are separate "
           "jobs).", "",
           "| case | size | graph nodes | torch.compile(naive) | backend | torch.compile(expert) "
           "| backend / expert | first call: torch.compile(naive) | backend | torch.compile(expert) "
           "| naive / backend first call |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in rows:
        size = cases[name]["sizes"]["bench"] if row["size"] == "bench" else f"B={row['size'][1:]}"
        cells = [_cell(row["steady"][k], raw[name].get(row["jobs"][k])) for k in ("naive", "backend", "expert")]
        cells.append(show(row["backend_vs_expert"], None if row["skipped"] else 1.2))
        cells += [_first_cell(row["first"][k], row["split"][k], k == "backend") for k in ("naive", "backend", "expert")]
        cells.append(show(row["naive_vs_backend_first"], 5 if row["size"] == "b256" and not row["skipped"] else None,
                          at_most=False))
        out.append(f"| {name} | {size} | {_nodes(row)} | " + " | ".join(cells) + " |")
    return out


def _first_cell(first: Time | None, split: dict | None, ours: bool) -> str:
    if first is None or split is None:
        return "–" if first is None else str(first)
    parts = [f"Dynamo {fmt_time(split['dynamo_s'])}"] + ([f"passes {fmt_time(split['passes_s'])}"] if ours else [])
    parts.append(f"compile {fmt_time(split['compile_s'])}")
    return f"{first} ({' + '.join(parts)})"


def _nodes(row: dict) -> str:
    if row["skipped"]:
        return "no graph: Dynamo ran the loop eagerly (graph break in it)"
    if not row["graph_nodes"]:
        return "–"
    before, after = "+".join(map(str, row["graph_nodes"])), "+".join(map(str, row["rerolled_nodes"]))
    return f"{before} → {after} ({row['rerolled']} loop{'s' * (row['rerolled'] != 1)} re-rolled)"


def _cell(t: Time | None, result: dict | None) -> str:
    if result and result.get("status") == "error":
        return "error"
    text = "–" if t is None else str(t)
    return text if not result or equivalent(result) else text + " ✗ not equivalent"


def _loops(info: dict | None, case: dict) -> str:
    """What the passes did to the loops (from the report after the first call), else the
    example's own expectation; and how many of the vectorized loops ran vectorized in that call,
    when not all of them did (a runtime check that failed, a fallback)."""
    if not info or not info.get("loops"):
        return f"{case.get('loops', '?')} (no loop report)" if info else case.get("loops", "?")
    loops = info["loops"]
    vectorized = sum(1 for loop in loops if loop[1])
    text = f"{vectorized}/{len(loops)} vectorized"
    ran = sum(1 for loop in loops if loop[1] and loop[5:6] != [False])  # none: before a call
    text += f" ({ran} ran so)" if ran < vectorized else ""
    return text + (", fallback" if info.get("fallbacks") else "")


def distributed_count(info: dict | None) -> str:
    """How many loops were split into a vectorized loop and a residual loop (loop fission)."""
    loops = (info or {}).get("loops")
    return str(sum(1 for loop in loops if loop[2] == "distributed")) if loops else "–"


def loop_summary(cases: dict[str, dict], raw: dict, analysed: dict) -> list[str]:
    """What the passes did to the suite's loops (by strategy), and what each case with a
    distributed loop gained (naive eager / optimize_loss eager)."""
    loops = [loop for name in cases for loop in (raw[name].get("optimized_eager") or {}).get("loops") or []]
    if not loops:
        return []
    strategies = {}
    for loop in loops:
        strategies[loop[2]] = strategies.get(loop[2], 0) + 1
    gains = [f"{name} ({distributed_count(raw[name].get('optimized_eager'))} loop(s), "
             f"{show(analysed[name]['ratios']['naive_vs_optimized'])})" for name in cases
             if distributed_count(raw[name].get("optimized_eager")) not in ("0", "–")]
    return ["", f"Loops: {len(loops)} reported, {sum(1 for loop in loops if loop[1])} vectorized; "
                + ", ".join(f"{n} {s}" for s, n in sorted(strategies.items())) + ". "
                + "Distributed, by case (naive eager / optimize_loss eager): "
                + ("; ".join(gains) or "none") + "."]


def _check(variants: dict) -> str:
    bad = [LABELS.get(v, v) for v, r in variants.items() if not equivalent(r)]
    return ("✗ " + ", ".join(bad)) if bad else "✓"
