"""Two nested loops over pairs whose work runs under a test of items the indices read (lifted
structure's ``if t_i == t_j``) run as one loop over the pairs that pass, selected on the device
first: the same values, every gradient and dtype as the loops (float32, float64, ties, NaN,
inf), the same exceptions, the work's effects in the loops' order; the loops as written where an
item read could raise or read another value."""
from __future__ import annotations

import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from passes.selected_pairs import pair_compare, pair_item, selected_pairs
from rewrite import optimize_loss
from rewrite.testing import assert_equivalent
from tests.helpers import equivalent_report, load_module
from tests.loop_helpers import build, strategies

# lifted structured loss as bkj/pmet writes it: every pair i < j of one label
LIFTED = """
import torch


def lifted(score, target, margin=1.0):
    loss = 0
    counter = 0
    n = score.size(0)
    dist = torch.cdist(score, score)
    for i in range(n):
        t_i = target[i].item()
        for j in range(i + 1, n):
            t_j = target[j].item()
            if t_i == t_j:
                l_ni = (margin - dist[i][target != t_i]).exp().sum()
                l_nj = (margin - dist[j][target != t_j]).exp().sum()
                loss += torch.relu((l_ni + l_nj).log() + dist[i, j]) ** 2
                counter += 1
    return loss / (2 * counter)


def skip_negatives(score, target):
    n = score.size(0)
    dist = torch.cdist(score, score)
    losses = []
    for i in range(n):
        for j in range(i):
            y_i = int(target[i])
            y_j = int(target[j])
            if y_i != y_j or y_i < 0:
                continue
            losses.append(dist[i, j] ** 2 - dist[i].min())
    return torch.stack(losses).mean()


def weighted(score, w):
    n = score.size(0)
    total = score.new_zeros(())
    for a in range(n):
        wa = w[a].item()
        for b in range(n):
            wb = w[b].item()
            if not (wa > 0.1 and wb >= wa) and a != b:
                total = total + (score[a] * score[b]).sum() * wb
    return total


def inline_reads(score, labels):
    n = score.size(0)
    d = torch.cdist(score, score)
    pos = 0
    for i in range(n):
        for j in range(n):
            if i != j and labels[i].item() == labels[j].item():
                pos = pos + d[i, j].pow(2)
    return pos


def ranked(score, targets):
    p = score.sum(1)
    n = p.size(0)
    loss = 0
    for i in range(n):
        for j in range(i + 1, n):
            if targets[i] > targets[j]:
                loss = loss + torch.nn.functional.softplus(p[j] - p[i]) * (targets[i] - targets[j])
    return loss


def rows_first(score, labels):
    loss = 0
    for i in range(score.size(0)):
        a = score[i]
        for j in range(score.size(0)):
            b = score[j]
            if labels[i] == labels[j] and i != j:
                loss = loss + (a - b).pow(2).sum()
    return loss
"""
LINE = {"lifted": (10, 12), "skip_negatives": (26, 27), "weighted": (39, 41),
        "inline_reads": (52, 53), "ranked": (63, 64), "rows_first": (72, 74)}


def _scores(n, dtype, special=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    score = torch.randn(n, 3, generator=g, dtype=dtype)
    if special == "ties":
        score[1] = score[0]
    elif special is not None:
        score[2, 1] = special
    return score.requires_grad_()


def _labels(n, classes=3, dtype=torch.int64):
    return (torch.arange(n) % classes).to(dtype)


def test_golden_lifted():
    _, _, code, report = build(LIFTED.split("\n\n\n")[1])
    assert strategies(report) == {6: "vmap", 8: "vmap"}, (report, code)
    assert ("if (_pairs := _run_eagerly(lambda: _selected_pairs(range(n), lambda i: (i + 1, n), "
            "lambda i, j: (lambda t_i, t_j: _pair_compare('==', t_i, t_j))(_pair_item(target, i, "
            "'item'), _pair_item(target, j, 'item'))))) is not None:") in code, code
    assert "_pair_i, _pair_j = _pairs" in code, code
    assert "for i, j in zip(_pair_i, _pair_j):\n                t_i = target[i].item()" in code
    outer = next(lp for lp in report.loops if lp.lineno == 6)
    assert "pass `t_i == t_j` (line 10)" in outer.reason, outer.reason


@pytest.mark.parametrize("change", [
    ("counter += 1", "counter += 1\n                target = target + 0"),  # the work writes it
    ("if t_i == t_j:", "if t_i == t_j and counter < 3:"),    # the test reads what the work writes
    ("counter += 1", "counter += i"),                          # an index read as a number
    ("return loss", "print(t_j)\n    return loss"),            # an item read after the loops
    ("counter += 1", "counter += 1\n                break"),   # a break
    ("t_j = target[j].item()", "t_j = target[j].sum().item()"),  # no item read
    ("for j in range(i + 1, n):", "for j in range(min(i + 1, n), n):"),  # a call of the index
    ("if t_i == t_j:", "if t_i == t_j:\n                pass\n            else:\n"
                       "                counter -= 0\n            if t_i == t_j:"),  # two statements
    ("if t_i == t_j:", "if j < t_i:"),                       # no item of the inner iteration
])
def test_other_nests_are_unchanged(change):
    src = LIFTED.split("\n\n\n")[1].replace(*change)
    _, _, code, _ = build(src)
    assert "_selected_pairs" not in code, code


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("special", [None, "ties", float("nan"), float("inf")])
@pytest.mark.parametrize("name", list(LINE))
def test_pairs_equivalent_and_vectorized(tmp_path, name, special, dtype):
    fn = getattr(load_module(tmp_path, LIFTED), name)
    second = {"weighted": torch.linspace(-0.5, 0.9, 9, dtype=dtype),   # ties in the ranks too
              "ranked": torch.tensor([.5, .2, .2, .9, -1, .5, 0, 3, .1], dtype=dtype)}.get(
        name, _labels(9))
    report = equivalent_report(fn, _scores(9, dtype, special), second)
    outer, inner = (next(lp for lp in report.loops if lp.lineno == k) for k in LINE[name])
    assert outer.vectorized and (outer.vectorized_runs, outer.original_runs) == (1, 0), outer
    assert inner.vectorized and inner.vectorized_runs == 1, inner.reason


@pytest.mark.parametrize("labels", [torch.int32, torch.uint8, torch.bool, torch.float16])
def test_label_dtypes(tmp_path, labels):
    fn = load_module(tmp_path, LIFTED).lifted
    equivalent_report(fn, _scores(8, torch.float64), _labels(8, 2, labels))


def test_python_comparisons_of_float_items(tmp_path):
    """``w[a].item() > 0.1`` compares a float64 with 0.1: float32's 0.1 is above it (a float32
    comparison would call them equal), and an int item against a float compares exactly."""
    fn = load_module(tmp_path, LIFTED).weighted
    w = torch.tensor([0.1, 0.1, 0.2, -1.0, 0.1], dtype=torch.float32)
    equivalent_report(fn, _scores(5, torch.float32), w)
    assert pair_compare(">", pair_item(w, torch.tensor([0]), "item"), 0.1).all()
    ints = torch.tensor([2 ** 53 + 1])
    assert pair_compare("==", pair_item(ints, torch.tensor([0]), "item"), 2 ** 53 + 1).all()


def test_no_pair_raises_the_originals_error(tmp_path):
    fn = load_module(tmp_path, LIFTED).lifted
    score, target = _scores(4, torch.float32), torch.arange(4)
    with pytest.raises(ZeroDivisionError):
        fn(score, target)
    with pytest.raises(ZeroDivisionError):
        optimize_loss(fn, compile=False)(score, target)


@pytest.mark.parametrize("target", [
    torch.arange(6).view(3, 2),          # `.item()` of a row raises
    torch.arange(3),                     # shorter than the scores: an index error
    [0, 1, 0, 1, 0, 1],                  # a list: `.item()` of an int raises
])
def test_reads_that_raise_run_the_loops_as_written(tmp_path, target):
    fn = load_module(tmp_path, LIFTED).lifted
    score = _scores(6, torch.float32)
    with pytest.raises(Exception) as original:
        fn(score, target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(type(original.value)) as optimized:
            optimize_loss(fn, compile=False)(score, target)
    assert str(optimized.value) == str(original.value)
    assert selected_pairs(range(6), lambda i: (i + 1, 6),
                          lambda i, j: pair_item(target, i, "item")) is None


def test_the_works_effects_keep_the_loops_order(tmp_path):
    fn = load_module(tmp_path, LIFTED.replace(
        "return torch.stack(losses).mean()", "return torch.stack(losses)")).skip_negatives
    score, target = _scores(7, torch.float64), torch.tensor([0, 1, 0, 0, 1, -1, -1])
    assert_equivalent(fn, optimize_loss(fn, compile=False), score, target)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(-1, 2), min_size=2, max_size=10),
       st.sampled_from([torch.float32, torch.float64]))
def test_random_labels_equivalent(labels, dtype):
    src = LIFTED.split("\n\n\n")[2]
    before, after, _, _ = build(src)
    score = _scores(len(labels), dtype, seed=len(labels))
    target = torch.tensor(labels)
    try:
        want = before(score, target)
    except RuntimeError:  # no pair: stacking nothing
        with pytest.raises(RuntimeError):
            after(score, target)
        return
    assert_equivalent(before, after, score, target)
    assert want.dtype == after(score, target).dtype


def test_a_mean_over_the_outer_loop_stays_one(tmp_path):
    """``loss / n`` after the loops divides by the outer loop's trip count, not the pairs'."""
    fn = load_module(tmp_path, LIFTED.replace("return loss / (2 * counter)", "return loss / n")).lifted
    report = equivalent_report(fn, _scores(9, torch.float64), _labels(9))
    assert next(lp for lp in report.loops if lp.lineno == 10).vectorized_runs == 1


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from([0.1, 0.2, -1.0, 0.0, 0.1000001, float("nan"), float("inf")]),
                min_size=1, max_size=8),
       st.sampled_from([torch.float16, torch.float32, torch.float64]))
def test_random_float_tests_equivalent(weights, dtype):
    """Float items against a float literal and each other, NaN and inf among them."""
    src = LIFTED.split("\n\n\n")[3]
    before, after, _, _ = build(src)
    w = torch.tensor(weights, dtype=dtype)
    assert_equivalent(before, after, _scores(len(weights), torch.float64), w)


# items read as 0-d tensors: compared as tensors (float32's 0.1 is not above the literal 0.1)
THRESH = """
def f(score, w):
    total = 0
    for i in range(score.size(0)):
        for j in range(score.size(0)):
            if w[i] > 0.1 and w[j] <= w[i]:
                total = total + (score[i] * score[j]).sum()
    return total
"""


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from([0.1, 0.2, -1.0, 0.0, 0.1000001, float("nan"), float("inf")]),
                min_size=1, max_size=8),
       st.sampled_from([torch.float16, torch.float32, torch.float64]))
def test_random_tensor_tests_equivalent(weights, dtype):
    before, after, code, _ = build(THRESH)
    assert "host=False" in code, code
    w = torch.tensor(weights, dtype=dtype)
    assert_equivalent(before, after, _scores(len(weights), torch.float64), w)


BATCH_ALL = """
import torch
import torch.nn.functional as F


def batch_all(emb, labels, margin=0.2):
    d = torch.cdist(emb, emb)
    losses = []
    n = emb.shape[0]
    for i in range(n):
        for j in range(n):
            if i == j or labels[i] != labels[j]:
                continue
            for k in range(n):
                if labels[k] == labels[i]:
                    continue
                l = F.relu(d[i, j] - d[i, k] + margin)
                if l > 0:
                    losses.append(l)
    if len(losses) == 0:
        return emb.sum() * 0
    return torch.stack(losses).mean()
"""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_kept_loop_over_pairs_leaves_its_inner_loop_vectorized(tmp_path, dtype):
    # the loop over the selected pairs is only in a copy: its inner loops are not planned again
    # in its place (that raised, and the original ran for the whole function)
    fn = load_module(tmp_path, BATCH_ALL).batch_all
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(12, 4, generator=g, dtype=dtype).requires_grad_()
    labels = torch.randint(0, 3, (12,), generator=g)
    fast = optimize_loss(fn, compile=False, strict=True)
    assert_equivalent(fn, fast, emb, labels)
    line = BATCH_ALL.splitlines().index("            for k in range(n):") + 1
    inner = next(loop for loop in fast.report.loops if loop.lineno == line)
    assert inner.vectorized and inner.vectorized_runs > 0 and inner.original_runs == 0
