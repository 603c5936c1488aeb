"""Each loop on its own time (``rewrite.loop_choice``): at a band's first call each loop that ran
vectorized is timed alone, its region vectorized against as written, and a clearly slower one
runs as written for the band. The region clock is a fake (``loop_choice.timed_runs`` replaced;
it still runs the region, so that what a run could change is seen), and so is the whole-call
clock of the choice of form: no measured time is asserted."""
from __future__ import annotations

import pytest
import torch

from rewrite import keep_faster, loop_choice, optimize_loss
from rewrite.keep_faster import PAIRS, Timing
from tests.helpers import load_module
from tests.test_keep_faster import USER_CODE as KEEP_FASTER_CODE

# the user's default is under test
pytestmark = pytest.mark.usefixtures("keep_faster_on")

# test_keep_faster's module (``summed``) and more
USER_CODE = KEEP_FASTER_CODE + '''
class Acc:
    def __init__(self, n, dtype):
        self.total = 0
        self.rows = torch.zeros(n, dtype=dtype)

def stateful(x, w, acc):
    for i in range(x.shape[0]):
        acc.total = acc.total + (x[i] * w).sum() ** 2
        acc.rows[i] = x[i].sum()
    return acc.total + acc.rows.sum()

def noisy(x, log):
    total = 0
    for i in range(x.shape[0]):
        total = total + (x[i] ** 2).sum()
        log.append(torch.rand(()))
    return total

def chatty(x):
    total = 0
    for i in range(x.shape[0]):
        total = total + (x[i] ** 2).sum()
        print("row", i)
    return total

def unlooped(x):
    return (x ** 2).sum()

class Counter:
    def __init__(self):
        self.n = 0

    def tick(self):
        self.n += 1

def ticking(x, counter):
    total = 0
    for i in range(x.shape[0]):
        counter.tick()
        total = total + (x[i] ** 2).sum()
    return total

CALLS = [0]

def step():
    CALLS[0] += 1
    return 0.0

def stepping(x):
    total = 0
    for i in range(x.shape[0]):
        total = total + (x[i] ** 2).sum() + step() * 0
    return total
'''
LINES = {"summed": 6, "stateful": 16, "noisy": 24, "chatty": 31}


@pytest.fixture
def user(tmp_path):
    return load_module(tmp_path, USER_CODE)


@pytest.fixture(autouse=True)
def machine_independent_floor(monkeypatch):
    # as in test_keep_faster: a floor the fake whole-call times never reach
    monkeypatch.setattr(keep_faster, "iteration_floor", lambda: 1e-9)


def region_clock(monkeypatch, vectorized, as_written=1.0):
    """Replace the region timer: each timed block takes ``vectorized`` (``as_written``) ms per
    run; the region still runs. Returns the log of the forms timed."""
    log = []

    def timed_runs(step, runs, form, devices):
        step()
        log.append(form)
        return 1e-3 * (vectorized if form == "vectorized" else as_written)
    monkeypatch.setattr(loop_choice, "timed_runs", timed_runs)
    return log


def call_clock(monkeypatch, user_fn):
    """Whole calls: the rewritten forms take 1 s, the original 3 s (clear after two rounds)."""
    monkeypatch.setattr(keep_faster, "timed_call", lambda fn, args, kwargs: (
        fn(*args, **kwargs), Timing(3.0 if fn is user_fn else 1.0)))


def _x(rows=6, dtype=torch.float32):
    return torch.randn(rows, 3, dtype=dtype, generator=torch.Generator().manual_seed(rows),
                       requires_grad=True)


def _ran_as_written(out):
    # The loop as written ends on an addition; the batched rewrite on a sum
    return type(out.grad_fn).__name__ == "AddBackward0"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_clearly_slower_loop_runs_as_written_and_the_report_says_why(user, monkeypatch, dtype):
    f = optimize_loss(user.summed, compile=False)
    log = region_clock(monkeypatch, vectorized=4.2)
    call_clock(monkeypatch, user.summed)
    x = _x(dtype=dtype)
    first = f(x)
    # the first call is today's (the vectorized form, counted), bit for bit
    assert torch.equal(first, f.rewritten_function()(x)) and not _ran_as_written(first)
    # one run of each form, then PAIRS rounds, which form goes first turning
    assert log == ["vectorized", "as_written"] + ["vectorized", "as_written",
                                                  "as_written", "vectorized"] * (PAIRS // 2)
    [loop] = f.report.loops
    assert loop.kept_at_run_time.startswith(f"kept as written at run time for inputs ({str(dtype)[6:]}"
                                            f"[6, 3]:grad) and every other size of them")
    assert ("its vectorized form took 4.2x the loop's time (the loop's region alone, medians of "
            f"{PAIRS} rounds)") in str(f.report)  # at the loop's file:line
    outs = [f(x) for _ in range(2 * PAIRS + 1)]
    [choice] = f.report.forms
    assert choice.chosen == "rewritten" and choice.kept == ((LINES["summed"], 4.2),)
    assert ("the loop at line 6 kept as written at run time for this size: its vectorized form "
            "took 4.2x the loop's time") in str(choice)
    want = user.summed(x)
    for out in outs:  # the rewritten form of the band runs the loop as written
        assert _ran_as_written(out) and out.dtype == dtype
        torch.testing.assert_close(out, want)
    assert len(log) == 2 + 2 * PAIRS  # nothing timed after the first call


@pytest.mark.parametrize("vectorized, timed", [
    (0.4, 4),       # clearly faster: one round decides
    (1.05, 2 + 2 * PAIRS),  # about as fast: not clearly slower
])
def test_a_loop_not_clearly_slower_stays_vectorized(user, monkeypatch, vectorized, timed):
    f = optimize_loss(user.summed, compile=False)
    log = region_clock(monkeypatch, vectorized)
    call_clock(monkeypatch, user.summed)
    x = _x()
    outs = [f(x) for _ in range(1 + 2 * PAIRS + 1)]
    assert len(log) == timed
    [loop] = f.report.loops
    assert loop.kept_at_run_time == "" and "kept as written" not in str(f.report)
    [choice] = f.report.forms
    assert choice.chosen == "rewritten" and choice.kept == ()
    assert not _ran_as_written(outs[-1])  # (the trial's rounds ran the original too)


@pytest.mark.parametrize("vectorized, as_written, timed", [
    (1.0, 1e3 * keep_faster.EXPENSIVE_S, ["vectorized", "as_written"]),
    (1e3 * keep_faster.EXPENSIVE_S, 1.0, ["vectorized"]),
])
def test_an_expensive_region_runs_once(user, monkeypatch, vectorized, as_written, timed):
    """A form whose first run takes ``EXPENSIVE_S``: nothing more is run, the vectorized form
    stays (such a loop is a share of the call that the whole call's time shows)."""
    f = optimize_loss(user.summed, compile=False)
    log = region_clock(monkeypatch, vectorized, as_written)
    f(_x())
    assert log == timed
    assert f.report.loops[0].kept_at_run_time == ""


def test_a_region_that_took_long_in_the_call_is_not_run_again(user, monkeypatch):
    """Its first run in the user's call took ``EXPENSIVE_S`` or about (forward): a share of the
    call that the whole call's time shows; the first call is not made much longer."""
    log = region_clock(monkeypatch, vectorized=4.0)

    class Slow(loop_choice.Clock):
        def seconds(self):
            return keep_faster.EXPENSIVE_S / 2
    monkeypatch.setattr(loop_choice, "Clock", Slow)
    f = optimize_loss(user.summed, compile=False)
    f(_x())
    assert log == [] and f.report.loops[0].kept_at_run_time == ""


def test_a_region_drawing_random_numbers_leaves_the_stream_as_without_the_trial(user, monkeypatch):
    log = region_clock(monkeypatch, vectorized=4.0)
    x = _x()
    torch.manual_seed(0)
    want_log = []
    want = optimize_loss(user.noisy, compile=False, keep_faster=False)(x, want_log)
    want_next = torch.rand(5)
    torch.manual_seed(0)
    got_log = []
    got = optimize_loss(user.noisy, compile=False)(x, got_log)
    assert len(log) == 2 + 2 * PAIRS  # its region ran, drawing numbers each time
    assert torch.equal(torch.rand(5), want_next)
    assert torch.equal(got, want) and torch.equal(torch.stack(got_log), torch.stack(want_log))


def test_a_region_writing_attributes_leaves_them_as_without_the_trial(user, monkeypatch):
    log = region_clock(monkeypatch, vectorized=4.0)
    x, w = _x(4), torch.randn(3, requires_grad=True)
    want_acc, got_acc = user.Acc(4, x.dtype), user.Acc(4, x.dtype)
    want = optimize_loss(user.stateful, compile=False, keep_faster=False)(x, w, want_acc)
    f = optimize_loss(user.stateful, compile=False)
    got = f(x, w, got_acc)
    assert len(log) == 2 + 2 * PAIRS and "kept as written" in str(f.report)
    assert torch.equal(got, want)
    assert torch.equal(got_acc.total, want_acc.total) and torch.equal(got_acc.rows, want_acc.rows)
    # the gradients of the user's call are those of its own graph
    assert torch.equal(torch.autograd.grad(got, x)[0], torch.autograd.grad(want, x)[0])


def test_a_region_that_prints_is_not_run_again(user, monkeypatch, capsys):
    log = region_clock(monkeypatch, vectorized=4.0)
    f = optimize_loss(user.chatty, compile=False)
    f(_x(3))
    assert capsys.readouterr().out == "row 0\nrow 1\nrow 2\n"
    assert log == [] and f.report.loops[0].kept_at_run_time == ""
    assert f._bands and not any(trial._kept for trial in f._bands.values())


def test_a_region_calling_what_may_change_state_is_not_run_again(user, monkeypatch):
    """A method of an object the loss is handed (``counter.tick()``), a helper that writes a
    global (``step()``): no copy of the region's reads holds what they change, so a second run
    would change it again (the first call ticked 84 times for 4 rows)."""
    log = region_clock(monkeypatch, vectorized=4.0)
    counter, f = user.Counter(), optimize_loss(user.ticking, compile=False)
    torch.testing.assert_close(f(_x(4), counter), user.ticking(_x(4), user.Counter()))
    assert counter.n == 4 and log == [] and f.report.loops[0].kept_at_run_time == ""
    optimize_loss(user.stepping, compile=False)(_x(4))
    assert log == []


@pytest.mark.parametrize("options", [dict(compile=False, keep_faster=False),
                                     dict(backend="eager")])
def test_no_trial_of_the_forms_times_no_region(user, monkeypatch, options):
    """Without the choice of form, or compiled (no form with loops as written): nothing timed."""
    log = region_clock(monkeypatch, vectorized=4.0)
    f = optimize_loss(user.summed, **options)
    x = _x()
    for _ in range(3):
        f(x)
    assert log == []
    assert "kept as written" not in str(f.report)


def test_nothing_vectorized_times_no_region(user, monkeypatch):
    log = region_clock(monkeypatch, vectorized=4.0)
    f = optimize_loss(user.unlooped, compile=False)
    f(_x())
    assert log == []


def test_a_loop_whose_iterations_alone_are_clearly_slower_is_not_run_as_written(user, monkeypatch):
    """A slow Python loop (its iterations times the least time of one iteration exceed
    ``CLEAR`` times the vectorized form's first run) is never run again as written: its
    seconds would lengthen the first call that much (a 1,000x loss took 10 s more)."""
    # the iterations alone: 25 ms, under EXPENSIVE_S, CLEAR times the vectorized form's 4 ms
    monkeypatch.setattr(keep_faster, "iteration_floor",
                        lambda: keep_faster.EXPENSIVE_S / 2 / _x().shape[0])
    f = optimize_loss(user.summed, compile=False)
    log = region_clock(monkeypatch, vectorized=4.0)
    f(_x())
    assert log == ["vectorized"]
    assert f.report.loops[0].iterations == _x().shape[0]
    assert f.report.loops[0].kept_at_run_time == ""


def test_a_loop_whose_iterations_alone_are_expensive_is_never_run_again(user, monkeypatch):
    """Not even once to see what its forms change (``region_steps``): at ``EXPENSIVE_S`` or more
    as written it stays vectorized (slow_add's first call at [1000, 1000] ran its million
    iterations again: 47 s)."""
    monkeypatch.setattr(keep_faster, "iteration_floor", lambda: keep_faster.EXPENSIVE_S)
    steps = []
    monkeypatch.setattr(loop_choice, "region_steps", lambda region: steps.append(region))
    f = optimize_loss(user.summed, compile=False)
    f(_x())
    assert steps == [] and f.report.loops[0].iterations == _x().shape[0]
    assert f.report.loops[0].kept_at_run_time == ""


def test_a_loop_of_many_iterations_is_not_judged(user, monkeypatch):
    """More than ``JUDGED_ITERATIONS``: never run as written at the first call, whatever each
    iteration costs (per_sample_ce_fn's 4096 cross entropies ran again: 19 s); fewer are."""
    steps = []
    monkeypatch.setattr(loop_choice, "region_steps", lambda region: steps.append(region))
    for rows, judged in ((loop_choice.JUDGED_ITERATIONS + 1, False),
                         (loop_choice.JUDGED_ITERATIONS, True)):
        steps.clear()
        f = optimize_loss(user.summed, compile=False)
        f(_x(rows))
        assert f.report.loops[0].iterations == rows
        assert bool(steps) == judged, rows
