"""Rows taken at a mask the loop does not change, in a vmapped body (``pred[:, c][valid]``, the
mask made before the loop), run as the bound ``masked_rows`` there (``outline_body``): an
``index_select`` of the mask's positions. Value, every gradient, dtype, float32 and float64, NaN
and inf among the selected values, nothing or everything selected, a mask over some of the
dims; the helper itself: bit for bit ``x[mask]`` (alone and under vmap), and indexing's own
result or error for what is not a bool mask of ``x``'s leading shape."""
from __future__ import annotations

import pytest
import torch

import rewrite
from passes.masked_rows import masked_rows
from rewrite.testing import assert_equivalent
from tests.helpers import load_module, optimized_and_vectorized

SOURCE = """
import torch
import torch.nn.functional as F


def per_class(pred, target):
    valid = target != 255
    total = 0
    for c in range(pred.shape[1]):
        t = (target == c).long()
        p = pred[:, c, ...]
        t = t[valid]
        p = p[valid]
        total += F.binary_cross_entropy_with_logits(p, t.type(p.type()))
    return total


def kept_rows(feats, keep):
    out = []
    for i in range(feats.shape[0]):
        rows = feats[i][keep]
        out.append((rows * rows).sum(0))
    return torch.stack(out)


def masked_parameter(x, mask):
    total = 0
    for i in range(x.shape[0]):
        total = total + x[i][mask].exp().mean()
    return total
"""

DTYPES = [torch.float32, torch.float64]


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("masked_rows"), SOURCE)


def check(fn, *inputs):
    """Same value, every gradient and dtype; the loop ran vectorized (``strict``: a failing
    vectorized form raises), its vmapped body selecting through ``masked_rows``."""
    assert "_masked_rows(" in optimized_and_vectorized(fn, *inputs).report.rewritten_source


def _segmentation(dtype, ignored, seed=0, nonfinite=False):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(2, 4, 6, 6, generator=g, dtype=dtype)
    if nonfinite:
        pred.view(-1)[::7] = float("nan")
        pred.view(-1)[3::11] = float("inf")
        pred.view(-1)[5::13] = -float("inf")
    target = torch.randint(0, 4, (2, 6, 6), generator=g)
    target[torch.rand(2, 6, 6, generator=g) < ignored] = 255
    return pred.requires_grad_(), target


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ignored", [0.0, 0.2, 1.0])
def test_a_per_class_selection_at_the_valid_pixels(user, dtype, ignored):
    check(user.per_class, *_segmentation(dtype, ignored))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_among_the_selected_logits(user, dtype):
    check(user.per_class, *_segmentation(dtype, 0.2, seed=1, nonfinite=True))


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_mask_over_the_leading_dims_keeps_whole_rows(user, dtype):
    feats = torch.randn(3, 7, 5, dtype=dtype).requires_grad_()
    keep = torch.tensor([True, False, True, True, False, False, True])
    check(user.kept_rows, feats, keep)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_mask_handed_in(user, dtype):
    x = torch.randn(4, 3, 5, dtype=dtype).requires_grad_()
    check(user.masked_parameter, x, torch.rand(3, 5) > 0.5)


def test_what_is_not_a_bool_mask_of_the_leading_shape_is_indexed_as_written(user):
    x = torch.randn(4, 3, 5).requires_grad_()
    opt = rewrite.optimize_loss(user.masked_parameter, compile=False)
    for index in (torch.tensor([2, 0]), 1, torch.tensor(True)):  # positions, an int, a 0-d mask
        assert_equivalent(user.masked_parameter, opt, x, index)
    for wrong in (torch.rand(3, 4) > 0.5, torch.rand(3, 5, 1) > 0.5):
        with pytest.raises(IndexError) as want:
            user.masked_parameter(x, wrong)
        with pytest.raises(IndexError) as got:
            opt(x, wrong)
        assert str(got.value) == str(want.value)
    assert "_masked_rows(" in opt.report.rewritten_source


def _same(want: torch.Tensor, got: torch.Tensor) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(got.nan_to_num(), want.nan_to_num())
    assert torch.equal(got.isnan(), want.isnan())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.bool])
@pytest.mark.parametrize("shape, mask_dims", [((6,), 1), ((3, 4), 2), ((3, 4, 2), 2),
                                               ((3, 4, 2), 1)])
def test_the_helper_is_boolean_indexing_bit_for_bit(dtype, shape, mask_dims):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(*shape, generator=g) * 3).to(dtype)
    if dtype.is_floating_point:
        x.view(-1)[::5] = float("nan")
        x.view(-1)[1::7] = float("inf")
    for mask in (torch.rand(shape[:mask_dims], generator=g) > 0.4,
                 torch.zeros(shape[:mask_dims], dtype=torch.bool),
                 torch.ones(shape[:mask_dims], dtype=torch.bool)):
        _same(x[mask], masked_rows(x, mask))
        if dtype.is_floating_point:
            want, got = x.clone().requires_grad_(), x.clone().requires_grad_()
            cot = torch.randn(want[mask].shape, generator=g, dtype=dtype)
            want[mask].backward(cot)
            masked_rows(got, mask).backward(cot)
            _same(want.grad, got.grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_helper_under_vmap_is_boolean_indexing_bit_for_bit(dtype):
    x = torch.randn(5, 3, 4, 2, dtype=dtype)
    mask = torch.rand(3, 4) > 0.3
    cot = torch.randn(5, int(mask.sum()), 2, dtype=dtype)
    want, got = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.vmap(lambda r: r[mask])(want).backward(cot)
    out = torch.vmap(lambda r: masked_rows(r, mask))(got)
    out.backward(cot)
    _same(torch.vmap(lambda r: r[mask])(x), out.detach())
    _same(want.grad, got.grad)


def test_the_helper_indexes_as_written_what_is_no_bool_mask_of_the_leading_shape():
    x = torch.arange(24.0).reshape(2, 3, 4)
    for index in (torch.tensor([1, 0]), torch.tensor(True), 1, (0, 2)):
        _same(x[index], masked_rows(x, index))
    for wrong in (torch.ones(3, dtype=torch.bool), torch.ones(2, 3, 4, 1, dtype=torch.bool)):
        with pytest.raises(IndexError) as want:
            x[wrong]
        with pytest.raises(IndexError) as got:
            masked_rows(x, wrong)
        assert str(got.value) == str(want.value)
    # a mask that vmap maps (an outer loop's value): its positions differ per item
    masks = torch.rand(2, 3, 4) > 0.5
    with pytest.raises(RuntimeError) as want:
        torch.vmap(lambda r, m: r[m])(x, masks)
    with pytest.raises(RuntimeError) as got:
        torch.vmap(masked_rows)(x, masks)
    assert str(got.value) == str(want.value)
