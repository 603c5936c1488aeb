"""Losses of masked selections and ragged slices (``F.cross_entropy(x[i, :L], y[i, :L])``,
``F.mse_loss(p[i][m], t[i][m])``) become dense losses: class losses on the stand-ins with the
deselected rows' targets the ignored class, pointwise losses per element, masked. Golden
rewrites and what stays; behaviour through the decorator (value, every gradient and dtype,
float32 and float64; NaN/inf and invalid targets in the padding, NaN/inf in the selected rows,
empty and all-empty selections, the original's errors) with the run counts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import rewrite
from passes.loops.masked_selections_to_where import CLASS_ROWS
from rewrite.testing import assert_equivalent
from tests.helpers import load_module
from tests.loop_helpers import dedent, normalise
from tests.test_masked_selections_to_where import rewrite_body, same_error


def test_golden_class_loss_fills_the_deselected_targets_with_the_ignored_class():
    code, dense = rewrite_body("""
        m = pos < lengths[i]
        total = total + F.cross_entropy(x[i][m] / 2, y[i][m], reduction="sum", ignore_index=0)
        """)
    assert code == normalise("""
        m = pos < lengths[i]
        _keep = m.reshape(_class_rows[m.shape, x[i].shape])
        _keep_1 = m.reshape(_mask_shape[m.shape, y[i].shape])
        total = total + F.cross_entropy(torch.where(_keep, x[i], False) / torch.where(_keep, 2, 1), torch.where(_keep_1, y[i], 0), reduction='sum', ignore_index=0)
        """)
    assert [normalise(g) for g in map(__import__("ast").unparse, dense.guards)] == \
        [normalise("isinstance(y, torch.Tensor) and y.dtype == torch.int64")]


def test_golden_pointwise_loss_is_masked_per_element():
    code, _ = rewrite_body("""
        m = pos < lengths[i]
        total = total + F.binary_cross_entropy_with_logits(x[i][m], y[i][m])
        """)
    assert code == normalise("""
        m = pos < lengths[i]
        _keep = m.reshape(_mask_shape[m.shape, x[i].shape, y[i].shape])
        _vals = F.binary_cross_entropy_with_logits(torch.where(_keep, x[i], False), torch.where(_keep, y[i], False), reduction='none')
        total = total + torch.where(_keep, _vals, 0).sum().mean() / _keep.expand_as(_vals).sum()
        """)


@pytest.mark.parametrize("src", [
    "total = total + F.cross_entropy(x[i][m], y[i])",                      # targets not selected
    "total = total + F.mse_loss(x[i][m], y[i][m], reduction='none').sum()",  # per element, kept
    "total = total + F.mse_loss(x[i][m], y[i][m], weight_of(i))",            # a third argument
    "total = total + F.cross_entropy(x[i][m], y[i][m], weight=w[i])",        # varying weight
])
def test_golden_unchanged(src):
    body = "m = pos < lengths[i]\n" + src
    code, dense = rewrite_body(body)
    assert code == normalise(body) and dense.guards == []


LOSSES = """
import torch
import torch.nn.functional as F


def seq_ce_sum(logits, targets, lengths):
    total = 0.0
    for b in range(logits.shape[0]):
        L = int(lengths[b])
        total = total + F.cross_entropy(logits[b, :L], targets[b, :L], reduction="sum",
                                        label_smoothing=0.1)
    return total / lengths.sum()


def seq_ce_mean_weighted(logits, targets, lengths, weight):
    losses = []
    for b in range(len(lengths)):
        losses.append(F.cross_entropy(logits[b, :lengths[b]], targets[b, :lengths[b]],
                                      weight=weight))
    return torch.stack(losses)


def seq_nll(logits, targets, lengths):
    lp = logits.log_softmax(-1)
    total = 0
    for b in range(lp.shape[0]):
        L = lengths[b].item()
        total += F.nll_loss(lp[b, :L], targets[b, :L], reduction="sum", ignore_index=-100)
    return total


def seq_pointwise(p, t, lengths):
    total = 0.0
    for b in range(p.shape[0]):
        L = lengths[b].item()
        total = total + F.mse_loss(p[b, :L], t[b, :L], reduction="sum") \\
            + F.smooth_l1_loss(p[b, :L], t[b, :L], beta=0.5) + F.l1_loss(p[b, :L], t[b, :L])
    return total


def seq_bce(p, t, lengths):
    out = []
    for b in range(p.shape[0]):
        out.append(F.binary_cross_entropy_with_logits(p[b, :lengths[b]], t[b, :lengths[b]]))
    return torch.stack(out)
"""
CLASS = ("seq_ce_sum", "seq_ce_mean_weighted", "seq_nll")
POINTWISE = ("seq_pointwise", "seq_bce")


def inputs(name, dtype, lengths=(3, 6, 0, 1), nonfinite_selected=False):
    """Rows past each length hold NaN/inf and targets no class index (-100, 999) or inf."""
    g = torch.Generator().manual_seed(len(name))
    B, T, C = len(lengths), 6, 5
    x = torch.randn(B, T, C, generator=g, dtype=dtype)
    lengths = torch.tensor(lengths)
    if name in CLASS:
        y = torch.randint(0, C, (B, T), generator=g)
        y[1, 2] = -100                                   # ignored inside a selection
    else:
        y = torch.rand(B, T, C, generator=g, dtype=dtype)
    for b, n in enumerate(lengths.tolist()):
        x[b, n:] = float("nan") if b % 2 else float("inf")
        if name in CLASS:
            y[b, n:] = -100 if b % 2 else 999
        else:
            y[b, n:] = float("-inf")
    if nonfinite_selected:
        x[1, 0, 0] = float("nan")
        x[0, 1, 2] = float("inf")
    args = (x.requires_grad_(), y, lengths)
    if name == "seq_ce_mean_weighted":
        args += (torch.rand(C, generator=g, dtype=dtype),)  # the loss takes no gradient of it
    return args


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("losses"), LOSSES)


@pytest.mark.parametrize("lengths", [(3, 6, 0, 1), (0, 0, 0, 0), (6, 6, 6, 6)], ids=str)
@pytest.mark.parametrize("nonfinite_selected", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", CLASS + POINTWISE)
def test_equivalent_value_gradients_dtype_and_vectorized_runs(module, name, dtype,
                                                              nonfinite_selected, lengths):
    original = getattr(module, name)
    optimized = rewrite.optimize_loss(original, compile=False, keep_faster=False)
    assert_equivalent(original, optimized, *inputs(name, dtype, lengths, nonfinite_selected))
    loop = optimized.report.loops[0]
    assert loop.vectorized and loop.vectorized_runs > 0 and loop.original_runs == 0, loop
    assert not optimized.report.fallbacks


def test_an_invalid_class_index_in_a_selected_row_raises_the_original_error(module):
    x, y, lengths = inputs("seq_ce_sum", torch.float64)
    y[1, 3] = 999
    optimized = rewrite.optimize_loss(module.seq_ce_sum, compile=False, keep_faster=False)
    assert "out of bounds" in same_error(module.seq_ce_sum, optimized, x, y, lengths)


def test_probability_targets_run_the_loop_as_written(module):
    x, _, lengths = inputs("seq_ce_sum", torch.float64)
    probs = torch.rand(x.shape, dtype=x.dtype).softmax(-1)
    optimized = rewrite.optimize_loss(module.seq_ce_sum, compile=False, keep_faster=False)
    assert_equivalent(module.seq_ce_sum, optimized, x.detach().nan_to_num(0.0, 0.0, 0.0), probs,
                      lengths)
    loop = optimized.report.loops[0]
    assert loop.vectorized and loop.original_runs > 0 and loop.vectorized_runs == 0, loop


def test_class_rows_refuse_masks_that_are_not_row_masks():
    assert CLASS_ROWS[torch.Size([4]), torch.Size([4, 5])] == (4, 1)
    assert CLASS_ROWS[torch.Size([4]), torch.Size([4, 5, 3])] == (4, 1, 1)
    with pytest.raises(RuntimeError, match="class dim"):
        CLASS_ROWS[torch.Size([4, 5]), torch.Size([4, 5, 3])]    # the loss would read dim 1
    with pytest.raises(RuntimeError, match="class dim"):
        CLASS_ROWS[torch.Size([4]), torch.Size([4])]             # an unbatched loss
    with pytest.raises(IndexError):
        CLASS_ROWS[torch.Size([3]), torch.Size([4, 5])]          # as indexing raises
    x = torch.randn(4, 5)
    assert F.cross_entropy(x[torch.tensor([True, False, True, True])], torch.tensor([1, 2, 3])) \
        .shape == ()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_invariant_pos_weight_is_checked_a_number_at_run_time(tmp_path, dtype):
    # a 0-d pos_weight broadcasts over the selection as over its masked stand-in; a [L] one
    # would not: the check (None or 0-d) runs the loop as written for it
    module = load_module(tmp_path, dedent("""
        import torch.nn.functional as F


        def f(p, t, lengths, w):
            total = 0.0
            for b in range(p.shape[0]):
                L = lengths[b].item()
                total = total + F.binary_cross_entropy_with_logits(p[b, :L], t[b, :L], pos_weight=w)
            return total
        """))
    optimized = rewrite.optimize_loss(module.f, compile=False, keep_faster=False)
    p = torch.randn(3, 5, dtype=dtype).requires_grad_()
    t = torch.rand(3, 5, dtype=dtype)
    lengths = torch.tensor([2, 5, 3])
    assert_equivalent(module.f, optimized, p, t, lengths, torch.tensor(2.0, dtype=dtype))
    assert optimized.report.loops[0].vectorized
    assert optimized.report.loops[0].runs()["vectorized"] == 1
    whole = rewrite.optimize_loss(module.f, compile=False, keep_faster=False)
    assert_equivalent(module.f, whole, p, t, torch.tensor([5, 5, 5]),
                      torch.rand(5, dtype=dtype))
    assert whole.report.loops[0].runs()["as_written"] == 1


def test_rows_of_different_lengths_sliced_alike_run_the_original(module):
    # one mask for both rows: its shape check fails, and the decorator runs the original
    optimized = rewrite.optimize_loss(module.seq_pointwise, compile=False, keep_faster=False)
    p, t = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    lengths = torch.tensor([2, 5, 3])
    with pytest.warns(rewrite.RewriteWarning, match="the original function runs"):
        assert_equivalent(module.seq_pointwise, optimized, p.requires_grad_(), t, lengths)
    assert optimized.report.fallbacks
