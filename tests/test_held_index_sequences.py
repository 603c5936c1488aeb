"""Loops over the class indices a loss object holds (``for c in self.idc``), as boundary losses
(SurfaceLoss of LIVIAETS/boundary-loss and its ports) write them: a new-user trial found the loop
reported vectorized "when `self.idc` is a tensor", a list of ints in every such loss, so it ran as
written at every call. The list becomes an int64 tensor in front of the guard
(``index_tuples_to_tensors``): the same values, gradients and dtype (2.4x at 21 classes)."""
from __future__ import annotations

import pytest
import torch

from rewrite import optimize_loss
from tests.helpers import equivalent_report, load_module

DTYPES = (torch.float32, torch.float64)

SURFACE = """
import torch
from torch import nn

class SurfaceLoss(nn.Module):
    def __init__(self, idc):
        super().__init__()
        self.idc = idc

    def forward(self, probs, dist_maps):
        total = 0
        for c in self.idc:
            total = total + torch.einsum("bwh,bwh->bwh", probs[:, c, ...], dist_maps[:, c, ...]).mean()
        return total / len(self.idc)

class Weighted(SurfaceLoss):
    def forward(self, probs, dist_maps):
        total = 0
        for c in self.idc:
            total = total + (probs[:, c] * dist_maps[:, c]).mean() * c
        return total
"""


def _maps(dtype, classes=6, special=False):
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(2, classes, 5, 4, generator=g, dtype=dtype), 1)
    dist = torch.randn(2, classes, 5, 4, generator=g, dtype=dtype)
    if special:
        dist[0, 2, 1, 1], dist[1, 3, 0, 0] = float("nan"), float("inf")
    return probs.requires_grad_(), dist


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("idc", ([1, 2, 3, 4, 5], (2, 4), [3, 3, 1]))
@pytest.mark.parametrize("special", (False, True))
def test_held_class_list_vectorized_equivalent(tmp_path, dtype, idc, special):
    loss = load_module(tmp_path, SURFACE).SurfaceLoss(idc)
    (loop,) = equivalent_report(loss, *_maps(dtype, special=special)).loops
    assert loop.vectorized and loop.vectorized_runs == 1 and loop.original_runs == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("idc", ([True, False], [1.0, 2.0], [], torch.tensor([1, 2])))
def test_other_held_values_run_as_they_did(tmp_path, dtype, idc):
    # bools index as masks, floats raise as indices, an empty list divides by zero, a tensor is
    # iterated as it is: the original's results or errors every time
    loss = load_module(tmp_path, SURFACE).SurfaceLoss(idc)
    try:
        want = loss(*_maps(dtype))
    except Exception as exc:
        with pytest.raises(type(exc)):
            equivalent_report(loss, *_maps(dtype))
        return
    equivalent_report(loss, *_maps(dtype))
    assert want.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_element_used_as_a_number_is_unchanged(tmp_path, dtype):
    loss = load_module(tmp_path, SURFACE).Weighted([1, 2, 3])
    (loop,) = equivalent_report(loss, *_maps(dtype)).loops
    assert loop.original_runs == 1


PER_IMAGE = SURFACE + """
class PerImage(SurfaceLoss):
    def forward(self, probs, dist_maps):
        losses = []
        for b in range(probs.shape[0]):
            per_class = []
            for c in self.idc:
                per_class.append((probs[b, c] * dist_maps[b, c]).mean())
            losses.append(torch.stack(per_class)[0] + torch.stack(per_class).mean())
        return torch.stack(losses).mean()

    def rotate(self):
        self.idc.append(self.idc.pop(0))
        return 0.0
"""
# changes of the held list in the outer body, as the statement the report names
CHANGES = {"rebinding": ("losses.append(", "self.idc = self.idc[1:] + self.idc[:1]\n            losses.append("),
           "calling": ("stack(per_class).mean())\n", "stack(per_class).mean() + self.rotate())\n")}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("idc", ([1, 2, 5], (0, 3)))
def test_per_image_loop_over_held_classes_runs_vectorized(tmp_path, dtype, idc):
    """kervadec's boundary loss per image: the held list's tensor, made in the outer body, is the
    same in every image, so the outer loop's check reads it once, on the first image (it was
    kept: "needs a per-iteration runtime check"; then ran as written: a list "takes a gradient")."""
    loss = load_module(tmp_path, PER_IMAGE).PerImage(idc)
    outer, inner = sorted(equivalent_report(loss, *_maps(dtype, special=True)).loops,
                          key=lambda loop: loop.lineno)
    assert outer.vectorized and outer.vectorized_runs == 1 and outer.original_runs == 0
    assert inner.vectorized


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("change, line", (
    ("rebinding", "self.idc = self.idc[1:] + self.idc[:1]"),
    ("calling", "losses.append(torch.stack(per_class)[0] + torch.stack(per_class).mean() + "
                "self.rotate())")))
def test_outer_loop_changing_the_held_classes_is_kept(tmp_path, dtype, change, line):
    module = load_module(tmp_path, PER_IMAGE.replace(*CHANGES[change]))
    want_loss, got_loss = module.PerImage([1, 2, 5]), module.PerImage([1, 2, 5])
    want, optimized = want_loss(*_maps(dtype)), optimize_loss(got_loss, compile=False)
    torch.testing.assert_close(optimized(*_maps(dtype)), want)
    assert got_loss.idc == want_loss.idc == [5, 1, 2]  # rotated once per image
    outer = min(optimized.report.loops, key=lambda loop: loop.lineno)
    assert not outer.vectorized
    assert f"the ints `self.idc` holds may differ per iteration: `{line}`" in outer.reason
