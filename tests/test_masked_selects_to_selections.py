"""``x.masked_select(m)`` by a boolean mask (the chatbot tutorial's per-step NLL of the non-padding
tokens, the mask a parameter): a selection of ``x`` broadcast to the mask, then masked dense ops;
the same values, gradients and dtype as the loop, and the loop as written when the mask is not
boolean or the call has another form."""
from __future__ import annotations

import pytest
import torch

from rewrite.testing import assert_equivalent
from tests.helpers import equivalent_report, load_module
from tests.loop_helpers import build, strategies

STEPS = """
def f(scores, y, mask):
    loss = 0
    for t in range(y.shape[0]):
        m = mask[t]
        nll = -torch.log(torch.softmax(scores[t], 1).gather(1, y[t].view(-1, 1)).squeeze(1))
        loss += nll.masked_select(m).mean()
    return loss
"""

FUNCTION = """
def f(scores, y, mask):
    loss = 0
    for t in range(y.shape[0]):
        err = (scores[t][:, 0] - y[t]) ** 2
        loss = loss + torch.masked_select(err, err > 0).sum()
    return loss
"""


def _inputs(dtype, special):
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 4, 6, dtype=dtype, generator=gen)
    y = torch.randint(0, 6, (5, 4), generator=gen)
    mask = torch.arange(5)[:, None] < torch.tensor([5, 3, 1, 4])[None, :]
    if special:  # NaN and inf where the mask excludes them, a step without tokens, ties
        scores[4, 1, :] = float("nan")
        scores[3, 2, 0] = float("inf")
        mask[2] = False
        scores[0, 0] = scores[0, 1]
    return scores.requires_grad_(), y, mask


def test_golden():
    _, _, code, report = build(STEPS)
    assert strategies(report) == {3: "vmap"}, (report, code)
    vectorized = code.split("else:")[0]
    assert "_mask_stacked.dtype == torch.bool" in vectorized, code  # a parameter: checked
    assert "_selected = nll.expand_as(_mask_row)" in vectorized, code
    assert "masked_select" not in vectorized, code


def test_no_change_without_masked_select():
    _, _, code, _ = build(STEPS.replace("nll.masked_select(m)", "nll[m]"))
    assert "expand_as" not in code, code


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("src", [STEPS, FUNCTION])
def test_equivalent(src, dtype, special):
    original, optimized, _, report = build(src)
    assert strategies(report) == {3: "vmap" if src is STEPS else "batched"}, report
    scores, y, mask = _inputs(dtype, special)
    assert_equivalent(original, optimized, scores, y.to(dtype) if src is FUNCTION else y, mask)


@pytest.mark.parametrize("src", [
    STEPS.replace("m = mask[t]", "m = mask[t] + 0"),  # not a row: may be an integer tensor
    STEPS.replace("masked_select(m)", "masked_select(mask=m)"),  # a keyword
])
def test_other_forms_stay_as_written(src):
    _, _, code, report = build(src)
    assert "expand_as" not in code and "masked_select" in code.split("else:")[0], (report, code)


def test_an_integer_mask_runs_as_written(tmp_path):
    # masked_select raises on an integer mask, where indexing by it would gather
    user = load_module(tmp_path, "import torch\n" + STEPS)
    scores, y, mask = _inputs(torch.float64, False)
    report = equivalent_report(user.f, scores, y, mask)
    assert (report.loops[0].vectorized_runs, report.loops[0].original_runs) == (1, 0)
    with pytest.raises(RuntimeError, match="masked_select"):
        user.f(scores, y, mask.long())
    from rewrite import optimize_loss
    fn = optimize_loss(user.f, compile=False)
    with pytest.raises(RuntimeError, match="masked_select"):
        fn(scores, y, mask.long())
    assert fn.report.loops[0].original_runs == 1


CHAINED = """
def f(sim, labels):
    total = 0
    for i in range(sim.shape[0]):
        pos = torch.masked_select(sim[i], labels == labels[i])
        pos = torch.masked_select(pos, pos < 0.9)
        neg = sim[i].masked_select(labels != labels[i])
        neg = neg.masked_select(neg + 0.1 > pos.min())
        total = total + neg.exp().sum() + (1 - pos).sum() + len(neg)
    return total
"""


def test_a_mask_of_the_selected_values_needs_no_broadcast():
    _, _, code, report = build(CHAINED)
    assert strategies(report) == {3: "batched"}, report
    vectorized = code.split("else:")[0]
    assert "masked_select" not in vectorized, code
    # the rows of `sim` are broadcast to the label masks; `pos` and `neg` to nothing
    assert "pos.expand_as" not in vectorized and "neg.expand_as" not in vectorized, code
    assert "_mask_5 = _keep_4 & (pos < 0.9)" in vectorized, code


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_selection_of_a_selection_is_equivalent(dtype):
    original, optimized, _, _ = build(CHAINED)
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(8, 4, dtype=dtype, generator=gen), dim=1)
    sim = (x @ x.T).requires_grad_()
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    assert_equivalent(original, optimized, sim, labels)
    ties = sim.detach().clone()
    ties[0, 1] = ties[0, 3] = ties[0, 5] = 0.5  # the hardest positive tied with negatives
    assert_equivalent(original, optimized, ties.requires_grad_(), labels)
    far = torch.full((8, 8), -1.0, dtype=dtype)  # no negative passes: every `neg` empty
    far[labels[:, None] == labels[None, :]] = 0.5
    assert_equivalent(original, optimized, far.requires_grad_(), labels)
