"""Never slower than the original (on by default): per band of input signatures a few calls time
the rewritten function against the original, and the faster runs from then on. The clock is a
fake (``rewrite.keep_faster.timed_call`` replaced) that makes one form slower: no measured time
is asserted."""
from __future__ import annotations

import pytest
import torch

import ast
import functools
import random
from types import SimpleNamespace

from passes.loops_as_written import as_written
from rewrite import keep_faster, optimize_loss, runtime
from rewrite.keep_faster import Timing
from rewrite.runtime import describe_key, signature_key
from rewrite.tools.inspection import collect, format_text
from tests.helpers import load_module

# the user's default is under test
pytestmark = pytest.mark.usefixtures("keep_faster_on")

USER_CODE = '''
import torch

def summed(x):
    total = 0
    for i in range(x.shape[0]):
        total = total + (x[i] ** 2).sum()
    return total
'''
PAIRS = keep_faster.PAIRS


@pytest.fixture
def user(tmp_path):
    return load_module(tmp_path, USER_CODE)


@pytest.fixture(autouse=True)
def machine_independent_floor(monkeypatch):
    """The least time of a loop iteration is timed on the machine, and on a loaded one it can
    exceed a fake clock's times, so that the trial decides at once: tests that need a floor set
    their own."""
    monkeypatch.setattr(keep_faster, "iteration_floor", lambda: 1e-9)


def fake_clock(monkeypatch, original, seconds):
    """Replace the timer: ``seconds(form, args)`` is the (forward, backward or None) time of that
    call. Returns the log of (form, rows) per timed call."""
    log = []

    def timed_call(fn, args, kwargs):
        form = "original" if fn is original else "rewritten"
        log.append((form, args[0].shape[0]))
        return fn(*args, **kwargs), Timing(*seconds(form, args))
    monkeypatch.setattr(keep_faster, "timed_call", timed_call)
    return log


def slower(form_name, factor=1.5):
    """Forward-only times: ``form_name`` takes ``factor`` s, the other 1 s."""
    return lambda form, args: (factor if form == form_name else 1.0, None)


def _x(rows, dtype=torch.float32):
    return torch.randn(rows, 3, dtype=dtype, generator=torch.Generator().manual_seed(rows),
                       requires_grad=True)


def _ran_original(out):
    # The loop as written ends on an addition; the batched rewrite on a sum.
    return type(out.grad_fn).__name__ == "AddBackward0"


def _forms(log):
    return [form for form, _ in log]


def _rounds(count, forms=("rewritten", "original")):
    """The order of ``count`` rounds of timed calls: it turns by one form every round."""
    order = []
    for n in range(count):
        turn = n % len(forms)
        order += forms[turn:] + forms[:turn]
    return order


@pytest.mark.parametrize("slow", ["original", "rewritten"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_close_times_take_pairs_of_calls_and_the_faster_runs(user, monkeypatch, slow, dtype):
    f = optimize_loss(user.summed, compile=False)  # keep_faster is the default
    log = fake_clock(monkeypatch, user.summed, slower(slow))
    x = _x(6, dtype)
    want = user.summed(x)
    outs = [f(x) for _ in range(1 + 2 * PAIRS + 2)]
    for out in outs:  # every call, timed or not, has the original's value and dtype
        assert out.dtype == want.dtype
        torch.testing.assert_close(out, want)
    # First call: the rewritten (it counts loop runs), untimed; 1.5x apart is not clear, so
    # PAIRS rounds of one timed call each, in turns; then nothing is timed until the first check.
    assert _forms(log) == _rounds(PAIRS) == ["rewritten", "original", "original", "rewritten"] * 2
    chosen = "rewritten" if slow == "original" else "original"
    assert [(c.chosen, c.calls, c.at_once) for c in f.report.forms] == [(chosen, PAIRS, False)]
    assert _ran_original(outs[-1]) == (chosen == "original")
    dt = str(dtype).replace("torch.", "")
    assert (f"form: the {chosen} function runs for inputs ({dt}[6, 3]:grad) and every other size "
            f"of them with 16-63 tensor elements: 1e+03 ms per forward call against 1.5e+03 ms "
            f"for the {slow} (medians of {PAIRS} rounds of timed calls, compared within each "
            f"round)") in str(f.report)


@pytest.mark.parametrize("factor, chosen", [(1.05, "original"), (1.2, "rewritten")])
def test_the_rewritten_form_must_be_clearly_faster(user, monkeypatch, factor, chosen):
    """About as fast gains nothing and may be noise: the original runs unless the rewritten
    form's best call is ``MARGIN`` (10%) faster than the original's."""
    f = optimize_loss(user.summed, compile=False)
    fake_clock(monkeypatch, user.summed, slower("original", factor))
    for _ in range(1 + 2 * PAIRS + 1):
        out = f(_x(6))
    assert [c.chosen for c in f.report.forms] == [chosen]
    assert _ran_original(out) == (chosen == "original")
    assert ("no rewritten form is 10% faster" in str(f.report)) == (chosen == "original")


def test_a_clearly_slower_original_runs_once(user, monkeypatch):
    f = optimize_loss(user.summed, compile=False)
    log = fake_clock(monkeypatch, user.summed, slower("original", factor=30.0))
    for _ in range(6):
        out = f(_x(6))
    assert _forms(log) == ["rewritten", "original"]
    assert [(c.chosen, c.at_once) for c in f.report.forms] == [("rewritten", True)]
    assert not _ran_original(out)
    assert "(one timed call each, 30x slower decides at once)" in str(f.report)


@pytest.mark.parametrize("floor_s, original_runs", [(1.0, 0), (1e-9, PAIRS)])
def test_loop_iterations_tell_a_slow_original_without_running_it(user, monkeypatch, floor_s,
                                                                   original_runs):
    """The band's first call counted 6 iterations; at ``floor_s`` each, the original takes at
    least 6 s against the rewritten form's 1 s: it is not run. With a floor too small to tell,
    it is timed as usual."""
    monkeypatch.setattr(keep_faster, "iteration_floor", lambda: floor_s)
    f = optimize_loss(user.summed, compile=False)
    log = fake_clock(monkeypatch, user.summed, slower("original", factor=1.5))
    for _ in range(1 + 2 * PAIRS + 1):
        out = f(_x(6))
    assert _forms(log).count("original") == original_runs and not _ran_original(out)
    [choice] = f.report.forms
    assert choice.chosen == "rewritten" and choice.iterations == (6 if floor_s == 1.0 else 0)
    if floor_s == 1.0:
        assert ("1e+03 ms per forward call against at least 6e+03 ms for the original (not run: "
                "its loops run 6 iterations of at least 1e+06 µs each here)") in str(f.report)


def test_compiled_first_calls_count_iterations_too(user, monkeypatch):
    monkeypatch.setattr(keep_faster, "iteration_floor", lambda: 1.0)
    f = optimize_loss(user.summed, backend="eager")
    log = fake_clock(monkeypatch, user.summed, slower("original", factor=1.5))
    for _ in range(4):
        f(_x(6))
    assert _forms(log) == ["rewritten"] and f.report.forms[0].iterations == 6


def test_a_cheap_original_stays_through_the_rounds_and_the_checks(user, monkeypatch):
    """30x slower but 30 ms (under ``EXPENSIVE_S``): its first calls may be slow for their own
    reasons, or hit by load, and a wrong choice of the rewritten form would slow every call. It
    is timed in every round and every check; the rewritten form is final after the last."""
    f = optimize_loss(user.summed, compile=False)
    log = fake_clock(monkeypatch, user.summed,
                     lambda form, args: (30e-3 if form == "original" else 1e-3, None))
    for _ in range(1 + 2 * PAIRS):
        f(_x(6))
    assert _forms(log) == _rounds(PAIRS)
    log.clear()
    timed = _timed_calls(f, log, 1 + 8 + 3 + 32 + 3 + 128 + 3 + 512 + 3 + 100)
    assert [form for _, form in timed] == _rounds(PAIRS + keep_faster.RECHECKS)[2 * PAIRS:]
    assert [(c.chosen, c.at_once) for c in f.report.forms] == [("rewritten", False)]
    assert set(f._impls.values()) == {f.rewritten_function()}


def test_a_clearly_slower_rewrite_gets_a_second_call(user, monkeypatch):
    # Its first timed call may be its first run at all: never dropped on one call.
    f = optimize_loss(user.summed, compile=False)
    log = fake_clock(monkeypatch, user.summed, slower("rewritten", factor=30.0))
    for _ in range(6):
        out = f(_x(6))
    assert _forms(log) == _rounds(2)
    assert [(c.chosen, c.at_once) for c in f.report.forms] == [("original", False)]
    assert _ran_original(out)


def _timed_calls(f, log, calls):
    """The indices of the calls among ``calls`` more of ``f`` that were timed (by form)."""
    timed = []
    for i in range(calls):
        before = len(log)
        f(_x(6))
        timed += [(i, form) for form, _ in log[before:]]
    return timed


def test_a_close_choice_is_checked_again_at_spaced_calls_then_final(user, monkeypatch):
    """Not clear (1.5x): after the first choice, one timed pair after 8 untimed calls, then
    after 4 times as many, ``RECHECKS`` times; then the choice is final and the trial is gone
    from the calls' path."""
    f = optimize_loss(user.summed, compile=False)
    log = fake_clock(monkeypatch, user.summed, slower("rewritten"))
    for _ in range(1 + 2 * PAIRS):
        f(_x(6))  # the first call, then the trial's pairs
    log.clear()
    timed = _timed_calls(f, log, 1 + 8 + 3 + 32 + 3 + 128 + 3 + 512 + 3 + 100)
    starts = [i for i, _ in timed[::2]]
    # (each round, then the call that decides, runs before the untimed calls are counted)
    assert starts == [1 + 8, 1 + 8 + 3 + 32, 1 + 8 + 3 + 32 + 3 + 128,
                      1 + 8 + 3 + 32 + 3 + 128 + 3 + 512]
    assert [form for _, form in timed] == _rounds(PAIRS + keep_faster.RECHECKS)[2 * PAIRS:]
    assert f.report.forms[0].calls == PAIRS + keep_faster.RECHECKS
    assert set(f._impls.values()) == {user.summed}  # final: the original, without the trial


@pytest.mark.parametrize("gets_faster", ["rewritten", "original"])
def test_checks_that_disagree_with_the_trial_change_the_choice(user, monkeypatch, gets_faster):
    """One form is timed slower during the trial (a busy machine, say), faster at every check.
    A rewritten form: one check does not outvote the trial's rounds (medians), the checks
    together do. An original faster at the first check than every call of the rewritten form:
    the best calls say the rewritten form is not faster, and the original runs from that check
    on (a wrong rewritten form slows every call; a wrong original is never slower than without
    the rewrite)."""
    f = optimize_loss(user.summed, compile=False)
    times = ({"original": (1.0, 1.0), "rewritten": (1.5, 0.25)} if gets_faster == "rewritten"
             else {"rewritten": (1.0, 1.0), "original": (1.5, 0.5)})  # (trial, checks)
    during_trial = [True]
    fake_clock(monkeypatch, user.summed,
               lambda form, args: (times[form][0 if during_trial[0] else 1], None))
    for _ in range(1 + 2 * PAIRS + 1):
        f(_x(6))
    first = "original" if gets_faster == "rewritten" else "rewritten"
    assert [c.chosen for c in f.report.forms] == [first]
    during_trial[0] = False
    for _ in range(8 + 3):
        out = f(_x(6))
    assert [(c.chosen, c.calls) for c in f.report.forms] == [("original", PAIRS + 1)]
    assert _ran_original(out)
    assert ("no rewritten form is 10% faster, in the medians and in each form's best call"
            in str(f.report)) == (gets_faster == "original")  # the medians say it is
    for _ in range(32 + 3 + 128 + 3 + 512 + 3):
        out = f(_x(6))
    assert [(c.chosen, c.calls) for c in f.report.forms] == [
        (gets_faster, PAIRS + keep_faster.RECHECKS)]
    assert _ran_original(out) == (gets_faster == "original")


@pytest.mark.parametrize("slow, final", [
    ("rewritten", "original"),  # 30x slower: leaves after two rounds, the original is left
    # 60 ms, then 120 ms against 40 ms: close after one round, 2x (median) after two, and
    # expensive: leaves, the rewritten form is left
    ("original", "rewritten"),
])
def test_a_clear_choice_is_final_at_once(user, monkeypatch, slow, final):
    f = optimize_loss(user.summed, compile=False)
    calls = []

    def seconds(form, args):
        calls.append(form)
        if form == "rewritten":
            return (30e-3 if slow == "rewritten" else 40e-3), None
        return (1e-3 if slow == "rewritten" else 60e-3 if len(calls) <= 2 else 120e-3), None
    log = fake_clock(monkeypatch, user.summed, seconds)
    for _ in range(1 + 4 + 1):
        f(_x(6))
    assert _forms(log) == _rounds(2)
    log.clear()
    assert _timed_calls(f, log, 200) == []
    assert set(f._impls.values()) == {user.summed if final == "original" else f.rewritten_function()}


def test_the_rewritten_form_is_timed_with_saving_what_it_may_change(tmp_path, monkeypatch):
    """The wrapper saves the arguments a rewritten function may change in place (to put them
    back if it fails); the original does not need it, so that cost is the rewritten form's."""
    user = load_module(tmp_path, USER_CODE.replace("total = 0\n", "total = 0\n    x.mul_(1)\n"))
    saves = []
    monkeypatch.setattr(runtime, "_Saved", lambda *a: saves.append(1))
    f = optimize_loss(user.summed, compile=False)
    saved_in = []

    def timed_call(fn, args, kwargs):
        before = len(saves)
        out = fn(*args, **kwargs)
        saved_in.append(("original" if fn is user.summed else "rewritten", len(saves) - before))
        return out, Timing(1.0)
    monkeypatch.setattr(keep_faster, "timed_call", timed_call)
    for _ in range(1 + 2):
        f(_x(6).detach())
    assert saved_in == [("rewritten", 1), ("original", 0)]


def test_on_the_cpu_a_time_is_the_lesser_of_wall_and_cpu_time(monkeypatch):
    """A busy machine inflates the wall time, not the CPU time; threads make the CPU time larger
    than the wall time. On another device the CPU waits: wall time only."""
    clock = {"wall": 0.0, "cpu": 0.0}
    monkeypatch.setattr(keep_faster, "time", SimpleNamespace(
        perf_counter=lambda: clock["wall"], process_time=lambda: clock["cpu"]))
    for cpu, wall_s, cpu_s, want in [(True, 5.0, 2.0, 2.0), (True, 1.0, 3.0, 1.0),
                                     (False, 5.0, 2.0, 5.0)]:
        started = keep_faster._Clock(cpu)
        clock["wall"] += wall_s
        clock["cpu"] += cpu_s
        assert started.seconds() == want


def test_the_backward_counts_when_it_ran(user, monkeypatch):
    # The rewritten forward is faster, its backward much slower: forward+backward decides.
    f = optimize_loss(user.summed, compile=False)
    fake_clock(monkeypatch, user.summed,
               lambda form, args: (1.0, 9.0) if form == "rewritten" else (2.0, 1.0))
    for _ in range(6):
        out = f(_x(6))
    assert [(c.chosen, c.backward) for c in f.report.forms] == [("original", True)]
    assert _ran_original(out)
    assert "3e+03 ms per forward+backward call against 1e+04 ms for the rewritten" in str(f.report)


def test_backward_hooks_time_the_losss_own_backward():
    x = torch.randn(5, requires_grad=True)
    out, timing = keep_faster.timed_call(lambda x: (x * 2).sum(), (x,), {})
    assert timing.backward is None  # not run yet
    out.backward()
    assert timing.backward is not None and x.grad is not None
    _, no_grad = keep_faster.timed_call(lambda x: (x * 2).sum(), (x.detach(),), {})
    assert no_grad.backward is None and no_grad.hooks == []


def test_an_input_passed_again_keeps_only_the_latest_calls_hooks():
    """A parameter passed at every call: the backward of a later call must not count for an
    earlier one, so each timed call removes the hooks the calls before it set."""
    x = torch.randn(5, requires_grad=True)
    trial = keep_faster.FormTrial(lambda x: (x * 2).sum(), lambda x: (x * 3).sum(), "s",
                                  lambda chosen, choice: None, x.numel())
    for _ in range(2):  # the first two calls are always timed, whatever the times
        trial(x).backward()
        assert len(x._backward_hooks) == 1


def test_the_decision_removes_the_hooks_from_the_inputs(user):
    f = optimize_loss(user.summed, compile=False)
    x = _x(6)
    for _ in range(1 + 2 * PAIRS + 1):
        f(x).backward()
    assert len(f.report.forms) == 1 and not x._backward_hooks


def test_variable_lengths_share_one_trial(user, monkeypatch):
    """Sequence lengths that change every step: one trial for every size within a power of 4,
    so the slow original runs once, not at every new length."""
    f = optimize_loss(user.summed, compile=False)
    log = fake_clock(monkeypatch, user.summed, slower("original", factor=30.0))
    for rows in [6, 7, 9, 11, 13, 8, 20, 17, 6, 12, 19, 10]:  # 18 to 60 elements: one band
        torch.testing.assert_close(f(_x(rows)), user.summed(_x(rows)))
    assert _forms(log).count("original") == 1
    assert len(f.report.forms) == 1
    for rows in [30, 40, 50, 35]:  # 90 to 150 elements: the next band decides again, once
        f(_x(rows))
    assert _forms(log).count("original") == 2 and len(f.report.forms) == 2


def test_calls_of_different_sizes_compare_per_element(user, monkeypatch):
    # Both forms take 1 us per element: the rewritten timed at 8 rows, the original at 16
    # (twice the time, same cost per element), so neither is clearly slower.
    f = optimize_loss(user.summed, compile=False)
    log = fake_clock(monkeypatch, user.summed, lambda form, args: (args[0].numel() * 1e-6, None))
    for rows in [6] + [8, 16] * PAIRS + [6]:
        f(_x(rows))
    assert _forms(log) == _rounds(PAIRS)
    assert [c.rewritten_s for c in f.report.forms] == [pytest.approx(24e-6)]  # scaled to 8 rows


def test_each_band_chooses_on_its_own(user, monkeypatch):
    f = optimize_loss(user.summed, compile=False)
    # The rewritten form is slower for 4 rows (12 elements) only, not for 9 (27 elements).
    fake_clock(monkeypatch, user.summed, lambda form, args: (
        3.0 if (form == "rewritten") == (args[0].shape[0] == 4) else 1.0, None))
    small, large = _x(4), _x(9)
    for _ in range(6):
        f(small), f(large)
    assert {(c.signature.split(" and")[0], c.chosen) for c in f.report.forms} == {
        ("(float32[4, 3]:grad)", "original"), ("(float32[9, 3]:grad)", "rewritten")}
    assert _ran_original(f(small)) and not _ran_original(f(large))


def test_gradients_equal_through_the_trial(user, monkeypatch):
    f = optimize_loss(user.summed, compile=False)
    fake_clock(monkeypatch, user.summed, slower("rewritten"))
    x = _x(5, torch.float64)
    want, = torch.autograd.grad(user.summed(x), x)
    for _ in range(1 + 2 * PAIRS + 1):
        got, = torch.autograd.grad(f(x), x)
        torch.testing.assert_close(got, want)


def test_keep_faster_false_times_nothing(user, monkeypatch):
    f = optimize_loss(user.summed, compile=False, keep_faster=False)
    log = fake_clock(monkeypatch, user.summed, slower("rewritten"))
    for _ in range(1 + 2 * PAIRS):
        out = f(_x(6))
    assert log == [] and f.report.forms == [] and not _ran_original(out)


def test_nothing_rewritten_times_nothing(tmp_path, monkeypatch):
    user = load_module(tmp_path, "def plain(x):\n    return (x * 2).sum()\n")
    f = optimize_loss(user.plain, compile=False)
    log = fake_clock(monkeypatch, user.plain, slower("rewritten"))
    for _ in range(1 + 2 * PAIRS):
        f(_x(3))
    assert log == [] and f.report.forms == []


@pytest.mark.parametrize("stop", [(), ("x",)])
def test_nothing_rewritten_calls_go_straight_to_the_original(tmp_path, monkeypatch, stop):
    """No key, no check per call; but a detached argument still needs the wrapper's work."""
    user = load_module(tmp_path, "def plain(x):\n    return (x * 2).sum()\n")
    f = optimize_loss(user.plain, compile=False, stop_gradient=stop)
    f(_x(3))
    keys = []
    monkeypatch.setattr(runtime, "signature_key", lambda *a: keys.append(1) or signature_key(*a))
    out = f(_x(3))
    assert keys == [] and (f._fast is user.plain) == (not stop)
    assert out.requires_grad == (not stop)


def test_a_failing_rewrite_during_the_trial_falls_back_without_a_choice(user, monkeypatch):
    f = optimize_loss(user.summed, compile=False)
    f(_x(6))
    trial = f._impls[signature_key((_x(6),), {})]

    def boom(*args):
        raise RuntimeError("boom")
    # The rewritten form now fails, behind the wrapper's guard as before
    monkeypatch.setattr(trial, "forms", (functools.partial(f._guarded, boom), user.summed))
    with pytest.warns(UserWarning, match="boom"):
        for _ in range(3):
            out = f(_x(6))
    assert f.report.forms == [] and _ran_original(out)


NESTED_CODE = '''
import torch

def inner(x):
    total = 0
    for i in range(x.shape[0]):
        total = total + (x[i] ** 2).sum()
    return total

def outer(xs):
    out = 0
    for x in xs:  # kept: a data-dependent break
        out = out + inner(x)
        if out > 1e9:
            break
    return out
'''


@pytest.mark.parametrize("fastest", ["partial", "rewritten"])
def test_a_loop_vectorized_inside_a_kept_loop_is_timed_as_written_too(tmp_path, fastest):
    """``inner``'s loop runs vectorized once per iteration of ``outer``'s kept loop: a third
    form, with it as written, is timed, and runs when it is the fastest."""
    user = load_module(tmp_path, NESTED_CODE)
    f = optimize_loss(user.outer, compile=False)
    xs = [torch.randn(5, 3, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    log = []

    def timed_call(fn, args, kwargs):
        [trial] = f._bands.values()
        form = _form_name(trial.forms.index(fn))
        log.append(form)
        return fn(*args, **kwargs), Timing(1e-3 * {  # cheap: the original stays in the running
            "partial": 1.0, "original": 3.0, "rewritten": 2.0 if fastest == "partial" else 0.5}[form])
    with pytest.MonkeyPatch.context() as m:
        m.setattr(keep_faster, "timed_call", timed_call)
        outs = [f(xs) for _ in range(1 + 3 * 2 + 2 * 2 + 1)]
    # after two rounds (the second in turn one form on) the slower rewritten form leaves; the
    # cheap original stays for the rounds left (and the checks)
    assert log == (["rewritten", "original", "partial", "original", "partial", "rewritten"]
                   + _rounds(2, ("original", fastest) if fastest == "partial"
                             else (fastest, "original")))
    for out in outs:
        torch.testing.assert_close(out, user.outer(xs))
    [choice] = f.report.forms
    assert choice.chosen == fastest
    assert (choice.as_written, choice.vectorized) == (
        (((6, 3),), ()) if fastest == "partial" else ((), ((6, 3),)))
    assert (("partial: the loop at line 6 as written, its vectorized form ran 3 times in one call"
             if fastest == "partial" else "the loop at line 6 stays vectorized (ran 3 times in one "
             "call; not faster as written)") in str(f.report))
    [trial] = set(f._impls.values())  # checked again later: the original is in the running
    form = trial.forms[trial._chosen].args[0]  # the rewritten form the wrapper guards
    assert (form is f.rewritten_function()) == (fastest == "rewritten")
    grads = torch.autograd.grad(form(xs), xs)
    for got, want in zip(grads, torch.autograd.grad(user.outer(xs), xs)):
        torch.testing.assert_close(got, want)


def _form_name(index):
    return ("rewritten", "original")[index] if index < 2 else "partial"


SIDE_BY_SIDE_CODE = '''
import torch

def outer(xs):
    out = 0
    for x in xs:  # kept: a data-dependent break
        a = 0
        for i in range(x.shape[0]):
            a = a + (x[i] ** 2).sum()
        b = 0
        for i in range(x.shape[0]):
            b = b + x[i].abs().sum()
        out = out + a * b
        if out > 1e9:
            break
    return out
'''


@pytest.mark.parametrize("written, back", [
    ({8: 0.8, 11: 1.2}, (8,)),      # only the first loop is faster as written
    ({8: 1.2, 11: 0.9}, (11,)),     # only the second
    ({8: 0.8, 11: 0.9}, (8, 11)),   # both: each on its own, then together
    ({8: 1.1, 11: 1.3}, ()),        # neither
])
def test_side_by_side_loops_are_decided_each_on_its_own_time(tmp_path, written, back):
    """Two loops vectorized inside a kept loop each get a form with that loop alone as written;
    a loop goes back to as written when its form is faster than the rewritten function (median
    ratio per round), whatever the other loop's form measured. ``written``: each loop form's
    time (the rewritten function takes 1, the original 3: both stay close enough to time
    every round)."""
    user = load_module(tmp_path, SIDE_BY_SIDE_CODE)
    f = optimize_loss(user.outer, compile=False)
    xs = [torch.randn(5, 3, dtype=torch.float64, requires_grad=True) for _ in range(3)]

    def timed_call(fn, args, kwargs):
        [trial] = f._bands.values()
        index = trial.forms.index(fn)
        [(line, _)] = [trial.repeated[index - 2]] if index >= 2 else [(None, None)]
        seconds = {0: 1.0, 1: 3.0}.get(index) or written[line]
        return fn(*args, **kwargs), Timing(1e-3 * seconds)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(keep_faster, "timed_call", timed_call)
        for _ in range(1 + 4 * PAIRS + 1):
            f(xs)
    [trial] = f._bands.values()
    assert trial.repeated == ((8, 3), (11, 3))
    [choice] = f.report.forms
    assert choice.chosen == ("partial" if back else "rewritten")
    assert choice.as_written == tuple((line, 3) for line in back)
    assert choice.vectorized == tuple((line, 3) for line in (8, 11) if line not in back)
    # Side by side, what each loop saves adds up
    saved = sum(1.0 - written[line] for line in back)
    assert choice.partial_s == pytest.approx(1e-3 * (1.0 - saved))
    [impl] = {v for v in f._impls.values()}
    assert impl is trial  # the rewritten forms are within 2x of one another: checked again later
    ran = trial.forms[trial._chosen]
    if len(back) == 2:  # made for the choice: both loops as written
        assert trial._chosen == 4 and trial._combined == {frozenset({8, 11}): 4}
    want = torch.autograd.grad(user.outer(xs), xs)
    for got, w in zip(torch.autograd.grad(ran(xs), xs), want):
        torch.testing.assert_close(got, w)


def test_forms_that_win_rounds_in_turn_do_not_all_leave(user, monkeypatch):
    """Each form 3x faster than the other in every other round: both medians over the fastest
    of their round are 2x (CLEAR), yet one form must stay in the running."""
    f = optimize_loss(user.summed, compile=False)
    calls = []

    def seconds(form, args):
        calls.append(form)
        fast = (len(calls) - 1) // 2 % 2 == 0  # rounds 1, 3: the first form timed; 2, 4: the other
        return 1e-3 * (1.0 if fast == (form == "rewritten") else 3.0), None  # cheap: no early exit
    fake_clock(monkeypatch, user.summed, seconds)
    for _ in range(1 + 2 * PAIRS + 1):
        f(_x(6))
    assert len(f.report.forms) == 1


@pytest.mark.parametrize("lucky, chosen", [("rewritten", "original"), ("original", "original")])
def test_one_fast_call_chooses_no_rewritten_form(user, monkeypatch, lucky, chosen):
    """One form's third timed call is fast (a quiet moment, a warm cache), the other form faster
    in every other round. A fast rewritten call does not choose the rewritten form (medians);
    a fast original call keeps the original (its best call is faster than the rewritten
    form's best): the original needs no evidence to run, the rewritten form needs both."""
    f = optimize_loss(user.summed, compile=False)
    calls = []

    def seconds(form, args):
        if form != lucky:
            return 1.0, None
        calls.append(1)
        return (0.3 if len(calls) == 3 else 1.5), None
    fake_clock(monkeypatch, user.summed, seconds)
    for _ in range(1 + 2 * PAIRS + 1):
        out = f(_x(6))
    assert [c.chosen for c in f.report.forms] == [chosen] and _ran_original(out)


def test_noisy_times_still_choose_the_faster_form(user, monkeypatch):
    """A busy machine, as the clock sees it: the original's first two calls take 3x (its first
    runs at all: memory faulted in), and a third of all timed calls take up to 3x more (load).
    Per seed, the original takes 3.2 units and the rewritten form 4.5 (the original must win)
    or 1.5 (the rewritten must win): after the trial's rounds and checks, the faster runs."""
    for seed in range(8):
        for rewritten_s, chosen in [(4.5, "original"), (1.5, "rewritten")]:
            noise = random.Random(seed)
            originals = []

            def seconds(form, args):
                steady = rewritten_s if form == "rewritten" else 3.2
                if form == "original":
                    originals.append(1)
                cold = 3.0 if form == "original" and len(originals) <= 2 else 1.0
                load = 1.0 + 2.0 * noise.random() if noise.random() < 1 / 3 else 1.0
                return 1e-3 * steady * cold * load, None
            f = optimize_loss(user.summed, compile=False)
            fake_clock(monkeypatch, user.summed, seconds)
            for _ in range(1 + 2 * PAIRS + 1 + 8 + 3 + 32 + 3 + 128 + 3 + 512 + 3):
                out = f(_x(6))
            assert [c.chosen for c in f.report.forms] == [chosen], seed
            assert set(f._impls.values()) == {
                user.summed if chosen == "original" else f.rewritten_function()}
            assert _ran_original(out) == (chosen == "original")


def test_as_written_puts_back_the_loops_at_the_given_lines_only():
    source = ("def f(x):\n"
              "    if isinstance(x, torch.Tensor):\n"
              "        'optimize_loss: loop at line 3 vectorized'\n"
              "        t = x.sum()\n"
              "    else:\n"
              "        for r in x:\n"
              "            t = t + r\n"
              "    return t\n")
    loop = ("def f(x):\n"
            "    for r in x:\n"
            "        t = t + r\n"
            "    return t")
    assert ast.unparse(as_written(ast.parse(source), frozenset({3}))) == loop
    assert ast.unparse(as_written(ast.parse(source), frozenset({4}))) == ast.unparse(ast.parse(source))


def test_inspect_shows_the_choice(user, monkeypatch):
    fake_clock(monkeypatch, user.summed, slower("rewritten"))
    data = collect(user.summed, (_x(6),), {}, repeat=2)
    [form] = data["forms"]
    assert form.startswith("the original function runs for inputs (float32[6, 3]:grad) and every "
                           "other size of them with 16-63 tensor elements: 1e+03 ms per forward "
                           "call against 1.5e+03 ms for the rewritten (medians of ")
    assert "  form: the original function runs" in format_text(data)


def test_a_long_list_is_keyed_by_its_length_and_its_ends():
    """Reading hundreds of tensors at every call would cost a good part of the loss."""
    def key(middle):
        return signature_key(([torch.zeros(2)] * 10 + [torch.zeros(middle)] + [torch.zeros(2)] * 10,), {})
    assert key(2) == key(3) != signature_key(([torch.zeros(2)] * 22,), {})
    assert describe_key(key(2)) == "(list[21 x float32[2]])"
    ragged = signature_key(([torch.zeros(1)] * 9 + [torch.zeros(2)] * 9,), {})
    assert describe_key(ragged) == "(list[18 items: float32[1], ..., float32[2]])"


def test_signatures_of_containers_read_as_their_items():
    key = signature_key(([torch.zeros(2, 3, requires_grad=True), torch.ones(4)],
                         {"a": torch.zeros(1)}, (1, "x")), {"k": [1.0]})
    assert describe_key(key) == ("(list[float32[2, 3]:grad, float32[4]], dict['a': float32[1]], "
                                 "tuple[int, 'x'], k=list[float])")


def test_a_module_argument_reads_as_its_class_not_its_identity():
    """The report's form line names an optimized module's own inputs: its key holds the
    module's id, which a reader cannot tell from any other number."""
    module = torch.nn.MSELoss()
    assert describe_key(signature_key((module, torch.zeros(2)), {})) == (
        "(a MSELoss module, float32[2])")
    module.eval()
    assert describe_key(signature_key((module,), {})) == "(a MSELoss module in eval mode)"


def test_one_tensor_changed_in_place_is_keyed_afresh(user, monkeypatch):
    """A signature's facts are read at every call, never cached by the tensor's identity: the
    same tensor object, its dtype, size or requires_grad changed in place between calls, selects
    the band of what it is now, with gradients and values as the original's."""
    f = optimize_loss(user.summed, compile=False)
    fake_clock(monkeypatch, user.summed, slower("original"))
    x = _x(6)
    seen = []
    for change in [lambda: None, lambda: x.requires_grad_(False),
                   lambda: setattr(x, "data", x.data.double()),
                   lambda: setattr(x, "data", torch.randn(40, 3, dtype=torch.float64))]:
        change()
        torch.testing.assert_close(f(x), user.summed(x))
        seen.append(describe_key(signature_key((x,), {})))
    assert seen == ["(float32[6, 3]:grad)", "(float32[6, 3])", "(float64[6, 3])", "(float64[40, 3])"]
    assert sorted(map(describe_key, f._impls)) == sorted(seen) and len(f._bands) == len(seen)
    x.requires_grad_(True)
    got, = torch.autograd.grad(f(x), x)
    want, = torch.autograd.grad(user.summed(x), x)
    torch.testing.assert_close(got, want)


def test_the_environment_sets_the_default(monkeypatch):
    monkeypatch.setenv("OPTIMIZE_LOSS_KEEP_FASTER", "0")  # as the test suite runs
    assert not runtime.Options().keep_faster and runtime.Options(keep_faster=True).keep_faster
    monkeypatch.delenv("OPTIMIZE_LOSS_KEEP_FASTER")
    assert runtime.Options().keep_faster


def test_backward_hooks_time_a_backward_that_reaches_only_module_parameters():
    # a loss module with a learnable temperature, on inputs that take no gradient (a
    # discriminator's loss on detached fakes): its times were of the forward alone
    loss = torch.nn.Linear(5, 1)
    x = torch.randn(3, 5)
    out, timing = keep_faster.timed_call(lambda m, x: m(x).sum(), (loss, x), {})
    out.backward()
    assert timing.backward is not None and loss.weight.grad is not None
    for hook in timing.hooks:
        hook.remove()
