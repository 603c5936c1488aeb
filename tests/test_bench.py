"""LossBench on a tiny synthetic suite: one bench run (backend "eager", tiny budgets) shared by the
tests, plus the pure helpers."""
import io
import json
import math
import statistics
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import examples
import rewrite.tools.bench as bench_module
from rewrite.tools import bench_worker
from rewrite.tools.bench import discover
from rewrite.tools.bench_report import (Ratio, Time, _loops, _never_slower_cell, analyse,
                                        distributed_count, fmt_overhead, loop_summary,
                                        median_interval, never_slower, steady_time)
from rewrite.tools.bench_worker import load_example, rewrite_info
from rewrite import optimize_loss
from rewrite.tools.cli import main

HEADER = """\
import time
import torch

def make_inputs(size="small", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = {"small": 4, "bench": 8}[size]
    return (torch.randn(n, 3, generator=g, dtype=dtype).requires_grad_(),
            torch.randn(n, 3, generator=g, dtype=dtype))
"""

SUITE = {
    # Loop over samples, target-only work (a fixed target), a per_sample_ name and backend rows
    # (the first 4 rows, enough copies to re-roll): every variant.
    "per_sample_sq": """
        CASE = {"loops": "vectorize", "elementwise": True, "sizes": {"small": "[4, 3]", "bench": "[8, 3]"},
                "fixed_target": True, "target_args": ("target",), "target_preprocessing": True,
                "backend_rows": ["b4"]}

        def naive(pred, target):
            total = 0
            for i in range(pred.shape[0]):
                total = total + ((pred[i] - target[i].abs().sqrt()) ** 2).sum()
            return total / pred.numel()

        def expert(pred, target):
            return ((pred - target.abs().sqrt()) ** 2).mean()
        """,
    # The "expert" computes something else: optimize_loss(naive) must be flagged, never just timed.
    "wrong": """
        CASE = {"loops": "vectorize", "elementwise": False, "sizes": {"small": "[4, 3]", "bench": "[8, 3]"}}

        def naive(pred, target):
            total = 0
            for i in range(pred.shape[0]):
                total = total + (pred[i] * target[i]).sum()
            return total

        def expert(pred, target):
            return (pred * target).sum() * 2
        """,
    # A naive version slower than any budget the test gives it.
    "slow": """
        CASE = {"loops": "kept", "elementwise": False, "sizes": {"small": "[4, 3]", "bench": "[8, 3]"}}

        def naive(pred, target):
            time.sleep(30)
            return ((pred - target) ** 2).mean()

        def expert(pred, target):
            return ((pred - target) ** 2).mean()
        """,
    "_helpers": "X = 1\n",  # not an example: no naive/expert/make_inputs/CASE
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    for name, body in SUITE.items():
        (root / f"{name}.py").write_text(HEADER + textwrap.dedent(body))
    return root


@pytest.fixture(scope="module")
def bench(suite, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    # The budget stops only the sleeping case: a first call of a real one on a loaded machine
    # takes seconds, and a test must not depend on the machine's speed.
    argv = ["bench", str(suite), "--backend", "eager", "--compiled", "per_sample_sq", "--budget", "8",
            "--compile-budget", "20", "--min-time", "0.02", "--json", str(out / "b.json"),
            "--markdown", str(out / "b.md")]
    with pytest.MonkeyPatch.context() as env:
        env.delenv("OPTIMIZE_LOSS_KEEP_FASTER")  # the bench measures the user's default
        assert main(argv) == 0
    return json.loads((out / "b.json").read_text()), (out / "b.md").read_text()


def test_json_has_documented_keys(bench):
    data, _ = bench
    assert {"meta", "overhead", "cases", "targets"} <= set(data)
    meta = data["meta"]
    for key in ("command", "date", "machine", "torch", "python", "threads", "backend", "budget_s",
                "compile_budget_s", "compiled_cases", "bandwidth_gb_s", "seconds"):
        assert key in meta, key
    assert meta["threads"] == 1 and meta["backend"] == "eager" and meta["bandwidth_gb_s"] > 0
    assert set(data["cases"]) == {"per_sample_sq", "wrong", "slow"}
    assert {"P1", "P2", "P3", "P4", "P5", "P6", "L3"} <= set(data["targets"])
    for target in data["targets"].values():
        assert {"target", "value", "met", "detail"} <= set(target)
    # Structure and sign conventions only, never the machine's speed: a negative difference of
    # two timings is noise and is reported as such, not as a negative cost.
    overhead = data["overhead"]
    assert overhead["direct_us"] > 0 and overhead["wrapped_us"] > 0 and overhead["rounds"] >= 5
    assert overhead["below_noise"] == (overhead["overhead_us"] is None)
    assert overhead["overhead_us"] is None or overhead["overhead_us"] >= 0


def test_every_variant_measured_with_sane_numbers(bench):
    data, _ = bench
    case = data["cases"]["per_sample_sq"]
    variants = case["variants"]
    for name in ("naive_eager", "naive_compiled", "optimized_eager", "optimized_compiled", "expert_eager",
                 "expert_compiled", "expert_precomputed", "optimized_cached", "optimized_uncached",
                 "optimized_eager@b256"):
        assert variants[name]["status"] == "ok", (name, variants[name])
        assert not variants[name].get("problems"), (name, variants[name])
        assert case["steady"][name]["seconds"] > 0 and variants[name]["first_s"] > 0, name
    # The B=256 expert runs in blocks alternating with the optimized version's, one per sample.
    paired = variants["optimized_eager@b256"]["paired_samples"]
    assert len(paired) == len(variants["optimized_eager@b256"]["samples"]) and min(paired) > 0
    assert case["steady"]["expert_eager@b256"]["runs"] == len(paired)
    assert case["ratios"]["optimized_vs_expert_b256"]["value"] > 0
    assert variants["optimized_eager"]["rewrite_s"] > 0
    assert variants["optimized_compiled"]["check_s"] > 0  # the first call's compiled-vs-eager check
    # ... and after its own steady blocks, rounds alternating with the compiled expert's, CPU
    # times of both (target P1); the column's blocks do not alternate.
    compiled = variants["optimized_compiled"]
    assert "paired_samples" not in compiled
    assert len(compiled["p1_cpu_samples"]) == len(compiled["p1_expert_cpu_samples"]) >= 1
    assert variants["expert_eager"]["min_bytes"] == 8 * 3 * 4 * 3  # pred read + its gradient + target
    assert case["ratios"]["optimized_vs_best_expert"]["value"] > 0
    assert case["roofline"]["bytes"] == 288 and case["roofline"]["bound_s"] > 0


def test_backend_rows_split_first_calls_and_count_nodes(bench):
    data, text = bench
    case = data["cases"]["per_sample_sq"]
    for name in ("naive_compiled@b4", "backend_compiled@b4", "expert_compiled@b4"):
        assert case["variants"][name]["status"] == "ok" and not case["variants"][name]["problems"], name
        assert case["variants"][name]["dynamo_s"] > 0, name
    [row] = case["backend_rows"]
    assert row["size"] == "b4" and row["rerolled"] == 1
    # One Dynamo graph: four unrolled copies in, one vmapped copy out.
    [before], [after] = row["graph_nodes"], row["rerolled_nodes"]
    assert after < before
    assert all(row["steady"][k]["seconds"] > 0 and row["first"][k]["seconds"] > 0 for k in ("naive", "backend", "expert"))
    assert row["split"]["backend"]["passes_s"] > 0 and row["split"]["naive"]["passes_s"] == 0
    assert row["backend_vs_expert"]["value"] > 0 and not row["skipped"]
    assert data["targets"]["B1"]["met"] is not None and data["targets"]["B2"]["value"] == "not measured"
    assert '## torch.compile(naive, backend="optimize_loss")' in text
    assert next(line for line in text.splitlines() if line.startswith("| per_sample_sq | B=4 |"))


def test_backend_rows_alone(suite, tmp_path):
    argv = ["bench", str(suite), "--backend-rows", "--backend", "eager", "--compile-budget", "20",
            "--min-time", "0.02", "--json", str(tmp_path / "b.json"), "--markdown", str(tmp_path / "b.md")]
    assert main(argv) == 0
    data, text = json.loads((tmp_path / "b.json").read_text()), (tmp_path / "b.md").read_text()
    assert set(data["cases"]) == {"per_sample_sq"}  # the only case with backend rows
    assert set(data["cases"]["per_sample_sq"]["variants"]) == {
        "naive_compiled@b4", "backend_compiled@b4", "expert_compiled@b4"}
    assert "--backend-rows" in data["meta"]["command"] and data["meta"]["command"] in text
    assert "| B1 |" in text and "| P1 |" not in text and "## Steady forward+backward" not in text


def test_wrong_optimized_version_is_flagged(bench):
    data, text = bench
    wrong = data["cases"]["wrong"]
    assert wrong["variants"]["optimized_eager"]["problems"]
    assert wrong["ratios"]["optimized_vs_best_expert"] is None  # a wrong result is no "best" time
    row = next(line for line in text.splitlines() if line.startswith("| wrong |"))
    assert "✗ not equivalent" in row
    assert "## Errors and mismatches" in text and "- wrong, optimize_loss compile=False:" in text


def test_over_budget_is_reported(bench):
    data, text = bench
    naive = data["cases"]["slow"]["variants"]["naive_eager"]
    assert naive["status"] == "over_budget" and naive["budget_s"] == 8
    assert data["cases"]["slow"]["steady"]["naive_eager"]["lower_bound"]
    row = next(line for line in text.splitlines() if line.startswith("| slow |"))
    assert "> 8 s (budget)" in row
    assert data["cases"]["slow"]["variants"]["expert_eager"]["status"] == "ok"  # the case went on


def test_markdown_is_self_describing(bench):
    data, text = bench
    meta = data["meta"]
    assert meta["command"].startswith("python -m rewrite bench ") and meta["command"] in text
    for fact in (meta["machine"], f"torch {meta['torch']}", "1 torch thread(s)", meta["date"]):
        assert fact in text
    for heading in ("## Targets", "## Steady forward+backward", "## First call and rewrite time",
                    "## Memory-bandwidth roofline", "## Fixed target", "## Target preprocessing inside the loss", "## Per-sample losses at B=256",
                    "## Wrapper overhead"):
        assert heading in text
    assert "| P5 |" in text and "✓" in text
    assert "| case | loops | distributed |" in text
    # the roofline's copies ran on the timed variants' thread count, and the header says so
    assert "tensor copy measured in this run on 1 torch thread(s), as the timed variants" in text
    assert data["cases"]["per_sample_sq"]["variants"]["optimized_eager"]["host_syncs"] == [0, 0]
    assert "## Host syncs per call" in text and "| per_sample_sq | 0 | 0 |" in text


def test_distributed_loops_are_counted():
    loops = [[3, True, "distributed", ""], [7, False, "kept", ""], [9, True, "distributed", ""]]
    assert distributed_count({"loops": loops}) == "2"
    assert distributed_count({"loops": loops[1:2]}) == "0"
    assert distributed_count({"loops": []}) == distributed_count(None) == "–"


def test_loops_distributed_inside_called_methods_are_counted():
    """The bench loads an example from its file without registering it in ``sys.modules``; the
    loop ``Loss.eval_batch`` runs (a method of an object the loss makes) is still rewritten and
    counted (the module's classes were looked up in ``sys.modules``: KeyError, kept)."""
    module = load_example(str(Path(examples.__file__).parent / "real" / "nlp_seq2seq_step_nll.py"))
    assert module.__name__ not in sys.modules
    info = rewrite_info(module)
    assert distributed_count(info) == "1" and not any("failed" in l[3] for l in info["loops"])


HELPER_METHOD_CASE = HEADER + textwrap.dedent("""
    CASE = {"loops": "vectorize", "elementwise": False, "sizes": {"small": "[4, 3]", "bench": "[8, 3]"}}

    class Loss:
        def rows(self, pred, target):
            total = 0
            for i in range(pred.shape[0]):
                total = total + ((pred[i] - target[i]) ** 2).sum()
            return total

        def forward(self, pred, target):
            return self.rows(pred, target) / pred.shape[0]

    def naive(pred, target):
        criterion = Loss()
        return criterion.forward(pred, target)

    def expert(pred, target):
        return ((pred - target) ** 2).sum() / pred.shape[0]
    """)


def test_the_loops_column_reads_the_report_after_the_first_call(tmp_path, monkeypatch):
    """The optimized job's loops, a helper method's among them, with how often each one's
    vectorized form ran in the first call; the column says when fewer ran vectorized."""
    path = tmp_path / "helper_method.py"
    path.write_text(HELPER_METHOD_CASE)
    out = io.StringIO()
    monkeypatch.setattr(bench_worker, "_out", out)
    bench_worker.run_job(0, str(path), "optimized_eager", 5.0,
                         {"backend": "eager", "min_time": 0.01}, 30.0)
    infos = [e for e in map(json.loads, out.getvalue().splitlines())
             if e["event"] == "info" and "loops" in e]
    assert [[row[:2] + row[4:] for row in e["loops"]] for e in infos] == [
        [[15, True, 0, False]],  # before any call (``rewrite_info``)
        [[15, True, 1, True]]]   # after the first call: its vectorized form ran once
    raw = {"loops": infos[-1]["loops"]}
    assert _loops(raw, {}) == "1/1 vectorized"
    raw["loops"][0][4:] = [0, False]  # its runtime check failed: the loop ran as written
    assert _loops(raw, {}) == "1/1 vectorized (0 ran so)"


def test_the_loops_column_counts_an_inner_loop_run_inside_its_outer_loops_form():
    # (line, vectorized, strategy, reason, own vectorized runs, ran vectorized)
    raw = {"loops": [[3, True, "vmap", "", 1, True], [4, True, "vmap", "", 0, True],
                     [9, True, "batched", "", 0, False], [12, False, "kept", "why", 0, False]]}
    assert _loops(raw, {}) == "3/4 vectorized (2 ran so)"


def test_loop_summary_counts_strategies_and_names_the_distributed_cases_gain():
    raw = {"a": {"optimized_eager": {"loops": [[3, True, "distributed", ""], [7, False, "kept", ""]]}},
           "b": {"optimized_eager": {"loops": [[2, True, "batched", ""]]}}, "c": {}}
    analysed = {name: {"ratios": {"naive_vs_optimized": Ratio(2.5)}} for name in raw}
    line = loop_summary(dict.fromkeys(raw, {}), raw, analysed)[-1]
    assert line.startswith("Loops: 3 reported, 2 vectorized; 1 batched, 1 distributed, 1 kept. ")
    assert line.endswith("Distributed, by case (naive eager / optimize_loss eager): a (1 loop(s), 2.5×).")
    assert loop_summary({"c": {}}, {"c": {}}, {}) == []


def test_never_slower_column_and_target(bench):
    data, text = bench
    ratios = data["cases"]["per_sample_sq"]["ratios"]
    steady = data["cases"]["per_sample_sq"]["steady"]
    # The original timed alongside the optimized function when its trial found it close.
    optimized = data["cases"]["per_sample_sq"]["variants"]["optimized_eager"]
    paired = optimized.get("paired_samples")
    original = statistics.median(paired) if paired else steady["naive_eager"]["seconds"]
    want = original / steady["optimized_eager"]["seconds"]
    if optimized.get("paired_cpu_samples"):  # one thread: their CPU times, round by round
        want = statistics.median(p / c for p, c in zip(optimized["paired_cpu_samples"],
                                                      optimized["cpu_samples"]))
    assert ratios["original_vs_optimized_eager"]["value"] == pytest.approx(want)
    # Both capped by the budget (nothing to rewrite: the optimized function is the original):
    # a ratio would tell nothing, so there is none, and the target is not met on every case.
    assert data["cases"]["slow"]["ratios"]["original_vs_optimized_eager"] is None
    assert data["targets"]["P7"]["met"] is not True
    assert data["targets"]["P7"]["target"].startswith("never slower")
    assert "| optimized / original (eager) |" in text and "| P7 |" in text


def test_cases_filter_and_discovery(suite):
    assert [c.name for c in discover(suite, None)] == ["per_sample_sq", "slow", "wrong"]
    assert [c.name for c in discover(suite, ["wrong"])] == ["wrong"]
    assert discover(suite, ["slow"])[0].info["loops"] == "kept"
    with pytest.raises(SystemExit, match="no case named nope"):
        discover(suite, ["nope"])


def test_ratio_verdicts_with_budget_capped_numbers():
    assert Ratio(1.05).meets(1.1) and not Ratio(1.2).meets(1.1)
    assert Ratio(5, lower_bound=True).meets(1.1) is False      # already too slow
    assert Ratio(1.0, lower_bound=True).meets(1.1) is None     # could be either
    assert Ratio(80, lower_bound=True).meets(50, at_most=False)
    assert Ratio(20, lower_bound=True).meets(50, at_most=False) is None
    assert str(Ratio(1234.5, lower_bound=True)) == "> 1,234×"


def test_steady_time_of_partial_results():
    assert steady_time({"status": "ok", "first_s": 2.0, "samples": [1.0, 3.0, 2.0]}, eager=True) == Time(2.0, 3)
    assert steady_time({"status": "over_budget", "first_s": 9.0, "samples": []}, eager=True) == Time(9.0, 1)
    assert steady_time({"status": "over_budget", "budget_s": 5.0, "samples": []}, eager=True) == Time(5.0, 0, True)
    # A compiled variant's first call is compilation, never a steady time.
    assert steady_time({"status": "over_budget", "first_s": 9.0, "budget_s": 30.0, "samples": []},
                       eager=False) == Time(30.0, 0, True)
    assert steady_time({"status": "error", "error": "x", "samples": []}, eager=True) is None


def test_overhead_below_noise_is_said_not_negative(monkeypatch):
    # A fake clock on which the wrapped call looks faster than the direct one: the difference is
    # noise, reported as such, never as a negative cost.
    now = [0.0]

    def costing(us):
        def call(pred, target):
            now[0] += us * 1e-6
        return call
    monkeypatch.setattr(bench_module.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(bench_module, "_nothing_to_rewrite", costing(2.0))
    monkeypatch.setattr(bench_module, "optimize_loss", lambda fn, **options: costing(1.0))
    overhead = bench_module.wrapper_overhead_us(0.01)
    assert overhead["below_noise"] and overhead["overhead_us"] is None
    assert overhead["direct_us"] == pytest.approx(2.0) and overhead["wrapped_us"] == pytest.approx(1.0)
    assert fmt_overhead(overhead) == "below measurement noise"
    assert fmt_overhead({"below_noise": False, "overhead_us": 1.234}) == "1.23 µs"


@pytest.mark.parametrize("paired, cpu, want", [
    ([3.0], None, Ratio(1.5)), (None, None, Ratio(2.0)),
    # per round 2.0, 0.75, 2.25: the median, and (3 rounds) no interval
    ([3.0], ([1.0, 4.0, 4.0], [2.0, 3.0, 9.0]), Ratio(2.0, False, 0.0, math.inf))])
def test_never_slower_prefers_the_original_timed_alongside(paired, cpu, want):
    """P7 divides the original's time by the optimized one's: the original's blocks alternating
    with the optimized job's when it ran them (their CPU times when taken, on one thread: the
    median of the ratios of the two blocks of each round, with its interval), else its own
    job's."""
    optimized = {"status": "ok", "samples": [2.0] * 3, **({"paired_samples": paired} if paired else {}),
                 **({"cpu_samples": cpu[0], "paired_cpu_samples": cpu[1]} if cpu else {})}
    variants = {"naive_eager": {"status": "ok", "samples": [4.0] * 3}, "optimized_eager": optimized}
    ratios = analyse({}, variants, 1.0, None)["ratios"]
    assert ratios["original_vs_optimized_eager"] == want


@pytest.mark.parametrize("eager_expert_s, compiled_s, want", [
    # 30 rounds of the expert's CPU time at 0.8x optimize_loss's: 1 / 0.8 (interval of ranks)
    (3.0, 1.0, Ratio(1.25, False, 1.25, 1.25)),
    # the eager expert twice as fast as the compiled one in their own jobs: twice the ratio
    (0.5, 1.0, Ratio(2.5, False, 2.5, 2.5)),
    # optimize_loss eager is its best time: the columns' ratio (2 s over 0.5 s)
    (0.5, 9.0, Ratio(4.0))])
def test_p1_takes_the_compiled_rounds_alternating_with_the_compiled_expert(eager_expert_s, compiled_s, want):
    """P1 is a ratio of a few percent, which separate jobs on a loaded machine cannot measure:
    where optimize_loss is fastest compiled, its rounds alternating with torch.compile(expert)
    give the CPU ratio, scaled when the eager expert ran faster than the compiled one."""
    compiled = {"status": "ok", "samples": [compiled_s] * 30,
                "p1_cpu_samples": [1.0] * 30, "p1_expert_cpu_samples": [0.8] * 30}
    variants = {"optimized_eager": {"status": "ok", "samples": [2.0] * 3}, "optimized_compiled": compiled,
                "expert_eager": {"status": "ok", "samples": [eager_expert_s] * 3},
                "expert_compiled": {"status": "ok", "samples": [1.0] * 3}}
    got = analyse({}, variants, 1.0, None)["ratios"]["optimized_vs_best_expert"]
    assert got.value == pytest.approx(want.value) and got.lower_bound is want.lower_bound
    assert (got.low, got.high) == pytest.approx((want.low, want.high)) if want.low else got.low is None


def _p7_case(cpu_ratios: list[float], runs_original: bool) -> dict:
    """One case's raw results: the optimized function (2 ms per call, or what runs_original
    says ran) and the original alternating on one thread, their CPU times giving these ratios."""
    optimized = {"status": "ok", "samples": [2e-3] * len(cpu_ratios), "paired_samples": [2e-3],
                 "cpu_samples": [1.0] * len(cpu_ratios), "paired_cpu_samples": cpu_ratios,
                 "runs_original": runs_original}
    return {"naive_eager": {"status": "ok", "samples": [2e-3] * 3}, "optimized_eager": optimized}


@pytest.mark.parametrize("runs_original, wrapper_us, met", [
    (True, 1.5, True),     # the original itself behind a 1.5 us dispatch: 0.08% of 2 ms
    (True, 100.0, False),  # ... behind a 100 us one: 5% of the call
    (False, 1.5, False)])  # a rewritten form measured 1.2% slower, interval below 1
def test_never_slower_judges_the_original_behind_the_wrapper_by_the_wrappers_cost(
        runs_original, wrapper_us, met):
    """Two runs of the same code alternating read a ratio a percent or two off 1 on a busy
    machine; where the steady calls ran the original itself, P7 judges the one difference, the
    wrapper's dispatch that P5 measures, as a share of the call."""
    variants = _p7_case([0.988 + 0.0001 * k for k in range(30)], runs_original)
    analysed = {"c": analyse({}, variants, 1.0, None)}
    overhead = {"below_noise": False, "overhead_us": wrapper_us, "wrapped_us": 3.0, "direct_us": 1.5}
    assert analysed["c"]["ratios"]["original_vs_optimized_eager"].meets(1.0, at_most=False) is False
    target, value, verdict, detail = never_slower({"c": {}}, analysed, {"c": variants}, overhead)
    assert verdict is met
    assert ("missed: c" in detail) is (not met)
    assert ("ran the original itself" in value) is runs_original
    cell = _never_slower_cell("c", analysed, {"c": variants}, overhead)
    assert cell.endswith("✓" if met else "✗") and ("runs the original" in cell) is runs_original


def test_a_ratio_with_an_interval_meets_a_limit_within_it():
    """The same code against itself reads 1.0 within noise: a limit inside the interval of a
    median of per-round ratios cannot be told from it, and counts as met."""
    assert Ratio(0.98, False, 0.95, 1.01).meets(1.0, at_most=False)
    assert Ratio(0.98, False, 0.95, 0.99).meets(1.0, at_most=False) is False
    assert str(Ratio(0.98, False, 0.95, 1.01)) == "0.98× (0.95–1.01)"
    values = [float(v) for v in range(1, 51)]  # 50 rounds: ranks 18 and 32 of 50
    assert median_interval(values) == (18.0, 32.0)
    assert median_interval([3.0, 1.0, 2.0, 6.0, 5.0, 4.0]) == (1.0, 6.0)
    # Fewer than 6 rounds do not make a 95% interval: no verdict either way
    assert median_interval([0.8]) == (0.0, math.inf)
    assert Ratio(0.8, False, *median_interval([0.8])).meets(1.0, at_most=False) is None
    assert str(Ratio(0.8, False, 0.0, math.inf)) == "0.8× (too few rounds for an interval)"


def test_runs_original_says_what_the_steady_calls_ran():
    def plain(x):
        return (x * 2).sum()

    def per_row(x):
        total = 0
        for i in range(x.shape[0]):
            total = total + (x[i] * 2).sum()
        return total

    x = torch.randn(8, 3)
    nothing = optimize_loss(plain, compile=False)
    nothing(x)
    assert bench_worker.runs_original(nothing)  # nothing to rewrite
    always = optimize_loss(per_row, compile=False, keep_faster=False)
    always(x)
    assert not bench_worker.runs_original(always)  # the rewritten form runs, no trial


@pytest.mark.parametrize("arg, default, quick, want", [
    (None, None, False, ["a", "b", "slow_add"]),  # all
    (None, ["slow_add"], True, ["slow_add"]),
    ("b,zzz", None, False, ["b"]),
    ("", None, False, []),                        # an empty value: none, not the default
    ("", ["slow_add"], True, []),
])
def test_compiled_cases_from_the_flag(arg, default, quick, want):
    assert bench_module.compiled_cases(["a", "b", "slow_add"], arg, default, quick) == want
    assert bench_module.compiled_cases(["a"], None, ["slow_add"], True) == ["a"]  # quick keeps one


def test_a_compile_failure_fallback_does_not_count_as_the_original_running():
    """After torch.compile failed the eager rewritten function runs (``Fallback.running``): the
    bench must not report those calls as the original's."""
    from types import SimpleNamespace
    from passes.report import Fallback

    def fn_with(running: str) -> SimpleNamespace:
        report = SimpleNamespace(forms=[], fallbacks=[Fallback("boom", "f.py", 1, running=running)])
        return SimpleNamespace(report=report, __wrapped__=None, rewritten_function=lambda: "new")

    assert not bench_worker.runs_original(fn_with("the uncompiled rewritten function"))
    assert bench_worker.runs_original(fn_with("the original function"))
