"""Reads of lists and dicts the function builds (or indexes by a string), at keys the iteration
computes, gathered and stacked in front of the loop (``gather_keyed_reads``): the vectorized
form runs (run-time counts), with the values, every gradient and the dtype of the loop as
written; items that do not stack, and keys that raise, run the loop as written."""
from __future__ import annotations

import pytest
import torch

from rewrite import optimize_loss
from tests.helpers import equivalent_report, load_module

USER_CODE = '''
import torch
import torch.nn.functional as F


def dict_of_parts(outputs, labels):
    part = {}
    for i in range(len(outputs)):
        part[i] = outputs[i]
    loss = F.cross_entropy(part[0], labels)
    for i in range(len(outputs) - 1):
        loss += F.cross_entropy(part[i + 1], labels)
    return loss


def frames(outputs, frame_ids, target):
    loss = 0
    for f in frame_ids[1:]:
        loss = loss + (outputs[("color", f)] - target).abs().mean()
    return loss / len(frame_ids)


def shifted(x, n):
    parts = [x[k] * (k + 1) for k in range(n + 1)]
    loss = 0
    for i in range(n):
        loss = loss + (parts[i + 1] - x[i]).pow(2).sum()
    return loss


def updated(outputs):
    part = {i: o for i, o in enumerate(outputs)}
    loss = 0
    for i in range(len(outputs) - 1):
        part.update({i + 1: part[i] * 2})
        loss = loss + part[i + 1].sum()
    return loss
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("gather"), USER_CODE)


def _frames(dtype, gen, shapes=None):
    shapes = shapes or {f: (2, 3, 4) for f in (-1, 1)}
    return {("color", f): torch.randn(*s, dtype=dtype, generator=gen).requires_grad_()
            for f, s in shapes.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_dict_of_parts_is_read_from_its_gathered_rows(user, dtype):
    gen = torch.Generator().manual_seed(0)
    outputs = [torch.randn(8, 5, dtype=dtype, generator=gen).requires_grad_() for _ in range(6)]
    outputs[2].data[0, 1] = float("nan")
    labels = torch.randint(0, 5, (8,), generator=gen)
    report = equivalent_report(user.dict_of_parts, outputs, labels)
    write, read = sorted(report.loops, key=lambda loop: loop.lineno)
    assert not write.vectorized and "writes into `part`" in write.reason
    assert read.vectorized and (read.vectorized_runs, read.original_runs) == (1, 0)
    assert "the items `part[i + 1]` over the loop are tensors" in read.reason


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_dict_keyed_by_tuples_over_a_list_of_ints(user, dtype):
    gen = torch.Generator().manual_seed(1)
    outputs, target = _frames(dtype, gen), torch.randn(2, 3, 4, dtype=dtype, generator=gen)
    [loop] = equivalent_report(user.frames, outputs, [0, -1, 1], target).loops
    assert loop.vectorized and (loop.vectorized_runs, loop.original_runs) == (1, 0)


def test_items_of_other_shapes_run_as_written(user):
    gen = torch.Generator().manual_seed(2)
    outputs = _frames(torch.float64, gen, {-1: (2, 3, 4), 1: (2, 3, 1)})
    target = torch.randn(2, 3, 4, dtype=torch.float64)
    [loop] = equivalent_report(user.frames, outputs, [0, -1, 1], target).loops
    assert (loop.vectorized_runs, loop.original_runs) == (0, 1)


def test_a_missing_key_raises_the_original_error(user):
    outputs = _frames(torch.float32, torch.Generator().manual_seed(3))
    optimized = optimize_loss(user.frames, compile=False)
    for fn in (user.frames, optimized):
        with pytest.raises(KeyError, match="color', 2"):
            fn(outputs, [0, -1, 2], torch.zeros(2, 3, 4))
    assert optimized.report.loops[0].original_runs == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_list_display_read_one_ahead(user, dtype):
    x = torch.randn(5, 3, dtype=dtype, generator=torch.Generator().manual_seed(4),
                    requires_grad=True)
    report = equivalent_report(user.shifted, x, 4)
    loop = max(report.loops, key=lambda loop: loop.lineno)
    assert loop.vectorized and loop.vectorized_runs == 1


def test_a_container_the_body_updates_is_not_gathered(user):
    outputs = [torch.randn(3, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    report = equivalent_report(user.updated, outputs)
    assert "_part_rows" not in report.rewritten_source
