"""``passes.chunked_maps``: a vmapped loop whose iterations make large temporaries runs over
chunks of them after its first call (no value of all iterations larger than ``BUDGET``), with
the original's values, gradients and dtypes (ties, NaN, inf; a trip count the chunk does not
divide), plain vmap inside another vmap and under Dynamo; the generated call (golden)."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from passes import chunked_maps
from passes.chunked_maps import map_in_chunks
from passes.report import Report
from rewrite import optimize_loss
from rewrite.frontend import rewrite_function
from rewrite.testing import assert_equivalent
from tests.helpers import load_module

# The point-cloud loop of ChamferDistancePytorch's helpers (examples/real/pc_chamfer_nn_loop.py):
# an [n, m] matrix per cloud pair, from helpers inlined in the vmapped body.
CHAMFER = """
import torch

def pairwise_dist(x, y):
    xx, yy, zz = torch.mm(x, x.t()), torch.mm(y, y.t()), torch.mm(x, y.t())
    rx = xx.diag().unsqueeze(0).expand_as(xx)
    ry = yy.diag().unsqueeze(0).expand_as(yy)
    return rx.t() + ry - 2 * zz

def nn_loss(x, y, dim=0):
    dist = pairwise_dist(x, y)
    values, indices = dist.min(dim=dim)
    return values.mean()

def chamfer(pred, gt):
    loss = 0
    for i in range(pred.size(0)):
        loss += nn_loss(pred[i], gt[i], dim=0) + nn_loss(pred[i], gt[i], dim=1)
    return loss / pred.size(0)
"""

GOLDEN_LOOP = """\
        def _body(_pred_row, _gt_row):
            _loss_part = 0
            _nn_loss_x = _pred_row
            _nn_loss_y = _gt_row
            _nn_loss_dim = 0
            _pairwise_dist_x = _nn_loss_x
            _pairwise_dist_y = _nn_loss_y
            _pairwise_dist_xx = torch.mm(_pairwise_dist_x, _pairwise_dist_x.t())
            _pairwise_dist_yy = torch.mm(_pairwise_dist_y, _pairwise_dist_y.t())
            _pairwise_dist_zz = torch.mm(_pairwise_dist_x, _pairwise_dist_y.t())
            _pairwise_dist_rx = _pairwise_dist_xx.diag().unsqueeze(0).expand_as(_pairwise_dist_xx)
            _pairwise_dist_ry = _pairwise_dist_yy.diag().unsqueeze(0).expand_as(_pairwise_dist_yy)
            _pairwise_dist = _pairwise_dist_rx.t() + _pairwise_dist_ry - 2 * _pairwise_dist_zz
            _nn_loss_dist = _pairwise_dist
            _nn_loss_values, _nn_loss_indices = _nn_loss_dist.min(dim=_nn_loss_dim)
            _nn_loss = _nn_loss_values.mean()
            _nn_loss_x_1 = _pred_row
            _nn_loss_y_1 = _gt_row
            _nn_loss_dim_1 = 1
            _pairwise_dist_x_1 = _nn_loss_x_1
            _pairwise_dist_y_1 = _nn_loss_y_1
            _pairwise_dist_xx_1 = torch.mm(_pairwise_dist_x_1, _pairwise_dist_x_1.t())
            _pairwise_dist_yy_1 = torch.mm(_pairwise_dist_y_1, _pairwise_dist_y_1.t())
            _pairwise_dist_zz_1 = torch.mm(_pairwise_dist_x_1, _pairwise_dist_y_1.t())
            _pairwise_dist_rx_1 = _pairwise_dist_xx_1.diag().unsqueeze(0).expand_as(_pairwise_dist_xx_1)
            _pairwise_dist_ry_1 = _pairwise_dist_yy_1.diag().unsqueeze(0).expand_as(_pairwise_dist_yy_1)
            _pairwise_dist_1 = _pairwise_dist_rx_1.t() + _pairwise_dist_ry_1 - 2 * _pairwise_dist_zz_1
            _nn_loss_dist_1 = _pairwise_dist_1
            _nn_loss_values_1, _nn_loss_indices_1 = _nn_loss_dist_1.min(dim=_nn_loss_dim_1)
            _nn_loss_1 = _nn_loss_values_1.mean()
            _loss_part = _loss_part + (_nn_loss + _nn_loss_1)
            return (torch.as_tensor(_loss_part),)
        _outs = _map_in_chunks(_body, in_dims=(0, 0))(pred if pred.size(0) == pred.shape[0] else pred[0:pred.size(0):1], _gt_stacked if pred.size(0) == _gt_stacked.shape[0] else _gt_stacked[0:pred.size(0):1])
"""

# A loop over rows that makes nothing larger than its rows: vmap's value is already small.
ROWS = """
import torch

def rows(x):
    total = 0
    for i in range(x.shape[0]):
        total += x[i].sum()
    return total
"""


class _Largest(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.nbytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(value, torch.Tensor):
                self.nbytes = max(self.nbytes, value.numel() * value.element_size())
        return out


def _clouds(b, n, dtype, special):
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(b, n, 3, generator=gen, dtype=dtype)
    gt = torch.rand(b, n, 3, generator=gen, dtype=dtype)
    pred[1, 3] = pred[1, 5]  # tied nearest neighbours
    gt[2, :2] = gt[2, 4]
    if special:
        pred[0, 2, 1], gt[3, 7, 0] = float("nan"), float("inf")
    return pred.requires_grad_(), gt


@pytest.fixture
def small_budget(monkeypatch):
    """A budget small test sizes exceed: a [5, 24, 24] float64 value is 23 KiB."""
    monkeypatch.setattr(chunked_maps, "BUDGET", 8 << 10)
    monkeypatch.setattr(chunked_maps, "_per_iteration", {})


def test_the_loop_maps_its_body_in_chunks(tmp_path):
    user = load_module(tmp_path, CHAMFER)
    rewrite_function(user.chamfer, report := Report("chamfer", "", 0))
    assert GOLDEN_LOOP in report.rewritten_source, report.rewritten_source
    rewrite_function(load_module(tmp_path, ROWS).rows, report := Report("rows", "", 0))
    assert "_map_in_chunks" not in report.rewritten_source  # batched: no vmap, nothing to chunk


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("special", [False, True], ids=["finite", "nan_inf"])
def test_chunked_loop_is_the_original(tmp_path, small_budget, dtype, special):
    user = load_module(tmp_path, CHAMFER)
    fn = optimize_loss(user.chamfer, compile=False)
    pred, gt = _clouds(5, 24, dtype, special)  # chunks of 2: 2 + 2 + 1 clouds
    for _ in range(2):  # the first call measures, the second runs in chunks
        assert_equivalent(user.chamfer, fn, pred, gt)
        assert fn(pred, gt).dtype == dtype
    # the band's first call runs a counting copy of the rewritten function: a body of its own
    assert set(chunked_maps._per_iteration.values()) == {24 * 24 * dtype.itemsize}


def test_after_the_first_call_no_value_holds_every_iteration(tmp_path, small_budget):
    user = load_module(tmp_path, CHAMFER)
    fn = optimize_loss(user.chamfer, compile=False).rewritten_function()
    pred, gt = _clouds(5, 24, torch.float64, False)
    fn(pred, gt)
    with _Largest() as seen:
        fn(pred, gt).backward()
    assert seen.nbytes <= chunked_maps.BUDGET  # all 5 clouds' [24, 24] matrices: 23 KiB


def test_a_small_iteration_maps_at_once(small_budget):
    x = torch.randn(6, 4, dtype=torch.float64)
    calls = []

    def body(row):
        calls.append(row.shape)
        return row.sin()
    for _ in range(2):
        assert torch.equal(map_in_chunks(body, in_dims=(0,))(x), x.sin())
    assert len(calls) == 2 and list(chunked_maps._per_iteration.values()) == [32]


def test_inside_vmap_and_under_dynamo_it_is_vmap(small_budget):
    x = torch.randn(3, 4, 50, dtype=torch.float64)

    def outer(rows):
        return map_in_chunks(lambda r: torch.outer(r, r).sum(), in_dims=(0,))(rows)
    assert torch.allclose(torch.vmap(outer)(x), torch.einsum("bni,bnj->bn", x, x))
    compiled = torch.compile(outer, backend="eager", fullgraph=True)
    assert torch.allclose(compiled(x[0]), outer(x[0]))
    assert chunked_maps._per_iteration == {} or len(chunked_maps._per_iteration) == 1
