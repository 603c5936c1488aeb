"""Every position but the iteration's own, ``idx = [*range(n)]; idx.remove(j)`` selecting along
one dim that is then summed or averaged (voxceleb_trainer's GE2E exclusive centroids): the
reduction masked by ``arange != j``; the same values, gradients and dtype as the loop, the loop
as written where the original would raise or the list does not take that form."""
from __future__ import annotations

import pytest
import torch

from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, strategies

CENTROIDS = """
def f(x, n):
    out = []
    for j in range(0, n):
        idx = [*range(0, n)]
        idx.remove(j)
        c = torch.mean(x[:, idx, :], 1)
        out.append(torch.cosine_similarity(x[:, j, :], c, dim=-1))
    return torch.stack(out, dim=1).sum()
"""

SUMS = """
def f(x, n):
    loss = 0
    for j in range(n):
        others = list(range(n))
        others.remove(j)
        loss = loss + (x[j] * x[:, others].sum(dim=1)).sum()
    return loss
"""


def _x(dtype, special, shape=(3, 4, 5)):
    x = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
    if special:  # NaN and inf at positions other iterations exclude, and ties
        x[0, 1, 2], x[1, 3, 0], x[2, 0, 4] = float("nan"), float("inf"), float("-inf")
        x[:, 2] = x[:, 0]
    return x.requires_grad_()


def test_golden():
    _, _, code, report = build(CENTROIDS)
    assert strategies(report) == {3: "vmap"}, (report, code)
    vectorized = code.split("else:")[0]
    assert "_pos = torch.arange(x.shape[1], device=x.device)" in vectorized, code
    assert "_keep = ((_pos != j) & (_pos < n)).reshape((-1,) + (1,) * (x.dim() - 1 - 1))" \
        in vectorized, code
    assert "c = torch.where(_keep, x, False).sum(1) / _keep.sum()" in vectorized, code
    assert ".remove(" not in vectorized and "n <= x.shape[1]" in vectorized, code
    assert "x.is_floating_point()" in vectorized, code  # a mean of integers raises


def test_no_change_without_the_pattern():
    src = CENTROIDS.replace("idx.remove(j)", "idx.sort()")
    code = build(src)[2]
    assert "_keep" not in code and "_pos" not in code, code


@pytest.mark.parametrize("src", [
    CENTROIDS.replace("idx.remove(j)", "idx.remove(0)"),          # not the iteration's own
    CENTROIDS.replace("torch.mean(x[:, idx, :], 1)", "torch.mean(x[:, idx, :], 2)"),  # other dim
    CENTROIDS.replace("torch.mean(x[:, idx, :], 1)", "x[:, idx, :].max(1)[0]"),      # not a sum
    CENTROIDS.replace("x[:, idx, :]", "x[0:2, idx, :]"),           # not a full slice before it
    CENTROIDS.replace("return torch", "out.append(idx[0])\n    return torch"),  # after the loop
    CENTROIDS.replace("[*range(0, n)]", "[*range(1, n)]"),         # another start
])
def test_other_forms_stay_as_written(src):
    code, report = build(src)[2:]
    assert "_keep" not in code, code
    assert report.loops[0].strategy == "kept" or ".remove(" in code.split("else:")[0], code


@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("src", [CENTROIDS, SUMS])
def test_equivalent(src, special):
    original, optimized, _, report = build(src)
    assert strategies(report)[3] != "kept", report
    for dtype in (torch.float32, torch.float64):
        for n in (4, 3, 1):  # fewer positions than the dim has; one: nothing left (0 / 0)
            assert_equivalent(original, optimized, _x(dtype, special, (4, 4, 5)), n)


@pytest.mark.parametrize("n", [5, 0])
def test_the_loop_runs_as_written_where_the_original_is_out_of_range_or_empty(n):
    original, optimized, _, _ = build(CENTROIDS)
    x = _x(torch.float64, False)  # dim 1 has 4 positions
    if n == 0:
        with pytest.raises(RuntimeError):  # stack of no items, as the original
            optimized(x, n)
        return
    with pytest.raises(IndexError):
        original(x, n)
    with pytest.raises(IndexError):
        optimized(x, n)


def test_an_integer_mean_raises_as_written():
    _, optimized, _, _ = build(CENTROIDS.replace("torch.cosine_similarity(x[:, j, :], c, dim=-1)",
                                                  "c"))
    with pytest.raises(RuntimeError, match="mean"):
        optimized(torch.arange(24).view(2, 4, 3), 4)
