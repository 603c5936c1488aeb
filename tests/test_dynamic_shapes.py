"""Dynamic shapes under torch.compile: batch sizes changing every step, a smaller last batch,
batch 1, batch 0 and variable sequence lengths give the original's results (value, gradients,
exceptions), with Dynamo's graphs counted: at most 2 per frame for a changing batch size (static,
then one with a dynamic batch dimension) and never the recompile-limit fall-through (made an error
here).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import rewrite
from rewrite.testing import assert_equivalent
from tests.helpers import load_module

LOSSES = '''
import torch
import torch.nn.functional as F


def per_sample_mse(pred, target):
    loss = 0
    for i in range(pred.shape[0]):
        loss += ((pred[i] - target[i]) ** 2).mean()
    return loss / pred.shape[0]


def per_sample_ce(logits, labels):
    losses = []
    for i in range(len(logits)):
        losses.append(F.cross_entropy(logits[i:i + 1], labels[i:i + 1]))
    return torch.stack(losses).mean()


def masked_tokens(logits, target):
    log_probs = F.log_softmax(logits, dim=-1).reshape(-1, logits.shape[-1])
    target = target.reshape(-1)
    loss = 0.0
    count = 0
    for i in range(target.shape[0]):
        if target[i] != 0:
            loss += -log_probs[i, target[i]]
            count += 1
    return loss / max(count, 1)
'''

BATCHES = [8, 8, 12, 5, 12, 3]  # changing every step, then a smaller last batch


def make(name: str, n: int, t: int = 6, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed + n)
    if name == "per_sample_mse":
        return torch.randn(n, 4, generator=g, requires_grad=True), torch.randn(n, 4, generator=g)
    if name == "per_sample_ce":
        logits = torch.randn(n, 5, generator=g, requires_grad=True)
        return logits, torch.randint(5, (n,), generator=g)
    target = torch.randint(1, 7, (n, t), generator=g)
    target[:, t // 2:] = 0  # right padding
    return torch.randn(n, t, 7, generator=g, requires_grad=True), target


@pytest.fixture
def losses(tmp_path):
    return load_module(tmp_path, LOSSES)


@pytest.fixture
def compiled(losses):
    """(original, optimized, graphs): optimize_loss on a Dynamo backend that records the frame of
    every graph it compiles, strict, with the recompile limit an error instead of a silent run of
    the eager frame."""
    torch.compiler.reset()  # forget dynamic dimensions earlier tests taught Dynamo

    def build(name):
        graphs = []

        def counting(gm, example_inputs):
            graphs.append(torch._guards.CompileContext.current_compile_id().frame_id)
            return gm.forward

        original = getattr(losses, name)
        return original, rewrite.optimize_loss(original, backend=counting, strict=True), graphs
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        yield build
    torch.compiler.reset()


def same_as_original(original, fast, args):
    try:
        original(*args)
    except Exception as exc:  # noqa: BLE001 - the optimized loss must raise the same
        with pytest.raises(type(exc)):
            fast(*args)
        return
    assert_equivalent(original, fast, *args)


NAMES = ["per_sample_mse", "per_sample_ce", "masked_tokens"]


@pytest.mark.parametrize("name", NAMES)
def test_changing_batch_size_compiles_at_most_two_graphs_per_frame(compiled, name):
    # masked_tokens has three frames: `max(count, 1)` needs the count as a Python int, and
    # whether any token was selected decides if `loss` stays the Python float 0.0 (graph breaks)
    original, fast, graphs = compiled(name)
    for n in BATCHES:
        same_as_original(original, fast, make(name, n))
    per_frame = {frame: graphs.count(frame) for frame in graphs}
    assert max(per_frame.values()) <= 2, f"graphs per frame {per_frame} for batches {BATCHES}"
    assert len(per_frame) <= (3 if name == "masked_tokens" else 1)


@pytest.mark.parametrize("name", NAMES)
def test_changing_batch_size_gives_the_originals_results(compiled, name):
    original, fast, _ = compiled(name)
    for n in BATCHES:
        same_as_original(original, fast, make(name, n))
    assert not fast.report.fallbacks


@pytest.mark.parametrize("name", NAMES)
def test_batch_one_and_batch_zero(compiled, name):
    # Dynamo always specialises sizes 0 and 1, so these two may add a graph each.
    original, fast, graphs = compiled(name)
    for n in [4, 1, 0, 4, 1, 0]:
        same_as_original(original, fast, make(name, n))
    assert max(graphs.count(frame) for frame in graphs) <= 2 + 2


def test_variable_sequence_lengths(compiled):
    original, fast, graphs = compiled("masked_tokens")
    for t in [6, 9, 4, 9, 2]:
        same_as_original(original, fast, make("masked_tokens", 3, t=t))
    assert not fast.report.fallbacks
