"""Selections appended to a list (``dist.append(distmat[i][mask[i]].clamp(...))``, center-loss
style, the value rebound in the iteration) run vectorized: the iterations append their dense
stand-ins and the list gets each one's selection by its stacked mask, in order. Golden rewrites
and what stays; behaviour through the decorator (value, every gradient and dtype, float32 and
float64, NaN/inf where the mask excludes and where it selects, empty and all-empty selections,
row masks, under a tensor condition) with the run counts; the rebinding's residual reason."""
from __future__ import annotations

import pytest
import torch

import rewrite
from rewrite.testing import assert_equivalent
from tests.helpers import load_module
from tests.loop_helpers import normalise
from tests.test_masked_selections_to_where import rewrite_body


def test_golden_appended_stand_ins_and_the_mask_of_their_items():
    code, dense = rewrite_body("""
        value = distmat[i][mask[i]]
        value = value.clamp(min=1e-12, max=1e12)
        dist.append(value)
        """, outer_masks=frozenset({"mask"}))
    assert code == normalise("""
        _mask = mask[i]
        _keep = _mask.reshape(_mask_shape[_mask.shape, distmat[i].shape])
        value = torch.where(_keep, distmat[i], False)
        value = value.clamp(min=1e-12, max=1000000000000.0)
        _taken = mask[i]
        dist.append(value)
        """)
    assert dense.appends == {"dist": "_taken"}


@pytest.mark.parametrize("src", [
    "dist.append(x[i][m])\ndist.append(x[i][~m])",        # two masks for one list's items
    "dist.append(x[i][m].cumsum(0))",                       # a scan along the selection
    "value = x[i][m]\nif c:\n    value = value * 2\ndist.append(value)",  # rebound in a branch
])
def test_golden_unchanged(src):
    body = "m = x[i] > 0\n" + src
    code, dense = rewrite_body(body)
    assert code == normalise(body) and dense.appends == {}


LOSSES = """
import torch


def center_distances(distmat, labels, num_classes):
    B = distmat.shape[0]
    classes = torch.arange(num_classes)
    mask = labels.unsqueeze(1).expand(B, num_classes).eq(classes.expand(B, num_classes))
    dist = []
    for i in range(B):
        value = distmat[i][mask[i]]
        value = value.clamp(min=1e-12, max=1e12)
        dist.append(value)
    dist = torch.cat(dist)
    return dist.mean()


def positive_rows(x, labels):
    rows = []
    for i in range(x.shape[0]):
        same = labels == labels[i]
        rows.append(x[same].abs() * 2)
    return torch.cat(rows).sum(0), len(rows)


def confident_tokens(p, threshold):
    kept = []
    for b in range(p.shape[0]):
        if p[b].max() > threshold:
            kept.append(p[b][p[b] > threshold].log())
    return torch.cat(kept).sum() if kept else p.sum() * 0
"""


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("appended"), LOSSES)


def inputs(name, dtype, case):
    g = torch.Generator().manual_seed(5)
    if name == "center_distances":
        d = torch.rand(5, 4, generator=g, dtype=dtype) * 3
        labels = torch.tensor({"mixed": [0, 2, 2, 3, 1], "one_class": [1] * 5,
                               "empty": [7] * 5}[case])   # 7: no class, every row selects nothing
        d[0, 1] = float("nan")                            # not its class: never read
        d[1, 0] = float("inf")
        if case == "mixed":
            d[3, 3] = float("inf")                        # selected: clamped to 1e12
        return d.requires_grad_(), labels, 4
    if name == "positive_rows":
        x = torch.randn(5, 3, generator=g, dtype=dtype)
        x[4, 0] = float("nan") if case == "mixed" else 0.0
        return x.requires_grad_(), torch.tensor({"mixed": [0, 1, 0, 2, 1], "one_class": [0] * 5,
                                                 "empty": [0, 1, 2, 3, 4]}[case])
    p = torch.rand(4, 6, generator=g, dtype=dtype)
    p[2, 5] = float("nan") if case == "mixed" else 0.5
    return p.requires_grad_(), {"mixed": 0.7, "one_class": 0.0, "empty": 2.0}[case]


@pytest.mark.parametrize("case", ["mixed", "one_class", "empty"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", ["center_distances", "positive_rows", "confident_tokens"])
def test_equivalent_value_gradients_dtype_and_vectorized_runs(module, name, dtype, case):
    original = getattr(module, name)
    optimized = rewrite.optimize_loss(original, compile=False, keep_faster=False)
    assert_equivalent(original, optimized, *inputs(name, dtype, case))
    loop = optimized.report.loops[0]
    assert loop.vectorized and loop.vectorized_runs > 0 and loop.original_runs == 0, loop
    assert not optimized.report.fallbacks


def test_a_rebinding_in_the_iteration_is_no_recurrence_in_the_residual_reason(tmp_path):
    module = load_module(tmp_path, """
import torch


def f(x, m):
    out = []
    for i in range(x.shape[0]):
        value = x[i][x[i] > m].cumsum(0)
        value = value.clamp(min=0)
        out.append(value)
    return torch.cat(out).sum()
""")
    reason = rewrite.optimize_loss(module.f, compile=False).report.loops[0].reason
    assert "boolean mask indexing" in reason and "recurrence" not in reason, reason
