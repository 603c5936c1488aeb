"""The FX passes annotate_grad_dependence and hoist_target_subgraph: golden partitions (which
nodes are target-only and hoisted, as readable lists) and pass invariants."""
from __future__ import annotations

import torch
import torch.nn.functional as F
import pytest

from examples._check import load
from passes import annotate_grad_dependence, hoist_target_subgraph
from passes.meta_keys import GRAD_DEPENDENCE, HOISTED, NOT_HOISTED_BECAUSE
from passes.pipeline import run_fx_pipeline
from passes.errors import RewriteError
from rewrite.offline_split import trace


def split_graph(fn, *inputs) -> torch.fx.GraphModule:
    return run_fx_pipeline(trace(fn, *inputs), "<test>", [])


def hoisted(fn, *inputs) -> list[str]:
    gm = split_graph(fn, *inputs)
    if not hasattr(gm, "target_transform"):
        return []
    return [n.name for n in gm.target_transform.graph.nodes if n.op not in ("placeholder", "output")]


def target_only(gm: torch.fx.GraphModule) -> list[str]:
    return [n.name for n in gm.graph.nodes
            if n.op != "placeholder" and n.meta.get(GRAD_DEPENDENCE) == "target"]


# -- seed 000: target preprocessing inside the loss --------------------------------------------
SEED_000 = {
    # mask = target > 0 and its count; the masked difference reads pred.
    "masked_mse": ["gt", "sum_2"],
    # the whole standardisation of the target.
    "target_scaling": ["mean", "sub", "std", "truediv"],
    # log1p of the target; log1p of pred and the rest read pred.
    "log1p_target": ["log1p_1"],
    # the normalised class weights.
    "class_weighted_ce": ["sum_1", "truediv"],
}


@pytest.mark.parametrize("name", sorted(SEED_000))
def test_golden_partition_seed_000(name):
    example = load(f"examples/{name}.py")
    assert hoisted(example.expert, *example.make_inputs("small")) == SEED_000[name]


def test_golden_partition_perceptual_style_hoists_the_whole_style_branch():
    example = load("examples/perceptual_style.py")
    names = hoisted(example.expert, *example.make_inputs("small"))
    # Both convolutions, pools and Gram matrices of the style image; none of the image's.
    assert [n for n in names if n.startswith(("conv2d", "matmul"))] == [
        "conv2d_2", "conv2d_3", "matmul_1", "matmul_3"]


# -- seed 001: "targets" computed from the prediction: never target-only ------------------------
def pseudo_label(pred, target):
    hard = pred.detach().argmax(1)
    confident = (pred.detach().softmax(1).max(1).values > 0.9).float()
    return (F.cross_entropy(pred, hard, reduction="none") * confident).mean()


def threshold_from_pred(pred, target):
    positive = (pred.detach() > pred.detach().mean()).float()
    return F.binary_cross_entropy_with_logits(pred, positive) + F.mse_loss(pred, target)


@pytest.mark.parametrize("fn", [pseudo_label, threshold_from_pred])
def test_golden_targets_derived_from_pred_are_not_target_only(fn):
    pred, target = torch.randn(8, 4, requires_grad=True), torch.randn(8, 4)
    gm = trace(fn, pred, target)
    assert annotate_grad_dependence.run(gm).modified
    assert target_only(gm) == []
    assert hoisted(fn, pred, target) == []


def metadata_and_requires_grad_factory(pred, target):
    zeros = pred.new_zeros(pred.shape[1])          # reads only pred's metadata: target-only
    bias = torch.zeros(pred.shape[1], requires_grad=True)  # a gradient starts here
    return ((pred - target + zeros + bias) ** 2).mean()


def test_golden_metadata_reads_and_grad_factories():
    pred, target = torch.randn(8, 4, requires_grad=True), torch.randn(8, 4)
    gm = trace(metadata_and_requires_grad_factory, pred, target)
    annotate_grad_dependence.run(gm)
    assert target_only(gm) == ["getattr_1", "getitem", "new_zeros", "getattr_2", "getitem_1"]


# -- what may not be hoisted ---------------------------------------------------------------------
def noisy_target(pred, target):
    noisy = target + torch.randn_like(target)
    return ((pred - noisy) ** 2).mean()


def writes_target(pred, target):
    t = target * 2
    t.clamp_(min=0)
    return ((pred - t) ** 2).mean()


@pytest.mark.parametrize("fn, reason", [
    (noisy_target, "random op"),
    (writes_target, "the function changes a tensor in place (clamp_"),
])
def test_unsafe_nodes_stay_in_core_with_a_reason(fn, reason):
    gm = split_graph(fn, torch.randn(8, requires_grad=True), torch.randn(8))
    assert not hasattr(gm, "target_transform")
    reasons = [n.meta[NOT_HOISTED_BECAUSE] for n in gm.graph.nodes if NOT_HOISTED_BECAUSE in n.meta]
    assert any(r.startswith(reason) for r in reasons), reasons


def item_count(pred, target):
    return ((pred - target) ** 2).sum() / (target > 0).sum().item()


def test_non_tensors_do_not_cross_to_core():
    gm = split_graph(item_count, torch.randn(8, requires_grad=True), torch.randn(8))
    # (target > 0).sum() crosses as a tensor; .item() of it is recomputed in core.
    assert [n.name for n in gm.target_transform.graph.nodes if n.meta.get(HOISTED)] == ["gt", "sum_2"]


# -- cheap values: recomputed in core, not cached ---------------------------------------------
def mask_and_log1p(pred, target):
    mask = target > 0
    kept = torch.where(mask, target, 0.0)
    return (torch.where(mask, pred - kept, 0.0) ** 2).sum() + (pred * target.log1p()).mean()


def only_masks(pred, target):
    return torch.where(target > 0, pred, 0.0).sum()


def core_ops(gm: torch.fx.GraphModule) -> list[str]:
    return [n.name for n in gm.core.graph.nodes if n.op not in ("placeholder", "output")]


def test_cheap_target_values_are_recomputed_in_core():
    pred, target = torch.randn(8, requires_grad=True), torch.rand(8)
    gm = split_graph(mask_and_log1p, pred, target)
    # The log1p is cached; the mask and the masked target are recomputed where they are read.
    assert [n.name for n in gm.target_transform.graph.nodes if n.op != "placeholder" and n.op != "output"] == ["log1p"]
    assert {"gt", "where"} <= set(core_ops(gm))
    assert hoisted(item_count, pred, target) == ["gt", "sum_2"]  # read by a cached sum: both
    assert_equivalent_split(mask_and_log1p, pred, target)


def soft_dice(probs, target):
    # Constant classes and dtype, as in Dynamo's graphs (a symbolic trace reads them from probs).
    onehot = F.one_hot(target, 3).permute(0, 2, 1).to(torch.float32)
    return 1 - (2 * (probs * onehot).sum() + 1) / (probs.sum() + onehot.sum() + 1)


def test_a_one_hot_read_by_core_is_recomputed_there_not_cached():
    # Cached, the float one-hot is C times the size of the labels it is made from, and read from
    # memory every call; recomputed, a compiler fuses the comparison into the product's kernel.
    probs, target = torch.rand(2, 3, 5, requires_grad=True), torch.randint(0, 3, (2, 5))
    gm = split_graph(soft_dice, probs, target)
    assert {"one_hot", "permute", "to"} <= set(core_ops(gm))
    assert [n.name for n in gm.target_transform.graph.nodes if n.meta.get(HOISTED)] == [
        "one_hot", "permute", "to", "sum_3"]  # onehot.sum() is cached
    from rewrite import assert_equivalent
    for dtype in (torch.float32, torch.float64):
        cast = probs.detach().to(dtype).requires_grad_()
        assert_equivalent(soft_dice, split_graph(soft_dice, cast, target), cast, target)


def soft_tversky(probs, target):
    onehot = F.one_hot(target, 3).permute(0, 2, 1).to(torch.float32)
    smoothed = onehot * 0.9 + 0.1 / 3
    fp = (probs * (1 - onehot)).sum()
    return fp / (probs * smoothed).sum() + (-onehot).sum() / (onehot.sum() + 1)


def test_arithmetic_of_a_recomputed_one_hot_is_recomputed_too():
    # Cached, ``1 - onehot`` and the smoothed one-hot are full-size tensors read from memory
    # every call; recomputed, they fuse into the products' kernels. Reductions stay cached.
    probs, target = torch.rand(2, 3, 5, requires_grad=True), torch.randint(0, 3, (2, 5))
    gm = split_graph(soft_tversky, probs, target)
    assert {"one_hot", "permute", "to", "mul", "add", "sub"} <= set(core_ops(gm))
    assert [n.name for n in gm.target_transform.graph.nodes if n.meta.get(HOISTED)] == [
        "one_hot", "permute", "to", "neg", "sum_3", "sum_4", "add_1", "truediv_1"]  # the last term
    from rewrite import assert_equivalent
    for dtype in (torch.float32, torch.float64):
        cast = probs.detach().to(dtype).requires_grad_()
        assert_equivalent(soft_tversky, split_graph(soft_tversky, cast, target), cast, target)


def test_only_cheap_target_values_leave_the_graph_unsplit():
    gm = trace(only_masks, torch.randn(8, requires_grad=True), torch.randn(8))
    annotate_grad_dependence.run(gm)
    code = gm.code
    result = hoist_target_subgraph.run(gm)
    assert not result.modified and result.graph_module.code == code
    gt = next(n for n in gm.graph.nodes if n.name == "gt")
    assert not gt.meta[HOISTED] and gt.meta[NOT_HOISTED_BECAUSE].startswith("cheaper to recompute")


def assert_equivalent_split(fn, *inputs):
    from rewrite import assert_equivalent
    for dtype in (torch.float32, torch.float64):
        cast = [t.detach().to(dtype).requires_grad_(t.requires_grad) for t in inputs]
        assert_equivalent(fn, split_graph(fn, *cast), *cast)


# -- invariants ----------------------------------------------------------------------------------
def test_each_pass_twice_second_run_reports_no_change():
    example = load("examples/class_weighted_ce.py")
    gm = trace(example.expert, *example.make_inputs("small"))
    assert annotate_grad_dependence.run(gm).modified
    assert not annotate_grad_dependence.run(gm).modified
    first = hoist_target_subgraph.run(gm)
    assert first.modified
    second = hoist_target_subgraph.run(first.graph_module)
    assert not second.modified and second.graph_module is first.graph_module


def test_nothing_to_hoist_leaves_the_graph_unchanged():
    gm = trace(pseudo_label, torch.randn(8, 4, requires_grad=True), torch.randn(8, 4))
    annotate_grad_dependence.run(gm)
    code = gm.code
    result = hoist_target_subgraph.run(gm)
    assert not result.modified and result.graph_module.code == code


def test_untraceable_function_names_the_line():
    with pytest.raises(RewriteError, match=r"test_hoist_passes.py:\d+: cannot trace with torch.fx"):
        trace(assigns_items, torch.randn(8, requires_grad=True), torch.randn(8))


def assigns_items(pred, target):
    t = target.clone()
    t[t < 0] = 0  # torch.fx proxies support no item assignment
    return ((pred - t) ** 2).mean()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(SEED_000) + ["perceptual_style"])
def test_split_graph_computes_the_same(name, dtype):
    example = load(f"examples/{name}.py")
    inputs = example.make_inputs("small", dtype)
    from rewrite import assert_equivalent
    assert_equivalent(example.expert, split_graph(example.expert, *inputs), *inputs)
