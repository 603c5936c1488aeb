"""A decorated loss inside the user's own ``torch.compile`` (a compiled training step): the
wrapper adds no graph break (the rewrite runs when that compile starts, outside Dynamo's trace),
and the step computes what it computes with the original loss."""
from __future__ import annotations

import torch
from torch._dynamo.utils import counters

import examples.per_sample_mse
from rewrite import optimize_loss
from rewrite.testing import assert_equivalent


def _step(loss_fn):
    def step(model, x, target):
        return loss_fn(model(x), target)
    return step


def _graph_breaks(step, *args) -> int:
    torch.compiler.reset()
    counters.clear()
    torch.compile(step, backend="eager")(*args).backward()
    return sum(counters["graph_break"].values())


def test_a_compiled_step_breaks_no_more_than_with_the_expert_loss():
    module = examples.per_sample_mse
    model = torch.nn.Linear(8, 8).double()
    x, target = torch.randn(16, 8, dtype=torch.float64), torch.randn(16, 8, dtype=torch.float64)
    fresh = optimize_loss(module.naive)  # first called inside the compile: rewritten as it starts
    assert _graph_breaks(_step(fresh), model, x, target) == _graph_breaks(
        _step(module.expert), model, x, target)
    assert [l.strategy for l in fresh.report.loops] == ["batched"]

    compiled = torch.compile(_step(optimize_loss(module.naive)), backend="aot_eager")
    assert_equivalent(_step(module.naive), compiled, model, x, target)


def test_the_compile_start_hook_never_waits_for_a_busy_function():
    # A function whose lock another thread holds (it may be compiling itself, waiting for
    # Dynamo's callback lock) is skipped, not waited for: no deadlock; it stays pending.
    import threading

    from rewrite import runtime
    fn = optimize_loss(examples.per_sample_mse.naive)
    held, release = threading.Event(), threading.Event()

    def hold():
        with fn._lock:
            held.set()
            release.wait(10)
    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    try:
        runtime._rewrite_pending(None)  # returns at once
        assert fn in runtime._PENDING and fn._rewritten is None
    finally:
        release.set()
        holder.join()
    runtime._rewrite_pending(None)
    assert fn not in runtime._PENDING and fn._rewritten is not None
