"""fuse_loss_idioms: loss idioms become the fused PyTorch loss behind a guard, same value and grads."""
from __future__ import annotations

import ast
import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from passes import fuse_loss_idioms
from passes.ast_tools import Namer, PassContext, unparse
from rewrite import Report, assert_equivalent, optimize_loss
from rewrite.tools.host_syncs import count_host_syncs
from tests.helpers import FRONTEND, load_module

SOURCE = '''
import torch
import torch.nn.functional as F

def mse_mean(a, b):
    return ((a - b) ** 2).mean()

def mse_sum_pow(a, b):
    return (a - b).pow(2).sum()

def mse_mul(a, b):
    return ((a - b) * (a - b)).mean()

def mse_temp(a, b):
    t = (a - b) ** 2
    return t.mean() * len(t)

def l1_sum(a, b):
    return (a - b).abs().sum()

def ce_sum(x, y):
    return torch.logsumexp(x, dim=1).sum(0) - x[torch.arange(len(x), device=x.device), y].sum(0)

def ce_mean(x, y, n):
    return (torch.logsumexp(x, dim=1).sum(0) - x[torch.arange(len(x), device=x.device), y].sum(0)) / n

def nll_weighted(lp, y, cw):
    w = cw[y]
    return (-w * lp[torch.arange(len(lp), device=lp.device), y]).sum(0) / w.sum()

def cube(a, b):
    return ((a - b) ** 3).mean()

def row_mean(a, b):
    return ((a - b) ** 2).mean(1)

def other_operands(a, b):
    return ((a - b) * (a - 2 * b)).mean()

def impure_operand(a, b):
    return ((a.exp() - b) ** 2).mean()

def computed_operand(a, b):
    return ((a - (b + 1)) ** 2).mean()

def temp_next_to_walrus(a, b):
    t = (a - b) ** 2
    return t.mean() + (b := a).sum()

def temp_next_to_pure_calls(a, b):
    t = (a - b) ** 2
    return t.mean() + a.exp().clamp_max(2).sum()

def temp_not_just_before(a, b):
    t = (a - b) ** 2
    a = a * 2
    return t.mean() + a.sum()

def temp_operand_mutated(a, b):
    t = (a - b) ** 2
    return t.mean() + b.mul_(2).sum()

def temp_rebinds_operand(t, b):
    t = (t - b) ** 2
    return t.mean()

def temp_in_loop_test(a, b):
    t = (a - b) ** 2
    while t.mean() > 1:
        a = a / 2
        t = (a - b) ** 2
    return t.sum()

def ce_other_dim(x, y):
    return torch.logsumexp(x, dim=0).sum(0) - x[torch.arange(len(x), device=x.device), y].sum(0)

def smoothed_ce(x, y, eps=0.1):
    c = x.shape[1]
    s = F.one_hot(y, c).to(x.dtype) * (1 - eps) + eps / c
    return -(s * F.log_softmax(x, dim=1)).sum(1)

def smoothed_weighted_ce(x, y, cw, eps=0.1):
    n, c = x.shape
    s = F.one_hot(y, c).to(x.dtype) * (1 - eps) + eps / c
    return -(s * cw * F.log_softmax(x, dim=1)).sum(dim=1).sum() / cw[y].sum()

def smoothed_other_eps(x, y, eps=0.1):
    c = x.shape[1]
    s = F.one_hot(y, c).to(x.dtype) * (1 - eps) + 0.2 / c
    return -(s * F.log_softmax(x, dim=1)).sum(1)

def smoothed_other_dim(x, y, eps=0.1):
    c = x.shape[1]
    s = F.one_hot(y, c).to(x.dtype) * (1 - eps) + eps / c
    return -(s * F.log_softmax(x, dim=0)).sum(1)

def operand_changed_later(x, y, centers):
    loss = 0
    for i in range(len(y)):
        c = centers[y[i]]
        loss += ((x[i] - c) ** 2).sum()
        centers[y[i]] = 0.9 * centers[y[i]] + 0.1 * x[i].detach()
    return loss

def operand_updated_later(x, y, centers):
    loss = 0
    for i in range(len(y)):
        c = centers[y[i]]
        loss += ((x[i] - c) ** 2).sum()
        c += 0.1 * (x[i].detach() - c)
    return loss

def nll_weight_not_just_before(lp, y, cw):
    w = cw[y]
    cw = cw * 2
    return (-w * lp[torch.arange(len(lp), device=lp.device), y]).sum(0)
'''

FUSED = ["mse_mean", "mse_sum_pow", "mse_mul", "mse_temp", "ce_sum", "ce_mean", "nll_weighted",
         "smoothed_ce", "smoothed_weighted_ce"]
UNCHANGED = ["l1_sum",  # F.l1_loss measured no faster
             "cube", "row_mean", "other_operands", "impure_operand", "computed_operand",
             "temp_next_to_walrus", "temp_not_just_before",
             "temp_operand_mutated", "temp_rebinds_operand", "temp_in_loop_test", "ce_other_dim",
             "nll_weight_not_just_before", "smoothed_other_eps", "smoothed_other_dim",
             "operand_changed_later", "operand_updated_later"]
SAME = ("isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape"
        " and a.dtype == b.dtype and a.dtype in (torch.float32, torch.float64)")


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("idioms"), SOURCE)


def _source(fn_name: str) -> ast.Module:
    module = ast.parse(SOURCE)
    return ast.Module([f for f in module.body if getattr(f, "name", None) == fn_name], [])


def _run_pass(tree: ast.Module, torch_name: str = "torch") -> str:
    ctx = PassContext("user.py", "f", Namer.for_tree(tree), Report("f", "user.py", 1),
                      torch_name=torch_name, **FRONTEND)
    return unparse(fuse_loss_idioms.transform(tree, ctx))


def _golden(source: str) -> str:
    return ast.unparse(ast.parse(source))


def test_golden_mse_mean():
    assert _run_pass(_source("mse_mean")) == _golden(
        "def mse_mean(a, b):\n"
        f"    return torch.nn.functional.mse_loss(a, b, reduction='mean') if {SAME}"
        " else ((a - b) ** 2).mean()")


def test_golden_mse_through_temporary():  # t read again after: computed as written
    assert _run_pass(_source("mse_temp")) == _golden(
        "def mse_temp(a, b):\n    t = (a - b) ** 2\n"
        f"    return (torch.nn.functional.mse_loss(a, b, reduction='mean') if {SAME}"
        " else t.mean()) * len(t)")


def test_golden_temporary_trusted_next_to_calls_without_effects():
    assert _run_pass(_source("temp_next_to_pure_calls")) == _golden(
        f"def temp_next_to_pure_calls(a, b):\n    t = None if {SAME} else (a - b) ** 2\n"
        f"    return (torch.nn.functional.mse_loss(a, b, reduction='mean') if {SAME}"
        " else t.mean()) + a.exp().clamp_max(2).sum()")


LABELS = ("isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)"
          " and x.dtype in (torch.float32, torch.float64) and x.dim() == 2 and y.dim() == 1"
          " and y.dtype in (torch.int64, torch.int32) and y.shape[0] == x.shape[0]")


def test_golden_cross_entropy():
    assert _run_pass(_source("ce_sum")) == _golden(
        "def ce_sum(x, y):\n"
        f"    return _cross_entropy(x, _labels(y, x.shape[1])).sum(0) if {LABELS}"
        " else torch.logsumexp(x, dim=1).sum(0) - x[torch.arange(len(x), device=x.device), y].sum(0)")


def test_golden_cross_entropy_mean():
    rows = "x[torch.arange(len(x), device=x.device), y]"
    assert _run_pass(_source("ce_mean")) == _golden(
        "def ce_mean(x, y, n):\n"
        f"    return _cross_entropy(x, _labels(y, x.shape[1])).mean(0) if {LABELS} and n == x.shape[0]"
        f" else (torch.logsumexp(x, dim=1).sum(0) - {rows}.sum(0)) / n")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", ["ce_sum", "ce_mean"])
def test_cross_entropy_at_infinite_and_nan_logits(user, name, dtype):
    # rows with +inf (one at the label), NaN, -inf, all -inf, a tie: the original's inf and NaN
    # values and its gradients, NaN only at the +inf logits of a +inf row
    INF, NAN = float("inf"), float("nan")
    x = torch.tensor([[0.5, INF, 0.0], [1.0, 1.0, -INF], [INF, 0.2, INF], [NAN, INF, 0.0],
                      [-INF, -INF, -INF], [0.3, -0.1, 2.0]], dtype=dtype, requires_grad=True)
    y = torch.tensor([0, 1, 2, 1, 0, 2])
    extra = (len(x),) if name == "ce_mean" else ()
    assert_equivalent(getattr(user, name), _fast(user, name), x, y, *extra)
    assert_equivalent(getattr(user, name), _fast(user, name), x.detach()[[1, 5]].requires_grad_(),
                      y[[1, 5]], *(2,)[:len(extra)])


def test_golden_weighted_nll():
    guard = LABELS.replace("x", "lp") + (
        " and isinstance(cw, torch.Tensor) and not cw.requires_grad and cw.dtype == lp.dtype"
        " and cw.dim() == 1 and cw.shape[0] == lp.shape[1]")
    assert _run_pass(_source("nll_weighted")) == _golden(
        "def nll_weighted(lp, y, cw):\n    w = cw[y]\n"
        f"    return (torch.nn.functional.nll_loss(lp, _labels(y, lp.shape[1]), weight=cw, reduction='sum') if {guard}"
        " else (-w * lp[torch.arange(len(lp), device=lp.device), y]).sum(0)) / w.sum()")


def test_golden_torch_alias():
    tree = ast.parse("def f(a, b):\n    return ((a - b) ** 2).sum()")
    out = _run_pass(tree, torch_name="th")
    assert out.startswith("def f(a, b):\n    return th.nn.functional.mse_loss(a, b, reduction='sum')")
    assert "torch" not in out


def test_golden_smoothed_cross_entropy():
    guard = (LABELS.replace("y.dtype in (torch.int64, torch.int32)", "y.dtype == torch.int64")
             + " and F is torch.nn.functional and c == x.shape[1] and isinstance(eps, float)"
             " and 0.0 <= eps <= 1.0")
    smooth = f"s = None if {guard} else F.one_hot(y, c).to(x.dtype) * (1 - eps) + eps / c"
    assert _run_pass(_source("smoothed_ce")) == _golden(
        f"def smoothed_ce(x, y, eps=0.1):\n    c = x.shape[1]\n    {smooth}\n"
        "    return torch.nn.functional.cross_entropy(x, _classes(y, c), label_smoothing=eps,"
        f" reduction='none') if {guard} else -(s * F.log_softmax(x, dim=1)).sum(1)")


@pytest.mark.parametrize("name", UNCHANGED)
def test_golden_unchanged(name):
    assert _run_pass(_source(name)) == _golden(unparse(_source(name)))


@pytest.mark.parametrize("name", FUSED + UNCHANGED)
def test_second_run_changes_nothing(name):
    once = _run_pass(_source(name))
    assert _run_pass(ast.parse(once)) == once


@functools.cache
def _fast(user, name):
    fast = optimize_loss(getattr(user, name), compile=False)
    assert "fuse_loss_idioms" in fast.report.passes_run
    return fast


def _pair(gen, dtype, shape_b=None, dtype_b=None):
    a = torch.randn(5, 4, generator=gen, dtype=dtype, requires_grad=True)
    b = torch.randn(shape_b or (5, 4), generator=gen, dtype=dtype_b or dtype, requires_grad=True)
    return a, b


def _labels(gen, n=6, c=5, low=0, dtype=torch.int64):
    return torch.randint(low, c, (n,), generator=gen).to(dtype)


MSE_LIKE = ["mse_mean", "mse_sum_pow", "mse_mul", "mse_temp"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", MSE_LIKE)
def test_equivalent_elementwise(user, name, dtype):
    fast = _fast(user, name)
    assert "torch.nn.functional." in fast.report.rewritten_source
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        assert_equivalent(getattr(user, name), fast, *_pair(gen, dtype))  # fused
        assert_equivalent(getattr(user, name), fast, *_pair(gen, dtype, (1, 4)))  # broadcasting
        assert_equivalent(getattr(user, name), fast, *_pair(gen, dtype, (4,)))
        assert_equivalent(getattr(user, name), fast, *_pair(gen, dtype, dtype_b=torch.float16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", ["operand_changed_later", "operand_updated_later"])
def test_an_operand_changed_in_place_later_keeps_the_original_backward(user, dtype, name):
    # `c` is a view of `centers` (a 0-d index selects), written after the idiom: mse_loss would
    # save it and its backward raise ("modified by an inplace operation"); the idiom's does not
    fast = optimize_loss(getattr(user, name), compile=False, keep_faster=False)
    x = torch.randn(6, 3, dtype=dtype, requires_grad=True)
    for y in ([0, 1, 1, 3, 1, 0], [0, 1, 2, 3, 0, 1]):
        assert_equivalent(getattr(user, name), fast, x, torch.tensor(y),
                          torch.randn(4, 3, dtype=dtype))
    assert "mse_loss" not in fast.report.rewritten_source


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_equivalent_cross_entropy(user, dtype):
    fast = _fast(user, "ce_sum")
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(6, 5, generator=gen, dtype=dtype, requires_grad=True)
        assert_equivalent(user.ce_sum, fast, x, _labels(gen))
        assert_equivalent(user.ce_sum, fast, x, _labels(gen, dtype=torch.int32))
        assert_equivalent(user.ce_sum, fast, x, _labels(gen, low=-5))  # negative labels wrap
        assert_equivalent(user.ce_sum, fast, x, _labels(gen, n=1))  # one label broadcasts
        assert_equivalent(user.ce_sum, fast, x[:0], _labels(gen, n=0))  # empty batch
        bad = _labels(gen)
        bad[2] = 5  # out of range: the original's IndexError, never a value
        with pytest.raises(IndexError) as want:
            user.ce_sum(x, bad)
        with pytest.raises(IndexError) as got:
            fast(x, bad)
        assert str(got.value) == str(want.value)
        assert not count_host_syncs(fast, x, _labels(gen))  # the check stays on the device
        mean = _fast(user, "ce_mean")
        assert_equivalent(user.ce_mean, mean, x, _labels(gen), 6)  # fused
        assert_equivalent(user.ce_mean, mean, x, _labels(gen), 4)  # not a mean: as written
        assert_equivalent(user.ce_mean, mean, x, _labels(gen), torch.tensor(6))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_equivalent_weighted_nll(user, dtype):
    fast = _fast(user, "nll_weighted")
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        lp = torch.randn(6, 5, generator=gen, dtype=dtype).log_softmax(1).requires_grad_()
        cw = torch.rand(5, generator=gen, dtype=dtype) + 0.5
        assert_equivalent(user.nll_weighted, fast, lp, _labels(gen), cw)
        assert_equivalent(user.nll_weighted, fast, lp, _labels(gen, dtype=torch.int32), cw)
        assert_equivalent(user.nll_weighted, fast, lp, _labels(gen, low=-5), cw)
        assert_equivalent(user.nll_weighted, fast, lp, _labels(gen), cw.requires_grad_())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_equivalent_smoothed_cross_entropy(user, dtype):
    plain, weighted = _fast(user, "smoothed_ce"), _fast(user, "smoothed_weighted_ce")
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(6, 5, generator=gen, dtype=dtype, requires_grad=True)
        cw = torch.rand(5, generator=gen, dtype=dtype) + 0.5
        y = _labels(gen)
        for eps in (0.1, 0.0, 1.0):
            assert_equivalent(user.smoothed_ce, plain, x, y, eps)
            assert_equivalent(user.smoothed_weighted_ce, weighted, x, y, cw, eps)
        assert_equivalent(user.smoothed_ce, plain, x, y, torch.tensor(0.1, dtype=dtype))  # as written
        assert_equivalent(user.smoothed_weighted_ce, weighted, x, y, cw.requires_grad_())  # as written
        assert_equivalent(user.smoothed_ce, plain, x[:0], _labels(gen, n=0))  # empty batch
        # the label check stays on the device: only the syncs one_hot makes in both
        args = (x, y, cw.detach())
        assert count_host_syncs(weighted, *args) == count_host_syncs(user.smoothed_weighted_ce, *args)
        for bad in (-1, 5):  # one_hot's error, never a value
            y_bad = y.clone()
            y_bad[2] = bad
            with pytest.raises(RuntimeError):
                user.smoothed_ce(x, y_bad)
            with pytest.raises(RuntimeError):
                plain(x, y_bad)


def test_out_of_range_labels_raise_as_written(user):
    fast = _fast(user, "ce_sum")
    x, y = torch.randn(3, 4), torch.tensor([0, 4, 1])
    with pytest.raises(IndexError):
        user.ce_sum(x, y)
    with pytest.raises(IndexError):
        fast(x, y)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 6), c=st.integers(1, 5), low=st.sampled_from([0, -1]),
       label_dtype=st.sampled_from([torch.int64, torch.int32]),
       dtype=st.sampled_from([torch.float32, torch.float64]), broadcast=st.booleans(),
       seed=st.integers(0, 2**16))
def test_hypothesis_random_shapes_and_labels(user, n, c, low, label_dtype, dtype, broadcast, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=gen, dtype=dtype, requires_grad=True)
    y = torch.randint(low, c, (n,), generator=gen).to(label_dtype)  # -1 wraps: guard false
    other = torch.randn((1, c) if broadcast else (n, c), generator=gen, dtype=dtype,
                        requires_grad=True)
    for name in MSE_LIKE:
        assert_equivalent(getattr(user, name), _fast(user, name), x, other)
    assert_equivalent(user.ce_sum, _fast(user, "ce_sum"), x, y)
    if n:
        assert_equivalent(user.ce_mean, _fast(user, "ce_mean"), x, y, n)
    cw = torch.rand(c, generator=gen, dtype=dtype) + 0.5
    assert_equivalent(user.nll_weighted, _fast(user, "nll_weighted"), x.log_softmax(1), y, cw)
