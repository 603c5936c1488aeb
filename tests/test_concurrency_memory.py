"""Concurrency and memory: two threads calling one wrapper (the racing first call included) get
the original's results and one rewrite; 10,000 calls with fresh shapes and fresh targets grow
neither memory nor ``report.fallbacks``."""
from __future__ import annotations

import gc
import threading
import tracemalloc

import pytest
import torch
import torch.nn.functional as F

import rewrite
from rewrite import runtime
from rewrite.testing import assert_equivalent
from tests.helpers import load_module

LOSS = '''
import torch
import torch.nn.functional as F


def loss(pred, target):
    total = 0
    for i in range(pred.shape[0]):
        if target[i].sum() > 0:
            total += ((pred[i] - target[i]) ** 2).mean()
        else:
            total += pred[i].abs().mean()
    return total / pred.shape[0]


def smoothed_ce(logits, labels):
    one_hot = F.one_hot(labels, logits.shape[-1]).to(logits.dtype) * 0.9 + 0.1 / logits.shape[-1]
    return -(one_hot * F.log_softmax(logits, -1)).sum(-1).mean()
'''


@pytest.fixture(scope="module")
def losses(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("concurrency"), LOSS)


def inputs(n: int, seed: int, d: int = 3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, requires_grad=True), torch.randn(n, d, generator=g)


def race(fn, calls: list[tuple]) -> list:
    """Call ``fn`` on each argument tuple from its own thread, all released at once."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(k):
        barrier.wait()
        try:
            results[k] = fn(*calls[k])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            results[k] = exc
    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return results


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_two_threads_racing_the_first_call(losses, compile):
    options = {"compile": compile, "strict": True}
    if compile:
        options["backend"] = "eager"
    for attempt in range(3):  # a fresh wrapper each time: the first call is the one raced
        fast = rewrite.optimize_loss(losses.loss, **options)
        calls = [inputs(4, attempt), inputs(4 if attempt else 6, attempt + 10)]
        results = race(fast, calls)
        for args, got in zip(calls, results):
            assert not isinstance(got, BaseException), got
            torch.testing.assert_close(got, losses.loss(*args))
        assert len(fast.report.loops) == 1 and not fast.report.fallbacks
        assert_equivalent(losses.loss, fast, *calls[0])


def test_two_threads_calling_repeatedly(losses):
    fast = rewrite.optimize_loss(losses.loss, compile=False, strict=True)

    def many(seed):
        for k in range(200):
            args = inputs(1 + (seed + k) % 5, seed * 1000 + k)
            torch.testing.assert_close(fast(*args), losses.loss(*args))
        return True
    assert race(many, [(0,), (1,)]) == [True, True]
    assert not fast.report.fallbacks


def _growth(call, n: int, warm: int = 500) -> int:
    """Bytes still allocated after ``n`` calls beyond what ``warm`` calls left."""
    for k in range(warm):
        call(k)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for k in range(warm, warm + n):
            call(k)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return sum(stat.size_diff for stat in after.compare_to(before, "filename"))


def test_ten_thousand_calls_with_fresh_shapes_and_targets(losses):
    fast = rewrite.optimize_loss(losses.loss, compile=False, strict=True)

    def call(k):
        pred, target = inputs(1 + k % 97, k, d=1 + k % 5)  # fresh shapes, fresh targets
        fast(pred, target).backward()
    grown = _growth(call, 10_000)
    assert grown < 64 * 1024, f"{grown} bytes kept by 10,000 calls"  # measured: under 1 KB
    assert not fast.report.fallbacks


def test_verify_with_fresh_shapes_keeps_memory_bounded(losses, monkeypatch):
    # each signature's decision is kept (about 500 bytes), up to SIGNATURES_KEPT of them (1024;
    # 16 here, so that 300 calls see the table full); keep_faster's bands are not under test
    monkeypatch.setattr(runtime, "SIGNATURES_KEPT", 16)
    fast = rewrite.optimize_loss(losses.loss, compile=False, verify=True, keep_faster=False)

    def call(k):
        fast(*inputs(1 + k % 3, k, d=1 + k))  # a new feature size every call
    # measured: 40-60 KB (the original alone keeps about 25 KB for 300 shapes: torch's own
    # caches); with every signature kept, about 170 KB
    assert _growth(call, 300, warm=20) < 80 * 1024
    assert not fast.report.fallbacks


def test_a_forgotten_signature_is_verified_again(losses, monkeypatch):
    monkeypatch.setattr(runtime, "SIGNATURES_KEPT", 2)
    fast = rewrite.optimize_loss(losses.loss, compile=False, verify=True, keep_faster=False)
    verified = []
    monkeypatch.setattr(fast, "_verify", lambda impl, a, kw: verified.append(a[0].shape) or [])
    for d in (1, 2, 3, 1, 3):  # d=1 is forgotten when d=3 comes; d=3 is still known after it
        fast(*inputs(2, d, d=d))
    assert [s[-1] for s in verified] == [1, 2, 3, 1]


def test_hoisted_target_work_with_fresh_targets_keeps_memory_bounded(losses):
    fast = rewrite.optimize_loss(losses.smoothed_ce, backend="eager", strict=True)
    g = torch.Generator().manual_seed(0)

    def call(k):
        logits = torch.randn(8, 5, generator=g, requires_grad=True)
        fast(logits, torch.randint(5, (8,), generator=g)).backward()  # a fresh target each call
    grown = _growth(call, 1_000, warm=100)
    assert grown < 128 * 1024, f"{grown} bytes kept by 1,000 calls"  # measured: about 45 KB
    assert not fast.report.fallbacks
