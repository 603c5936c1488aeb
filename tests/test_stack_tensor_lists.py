"""Lists and tuples of tensors as loss arguments (deep supervision heads, feature groups,
``.split`` chunks): stacked at run time when their items agree, else the loop runs as written;
and the run-time counts of loops in the helpers a loss calls."""
from __future__ import annotations

import inspect
import warnings

import pytest
import torch

from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module

USER_CODE = '''
import torch
import torch.nn.functional as F


def deep_supervision(preds, targets):
    loss = 0
    for p, t in zip(preds, targets):
        loss += F.mse_loss(p, t)
    return loss / len(preds)


def indexed(heads, target, weights):
    total = 0
    for i in range(len(heads)):
        total = total + weights[i] * (heads[i] - target).abs().mean()
    return total


def chunks(output, target):
    parts = output.split(1, 1)
    loss = 0
    for j in range(output.shape[1]):
        loss += ((parts[j].squeeze(1) - target[:, j]) ** 2).mean()
    return loss


def groups(g_s, g_t):
    return sum([(a - b).pow(2).mean() for a, b in zip(g_s, g_t)])


def per_row(x):
    total = 0
    for i in range(len(x)):
        total = total + x[i] * x[i]
    return total


def calls_helper(x):
    return 2 * per_row(x)
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("stack"), USER_CODE)


def _heads(dtype, shapes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=gen, dtype=dtype, requires_grad=True) for s in shapes]


def _runs(fn):
    [loop] = [loop for loop in fn.report.loops if loop.vectorized]
    return loop.vectorized_runs, loop.original_runs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("kind", [list, tuple], ids=["list", "tuple"])
def test_equal_shapes_are_stacked_and_run_vectorized(user, dtype, kind):
    preds = kind(_heads(dtype, [(2, 5)] * 3))
    targets = kind(_heads(dtype, [(2, 5)] * 3, seed=1))
    fn = optimize_loss(user.deep_supervision, compile=False)
    assert_equivalent(user.deep_supervision, fn, preds, targets)
    assert fn(preds, targets).dtype == dtype
    assert _runs(fn) == (1, 0)
    assert "`preds`, `targets` are a tensor or a list or tuple of tensors" in str(fn.report)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_items_that_differ_run_the_loop_as_written(user, dtype):
    fn = optimize_loss(user.deep_supervision, compile=False)
    shapes = _heads(dtype, [(2, 8), (2, 4)]), _heads(dtype, [(2, 8), (2, 4)], seed=1)
    assert_equivalent(user.deep_supervision, fn, *shapes)
    assert _runs(fn) == (0, 1)
    mixed = _heads(dtype, [(2, 5)]) + _heads(torch.float16, [(2, 5)])
    fn = optimize_loss(user.deep_supervision, compile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_equivalent(user.deep_supervision, fn, mixed, [m.detach() for m in mixed])
    assert _runs(fn) == (0, 1)  # a float16 item: not stacked (stack would promote)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_tensors_still_run_vectorized(user, dtype):
    fn = optimize_loss(user.deep_supervision, compile=False)
    preds, targets = torch.stack(_heads(dtype, [(2, 5)] * 3)), torch.randn(3, 2, 5, dtype=dtype)
    assert_equivalent(user.deep_supervision, fn, preds, targets)
    assert _runs(fn) == (1, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_indexed_lists_and_split_chunks(user, dtype):
    heads = _heads(dtype, [(3, 4)] * 4)
    target = torch.randn(3, 4, dtype=dtype)
    weights = [torch.tensor(w, dtype=dtype, requires_grad=True) for w in (1.0, 0.5, 0.25, 0.0)]
    fn = optimize_loss(user.indexed, compile=False)
    assert_equivalent(user.indexed, fn, heads, target, weights)
    assert _runs(fn) == (1, 0)
    output = torch.randn(2, 5, 6, dtype=dtype, requires_grad=True)
    fn = optimize_loss(user.chunks, compile=False)
    assert_equivalent(user.chunks, fn, output, torch.randn(2, 5, 6, dtype=dtype))
    assert _runs(fn) == (1, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_comprehension_over_zipped_lists(user, dtype):
    g_s, g_t = _heads(dtype, [(4, 3)] * 3), _heads(dtype, [(4, 3)] * 3, seed=1)
    fn = optimize_loss(user.groups, compile=False)
    assert_equivalent(user.groups, fn, g_s, g_t)
    assert _runs(fn) == (1, 0)
    # the check of the items is generated code: not a comprehension of the user's
    line = inspect.getsourcelines(user.groups)[1] + 1
    assert [loop.lineno for loop in fn.report.loops] == [line]


def test_stacked_lists_under_torch_compile(user):
    torch._dynamo.reset()
    fn = optimize_loss(user.deep_supervision, backend="aot_eager", hoist=False)
    preds, targets = _heads(torch.float32, [(2, 5)] * 3), _heads(torch.float32, [(2, 5)] * 3, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        assert_equivalent(user.deep_supervision, fn, preds, targets)
    assert fn.report.fallbacks == []


def test_loops_of_called_helpers_are_counted(user):
    fn = optimize_loss(user.calls_helper, compile=False)
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert_equivalent(user.calls_helper, fn, x)
    assert _runs(fn) == (1, 0)
    fn = optimize_loss(user.calls_helper, compile=False)  # counts its first call
    assert fn([1.0, 2.0]) == 10.0  # a list of floats: the helper's loop runs as written
    [loop] = fn.report.loops
    assert (loop.vectorized_runs, loop.original_runs) == (0, 1)
    assert "`x` was not a tensor or a list or tuple of tensors" in loop.last_failure


PER_CLASS = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


def dice(p, t, smooth=1.0):
    return 1 - (2 * (p * t).sum() + smooth) / (p.sum() + t.sum() + smooth)


class PerClassDice(nn.Module):
    def __init__(self, weight, ignore_index):
        super().__init__()
        self.weight = weight
        self.ignore_index = ignore_index

    def forward(self, pred, target):
        onehot = F.one_hot(target, pred.shape[1]).permute(0, 3, 1, 2).to(pred.dtype)
        total = 0
        for c in range(pred.shape[1]):
            if c != self.ignore_index:
                total += self.weight[c] * dice(pred[:, c], onehot[:, c])
        return total / pred.shape[1]


def loss(pred, target, weight):
    return PerClassDice(weight, 1)(pred, target)
'''


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_per_class_loop_with_a_condition_on_the_class_and_class_weights(tmp_path, dtype):
    # `if c != self.ignore_index`, `self.weight[c]`, a one-hot target permuted to [B, C, ...]:
    # batched (the condition a mask over classes), and it runs so.
    module = load_module(tmp_path, PER_CLASS)
    gen = torch.Generator().manual_seed(3)
    pred = torch.rand(2, 4, 5, 5, generator=gen, dtype=dtype, requires_grad=True)
    target = torch.randint(0, 4, (2, 5, 5), generator=gen)
    weight = torch.rand(4, generator=gen, dtype=dtype, requires_grad=True)
    fn = optimize_loss(module.loss, compile=False)
    assert_equivalent(module.loss, fn, pred, target, weight)
    assert fn(pred, target, weight).dtype == dtype
    [loop] = fn.report.loops
    assert loop.strategy == "batched" and (loop.vectorized_runs, loop.original_runs) == (1, 0)
