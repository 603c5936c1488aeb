"""Reductions of a boolean-mask selection along the selected dim (``emb[labels == c].mean(0)``:
class centroids and prototypes, as few-shot prototypical losses write them): dense, masked over
the mask's dims, with the values, gradients and dtype of the loop; empty classes give NaN means
as the loop does, integer means raise as it does."""
from __future__ import annotations

import pytest
import torch

from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, strategies

CENTROIDS = """
def f(x, y, k):
    return torch.stack([x[y == c].{red}(0) for c in range(k)])
"""

WRITTEN = """
def f(x, y, k):
    out = x.new_zeros(k, x.shape[-1])
    for c in range(k):
        out[c] = (x[y == c] * 2 - 1).sum(0)
    return out
"""


def _episode(dtype, special, shape=(9, 4), classes=3, empty=False):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, dtype=dtype, generator=gen)
    y = torch.arange(shape[0]).remainder(classes).reshape(shape[:-1]) if len(shape) == 2 else \
        torch.randint(0, classes, shape[:-1], generator=gen)
    if empty:
        y = y.clamp(max=classes - 2)  # the last class has no member
    if special:  # NaN and inf in a member of one class, a tie between two members
        x.view(-1, shape[-1])[0, 1] = float("nan")
        x.view(-1, shape[-1])[1, 2] = float("inf")
        x.view(-1, shape[-1])[5] = x.view(-1, shape[-1])[2]
    return x.requires_grad_(), y


@pytest.mark.parametrize("red", ["mean", "sum"])
def test_centroids_golden(red):
    # `y == c` is a class segment (test_class_mask_segments); any other mask is this masked form
    _, _, code, report = build(CENTROIDS.format(red=red).replace("y == c", "y != c"))
    assert strategies(report) == {2: "vmap"}, (report, code)
    assert ".sum(tuple(range(max(_mask.dim(), 1))))" in code, code
    assert ("/ _keep.sum()" in code) == (red == "mean"), code
    _, _, code, report = build(CENTROIDS.format(red=red))
    assert strategies(report) == {2: "batched"} and "_class_rows(" in code, (report, code)


def test_other_dims_stay_kept():
    # each row's mean is a value per selected row (test_row_reductions_of_selections), which a
    # stack of the classes' ragged results cannot hold
    _, _, code, report = build(CENTROIDS.format(red="mean").replace("(0)", "(1)"))
    assert strategies(report) == {2: "kept"}
    assert "its consumer reads one item per iteration" in report.loops[0].reason


@pytest.mark.parametrize("red", ["mean", "sum"])
@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("shape", [(9, 4), (3, 4, 5)])
def test_centroids_equivalent(red, special, shape):
    original, optimized, _, _ = build(CENTROIDS.format(red=red))
    for dtype in (torch.float32, torch.float64):
        x, y = _episode(dtype, special, shape)
        assert_equivalent(original, optimized, x, y, 3)


def test_an_empty_class_has_a_nan_mean_as_the_loop():
    original, optimized, _, _ = build(CENTROIDS.format(red="mean"))
    x, y = _episode(torch.float64, False, empty=True)
    assert torch.isnan(optimized(x, y, 3)[2]).all()
    assert_equivalent(original, optimized, x, y, 3)


def test_an_integer_mean_raises_as_the_loop():
    original, optimized, _, _ = build(CENTROIDS.format(red="mean"))
    x, y = torch.arange(12).reshape(6, 2), torch.arange(6) % 2
    for fn in (original, optimized):
        with pytest.raises(RuntimeError):
            fn(x, y, 2)
    build_sum = build(CENTROIDS.format(red="sum"))
    assert torch.equal(build_sum[0](x, y, 2), build_sum[1](x, y, 2))


@pytest.mark.parametrize("special", [False, True])
def test_written_rows_equivalent(special):
    original, optimized, _, report = build(WRITTEN)
    assert strategies(report) == {3: "vmap"}, report
    for dtype in (torch.float32, torch.float64):
        x, y = _episode(dtype, special)
        assert_equivalent(original, optimized, x, y, 3)


def test_ragged_rows_summed_along_the_selected_dim():
    """``x[i, :L].sum(0)``: the ragged slice's mask, then the row form."""
    original, optimized, _, report = build("""
def f(x, lengths, w):
    loss = 0
    for i in range(x.shape[0]):
        L = lengths[i].item()
        loss = loss + (x[i, :L].sum(0) ** 2).sum()
    return loss
""")
    assert strategies(report) == {3: "vmap"}, report
    for dtype in (torch.float32, torch.float64):
        x, _ = _episode(dtype, True, (3, 6, 4))
        for lengths in (torch.tensor([2, 6, 0]), torch.tensor([-1, 9, 3])):
            assert_equivalent(original, optimized, x, lengths, None)


@pytest.mark.parametrize("index", ["same[i] & ~eye[i]", "~same[i]", "(sim[i] > 0) | same[i]"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logic_on_mask_rows_keeps_the_loop(index, dtype):
    # circle loss per anchor: the positives `sim[i][same[i] & ~eye[i]]` select a number of
    # items that varies; vmap raises at such an index on every call, so the loop is kept (it
    # was reported vectorized, and each call fell back to the original with a warning)
    original, rewritten, _, report = build(f"""
        def f(sim, labels):
            same = labels[:, None] == labels[None, :]
            eye = torch.eye(len(labels), dtype=torch.bool)
            out = []
            for i in range(sim.shape[0]):
                sp = sim[i][{index}]
                out.append(torch.logsumexp(sp * 4, 0))
            return torch.stack(out).sum()
        """)
    assert strategies(report) == {5: "kept"}
    assert "boolean mask indexing" in report.loops[0].reason
    sim = torch.randn(6, 6, dtype=dtype, generator=torch.Generator().manual_seed(0))
    assert_equivalent(original, rewritten, sim.requires_grad_(), torch.arange(6) % 3)


@pytest.mark.parametrize("made, strategy", [("torch.ones_like(row, dtype=torch.bool)", "vmap"),
                                            ("torch.ones(row.shape[0], dtype=torch.bool)", "kept")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_mask_the_iteration_makes_by_its_dtype_selects_densely(made, strategy, dtype):
    # SupCon per anchor: every column but the anchor's, `others[i] = False`, then
    # `row[others]`; the mask is boolean by its dtype, not by a comparison: the loop was
    # reported vectorized (vmap) and vmap raised at the boolean index on every call; now the
    # selection is a masked dense logsumexp (`torch.ones(n)`, whose size the body reads from
    # a row, is no op the selection stage takes as pure: kept, with the boolean index's reason)
    original, rewritten, code, report = build(f"""
        def f(sim, labels):
            out = []
            for i in range(sim.shape[0]):
                row = sim[i]
                others = {made}
                others[i] = False
                pos = (labels == labels[i]) & others
                log_prob = row - torch.logsumexp(row[others], dim=0)
                out.append((log_prob * pos).sum() / pos.sum().clamp(min=1))
            return torch.stack(out).mean()
        """)
    assert strategies(report) == {3: strategy}
    if strategy == "kept":
        assert "boolean mask indexing `row[others]`" in report.loops[0].reason
    else:
        assert "row[others]" not in code.split("else:")[0]
    labels = torch.arange(6) % 3
    for n in (6, 1):
        sim = torch.randn(n, n, dtype=dtype, generator=torch.Generator().manual_seed(0))
        if n == 6:
            sim[1, 2], sim[3, 0] = float("inf"), float("nan")
        assert_equivalent(original, rewritten, sim.requires_grad_(), labels[:n])
        with torch.no_grad():
            torch.testing.assert_close(rewritten(sim, labels[:n]), original(sim, labels[:n]),
                                       equal_nan=True)
