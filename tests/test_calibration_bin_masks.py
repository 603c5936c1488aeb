"""A calibration error's bin masks, as public ECE losses write them (temperature scaling's
``_ECELoss``): ``in_bin = conf.gt(lo.item()) * conf.le(hi.item())``, then ``conf[in_bin]``
reduced under ``if prop_in_bin.item() > 0``.

* ``*``/``+`` of two masks one of which is a boolean op's call is a mask
  (``loop_rules.MASK_BINOPS``): the selections become masked reductions and the loop runs
  vectorized. Before, the mask went unrecognised, the loop was vmapped, and ``conf[in_bin]``
  raised under vmap on every call: the whole function fell back to the original.
* ``(c > lo) * (c <= hi)``, of comparisons only, may be an int of Python bools: not converted,
  the loop is kept at rewrite time with a reason saying so (it raised under vmap too).
* A host float compared with a name the loop does not bind, ``c > lo.item()``, is compared by
  ``rules.HOST_COMPARED``'s run-time pick (a weak scalar next to a tensor): before, a check that
  ``c`` is no tensor contradicted the mask conversion's check that it is one, and the loop
  reported vectorized never ran so.
* ``x[(i > 0) * (i < 3)]`` of Python ints indexes with an int: never taken for a mask.
"""
from pathlib import Path

import pytest
import torch

from rewrite import assert_equivalent, optimize_loss
from tests.helpers import golden_text, load_module, optimized_and_vectorized
from tests.loop_helpers import rewrite_source

GOLDEN = Path(__file__).parent / "golden" / "calibration_bin_masks"
DTYPES = [torch.float32, torch.float64]

METHODS = '''
def ece_methods(logits, labels, lowers, uppers):
    softmaxes = F.softmax(logits, dim=1)
    confidences, predictions = torch.max(softmaxes, 1)
    accuracies = predictions.eq(labels)
    ece = torch.zeros(1, dtype=logits.dtype)
    for bin_lower, bin_upper in zip(lowers, uppers):
        in_bin = confidences.gt(bin_lower.item()) * confidences.le(bin_upper.item())
        prop_in_bin = in_bin.float().mean()
        if prop_in_bin.item() > 0:
            accuracy_in_bin = accuracies[in_bin].float().mean()
            avg_confidence_in_bin = confidences[in_bin].mean()
            ece += torch.abs(avg_confidence_in_bin - accuracy_in_bin) * prop_in_bin
    return ece
'''

COMPARES = '''
def ece_compares(logits, labels, lowers, uppers):
    conf, pred = logits.softmax(1).max(1)
    acc = (pred == labels).to(logits.dtype)
    total = logits.new_zeros(())
    for lo, hi in zip(lowers, uppers):
        in_bin = (conf > lo.item()) & (conf <= hi.item())
        prop = in_bin.to(logits.dtype).mean()
        if prop.item() > 0:
            total = total + prop * (conf[in_bin].mean() - acc[in_bin].mean()).abs()
    return total
'''

PRODUCTS_OF_COMPARES = '''
def ece_products_of_compares(logits, labels, lowers, uppers):
    conf, pred = logits.softmax(1).max(1)
    acc = (pred == labels).to(logits.dtype)
    total = logits.new_zeros(())
    for lo, hi in zip(lowers, uppers):
        in_bin = (conf > lo) * (conf <= hi)
        prop = in_bin.to(logits.dtype).mean()
        if prop.item() > 0:
            total = total + prop * (conf[in_bin].mean() - acc[in_bin].mean()).abs()
    return total
'''

PYTHON_BOOLS = '''
def python_bool_product(x):
    total = 0
    for i in range(x.shape[0]):
        total = total + x[(i > 0) * (i < 3)].sum() * i
    return total
'''

SOURCE = "import torch\nimport torch.nn.functional as F\n" + "".join(
    (METHODS, COMPARES, PRODUCTS_OF_COMPARES, PYTHON_BOOLS))


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("ece"), SOURCE)


def inputs(dtype, kind):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 6, generator=g, dtype=dtype) * 2
    labels = torch.randint(0, 6, (40,), generator=g)
    if kind == "inf":
        logits[3, 2] = float("inf")  # a NaN row: its confidence in no bin
    if kind == "ties":
        logits[:] = 0.0  # every confidence 1/6: one bin, the others empty
    edges = torch.linspace(0, 1, 16, dtype=dtype)
    return logits.requires_grad_(), labels, edges[:-1], edges[1:]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["plain", "inf", "ties"])
@pytest.mark.parametrize("name", ["ece_methods", "ece_compares"])
def test_bin_masks_run_vectorized(user, name, kind, dtype):
    optimized_and_vectorized(getattr(user, name), *inputs(dtype, kind))


@pytest.mark.parametrize("dtype", DTYPES)
def test_bounds_of_another_dtype(user, dtype):
    # float64 bounds for float32 confidences and the reverse: the host float next to the
    # confidences is a weak scalar, compared in their dtype, as written
    logits, labels, lo, hi = inputs(dtype, "plain")
    other = torch.float32 if dtype == torch.float64 else torch.float64
    optimized_and_vectorized(user.ece_compares, logits, labels, lo.to(other), hi.to(other))


@pytest.mark.parametrize("dtype", DTYPES)
def test_products_of_comparisons_are_kept_with_a_reason(user, dtype):
    opt = optimize_loss(user.ece_products_of_compares, compile=False, strict=True)
    assert_equivalent(user.ece_products_of_compares, opt, *inputs(dtype, "plain"))
    loop, = opt.report.loops
    assert not loop.vectorized
    assert "boolean mask indexing `conf[in_bin]`" in loop.reason
    assert "`*`/`+` of comparisons make ints of Python bools" in loop.reason


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_product_of_python_bools_indexes_with_an_int(user, dtype):
    x = torch.randn(5, 3, dtype=dtype, requires_grad=True)
    opt = optimize_loss(user.python_bool_product, compile=False, strict=True)
    assert_equivalent(user.python_bool_product, opt, x)


def test_golden_methods_form():
    code, _ = rewrite_source(METHODS)
    assert code == golden_text(GOLDEN / "ece_methods.py", code)


def test_golden_products_of_comparisons_unchanged():
    code, _ = rewrite_source(PRODUCTS_OF_COMPARES)
    assert code == golden_text(GOLDEN / "ece_products_of_compares.py", code)
