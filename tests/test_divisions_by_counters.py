"""A folded sum divided by its loop's counter in the next statement (``divisions_by_counters``):
divided on the device, the original's ZeroDivisionError decided at the division. The same value,
every gradient, dtype and Python type as the loop, with nothing, one item or all selected and NaN
in the items not selected; one graph under torch.compile and one host read for the examples."""
from __future__ import annotations

import importlib
import warnings

import pytest
import torch

import rewrite
from rewrite.testing import assert_equivalent
from rewrite.tools.host_syncs import count_host_syncs
from tests.loop_helpers import build, same_python_types

# masked_mse's loop: a Python float rebound to tensors, a count of `.item()` ints, `continue`
MSE = """
def f(pred, target):
    total = 0.0
    n_valid = 0
    for i in range(pred.shape[0]):
        mask = target[i] > 0
        if mask.sum() == 0:
            continue
        diff = pred[i][mask] - target[i][mask]
        total = total + (diff ** 2).sum()
        n_valid += mask.sum().item()
    return total / n_valid
"""

# masked_nll_pad's loop: added to in place, an int count, divided in an assignment
NLL = """
def f(logp, target):
    loss = 0.0
    count = 0
    for i in range(target.shape[0]):
        if target[i] != 0:
            loss += -logp[i, target[i]]
            count += 1
    loss = loss / count
    return loss
"""

# a count of floats (`.item()` of float64 weights): a weak scalar, in the quotient's dtype
WEIGHTED = """
def f(pred, target, w):
    total = 0
    n = 0
    for i in range(pred.shape[0]):
        if target[i] > 0:
            total = total + (pred[i] - target[i]) ** 2
            n += w[i].item()
    return total / n
"""

# a tensor sum added to in place: the caller's tensor changes, as in the loop
IN_PLACE = """
def f(acc, x, m):
    count = 0
    for i in range(x.shape[0]):
        if m[i]:
            acc += x[i]
            count += 1
    return acc / count
"""

# every iteration adds to the sum: no host read at all (a count of 0 divides to inf / NaN)
ALWAYS_SUMMED = """
def f(x, m):
    loss = 0.0
    n = 0
    for i in range(x.shape[0]):
        loss = loss + x[i].sum()
        if m[i] > 0:
            n += 1
    return loss / n
"""


def _rewritten_line(code: str, start: str) -> str:
    """The last line of ``code`` starting with ``start``."""
    return next(line.strip() for line in reversed(code.splitlines())
                if line.strip().startswith(start))


def test_golden_divisions():
    _, _, code, report = build(MSE)
    assert _rewritten_line(code, "return") == \
        "return _total_quotient if _total_divided else total / n_valid"
    assert "`total / n_valid` divided on the device" in report.loops[0].reason
    assert "n_valid = (" not in code  # the count is not read back
    _, _, code, _ = build(NLL)
    assert _rewritten_line(code, "loss = _loss") == \
        "loss = _loss_quotient if _loss_divided else loss / count"
    assert _rewritten_line(code, "_loss_sum +=") == "_loss_sum += _outs[0]"


@pytest.mark.parametrize("src, kept", [
    # a count of another loop
    (NLL.replace("            count += 1\n", "").replace(
        "    loss = loss / count", "    for j in range(3):\n        count += 1\n"
        "    loss = loss / count"), "loss = loss / count"),
    # the count read again later
    (NLL.replace("return loss", "return loss, count"), "loss = loss / count"),
    # the count read twice by the division
    (NLL.replace("loss = loss / count", "loss = loss / count + count"),
     "loss = loss / count + count"),
])
def test_golden_no_change(src, kept):
    _, _, code, report = build(src)
    assert "_quotient" not in code and "divided on the device" not in report.loops[0].reason
    assert _rewritten_line(code, kept.split(" =")[0] + " =") == kept


def _mse_inputs(dtype, selected):
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(4, 5, dtype=dtype, generator=g) * 4
    target = torch.rand(4, 5, dtype=dtype, generator=g) * 4
    target[torch.rand(4, 5, generator=g) < 0.4] = 0.0
    if selected == "one":
        target[[0, 1, 3]] = 0.0
    elif selected == "none":
        target.zero_()
    elif selected == "nan":  # NaN where the target has no value: never read by the loop
        pred = pred.masked_fill(target == 0, float("nan"))
    return pred.requires_grad_(), target


def _nll_inputs(dtype, selected):
    g = torch.Generator().manual_seed(2)
    logp = torch.randn(6, 5, dtype=dtype, generator=g).log_softmax(-1)
    target = torch.randint(1, 5, (6,), generator=g)
    target[[1, 4]] = 0
    if selected == "one":
        target[[0, 2, 3]] = 0
    elif selected == "none":
        target.zero_()
    elif selected == "nan":
        logp[target == 0] = float("nan")
    return logp.requires_grad_(), target


def _weighted_inputs(dtype, selected):
    g = torch.Generator().manual_seed(3)
    pred, target = torch.rand(2, 5, dtype=dtype, generator=g) * 4
    w = torch.rand(5, dtype=torch.float64, generator=g)
    target[1] = 0.0
    if selected == "one":
        target[[0, 2, 3]] = 0.0
    elif selected == "none":
        target.zero_()
    elif selected == "nan":
        pred = pred.masked_fill(target == 0, float("nan"))
    return pred.requires_grad_(), target, w.requires_grad_()


CASES = {MSE: _mse_inputs, NLL: _nll_inputs, WEIGHTED: _weighted_inputs}


@pytest.mark.parametrize("selected", ["all", "one", "none", "nan"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("src", list(CASES), ids=["mse", "nll", "weighted"])
def test_same_results_as_the_loop(src, dtype, selected):
    original, optimized, code, _ = build(src)
    assert "_quotient" in code
    inputs = CASES[src](dtype, selected)
    if selected == "none":  # the Python number 0.0 (or 0) divided by the count 0
        with pytest.raises(ZeroDivisionError):
            original(*inputs)
        with pytest.raises(ZeroDivisionError):
            optimized(*inputs)
        return
    want, got = original(*inputs), optimized(*inputs)
    assert same_python_types(want, got) and want.dtype == got.dtype
    assert_equivalent(original, optimized, *inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("any_selected", [True, False])
def test_a_tensor_sum_changes_in_place_and_divides_by_zero(dtype, any_selected):
    original, optimized, code, _ = build(IN_PLACE)
    assert "_acc_sum += " in code
    x = torch.randn(5, 3, dtype=dtype)
    m = torch.tensor([True, False, True, False, False]) & any_selected
    acc_a, acc_b = torch.ones(3, dtype=dtype), torch.ones(3, dtype=dtype)
    want, got = original(acc_a, x, m), optimized(acc_b, x, m)  # count 0: inf, no exception
    torch.testing.assert_close(got, want, equal_nan=True)
    torch.testing.assert_close(acc_b, acc_a)  # the caller's tensor, changed in place


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_a_sum_of_every_iteration_is_divided_without_a_host_read(dtype):
    original, optimized, code, _ = build(ALWAYS_SUMMED)
    assert "_loss_divided = True" in code
    x = torch.randn(4, 3, dtype=dtype, requires_grad=True)
    for m in (torch.tensor([1, 0, 2, 0]), torch.zeros(4, dtype=torch.long)):
        assert_equivalent(original, optimized, x, m)
        assert not count_host_syncs(optimized, x, m)


def _optimized_example(name):
    module = importlib.import_module(f"examples.{name}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fast = rewrite.optimize_loss(module.naive, compile=False)
        fast(*module.make_inputs("small"))  # the first call of a signature checks and settles
    return module, fast


@pytest.mark.parametrize("name", ["masked_mse", "masked_nll_pad"])
def test_examples_read_the_device_once(name):
    module, fast = _optimized_example(name)
    # was 3 (masked_mse: two selection tests and the count's .item()), 2 (masked_nll_pad)
    assert count_host_syncs(fast, *module.make_inputs("small")) == {"_local_scalar_dense": 1}


@pytest.mark.parametrize("name", ["masked_mse", "masked_nll_pad"])
def test_examples_compile_to_one_graph(name):
    module, fast = _optimized_example(name)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(fast)(*module.make_inputs("small"))
    torch._dynamo.reset()
    # was 3 graphs: the selection tests and the count's read back broke them
    assert explained.graph_count == 1, explained.break_reasons
