"""distribute_loops on a loop a data-dependent ``break`` ends (``distribute_breaks``): the
``break`` test of every iteration is computed first, the hoisted loop runs only over the
iterations the original reaches, the residual loop breaks at the same iteration. Golden
before/after (with a no-change case), equivalence of values, every gradient and dtype (float32,
float64) with NaN, inf and log(0) rows after the ``break``, a class index out of range there (no
exception, as in the original), printed lines, the exception at the same iteration, refusals
with their reasons."""
from __future__ import annotations

import pytest
import torch

from passes.report import Report
from rewrite import assert_equivalent
from rewrite.frontend import rewrite_function
from tests.helpers import equivalent_report, load_module
from tests.method_call_sources import StopScorer
from tests.loop_helpers import assert_golden, build, rewrite_source, strategies

DTYPES = [torch.float32, torch.float64]
NAN, INF = float("nan"), float("inf")

SOURCES = {
    # a padding sentinel ends the rows: the losses of the rows before it at once
    "padding": """
        def f(x, y, m):
            total = 0
            for i in range(len(x)):
                if m[i] == 0:
                    break
                l = F.mse_loss(x[i], y[i])
                print(f"{i}: {l.item():.4f}")
                total += l
            return total
        """,
    # the test reads the hoisted loss: it is computed for every row first (a total op), the
    # losses taking a gradient only for the rows up to the one that breaks
    "threshold": """
        def f(x, y, th):
            total = 0
            for i in range(len(x)):
                l = F.mse_loss(x[i], y[i])
                if l.item() > th:
                    print("stop at", i)
                    break
                total = total + torch.log(l)
            return total
        """,
    # a `break` under a nested condition: not split
    "nested_break": """
        def f(x, y, m):
            total = 0
            for i in range(len(x)):
                l = F.mse_loss(x[i], y[i])
                if m[i] > 0:
                    if m[i] > 1:
                        break
                print(l.item())
                total += l
            return total
        """,
}
GOLDEN = {
    "padding": """
        def f(x, y, m):
            total = 0
            if isinstance(m, torch.Tensor) and len(x) <= m.shape[0] and isinstance(len(x), int) and (len(x) > 0):
                'optimize_loss: loop at line 3 vectorized'
                _m_row = m if len(x) == m.shape[0] else m[0:len(x):1]
                _stop = _m_row == 0
                _tests_item = _stop
                _outs_2 = (_tests_item,)
                _n = _first_break(_outs_2[0])
                _stops = _outs_2[0].unbind(0)
                if not (isinstance(x, torch.Tensor) and _n <= x.shape[0] and isinstance(y, torch.Tensor) and (_n <= y.shape[0]) and isinstance(_n, int) and (_n > 0)):
                    'optimize_loss: as written, the loop at line 3: the runtime check of the iterations before the `break` failed'
                    for i in range(len(x)):
                        if m[i] == 0:
                            break
                        l = F.mse_loss(x[i], y[i])
                        print(f'{i}: {l.item():.4f}')
                        total += l
                else:
                    if y.dim() == x.dim():
                        _x_row = x if _n == x.shape[0] else x[0:_n:1]
                        _y_row = y if _n == y.shape[0] else y[0:_n:1]
                        _t = F.mse_loss(_x_row, _y_row, reduction='none')
                        l = _t.reshape(len(_t), -1).mean(1)
                        _l_all_item = l
                        _outs_1 = (_l_all_item,)
                    else:

                        def _body(_x_row, _y_row):
                            l = F.mse_loss(_x_row, _y_row)
                            _l_all_item = l
                            return (torch.as_tensor(_l_all_item),)
                        _outs_1 = _map_in_chunks(_body, in_dims=(0, 0))(x if _n == x.shape[0] else x[0:_n:1], y if _n == y.shape[0] else y[0:_n:1])
                    _l_all = _outs_1[0].unbind(0)
                    for i in range(len(x)):
                        if i == _n:
                            if _stops[i]:
                                break
                        l = _l_all[i]
                        print(f'{i}: {l.item():.4f}')
                        total += l
            else:
                for i in range(len(x)):
                    if m[i] == 0:
                        break
                    l = F.mse_loss(x[i], y[i])
                    print(f'{i}: {l.item():.4f}')
                    total += l
            return total
        """,
    "threshold": """
def f(x, y, th):
    total = 0
    if not isinstance(th, torch.Tensor) and isinstance(x, torch.Tensor) and (len(x) <= x.shape[0]) and isinstance(y, torch.Tensor) and (len(x) <= y.shape[0]) and isinstance(len(x), int) and (len(x) > 0):
        'optimize_loss: loop at line 3 vectorized'
        if y.dim() == x.dim() and (not isinstance(th, torch.Tensor)):
            _x_row = x if len(x) == x.shape[0] else x[0:len(x):1]
            _y_row = y if len(x) == y.shape[0] else y[0:len(x):1]
            _t = F.mse_loss(_x_row, _y_row, reduction='none')
            l = _t.reshape(len(_t), -1).mean(1)
            _stop = l.detach().double() > th
            _tests_item = _stop
            _outs_1 = (_tests_item,)
        else:

            def _body(_x_row, _y_row):
                l = F.mse_loss(_x_row, _y_row)
                _stop = l.detach().double() > th
                _tests_item = _stop
                return (torch.as_tensor(_tests_item),)
            _outs_1 = _map_in_chunks(_body, in_dims=(0, 0))(x if len(x) == x.shape[0] else x[0:len(x):1], y if len(x) == y.shape[0] else y[0:len(x):1])
        _n = _first_break(_outs_1[0])
        _at = _n
        if not (isinstance(x, torch.Tensor) and _n <= x.shape[0] and isinstance(y, torch.Tensor) and (_n <= y.shape[0]) and isinstance(_n, int) and (_n > 0)):
            'optimize_loss: as written, the loop at line 3: the runtime check of the iterations before the `break` failed'
            for i in range(len(x)):
                l = F.mse_loss(x[i], y[i])
                if l.item() > th:
                    print('stop at', i)
                    break
                total = total + torch.log(l)
        else:
            if y.dim() == x.dim():
                _x_row_1 = x if _n == x.shape[0] else x[0:_n:1]
                _y_row_1 = y if _n == y.shape[0] else y[0:_n:1]
                _total_part = 0
                _t_1 = F.mse_loss(_x_row_1, _y_row_1, reduction='none')
                l = _t_1.reshape(len(_t_1), -1).mean(1)
                _total_part = torch.log(l).sum(0)
                _outs_2 = (_total_part,)
            else:

                def _body_1(_x_row_1, _y_row_1):
                    _total_part = 0
                    l = F.mse_loss(_x_row_1, _y_row_1)
                    _total_part = _total_part + torch.log(l)
                    return (torch.as_tensor(_total_part),)
                _outs_2 = _map_in_chunks(_body_1, in_dims=(0, 0))(x if _n == x.shape[0] else x[0:_n:1], y if _n == y.shape[0] else y[0:_n:1])
                _outs_2 = (_outs_2[0].sum(0),)
            if _outs_2[0].dtype in (torch.uint8, torch.int8, torch.int16, torch.int32) and torch.result_type(total, _outs_2[0]) != _outs_2[0].dtype or (isinstance(total, torch.Tensor) and total.dtype == torch.bool and (_outs_2[0].dtype == torch.int64)):
                "optimize_loss: as written, the loop at line 3: a sum starts from a value of another dtype than its items': the original adds in the start's wider dtype (a sum of narrower integers may wrap around), or, for bools added to a bool, as a logical or"
                for i in range(_n):
                    l = F.mse_loss(x[i], y[i])
                    total = total + torch.log(l)
            else:
                i = _n - 1
                total = total + _outs_2[0]
            if _n < len(_outs_1[0]):
                i = _at
                l = F.mse_loss(x[i], y[i])
                print('stop at', i)
    else:
        for i in range(len(x)):
            l = F.mse_loss(x[i], y[i])
            if l.item() > th:
                print('stop at', i)
                break
            total = total + torch.log(l)
    return total
""",
    "nested_break": SOURCES["nested_break"],
}
EXPECTED = {"padding": {3: "distributed"}, "threshold": {3: "distributed"},
            "nested_break": {3: "kept"}}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_golden(name):
    assert_golden(SOURCES[name], GOLDEN[name], EXPECTED[name])


def test_reasons():
    reasons = {name: rewrite_source(src)[1].loops[0].reason for name, src in SOURCES.items()}
    assert reasons["padding"].startswith(
        "line 6 hoisted into one loop (batched, over the iterations before the `break` at line "
        "4, counted first); residual loop: <test>:4 `if m[i] == 0 ...`: `break`: ")
    assert reasons["nested_break"].endswith(
        "not distributed: <test>:7 `break` leaves the iteration early")


def outcome(fn, capsys, *inputs):
    """(value or exception, printed lines, gradients of the float inputs) of one call."""
    capsys.readouterr()
    leaves = [x.detach().clone().requires_grad_() if isinstance(x, torch.Tensor)
              and x.is_floating_point() else x for x in inputs]
    try:
        value = fn(*leaves)
    except Exception as exc:  # the same type and message, after the same lines
        return (type(exc), str(exc)), capsys.readouterr().out, None
    grads = torch.autograd.grad(value, [x for x in leaves if getattr(x, "requires_grad", 0)],
                                allow_unused=True) if isinstance(value, torch.Tensor) else ()
    return value, capsys.readouterr().out, grads


def assert_same(src, capsys, *inputs):
    """The original's value, dtype, printed lines and exception; its gradients, exactly at
    the rows it never differentiates (0 there)."""
    original, optimized, _, report = build(src)
    assert strategies(report) == {3: "distributed"}
    want, got = outcome(original, capsys, *inputs), outcome(optimized, capsys, *inputs)
    assert got[1] == want[1]
    if want[2] is None or not isinstance(want[0], torch.Tensor):  # an exception, a number
        assert got[0] == want[0] and type(got[0]) is type(want[0])
        return want
    assert got[0].dtype == want[0].dtype
    torch.testing.assert_close(got[0], want[0], equal_nan=True)
    for g, w in zip(got[2], want[2]):
        if w is None:  # the test's tensor
            assert g is None
            continue
        torch.testing.assert_close(g, w, equal_nan=True)
        assert torch.equal(g == 0, w == 0)  # exactly 0 at the rows the original never reached
    assert_equivalent(original, optimized, *inputs)
    return want


LOG_AFTER = """
    def f(x, m):
        total = 0
        for i in range(len(x)):
            if m[i] == 0:
                break
            l = torch.log(x[i]).sum()
            print(f"{i}: {l.item():.4f}")
            total = total + l
        return total
    """


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_after_the_break_take_no_gradient(dtype, capsys):
    """The break row and the rows after it hold 0 (log: -inf, an infinite derivative), NaN,
    inf and -1: computed there, a zero cotangent would make their gradient NaN."""
    x = torch.rand(7, 3, dtype=dtype, generator=torch.Generator().manual_seed(1)) + 0.5
    x[3:] = torch.tensor([[0.0, 1, 1], [NAN, 1, 1], [INF, 1, 1], [-1.0, 1, 1]], dtype=dtype)
    m = torch.tensor([1, 2, 1, 0, 1, 1, 1])
    want = assert_same(LOG_AFTER, capsys, x, m)
    assert want[1].count("\n") == 3 and (want[2][0][3:] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_break_and_a_break_at_the_first_row(dtype, capsys):
    x = torch.rand(5, 3, dtype=dtype, generator=torch.Generator().manual_seed(2)) + 0.5
    for m in ([1, 1, 1, 1, 1], [0, 1, 1, 1, 1], [1, 1, 1, 1, 0]):
        assert_same(LOG_AFTER, capsys, x, torch.tensor(m))


CLASSES_AFTER = """
    def f(x, y, m):
        total = 0
        for i in range(len(x)):
            if m[i] < 0.5:
                break
            l = F.cross_entropy(x[i:i+1], y[i:i+1])
            total += l
        return total
    """


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_class_index_out_of_range_after_the_break_raises_nowhere(dtype, capsys):
    x = torch.randn(6, 4, dtype=dtype, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 3, 1, 99, -5, 2])
    assert_same(CLASSES_AFTER, capsys, x, y, torch.tensor([1.0, 1, 1, 0, 1, 1], dtype=dtype))
    # NaN is no test that holds before the out-of-range class: the original raises there
    err = assert_same(CLASSES_AFTER, capsys, x, y,
                      torch.tensor([1.0, 1, 1, NAN, 1, 1], dtype=dtype))[0]
    assert err[0] is IndexError


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_test_on_the_hoisted_value_breaks_at_the_same_row(dtype, capsys):
    """The losses of the rows after the break are inf and NaN, the one that breaks too (the
    original computes it, never differentiates it)."""
    x = torch.randn(7, 3, dtype=dtype, generator=torch.Generator().manual_seed(4))
    y = torch.randn(7, 3, dtype=dtype, generator=torch.Generator().manual_seed(5))
    x[3:] = torch.tensor([[INF, 0, 0], [NAN, 0, 0], [INF, 0, 0], [0.0, 0, 0]], dtype=dtype)
    want = assert_same(SOURCES["threshold"], capsys, x, y, 50.0)
    assert want[1] == "stop at 3\n" and (want[2][0][3:] == 0).all()
    x[3] = 0.0  # no row above the threshold before the NaN: NaN > th is false, inf breaks
    assert assert_same(SOURCES["threshold"], capsys, x, y, 50.0)[1] == "stop at 5\n"


def test_the_residual_loop_raises_at_the_same_iteration(capsys):
    src = """
        def f(x, m, th):
            total = 0
            for i in range(len(x)):
                if m[i] == 0:
                    break
                l = (x[i] ** 2).sum()
                print(i)
                assert l.item() < th, f"row {i}"
                total = total + l
            return total
        """
    x = torch.arange(12, dtype=torch.float64).reshape(6, 2)
    m = torch.tensor([1, 1, 1, 1, 0, 1])
    err, printed, _ = assert_same(src, capsys, x, m, 50.0)  # row 2: 16 + 25 < 50, row 3 not
    assert err == (AssertionError, "row 3") and printed == "0\n1\n2\n3\n"
    assert_same(src, capsys, x, m, 1e9)  # the break first


def test_a_test_of_more_than_one_element_raises_as_bool_does(capsys):
    src = """
        def f(x, m):
            total = 0
            for i in range(len(x)):
                l = (x[i] * 2).sum()
                print(i)
                if m[i]:
                    break
                total = total + l
            return total
        """
    err, printed, _ = assert_same(src, capsys, torch.randn(4, 3), torch.zeros(4, 2))
    assert err[0] is RuntimeError and printed == "0\n"


def test_loops_it_does_not_split_say_why():
    src = """
        def f(x, y, m, budget):
            total = 0
            for i in range(len(x)):
                l = F.cross_entropy(x[i:i+1], y[i:i+1])
                if l.item() > budget:
                    break
                print(l.item())
            for i in range(len(x)):
                l = F.mse_loss(x[i], y[i])
                total = total + l
                if total.item() > budget:
                    break
                print(l.item())
            for k, row in enumerate(x):
                if m[k] == 0:
                    break
                print(F.mse_loss(row, y[k]).item())
            hard, prev = [], 0
            for i in range(len(x)):
                l = F.mse_loss(x[i], y[i])
                if l.item() > budget:
                    hard.append(i)
                if len(hard) >= 2:
                    break
            for i in range(len(x)):
                if prev > budget:
                    break
                l = F.mse_loss(x[i], y[i])
                prev = l.item()
                print(prev)
            return total, hard
        """
    reasons = {loop.lineno: loop.reason for loop in rewrite_source(src)[1].loops}
    assert reasons[3].endswith(
        "not distributed: <test>:4 `F.cross_entropy(x[i:i + 1], y[i:i + 1])` may raise on the "
        "iterations after the `break`, and the `break` test needs it in every iteration to "
        "count them first")
    assert reasons[8].endswith(
        "not distributed: the `break` test reads `total`, which line 10 (residual) binds or "
        "changes: the iterations cannot be counted first")
    assert reasons[19].endswith(  # a list the residual loop appends to
        "not distributed: the `break` test reads `hard`, which line 21 (residual) binds or "
        "changes: the iterations cannot be counted first")
    assert reasons[25].endswith(  # the previous iteration's value
        "not distributed: the `break` test reads `prev`, which line 29 (residual) binds or "
        "changes: the iterations cannot be counted first")
    assert reasons[14].startswith(  # over elements: the first `_n` rows of `x` (`x[:_n]`)
        "line 17 hoisted into one loop (batched, over the iterations before the `break` at "
        "line 15, counted first)")


LOSS = """
import torch
import torch.nn.functional as F


def f(x, y, m):
    total = 0
    for i in range(len(x)):
        if m[i] == 0:
            break
        l = F.cross_entropy(x[i:i+1], y[i:i+1])
        print(f"{i}: {l.item():.4f}")
        total = total + torch.log(l)
    return total
"""


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_whole_pipeline_counts_a_break_at_the_first_row_as_written(tmp_path, dtype,
                                                                      capsys):
    """Through ``optimize_loss``: the runs as the report counts them (the vectorized form, or
    the loop as written when the break comes first: nothing before it to vectorize)."""
    user = load_module(tmp_path, LOSS)
    x = torch.randn(6, 4, dtype=dtype, generator=torch.Generator().manual_seed(6))
    y = torch.tensor([0, 3, 1, 99, -5, 2])
    for m, runs in (([1, 1, 1, 0, 1, 1], (1, 0)), ([0, 1, 1, 1, 1, 1], (0, 1))):
        report = equivalent_report(user.f, x.requires_grad_(), y, torch.tensor(m))
        loop = next(lp for lp in report.loops if lp.lineno == 8)
        assert loop.strategy == "distributed"
        assert (loop.vectorized_runs, loop.original_runs) == runs, loop.last_failure


class LoggedStopScorer(StopScorer):
    def _score(self, out, target):
        print(self.count)
        super()._score(out, target)


@pytest.mark.parametrize("cls", [StopScorer, LoggedStopScorer])
def test_an_inlined_method_runs_for_its_class_only(cls, capsys):
    """The method is inlined (its loss hoisted, its effects residual); an object of a class
    with another method runs the loop as written, the same lines printed."""
    report = Report("StopScorer.score_until", "", 0)
    fast, _ = rewrite_function(StopScorer.score_until, report)
    assert [loop.strategy for loop in report.loops] == ["distributed"], report.loops[0].reason

    def run(method):
        def loss(outputs, targets, mask):
            scorer = cls(torch.ones(6, dtype=outputs.dtype))
            return method(scorer, outputs, targets, mask), scorer.count
        return loss
    g = torch.Generator().manual_seed(8)
    outputs = torch.randn(5, 4, 6, generator=g, dtype=torch.float64).log_softmax(2)
    targets = torch.randint(0, 6, (5, 4), generator=g)
    targets[4] = 99  # after the break: the original never reaches it
    mask = torch.tensor([1, 1, 1, 0, 1])
    assert_equivalent(run(StopScorer.score_until), run(fast), outputs.requires_grad_(), targets,
                      mask)
    printed = capsys.readouterr().out  # three steps before the break, in each function
    assert printed[:len(printed) // 2] == printed[len(printed) // 2:]
    assert printed.count("\n") == (6 if cls is LoggedStopScorer else 0)
