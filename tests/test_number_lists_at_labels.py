"""A module's list of per-class numbers read at an int label inside a per-sample loop (a focal
loss with per-class alpha: ``ALPHA = [0.25, 0.5, 0.75]``, ``c = int(target[i])``, ``-ALPHA[c] *
(1 - p[i, c]) ** gamma * p[i, c].log()``): a new-user trial found the loop "vectorized when
`ALPHA` is a tensor", a list at every call, so it ran as written. The numbers are stacked once
and gathered at the labels (``number_list_operands``), each product in the dtype the Python
number gives (float32 stays float32)."""
from __future__ import annotations

import warnings

import pytest
import torch

from rewrite import optimize_loss
from tests.helpers import equivalent_report, load_module
from tests.loop_helpers import namespace, normalise, rewrite_source, strategies

DTYPES = (torch.float32, torch.float64)

FOCAL = """
import torch
from torch import nn

ALPHA = [0.25, 0.5, 0.75]
WEIGHTS = (1, 2, 3)

def focal(p, target, gamma=2.0):
    loss = 0
    for i in range(p.shape[0]):
        c = int(target[i])
        loss += -ALPHA[c] * (1 - p[i, c]) ** gamma * p[i, c].log()
    return loss / p.shape[0]

def weighted(p, target):
    loss = 0
    for i in range(p.shape[0]):
        c = int(target[i])
        loss = loss + p[i, c].log() * WEIGHTS[c]
    return loss

class Focal(nn.Module):
    def __init__(self, alpha):
        super().__init__()
        self.alpha = alpha

    def forward(self, p, target):
        loss = 0
        for i in range(p.shape[0]):
            c = int(target[i])
            loss += -self.alpha[c] * (1 - p[i, c]) ** 2 * p[i, c].log()
        return loss
"""

GOLDEN_BODY = ("_loss_part = (_number_op((1 - _p_row[torch.arange(len(_p_row), "
               "device=_p_row.device), c]) ** gamma, -_ALPHA_stacked[c], _ALPHA_kind, 'mul', "
               "True) * _p_row[torch.arange(len(_p_row), device=_p_row.device), c].log())"
               ".sum(0) / p.shape[0]")


def _function(name: str) -> str:
    import ast
    tree = ast.parse(FOCAL)
    return ast.unparse(next(f for f in tree.body if getattr(f, "name", None) == name))


def _rewrite(src: str) -> tuple[str, object]:
    from passes.loops import vectorize_loops
    from tests.loop_helpers import context, dedent
    import ast
    tree = ast.parse(dedent(src))
    ctx = context(tree, namespace(ALPHA=[0.25, 0.5, 0.75]))
    ctx.local_names = frozenset({"p", "target", "gamma", "loss", "i", "c"})
    return ast.unparse(vectorize_loops.transform(tree, ctx)), ctx.report


def test_golden_list_item_at_a_label_is_gathered():
    code, report = _rewrite(_function("focal"))
    assert strategies(report) == {3: "batched"}, (report, code)
    assert "_ALPHA_kind = _number_kind(ALPHA)" in code, code
    assert GOLDEN_BODY in code, code


@pytest.mark.parametrize("change", [
    ("-ALPHA[c] * (1 - p[i, c])", "-ALPHA[c] * float(1 - p[i, c])"),  # a host number: stays one
    ("-ALPHA[c] * (1 - p[i, c])", "-ALPHA[c] * i * (1 - p[i, c])"),   # the index as a number
    ("c = int(target[i])", "c = target[i]"),                           # a tensor label
])
def test_other_reads_of_the_list_are_not_converted(change):
    code, report = _rewrite(_function("focal").replace(*change))
    assert "_number_op" not in code and "_ALPHA_stacked" not in code, code


def test_unchanged_without_a_list_read():
    src = _function("focal").replace("-ALPHA[c] * ", "-")
    code, _ = _rewrite(src)
    assert "_number_kind" not in code, code


def _probs(dtype, n=7, classes=3, special=False):
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(n, classes, generator=g, dtype=dtype), 1)
    if special:
        p[1, 0], p[2, 1], p[3, 2], p[4, :] = 0.0, float("nan"), float("inf"), 1 / 3  # ties
    target = torch.tensor([0, 1, 2, 0, 1, 2, 1][:n])
    return p.requires_grad_(), target


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("name", ["focal", "weighted"])
def test_label_gathers_vectorized_equivalent(tmp_path, dtype, special, name):
    user = load_module(tmp_path, FOCAL)
    (loop,) = equivalent_report(getattr(user, name), *_probs(dtype, special=special)).loops
    assert (loop.vectorized_runs, loop.original_runs) == (1, 0), loop


@pytest.mark.parametrize("dtype", DTYPES + (torch.float16,))
@pytest.mark.parametrize("alpha", [[0.25, 0.75, 0.1], (1, 2, 3), [0.1, 0.2, 0.3, 0.4],
                                   [torch.tensor(0.3, dtype=torch.float64)] * 3])
def test_attribute_alpha_equivalent(tmp_path, dtype, alpha):
    loss = load_module(tmp_path, FOCAL).Focal(alpha)
    p, target = _probs(dtype)
    if dtype == torch.float16:
        p = p.detach().requires_grad_()
    (loop,) = equivalent_report(loss, p, target).loops
    assert loop.vectorized_runs == 1, loop


@pytest.mark.parametrize("alpha", [[0.25, True, 0.1], [0.25, 1, 0.5], [0.25, 0.5, torch.tensor(0.75)]])
def test_other_lists_run_as_written(tmp_path, alpha):
    loss = load_module(tmp_path, FOCAL).Focal(alpha)
    (loop,) = equivalent_report(loss, *_probs(torch.float32)).loops
    assert loop.vectorized_runs == 0, loop


@pytest.mark.parametrize("label", [3, -4])
def test_label_out_of_the_list_raises_the_original_error(tmp_path, label):
    user = load_module(tmp_path, FOCAL)
    p, target = _probs(torch.float32, classes=4)
    target[2] = label
    with pytest.raises(IndexError) as written:
        user.focal(p, target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the original's own error: no fallback warning
        with pytest.raises(IndexError) as rewritten:
            optimize_loss(user.focal, compile=False)(p, target)
    assert str(rewritten.value) == str(written.value) == "list index out of range"
    assert rewritten.traceback[-1].lineno == written.traceback[-1].lineno


def test_negative_label_picks_from_the_end(tmp_path):
    user = load_module(tmp_path, FOCAL)
    p, target = _probs(torch.float64)
    target[0] = -1
    (loop,) = equivalent_report(user.focal, p, target).loops
    assert loop.vectorized_runs == 1, loop
