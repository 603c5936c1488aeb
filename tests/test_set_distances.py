"""``passes.set_distances.squared_distances``: cdist's value, the per-row loop's gradients (also
at NaN/inf), and a double backward equal to the loop's."""
from __future__ import annotations

import pytest
import torch

from passes.set_distances import squared_distances, transposed


def _loop(x, w):
    return torch.stack([((w - x[i]) ** 2).sum(-1) for i in range(len(x))])


def _inputs(dtype, special):
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(5, 3, generator=g, dtype=dtype), torch.randn(4, 3, generator=g, dtype=dtype)
    if special is not None:
        x[1, 2] = special
        w[3, 0] = special
    return x.requires_grad_(), w.requires_grad_()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("special", [None, float("nan"), float("inf"), -float("inf")])
def test_gradients_are_the_loops(dtype, special):
    x, w = _inputs(dtype, special)
    weights = torch.rand(5, 4, dtype=dtype, generator=torch.Generator().manual_seed(1))
    weights[0, 0] = 0  # a zero cotangent next to an infinite difference: 0 * inf, as the loop
    want = torch.autograd.grad((_loop(x, w) * weights).sum(), (x, w))
    got = torch.autograd.grad((squared_distances(x, w) * weights).sum(), (x, w))
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_double_backward_is_the_loops(dtype):
    x, w = _inputs(dtype, None)
    results = []
    for f in (_loop, squared_distances):
        gx, = torch.autograd.grad(f(x, w).pow(2).sum(), x, create_graph=True)
        results.append(torch.autograd.grad(gx.sum(), (x, w)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def _grads(f, x, w, weights):
    return torch.autograd.grad((f(x, w) * weights).sum(), (x, w))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(6))
def test_gradients_are_the_loops_at_many_nonfinite(dtype, seed):
    # NaN, +inf, -inf scattered over both sets (equal infinities meeting too), and cotangents
    # that are zero, negative, NaN: every combination the original meets, beside a finite rest
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(7, 3, generator=gen, dtype=dtype)
    w = torch.randn(6, 3, generator=gen, dtype=dtype)
    specials = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype)
    for t in (x, w):
        where = torch.rand(t.shape, generator=gen) < 0.15
        t[where] = specials[torch.randint(0, 3, (int(where.sum()),), generator=gen)]
    weights = torch.randn(7, 6, generator=gen, dtype=dtype)
    weights[torch.rand(7, 6, generator=gen) < 0.3] = 0
    weights[torch.rand(7, 6, generator=gen) < 0.05] = float("nan")
    x, w = x.requires_grad_(), w.requires_grad_()
    for a, b in zip(_grads(squared_distances, x, w, weights), _grads(_loop, x, w, weights)):
        torch.testing.assert_close(a, b, equal_nan=True)


@pytest.mark.parametrize("shapes", [((0, 3), (4, 3)), ((5, 3), (0, 3))])
def test_gradients_of_an_empty_set(shapes):
    x, w = (torch.full(s, float("nan")).requires_grad_() for s in shapes)
    broadcast = lambda x, w: ((w[None] - x[:, None]) ** 2).sum(-1)  # the loop's, for no point
    got, want = (_grads(f, x, w, torch.ones(shapes[0][0], shapes[1][0]))
                 for f in (squared_distances, broadcast))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cotangent", [float("inf"), -float("inf")])
def test_infinite_cotangent_is_the_loops(cotangent):
    # +inf/-inf by which coordinate is larger, NaN where they are equal, as the loop
    x = torch.tensor([[0.0, 1.0]], requires_grad=True)
    w = torch.tensor([[2.0, 1.0], [-1.0, 3.0]], requires_grad=True)
    weights = torch.tensor([[cotangent, 1.0]])
    for a, b in zip(_grads(squared_distances, x, w, weights), _grads(_loop, x, w, weights)):
        torch.testing.assert_close(a, b, equal_nan=True)


def test_no_coordinate():
    x, w = torch.zeros(3, 0, requires_grad=True), torch.zeros(2, 0, requires_grad=True)
    ones = torch.ones(3, 2)
    for a, b in zip(_grads(squared_distances, x, w, ones), _grads(_loop, x, w, ones)):
        assert a.shape == b.shape


def test_vmap_is_the_loops():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64)
    got = torch.autograd.grad((torch.vmap(squared_distances)(x, w) * weights).sum(), (x, w))
    loops = torch.stack([_loop(x[b], w[b]) for b in range(2)])
    want = torch.autograd.grad((loops * weights).sum(), (x, w))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("special", [None, float("nan"), float("inf"), -float("inf")])
def test_transposed_read_keeps_each_uses_gradient(dtype, special):
    # chamfer's two directions from one set of distances: each direction's gradients as if
    # computed apart (a row of infinite distances has a zero cotangent in the other direction:
    # 0 * inf is NaN there, a summed cotangent would not be)
    x, w = _inputs(dtype, special)
    gen = torch.Generator().manual_seed(2)
    there = torch.rand(5, 4, generator=gen, dtype=dtype)
    back = torch.rand(4, 5, generator=gen, dtype=dtype)
    back[:, 1] = 0  # x[1] holds the special value
    apart = (squared_distances(x, w) * there).sum() + (squared_distances(w, x) * back).sum()
    d = squared_distances(x, w)
    shared = (d * there).sum() + (transposed(d, w, x) * back).sum()
    torch.testing.assert_close(transposed(d, w, x), squared_distances(w, x), rtol=0, atol=0,
                               equal_nan=True)
    for a, b in zip(torch.autograd.grad(shared, (x, w)), torch.autograd.grad(apart, (x, w))):
        torch.testing.assert_close(a, b, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("special", [None, float("nan"), float("inf")])
def test_compiled_backward_is_the_loops(dtype, special):
    # under torch.compile the backward is one expression of all coordinates (no buffer), and
    # the transposed read is a view of the shared distances: the loops' gradients all the same
    x, w = _inputs(dtype, special)
    gen = torch.Generator().manual_seed(3)
    there, back = torch.rand(5, 4, generator=gen, dtype=dtype), torch.rand(4, 5, generator=gen, dtype=dtype)
    back[:, 1] = 0  # 0 * inf where x[1] holds the special value

    def shared(x, w):
        d = squared_distances(x, w)
        return (d * there).sum() + (transposed(d, w, x) * back).sum()
    got = torch.autograd.grad(torch.compile(shared, backend="aot_eager")(x, w), (x, w))
    want = torch.autograd.grad((_loop(x, w) * there).sum() + (_loop(w, x) * back).sum(), (x, w))
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("special", [None, float("nan"), float("inf")])
def test_distances_within_one_set_compile_to_one_graph(dtype, special):
    # squared_distances(x, x) (a batch-hard triplet's anchors against the batch): one graph
    # (an autograd.Function given one tensor twice breaks it), the loop's gradients summed
    x, _ = _inputs(dtype, special)
    weights = torch.rand(5, 5, generator=torch.Generator().manual_seed(4), dtype=dtype)
    explained = torch._dynamo.explain(lambda x: (squared_distances(x, x) * weights).sum())(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(lambda x: (squared_distances(x, x) * weights).sum(), backend="aot_eager")
    got, = torch.autograd.grad(compiled(x), x)
    want, = torch.autograd.grad((_loop(x, x) * weights).sum(), x)
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, equal_nan=True)



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_backward_reads_the_cotangent_computed_once(dtype):
    # the cotangent of a masked maximum (``masked_fill(...).amax(1)``) goes through an opaque
    # copy, so Inductor computes it once instead of in every coordinate's sum
    from torch._functorch.aot_autograd import aot_module_simplified
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(6, 4, generator=gen, dtype=dtype, requires_grad=True)
    same = torch.rand(6, 6, generator=gen) > 0.5
    graphs = []

    def keep(gm, _):
        graphs.append(gm)
        return gm
    compiled = torch.compile(
        lambda x: squared_distances(x, x).masked_fill(~same, -torch.inf).amax(1).sum(),
        backend=lambda gm, inputs: aot_module_simplified(gm, inputs, fw_compiler=keep,
                                                         bw_compiler=keep))
    got, = torch.autograd.grad(compiled(x), x)
    want, = torch.autograd.grad(_loop(x, x).masked_fill(~same, -torch.inf).amax(1).sum(), x)
    torch.testing.assert_close(got, want)
    assert any(n.target is torch.ops.optimize_loss.computed.default
               for g in graphs for n in g.graph.nodes)


def test_vmapped_compiled_backward_is_the_loops():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    f = torch.compile(lambda x, w: torch.vmap(lambda a, b: squared_distances(a, b).amax(1))(x, w).sum())
    got = torch.autograd.grad(f(x, w), (x, w))
    want = torch.autograd.grad(torch.stack([_loop(x[b], w[b]) for b in range(2)]).amax(2).sum(), (x, w))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
