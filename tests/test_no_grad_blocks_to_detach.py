"""``no_grad_blocks_to_detach``: a ``with torch.no_grad():`` block of plain assignments in a loop
body is the same assignments, detached, so the loop is vectorized. Value, every gradient and
dtype against the original (float32, float64, NaN/inf), tuple results (``max(dim)``), and the
blocks that keep the loop (in-place updates, ``as``, other context managers)."""
from __future__ import annotations

import pytest
import torch

from passes.grad_free import detached
from rewrite import assert_equivalent
from tests.loop_helpers import build, strategies

WEIGHTS = """
def f(x, t):
    loss = 0
    for i in range(x.shape[0]):
        with torch.no_grad():
            w = torch.sigmoid(x[i]).mean()
            top = x[i].max(0)
        loss = loss + w * (x[i] - t[i]).pow(2).sum() + top.values.sum()
    return loss
"""


def _x(*shape, dtype, seed=0):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("special", [None, float("nan"), float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weights_under_no_grad_are_vectorized_and_take_no_gradient(special, dtype):
    naive, fast, code, report = build(WEIGHTS)
    assert strategies(report) == {3: "vmap"}, report.loops[0].reason  # max(dim): vmap
    # (the loop as written follows the vectorized form: for 16-bit items added twice an iteration)
    assert "no_grad" not in code.split("optimize_loss: as written")[0].split("else:")[0]
    x, t = _x(5, 3, 2, dtype=dtype), _x(5, 3, 2, dtype=dtype, seed=1)
    if special is not None:
        x[2, 1, 0] = special
    assert_equivalent(naive, fast, x.requires_grad_(), t)
    assert fast(x, t).dtype == dtype


def test_detached_keeps_structure_and_numbers():
    x = torch.randn(3, 4, requires_grad=True)
    top = detached(x.max(0))
    assert type(top) is type(x.max(0)) and not top.values.requires_grad
    assert detached((x * 2, 3.5, [x]))[1] == 3.5
    assert not detached((x * 2, 3.5, [x]))[2][0].requires_grad


@pytest.mark.parametrize("block", [
    "with torch.no_grad():\n            centers.mul_(0.9)",                # in-place update
    "with torch.no_grad() as g:\n            w = x[i].sum()",               # `as`
    "with torch.enable_grad():\n            w = x[i].sum()",               # another manager
    "with torch.no_grad():\n            w = torch.add(x[i], 1, out=centers)",  # out=
])
def test_blocks_that_keep_the_loop(block):
    naive, fast, code, report = build(f"""
def f(x, centers):
    loss = 0
    for i in range(x.shape[0]):
        w = 1.0
        {block}
        loss = loss + (x[i] * w).sum()
    return loss
""")
    assert strategies(report) == {3: "kept"}
    assert "`with` inside the loop" in report.loops[0].reason


SMOOTHING = """
def f(logits, target, eps):
    logp = torch.log_softmax(logits, dim=-1)
    C = logits.shape[-1]
    loss = 0.0
    for i in range(logits.shape[0]):
        with torch.no_grad():
            true_dist = torch.full_like(logp[i], eps / (C - 1))
            true_dist[target[i]] = 1 - eps
            true_dist.clamp_(min=0.0)
        loss += (-true_dist * logp[i]).sum()
    return loss / logits.shape[0]
"""


@pytest.mark.parametrize("block", [
    # writes into what the block did not make: a row of an input, a view, a leaf with grad
    "with torch.no_grad():\n            c = centers[0]\n            c[0] = 1.0",
    "with torch.no_grad():\n            c = centers.view(-1)\n            c.fill_(1.0)",
    "with torch.no_grad():\n            c = torch.zeros(3, requires_grad=True)\n"
    "            c[0] = 1.0",
])
def test_writes_into_what_the_block_did_not_make_keep_the_block(block):
    naive, fast, code, report = build(f"""
def f(x, centers):
    loss = 0
    for i in range(x.shape[0]):
        {block}
        loss = loss + (x[i] * centers[1]).sum()
    return loss
""")
    assert "_detached" not in code and "with torch.no_grad()" in code
    assert report.loops[0].strategy != "vmap" and report.loops[0].strategy != "batched"


def test_golden_writes_into_a_tensor_the_block_made():
    """Label smoothing's target row: made, written (``t[k] = v``, ``t.clamp_``), detached once."""
    _, _, code, report = build(SMOOTHING)
    assert strategies(report) == {5: "vmap"}, report.loops[0].reason
    body = code[code.index("def _body"):code.index("_outs = ")]  # the mapped body
    assert "no_grad" not in body and body.count("_detached(true_dist)") == 1, code
    assert body.index("_detached(true_dist)") > body.index(".scatter(")


@pytest.mark.parametrize("special", [None, float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_written_block_tensor_equivalent(special, dtype):
    naive, fast, _, _ = build(SMOOTHING)
    logits, target = _x(6, 5, dtype=dtype), torch.tensor([0, 4, 2, 2, 1, 3])
    if special is not None:
        logits[1, 2] = special
    assert_equivalent(naive, fast, logits.requires_grad_(), target, 0.1)
    assert fast(logits, target, 0.1).dtype == dtype
