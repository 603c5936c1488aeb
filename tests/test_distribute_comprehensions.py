"""distribute_comprehensions: a comprehension the vectorizer keeps whole is split like a loop when
it is the whole value of an assignment outside the function's loops (the list built by a residual
loop from the stacked items), and every kept comprehension, ``while`` loop and loop of a helper
that runs as written says why it is not distributed. Golden before/after with a no-change case,
equivalence (value, every item's gradient, float32 and float64, NaN/inf, printed lines, the same
exception), and the whole real-code corpus: every kept loop carries the verdict."""
from __future__ import annotations

import importlib
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rewrite import optimize_loss
from rewrite.testing import assert_equivalent
from tests.helpers import REAL_EXAMPLE_NAMES
from tests.loop_helpers import build, normalise, rewrite_source, strategies

DTYPES = [torch.float32, torch.float64]

SOURCES = {
    # a list the function needs as a list (printed, returned): the sums hoisted, the list built
    # from them by the residual loop
    "listed": """
        def f(x, y):
            ls = [(x[i] - y[i]).sum() for i in range(len(x))]
            print([f'{l.item():.4f}' for l in ls])
            return ls
        """,
    # a dict keyed by names: its values hoisted, the keys stay in the residual loop
    "keyed": """
        def f(x, names):
            d = {k: (v * 2).sum() for k, v in zip(names, x)}
            print(sorted(d))
            return d['a'] + d['b']
        """,
}
GOLDEN = {
    "listed": """
        def f(x, y):
            if isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(y, torch.Tensor) and (len(x) <= y.shape[0]) and isinstance(len(x), int) and (len(x) > 0):
                'optimize_loss: loop at line 2 vectorized'
                _items = []
                if y.dim() == x.dim():
                    _x_row = x if len(x) == x.shape[0] else x[0:len(x):1]
                    _y_row = y if len(x) == y.shape[0] else y[0:len(x):1]
                    _t = _x_row - _y_row
                    _value = _t.sum(tuple(range(1, _t.dim()))) if _t.dim() > 1 else _t.reshape(len(_t), -1).sum(1)
                    _value_all_item = _value
                    _outs = (_value_all_item,)
                else:
                    _x_row = x if len(x) == x.shape[0] else x[0:len(x):1]
                    _y_row = y if len(x) == y.shape[0] else y[0:len(x):1]
                    _t_1 = _broadcast_item(_x_row, _y_row) - _broadcast_item(_y_row, _x_row)
                    _value = _t_1.sum(tuple(range(1, _t_1.dim()))) if _t_1.dim() > 1 else _t_1.reshape(len(_t_1), -1).sum(1)
                    _value_all_item = _value
                    _outs = (_value_all_item,)
                _value_all = _outs[0].unbind(0)
                for _i in range(len(x)):
                    _value = _value_all[_i]
                    _items.append(_value)
                ls = _items
            else:
                ls = [(x[i] - y[i]).sum() for i in range(len(x))]
            print([f'{l.item():.4f}' for l in ls])
            return ls
        """,
}
# kept as written, each with the reason it is not distributed
KEPT = {
    # the weights are Python numbers: nothing heavy to hoist
    "cheap": ("""
        def f(x, n):
            ws = [1.0 / 2 ** i for i in range(n)]
            return [w * x for w in ws][0]
        """, 2, "not distributed: `ws` is read in part after it, and its items may have a "
                "NaN/inf derivative (`1.0 / 2 ** i`)"),
    # the sums would be hoisted, but an argument of `print` has no statements to put loops in
    "in_expression": ("""
        def f(x, y):
            print([(x[i] - y[i]).sum() for i in range(len(x))])
            return x.sum()
        """, 2, "not distributed: its loop form would be split (line 2 hoisted into one loop "
                "(batched)), but the comprehension is not the whole value of an assignment to a "
                "name outside the function's loops, where the hoisted and the residual loop "
                "would go"),
    # the header's reason, in the user's names (not the loop form's `_k`, `_v`)
    "items_header": ("""
        def f(d):
            e = {k: v.sum() for k, v in d.items()}
            return e
        """, 2, "not distributed: its `for` clause is refused: loop target `(k, v)` unpacks "
                "elements"),
    # read in part, items with an infinite derivative at 0: never split
    "read_in_part": ("""
        def f(x):
            ls = [torch.sqrt(x[i]).sum() for i in range(len(x))]
            print(len(ls))
            return ls[0]
        """, 2, "not distributed: `ls` is read in part after it, and its items may have a "
                "NaN/inf derivative (`torch.sqrt(x[i])`)"),
}


def test_golden_listed():
    # (not `assert_golden`: a second run vectorizes the residual loop, which only appends the
    # stacked items to the list, `_items.extend(...unbind(0))`)
    code, report = rewrite_source(SOURCES["listed"])
    assert code == normalise(GOLDEN["listed"])
    assert strategies(report) == {2: "distributed", 3: "kept"}
    assert report.loops[0].reason.startswith(
        "line 2 hoisted into one loop (batched); residual loop: the comprehension's items, in "
        "order (comprehension)")


@pytest.mark.parametrize("name", sorted(KEPT))
def test_kept_comprehensions_say_why_they_are_not_distributed(name):
    src, line, verdict = KEPT[name]
    code, report = rewrite_source(src)
    assert "'optimize_loss: loop at line 2" not in code
    [loop] = [loop for loop in report.loops if loop.lineno == line]
    assert loop.strategy == "kept" and loop.reason.endswith("; " + verdict), loop.reason


def _inputs(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 4, generator=g, dtype=dtype)
    y = torch.randn(5, 3, 4, generator=g, dtype=dtype)
    x[1, 0, 2], y[3, 2, 1] = float("nan"), float("inf")
    return x.requires_grad_(), y.requires_grad_()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_listed_is_equivalent(dtype, capsys):
    original, optimized, code, _ = build(SOURCES["listed"])
    assert "'optimize_loss: loop at line 2 vectorized'" in code
    x, y = _inputs(dtype)
    want = original(x, y)
    printed = capsys.readouterr().out
    got = optimized(x, y)
    assert capsys.readouterr().out == printed
    assert type(got) is list and len(got) == len(want) == 5
    for k, (a, b) in enumerate(zip(got, want)):  # each item's value, dtype and gradients
        assert a.dtype == b.dtype == dtype
        torch.testing.assert_close(a, b, equal_nan=True)
        ga = torch.autograd.grad(a, (x, y), retain_graph=True)
        gb = torch.autograd.grad(b, (x, y), retain_graph=True)
        for u, v in zip(ga, gb):
            torch.testing.assert_close(u, v, equal_nan=True, msg=f"item {k}")
    assert_equivalent(lambda *a: sum(original(*a)), lambda *a: sum(optimized(*a)), x, y)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_keyed_is_equivalent(dtype, capsys):
    original, optimized, code, report = build(SOURCES["keyed"])
    assert report.loops[0].strategy == "distributed"
    x = _inputs(dtype)[0][:2]
    want = original(x, ["b", "a"])
    printed = capsys.readouterr().out
    assert_equivalent(lambda x: original(x, ["b", "a"]), lambda x: optimized(x, ["b", "a"]), x)
    got = optimized(x, ["b", "a"])
    assert capsys.readouterr().out == printed * 3
    torch.testing.assert_close(got, want, equal_nan=True)


def test_the_same_exception():
    # shapes that do not broadcast: the original raises at the first item, the hoisted loop
    # raises the same error before the residual loop runs
    original, optimized, _, report = build(SOURCES["listed"])
    assert report.loops[0].strategy == "distributed"
    x, y = torch.randn(4, 3), torch.randn(4, 2)
    with pytest.raises(RuntimeError) as want:
        original(x, y)
    with pytest.raises(RuntimeError) as got:
        optimized(x, y)
    assert type(got.value) is type(want.value)


def _kept_loops(name: str) -> list:
    module = importlib.import_module(f"examples.{name}")
    fn = optimize_loss(module.naive, compile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn(*module.make_inputs("small"))
    return [loop for loop in fn.report.loops if not loop.vectorized]


@pytest.mark.parametrize("name", REAL_EXAMPLE_NAMES)
def test_every_kept_loop_of_the_real_corpus_says_why_it_is_not_distributed(name):
    # comprehensions, `while` loops and loops of helpers reached only at run time included
    for loop in _kept_loops(name):
        assert "; not distributed: " in loop.reason, f"{loop.filename}:{loop.lineno} {loop.reason}"
        verdict = loop.reason.split("; not distributed: ", 1)[1]
        assert "`_items" not in verdict, verdict  # the user's names, not the loop form's


# Random comprehensions: an element (heavy, with an infinite derivative at 0, a host number,
# cheap), a filter or none, and what reads the list (whole, returned, in part, printed)
ELEMENTS = ["(x[i] * w).sum()", "torch.dot(x[i], w)", "(x[i] - w).abs().max()",
            "torch.sqrt(x[i].abs()).sum()", "x[i].sum().item()", "i * 2.0",
            "F.mse_loss(x[i], w)"]
FILTERS = ["", " if i % 2 == 0", " if x[i, 0] > 0"]
READERS = ["print(len(ls))\n    return sum(ls)", "return ls", "return ls[0]",
           "print([round(float(v), 3) for v in ls])\n    return sum(ls)"]


def _stacked(fn):
    """``fn`` with a list result as one tensor of its items (their values and gradients)."""
    def stacked(*inputs):
        out = fn(*inputs)
        if isinstance(out, list):
            return torch.stack([torch.as_tensor(v, dtype=inputs[0].dtype) for v in out])
        return torch.as_tensor(out, dtype=inputs[0].dtype)
    return stacked


@settings(max_examples=30, deadline=None)
@given(st.integers(0, len(ELEMENTS) - 1), st.integers(0, len(FILTERS) - 1),
       st.integers(0, len(READERS) - 1))
def test_random_comprehensions_are_equivalent(element, test, reader):
    src = (f"def f(x, w):\n    ls = [{ELEMENTS[element]} for i in range(len(x)){FILTERS[test]}]"
           f"\n    {READERS[reader]}\n")
    original, optimized, _, report = build(src)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[0, 1], x[4] = 0.0, torch.tensor([float("inf"), -1.0, 2.0])  # sqrt's derivative at 0, inf
    w = torch.randn(3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    if reader == 2 and test:  # an empty list's first item: the same IndexError
        x[:, 0] = -1.0
    try:
        original(x, w)
    except IndexError as want:
        with pytest.raises(IndexError) as got:
            optimized(x, w)
        assert str(got.value) == str(want)
    else:
        assert_equivalent(_stacked(original), _stacked(optimized), x.requires_grad_(),
                          w.requires_grad_())
    [loop] = [loop for loop in report.loops if loop.lineno == 2]
    assert loop.strategy != "kept" or "; not distributed: " in loop.reason
