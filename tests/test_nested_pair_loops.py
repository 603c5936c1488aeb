"""Pair losses written as two loops over items with host labels (``t_i = target[i].item()``,
``for j in range(i + 1, n)``, ``if t_i == t_j:``, ``dist[i][target != t_i]``): the inner loop is
vectorized and the outer one maps over it. Golden reach (both loops vectorized, each before
kept) and equivalence (value, every gradient, dtype; float32 and float64; NaN, inf, tied labels).
"""
from __future__ import annotations

import pytest
import torch

from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, strategies

# a host number bound in one branch of the triangular mask `if` and read only there after
BRANCH_LOCAL = """
def f(x, w):
    s = 0
    for i in range(x.shape[0]):
        for j in range(i + 1, x.shape[0]):
            t = x[j].item()
            s = s + w[i] * t
    return s
"""

# `t_i` is a Python number in every outer iteration: the inner check that it is no tensor holds
HOST_LABELS = """
def f(x, target):
    s = 0
    for i in range(x.shape[0]):
        t_i = target[i].item()
        for j in range(x.shape[0]):
            t_j = target[j].item()
            if t_i == t_j:
                s = s + x[i, j] * x[j, i]
    return s
"""

# lifted structure (metric learning): a selection whose mask does not vary in the inner loop
LIFTED = """
def f(x, target):
    loss = 0
    for i in range(x.shape[0]):
        t_i = target[i].item()
        for j in range(i + 1, x.shape[0]):
            t_j = target[j].item()
            if t_i == t_j:
                l_n = (1 - x[i][target != t_i]).exp().sum() + (1 - x[j][target != t_j]).exp().sum()
                loss += torch.relu(l_n.log() + x[i, j]) ** 2
    return loss
"""


@pytest.mark.parametrize("src", [BRANCH_LOCAL, HOST_LABELS, LIFTED])
def test_golden_both_loops_vectorized(src):
    _, _, code, report = build(src)
    assert "kept" not in strategies(report).values(), (report, code)


READ_AFTER_BRANCH = """
def f(x, w):
    s = 0
    for j in range(x.shape[0]):
        t = w[j]
        if j > 1:
            t = x[j].item()
        s = s + w[j] * t
    return s
"""


def test_golden_a_host_number_read_after_its_branch_keeps_the_loop():
    _, _, code, report = build(READ_AFTER_BRANCH)
    assert strategies(report) == {3: "kept"}, (report, code)
    assert "Python number after one branch" in report.loops[0].reason


def test_golden_no_tensor_check_stays_for_a_name_not_bound_by_item():
    src = HOST_LABELS.replace("t_i = target[i].item()", "t_i = target[i] * 1")
    report = build(src)[3]
    assert strategies(report)[3] == "kept", report
    assert "per-iteration runtime check: not isinstance(t_i, torch.Tensor)" \
        in report.loops[-1].reason, report


def _inputs(dtype, special, n=6):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, n, dtype=dtype, generator=g)
    if special:
        x[1, 2], x[3, 0], x[4, 4] = float("nan"), float("inf"), float("-inf")
    target = torch.tensor([0, 1, 0, 2, 1, 0][:n])  # ties: equal labels
    return x, target


@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_equivalent(dtype, special):
    x, target = _inputs(dtype, special)
    original, optimized, _, _ = build(BRANCH_LOCAL)
    assert_equivalent(original, optimized, x[:, 0].clone(), x[0].clone().requires_grad_())
    for src in (HOST_LABELS, LIFTED):
        original, optimized, _, _ = build(src)
        assert_equivalent(original, optimized, x.clone().requires_grad_(), target)
        assert_equivalent(original, optimized, x.clone().requires_grad_(), target.double())


# pairwise ranking with the labels as tensors: the pairs `y[i] > y[j]` selects, compared as the
# 0-d tensors compare, are one batched loop (`pair_tests_to_selected_pairs`)
RANKING = """
def f(scores, y, margin=1.0):
    n = scores.shape[0]
    loss = 0
    count = 0
    for i in range(n):
        for j in range(n):
            if y[i] > y[j]:
                loss = loss + F.relu(margin - (scores[i] - scores[j]))
                count += 1
    return loss / max(count, 1)
"""


def test_golden_tensor_labels_select_their_pairs():
    _, _, code, report = build(RANKING)
    assert strategies(report) == {5: "batched", 6: "batched"}, (report, code)
    assert "pass `y[i] > y[j]` (line 7)" in report.loops[-1].reason, report.loops[-1].reason
    assert "_pair_compare('>', _pair_item(y, i, 'tensor'), _pair_item(y, j, 'tensor'), " \
        "host=False)" in code, code


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_tensor_labels_ranking_is_equivalent(dtype, tmp_path):
    from tests.helpers import equivalent_report, load_module
    user = load_module(tmp_path, "import torch\nimport torch.nn.functional as F\n" + RANKING)
    scores = torch.tensor([0.5, -1.0, 0.5, 2.0, float("inf"), 0.1], dtype=dtype)
    for y in (torch.tensor([0, 1, 0, 2, 1, 2]), torch.zeros(6, dtype=torch.long)):  # ties; none
        for labels in (y, y.to(dtype)):
            report = equivalent_report(user.f, scores.clone().requires_grad_(), labels)
            outer = min(report.loops, key=lambda loop: loop.lineno)
            assert (outer.vectorized_runs, outer.failed_runs) == (1, 0), report


# RankNet per query: three loops, the pair counter a Python int. The middle loop folds the inner
# loop's count as `count += int(_outs[1])`, an integer sum: no counter of NaN/inf raises (whose
# generated `raise` kept the outer loop, "`raise` inside the loop", a line the user never wrote)
RANKNET_PER_QUERY = """
def f(scores, labels):
    loss = 0.0
    count = 0
    for q in range(scores.shape[0]):
        for i in range(scores.shape[1]):
            for j in range(scores.shape[1]):
                if labels[q, i] > labels[q, j]:
                    loss = loss + F.softplus(scores[q, j] - scores[q, i])
                    count += 1
    return loss / max(count, 1), count
"""


def test_golden_three_loops_with_an_int_counter_all_vectorized():
    _, _, code, report = build(RANKNET_PER_QUERY)
    assert strategies(report) == {4: "vmap", 5: "vmap", 6: "batched"}, (report, code)
    assert "raise" not in code, code


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_three_loops_with_an_int_counter_are_equivalent(dtype):
    from tests.loop_helpers import same_python_types
    original, optimized, _, _ = build(RANKNET_PER_QUERY)
    scores = torch.tensor([[0.5, -1.0, 0.5, float("inf")], [0.1, 2.0, -0.3, 0.0]], dtype=dtype)
    for labels in (torch.tensor([[0, 1, 0, 2], [1, 1, 0, 2]]), torch.zeros(2, 4, dtype=torch.long),
                   torch.tensor([[0.0, float("nan"), 1.0, 1.0], [2.0, 0.0, 1.0, 1.0]], dtype=dtype)):
        assert_equivalent(original, optimized, scores.clone().requires_grad_(), labels)
        want, got = original(scores, labels), optimized(scores, labels)
        assert same_python_types(want, got) and want[1] == got[1], (want, got)
