"""host_roundtrips_to_tensor_ops: host values inside a vectorized body become tensor ops."""
from __future__ import annotations

import ast

import pytest
import torch

from passes.loops import host_roundtrips_to_tensor_ops
from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, context, namespace


def rewrite(src: str, variant: set[str]) -> str:
    module = ast.parse(src)
    ctx = context(ast.Module([ast.parse("def f(): pass").body[0]], []), namespace())
    body = host_roundtrips_to_tensor_ops.rewrite(module.body, variant, ctx, {}, {}, {"i"})
    return ast.unparse(ast.Module(body, []))


def test_table_of_rewrites():
    src = ("a = int(t[i])\nb = float(w[i])\nc = t[i].item()\nd = math.log(p[i])\n"
           "e = max(p[i], 0.5)\nf = min(w[i])\ng = sum(c[i])\nh = t[i].tolist()\nk = abs(w[i])")
    first_min = ("w[i][w[i].reshape(len(w[i])).nan_to_num(float('inf'), float('inf'), "
                 "float('-inf')).argmin(0) * w[i].reshape(len(w[i]))[0].isnan().logical_not()]")
    assert rewrite(src, {"i"}).splitlines() == [
        "a = t[i].long()", "b = w[i].detach() * 1.0", "c = t[i].detach()",
        "_raises = _raises + (p[i].detach().double() <= 0)",
        "d = torch.log(p[i].detach() * 1.0)", "e = torch.where(0.5 > p[i], 0.5, p[i])",
        f"f = {first_min}", "g = c[i].sum(0)", "h = t[i].detach()", "k = abs(w[i])"]


def test_loop_invariant_round_trips_stay():
    src = "n = int(x.shape[0])\nm = float(scale)\nq = max(a, b)"
    assert rewrite(src, {"i"}) == src


def test_running_max_keeps_the_builtin():
    assert rewrite("m = max(m, x[i])", {"i", "m"}) == "m = max(m, x[i])"


def test_gathers_by_int_labels_are_equivalent():
    original, optimized, code, report = build("""
        def f(centers, feats, lab):
            loss = 0
            for i in range(feats.shape[0]):
                c = centers[int(lab[i])]
                loss = loss + ((feats[i] - c) ** 2).sum() * float(lab[i].item() + 1)
            return loss
        """)
    assert report.loops[0].vectorized and ".item()" not in code.split("else:")[0]
    g = torch.Generator().manual_seed(0)
    assert_equivalent(original, optimized, torch.randn(3, 2, requires_grad=True, generator=g),
                      torch.randn(5, 2, requires_grad=True, generator=g),
                      torch.tensor([0, 2, 1, 1, 0]))



COMPARED = """
import torch


def f(x, c):
    s = 0
    for i in range(x.shape[0]):
        s = s + x[i] * (c > x[i].item()).sum() + c[i]
    return s
"""


def test_a_host_number_compares_with_a_tensor_the_loop_indexes_as_python_does(tmp_path):
    # `c` is read by items (a tensor): next to it the host number is a weak scalar, so the
    # float32 0.1 is not above the float32 0.1 (it is above the double 0.1)
    from tests.helpers import equivalent_report, load_module
    user = load_module(tmp_path, COMPARED)
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor([0.1, 0.2, 0.05, 0.1], dtype=dtype, requires_grad=True)
        for c_dtype in (torch.float32, torch.float64):
            c = torch.tensor([0.1, 0.3, 0.05, 0.2], dtype=c_dtype)
            report = equivalent_report(user.f, x, c)
            assert (report.loops[0].vectorized_runs, report.loops[0].original_runs) == (1, 0)


POSITIONS_BELOW = """
import torch


def f(x, w):
    total = 0
    for i in range(x.shape[0]):
        total = total + (x[i] * (torch.arange(x.shape[1]) < w[i].item())).sum()
    return total
"""


def test_a_host_float_next_to_an_integer_tensor_a_torch_function_makes_compares_in_float32(tmp_path):
    # int64 positions next to a Python float compare in the default dtype, float32, where
    # 2.00000001 is 2.0: position 2 is not below it (in float64 it is)
    from tests.helpers import equivalent_report, load_module
    user = load_module(tmp_path, POSITIONS_BELOW)
    w = torch.tensor([2.00000001, 3.0, 0.5, 5.9999999], dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(4, 6, dtype=dtype, requires_grad=True)
        report = equivalent_report(user.f, x, w)
        assert (report.loops[0].vectorized_runs, report.loops[0].original_runs) == (1, 0)


def test_a_sum_of_a_list_the_body_builds_adds_its_items_as_written():
    built = "parts = []\nparts.append(x[i])\ng = sum(parts)"
    assert rewrite(built, {"i", "parts"}) == built
    # a name also bound to a tensor may be one: its builtin sum iterates dim 0
    rebound = "parts = []\nparts = x[i]\ng = sum(parts)"
    assert rewrite(rebound, {"i", "parts"}).splitlines()[-1] == "g = parts.sum(0)"


PARTS = """
import torch


def f(preds, margin=0.05):
    losses = []
    for pred in preds:
        parts = []
        parts.append((pred[0] - pred[1] + margin).clamp(min=0))
        parts.append((pred[1] - pred[2] + margin).clamp(min=0))
        losses.append(sum(parts))
    return sum(losses) / len(losses)


def g(preds):
    total = 0
    for pred in preds:
        parts = [pred[0], pred[1]]
        total = total + max(parts)
    return total
"""


def test_a_list_of_per_iteration_terms_summed_in_the_body_runs_vectorized(tmp_path):
    from tests.helpers import equivalent_report, load_module
    user = load_module(tmp_path, PARTS)
    for dtype in (torch.float32, torch.float64):
        preds = torch.randn(6, 3, dtype=dtype, requires_grad=True)
        preds.data[2, 1] = preds.data[2, 0] + 0.05  # a tie at the clamp's kink
        report = equivalent_report(user.f, preds)
        assert (report.loops[0].vectorized_runs, report.loops[0].failed_runs) == (1, 0)


def test_a_max_of_such_a_list_still_needs_python_booleans(tmp_path):
    from tests.helpers import equivalent_report, load_module
    user = load_module(tmp_path, PARTS)
    report = equivalent_report(user.g, torch.randn(4, 2, requires_grad=True))
    assert not report.loops[0].vectorized and "max(parts)" in report.loops[0].reason


def test_int_of_a_count_of_true_elements_needs_no_raise_counter():
    """``int()`` of a count of a comparison's or a boolean op's true elements is an integer:
    no counter of iterations where it raises (nor its host sync); a count of anything else
    keeps it."""
    src = ("a = int((x[i] != 3).sum())\nb = int(torch.sum(x[i].isnan()))\n"
           "c = int(x[i].sum())\nd = int((x[i] * 2).sum())")
    assert rewrite(src, {"i"}).splitlines() == [
        "a = (x[i] != 3).sum().long()", "b = torch.sum(x[i].isnan()).long()",
        "_raises = _raises + (x[i].sum().detach().double() != x[i].sum().detach().double())",
        "_raises_1 = _raises_1 + (x[i].sum().detach().double().abs() == torch.inf)",
        "c = x[i].sum().long()",
        "_raises_2 = _raises_2 + ((x[i] * 2).sum().detach().double() != (x[i] * 2).sum().detach().double())",
        "_raises_3 = _raises_3 + ((x[i] * 2).sum().detach().double().abs() == torch.inf)",
        "d = (x[i] * 2).sum().long()"]


def test_counts_of_positives_are_equivalent():
    original, optimized, code, report = build("""
        def f(labels, scores, bg):
            n = sum([max(int((lab != bg).sum()), 1) for lab in labels])
            m = sum([min(len(lab), int((lab == bg).sum())) for lab in labels])
            return scores.sum() / n + m
        """)
    assert report.loops[0].vectorized and "raise" not in code.split("else:")[0]
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(0)
        labels = torch.randint(0, 4, (3, 7), generator=g)
        labels[1] = 3  # an image without positives: max(0, 1)
        assert_equivalent(original, optimized, labels,
                          torch.randn(3, 7, dtype=dtype, requires_grad=True, generator=g), 3)


def test_min_max_of_python_ints_read_each_operand_once():
    """Of two Python ints (one an ``int()`` the rewrite computes as a tensor), min/max are one
    clamp, whichever comes first (ints: the same value); a float operand keeps Python's pick."""
    src = "a = max(int(c[i]), 1)\nb = min(2, int(c[i]))\nd = max(int(c[i]), 0.5)\ne = max(c[i], 1)"
    assert rewrite(src, {"i"}).splitlines()[-4:] == [
        "a = torch.clamp_min(c[i].long(), 1)", "b = torch.clamp_max(c[i].long(), 2)",
        "d = torch.where(0.5 > c[i].long(), 0.5, c[i].long())", "e = torch.where(1 > c[i], 1, c[i])"]


HOST_OVER_TENSOR = """
import torch


def f(x, w):
    out = []
    for i in range(x.shape[0]):
        out.append(w[i].item() / x[i])
    return torch.stack(out)
"""


def test_a_host_number_over_a_tensor_is_the_reciprocal_times_it(tmp_path):
    # Python's `h / t` is Tensor.__rtruediv__: t.reciprocal() * h, two roundings; a division
    # of the number as a tensor rounds once and differs in the last bit for about a quarter
    # of the elements
    from rewrite import optimize_loss
    from tests.helpers import load_module
    user = load_module(tmp_path, HOST_OVER_TENSOR)
    fast = optimize_loss(user.f, compile=False, keep_faster=False)
    # (the reciprocal in the tensor's dtype, then in the op's opmath dtype: float32 for 16 bits)
    assert ".reciprocal().to(_opmath_type(" in fast.report.rewritten_source
    w = torch.rand(8, generator=torch.Generator().manual_seed(1)) * 3 + 0.1
    for dtype in (torch.float32, torch.float64):
        x = (torch.rand(8, 500, dtype=dtype, generator=torch.Generator().manual_seed(2)) + 0.5)
        runs = []
        for fn in (user.f, fast):
            xr = x.clone().requires_grad_()
            value = fn(xr, w)
            value.backward(torch.ones_like(value))
            runs.append((value, xr.grad))
        assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1]), dtype
    loop = fast.report.loops[0]
    assert loop.vectorized_runs > 0 and loop.original_runs == 0


@pytest.mark.parametrize("call", ["math.floor(t[i])", "math.pow(t[i], 2)", "math.gamma(t[i] + 1)"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_math_function_without_a_tensor_form_keeps_the_loop(call, dtype):
    # `math.*` functions with no tensor op in the registry (`host_math`) were not taken for
    # Python numbers: the loop was reported vectorized (vmap) and vmap raised at `.item()` on
    # every call, falling back to the original with a warning
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(5, dtype=dtype, generator=gen, requires_grad=True)
    _kept_and_equivalent(f"total = total + w[i] * {call}", f"`{call}` makes a Python number",
                         w, torch.rand(5, dtype=dtype, generator=gen) * 4)


def _kept_and_equivalent(line: str, reason: str, *inputs) -> None:
    """A loop of ``line`` over ``range(len(inputs[0]))`` is kept for ``reason``, and runs as
    the original does."""
    original, rewritten, _, report = build(f"""
        def f(w, t):
            total = 0
            for i in range(w.shape[0]):
                {line}
            return total
        """)
    (loop,) = report.loops
    assert not loop.vectorized and reason in loop.reason, loop
    assert_equivalent(original, rewritten, *inputs)


@pytest.mark.parametrize("target", ["torch.tensor([i])", "torch.as_tensor([i])",
                                    "torch.tensor(i)", "torch.tensor((t[i],))"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_tensor_made_of_python_values_that_vary_keeps_the_loop(target, dtype):
    # `F.cross_entropy(row.unsqueeze(0), torch.tensor([i]))`, a sampled softmax whose positive
    # is the row's own index: under vmap `i` is a tensor, whose item `torch.tensor` reads, and
    # vmap raised on every call (the original ran, with a warning)
    logits = torch.randn(4, 5, dtype=dtype, generator=torch.Generator().manual_seed(0),
                         requires_grad=True)
    _kept_and_equivalent(
        f"total = total + F.cross_entropy(w[i].unsqueeze(0), {target}.long().view(1))",
        f"`{target}` makes a tensor of Python values", logits, torch.tensor([3, 0, 4, 1]))


def test_a_tensor_as_it_is_and_fixed_python_values_stay_vectorized():
    _, _, _, report = build("""
        def f(x, y, k):
            total = 0
            for i in range(x.shape[0]):
                total = total + (torch.as_tensor(y[i]) * x[i] + torch.tensor([k, 1.0])).sum()
            return total
        """)
    assert report.loops[0].vectorized, report.loops[0].reason


def test_autograd_inside_the_loop_keeps_it():
    # GradNorm: each task's gradient norm w.r.t. shared weights; under vmap the batched
    # loss has no graph of its own ("element 0 of tensors does not require grad")
    original, rewritten, _, report = build("""
        def f(w, losses, shared):
            norms = []
            for i in range(len(losses)):
                g = torch.autograd.grad(w[i] * losses[i], shared, create_graph=True)[0]
                norms.append(torch.norm(g))
            return torch.stack(norms).sum()
        """)
    (loop,) = report.loops
    assert not loop.vectorized and "`torch.autograd.grad(...)` runs autograd" in loop.reason
    for fn in (original, rewritten):
        gen = torch.Generator().manual_seed(1)
        shared = torch.randn(4, 3, dtype=torch.float64, generator=gen, requires_grad=True)
        h = torch.randn(5, 4, dtype=torch.float64, generator=gen) @ shared
        losses = [h.pow(2).mean() * (k + 1) for k in range(3)]
        w = torch.ones(3, dtype=torch.float64, requires_grad=True)
        out = fn(w, losses, shared)
        grads = torch.autograd.grad(out, [w])
        if fn is original:
            want = (out, grads)
        else:
            torch.testing.assert_close((out, grads), want)


def test_a_python_list_mapped_by_a_math_function_is_kept_for_its_numbers():
    # class-balanced weights: `[1.0 - math.pow(beta, n) for n in counts]` makes Python floats,
    # which take no gradient (the reason was "may have a NaN/inf derivative")
    _, _, _, report = build("""
        def f(x, counts, beta):
            effective = [1.0 - math.pow(beta, n) for n in counts]
            return x * effective[0]
        """)
    (loop,) = report.loops
    assert "NaN/inf" not in loop.reason and "makes a Python number" in loop.reason, loop
