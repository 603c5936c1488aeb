"""Minimal regressions for wrong results the reliability suite found. Each is
``xfail(strict=True)``: CI stays green while the bug is there, and the test fails (XPASS) once it
is fixed, so whoever fixes it removes the mark, and the matching ``KNOWN_BUGS`` entry in
tests/test_fuzz_programs.py so the fuzzer draws those programs again.
"""
from __future__ import annotations

import pytest
import torch

import rewrite
from rewrite.testing import assert_equivalent
from tests.helpers import load_module

INF, NAN = float("inf"), float("nan")


def optimized(tmp_path, source: str):
    fn = load_module(tmp_path, "import torch\nimport torch.nn.functional as F\n" + source).f
    return fn, rewrite.optimize_loss(fn, compile=False, strict=True)


def test_two_running_max_updates_in_one_body(tmp_path):
    original, fast = optimized(tmp_path, """
def f(x):
    m = torch.tensor(float("-inf"))
    for i in range(x.shape[0]):
        m = torch.maximum(m, x[i].sum())
        m = torch.maximum(m, x[i].mean())
    return m
""")
    assert_equivalent(original, fast, torch.tensor([[1., 2.], [0.5, 0.25]], requires_grad=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("x", [[[1., 2.], [0.5, 0.25]], [[NAN, 2.], [0.5, 0.5]], [[INF, 1.], [1., 0.]]],
                         ids=["plain", "nan", "inf-tie"])
def test_two_running_min_updates_in_one_body(tmp_path, x, dtype):
    # no pick over the loop axis (one item per iteration): the updates stay in a loop
    original, fast = optimized(tmp_path, """
def f(x):
    lo = float("inf")
    for a in x:
        lo = min(lo, a.mean())
        lo = min(lo, a.sum())
    return lo
""")
    assert "builtin_min-reduced" not in fast.report.loops[0].reason
    assert_equivalent(original, fast, torch.tensor(x, dtype=dtype, requires_grad=True))


def test_builtin_running_min_with_nan_item(tmp_path):
    original, fast = optimized(tmp_path, """
def f(x):
    lo = float("inf")
    for i in range(x.shape[0]):
        lo = min(lo, x[i])
    return lo
""")
    x = torch.tensor([1., NAN], requires_grad=True)
    assert type(fast(x)) is type(original(x))
    assert_equivalent(original, fast, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("bad", [INF, NAN])
def test_deselected_branch_on_nonfinite_input_gives_nan_gradient(tmp_path, bad, dtype):
    # the branch reads the iteration's values as zeros where deselected: 0 * inf would be NaN,
    # in the input's gradient and in the fixed weight's
    original, fast = optimized(tmp_path, """
def f(x, y, w):
    s = 0
    for i in range(x.shape[0]):
        d = x[i] - 1
        if y[i] > 0:
            s += x[i] * x[i] + torch.log(d * d) * w
        else:
            s = s - d.abs()
    return s
""")
    assert fast.report.loops[0].vectorized
    assert_equivalent(original, fast, torch.tensor([bad, 2., 3.], dtype=dtype, requires_grad=True),
                      torch.tensor([-1., 1., 1.], dtype=dtype),
                      torch.tensor(0.5, dtype=dtype, requires_grad=True))


@pytest.mark.xfail(strict=True, reason="a branch's op on a loop-invariant tensor holding inf: "
                   "the vectorized branch masks the rows of deselected iterations but not the "
                   "weight, so their zero gradient times exp(inf) is NaN in the weight's gradient")
def test_deselected_branch_on_an_infinite_weight_gives_nan_gradient(tmp_path):
    original, fast = optimized(tmp_path, """
def f(x, w, t):
    s = 0
    for i in range(len(x)):
        if t[i] != 1:
            s += torch.exp(((w - x[i]) ** 2).sum())
    return s
""")
    assert fast.report.loops[0].vectorized
    assert_equivalent(original, fast, torch.randn(4, 3, dtype=torch.float64, requires_grad=True),
                      torch.tensor([INF, 0.5, 1.], dtype=torch.float64, requires_grad=True),
                      torch.tensor([0, 1, 2, 1]))


def test_tensor_conditional_expression_in_a_loop(tmp_path):
    # kept as written (check_mapped_body): a vmapped body cannot branch on a tensor
    original, fast = optimized(tmp_path, """
def f(x):
    s = 0
    for i in range(x.shape[0]):
        s += x[i] if x[i] > 0 else -x[i]
    return s
""")
    assert_equivalent(original, fast, torch.tensor([2., -1.], requires_grad=True))


@pytest.mark.xfail(strict=True, reason="`v @ row` (a 1-d matmul whose right operand is the "
                   "iteration's row) takes the batched form as `v @ rows`: RuntimeError, mat1 and "
                   "mat2 shapes cannot be multiplied (RewriteError with strict=True, else a "
                   "fallback warning); `row @ w` is fine")
@pytest.mark.parametrize("product", ["w @ x[i]", "y[i] @ x[i]"])
def test_matmul_with_the_row_on_the_right(tmp_path, product):
    original, fast = optimized(tmp_path, f"""
def f(x, y, w):
    s = 0
    for i in range(x.shape[0]):
        s += {product}
    return s
""")
    assert_equivalent(original, fast, torch.randn(3, 2, requires_grad=True),
                      torch.randn(3, 2, requires_grad=True), torch.randn(2, requires_grad=True))


@pytest.mark.xfail(strict=True, reason="two appends to one list per iteration: the vectorized "
                   "list has one item per iteration (shape [B] instead of [2B]), silently")
def test_two_appends_to_one_list_per_iteration(tmp_path):
    original, fast = optimized(tmp_path, """
def f(x):
    lst = []
    for i in range(len(x)):
        lst.append(x[i].sum())
        lst.append(x[i].mean())
    return torch.stack(lst)
""")
    assert_equivalent(original, fast, torch.randn(3, 2, requires_grad=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("x", [[[NAN, 1.], [2., 3.]], [[NAN, NAN], [INF, 3.]], [[1., 1.], [-INF, 2.]],
                               [[NAN, 1.], [NAN, -INF]]], ids=["nan", "two-nans", "tie-inf", "nan-inf"])
@pytest.mark.parametrize("form", ["vmap", "batched"])
@pytest.mark.parametrize("reduction", ["max", "min"])
def test_full_max_of_a_row_with_nan(tmp_path, reduction, form, x, dtype):
    # eager's full max splits the gradient between the row's NaNs, or its ties, as full_extremes
    # does in both forms (a conditional expression in the body keeps the vmapped one)
    original, fast = optimized(tmp_path, f"""
def f(x):
    s = 0
    for i in range(x.shape[0]):
        s += x[i].{reduction}() * {"(2 if len(x) > 1 else 1)" if form == "vmap" else "1"}
    return s
""")
    assert fast.report.loops[0].vectorized
    assert_equivalent(original, fast, torch.tensor(x, dtype=dtype, requires_grad=True))


@pytest.mark.xfail(strict=True, reason="rewrite.testing compares Python-number outputs with ==, "
                   "so NaN != NaN: assert_equivalent(f, f) fails for a loss returning float('nan') "
                   "although tensors' NaNs count as equal")
def test_assert_equivalent_on_a_python_nan_output():
    def f(x):
        return float(x.sum())

    assert_equivalent(f, f, torch.tensor([NAN]))


@pytest.mark.xfail(strict=True, reason="`torch.tanh(float(t))` raises TypeError in the original "
                   "(a float is not a Tensor); the rewrite turns float() into a tensor op, so the "
                   "optimized loss returns a value instead of the user's error")
def test_host_number_passed_to_a_torch_op_still_raises(tmp_path):
    original, fast = optimized(tmp_path, """
def f(x):
    s = 0
    for i in range(x.shape[0]):
        s += torch.tanh(float(x[i].sum()))
    return s
""")
    x = torch.randn(3, 2)
    with pytest.raises(TypeError):
        original(x)
    with pytest.raises(TypeError):
        fast(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("rows", [[[0.5], [-0.7], [0.25]], [[0.5], [-0.7], [0.5]],
                                  [[NAN], [0.25], [-INF]], [[0.0], [2.0], [0.0]]],
                         ids=["nan-item", "tie", "nan-input", "inf-derivative"])
@pytest.mark.parametrize("update", ["lo = min(lo, ((torch.log(x[i]) - x[i]) ** 2).sum())",
                                    "lo = max(lo, (torch.sqrt(x[i]) * 2).sum())"])
def test_unpicked_running_min_item_with_an_infinite_derivative(tmp_path, update, rows, dtype):
    # the picked item is evaluated again on its own: the others get no backward at all
    original, fast = optimized(tmp_path, f"""
def f(x):
    lo = float("{'inf' if 'min' in update else '-inf'}")
    for i in range(x.shape[0]):
        {update}
    return lo
""")
    assert fast.report.loops[0].vectorized
    assert_equivalent(original, fast, torch.tensor(rows, dtype=dtype, requires_grad=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("rows", [[[0.5], [-0.7], [0.25]], [[0.5], [0.5], [NAN]], [[INF], [0.0], [2.0]]],
                         ids=["nan-derivative", "tie-nan", "inf"])
@pytest.mark.parametrize("source", ["""
def f(x):
    losses = [((torch.log(x[i]) - x[i]) ** 2).sum() for i in range(len(x))]
    return max(losses)
""", """
def f(x):
    lo = float("inf")
    for i in range(x.shape[0]):
        d = torch.log(x[i])
        d = d - x[i]
        lo = min(lo, (d ** 2).sum())
    return lo
"""], ids=["max-of-list", "item-of-a-rebound-local"])
def test_unpicked_item_of_stacked_values_with_an_infinite_derivative(tmp_path, source, rows, dtype):
    # items an op may give a NaN/inf derivative, read only in part: the loop is kept
    original, fast = optimized(tmp_path, source)
    assert not fast.report.loops[0].vectorized
    assert "NaN/inf derivative" in fast.report.loops[0].reason
    assert_equivalent(original, fast, torch.tensor(rows, dtype=dtype, requires_grad=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("source", ["""
def f(x):
    losses = [((x[i] - 1) ** 2).sum() for i in range(len(x))]
    return max(losses)
""", """
def f(x):
    centers = [x[k].mean(dim=0) for k in range(len(x))]
    return (centers[0] - centers[-1]).abs().sum()
"""], ids=["max-of-list", "read-by-index"])
def test_stacked_items_of_total_ops_read_in_part_stay_vectorized(tmp_path, source, dtype):
    # total ops: finite derivatives on finite inputs, so 0 for the items not read
    original, fast = optimized(tmp_path, source)
    assert fast.report.loops[0].vectorized
    for rows in ([[0.5, 1.], [2., -3.], [1e30, 0.]], [[1., 1.], [1., 1.], [0., 2.]]):
        assert_equivalent(original, fast, torch.tensor(rows, dtype=dtype, requires_grad=True))


@pytest.mark.xfail(strict=True, reason="stacked items read in part (`max(losses)`, `centers[k]`, "
                   "or a list the vectorized loop appended to, `losses[1]`): at a NaN/inf input "
                   "even a total op's derivative is NaN/inf, and the batched backward also runs "
                   "for the items the original never differentiates (0 * inf = NaN)")
@pytest.mark.parametrize("source", ["""
def f(x):
    losses = [((x[i] - 1) ** 2).sum() for i in range(len(x))]
    return max(losses)
""", """
def f(x):
    losses = []
    for i in range(x.shape[0]):
        losses.append(torch.sqrt(x[i]).sum())
    return losses[1]
"""], ids=["nonfinite-input", "appended-list"])
def test_stacked_items_read_in_part_at_a_nonfinite_derivative(tmp_path, source):
    original, fast = optimized(tmp_path, source)
    assert_equivalent(original, fast, torch.tensor([[0.5], [1.0], [NAN], [0.0]], requires_grad=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("rows", [[[0.5], [-0.7], [0.25]], [[0.5], [0.5], [NAN]], [[INF], [0.0], [2.0]]],
                         ids=["nan-derivative", "tie-nan", "inf"])
@pytest.mark.parametrize("source", ["""
def f(x):
    lo = float("inf")
    for i in range(x.shape[0]):
        d = torch.log(x[i]) - x[i]
        lo = min(lo, (d ** 2).sum())
    return lo
""", """
def f(x):
    hi = float("-inf")
    for row in x:
        d = torch.sqrt(row)
        e = d * 2 - row
        hi = max(hi, e.sum())
    return hi
"""], ids=["item-of-a-local", "item-of-two-locals"])
def test_unpicked_item_of_locals_with_an_infinite_derivative(tmp_path, source, rows, dtype):
    # the body's definitions the item reads are evaluated again at the picked index
    original, fast = optimized(tmp_path, source)
    assert fast.report.loops[0].vectorized
    assert_equivalent(original, fast, torch.tensor(rows, dtype=dtype, requires_grad=True))


def test_running_maximum_with_a_nan_item(tmp_path):
    original, fast = optimized(tmp_path, """
def f(x):
    m = torch.tensor(float("-inf"))
    for i in range(x.shape[0]):
        m = torch.maximum(m, x[i].sum())
    return m
""")
    assert_equivalent(original, fast, torch.tensor([[NAN, 1.], [2., 3.]], requires_grad=True))


def test_tied_max_inside_a_vmapped_body(tmp_path):
    # `row.max()` with tied maxima in a vmapped body: amax splits the gradient as eager does
    original, fast = optimized(tmp_path, """
def f(x, y):
    out = torch.zeros_like(x)
    lst = []
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = (x[i, j] - y[i, j]) ** 2
        lst.append(y[i].max())
    return torch.stack(lst), out
""")
    assert_equivalent(original, fast, torch.randn(2, 3),
                      torch.tensor([[0.5, -1.0, 0.5], [1., 2., 3.]], requires_grad=True))


@pytest.mark.xfail(strict=True, reason="an item that does not depend on the loop variable (or "
                   "is gathered from such a tensor) gets its gradient from the summed cotangents "
                   "times the inf derivative: +-inf where the original's, summed per item with "
                   "0 * inf for the items not picked, is NaN")
@pytest.mark.parametrize("source", ["""
def f(x, w):
    return torch.stack([torch.exp(w) for i in range(x.shape[0])])
""", """
def f(x, w):
    s = 0
    for i in range(x.shape[0]):
        s += (w * w)[x[i]]
    return s
""", """
def f(x, w):
    lst = []
    for i in range(x.shape[0]):
        lst.append(torch.acos(w))
    return torch.stack(lst)
"""], ids=["stacked", "gathered", "at_the_domain_boundary"])
def test_loop_invariant_item_with_an_infinite_derivative(tmp_path, source):
    original, fast = optimized(tmp_path, source)
    if "acos" in source:  # a finite input where the derivative is infinite (found by the fuzzer)
        x, w = torch.randn(3, 1), torch.tensor([-1.0], requires_grad=True)
    elif "stack" in source:
        x = torch.randn(2, 1)  # only its length matters; assert_equivalent's cotangent is fixed
        w = torch.tensor([INF], requires_grad=True)
    else:
        x, w = torch.tensor([1, 0]), torch.tensor([1., -INF], requires_grad=True)
    assert_equivalent(original, fast, x, w)


@pytest.mark.xfail(strict=True, reason="a float32 accumulator multiplied by float64 items under a "
                   "tensor condition: when no iteration is selected the original's stays float32, "
                   "the vectorized one is float64 (its dtype no longer depends on the data)")
def test_accumulator_dtype_when_no_iteration_is_selected(tmp_path):
    original, fast = optimized(tmp_path, """
def f(x, y):
    p = torch.ones(())
    for i in range(x.shape[0]):
        if y[i] > 0:
            continue
        p = p * x[i]
    return p
""")
    x, y = torch.rand(3, dtype=torch.float64), torch.ones(3)
    assert fast(x, y).dtype == original(x, y).dtype


@pytest.mark.parametrize("init, update", [("float('inf')", "min(m, x[i].sum())"),
                                          ("torch.tensor(float('-inf'))",
                                           "torch.maximum(m, x[i].sum())")])
def test_running_extreme_with_tied_items(tmp_path, init, update):
    original, fast = optimized(tmp_path, f"""
def f(x):
    m = {init}
    for i in range(x.shape[0]):
        m = {update}
    return m
""")
    assert_equivalent(original, fast,
                      torch.tensor([[0.5, 0.0], [0.0, 0.5], [0.25, 0.25]], requires_grad=True))


def test_bce_with_logits_under_vmap_at_an_infinite_logit(tmp_path):
    original, fast = optimized(tmp_path, """
def f(y, w):
    s = 0
    for i in range(y.shape[0]):
        s += F.binary_cross_entropy_with_logits(y[i], w)
    return s
""")
    assert_equivalent(original, fast, torch.tensor([[2.9, -INF], [1.1, 0.55]], requires_grad=True),
                      torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("y", [[[2.9, -INF], [1.1, 0.55]], [[INF, 0.5], [NAN, 0.5]], [[1., 1.], [1., 1.]]],
                         ids=["-inf", "inf-nan", "ties"])
@pytest.mark.parametrize("call", ["F.binary_cross_entropy_with_logits(y[i], w)",
                                  "F.binary_cross_entropy_with_logits(w, y[i].sigmoid())",
                                  "F.mse_loss(w, y[i] * 2, reduction='sum')"])
def test_pointwise_loss_with_a_fixed_operand(tmp_path, call, y, dtype):
    # the fixed operand is expanded over the loop dim: the batched form, the backward per item
    original, fast = optimized(tmp_path, f"""
def f(y, w):
    s = 0
    for i in range(y.shape[0]):
        s += {call}
    return s
""")
    assert "vmap where `isinstance(w, torch.Tensor) and y.dim() == w.dim() + 1`" \
        in fast.report.loops[0].reason
    assert_equivalent(original, fast, torch.tensor(y, dtype=dtype, requires_grad=True),
                      torch.tensor([0.5, -INF], dtype=dtype, requires_grad=True))


@pytest.mark.xfail(strict=True, reason="F.binary_cross_entropy_with_logits in a body that takes "
                   "the vmap form for another reason (here `w.sum()` next to per-item values): "
                   "vmap's backward gives an -inf logit a NaN gradient where the original's is "
                   "finite")
def test_bce_with_logits_in_a_vmapped_body_at_an_infinite_logit(tmp_path):
    original, fast = optimized(tmp_path, """
def f(x, y, w):
    s = 0
    for i in range(x.shape[0]):
        s += F.binary_cross_entropy_with_logits(x[i], torch.sigmoid(y[i])) + w.sum()
    return s
""")
    assert_equivalent(original, fast, torch.tensor([[-INF], [0.5]], requires_grad=True),
                      torch.tensor([[0.27], [0.5]], requires_grad=True),
                      torch.tensor([1.25], requires_grad=True))


@pytest.mark.xfail(strict=True, reason="a running builtin min kept for its item, then distributed: "
                   "the item is hoisted into a batched loop and read back by index, so the "
                   "backward runs for the items not picked too (0 * NaN at a NaN input)")
def test_running_min_item_hoisted_by_loop_distribution(tmp_path):
    original, fast = optimized(tmp_path, """
def helper(a, b):
    d = a - b
    return (d * d).sum() + b.abs().mean()

def f(x):
    s = 0
    lo = float("inf")
    for i in range(x.shape[0]):
        lo = min(lo, helper(x[i], x[i]))
        s += x[i].sum()
    return s, lo
""")
    assert_equivalent(original, fast, torch.tensor([[-0.29], [NAN]], requires_grad=True))


def test_pointwise_loss_with_a_fixed_operand_of_another_size_raises(tmp_path):
    original, fast = optimized(tmp_path, """
def f(y, w):
    s = 0
    for i in range(y.shape[0]):
        s += F.binary_cross_entropy_with_logits(y[i], w)
    return s
""")
    y, w = torch.randn(2, 3), torch.rand(1)
    with pytest.raises(ValueError) as want:
        original(y, w)
    with pytest.raises(ValueError) as got:
        fast(y, w)
    assert str(got.value) == str(want.value)


@pytest.mark.xfail(strict=True, reason="F.linear_cross_entropy with chunking options runs under "
                   "vmap without error but its result does not reach the batched input in the "
                   "backward: the rows get no gradient (found by the op sweep)")
def test_chunked_linear_cross_entropy_under_vmap(tmp_path):
    original, fast = optimized(tmp_path, """
def f(x, w, t):
    options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=2)
    total = 0
    for i in range(x.shape[0]):
        total = total + F.linear_cross_entropy(x[i], w, t, options=options)
    return total
""")
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert_equivalent(original, fast, x, w, torch.tensor(1))


@pytest.mark.xfail(strict=True, reason="torch.select_scatter of a loop-invariant source into each "
                   "row: the vectorized form gives the source a gradient several times the "
                   "original's (found by the op sweep)")
def test_select_scatter_of_an_invariant_source(tmp_path):
    original, fast = optimized(tmp_path, """
def f(x, src):
    total = 0
    for i in range(x.shape[0]):
        total = total + torch.select_scatter(x[i], src, 1, 2).sum()
    return total
""")
    x = torch.randn(2, 5, 5, 5, dtype=torch.float64, requires_grad=True)
    src = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    assert_equivalent(original, fast, x, src)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("bad", ["x-nan", "x-inf", "w-nan", "w-inf", "tie"])
def test_set_form_distances_at_a_nonfinite_coordinate(tmp_path, bad, dtype):
    # the distances to a set take cdist's value and the original's backward (set_distances):
    # NaN in the bad coordinate only, 0 * inf where the original has it
    original, fast = optimized(tmp_path, """
def f(x, w):
    s = 0
    for i in range(x.shape[0]):
        s += ((w - x[i]) ** 2).sum(1).min()
    return s
""")
    x = torch.tensor([[0.3, 1.0], [0.5, 2.0], [1.0, -1.0]], dtype=dtype)
    w = torch.tensor([[0.0, 1.0], [0.5, -2.0], [1.0, 1.0], [2.0, 0.0]], dtype=dtype)
    side, kind = bad.split("-") if "-" in bad else ("w", "tie")
    {"x": x, "w": w}[side][1, 0] = {"nan": NAN, "inf": INF, "tie": 0.5}[kind]
    assert "squared_distances" in fast.report.rewritten_source
    assert_equivalent(original, fast, x.requires_grad_(), w.requires_grad_())
