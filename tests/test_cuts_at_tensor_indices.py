"""Every item but the one at an index parameter, ``torch.cat((x[:j], x[j + 1:]))``, is a gather
when the index is a tensor: a helper called from a vmapped loop body with the loop's index runs
under vmap (it raised "calling .item()" there), with the same values, gradients and dtype; a
Python int index runs the slices as written, an index out of range the original function."""
from __future__ import annotations

import pytest
import torch

from passes import cuts_at_tensor_indices as cuts
from passes.report import Report
from rewrite import optimize_loss
from rewrite.frontend import rewrite_function
from tests.helpers import equivalent_report, load_module

# A prototype loss in the shape of GE2E's contrast variant: a method with a loop and a return,
# called per (class, sample) from nested loops, cuts the sample out of its class with the
# loop indices it is given.
PROTOTYPES = """
import torch
import torch.nn as nn


class PrototypeMargin(nn.Module):
    def __init__(self, margin):
        super().__init__()
        self.margin = margin

    def prototypes_without(self, feats, means, cls, k):
        rest = torch.cat((feats[cls, :k], feats[cls, k + 1:]))
        rest = rest.mean(0)
        table = []
        for c, mean in enumerate(means):
            if c == cls:
                table.append(rest)
            else:
                table.append(mean)
        return torch.stack(table)

    def forward(self, feats):
        means = feats.mean(1)
        rows = []
        for cls, group in enumerate(feats):
            per_sample = []
            for k, f in enumerate(group):
                table = self.prototypes_without(feats, means, cls, k)
                dist = ((table - f) ** 2).sum(1)
                per_sample.append(torch.relu(self.margin + dist[cls] - dist).sum())
            rows.append(torch.stack(per_sample))
        return torch.stack(rows).mean()


def loss(feats, margin):
    return PrototypeMargin(margin)(feats)


def drop_mean(x, j):  # a loop: called, not inlined, from the loop body
    rest = torch.cat([x[:j], x[j + 1:]], 0)
    total = 0
    for r in rest:
        total = total + r
    return total / len(rest)


def spread(x, steps):
    out = []
    for j in range(steps):
        out.append(drop_mean(x, j) * 2)
    return torch.stack(out).sum()
"""

GOLDEN = ("excl = _without_item(x[s], j) if _index_tensors(j, s) else "
          "torch.cat((x[s, :j], x[s, j + 1:]))")

HELPER = """
import torch


def cut(x, s, j):
    excl = torch.cat((x[s, :j], x[s, j + 1:]))
    total = 0
    for row in excl:
        total = total + row
    return total
"""


def _rewritten(tmp_path, source, name="cut"):
    fn = getattr(load_module(tmp_path, source), name)
    report = Report(name, "", 0)
    _, changed = rewrite_function(fn, report)
    return report.rewritten_source if changed else None


def test_golden(tmp_path):
    code = _rewritten(tmp_path, HELPER.replace(
        "excl = torch.cat((x[s, :j], x[s, j + 1:]))\n    total = 0\n    for row in excl:\n"
        "        total = total + row\n    return total", "excl = torch.cat((x[s, :j], x[s, j + 1:]))\n"
        "    return excl.sum()"))
    assert code.splitlines()[1].strip() == GOLDEN, code


@pytest.mark.parametrize("before, after", [
    ("def cut(x, s, j):", "def cut(x, s, j):\n    j = j + 0"),         # rebound: not the argument
    ("x[s, j + 1:]))", "x[s, j + 2:]))"),                               # not the complement
    ("(x[s, :j], x[s, j + 1:])", "(x[s, j + 1:], x[s, :j])"),           # rotated
    ("x[s, j + 1:]))", "x[s, j + 1:]), 1)"),                            # another dim
    ("def cut(x, s, j):", "def cut(x, s, k):\n    j = k"),              # a local, not a parameter
])
def test_other_forms_are_unchanged(tmp_path, before, after):
    code = _rewritten(tmp_path, HELPER.replace(before, after).replace(
        "    total = 0\n    for row in excl:\n        total = total + row\n    return total",
        "    return excl.sum()"))
    assert code is None or "_without_item" not in code, code


def test_cuts_in_loops_are_the_loop_stages(tmp_path):
    """A cut the loop's header makes is bound once in front of the vectorized loop (as Python
    evaluates it once), a statement of the function this pass may take; none in a loop."""
    looped = HELPER.replace("    excl = torch.cat((x[s, :j], x[s, j + 1:]))\n", "").replace(
        "for row in excl:", "for row in torch.cat((x[s, :j], x[s, j + 1:])):")
    code = _rewritten(tmp_path, looped)
    taken = [line.strip() for line in code.splitlines() if "_without_item" in line]
    assert taken and all(line.startswith("_iterated = ") for line in taken), code
    loop_body = HELPER.replace("for row in excl:\n        total = total + row",
                               "for k in range(2):\n        total = total + excl[k] * k")
    code = _rewritten(tmp_path, loop_body.replace(
        "    excl = torch.cat((x[s, :j], x[s, j + 1:]))\n", "").replace(
        "excl[k]", "torch.cat((x[s, :j], x[s, j + 1:]))[k]"))
    assert code is None or "_without_item" not in code, code


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("special", [False, True])
def test_method_under_vmap_is_equivalent_and_runs_vectorized(tmp_path, dtype, special):
    user = load_module(tmp_path, PROTOTYPES)
    feats = torch.randn(3, 4, 5, dtype=dtype, generator=torch.Generator().manual_seed(0))
    if special:  # a tie between two samples, and an infinite feature
        feats[1, 2] = feats[1, 0]
        feats[2, 3, 1] = float("inf")
    report = equivalent_report(user.loss, feats.requires_grad_(), torch.tensor(0.5, dtype=dtype))
    loops = {l.lineno: l for l in report.loops}
    assert len(loops) == 3 and all(l.vectorized for l in loops.values()), report
    assert not report.fallbacks, report.fallbacks
    # (vectorized, raised, as written) from the method's loop: the outer loop and the method's
    # ran vectorized, the inner one inside the outer's form (inlined, not counted on its own)
    first = min(loops)
    runs = {k - first: (l.vectorized_runs, l.failed_runs, l.original_runs) for k, l in loops.items()}
    assert runs == {0: (1, 0, 0), 10: (1, 0, 0), 12: (0, 0, 0)}, report


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_function_under_vmap_is_equivalent(tmp_path, dtype):
    user = load_module(tmp_path, PROTOTYPES)
    x = torch.randn(5, 3, dtype=dtype, generator=torch.Generator().manual_seed(1)).requires_grad_()
    report = equivalent_report(user.spread, x, 5)
    assert report.loops[0].vectorized_runs == 1 and not report.fallbacks, report


def test_index_out_of_range_runs_the_original(tmp_path):
    """``j`` past the end keeps every row in the original (a mean over all of them): the gather
    raises, and the original runs, with its own value."""
    user = load_module(tmp_path, PROTOTYPES)
    x = torch.randn(4, 3, dtype=torch.float64).requires_grad_()
    report = equivalent_report(user.spread, x, 6)
    assert "IndexError" in str(report.fallbacks), report.fallbacks


def test_without_item_is_the_two_slices():
    x = torch.arange(12.0).reshape(4, 3)
    for j in range(4):
        assert torch.equal(cuts.without_item(x, torch.tensor(j)), torch.cat((x[:j], x[j + 1:])))
    got = torch.vmap(cuts.without_item, in_dims=(None, 0))(x, torch.arange(4))
    assert torch.equal(got, torch.stack([torch.cat((x[:j], x[j + 1:])) for j in range(4)]))
    for j in (4, -1, -5):
        with pytest.raises(IndexError):
            cuts.without_item(x, torch.tensor(j))
    one = x[:1]  # no position to put out of range: the slices as written
    assert torch.equal(cuts.without_item(one, torch.tensor(3)), one)


@pytest.mark.parametrize("args, taken", [
    ((torch.tensor(2),), True), ((torch.tensor(2, dtype=torch.int32), 1, torch.tensor(0)), True),
    ((2,), False), ((torch.tensor(2.0),), False), ((torch.tensor(True),), False),
    ((torch.tensor([2]),), False), ((torch.tensor(2), torch.tensor([0, 1])), False),
    ((torch.tensor(2), True), False), ((torch.tensor(2), 1.0), False),
])
def test_index_tensors(args, taken):
    assert cuts.index_tensors(*args) is taken


def test_python_int_index_runs_the_slices(tmp_path):
    user = load_module(tmp_path, HELPER)
    fast = optimize_loss(user.cut, compile=False, keep_faster=False)
    x = torch.randn(3, 4, 2, requires_grad=True)
    torch.testing.assert_close(fast(x, 1, 2), user.cut(x, 1, 2), rtol=0, atol=0)
    assert "_without_item" in fast.report.rewritten_source
