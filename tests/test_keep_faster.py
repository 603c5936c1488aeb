"""Never slower than the original: per input signature the calls after the first time the
rewritten function against the original, and the faster runs from then on. The clock is a fake
(``rewrite.keep_faster.timed_call`` replaced) that makes one form slower: no measured time is
asserted."""
from __future__ import annotations

import pytest
import torch

from rewrite import keep_faster, optimize_loss
from rewrite.runtime import describe_key, signature_key
from rewrite.tools.inspection import collect, format_text
from tests.helpers import load_module

USER_CODE = '''
import torch

def summed(x):
    total = 0
    for i in range(x.shape[0]):
        total = total + (x[i] ** 2).sum()
    return total
'''
TRIAL_CALLS = keep_faster.TRIAL_CALLS


@pytest.fixture
def user(tmp_path):
    return load_module(tmp_path, USER_CODE)


def fake_clock(monkeypatch, original, slower, slow_s=1.5):
    """Replace the timer: ``slower(form, args)`` says whether that call took ``slow_s`` s instead
    of 1 s. Returns the log of (form, rows) per timed call."""
    log = []

    def timed_call(fn, args, kwargs):
        form = "original" if fn is original else "rewritten"
        log.append((form, args[0].shape[0]))
        return fn(*args, **kwargs), slow_s if slower(form, args) else 1.0
    monkeypatch.setattr(keep_faster, "timed_call", timed_call)
    return log


def _x(rows, dtype=torch.float32):
    return torch.randn(rows, 3, dtype=dtype, generator=torch.Generator().manual_seed(rows),
                       requires_grad=True)


def _ran_original(out):
    # The loop as written ends on an addition; the batched rewrite on a sum.
    return type(out.grad_fn).__name__ == "AddBackward0"


@pytest.mark.parametrize("slow", ["original", "rewritten"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_faster_form_runs_and_the_report_says_why(user, monkeypatch, slow, dtype):
    f = optimize_loss(user.summed, compile=False, keep_faster=True)
    log = fake_clock(monkeypatch, user.summed, lambda form, args: form == slow)
    x = _x(6, dtype)
    want = user.summed(x)
    outs = [f(x) for _ in range(1 + TRIAL_CALLS + 2)]
    for out in outs:  # every call, timed or not, has the original's value and dtype
        assert out.dtype == want.dtype
        torch.testing.assert_close(out, want)
    # First call: the rewritten (it counts loop runs); then the original's untimed warm-up call
    # and alternating timed calls; then nothing is timed.
    assert [form for form, _ in log] == ["original"] + ["rewritten", "original"] * keep_faster.TIMED_CALLS
    chosen = "rewritten" if slow == "original" else "original"
    assert [(c.chosen, c.calls) for c in f.report.forms] == [(chosen, keep_faster.TIMED_CALLS)]
    assert _ran_original(outs[-1]) == (chosen == "original")
    dt = str(dtype).replace("torch.", "")
    assert (f"form: the {chosen} function runs for inputs ({dt}[6, 3]:grad): 1e+03 ms per forward "
            f"call against 1.5e+03 ms for the {slow} (best of 3 timed calls each)") in str(f.report)


def test_gradients_equal_through_the_trial(user, monkeypatch):
    f = optimize_loss(user.summed, compile=False, keep_faster=True)
    fake_clock(monkeypatch, user.summed, lambda form, args: form == "rewritten")
    x = _x(5, torch.float64)
    want, = torch.autograd.grad(user.summed(x), x)
    for _ in range(1 + TRIAL_CALLS + 1):
        got, = torch.autograd.grad(f(x), x)
        torch.testing.assert_close(got, want)


def test_each_signature_chooses_on_its_own(user, monkeypatch):
    f = optimize_loss(user.summed, compile=False, keep_faster=True)
    # The rewritten form is slower for 4 rows only.
    fake_clock(monkeypatch, user.summed, lambda form, args: (form == "rewritten") == (args[0].shape[0] == 4))
    small, large = _x(4), _x(9)
    for _ in range(1 + TRIAL_CALLS):
        f(small), f(large)
    assert {(c.signature, c.chosen) for c in f.report.forms} == {
        ("(float32[4, 3]:grad)", "original"), ("(float32[9, 3]:grad)", "rewritten")}
    assert _ran_original(f(small)) and not _ran_original(f(large))


def test_keep_faster_false_times_nothing(user, monkeypatch):
    f = optimize_loss(user.summed, compile=False, keep_faster=False)
    log = fake_clock(monkeypatch, user.summed, lambda form, args: form == "rewritten")
    for _ in range(1 + TRIAL_CALLS):
        out = f(_x(6))
    assert log == [] and f.report.forms == [] and not _ran_original(out)


def test_nothing_rewritten_times_nothing(tmp_path, monkeypatch):
    user = load_module(tmp_path, "def plain(x):\n    return (x * 2).sum()\n")
    f = optimize_loss(user.plain, compile=False, keep_faster=True)
    log = fake_clock(monkeypatch, user.plain, lambda form, args: False)
    for _ in range(1 + TRIAL_CALLS):
        f(_x(3))
    assert log == [] and f.report.forms == []


def test_a_failing_rewrite_during_the_trial_falls_back_without_a_choice(user, monkeypatch):
    f = optimize_loss(user.summed, compile=False, keep_faster=True)
    f(_x(6))

    def timed_call(fn, args, kwargs):
        if fn is not user.summed:
            raise RuntimeError("boom")
        return fn(*args, **kwargs), 1.0
    monkeypatch.setattr(keep_faster, "timed_call", timed_call)
    with pytest.warns(UserWarning, match="boom"):
        for _ in range(3):
            out = f(_x(6))
    assert f.report.forms == [] and _ran_original(out)


def test_inspect_shows_the_choice(user, monkeypatch):
    fake_clock(monkeypatch, user.summed, lambda form, args: form == "rewritten")
    data = collect(user.summed, (_x(6),), {}, repeat=TRIAL_CALLS + 1)
    assert data["forms"] == ["the original function runs for inputs (float32[6, 3]:grad): 1e+03 ms "
                             "per forward call against 1.5e+03 ms for the rewritten (best of 3 timed "
                             "calls each)"]
    assert "  form: the original function runs" in format_text(data)


def test_signatures_of_containers_read_as_their_items():
    key = signature_key(([torch.zeros(2, 3, requires_grad=True), torch.ones(4)],
                         {"a": torch.zeros(1)}, (1, "x")), {"k": [1.0]})
    assert describe_key(key) == ("(list[float32[2, 3]:grad, float32[4]], dict['a': float32[1]], "
                                 "tuple[int, 'x'], k=list[float])")
