"""Conditions on the sizes of selections (``if len(neg) == 0 or len(pos) <= 1: continue``) are
tensor conditions: masked_selections_to_where turns the counts into tensors (marked, so the
loop check sees a condition that varies), tensor_branches_to_where masks what follows, and an
append under the mask keeps the items of the iterations that append. Golden rewrites and what
stays; behaviour through the decorator (value, every gradient and dtype, float32 and float64,
NaN/inf in selected and deselected rows, every iteration skipped, the original's errors) with
the run counts."""
from __future__ import annotations

import ast

import pytest
import torch

import rewrite
from passes import ast_marks
from passes.loops import masked_selections_to_where
from rewrite.testing import assert_equivalent
from tests.helpers import load_module
from tests.loop_helpers import context, namespace, normalise
from tests.test_masked_selections_to_where import rewrite_body, same_error

GUARD = """
pos = d[i][labels == labels[i]]
neg = d[i][labels != labels[i]]
if len(neg) == 0 or not len(pos) > 1:
    continue
total = total + neg.sum()
"""


def test_golden_counts_in_a_condition_are_tensors_marked_as_varying():
    body = ast.parse(normalise(GUARD)).body
    code, _ = rewrite_body(GUARD)
    assert code.splitlines()[6:9] == normalise("""
        if _keep_1.sum() == 0 or not _keep.sum() > 1:
            continue
        total = total + torch.where(_keep_1, neg, 0).sum()
        """).splitlines()
    ctx = context(ast.Module([ast.parse("def f(): pass").body[0]], []), namespace())
    masked_selections_to_where.rewrite(body, {"i"}, ctx)
    counts = [n for n in ast.walk(body[2].test) if isinstance(n, ast.Call)]
    assert len(counts) == 2 and all(ast_marks.get(c, ast_marks.SELECTION_COUNT) for c in counts)


@pytest.mark.parametrize("test", [
    "len(pos) == 0 or pos.max() > 1",    # the original skips the max of an empty selection
    "len(pos) == 0 or pos.min() > 1",
])
def test_golden_unchanged_extremes_the_original_may_skip(test):
    src = f"pos = d[i][labels == labels[i]]\nif {test}:\n    continue\ntotal = total + pos.sum()\n"
    code, dense = rewrite_body(src)
    assert code == normalise(src) and dense.guards == []


LOSSES = """
import torch
import torch.nn.functional as F


def hardest_pairs(e, labels, margin=0.3):
    d = torch.cdist(e, e)
    loss = []
    for i in range(e.shape[0]):
        pos = d[i][labels == labels[i]]
        neg = d[i][labels != labels[i]]
        if len(neg) == 0 or len(pos) <= 1:
            continue
        loss.append(F.relu(pos.max() - neg.min() + margin))
    if not loss:
        return torch.zeros((), dtype=e.dtype, requires_grad=True)
    return torch.stack(loss).mean()


def positive_means(x, labels):
    out = []
    for i in range(x.shape[0]):
        same = x[i][labels == labels[i]]
        if same.numel() < 2:
            continue
        out.append(same.mean())
    return torch.stack(out).sum() if out else x.sum() * 0


def mined_pairs(emb, labels, margin=0.1):
    sim = emb @ emb.t()
    loss = []
    for i in range(emb.shape[0]):
        pos = sim[i][(labels == labels[i]) & (sim[i] < 1 - 1e-5)]
        neg = sim[i][labels != labels[i]]
        neg = neg[neg + margin > pos.min()]
        pos = pos[pos - margin < neg.max()]
        if len(neg) < 1 or len(pos) < 1:
            continue
        loss.append(torch.log1p(torch.exp(2 * (neg - 0.5)).sum())
                    - torch.log1p(torch.exp(-2 * (pos - 0.5)).sum()))
    if len(loss) == 0:
        return torch.zeros([], dtype=emb.dtype, requires_grad=True)
    return sum(loss) / emb.shape[0]


def unguarded_max(x, labels):
    total = 0
    for i in range(x.shape[0]):
        other = x[i][labels != labels[i]]
        if len(other) > 3:
            continue
        total = total + other.max()
    return total
"""
LABELS = {"mixed": [0, 0, 1, 1, 1, 2], "one_class": [0] * 6, "singletons": [0, 1, 2, 3, 4, 5]}


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("counts"), LOSSES)


def inputs(name, dtype, labels, nonfinite):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, generator=g, dtype=dtype) if name == "hardest_pairs" else \
        torch.randn(6, 6, generator=g, dtype=dtype)
    if nonfinite:
        x[5, 1] = float("nan")      # reaches the rows of class 2 only
        x[0, 3] = float("inf")
    return x.requires_grad_(), torch.tensor(LABELS[labels])


@pytest.mark.parametrize("nonfinite", [False, True])
@pytest.mark.parametrize("labels", LABELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", ["hardest_pairs", "positive_means"])
def test_equivalent_value_gradients_dtype_and_vectorized_runs(module, name, dtype, labels,
                                                              nonfinite):
    original = getattr(module, name)
    optimized = rewrite.optimize_loss(original, compile=False, keep_faster=False)
    assert_equivalent(original, optimized, *inputs(name, dtype, labels, nonfinite))
    loop = optimized.report.loops[0]
    assert loop.vectorized and loop.vectorized_runs > 0 and loop.original_runs == 0, loop
    assert not optimized.report.fallbacks


def test_golden_selection_of_a_selection_by_a_condition_on_it():
    code, _ = rewrite_body("""
        neg = sim[i][labels != labels[i]]
        neg = neg[neg > t]
        total = total + neg.sum()
        """)
    assert code == normalise("""
        _mask = labels != labels[i]
        _keep = _mask.reshape(_mask_shape[_mask.shape, sim[i].shape])
        neg = torch.where(_keep, sim[i], False)
        _mask_1 = _keep & (neg > t)
        _keep_1 = _mask_1.reshape(_mask_shape[_mask_1.shape, neg.shape])
        neg = torch.where(_keep_1, neg, False)
        total = total + torch.where(_keep_1, neg, 0).sum()
        """)


@pytest.mark.parametrize("src", [
    "neg = sim[i][labels != labels[i]]\nneg = neg[sim[i] > t]\ntotal = total + neg.sum()",
    "neg = sim[i][labels != labels[i]]\nneg = neg[neg.cumsum(0) > t]\ntotal = total + neg.sum()",
])
def test_golden_unchanged_selections_of_a_selection_by_other_masks(src):
    code, _ = rewrite_body(src)
    assert code == normalise(src)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_mined_pairs_equivalent_and_the_original_errors(module, dtype):
    optimized = rewrite.optimize_loss(module.mined_pairs, compile=False, keep_faster=False)
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(8, 4, generator=g, dtype=dtype), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    assert_equivalent(module.mined_pairs, optimized, emb.requires_grad_(), labels)
    loop = optimized.report.loops[0]
    assert loop.vectorized and loop.vectorized_runs > 0 and loop.original_runs == 0, loop
    for labels, op in (([0] * 8, "max()"), (list(range(8)), "min()")):   # of an empty selection
        assert op in same_error(module.mined_pairs, optimized, emb, torch.tensor(labels))


def test_max_of_an_empty_selection_that_is_not_skipped_raises_the_original_error(module):
    optimized = rewrite.optimize_loss(module.unguarded_max, compile=False, keep_faster=False)
    x, labels = inputs("unguarded_max", torch.float64, "one_class", False)
    assert "max()" in same_error(module.unguarded_max, optimized, x, labels)
    x, labels = inputs("unguarded_max", torch.float64, "mixed", False)
    assert_equivalent(module.unguarded_max, optimized, x, torch.tensor([0, 1, 1, 1, 1, 1]))


CONDITIONAL_APPENDS = """
import torch


def stacked(x):
    keep = []
    for i in range(x.shape[0]):
        if x[i] > 0:
            keep.append(x[i] * 2)
    return torch.stack(keep).sum()


def concatenated(x):
    keep = []
    for i in range(x.shape[0]):
        if x[i].sum() > 0:
            keep.append(x[i].exp())
    return torch.cat(keep).sum() + len(keep)
"""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", ["stacked", "concatenated"])
def test_appends_under_a_tensor_condition_keep_the_appending_items(tmp_path, name, dtype):
    module = load_module(tmp_path, CONDITIONAL_APPENDS)
    original = getattr(module, name)
    optimized = rewrite.optimize_loss(original, compile=False, keep_faster=False)
    x = torch.tensor([[1.0, -2.0], [-3.0, float("nan")], [2.0, 2.0], [-1.0, float("inf")]],
                     dtype=dtype)
    x = x[:, 0] if name == "stacked" else x
    assert_equivalent(original, optimized, x.clone().requires_grad_())
    loop = optimized.report.loops[0]
    assert loop.vectorized and loop.vectorized_runs > 0 and loop.original_runs == 0, loop
    # no iteration appends: the list stays empty, and stack/cat raise as in the original
    assert "empty" in same_error(original, optimized, -x.detach().nan_to_num(0.0).abs() - 1)
