"""Lists and tuples of Python ints a loop uses only as indices (``refs[t] for s, t in
enumerate(perm)``, the permutation-invariant losses of speech separation) become an int64 tensor
in front of the guard, and the lists of tensors they index are stacked; the same values,
gradients and dtype as the loop. Items used otherwise, and bools (which index tensors as masks),
keep the loop as written. A nested function reads the enclosing function's lists as it does."""
from __future__ import annotations

import pytest
import torch

from rewrite import optimize_loss
from rewrite.testing import assert_equivalent
from tests.helpers import equivalent_report, load_module
from tests.loop_helpers import build, strategies

PAIRED = """
def f(ests, refs, order):
    return sum([(ests[s] - refs[t]).pow(2).sum(-1) for s, t in enumerate(order)]) / len(order)
"""

# the speech separation form: a nested helper scores one permutation of the references
NESTED = """
def f(ests, refs):
    def score(perm):
        return sum([(ests[s] * refs[t]).sum(-1) for s, t in enumerate(perm)]) / len(perm)
    return -torch.stack([score(p) for p in [(0, 1, 2), (2, 0, 1), (1, 2, 0)]]).max(0).values.sum()
"""

AS_NUMBER = PAIRED.replace("refs[t]", "refs[s] * t")


def _lists(dtype, special=False):
    g = torch.Generator().manual_seed(0)
    ests = [torch.randn(4, 6, generator=g, dtype=dtype) for _ in range(3)]
    refs = [torch.randn(4, 6, generator=g, dtype=dtype) for _ in range(3)]
    if special:  # NaN, inf and a tie between two references
        ests[0][1, 2], refs[2][0, 0], ests[1][3, 1] = float("nan"), float("inf"), float("-inf")
        refs[1] = refs[0].clone()
    return [e.requires_grad_() for e in ests], [r.requires_grad_() for r in refs]


def test_golden_int_order_becomes_an_index_tensor():
    _, _, code, report = build(PAIRED)
    assert strategies(report) == {2: "batched"}, (report, code)
    assert ("else torch.tensor(order) if (type(order) is list or (isinstance(order, tuple) "
            "and type(order).__getitem__ is tuple.__getitem__ and (type(order).__iter__ is "
            "tuple.__iter__) and (type(order).__len__ is tuple.__len__))) and len(order) > 0 "
            "and all((type(_v_1) is int for _v_1 in order)) else order") in code, code
    assert "_refs_stacked = _stack_items(tuple(refs))" in code, code
    assert "_acc_part = (_ests_row - _refs_stacked[_t]).pow(2).sum(-1).sum(0)" in code, code


def test_golden_items_read_as_numbers_are_no_index():
    _, _, code, _ = build(AS_NUMBER)
    assert "torch.tensor(order)" not in code, code


@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equivalent(tmp_path, dtype, special):
    user = load_module(tmp_path, "import torch\n" + PAIRED + NESTED.replace("def f(", "def g("))
    ests, refs = _lists(dtype, special)
    for order in ((2, 0, 1), [1, 1, 0], (0,)):
        report = equivalent_report(user.f, ests, refs, order)
        assert (report.loops[0].vectorized_runs, report.loops[0].original_runs) == (1, 0), order
    report = equivalent_report(user.g, ests, refs)
    inner = next(loop for loop in report.loops if loop.vectorized)  # the nested helper's
    assert (inner.vectorized_runs, inner.original_runs) == (3, 0), report


@pytest.mark.parametrize("order", [(True, False, True), (0, 1.0, 2), (), (0, -1, 4)])
def test_other_orders_run_as_written(tmp_path, order):
    """Bools index a tensor as masks and a float is no index (the loop as written raises or
    picks the items by truth value); an empty order has no items; an index out of range raises
    the loop's IndexError, not one of the vectorized form."""
    user = load_module(tmp_path, "import torch\n" + PAIRED)
    ests, refs = _lists(torch.float64)
    if order == (0, -1, 4):
        with pytest.raises(IndexError, match="list index out of range"):
            optimize_loss(user.f, compile=False)(ests, refs, order)
        return
    try:
        expected = user.f(ests, refs, order)
    except (TypeError, ZeroDivisionError) as error:
        with pytest.raises(type(error)):
            optimize_loss(user.f, compile=False)(ests, refs, order)
        return
    report = equivalent_report(user.f, ests, refs, order)
    assert (report.loops[0].vectorized_runs, report.loops[0].original_runs) == (0, 1), expected


# An int read as one entry of a subscript (`probs[:, c]`, `x[i, j]`), not the whole index: the
# classes of a per-class dice (nnU-Net's foreground classes), the negatives of a pairwise
# ranking loss; a 0-d int64 tensor there indexes as the int does
ENTRIES = """
def f(probs, onehot, negs):
    classes = list(range(1, probs.shape[1]))
    loss = 0
    for c in classes:
        loss = loss + (probs[:, c] * onehot[:, c]).sum() / (onehot[:, c].sum() + 1)
    for j in negs:
        loss = loss + torch.exp(probs[0, j] - probs[1, 0])
    return loss / len(classes)
"""

# an element indexing a module global (a list here, which a tensor under vmap cannot index)
GLOBAL_LIST = """
W = [0.5, 1.0, 2.0, 4.0]

def f(probs, classes):
    loss = 0
    for c in classes:
        loss = loss + W[c] * probs[:, c].sum()
    return loss
"""


def _entries_inputs(dtype):
    g = torch.Generator().manual_seed(1)
    probs = torch.randn(3, 4, 5, generator=g, dtype=dtype)
    probs[1, 2, 3], probs[2, 1, 0] = float("nan"), float("inf")
    onehot = (torch.rand(3, 4, 5, generator=g) > 0.5).to(dtype)
    return probs.requires_grad_(), onehot


@pytest.mark.parametrize("negs", [[1, 3, -1, 3], (2,)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ints_read_as_subscript_entries_become_an_index_tensor(tmp_path, dtype, negs):
    user = load_module(tmp_path, "import torch\n" + ENTRIES)
    report = equivalent_report(user.f, *_entries_inputs(dtype), negs)
    assert [(loop.vectorized_runs, loop.original_runs) for loop in report.loops] == [
        (1, 0), (1, 0)], report
    assert "`classes` is a tensor, or a list or tuple of tensors of one shape, dtype and device " \
        "or of Python ints (stacked)" in report.loops[0].reason, report.loops[0].reason


@pytest.mark.parametrize("negs", [[True, False], [1, 2.0], [], [1, 9]])
def test_other_entry_lists_run_as_written(tmp_path, negs):
    """Bools select by truth value, a float is no index, an empty list has no items (all as
    written); an index out of range raises the original's IndexError."""
    user = load_module(tmp_path, "import torch\n" + ENTRIES)
    inputs = _entries_inputs(torch.float64)
    try:
        user.f(*inputs, negs)
    except (IndexError, RuntimeError) as error:
        with pytest.raises(type(error), match=str(error)[:20]):
            optimize_loss(user.f, compile=False)(*inputs, negs)
        return
    report = equivalent_report(user.f, *inputs, negs)
    assert (report.loops[1].vectorized_runs, report.loops[1].original_runs) == (0, 1), report


def test_an_element_indexing_a_global_list_runs_as_written(tmp_path):
    user = load_module(tmp_path, "import torch\n" + GLOBAL_LIST)
    probs, _ = _entries_inputs(torch.float64)
    report = equivalent_report(user.f, probs, [0, 2, 3])
    assert (report.loops[0].vectorized_runs, report.loops[0].original_runs) == (0, 1), report
