"""counted_whiles_to_ranges: a counted ``while i < n: ...; i += 1`` runs as ``for i in
range(i, n)`` (so every loop stage and distribution apply), behind a check that both are ints;
``i`` after the loop is the original's. Golden before/after (with a no-change case: a
convergence loop, kept as a recurrence), the reasons for the loops that are not counted,
equivalence of values, every gradient, dtype, ``i`` and printed lines (float32, float64, NaN,
inf, no iteration, a float bound and a tensor counter run as written)."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent, optimize_loss
from tests.loop_helpers import assert_golden, build, rewrite_source, strategies

DTYPES = [torch.float32, torch.float64]
NAN, INF = float("nan"), float("inf")

COUNTED = """
    def f(x, w):
        n = len(x)
        total = 0
        i = 0
        while i < n:
            total += (x[i] * w).sum()
            i += 1
        return total, i
    """
GOLDEN_COUNTED = """
def f(x, w):
    n = len(x)
    total = 0
    i = 0
    if type(i) is int and type(n) is int:
        'optimize_loss: the counted `while` loop at line 5 runs as a `for` loop'
        _x_stacked = _stack_items(tuple(x)) if (type(x) is list or (isinstance(x, tuple) and type(x).__getitem__ is tuple.__getitem__ and (type(x).__iter__ is tuple.__iter__) and (type(x).__len__ is tuple.__len__))) and len(x) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == x[0].shape and (_v.dtype == x[0].dtype) and (_v.device == x[0].device) for _v in x)) else x
        if i >= 0 and isinstance(_x_stacked, torch.Tensor) and (n <= _x_stacked.shape[0]) and isinstance(i, int) and isinstance(n, int) and (n > i) and (not _rounds_gradients(w)):
            'optimize_loss: loop at line 5 vectorized'
            if not isinstance(w, torch.Tensor) or (_x_stacked.dim() >= 2 and _x_stacked.dim() >= w.dim() + 1):
                _x_row = _x_stacked if n == _x_stacked.shape[0] and i == 0 else _x_stacked[i:n:1]
                _total_part = 0

                def _items_sum():
                    _t = _x_row * w
                    return (_t.sum(tuple(range(1, _t.dim()))) if _t.dim() > 1 else _t.reshape(len(_t), -1).sum(1)).sum(0)
                _total_part = _summed_in_steps((_x_row * w).sum(), _items_sum)
                _outs = (_total_part,)
            else:

                def _body(_x_row):
                    _total_part = 0
                    _total_part = _total_part + (_x_row * w).sum()
                    return (torch.as_tensor(_total_part),)
                _outs = _map_in_chunks(_body, in_dims=(0,))(_x_stacked if n == _x_stacked.shape[0] and i == 0 else _x_stacked[i:n:1])
                _outs = (_outs[0].sum(0),)
            i = n - 1
            total = _outs[0]
        else:
            for i in range(i, n):
                total += (x[i] * w).sum()
        i = max(i, n)
    else:
        while i < n:
            total += (x[i] * w).sum()
            i += 1
    return (total, i)
"""
# a convergence loop: its test reads what the body computes, no iteration comes first
CONVERGENCE = """
    def f(x, tol):
        err = 1.0
        while err > tol:
            x = x * 0.5
            err = x.abs().max().item()
        return x
    """


def test_golden():
    assert_golden(COUNTED, GOLDEN_COUNTED, {5: "batched"})


# the verdict of loop distribution on every `while` loop kept
WHILE = "; not distributed: its iterations are not counted before it runs (only `for` loops " \
    "and counted `while` loops are split)"


def test_no_change_for_a_convergence_loop():
    assert_golden(CONVERGENCE, CONVERGENCE, {3: "kept"})
    assert rewrite_source(CONVERGENCE)[1].loops[0].reason == (
        "`while` loop whose test reads `err`, which the body computes: a recurrence (each "
        "iteration's test needs the one before it), so no iteration can be computed in advance"
        + WHILE)


def _kept(body: str, test: str = "i < n", head: str = "") -> str:
    return f"""
    def f(x, n, xs):
        s = 0
        i = 0{head}
        while {test}:
{body}
        return s, i
    """


KEPT = {
    "no_increment": (_kept("            s = s + x[i].sum()\n            i = i + 2"),
                     "`while i < n` is not a counted loop: its last statement is not `i += 1`"),
    "counter_written": (_kept("            s = s + x[i].sum()\n            if s > 1:\n"
                              "                i = n\n            i += 1"),
                        "`while i < n` is not a counted loop: the body also writes `i`"),
    "continue": (_kept("            if x[i].sum() > 0:\n                continue\n"
                       "            s = s + x[i].sum()\n            i += 1"),
                 "`while i < n` is not a counted loop: a `continue` skips `i += 1`"),
    "counter_deleted": (_kept("            s = s + x[i].sum()\n            del i\n            i += 1"),
                        "`while i < n` is not a counted loop: the body also writes `i`"),
    "bound_written": (_kept("            s = s + x[i].sum()\n            n = n - 1\n"
                            "            i += 1"),
                      "`while i < n` is not a counted loop: its bound reads `n`, which the "
                      "body binds"),
    "bound_appended": (_kept("            xs.append(x[i].sum())\n            i += 1",
                             "i < len(xs)"),
                       "`while i < len(xs)` is not a counted loop: its bound reads through an "
                       "object, which the body may change (`xs`)"),
    # `ys` is `xs`: any object the body changes may be the one the bound reads
    "bound_aliased": (_kept("            s = s + ys.pop().sum()\n            i += 1",
                            "i < len(xs)", "\n        ys = xs"),
                      "`while i < len(xs)` is not a counted loop: its bound reads through an "
                      "object, which the body may change (`ys`)"),
    "bound_extended": (_kept("            s += x[i].sum()\n            i += 1", "i < len(xs)"),
                       "`while i < len(xs)` is not a counted loop: its bound reads through an "
                       "object, which the body may change (`s`)"),
    "bound_global": (_kept("            s = s + x[i].sum()\n            i += 1", "i < N"),
                     "`while i < N` is not a counted loop: its bound reads `N`, not a local "
                     "name (a call may rebind it)"),
    "break_counter_read": (_kept("            if x[i].sum() > 0:\n                break\n"
                                 "            s = s + x[i].sum()\n            i += 1"),
                           "counted `while` loop with a `break`: after it `i` is the breaking "
                           "iteration's, read after the loop"),
    "builtin_shadowed": (_kept("            s = s + x[i].sum()\n            i += 1",
                               head="\n        type = 'sum'"),
                         "counted `while` loop: `type` is a local name here, not the builtin its "
                         "`for` form calls"),
    "until_break": (_kept("            s = s + x[i].sum()\n            if s > 3:\n"
                          "                break", "True"),
                    "`while` loop whose test reads nothing the body writes: it ends only by a "
                    "`break`, `return` or exception, no trip count to compute iterations in "
                    "advance"),
}


@pytest.mark.parametrize("name", sorted(KEPT))
def test_loops_not_counted_are_unchanged_with_their_reason(name):
    src, reason = KEPT[name]
    code, report = rewrite_source(src)
    assert code == rewrite_source(code)[0]
    assert "range(" not in code
    assert [(loop.strategy, loop.reason) for loop in report.loops] == [("kept", reason + WHILE)]


def _same(original, optimized, *inputs):
    want, got = original(*inputs), optimized(*inputs)
    assert got[1] == want[1] and type(got[1]) is type(want[1])  # the counter after the loop
    assert type(got[0]) is type(want[0])
    if isinstance(want[0], torch.Tensor):
        assert got[0].dtype == want[0].dtype
        torch.testing.assert_close(got[0], want[0], equal_nan=True)
    else:
        assert got[0] == want[0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_counted_loop_is_equivalent(dtype):
    original, optimized, _, report = build(COUNTED)
    assert strategies(report) == {5: "batched"}
    x = torch.randn(6, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    x[2, 1], x[4, 0] = NAN, INF
    w = torch.randn(3, dtype=dtype, generator=torch.Generator().manual_seed(1))
    _same(original, optimized, x, w)
    assert_equivalent(original, optimized, x, w)
    _same(original, optimized, x[:0], w)  # no iteration: `i` stays 0, `total` 0
    _same(original, optimized, list(x.unbind(0)), w)


STARTS = """
    def f(x, i0, n):
        total = torch.zeros((), dtype=x.dtype)
        i = i0
        while i <= n:
            total = total + torch.exp(x[i]).sum()
            i = i + 1
        return total, i
    """


@pytest.mark.parametrize("dtype", DTYPES)
def test_inclusive_bound_start_and_types_that_run_as_written(dtype):
    original, optimized, code, report = build(STARTS)
    assert "range(i, n + 1)" in code and strategies(report) == {4: "batched"}
    x = torch.randn(7, 2, dtype=dtype, generator=torch.Generator().manual_seed(2))
    x[5, 0] = -INF
    for i0, n in ((2, 5), (0, 6), (6, 6), (7, 6), (9, 2), (1, 4.5), (True, 3), (0, True)):
        _same(original, optimized, x, i0, n)
        assert_equivalent(original, optimized, x, i0, n)
    counter = torch.tensor(1)  # a tensor counter: the `while` loop as written
    want, got = original(x, counter, 3), optimized(x, torch.tensor(1), 3)
    torch.testing.assert_close(got[0], want[0])
    assert isinstance(got[1], torch.Tensor) and got[1] == want[1] == 4


BREAK = """
    def f(x, y, m):
        total = 0
        i = 1
        while i <= x.shape[0] - 1:
            if m[i] == 0:
                break
            l = F.mse_loss(x[i], y[i])
            print(f"{i}: {l.item():.4f}")
            total = total + l
            i = i + 1
        return total
    """


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_break_with_the_counter_dead_after_is_distributed(dtype, capsys):
    original, optimized, _, report = build(BREAK)
    assert strategies(report) == {4: "distributed"}
    x = torch.randn(6, 3, dtype=dtype, generator=torch.Generator().manual_seed(3))
    y = torch.randn(6, 3, dtype=dtype, generator=torch.Generator().manual_seed(4))
    x[4] = torch.tensor([NAN, INF, 0.0])  # after the break: computed, not differentiated
    for m in ([1, 1, 1, 0, 1, 1], [1, 1, 1, 1, 1, 1], [1, 0, 1, 1, 1, 1]):
        xs = [x.clone().requires_grad_() for _ in range(2)]
        outs = []
        for fn, leaf in zip((original, optimized), xs):
            capsys.readouterr()
            value = fn(leaf, y, torch.tensor(m))
            grad = torch.autograd.grad(value, leaf)[0] if isinstance(value, torch.Tensor) \
                else None
            outs.append((value, capsys.readouterr().out, grad))
        (want, want_out, want_grad), (got, got_out, got_grad) = outs
        assert got_out == want_out
        if want_grad is None:
            assert got == want
            continue
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, equal_nan=True)
        torch.testing.assert_close(got_grad, want_grad, equal_nan=True)


WHILE_ELSE = """
    def f(x, n):
        s = x.sum() * 0
        i = 0
        while i < n:
            s = s + (x[i] ** 2).sum()
            i += 1
        else:
            s = s / i if i else s
        return s, i
    """


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_else_clause_runs_after_the_loop(dtype):
    original, optimized, code, report = build(WHILE_ELSE)
    assert strategies(report) == {4: "batched"}
    assert code.index("i = max(i, n)") < code.index("s = s / i if i else s")
    x = torch.randn(5, 3, dtype=dtype, generator=torch.Generator().manual_seed(5))
    for n in (0, 1, 5):
        _same(original, optimized, x, n)
        assert_equivalent(original, optimized, x, n)


def test_a_bound_changed_through_another_name_is_read_before_every_iteration():
    original, optimized, _, report = build(KEPT["bound_aliased"][0])
    assert strategies(report) == {5: "kept"}
    x = torch.randn(4, 2)
    got, want = optimized(x, 0, list(x.unbind(0))), original(x, 0, list(x.unbind(0)))
    assert got[1] == want[1] == 2  # two of the four items popped: `len(xs)` shrinks
    torch.testing.assert_close(got[0], want[0])


def _mean_squared_rows(pred, target):
    i = 0
    total = 0.0
    n = pred.shape[0]
    while i < n:
        total = total + ((pred[i] - target[i]) ** 2).mean()
        i += 1
    return total / n


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_whole_pipeline_takes_a_counted_loop_vectorized_into_several_statements(dtype):
    """The vectorized form of a counted loop is several statements in the int check's body: the
    passes after the loop stages see them spliced in (they once met a nested list and failed)."""
    optimized = optimize_loss(_mean_squared_rows, compile=False, strict=True, keep_faster=False)
    pred = torch.randn(5, 3, dtype=dtype, generator=torch.Generator().manual_seed(3))
    pred[1, 2], pred[3, 0] = NAN, INF
    assert_equivalent(_mean_squared_rows, optimized, pred.requires_grad_(), torch.randn(5, 3, dtype=dtype))
    assert [loop.strategy for loop in optimized.report.loops] == ["batched"]
