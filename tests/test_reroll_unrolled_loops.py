"""The FX pass reroll_unrolled_loops on Dynamo's graphs: golden node counts before/after (with
loops that must stay unrolled, and why), equivalence of values and every gradient through
``rewrite.backend(inner="aot_eager")``, and pass invariants."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from examples._check import load
from passes import reroll_unrolled_loops
from passes.meta_keys import NOT_REROLLED_BECAUSE, REROLLED
from passes.report import Report
from rewrite import assert_equivalent, backend


def dynamo_graph(fn, *inputs) -> torch.fx.GraphModule:
    """The one graph Dynamo hands a backend for ``fn(*inputs)``."""
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch.compile(fn, backend=capture)(*inputs)
    (gm,) = graphs
    return gm


def calls(gm: torch.fx.GraphModule) -> int:
    return sum(n.op.startswith("call_") for n in gm.graph.nodes)


def rerolled(fn, *inputs) -> tuple[int, int, torch.fx.GraphModule]:
    """(calls before, calls after, graph after) of the pass on ``fn``'s Dynamo graph."""
    gm = dynamo_graph(fn, *inputs)
    before = calls(gm)
    result = reroll_unrolled_loops.run(gm)
    assert result.modified == (calls(result.graph_module) != before)
    return before, calls(result.graph_module), result.graph_module


def inputs(b=8, d=5, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(b, d, generator=g, dtype=dtype).requires_grad_()
    return pred, torch.randn(b, d, generator=g, dtype=dtype), torch.rand(d, generator=g, dtype=dtype)


# -- loops that are re-rolled ------------------------------------------------------------------
def per_sample_mse(pred, target, w):
    loss = 0
    for i in range(pred.shape[0]):
        loss += ((pred[i] - target[i]) ** 2).mean()
    return loss / pred.shape[0]


def weighted_rows_added_on_the_left(pred, target, w):
    loss = F.l1_loss(pred, target)  # the chain starts from a tensor: it stays the init
    for i in range(pred.shape[0]):
        loss = (w * (pred[i] - target[i]).abs()).sum() + loss
    return loss


def builtin_sum_of_rows(pred, target, w):
    return sum(F.smooth_l1_loss(pred[i], target[i]) for i in range(pred.shape[0]))


def stacked_rows(pred, target, w):
    return torch.stack([torch.logsumexp(pred[i] * target[i], 0) for i in range(pred.shape[0])]).mean()


def concatenated_columns(pred, target, w):
    cols = [(pred[:, j] - target[:, j]).unsqueeze(1) ** 2 for j in range(pred.shape[1])]
    return torch.cat(cols, dim=-1).sum(1).mean()


def every_other_row_by_select(pred, target, w):
    loss = 0
    for i in range(0, pred.shape[0], 2):
        loss += (pred.select(0, i) * target.select(0, i)).sum()
    return loss


def row_max_over_a_dim(pred, target, w):
    return sum((pred[i] - target[i]).max(0).values for i in range(pred.shape[0]))


# (function, calls in Dynamo's graph, calls after) at B=8, D=5.
REROLLED_CASES = [
    # 8 x (2 getitem, sub, pow, mean) + 8 links + div -> vmap, sum, 0 + sum, div
    (per_sample_mse, 49, 4),
    # l1_loss + 8 x (2 getitem, sub, abs, mul, sum) + 8 links -> l1_loss, vmap, sum, add
    (weighted_rows_added_on_the_left, 57, 4),
    # 8 x (2 getitem, smooth_l1_loss) + 8 links (0 + ... first) -> vmap, sum, 0 + sum
    (builtin_sum_of_rows, 32, 3),
    # 8 x (2 getitem, mul, logsumexp) + stack + mean -> vmap (the stack), mean
    (stacked_rows, 34, 2),
    # 5 x (2 getitem, sub, unsqueeze, pow) + cat, sum, mean -> vmap, flatten, sum, mean
    (concatenated_columns, 28, 4),
    # 4 x (2 select, mul, sum) + 4 links -> pred[0:7:2], target[0:7:2], vmap, sum, add
    (every_other_row_by_select, 20, 5),
    # 8 x (2 getitem, sub, max, values) + 8 links -> vmap, sum, add
    (row_max_over_a_dim, 48, 3),
]


@pytest.mark.parametrize("fn, before, after", REROLLED_CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_golden_node_counts_of_rerolled_loops(fn, before, after):
    got_before, got_after, gm = rerolled(fn, *inputs())
    assert (got_before, got_after) == (before, after)
    assert sum(REROLLED in n.meta for n in gm.graph.nodes) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fn", [c[0] for c in REROLLED_CASES], ids=lambda f: f.__name__)
def test_rerolled_loops_keep_values_and_gradients(fn, dtype):
    report = Report(fn.__name__, __file__, 0)
    compiled = torch.compile(fn, backend=backend(inner="aot_eager", report=report))
    assert_equivalent(fn, compiled, *inputs(dtype=dtype))
    assert any(note.startswith("re-rolled") for note in report.notes)


def test_class_loop_over_dim_1_with_helpers_is_rerolled():
    example = load("examples/dice_tversky.py")
    args = example.make_inputs("small")
    before, after, gm = rerolled(example.naive, *args)
    # softmax, one_hot, permute, to + 4 classes x 31 nodes + 4 links + div: the class loop
    # becomes one vmap over dim 1 of probs and onehot, sum, 0 + sum.
    assert (before, after) == (133, 8)
    compiled = torch.compile(example.naive, backend=backend(inner="aot_eager"))
    assert_equivalent(example.naive, compiled, *args)


def rows_then_columns(pred, target, w):  # the second chain starts from the first one's sum
    loss = 0
    for i in range(pred.shape[0]):
        loss += (pred[i] * target[i]).sum()
    for j in range(pred.shape[1]):
        loss += (pred[:, j] - target[:, j]).abs().mean()
    return loss


def test_two_loops_one_after_the_other_are_both_rerolled():
    before, after, gm = rerolled(rows_then_columns, *inputs())
    # 8 x 4 + 8 links, 5 x 5 + 5 links -> two (vmap, sum, add)
    assert (before, after) == (70, 6)
    assert sum(REROLLED in n.meta for n in gm.graph.nodes) == 2
    compiled = torch.compile(rows_then_columns, backend=backend(inner="aot_eager"))
    assert_equivalent(rows_then_columns, compiled, *inputs(dtype=torch.float64))


def nested_loops(pred, target, w):
    loss = 0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            loss += (pred[i, j] - target[i, j]) ** 2
    return loss


def test_nested_loops_are_rerolled_only_in_runs_where_one_index_changes():
    before, after, gm = rerolled(nested_loops, *inputs())
    # One chain of 8 x 5 copies; a copy differing from the top's in both i and j ends a run:
    # runs of >= 4 copies of one row re-roll, the rest stays, with a reason.
    assert (before, after) == (200, 140)
    assert any("differs from" in n.meta.get(NOT_REROLLED_BECAUSE, "") for n in gm.graph.nodes)
    compiled = torch.compile(nested_loops, backend=backend(inner="aot_eager"))
    assert_equivalent(nested_loops, compiled, *inputs(dtype=torch.float64))


def test_ties_nan_and_inf_keep_values_and_gradients():
    pred = torch.tensor([[1., 1., 0.], [2., 2., 2.], [0., float("inf"), 3.], [1., 0., 1.],
                         [float("nan"), 0., 1.]], requires_grad=True)
    target = torch.tensor([[1., 1., 1.], [0., 2., 2.], [3., 3., 3.], [1., 1., 1.], [0., 0., 0.]])

    def loss(pred, target):
        return sum(torch.maximum(pred[i], target[i]).amax() + (pred[i] - target[i]).abs().sum()
                   for i in range(pred.shape[0]))

    assert rerolled(loss, pred, target)[1] == 3
    compiled = torch.compile(loss, backend=backend(inner="aot_eager"))
    assert_equivalent(loss, compiled, pred, target)


def per_row_bce(logits, target):
    total = 0
    for i in range(logits.shape[0]):
        total = total + F.binary_cross_entropy_with_logits(logits[i], target[i])
    return total


def per_row_ce(logits, labels):
    total = 0
    for i in range(logits.shape[0]):
        total = total + F.cross_entropy(logits[i], labels[i])
    return total


def test_the_body_calls_the_registrys_vmap_forms():
    # functorch's binary_cross_entropy_with_logits has a NaN gradient at an infinite logit,
    # where eager's is finite: the re-rolled body calls bce_with_logits, as a vectorized body does
    logits = torch.randn(6, 5, dtype=torch.float64)
    logits[1, 2], logits[2, 0] = float("inf"), -float("inf")
    target = torch.rand(6, 5, dtype=torch.float64)
    gm = rerolled(per_row_bce, logits, target)[2]
    assert any(REROLLED in n.meta for n in gm.graph.nodes)
    compiled = torch.compile(per_row_bce, backend=backend(inner="aot_eager"))
    assert_equivalent(per_row_bce, compiled, logits.requires_grad_(), target)


def test_a_class_target_eager_refuses_keeps_the_copies_and_their_error():
    # functorch's cross_entropy takes an int32 target eager refuses: re-rolled, the compiled
    # loss returned a value where the loop raises (and the pass failing on it cost a warning)
    logits, labels = torch.randn(6, 4, 5), torch.randint(0, 5, (6, 4), dtype=torch.int32)
    graphs = []
    with pytest.raises(RuntimeError):  # the graph as traced raises when it runs
        torch.compile(per_row_ce, backend=lambda gm, _: graphs.append(gm) or gm.forward)(
            logits, labels)
    assert not reroll_unrolled_loops.run(graphs[0]).modified
    assert any("raises on its values" in n.meta.get(NOT_REROLLED_BECAUSE, "")
               for n in graphs[0].graph.nodes)
    with pytest.raises(RuntimeError) as want:
        per_row_ce(logits, labels)
    compiled = torch.compile(per_row_ce, backend=backend(inner="eager"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError) as got:
            compiled(logits, labels)
    assert str(got.value) == str(want.value)


# -- loops that must stay unrolled -------------------------------------------------------------
def alternating_weights(pred, target, w):  # near-isomorphic: every other copy scales by 0.5
    loss = 0
    for i in range(pred.shape[0]):
        loss += ((pred[i] - target[i]) ** 2).mean() * (0.5 if i % 2 else 1.0)
    return loss


def reversed_rows(pred, target, w):  # the index counts down: stack order would change
    return torch.stack([pred[i] * target[i] for i in reversed(range(pred.shape[0]))]).sum(1).mean()


def full_max_per_row(pred, target, w):  # vmap's max() gives the gradient at ties to one element
    return sum((pred[i] * target[i]).max() for i in range(pred.shape[0]))


def accumulates_in_place(pred, target, w):  # += into a tensor made before the loop
    loss = torch.zeros(())
    for i in range(pred.shape[0]):
        loss += (pred[i] * target[i]).sum()
    return loss


def noisy_rows(pred, target, w):  # random: under vmap the copies would not draw separately
    return sum((pred[i] - target[i] + torch.randn_like(target[i])).abs().sum() for i in range(4))


def writes_rows_after_reading_them(pred, target, w):  # re-rolled, every copy would read after
    loss = 0                                            # the writes: doubled rows
    for i in range(pred.shape[0]):
        loss = loss + (pred[i] * target[i]).sum()
        target[i] *= 2
    return loss


def plain_sum_of_terms(pred, target, w):  # an add chain, but no x[i]: not a loop
    return pred.sum() + target.sum() + w.sum() + pred.mean() + target.mean()


# (function, why it stays, or None when it is no candidate at all).
KEPT_CASES = [
    (alternating_weights, "fewer than 4 terms in a row are copies"),
    (reversed_rows, "not counting up"),
    (full_max_per_row, "a full max()"),
    (accumulates_in_place, "writing into a tensor made before it"),
    (noisy_rows, "random op"),
    (writes_rows_after_reading_them, "writes in place between the copies"),
    (plain_sum_of_terms, None),
]


@pytest.mark.parametrize("fn, reason", KEPT_CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_golden_loops_that_stay_unrolled_and_why(fn, reason):
    before, after, gm = rerolled(fn, *inputs())
    assert after == before
    reasons = [n.meta[NOT_REROLLED_BECAUSE] for n in gm.graph.nodes if NOT_REROLLED_BECAUSE in n.meta]
    assert bool(reasons) == bool(reason) and all(reason in r for r in reasons)


def test_reasons_reach_the_report_and_values_stay():
    report = Report("alternating_weights", __file__, 0)
    compiled = torch.compile(alternating_weights, backend=backend(inner="aot_eager", report=report))
    assert_equivalent(alternating_weights, compiled, *inputs())
    assert [n for n in report.notes if n.startswith("not re-rolled")], report.notes


def test_writes_between_the_copies_keep_values_and_writes():
    compiled = torch.compile(writes_rows_after_reading_them,
                             backend=backend(inner="aot_eager", report=Report("w", __file__, 0)))
    pred, target, w = inputs()
    pred = pred.detach()  # (a backward would need the rows the loop overwrote)
    want_target, got_target = target.clone(), target.clone()
    want = writes_rows_after_reading_them(pred, want_target, w)
    torch.testing.assert_close(compiled(pred, got_target, w), want)
    torch.testing.assert_close(got_target, want_target)


def test_a_second_run_changes_nothing():
    gm = dynamo_graph(per_sample_mse, *inputs())
    assert reroll_unrolled_loops.run(gm).modified
    code = gm.code
    assert not reroll_unrolled_loops.run(gm).modified and gm.code == code


# Examples whose naive loops Dynamo unrolls into copies this pass re-rolls (the others either
# have no such loop, or Dynamo skips them for a graph break in the loop).
REROLLED_EXAMPLES = [
    "examples/dice_tversky.py", "examples/ge2e.py", "examples/log1p_target.py",
    "examples/per_sample_ce_fn.py", "examples/per_sample_mse.py", "examples/seq_ce_time.py",
    "examples/target_scaling.py",
    "examples/real/pc_chamfer_nn_loop.py", "examples/real/pose_ohkm_mse.py",
    "examples/real/spk_ge2e_nested_loops.py", "examples/real/metric_proxy_nca_lists.py",
]


@pytest.mark.parametrize("path", REROLLED_EXAMPLES)
def test_examples_rerolled_by_the_backend_keep_values_and_gradients(path):
    example = load(path)
    report = Report("naive", path, 0)
    compiled = torch.compile(example.naive, backend=backend(inner="aot_eager", report=report))
    assert_equivalent(example.naive, compiled, *example.make_inputs("small"))
    assert any(note.startswith("re-rolled") for note in report.notes)
    assert not any("backend failed" in note for note in report.notes)
