"""masked_selections_to_where's reductions along rows (``OpSpec.along_dim``): center losses and
intra-class variances written per class, ``(feat[labels == c] - centers[c]).pow(2).sum(1)
.mean()``, reduce each selected row along a dim after the first, next to a row of another tensor
(``centers[c]``) broadcast against the selected rows. The reduction runs on the stand-ins (each
row reduced alone), its value per row is a selection by the same mask, and the reduction over the
rows counts the selected ones. Equivalence through vectorize_loops (value, every gradient, dtype;
float32 and float64; an empty class, NaN mean as written or skipped by ``continue``; NaN and inf
in selected rows and in rows no iteration selects; ties), the cases the shape check
(``RowsMask``) sends to the original, and the settings that keep the loop. Sources paraphrase
public center losses, a discriminative (instance embedding) loss's variance term and an
instance-variance loss."""
from __future__ import annotations

import warnings

import pytest
import torch

from passes import ops
from rewrite import optimize_loss
from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, strategies

DTYPES = [torch.float32, torch.float64]

SOURCES = {
    # per class present, a method chain, the mean per class averaged over the classes
    "center_unique": """
        def f(feat, labels, centers):
            loss = feat.new_zeros(())
            for c in torch.unique(labels):
                f = feat[labels == c]
                loss = loss + (f - centers[c]).pow(2).sum(1).mean()
            return loss / len(torch.unique(labels))
        """,
    # every class id, the mask a name, `**`, `dim=` (an empty class's mean is NaN as written)
    "center_range": """
        def f(feat, labels, centers):
            loss = 0
            for c in range(centers.shape[0]):
                m = labels == c
                loss = loss + ((feat[m] - centers[c]) ** 2).sum(dim=1).mean()
            return loss
        """,
    # an empty class skipped, the torch function form of the norm
    "norm_skip_empty": """
        def f(feat, labels, centers):
            loss = 0
            for c in range(centers.shape[0]):
                m = labels == c
                if m.sum() == 0:
                    continue
                mu = centers[c]
                loss = loss + torch.norm(feat[m] - centers[c], dim=1).mean()
            return loss
        """,
    # intra-class variance: the class mean of the selection itself
    "intra_variance": """
        def f(feat, labels, centers):
            loss = 0
            for c in torch.unique(labels):
                f = feat[labels == c]
                loss = loss + (f - f.mean(0)).pow(2).sum(1).mean()
            return loss
        """,
    # cosine to the class center, a [1, D] row operand, default dim
    "cosine": """
        def f(feat, labels, centers):
            total = 0
            for c in torch.unique(labels):
                f = feat[labels == c]
                total = total + (1 - F.cosine_similarity(f, centers[c].unsqueeze(0))).mean()
            return total
        """,
    # a discriminative loss's variance term: instance ids from 1, hinged distances to the means
    "hinged_variance": """
        def f(emb, lab, means):
            delta_v = 0.5
            loss = 0
            for i in range(means.shape[0]):
                pix = emb[lab == i + 1]
                d = torch.clamp(torch.norm(pix - means[i], dim=1) - delta_v, min=0) ** 2
                loss = loss + d.mean()
            return loss / means.shape[0]
        """,
    # each class's squared distances per row appended, the rows of every class concatenated
    "appended_rows": """
        def f(feat, labels, centers):
            out = []
            for c in range(centers.shape[0]):
                out.append((feat[labels == c] - centers[c]).pow(2).sum(-1))
            return torch.cat(out)
        """,
    # the largest coordinate gap per row (ties), kept dim, summed; a value per row bound to a name
    "amax_keepdim": """
        def f(feat, labels, centers):
            total = 0
            for c in range(centers.shape[0]):
                gap = (feat[labels == c] - centers[c]).abs().amax(dim=-1, keepdim=True)
                total = total + gap.sum() + gap.mean() * 0.5
            return total
        """,
}


def inputs(dtype, n=24, d=5, classes=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(n, d, generator=g, dtype=dtype)
    labels = torch.randint(0, classes - 1, (n,), generator=g)
    labels[labels == 2] = 1          # class 2 empty; the last class too
    labels[:2] = 0                   # ...
    feat[0] = feat[1]                # tied rows
    feat[3, :2] = 0.25               # tied coordinates
    centers = torch.randn(classes, d, generator=g, dtype=dtype)
    centers[0, :2] = 0.25
    return feat.requires_grad_(), labels, centers.requires_grad_()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", SOURCES)
def test_vectorized_and_equivalent_with_an_empty_class_and_ties(name, dtype):
    original, rewritten, _, report = build(SOURCES[name])
    assert report.loops[0].vectorized, report.loops[0].reason
    assert_equivalent(original, rewritten, *inputs(dtype))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", ["center_range", "norm_skip_empty", "cosine"])
def test_nan_and_inf_in_a_selected_row_propagate(name, bad):
    original, rewritten, _, report = build(SOURCES[name])
    assert report.loops[0].vectorized, report.loops[0].reason
    feat, labels, centers = inputs(torch.float64)
    feat = feat.detach()
    feat[5, 1] = bad
    assert_equivalent(original, rewritten, feat.requires_grad_(), labels, centers)


@pytest.mark.parametrize("name", ["center_range", "norm_skip_empty", "hinged_variance",
                                  "amax_keepdim"])
def test_rows_no_iteration_selects_take_no_nan(name):
    """Rows of an ignored label (-1) hold inf and NaN: the original never reads them, and
    the stand-ins' zeros keep them out of every value and gradient."""
    original, rewritten, _, report = build(SOURCES[name])
    assert report.loops[0].vectorized, report.loops[0].reason
    feat, labels, centers = inputs(torch.float64)
    feat = feat.detach()
    labels[6:8] = -1
    feat[6], feat[7] = float("inf"), float("nan")
    assert_equivalent(original, rewritten, feat.requires_grad_(), labels, centers)
    g, = torch.autograd.grad(rewritten(feat, labels, centers).nansum(), feat)
    assert torch.isfinite(g[6:8]).all()


def test_empty_class_mean_is_nan_as_written():
    original, rewritten, _, _ = build(SOURCES["center_range"])
    args = inputs(torch.float32)
    assert torch.isnan(original(*args)) and torch.isnan(rewritten(*args))


def center_unique(feat, labels, centers):
    loss = feat.new_zeros(())
    for c in torch.unique(labels):
        f = feat[labels == c]
        loss = loss + (f - centers[c]).pow(2).sum(1).mean()
    return loss / len(torch.unique(labels))


def test_runs_vectorized_once_per_call():
    fn = optimize_loss(center_unique, compile=False, keep_faster=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn(*inputs(torch.float32))
    loop, = fn.report.loops
    assert loop.vectorized
    assert (loop.vectorized_runs, loop.failed_runs, loop.original_runs) == (1, 0, 0)


def wide_operand(feat, labels, prev):
    # ``prev[c]`` of the selection's rank, first dim not 1: it broadcasts against the number of
    # selected rows, which works as written where a class has one row
    total = 0
    for c in range(prev.shape[0]):
        total = total + (feat[labels == c] - prev[c]).pow(2).sum(1).sum()
    return total


def last_dim_of_a_vector(feat, labels, prev):
    # dim -1 of a 1-D selection is the selected dim: one sum per class, not one per row
    total = 0
    for c in range(prev.shape[0]):
        total = total + (feat[:, 0][labels == c] * 2).sum(-1).mean()
    return total


@pytest.mark.parametrize("fn", [wide_operand, last_dim_of_a_vector])
def test_what_is_not_row_by_row_runs_the_original(fn):
    """``RowsMask`` raises and the decorator runs the original, with its value and gradients."""
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.arange(4)  # one row per class
    prev = torch.randn(4, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    opt = optimize_loss(fn, compile=False, keep_faster=False)
    with pytest.warns(UserWarning):
        opt(feat, labels, prev)
    loop, = opt.report.loops
    assert loop.vectorized and loop.failed_runs == 1, loop.runs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_equivalent(fn, opt, feat, labels, prev)


@pytest.mark.parametrize("call", ["(f - centers[c]).norm(p, dim=1)",      # p not a number
                                  "(f - centers[c]).sum((0, 1))",         # a tuple of dims
                                  "(f - centers[c]).sum(1, dtype=torch.float64)",
                                  "(f - centers[c]).sum(0)",              # the selected dim
                                  "(f - centers[labels]).sum(1)"])        # labels vary per row
def test_reductions_that_stay_selections(call):
    src = f"""
        def f(feat, labels, centers, p):
            loss = 0
            for c in range(centers.shape[0]):
                f = feat[labels == c]
                loss = loss + ({call}).mean()
            return loss
        """
    _, _, _, report = build(src)
    assert strategies(report) == {3: "kept"}
    assert "boolean mask indexing" in report.loops[0].reason


# ---------------------------------------------------------------------------------------------
# class_selections_to_rows: a class's rows gathered before the loop, padded to the largest class

CLASS_ROWS = {
    # a range with a start and a step, labels of ids it skips and out of every range
    "stepped_range": """
        def f(feat, labels, centers):
            loss = 0
            for c in range(1, centers.shape[0], 2):
                f = feat[labels == c]
                loss = loss + torch.norm(f - centers[c], dim=1).mean() + len(f)
            return loss
        """,
    # the items of a tensor of ids given, repeated and absent ones among them
    "given_ids": """
        def f(feat, labels, centers, ids):
            loss = 0
            for c in ids:
                d = (feat[c == labels] - centers[c]).abs().sum(-1)
                loss = loss + d.amax() * 0 + d.sum()
            return loss
        """,
    # pixels of a batch of images (labels with two dims), the class's own mean (an empty
    # class's NaN; under `if m.sum() == 0: continue` the mean along the selection keeps the loop,
    # see the README's limits)
    "pixel_labels": """
        def f(feat, labels, centers):
            loss = 0
            for c in range(centers.shape[0]):
                m = labels.eq(c)
                f = feat[m]
                loss = loss + (f - f.mean(0)).pow(2).sum(1).mean()
            return loss
        """,
}


def class_inputs(name, dtype, labels_dtype=torch.int64):
    g = torch.Generator().manual_seed(3)
    shape = (3, 5) if name == "pixel_labels" else (15,)
    feat = torch.randn(*shape, 4, generator=g, dtype=dtype)
    labels = torch.randint(-1, 8, shape, generator=g).to(labels_dtype)
    feat[labels == -1] = float("inf")  # never selected: out of every range
    centers = torch.randn(6, 4, generator=g, dtype=dtype, requires_grad=True)
    ids = torch.tensor([3, 0, 3, 7, 5], dtype=labels_dtype)
    return (feat.requires_grad_(), labels, centers) + ((ids,) if name == "given_ids" else ())


@pytest.mark.parametrize("labels_dtype", [torch.int64, torch.int32], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", CLASS_ROWS)
def test_class_rows_equivalent(name, dtype, labels_dtype):
    original, rewritten, code, report = build(CLASS_ROWS[name])
    assert report.loops[0].vectorized, report.loops[0].reason
    assert "_class_selection_rows" in code, code
    args = class_inputs(name, dtype, labels_dtype)
    if name == "given_ids":  # id 7 indexes no center: the original raises, so does the rewrite
        for fn in (original, rewritten):
            with pytest.raises(IndexError):
                fn(*args)
        args = args[:3] + (args[3][args[3] < 6],)
    assert_equivalent(original, rewritten, *args)
    g, = torch.autograd.grad(rewritten(*args), args[0])
    assert torch.isfinite(g).all()  # the inf rows are never read


def test_class_rows_of_ids_the_labels_cannot_hold_run_as_written():
    original, rewritten, _, _ = build(CLASS_ROWS["stepped_range"])
    feat, labels, _ = class_inputs("stepped_range", torch.float64)
    centers = torch.randn(300, 4, dtype=torch.float64)
    labels = labels.clamp(min=0).to(torch.uint8)  # range(1, 300, 2) past uint8
    assert_equivalent(original, rewritten, feat, labels, centers)


def test_class_rows_compiled():
    fn = optimize_loss(center_unique, keep_faster=False)
    args = inputs(torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_equivalent(center_unique, fn, *args)


@pytest.mark.parametrize("spec", [s for s in ops.REGISTRY if s.along_dim], ids=lambda s: s.aten)
def test_along_dim_facts_reduce_each_row_alone(spec):
    """Registry invariant: along a dim after the first, each row of the result is the op on the
    operands' rows alone, at the dim given or the default, with the operands first."""
    count, at, default = spec.along_dim
    fn = eval(spec.functions[0], {"torch": torch})
    g = torch.Generator().manual_seed(0)
    operands = [torch.randn(4, 3, 5, generator=g, dtype=torch.float64) for _ in range(count)]
    filler = [2] * (at - count)  # the settings before the dim: the norm's p
    for dim, given in ((1, True), (-1, True), (default, False)):
        if dim is None:
            continue
        whole = fn(*operands, *filler, dim) if given else fn(*operands)
        for r in range(4):
            row = fn(*(o[r:r + 1] for o in operands), *filler, dim) if given else \
                fn(*(o[r:r + 1] for o in operands))
            torch.testing.assert_close(whole[r:r + 1], row, rtol=0, atol=0)
