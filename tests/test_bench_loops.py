"""LossBench per loop (``--per-loop``): which loops are timed against which form, the speedup
from alternating rounds, the count against the goal, the table. Clocks are fakes where times
matter: no measured time is asserted."""
from __future__ import annotations

import ast
import json
import math
import textwrap
from pathlib import Path

import pytest
import torch

import examples.real
from passes import loop_regions
from passes.report import Report
from rewrite import assert_equivalent, loop_choice, optimize_loss
from rewrite.runtime import LoopRegion, VmappedRegion, aliases_kept, copied_state, shared_views
from rewrite.tools import bench_loops, bench_worker
from rewrite.tools.bench_report import Ratio
from rewrite.tools.cli import main
from tests.helpers import load_module
from tests.test_bench import HEADER, SUITE
from tests.test_loop_run_counts import NESTED  # nested loops at lines 6 and 7, a loop at 13


@pytest.fixture
def user(tmp_path):
    return load_module(tmp_path, NESTED)


class FakeClock:
    """perf_counter and process_time of ``bench_worker``: they move only when a fake form runs."""

    def __init__(self, monkeypatch):
        self.now = 0.0
        monkeypatch.setattr(bench_worker.time, "perf_counter", lambda: self.now)
        monkeypatch.setattr(bench_worker.time, "process_time", lambda: self.now)
        monkeypatch.setattr(bench_worker.torch, "get_num_threads", lambda: 1)

    def costing(self, seconds, result=None):
        def call(*args, **kwargs):
            self.now += seconds
            return torch.zeros(()) if result is None else result
        return call


class FakeOptimized:
    """An optimized function's report and forms: the rewritten function costs 1 ms, with the
    loops at some lines as written ``costs[lines]`` (its calls raise when that is an exception);
    the region of the loops at some lines (``regions[lines]``: its line, and the costs of its
    vectorized and as-written forms; an exception it raises) has no live-ins."""

    def __init__(self, clock, report, costs, regions=None):
        self.report, self.clock, self.costs, self.asked = report, clock, costs, []
        self.regions, self.regions_asked = regions or {}, []

    def loop_region(self, lines, *inputs):
        self.regions_asked.append(tuple(lines))
        region = self.regions.get(tuple(lines), ValueError("no region"))
        if isinstance(region, Exception):
            raise region
        line, vectorized, written = region
        return LoopRegion(line, {}, frozenset(), self.clock.costing(vectorized, {}),
                          self.clock.costing(written, {}))

    def rewritten_function(self):
        return self.clock.costing(1e-3)

    def rewritten_with_loops_as_written(self, lines):
        self.asked.append(tuple(lines))
        cost = self.costs[tuple(lines)]
        if isinstance(cost, Exception):
            def call(*args):
                raise cost
            return call
        return self.clock.costing(cost)


def test_each_loop_that_ran_vectorized_is_timed_against_its_own_form(user, monkeypatch):
    clock = FakeClock(monkeypatch)
    report = Report("nested", user.__file__, 4)
    outer, inner = report.add_loop(6, True, "vmap", ""), report.add_loop(7, True, "batched", "")
    beside = report.add_loop(13, True, "batched", "")  # its runtime check was false
    kept = report.add_loop(20, False, "kept", "why")
    outer.vectorized_runs, beside.original_runs = 1, 1
    # the whole call: 1 ms rewritten, 3 ms (4 ms) with the loop(s) as written; the region:
    # the outer loop's, 0.1 ms vectorized, 0.8 ms (0.6 ms when asked for both lines) as written
    fn = FakeOptimized(clock, report, {(6,): 3e-3, (6, 7): 4e-3},
                       {(6,): (6, 1e-4, 8e-4), (6, 7): (6, 1e-4, 6e-4)})
    started, done = [], []
    bench_worker.loop_speedups(fn, (torch.zeros(2, requires_grad=True),), 1.0, 0.01,
                               lambda: started.append(clock.now), done.append)
    rows = done[-1]
    assert [r["line"] for r in rows] == [6, 7, 13, 20] and len(done) == 4
    # the inner loop runs inside the outer loop's vectorized form: both as written in its form
    assert fn.asked == [(6,), (6, 7)] and fn.regions_asked == [(6,), (6, 7)]
    assert len(started) == 4  # a budget for the whole call's rounds, one for the region's
    assert [r.get("as_written") for r in rows] == [[6], [6, 7], None, None]
    assert [r["ran_vectorized"] for r in rows] == [True, True, False, False]
    assert rows[1]["region"]["line"] == 6 and rows[1]["region"]["live_outs"] == []
    speedups = [bench_loops.loop_speedup(r) for r in rows]
    # every round the same: the median and its interval are the ratio of the two forms' costs
    assert (speedups[0].value, speedups[0].low, speedups[0].high) == pytest.approx((8.0, 8.0, 8.0))
    assert speedups[1].value == pytest.approx(6.0)
    assert speedups[2:] == [None, None]
    calls = [bench_loops.call_speedup(r) for r in rows]
    assert (calls[0].value, calls[0].low, calls[0].high) == pytest.approx((3.0, 3.0, 3.0))
    assert calls[1].value == pytest.approx(4.0)
    assert len(rows[0]["cpu_samples"]) >= bench_worker.LOOP_ROUNDS - 1  # rounds after the estimate
    assert rows[3]["runs"] == kept.runs()


def test_a_loop_that_cannot_run_as_written_alone_is_timed_with_its_caller(user, monkeypatch):
    # a helper's loop that another loop's vmapped body calls raises as written inside it: it is
    # timed with that loop as written too; a loop that raises with every caller is said
    clock = FakeClock(monkeypatch)
    report = Report("beside", user.__file__, 11)
    for line in (13, 6, 7):
        report.add_loop(line, True, "vmap", "").vectorized_runs = 1
    error = RuntimeError("vmap: data-dependent control flow\nmore text")
    fn = FakeOptimized(clock, report, {(13,): error, (6, 13): 5e-3, (6,): 2e-3, (7,): error,
                                       (7, 13): KeyError("other"), (6, 7): error})
    done = []
    bench_worker.loop_speedups(fn, (torch.zeros(2),), 1.0, 0.01, lambda: None, done.append)
    helper, caller, failing = done[-1]
    assert helper["as_written"] == [6, 13] and caller["as_written"] == [6]
    assert bench_loops.loop_speedup(helper).value == pytest.approx(5.0)
    assert bench_loops.loop_speedup(caller).value == pytest.approx(2.0)
    assert failing["error"] == "RuntimeError: vmap: data-dependent control flow"
    assert bench_loops.loop_speedup(failing) is None and "as_written" not in failing
    assert fn.asked[-3:] == [(7,), (7, 13), (6, 7)]
    # no region could be isolated: the whole call's speedup stands for the loop's own
    assert helper["region"] == {"error": "ValueError: no region"}
    assert bench_loops.loop_speedup(helper) == bench_loops.call_speedup(helper)


def test_a_caller_is_timed_as_written_with_the_loops_its_form_ran(user, monkeypatch):
    # the caller's branch as written may vectorize its inner loop again, whose vmapped body
    # calls the helper: the helper's loop runs as written only with both as written
    clock = FakeClock(monkeypatch)
    report = Report("nested", user.__file__, 4)
    outer, inner = report.add_loop(6, True, "vmap", ""), report.add_loop(7, True, "vmap", "")
    helper = report.add_loop(13, True, "vmap", "")
    outer.vectorized_runs = helper.vectorized_runs = 1
    error = RuntimeError("vmap: data-dependent control flow")
    fn = FakeOptimized(clock, report, {(6,): 2e-3, (6, 7): 3e-3, (13,): error, (6, 13): error,
                                       (6, 7, 13): 5e-3})
    done = []
    bench_worker.loop_speedups(fn, (torch.zeros(2),), 1.0, 0.01, lambda: None, done.append)
    assert done[-1][2]["as_written"] == [6, 7, 13]
    assert bench_loops.loop_speedup(done[-1][2]).value == pytest.approx(5.0)


def test_a_region_inside_a_vmapped_body_is_timed_as_its_callers(user, monkeypatch):
    # the helper's loop at 13 runs vectorized inside the vmapped body of the loop at 6, and its
    # whole call runs as written alone: its region is the caller's; any other failure is said
    clock = FakeClock(monkeypatch)
    report = Report("beside", user.__file__, 11)
    for line in (6, 13, 7):
        report.add_loop(line, True, "vmap", "").vectorized_runs = 1
    fn = FakeOptimized(clock, report, {(6,): 2e-3, (13,): 2e-3, (7,): 2e-3},
                       {(6,): (6, 1e-4, 5e-4), (13,): VmappedRegion("inside"),
                        (13, 6): (6, 1e-4, 5e-4), (7,): ValueError("a `return` out of it"),
                        (7, 6): (6, 1e-4, 5e-4)})
    done = []
    bench_worker.loop_speedups(fn, (torch.zeros(2),), 1.0, 0.01, lambda: None, done.append)
    caller, helper, other = done[-1]
    assert helper["region"]["line"] == 6 and bench_loops.loop_speedup(helper).value == pytest.approx(5.0)
    assert other["region"] == {"error": "ValueError: a `return` out of it"}
    assert fn.regions_asked == [(6,), (13,), (13, 6), (7,)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_the_form_with_a_loop_as_written_runs_it_so(user, monkeypatch, dtype):
    fn = optimize_loss(user.nested, compile=False)
    x = torch.randn(3, 4, 5, dtype=dtype, requires_grad=True)
    fn(x)
    outer = min(fn.report.loops, key=lambda loop: loop.lineno)
    form = fn.rewritten_with_loops_as_written([outer.lineno])
    maps = []
    vmap = torch.vmap
    monkeypatch.setattr(torch, "vmap", lambda *a, **k: maps.append(1) or vmap(*a, **k))
    assert_equivalent(user.nested, form, x)
    assert maps == []
    fn.rewritten_function()(x)
    assert maps == [1]
    nothing = optimize_loss(lambda p: (p ** 2).mean(), compile=False)
    with pytest.raises(ValueError, match="nothing was rewritten"):
        nothing.rewritten_with_loops_as_written([1])


def _row(line, kind, ran=True, speedup=None, vectorized=True, own=1, as_written=None, error=None,
         region=None, whole=None):
    return {"file": "x.py", "line": line, "where": f"x.py:{line}", "class": kind, "why": "",
            "vectorized": vectorized, "strategy": "vmap" if vectorized else "kept",
            "runs": {"vectorized": own, "failed": 0, "as_written": 0, "last_failure": ""},
            "ran_vectorized": ran, "speedup": speedup, "call_speedup": whole,
            **({"as_written": as_written or [line]} if ran else {}), **({"error": error} if error else {}),
            **({"region": region} if region else {})}


ROWS = [_row(1, "independent", speedup=Ratio(3.0, False, 2.0, 4.0), region={"line": 1},
             whole=Ratio(1.1, False, 1.0, 1.2)),
        _row(2, "independent", speedup=Ratio(1.6, False, 1.2, 2.0), own=0, as_written=[1, 2],
             region={"line": 1}, whole=Ratio(1.02, False, 1.0, 1.1)),
        _row(3, "independent", speedup=Ratio(1.2, False, 1.1, 1.3), region={"error": "ValueError: why"},
             whole=Ratio(1.2, False, 1.1, 1.3)),
        _row(4, "independent", ran=False, own=0),
        _row(5, "independent", ran=False, vectorized=False, own=0),
        _row(6, "dependent", speedup=Ratio(9.0, False, 8.0, 10.0)),
        _row(7, "independent", error="RuntimeError: vmap")]


def test_the_count_takes_independent_loops_that_ran_vectorized_and_were_fast_enough():
    counts = bench_loops.loop_counts(ROWS, "independent")
    assert counts == {"loops": 7, "vectorized": 6, "running": 5, "independent": 6,
                      "independent_running": 4, "fast": 2, "clearly_fast": 1}
    target = bench_loops.loop_target(counts)
    assert target["met"] is False and target["value"].startswith("2/6 (33%) run vectorized ≥ 1.5×")
    assert bench_loops.loop_target(dict(counts, fast=6))["met"] is True
    assert bench_loops.loop_target(bench_loops.loop_counts(ROWS, None))["met"] is None


def test_the_table_has_a_row_per_loop_with_what_ran_and_its_speedup():
    meta = {"command": "python -m rewrite bench examples/real --per-loop", "date": "d",
            "machine": "m", "torch": "t", "python": "p", "threads": 1, "backend": "inductor",
            "seconds": 1.0, "min_time_s": 0.5, "budget_s": 10.0}
    counts = bench_loops.loop_counts(ROWS, "independent")
    written = _row(8, "independent", ran=False, own=0)  # its check was false
    written["runs"] = dict(written["runs"], as_written=1, last_failure="check `a` was false")
    text = bench_loops.markdown(meta, {"x": ROWS, "y": [written]}, counts,
                                bench_loops.loop_target(counts))
    lines = text.splitlines()
    assert meta["command"] in text and "(CPU times)" in text and "| R1 |" in text
    assert "Speedup of the loop** (R1 is judged on it): the loop's region alone" in text
    assert "| region | speedup of the loop | whole call |" in text
    assert ("| x.py:1 | independent | vectorized (vmap) | vectorized 1, as written 0 | 1 | 1 | "
            "3× (2–4) ✓ | 1.1× (1–1.2) |") in lines
    assert ("| x.py:2 | independent | vectorized (vmap) | vectorized 0, as written 0 (inside the "
            "vectorized form of line 1) | 1, 2 | 1 | 1.6× (1.2–2) ✓ | 1.02× (1–1.1) |") in lines
    assert ("| x.py:3 | independent | vectorized (vmap) | vectorized 1, as written 0 | 3 | – | "
            "1.2× (1.1–1.3) ✗ (whole call: region not isolated, ValueError: why) | 1.2× (1.1–1.3) |") in lines
    assert ("| x.py:4 | independent | vectorized (vmap) | vectorized 0, as written 0 | – | – | "
            "not reached in the call | – |") in lines  # a branch the call did not take
    assert ("| x.py:8 | independent | vectorized (vmap) | vectorized 0, as written 1 | – | – | "
            "did not run vectorized: check `a` was false | – |") in lines
    assert "| x.py:5 | independent | kept | – | – | – | – | – |" in lines
    assert lines[-2] == ("| x.py:7 | independent | vectorized (vmap) | vectorized 1, as written 0 | 7 | – | "
                         "not timed, as written it raised RuntimeError: vmap | – |")


def test_a_loop_kept_as_written_at_run_time_says_so_and_keeps_its_measured_speedup():
    """The choice at the first call (``rewrite.loop_choice``) runs it as written: the row says
    so, and its speedup is still its vectorized form's (slower, as measured)."""
    row = _row(8, "independent", speedup=Ratio(0.3, False, 0.25, 0.35), region={"line": 8})
    row["runs"] = {**row["runs"], "kept_at_run_time": "kept as written at run time for inputs ..."}
    assert bench_loops._row(row) == (
        "| x.py:8 | independent | vectorized (vmap) | vectorized 1, as written 0; then kept as "
        "written at run time: slower vectorized | 8 | 8 | 0.3× (0.25–0.35) ✗ | – |")


def test_the_real_corpus_classifies_its_loops_for_the_bench(tmp_path):
    classes = bench_loops.loop_classes(Path(examples.real.__file__).parent)
    assert classes.loop_class("spk_ge2e_contrast", 44)[0] == classes.INDEPENDENT
    assert classes.loop_class("spk_ge2e_contrast", 1) == ("unclassified", "")
    assert bench_loops.loop_classes(tmp_path) is None
    rows = bench_loops.analyse_loops("spk_ge2e_contrast", {"per_loop": [
        {"file": str(Path.cwd() / "examples/real/spk_ge2e_contrast.py"), "line": 44,
         "samples": [1.0] * 3, "paired_samples": [2.0, 3.0, 3.0]}]}, classes)
    assert rows[0]["where"] == "examples/real/spk_ge2e_contrast.py:44"
    assert rows[0]["class"] == "independent" and rows[0]["speedup"] == Ratio(3.0, False, 0.0, math.inf)


@pytest.mark.usefixtures("keep_faster_on")  # the bench measures the user's default
def test_per_loop_bench_writes_the_table_and_the_json(tmp_path):
    (tmp_path / "per_sample_sq.py").write_text(HEADER + textwrap.dedent(SUITE["per_sample_sq"]))
    argv = ["bench", str(tmp_path), "--per-loop", "--budget", "8", "--min-time", "0.02",
            "--json", str(tmp_path / "l.json"), "--markdown", str(tmp_path / "l.md")]
    assert main(argv) == 0
    data, text = json.loads((tmp_path / "l.json").read_text()), (tmp_path / "l.md").read_text()
    [row] = data["cases"]["per_sample_sq"]["loops"]
    assert row["ran_vectorized"] and row["as_written"] == [row["line"]] and row["class"] is None
    assert row["speedup"]["value"] > 0 and len(row["samples"]) >= bench_worker.LOOP_ROUNDS
    assert row["region"]["line"] == row["line"] and len(row["region"]["samples"]) >= bench_worker.LOOP_ROUNDS
    assert row["speedup"]["value"] == pytest.approx(bench_loops.call_speedup(row["region"]).value)
    assert set(data["cases"]["per_sample_sq"]["variants"]) == {"optimized_per_loop"}
    assert data["targets"]["R1"]["met"] is None and "--per-loop" in data["meta"]["command"]
    assert f"per_sample_sq.py:{row['line']} | – | vectorized" in text and "| R1 |" in text


REGION = """
import torch

def rows(x):
    out = torch.zeros(x.shape[0], dtype=x.dtype)
    for i in range(x.shape[0]):
        out[i] = x[i].sum()
    return out

def loss(x, w):
    scaled = x * 2
    total = 0
    for i in range(x.shape[0]):
        total = total + (scaled[i] * w).sum() ** 2
    parts = []
    for i in range(x.shape[0]):
        parts.append(scaled[i].exp().mean())
    return total + torch.stack(parts).sum() + rows(scaled).sum()
"""  # loops at lines 6 (in a helper), 13 and 16


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_loop_region_runs_alone_on_what_it_read_in_a_call(tmp_path, dtype):
    module = load_module(tmp_path, REGION)
    fn = optimize_loss(module.loss, compile=False)
    x = torch.randn(3, 4, dtype=dtype, requires_grad=True)
    w = torch.randn(4, dtype=dtype, requires_grad=True)
    fn(x, w)
    region = fn.loop_region([13], x, w)
    # live-ins: what it reads (a value computed before it, detached, requiring grad as it did);
    # live-outs: what it binds that the function reads after it
    assert region.line == 13 and sorted(region.live_ins) == ["scaled", "total", "w", "x"]
    assert torch.equal(region.live_ins["scaled"], x * 2) and region.live_ins["scaled"].is_leaf
    assert region.live_ins["scaled"].requires_grad and region.live_ins["total"] == 0
    assert region.live_outs == {"i", "total"}
    vectorized, written, names = loop_choice.region_steps(region)
    assert names == ["total"]
    (out_v, grads_v), (out_w, grads_w) = vectorized(), written()
    # the expected values: the loop as the user wrote it, from the same values
    scaled, w2 = (x * 2).detach().requires_grad_(), w.detach().requires_grad_()
    total = sum((scaled[i] * w2).sum() ** 2 for i in range(3))
    expected = torch.autograd.grad(total, [scaled, w2], loop_choice.cotangent(total, 0))
    for out, grads in ((out_v, grads_v), (out_w, grads_w)):
        assert out["total"].dtype == dtype and torch.allclose(out["total"], total)
        assert grads[2] is None  # x: read for its shape only
        assert all(torch.allclose(g, e) for g, e in zip(grads[:2], expected))


def test_a_region_that_writes_into_a_live_in_returns_it_and_gets_a_copy_each_call(tmp_path):
    # the helper's loop writes rows of `out`, made before it; a list appended to is an output
    module = load_module(tmp_path, REGION)
    fn = optimize_loss(module.loss, compile=False)
    x, w = torch.randn(3, 4, requires_grad=True), torch.randn(4, requires_grad=True)
    fn(x, w)
    region = fn.loop_region([6], x, w)
    assert region.line == 6 and sorted(region.live_ins) == ["out", "x"] and not region.live_outs
    assert torch.equal(region.live_ins["out"], torch.zeros(3))  # as the call had it before the loop
    vectorized, written, names = loop_choice.region_steps(region)
    assert names == ["out"]
    first, again = written(), written()
    assert torch.equal(first[0]["out"], again[0]["out"]) and torch.equal(first[1][0], again[1][0])
    assert torch.equal(vectorized()[0]["out"], (x * 2).sum(1).detach())
    assert torch.equal(region.live_ins["out"], torch.zeros(3))  # never written itself
    appended = fn.loop_region([16], x, w)
    assert loop_choice.region_steps(appended)[2] == ["parts"] and appended.live_ins["parts"] == []
    with pytest.raises(ValueError, match="no vectorized loop at lines"):
        fn.loop_region([99], x, w)


GUARDED = """
def f(xs):
    for x in xs:
        if x > 0:
            'optimize_loss: loop at line 9 vectorized'
            y = x
        else:
            for v in x:
                BODY
    return y
"""


@pytest.mark.parametrize("body, escapes", [("y = v", None), ("break", None),
                                           ("x[x.i] = v", None), ("return v", "`return` out of it"),
                                           ("yield v", "`yield` out of it"),
                                           ("x.total += v", None), ("x.rows[v] = v", None)])
def test_a_region_that_leaves_its_block_is_not_made_a_function(body, escapes):
    tree = ast.parse(GUARDED.replace("BODY", body))
    guard, func = loop_regions.find_guard(tree, 9)
    assert loop_regions.live_outs(guard, func) == {"y"}
    if escapes is None:
        made = loop_regions.region_function(guard, func, ["x"]).body[0]
        assert ast.unparse(made.args) == "x" and ast.unparse(made.body[-1]) == "return locals()"
    else:
        with pytest.raises(ValueError, match=escapes):
            loop_regions.region_function(guard, func, ["x"])
    assert loop_regions.find_guard(tree, 8) is None


@pytest.mark.parametrize("body, written", [
    ("y = v", {}), ("x[x.i] = v", {}), ("x.add_(v)", {}), ("x.total += v", {"x": {"total"}}),
    ("x.rows[v] = v", {"x": {"rows"}}), ("x.buf.copy_(v)", {"x": {"buf"}}),
    ("x.buf[0].mul_(v)", {"x": {"buf"}}), ("x.log.append(v)", {"x": {"log"}}),
    ("x.a.b = v", {"x": {"a"}}), ("v.total = x", {}), ("x.total.sum()", {}),
    ("x.seen.add(v)", {"x": {"seen"}})])
def test_the_attributes_a_region_writes_are_found_by_target_and_in_place_method(body, written):
    # `v` is bound in the region, not a parameter; `add` counts as a set's (a copy more is safe)
    guard, _ = loop_regions.find_guard(ast.parse(GUARDED.replace("BODY", body)), 9)
    assert loop_regions.written_attributes(guard, {"x"}) == written


STATEFUL = """
import torch

class Acc:
    def __init__(self, n, dtype):
        self.total = 0
        self.rows = torch.zeros(n, dtype=dtype)
        self.last = torch.zeros((), dtype=dtype)

    def add(self, x, w):
        for i in range(x.shape[0]):
            self.total = self.total + (x[i] * w).sum() ** 2
            self.rows[i] = x[i].sum()
        self.last.copy_(self.rows[-1])

def loss(x, w):
    acc = Acc(x.shape[0], x.dtype)
    acc.add(x * 2, w)
    return acc.total + acc.rows.sum() + acc.last
"""  # the loop at line 11 writes two attributes of `self`


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_region_that_writes_attributes_returns_them_and_copies_them_each_call(tmp_path, dtype):
    module = load_module(tmp_path, STATEFUL)
    fn = optimize_loss(module.loss, compile=False)
    x = torch.randn(3, 4, dtype=dtype, requires_grad=True)
    w = torch.randn(4, dtype=dtype, requires_grad=True)
    fn(x, w)
    region = fn.loop_region([11], x, w)
    assert region.written == {"self": {"total", "rows"}}
    state = region.live_ins["self"]  # as the call had it when the loop began
    assert state.total == 0 and torch.equal(state.rows, torch.zeros(3, dtype=dtype))
    vectorized, written, names = loop_choice.region_steps(region)
    assert names == ["self.rows", "self.total"]
    scaled, w2 = (x * 2).detach().requires_grad_(), w.detach().requires_grad_()
    total = sum((scaled[i] * w2).sum() ** 2 for i in range(3))
    rows = scaled.sum(1)
    expected = torch.autograd.grad([rows, total], [scaled, w2], [
        loop_choice.cotangent(rows, 0), loop_choice.cotangent(total, 1)])
    leaves = [t for t in loop_choice._tensors(region.live_ins) if t.requires_grad]
    order = [next(i for i, t in enumerate(leaves) if t is region.live_ins[n]) for n in ("x", "w")]
    for step in (vectorized, written, vectorized, written):  # again: nothing accumulates
        out, grads = step()
        assert out["self.total"].dtype == dtype and torch.allclose(out["self.total"], total)
        assert torch.allclose(out["self.rows"], rows)
        assert all(torch.allclose(grads[i], e) for i, e in zip(order, expected))
    assert state.total == 0 and torch.equal(state.rows, torch.zeros(3, dtype=dtype))


def test_the_state_of_an_object_a_region_writes_is_copied_with_what_aliases_it():
    class Storage:
        def __init__(self):
            self.returns, self.log = torch.zeros(2), [torch.ones(1)]
    storage = Storage()
    copy = aliases_kept(torch.Tensor.clone)
    new, alias = copied_state(storage, {"returns", "log", "fresh"}, copy), copy(storage.returns)
    assert new.returns is alias and new.returns is not storage.returns
    assert new.log is not storage.log and new.log[0] is not storage.log[0]
    with pytest.raises(ValueError, match="Linear"):
        copied_state(torch.nn.Linear(2, 2), {"weight"}, copy)


def test_a_region_writing_an_attribute_through_a_name_bound_to_it_writes_the_copy():
    # rl_a2c_gae_storage: `_returns_1 = self.returns` before the guard; the vectorized form
    # writes `_returns_1[...]`, the loop as written `self.returns[step]`: one tensor in both
    from examples.real import rl_a2c_gae_storage as case
    fn = optimize_loss(case.naive, compile=False)
    inputs = case.make_inputs("small")
    fn(*inputs)
    region = fn.loop_region([40], *inputs)
    assert region.written == {"self": {"returns"}}
    assert region.live_ins["_returns_1"] is region.live_ins["self"].returns
    vectorized, written, names = loop_choice.region_steps(region)
    outs = [vectorized()[0], written()[0], vectorized()[0]]
    assert outs[0]["self.returns"].abs().sum() > 0
    for out in outs[1:]:
        assert torch.allclose(out["self.returns"], outs[0]["self.returns"])
        assert torch.allclose(out["_returns_1"], outs[0]["self.returns"])
    assert not region.live_ins["self"].returns.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_region_reading_a_module_runs_with_the_weights_functional_call_swapped_in(dtype):
    # con_cpc_infonce_steps: the module is built on the meta device; its weights are the
    # loss's arguments, in it only during `functional_call`: the region runs with them
    from examples.real import con_cpc_infonce_steps as case
    fn = optimize_loss(case.naive, compile=False)
    z, context, weight, bias = inputs = case.make_inputs("small", dtype)
    fn(*inputs)
    region = fn.loop_region([41], *inputs)
    state = region.module_states["self"]
    assert torch.equal(state["Wk.1.weight"], weight[1]) and state["Wk.1.weight"].requires_grad
    assert next(region.live_ins["self"].parameters()).is_meta  # the module itself is unchanged
    vectorized, written, names = loop_choice.region_steps(region)
    assert "pred" in names
    c_t = region.live_ins["c_t"]
    expected = torch.stack([c_t @ weight[i].T + bias[i] for i in range(weight.shape[0])])
    (out_v, grads_v), (out_w, grads_w) = vectorized(), written()
    # the heads' weights are rows of `weight` in the call, and so are the stacked weights the
    # vectorized form reads (`_Wk_weight`, a view of it): in the region, rows of one copy of it,
    # the one leaf both forms' gradients reach (the loop as written fills one per row)
    copy = state["Wk.1.weight"]._base
    assert copy is not None and copy.is_leaf and torch.equal(copy, weight)
    assert all(state[f"Wk.{i}.weight"]._base is copy for i in range(weight.shape[0]))
    assert region.live_ins["_Wk_weight"]._base is copy
    leaves = loop_choice._roots([t for t in loop_choice._tensors([region.live_ins, state])
                                 if t.requires_grad])
    at = next(i for i, t in enumerate(leaves) if t is copy)
    assert grads_w[at] is not None and grads_w[at].dtype == dtype
    torch.testing.assert_close(grads_v[at], grads_w[at])
    for out in (out_v, out_w):  # the stacked heads' one matmul rounds apart: dtype tolerances
        assert out["pred"].dtype == dtype
        torch.testing.assert_close(out["pred"], expected.detach())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_views_of_a_tensor_requiring_grad_are_captured_as_views_of_its_one_copy(dtype):
    # functional_call's heads are rows of one weight: a region copying each row apart made
    # every row a leaf, and the loop as written skipped the whole-weight gradient each row's
    # backward fills in the call (CPC's heads: 0.96x timed so, 1.7x in the call)
    weight = torch.randn(3, 4, 2, dtype=dtype, requires_grad=True)
    rows, plain, alone = [weight[i] for i in range(3)], torch.randn(2, dtype=dtype), \
        torch.randn(5, dtype=dtype, requires_grad=True)
    with torch.no_grad():
        frozen = weight[0]
    as_ints = weight.detach().view(torch.int32 if dtype == torch.float32 else torch.int64)
    chunks = list(alone.split(1))  # one backward node for all: run once in the call
    others = [frozen, plain[:1], as_ints[0], alone[1:], *chunks]
    shared = shared_views(rows + others + rows[:1])
    assert len(shared) == 3 and all(a is b for a, b in zip(shared, rows))
    copy = aliases_kept(lambda t: t.detach().clone().requires_grad_(t.requires_grad), shared)
    copies = [copy(r) for r in rows]
    base = copies[0]._base
    assert base is not None and base.is_leaf and base.dtype == dtype and torch.equal(base, weight)
    assert all(c._base is base and torch.equal(c, r) for c, r in zip(copies, rows))
    assert copy(rows[1]) is copies[1] and copy(weight) is base  # one copy of each, aliases kept
    # copied apart: a row taken without grad (its own leaf), one of a tensor without grad, a
    # view in another dtype, the one view of a tensor, chunks of one split
    for other in others:
        assert copy(other)._base is None and torch.equal(copy(other), other)
    assert copy(frozen).is_leaf
    leaves = loop_choice._roots(copies + [copy(frozen)])
    assert len(leaves) == 2 and leaves[0] is base and leaves[1] is copy(frozen)
    out = sum((c * (k + 1)).sum() for k, c in enumerate(copies))
    grad, unused = torch.autograd.grad(out, leaves, allow_unused=True)
    assert unused is None and grad.dtype == dtype
    torch.testing.assert_close(grad, torch.tensor([1., 2., 3.], dtype=dtype)[:, None, None]
                               .expand(3, 4, 2))
    # without bases (the copies a region's calls make of what they change) every tensor apart
    apart = aliases_kept(torch.Tensor.clone)
    assert apart(rows[0])._base is None
