"""``passes.set_distances.squared_distances``: cdist's value, the per-row loop's gradients (also
at NaN/inf), and a double backward equal to the loop's."""
from __future__ import annotations

import pytest
import torch

from passes.set_distances import squared_distances, transposed
from rewrite import optimize_loss
from rewrite.testing import assert_equivalent


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


def _backward_graphs(f, *args) -> list[torch.fx.GraphModule]:
    """The backward graphs AOTAutograd makes of ``f``, compiled and run backward once (the
    gradients in the inputs' ``.grad``)."""
    from torch._functorch.aot_autograd import aot_module_simplified
    backward = []

    def keep_backward(gm, _):
        backward.append(gm)
        return gm
    compiled = torch.compile(f, backend=lambda gm, inputs: aot_module_simplified(
        gm, inputs, fw_compiler=lambda gm, _: gm, bw_compiler=keep_backward))
    compiled(*args).backward()
    return backward


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_backward_reads_the_cotangent_computed_once(dtype):
    # the cotangent of a masked maximum (``masked_fill(...).amax(1)``) goes through an opaque
    # copy, so Inductor computes it once instead of in every coordinate's sum
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(6, 4, generator=gen, dtype=dtype, requires_grad=True)
    same = torch.rand(6, 6, generator=gen) > 0.5
    graphs = _backward_graphs(
        lambda x: squared_distances(x, x).masked_fill(~same, -torch.inf).amax(1).sum(), x)
    want, = torch.autograd.grad(_loop(x, x).masked_fill(~same, -torch.inf).amax(1).sum(), x)
    torch.testing.assert_close(x.grad, want)
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


def _compiled_targets(f, *args) -> set[str]:
    """The targets of every node Dynamo traces for ``f``, forward and backward subgraphs too."""
    explained = torch._dynamo.explain(f)(*args)
    assert explained.graph_break_count == 0, explained.break_reasons
    return {str(node.target) for graph in explained.graphs for module in graph.modules()
            if isinstance(module, torch.fx.GraphModule) for node in module.graph.nodes}


def test_compiled_forward_is_fusable_arithmetic():
    # under torch.compile, no cdist (an opaque library call to Inductor, which then cannot
    # fuse the distances into the reductions that read them, and writes them for nothing)
    x, w = _inputs(torch.float32, None)
    targets = _compiled_targets(lambda x, w: squared_distances(x, w).amin(1).sum(), x, w)
    assert not any("cdist" in target for target in targets), targets
    eager = _compiled_targets(lambda x, w: torch.cdist(x, w).amin(1).sum(), x, w)
    assert any("cdist" in target for target in eager)  # the check sees a cdist where one is


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("special", [None, float("nan"), float("inf"), -float("inf")])
def test_compiled_value_is_the_loops(dtype, special):
    # the original's arithmetic, bit for bit (cdist's square root rounds: its square is not),
    # NaN and infinities where the loop has them; the values of a transposed read too
    gen = torch.Generator().manual_seed(5)
    x, w = torch.randn(40, 3, generator=gen, dtype=dtype), torch.randn(30, 3, generator=gen, dtype=dtype)
    if special is not None:
        x[1, 2], w[3, 0] = special, special
    assert not torch.equal(torch.cdist(x, w).square(), _loop(x, w))  # the inputs tell them apart

    def both(x, w):
        d = squared_distances(x, w)
        return d, transposed(d, w, x)
    got, got_transposed = torch.compile(both, backend="aot_eager")(x, w)
    assert got.dtype == dtype
    torch.testing.assert_close(got, _loop(x, w), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(got_transposed, _loop(w, x), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eager_value_stays_cdists(dtype):
    # no change outside torch.compile: the direct cdist, squared (no [n, m, D] temporary)
    x, w = _inputs(dtype, None)
    want = torch.cdist(x, w, compute_mode="donot_use_mm_for_euclid_dist").square()
    torch.testing.assert_close(squared_distances(x, w), want, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("special", [None, "ties", float("nan"), float("inf")])
def test_compiled_chamfer_is_the_loops(dtype, special):
    # both directions of a chamfer loss from one set of distances under torch.compile: the
    # original's value and gradients (a gt point twice: every nearest-neighbour tie shared)
    from examples import chamfer
    pred, gt = (t.detach().to(dtype) for t in chamfer.make_inputs())
    if special == "ties":
        gt[1] = gt[0]
        pred[2] = gt[0]
    elif special is not None:
        pred[1, 2], gt[3, 0] = special, special
    optimized = optimize_loss(chamfer.naive, compile=True, backend="aot_eager", strict=True,
                              verify_compiled=False, keep_faster=False)
    assert_equivalent(chamfer.naive, optimized, pred.requires_grad_(), gt.requires_grad_())
    assert optimized.report.loops and all(loop.vectorized for loop in optimized.report.loops)


def _chamfer(x, w):
    d = squared_distances(x, w)
    return d.amin(1).mean() + transposed(d, w, x).amin(1).mean()


def test_compiled_backward_of_points_sums_along_the_points():
    # points in 3D: one [n, m] sum per coordinate, the cotangent computed where it is read (a
    # [D, n] sum of [D, n, m] terms was stored [n, D], and Inductor's loops ran along its 3
    # coordinates: the backward 4x the expert's at [2048, 2048, 3])
    x, w = _inputs(torch.float32, None)
    graphs = _backward_graphs(_chamfer, x, w)
    sums = [n for g in graphs for n in g.graph.nodes if n.target is torch.ops.aten.sum.dim_IntList]
    assert sums and all(n.args[0].meta["val"].dim() == 2 for n in sums), sums
    assert not any(n.target is torch.ops.optimize_loss.computed.default
                   for g in graphs for n in g.graph.nodes)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("coordinates", [1, 2])
@pytest.mark.parametrize("special", [None, float("nan"), -float("inf")])
def test_compiled_backward_of_few_coordinates_is_the_loops(dtype, coordinates, special):
    # the per-coordinate sums for points on a line and in a plane, one side without a gradient
    x, w = (t.detach()[:, :coordinates] for t in _inputs(dtype, None))
    if special is not None:
        x[1, -1], w[3, 0] = special, special
    x.requires_grad_()
    back = torch.rand(4, 5, generator=torch.Generator().manual_seed(7), dtype=dtype)
    back[:, 1] = 0  # 0 * inf where x[1] holds the special value

    def shared(x, w):
        d = squared_distances(x, w)
        return d.amin(1).sum() + (transposed(d, w, x) * back).sum()
    got, = torch.autograd.grad(torch.compile(shared, backend="aot_eager")(x, w), x)
    want, = torch.autograd.grad(_loop(x, w).amin(1).sum() + (_loop(w, x) * back).sum(), x)
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, equal_nan=True)


@pytest.mark.parametrize("special", ["ties", float("nan"), float("inf")])
def test_inductor_chamfer_is_the_loops(special):
    # the kernel Inductor makes of the per-coordinate sums: the original's value and gradients
    g = torch.Generator().manual_seed(8)
    x, w = torch.randn(33, 3, generator=g), torch.randn(20, 3, generator=g)
    if special == "ties":
        w[1], x[2] = w[0], w[0]
    else:
        x[1, 2], w[3, 0] = special, special
    x.requires_grad_(), w.requires_grad_()
    got = torch.autograd.grad(torch.compile(_chamfer)(x, w), (x, w))
    want = torch.autograd.grad(_loop(x, w).amin(1).mean() + _loop(w, x).amin(1).mean(), (x, w))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, equal_nan=True)
