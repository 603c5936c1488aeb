"""A same-module helper that iterates a list and returns its items' mean (the Lovasz ``mean``,
with or without a NaN filter, returning ``empty`` or raising on no item), called on a list a
loop builds: ``passes/loops/list_mean_helpers.py``. Golden call rewrite and its no-change
cases, the runtime helper on lists and stacked items, and whole losses against the original
(value, every gradient, dtype, float32/float64; one item, no item, the filter on)."""
from __future__ import annotations

import ast
import inspect
import math

import pytest
import torch

import rewrite
from passes.loops import list_mean_helpers
from rewrite.frontend import parse_function
from rewrite.testing import assert_equivalent, outputs_and_gradients
from tests.helpers import load_module
from tests.loop_helpers import context

SOURCE = '''
from itertools import filterfalse
import torch


def isnan(x):
    return x != x


def mean(values, empty=0):
    """nanmean-free mean that accepts generators."""
    values = iter(values)
    try:
        n = 1
        acc = next(values)
    except StopIteration:
        return empty
    for n, v in enumerate(values, 2):
        acc += v
    if n == 1:
        return acc
    return acc / n


def nan_mean(l, ignore_nan=False, empty=0):
    l = iter(l)
    if ignore_nan:
        l = filterfalse(isnan, l)
    try:
        n = 1
        acc = next(l)
    except StopIteration:
        if empty == 'raise':
            raise ValueError('Empty mean')
        return empty
    for n, v in enumerate(l, 2):
        acc = acc + v
    if n == 1:
        return acc
    return acc / n


def unbiased(values):
    values = iter(values)
    try:
        n = 1
        acc = next(values)
    except StopIteration:
        return 0
    for n, v in enumerate(values, 2):
        acc += v
    if n == 1:
        return acc
    return acc / (n - 1)


def present_classes(scores, labels):
    losses = []
    for c in range(scores.shape[1]):
        fg = (labels == c).to(scores.dtype)
        if fg.sum() == 0:
            continue
        losses.append(((fg - scores[:, c]) ** 2).sum())
    return mean(losses)


def filtered(scores, labels, ignore_nan, empty):
    losses = []
    for c in range(scores.shape[1]):
        fg = (labels == c).to(scores.dtype)
        if fg.sum() == 0:
            continue
        losses.append((fg - scores[:, c]).sum())  # a constant derivative: NaN items filtered
    return nan_mean(losses, ignore_nan, empty=empty)


def rows_kept(x):
    losses = []
    for i in range(x.shape[0]):
        losses.append(x[i])
    return mean(losses)


def per_row(x):
    return mean((r ** 2).sum() for r in x)


def per_row_list(x, empty):
    return nan_mean([(r - r.mean()).abs().sum() for r in x], empty=empty)


def rows_generator(x):
    return mean(r for r in x)


def valid_values(r, ignore=None):
    if ignore is None:
        return r
    valid = r != ignore
    return r[valid]


def per_row_valid(x, ignore):
    return mean(valid_values(r, ignore).exp().sum() for r in x)


def per_row_valid_zero(x):
    return mean(valid_values(r, 0.0).exp().sum() for r in x)
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("list_means"), SOURCE)


def rewritten_calls(user, src: str) -> str:
    tree = ast.parse(src)
    ctx = context(tree, vars(user))
    ctx.parse_function = parse_function
    list_mean_helpers.rewrite_calls(tree.body[0], ctx)
    return ast.unparse(tree)


def test_golden_call_rewrite(user):
    assert rewritten_calls(user, "def f(x):\n    xs = []\n    xs.append(x)\n    return mean(xs, 5)") \
        == "def f(x):\n    xs = []\n    xs.append(x)\n    return _list_mean(xs, mean, _mean_helper, None, 5)"
    assert rewritten_calls(user, "def f(x):\n    xs = []\n    return nan_mean(xs, empty='raise')") \
        == ("def f(x):\n    xs = []\n    return _list_mean(xs, nan_mean, _mean_helper, 'ignore_nan', "
            "empty='raise')")


def test_golden_comprehension_calls(user):
    # the helper takes every item, one after the other: a list of them is the same
    assert rewritten_calls(user, "def f(x):\n    return mean((r * 2 for r in x), 5)") \
        == "def f(x):\n    return _list_mean([r * 2 for r in x], mean, _mean_helper, None, 5)"
    assert rewritten_calls(user, "def f(x):\n    return nan_mean([r for r in x], True)") \
        == ("def f(x):\n    return _list_mean([r for r in x], nan_mean, _mean_helper, "
            "'ignore_nan', True)")


@pytest.mark.parametrize("src", [
    "def f(xs):\n    return mean(xs)",                                 # a parameter
    "def f(x):\n    return unbiased(r for r in x)",                   # not a mean
    "def f(x, y):\n    return mean(r for r in x for s in y)",         # two clauses
    "def f(x):\n    return mean({r for r in x})",                     # a set
    "def f(x):\n    xs = []\n    xs = [x]\n    return mean(xs)",       # bound to another list
    "def f(x):\n    xs = []\n    return unbiased(xs)",                 # not a mean
    "def f(x):\n    xs = []\n    return isnan(xs)",
    "def f(x):\n    xs = []\n    return mean(*[xs])",
])
def test_no_change(user, src):
    assert rewritten_calls(user, src) == ast.unparse(ast.parse(src))


def test_recognised_shapes(user):
    ctx = context(ast.parse("def f(): pass"), vars(user))
    ctx.parse_function = parse_function
    shape = list_mean_helpers._mean_shape
    assert shape(user.mean, ctx) == (None,)
    assert shape(user.nan_mean, ctx) == ("ignore_nan",)
    assert shape(user.unbiased, ctx) is None
    assert shape(user.isnan, ctx) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_list_mean_on_stacked_items(user, dtype):
    items = [torch.tensor(v, dtype=dtype) for v in (0.5, 1.25, 3.0)]
    list_mean = list_mean_helpers.list_mean
    want = user.mean([t.clone() for t in items])
    got = list_mean(torch.stack(items), user.mean, user.mean, None)
    assert got.dtype == want.dtype and torch.equal(got, want)
    one = torch.stack(items[:1])
    assert torch.equal(list_mean(one, user.mean, user.mean, None), items[0])
    assert list_mean(torch.stack(items)[:0], user.mean, user.mean, None, 7) == 7
    with pytest.raises(ValueError, match="Empty mean"):
        list_mean(torch.stack(items)[:0], user.nan_mean, user.nan_mean, "ignore_nan",
                  empty="raise")
    nan = torch.stack(items + [torch.tensor(math.nan, dtype=dtype)])
    assert torch.equal(list_mean(nan, user.nan_mean, user.nan_mean, "ignore_nan", True), want)
    assert list_mean(nan, user.nan_mean, user.nan_mean, "ignore_nan").isnan()
    got = list_mean(items, user.mean, user.mean, None)  # a list: the helper, as written
    assert torch.equal(got, want) and items[0].item() == 4.75  # it added into the first item


def check(fn, *inputs, vectorized=True):
    opt = rewrite.optimize_loss(fn, compile=False, strict=True)
    assert_equivalent(fn, opt, *inputs)
    want, _ = outputs_and_gradients(fn, inputs, {})
    got, _ = outputs_and_gradients(opt, inputs, {})
    assert [type(v) for v in got] == [type(v) for v in want]
    assert [getattr(v, "dtype", None) for v in got] == [getattr(v, "dtype", None) for v in want]
    assert all(loop.vectorized for loop in opt.report.loops) == vectorized, opt.report.loops
    return opt


def _inputs(dtype, present, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(40, 5, generator=g, dtype=dtype).softmax(1).requires_grad_()
    return scores, torch.randint(0, present, (40,), generator=g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("present", [1, 3, 5])
def test_mean_of_present_classes(user, dtype, present):
    opt = check(user.present_classes, *_inputs(dtype, present))
    assert all(loop.vectorized_runs and not loop.failed_runs for loop in opt.report.loops)


def test_no_class_present_gives_the_empty_value(user):
    scores, labels = _inputs(torch.float64, 3)
    check(user.present_classes, scores, torch.full_like(labels, 9))
    check(user.filtered, scores, torch.full_like(labels, 9), False, 0.5)
    opt = rewrite.optimize_loss(user.filtered, compile=False)
    with pytest.raises(ValueError, match="Empty mean"):
        opt(scores, torch.full_like(labels, 9), False, "raise")


@pytest.mark.parametrize("ignore_nan", [False, True])
def test_nan_items_filtered_as_the_helper_does(user, ignore_nan):
    scores, labels = _inputs(torch.float64, 3)
    scores = scores.detach().clone()
    scores[labels == 1, 1] = math.nan
    check(user.filtered, scores.requires_grad_(), labels, ignore_nan, 0)


@pytest.mark.parametrize("name", ["rows_kept", "rows_generator"])
def test_items_that_are_input_rows(user, name):
    # the helper adds into the first item, here a row of the input: so does the rewrite (the
    # sum in another order)
    x = torch.randn(4, 3, dtype=torch.float64)
    want, got = x.clone(), x.clone()
    out_want = getattr(user, name)(want)
    out_got = rewrite.optimize_loss(getattr(user, name), compile=False)(got)
    assert not torch.equal(want[0], x[0])
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(out_got, out_want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [1, 2, 5])
def test_comprehension_handed_to_the_helper(user, dtype, rows):
    x = torch.randn(rows, 6, dtype=dtype).requires_grad_()
    for fn, args in ((user.per_row, ()), (user.per_row_list, (0,))):
        opt = check(fn, x, *args)
        assert opt.report.loops[0].strategy in ("batched", "vmap")
        assert all(loop.vectorized_runs and not loop.failed_runs for loop in opt.report.loops)


def test_comprehension_of_no_item_gives_the_empty_value(user):
    x = torch.randn(0, 6, dtype=torch.float64, requires_grad=True)
    assert rewrite.optimize_loss(user.per_row, compile=False)(x) == user.per_row(x) == 0
    assert rewrite.optimize_loss(user.per_row_list, compile=False)(x, 3.5) == 3.5
    opt = rewrite.optimize_loss(user.per_row_list, compile=False)
    with pytest.raises(ValueError, match="Empty mean"):
        opt(x, "raise")


def test_comprehension_items_nan_and_inf(user):
    x = torch.tensor([[1.0, math.nan], [math.inf, 2.0], [0.5, -1.0]], dtype=torch.float64)
    check(user.per_row, x.requires_grad_())
    check(user.per_row_list, x, 0)


def test_helper_selecting_by_a_mask_under_vmap_keeps_the_loop(user):
    # `valid_values` is not inlined (it branches on an argument of the caller); mapped with
    # vmap, its `r[valid]` would raise on every call: the loop runs as written, with the reason
    # at the selection
    x = torch.randn(4, 6, dtype=torch.float64).relu().requires_grad_()
    opt = check(user.per_row_valid, x, 0.0, vectorized=False)
    (loop,) = opt.report.loops
    line = inspect.getsourcelines(user.valid_values)[1] + 4
    assert loop.reason == ("`valid_values(...)` is mapped with vmap, and `valid_values` selects "
                           f"`r[valid]` (line {line}): "
                           "the number of selected elements varies per iteration; not "
                           "distributed: no statement left to hoist does real work (a "
                           "reduction, contraction, loss or similarity): the residual loop "
                           "would do most of it")
    assert not loop.failed_runs
    # a constant argument decides its branch: inlined, the selection is a masked sum
    (loop,) = check(user.per_row_valid_zero, x).report.loops
    assert loop.vectorized_runs and not loop.original_runs and not loop.failed_runs
