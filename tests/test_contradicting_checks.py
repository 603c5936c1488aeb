"""A loop whose runtime check can never hold is refused at rewrite time
(``contradicting_checks``), not reported vectorized and run as written on every call:
``s += x[i].sum().item() / scale`` assumes ``scale`` is no tensor, ``scale[i]`` that it is one.
Refused whole, the loop is distributed: its sums are hoisted, the rest runs as written."""
import pytest
import torch

from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module

SOURCE = '''
import torch


def per_row_items(x, scale):
    s = 0.0
    t = 0
    for i in range(len(x)):
        s += x[i].sum().item() / scale
        t = t + scale[i] * x[i]
    return s, t
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("contradicting"), SOURCE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_check_that_never_holds_is_refused_and_the_loop_distributed(user, dtype):
    x = torch.randn(5, 3, dtype=dtype, requires_grad=True)
    scale = (torch.rand(5, dtype=dtype) + 0.5).requires_grad_()
    opt = optimize_loss(user.per_row_items, compile=False, strict=True)
    assert_equivalent(user.per_row_items, opt, x, scale)
    loop, = opt.report.loops
    assert loop.strategy == "distributed" and loop.vectorized_runs == 1
    assert loop.original_runs == 0
