"""A branch on ``k == j`` whose arm does not vary, read by a cosine similarity
(``sink_own_item_selections``): the cosine of the arm once, selected after the op; the same
values, gradients and dtype as the loop, at NaN, inf and ties too, and where no iteration has
``k == j`` (the arm's operands then get no gradient, as in the original)."""
from __future__ import annotations

import pytest
import torch

from passes import ops
from rewrite.testing import assert_equivalent
from tests.loop_helpers import build

# GE2E's inner loop: the utterance's own speaker's centroid without the utterance
OWN = """
def f(emb, cents, j, w):
    e = emb[j, 0]
    scores = []
    for k in range(cents.shape[0]):
        if k == j:
            c = (emb[j].sum(dim=0) - e) / (emb.shape[1] - 1)
        else:
            c = cents[k]
        scores.append(w * F.cosine_similarity(e, c, dim=0))
    return torch.stack(scores).logsumexp(0)
"""

# the same in GE2E's nesting, with the index compared on the right
NESTED = """
def f(emb, cents, j, w):
    loss = 0
    for j in range(emb.shape[0]):
        for i in range(emb.shape[1]):
            e = emb[j, i]
            scores = []
            for k in range(cents.shape[0]):
                if j == k:
                    c = (emb[j].sum(dim=0) - e) / (emb.shape[1] - 1)
                else:
                    c = cents[k]
                scores.append(w * F.cosine_similarity(e, c, dim=0))
            scores = torch.stack(scores)
            loss = loss + torch.logsumexp(scores, dim=0) - scores[j]
    return loss
"""

# the loop item rebound to the own centroid (no `else`: the item is the default)
REBOUND = """
def f(emb, cents, j, w):
    e = emb[j, 0]
    scores = []
    for k, c in enumerate(cents):
        if k == j:
            c = (emb[j].sum(dim=0) - e) / (emb.shape[1] - 1)
        scores.append(w * F.cosine_similarity(e, c, dim=0))
    return torch.stack(scores).logsumexp(0)
"""


def _inputs(dtype, special):
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(4, 3, 5, dtype=dtype, generator=g)
    if special == "nan":
        emb[2, 1, 3] = float("nan")
    elif special == "inf":
        emb[3, 0, 1], emb[1, 2, 0] = float("inf"), float("-inf")
    elif special == "ties":
        emb[1] = emb[1, 0]  # every utterance of speaker 1 alike: equal cosines
    cents = emb.detach().mean(1).clone()
    if special == "nan centroid":
        cents[2, 3] = float("nan")  # speaker 2's own scores stay finite: only its centroid is not
    w = torch.tensor(10.0, dtype=dtype)
    return emb.requires_grad_(), cents.requires_grad_(), w.requires_grad_()


@pytest.mark.parametrize("special", [None, "nan", "inf", "ties", "nan centroid"])
@pytest.mark.parametrize("src", [OWN, NESTED, REBOUND], ids=["own", "nested", "rebound"])
def test_equivalent(src, special):
    """With a NaN in the centroid the own arm replaces, the original's gradient of that
    speaker's utterances is finite: every pair's cosine computed and the own one picked after
    (a dense product) would make it NaN (the deselected pair's zero cotangent times the NaN)."""
    original, optimized, code, _ = build(src)
    assert "_own = " in code, code
    for dtype in (torch.float32, torch.float64):
        emb, cents, w = _inputs(dtype, special)
        for j in (0, 2):
            assert_equivalent(original, optimized, emb, cents, j, w)


@pytest.mark.parametrize("special", [None, "nan", "inf"])
def test_no_iteration_selects_the_arm(special):
    """``j`` outside the range: the original never computes the own centroid, so ``emb`` gets
    only the other cosines' gradient (0 from the arm, not 0 * inf = NaN)."""
    original, optimized, code, report = build(OWN.replace("range(cents.shape[0])",
                                                          "range(1, cents.shape[0])"))
    assert report.loops[0].vectorized, report
    for dtype in (torch.float32, torch.float64):
        emb, cents, w = _inputs(dtype, special)
        with torch.no_grad():
            emb[0, 1:] = float("inf")  # the arm's operands, read only where k == 0
        for j, weight in ((0, w), (torch.tensor(0), w), (0, 10.0)):  # vmap; vmap; batched
            assert_equivalent(original, optimized, emb, cents, j, weight)


@pytest.mark.parametrize("src", [
    OWN.replace("(emb[j].sum(dim=0) - e)", "(emb[k].sum(dim=0) - e)"),  # the arm varies
    OWN.replace("if k == j:", "if k != j:"),                             # not the own item
    OWN.replace("scores.append(w * F.cosine_similarity(e, c, dim=0))",
                "scores.append(w * (e * c).sum())"),                     # no op to sink below
    OWN.replace("scores.append(w", "scores.append(c.sum() + w"),          # `c` read twice
    REBOUND.replace("        if k == j:", "        c = c * 2\n        if k == j:"),  # default computes
    OWN.replace("scores.append(w * F.cosine_similarity(e, c, dim=0))",     # read lazily
                "scores.append(w * F.cosine_similarity(e, c, dim=0) if w > 0 else w)"),
])
def test_other_forms_are_left_to_the_masks(src):
    original, optimized, code, _ = build(src)
    assert "_own" not in code, code
    emb, cents, w = _inputs(torch.float64, None)
    assert_equivalent(original, optimized, emb, cents, 1, w)


@pytest.mark.parametrize("spec", [s for s in ops.REGISTRY if s.sink_selection is not None],
                         ids=lambda s: s.aten)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_the_safe_operand_value_is_finite_in_every_dtype(spec, dtype):
    """The op at its ``sink_selection`` value, next to operands it is finite at: finite value
    and gradients, so a deselected iteration's zero cotangent stays zero (zeros are not: the
    cosine of a zero vector is NaN in float16)."""
    fn = eval(spec.functions[-1], {"torch": torch})
    for other in (torch.randn(6), torch.full((6,), 1e4), torch.full((6,), -1e-3)):
        a = other.to(dtype).requires_grad_()
        b = torch.full((6,), float(spec.sink_selection), dtype=dtype, requires_grad=True)
        out = fn(a, b, dim=0)
        grads = torch.autograd.grad(out, (a, b))
        assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)


def test_one_graph_under_torch_compile():
    """No dtype computed on the host (``torch.result_type``) in the vmapped bodies: a graph
    break there would run the whole vmap eagerly under ``torch.compile``."""
    _, optimized, _, _ = build(NESTED)
    emb, cents, w = _inputs(torch.float32, None)
    explained = torch._dynamo.explain(optimized)(emb, cents, 0, w)
    assert explained.graph_break_count == 0, explained.break_reasons


UNDER_CONDITION = """
def f(a, b, y):
    s = 0
    for i in range(len(a)):
        if y[i] > 0:
            s = s + F.cosine_similarity(a[i], b[i], dim=0)
    return s
"""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_cosine_under_a_tensor_condition_is_masked(dtype):
    """The cosine is total (``OpSpec.total``): under a tensor condition it runs on every
    iteration, the deselected ones' rows zeros, instead of keeping the loop."""
    original, optimized, _, report = build(UNDER_CONDITION)
    assert report.loops[0].vectorized, report
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 4, dtype=dtype, generator=g), torch.randn(6, 4, dtype=dtype, generator=g)
    a[1, 2], b[3, 0], a[4] = float("nan"), float("inf"), 0.0  # rows 1, 3 deselected
    y = torch.tensor([1.0, -1.0, 2.0, -3.0, 1.0, 1.0], dtype=dtype)
    assert_equivalent(original, optimized, a.requires_grad_(), b.requires_grad_(), y)
