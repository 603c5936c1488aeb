"""The batched form's checks run before the loop, so they read only what exists there. A helper
taking an object (``_single(p[i], q[i], cfg)``, or a method inlined with ``self`` bound to
``_single_self``) reads ``cfg.r`` through the name its inlining binds in the body: the check
``not isinstance(_single_cfg.r, torch.Tensor)`` read that name before it was bound, raised
``UnboundLocalError`` at every call and the original ran (a new-user trial's squared EMD loss, Hou
et al., per sample). An attribute of a value the body binds has no source before the loop: the
body is mapped with vmap (13x), equivalent in value, every gradient and dtype."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from tests.helpers import equivalent_report, load_module

DTYPES = (torch.float32, torch.float64)

EMD = """
import torch
from torch import nn

def _single(p, q, cfg):
    cdf_diff = torch.cumsum(p, dim=-1) - torch.cumsum(q, dim=-1)
    return torch.pow(torch.mean(torch.pow(torch.abs(cdf_diff), cfg.r)), 1.0 / cfg.r)

def emd(p, q, cfg):
    out = []
    for i in range(p.shape[0]):
        out.append(_single(p[i], q[i], cfg))
    return sum(out) / p.shape[0]

def emd_direct(p, q, cfg):
    out = []
    for i in range(p.shape[0]):
        d = torch.cumsum(p[i], dim=-1) - torch.cumsum(q[i], dim=-1)
        out.append(torch.pow(torch.abs(d), cfg.r).mean())
    return sum(out) / p.shape[0]

class EMDLoss(nn.Module):
    def __init__(self, r=2):
        super().__init__()
        self.r = r

    def single(self, p, q):
        cdf_diff = torch.cumsum(p, dim=-1) - torch.cumsum(q, dim=-1)
        return torch.pow(torch.mean(torch.pow(torch.abs(cdf_diff), self.r)), 1.0 / self.r)

    def forward(self, p, q):
        out = []
        for i in range(p.shape[0]):
            out.append(self.single(p[i], q[i]))
        return sum(out) / p.shape[0]
"""


class _Cfg:
    r = 2


def _histograms(dtype):
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(7, 10, generator=g, dtype=dtype), 1)
    q = torch.softmax(torch.randn(7, 10, generator=g, dtype=dtype), 1)
    q[2] = p[2]  # a zero distance: pow's gradient at 0
    return p.requires_grad_(), q


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ("emd", "EMDLoss"))
def test_helper_reading_an_attribute_of_its_object_runs_vectorized(tmp_path, dtype, name):
    module = load_module(tmp_path, EMD)
    fn = module.EMDLoss() if name == "EMDLoss" else module.emd
    args = _histograms(dtype) + ((_Cfg(),) if name == "emd" else ())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        report = equivalent_report(fn, *args)
    (loop,) = report.loops
    assert loop.vectorized and loop.vectorized_runs == 1 and loop.failed_runs == 0
    assert not report.fallbacks


@pytest.mark.parametrize("dtype", DTYPES)
def test_attribute_of_a_parameter_still_batched(tmp_path, dtype):
    fn = load_module(tmp_path, EMD).emd_direct
    (loop,) = equivalent_report(fn, *_histograms(dtype), _Cfg()).loops
    assert loop.strategy == "batched" and loop.vectorized_runs == 1
