"""``passes.full_extremes``: eager's full ``max()``/``min()`` per slice, value and gradient bit for
bit, batched and under vmap, at ties, NaN, inf and a NaN/inf/0 cotangent; double backward."""
from __future__ import annotations

import itertools

import pytest
import torch

from passes.full_extremes import max_of_all, max_of_selected, min_of_all, min_of_selected

INF, NAN = float("inf"), float("nan")
_ROWS = [list(r) for r in itertools.product([1., 3., NAN, INF, -INF], repeat=3)]


def _assert_exact(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("cotangent", [1.0, NAN, INF, 0.0])
@pytest.mark.parametrize("form", ["batched", "vmap"])
@pytest.mark.parametrize("largest", [True, False], ids=["max", "min"])
def test_value_and_gradient_are_eagers(largest, form, cotangent, dtype):
    fn, name = (max_of_all, "max") if largest else (min_of_all, "min")
    x = torch.tensor(_ROWS, dtype=dtype, requires_grad=True)
    g = torch.full((len(_ROWS),), cotangent, dtype=dtype)
    g[::2] = 2.0  # finite cotangents next to the non-finite ones
    want = torch.stack([getattr(r, name)() for r in x])
    got = fn(x, 1) if form == "batched" else torch.vmap(lambda r: fn(r, 0))(x)
    assert got.dtype == want.dtype
    _assert_exact(got, want)
    _assert_exact(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0])


def test_several_reduced_dims_and_a_0d_item():
    x = torch.tensor([[[1., NAN], [3., 3.]], [[2., 0.], [2., -1.]]], requires_grad=True)
    want = torch.stack([r.max() for r in x])
    got = max_of_all(x, 1)
    _assert_exact(got, want)
    _assert_exact(torch.autograd.grad(got.sum(), x)[0], torch.autograd.grad(want.sum(), x)[0])
    v = torch.tensor([NAN, 2.0], requires_grad=True)
    _assert_exact(max_of_all(v, 1), v)


def test_integer_values_take_amax():
    assert max_of_all(torch.tensor([[1, 5], [7, 2]]), 1).tolist() == [5, 7]


def test_double_backward_is_eagers():
    x = torch.tensor([[1., 3., 3.], [NAN, 2., NAN]], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([2., 3.], dtype=torch.float64, requires_grad=True)
    grads = []
    for got in (torch.stack([r.max() for r in x]), max_of_all(x, 1)):
        first, = torch.autograd.grad(got, x, g, create_graph=True)
        grads.append(torch.autograd.grad((first * torch.arange(6.).view(2, 3)).sum(), g)[0])
    _assert_exact(*grads)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("largest", [True, False], ids=["max", "min"])
def test_vmapped_under_torch_compile_is_eagers(largest, backend):
    # Dynamo inlines an autograd.Function's forward under vmap and ignores its backward: a NaN
    # element took 0 where eager's full max gives it the gradient
    fn, name = (max_of_all, "max") if largest else (min_of_all, "min")
    x = torch.tensor(_ROWS, requires_grad=True)
    compiled = torch.compile(lambda x: torch.vmap(lambda r: fn(r, 0))(x), backend=backend)
    want = torch.stack([getattr(r, name)() for r in x])
    got = compiled(x)
    _assert_exact(got, want)
    g = torch.arange(1.0, len(_ROWS) + 1)
    _assert_exact(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0])


@pytest.mark.parametrize("cotangent", [1.0, NAN, INF])
@pytest.mark.parametrize("largest", [True, False], ids=["max", "min"])
def test_batched_under_torch_compile_is_eagers(largest, cotangent):
    # the operator's backward traced into AOTAutograd's joint graph (whose partitioner may move
    # the comparisons into the forward): eager's split of ties, NaN's share and the fill of 0
    fn, name = (max_of_all, "max") if largest else (min_of_all, "min")
    x = torch.tensor(_ROWS, requires_grad=True)
    compiled = torch.compile(lambda x: fn(x * 1, 1), backend="aot_eager")
    want = torch.stack([getattr(r, name)() for r in x])
    got = compiled(x)
    _assert_exact(got, want)
    g = torch.full((len(_ROWS),), cotangent)
    g[::2] = 2.0
    _assert_exact(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0])


# Selections of the rows of ``_ROWS``: every subset of the three elements, the empty one aside.
_MASKS = [list(m) for m in itertools.product([True, False], repeat=3) if any(m)]


def _selected_rows(dtype):
    pairs = [(r, m) for r in _ROWS for m in _MASKS]
    x = torch.tensor([r for r, _ in pairs], dtype=dtype, requires_grad=True)
    return x, torch.tensor([m for _, m in pairs])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("cotangent", [1.0, NAN, INF, 0.0])
@pytest.mark.parametrize("form", ["batched", "vmap", "compiled"])
@pytest.mark.parametrize("largest", [True, False], ids=["max", "min"])
def test_selected_value_and_gradient_are_eagers(largest, form, cotangent, dtype):
    fn, name = (max_of_selected, "max") if largest else (min_of_selected, "min")
    x, mask = _selected_rows(dtype)
    g = torch.full((len(x),), cotangent, dtype=dtype)
    g[::2] = 2.0
    want = torch.stack([getattr(r[m], name)() for r, m in zip(x, mask)])
    got = {"batched": lambda: fn(x, mask, 1),
           "vmap": lambda: torch.vmap(lambda r, m: fn(r, m, 0))(x, mask),
           "compiled": lambda: torch.compile(lambda x, m: fn(x * 1, m, 1),
                                             backend="aot_eager")(x, mask)}[form]()
    assert got.dtype == want.dtype
    _assert_exact(got, want)
    _assert_exact(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0])


def test_selected_keeps_a_negative_zero_and_gives_nothing_selected_0():
    x = torch.tensor([[-0.0, -1.0], [NAN, 5.0]], requires_grad=True)
    mask = torch.tensor([[True, True], [False, False]])
    got = max_of_selected(x, mask, 1)
    _assert_exact(got, torch.tensor([-0.0, 0.0]))
    assert torch.signbit(got[0])
    _assert_exact(torch.autograd.grad(got.sum(), x)[0], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


def test_selected_integers_take_amax_and_a_mask_not_varying_under_vmap():
    assert min_of_selected(torch.tensor([[1, 5], [7, 2]]),
                           torch.tensor([[False, True], [True, True]]), 1).tolist() == [5, 2]
    x = torch.tensor([[1., 3., 3.], [4., 2., 4.]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([True, True, False])
    got = torch.vmap(lambda r: max_of_selected(r, mask, 0))(x)
    want = torch.stack([r[mask].max() for r in x])
    _assert_exact(got, want)
    _assert_exact(torch.autograd.grad(got.sum(), x)[0], torch.autograd.grad(want.sum(), x)[0])


def test_selected_double_backward_is_eagers():
    x = torch.tensor([[1., 3., 3.], [NAN, 2., NAN], [5., 1., 7.]], dtype=torch.float64,
                     requires_grad=True)
    mask = torch.tensor([[True, True, True], [True, False, True], [True, True, False]])
    g = torch.tensor([2., 3., 4.], dtype=torch.float64, requires_grad=True)
    grads = []
    for got in (torch.stack([r[m].max() for r, m in zip(x, mask)]), max_of_selected(x, mask, 1)):
        first, = torch.autograd.grad(got, x, g, create_graph=True)
        grads.append(torch.autograd.grad((first * torch.arange(9.).view(3, 3)).sum(), g)[0])
    _assert_exact(*grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("form", ["batched", "vmap"])
@pytest.mark.parametrize("largest", [True, False], ids=["max", "min"])
def test_compiled_forward_is_the_plain_reduction(largest, form, dtype):
    # the graph a compiler gets computes amax/amin (Inductor fuses it; the operator was an
    # opaque call), the backward graph still eager's split of ties and NaN's share
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd
    torch._dynamo.reset()  # else a frame compiled by an earlier test is reused: no graphs here
    graphs = []

    def keep(gm, _inputs):
        graphs.append({str(node.target) for node in gm.graph.nodes})
        return make_boxed_func(gm.forward)
    fn, name = (max_of_all, "max") if largest else (min_of_all, "min")
    x = torch.tensor(_ROWS, dtype=dtype, requires_grad=True)
    call = (lambda x: fn(x * 1, 1)) if form == "batched" else torch.vmap(lambda r: fn(r * 1, 0))
    got = torch.compile(call, backend=aot_autograd(fw_compiler=keep, bw_compiler=keep))(x)
    want = torch.stack([getattr(r, name)() for r in x])
    g = torch.full((len(_ROWS),), NAN, dtype=dtype)
    g[::2] = 2.0
    _assert_exact(got, want)
    _assert_exact(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0])
    forward, backward = graphs
    assert f"aten.a{name}.default" in forward and not any("full_extreme" in t for t in forward)
    assert "aten.where.self" in backward


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("form", ["batched", "vmap"])
@pytest.mark.parametrize("largest", [True, False], ids=["max", "min"])
def test_compiled_selected_forward_has_no_opaque_call(largest, form, dtype):
    # the forward graph a compiler gets fills -0.0 where the operator stood (an opaque call
    # split Inductor's kernels around it: one more C++ compile each at the first call); the
    # backward graph still splits the gradient among the selected ties and NaNs as eager does
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd
    torch._dynamo.reset()  # else a frame compiled by an earlier test is reused: no graphs here
    graphs = []

    def keep(gm, _inputs):
        graphs.append({str(node.target) for node in gm.graph.nodes})
        return make_boxed_func(gm.forward)
    fn, name = (max_of_selected, "max") if largest else (min_of_selected, "min")
    x, mask = _selected_rows(dtype)
    call = (lambda x, m: fn(x * 1, m, 1)) if form == "batched" else \
        torch.vmap(lambda r, m: fn(r * 1, m, 0))
    got = torch.compile(call, backend=aot_autograd(fw_compiler=keep, bw_compiler=keep))(x, mask)
    want = torch.stack([getattr(r[m], name)() for r, m in zip(x, mask)])
    g = torch.full((len(x),), NAN, dtype=dtype)
    g[::2] = 2.0
    _assert_exact(got, want)
    _assert_exact(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0])
    forward, backward = graphs
    assert not any("selected_ties" in t for t in forward)
    assert "aten.where.self" in backward
