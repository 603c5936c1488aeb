"""Inner loops of a loop that is kept are planned as if they were not inner: the kept loop runs
as written, so they may stack and gather lists in front of themselves, inside its body (as
monodepth2 writes its photometric loss: per scale, a dict entry written; per source frame, a
read of a dict keyed by tuples). The inner loops run vectorized (run-time counts), with the
values, every gradient and the dtype of the loops as written."""
from __future__ import annotations

import pytest
import torch

from tests.helpers import equivalent_report, load_module

USER_CODE = '''
import torch


def per_scale(outputs, frame_ids, scales, targets):
    losses = {}
    total = 0
    for scale in scales:
        loss = 0
        source = scale if len(scales) > 8 else scale  # a conditional expression before an if
        if len(frame_ids) > 1:
            for f in frame_ids[1:]:
                loss = loss + (outputs[("color", f, source)] - targets[scale]).abs().mean()
        losses[f"loss/{scale}"] = loss
        total += loss
    return total / len(scales)


def reprojection(pred, target):
    return ((pred - target) ** 2 + 1e-3).sqrt().mean(1, True)


def min_reprojection(outputs, frame_ids, scales, targets):
    losses = {}
    total = 0
    for scale in scales:
        errors = []
        for f in frame_ids[1:]:
            errors.append(reprojection(outputs[("color", f, scale)], targets[scale]))
        errors = torch.cat(errors, 1)
        losses[scale] = errors.min(1).values.mean()
        total = total + losses[scale]
    return total


def heads_per_scale(heads, scales, t):
    losses = {}
    for scale in scales:
        loss = 0
        for h in heads:
            loss = loss + ((h * scale - t) ** 2).mean()
        losses[scale] = loss
    return sum(losses.values())
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("kept_outer"), USER_CODE)


def _frames(dtype, special):
    gen = torch.Generator().manual_seed(0)
    outputs = {("color", f, s): torch.randn(2, 3, 8 >> s, 8 >> s, dtype=dtype, generator=gen)
               for f in (-1, 1) for s in (0, 1, 2)}
    targets = [torch.randn(2, 3, 8 >> s, 8 >> s, dtype=dtype, generator=gen) for s in (0, 1, 2)]
    if special:  # NaN, inf and ties in one frame of one scale
        outputs[("color", 1, 1)][0, 0, 0] = float("nan")
        outputs[("color", -1, 2)][0, 1, 1] = float("inf")
        outputs[("color", -1, 0)][1] = targets[0][1]
    return {k: v.requires_grad_() for k, v in outputs.items()}, targets


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("name", ["per_scale", "min_reprojection"])
def test_an_inner_loop_gathers_in_a_kept_loop(user, dtype, special, name):
    # min_reprojection (monodepth2's per-frame reprojection errors): the list is read whole after
    # the inner loop (`torch.cat(errors, 1)`, then rebound), so an op with an infinite derivative
    # (`sqrt`) in its items does not keep it; the frame id only keys the gathered read, and what
    # the items are computed from varies with it (not the same value in every iteration)
    outputs, targets = _frames(dtype, special)
    report = equivalent_report(getattr(user, name), outputs, [0, -1, 1], [0, 1, 2], targets)
    outer, inner = sorted(report.loops, key=lambda loop: loop.lineno)
    assert not outer.vectorized and "writes into `losses`" in outer.reason, outer.reason
    assert inner.vectorized and (inner.vectorized_runs, inner.original_runs) == (3, 0), inner
    assert "gathered and stacked" in inner.reason and "no gradient" not in inner.reason


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_an_inner_loop_stacks_a_list_in_a_kept_loop(user, dtype):
    gen = torch.Generator().manual_seed(1)
    heads = [torch.randn(4, 5, dtype=dtype, generator=gen).requires_grad_() for _ in range(3)]
    t = torch.randn(4, 5, dtype=dtype, generator=gen)
    t[0, 0] = float("-inf")
    report = equivalent_report(user.heads_per_scale, heads, [0.5, 1.0], t)
    outer, inner = sorted(report.loops, key=lambda loop: loop.lineno)
    assert not outer.vectorized
    assert inner.vectorized and (inner.vectorized_runs, inner.original_runs) == (2, 0), inner


def test_items_that_do_not_stack_run_the_inner_loop_as_written(user):
    heads = [torch.randn(4, c, dtype=torch.float64).requires_grad_() for c in (5, 5, 1)]
    report = equivalent_report(user.heads_per_scale, heads, [0.5, 1.0],
                               torch.randn(4, 5, dtype=torch.float64))
    _, inner = sorted(report.loops, key=lambda loop: loop.lineno)
    assert (inner.vectorized_runs, inner.original_runs) == (0, 2)

