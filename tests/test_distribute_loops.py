"""distribute_loops: loops kept whole split into a vectorized loop and a residual loop. Golden
before/after, equivalence (value, every gradient, float32 and float64, printed lines, the
exception at the same iteration), a no-change case and a randomised test over mixed bodies."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, dedent, normalise, rewrite_source, strategies

DTYPES = [torch.float32, torch.float64]
NAN, INF = float("nan"), float("inf")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, dtype, seed):
    return torch.randn(*shape, generator=gen(seed), dtype=dtype).requires_grad_()


def labels(n, classes, seed):
    return torch.randint(0, classes, (n,), generator=gen(seed))


SOURCES = {
    # a data-dependent append: one batched cross entropy, the appending items taken by the
    # stacked conditions
    "hard_examples": """
        def f(x, y, th):
            hard = []
            for i in range(len(x)):
                l = F.cross_entropy(x[i:i+1], y[i:i+1])
                if l.item() > th:
                    hard.append(l)
            return torch.stack(hard).sum() if hard else x.sum() * 0
        """,
    # a recurrence (not a linear one, which becomes a scan): one matmul over all steps, the
    # residual recurrence is elementwise
    "recurrence": """
        def f(x, W, beta):
            s = 0
            for t in range(x.shape[1]):
                h = torch.tanh(x[:, t] @ W)
                s = torch.tanh(beta * s + (1 - beta) * h)
            return s.sum()
        """,
    # I/O: the same lines printed, the sum in the original order
    "print_losses": """
        def f(x, y):
            total = 0
            for i in range(len(x)):
                l = F.cross_entropy(x[i:i+1], y[i:i+1])
                print(f"{i}: {l.item():.4f}")
                total += l
            return total
        """,
    # a side effect between two statements reading what it writes: they stay in order
    "ordered": """
        def f(x, w, log):
            total = 0
            for i in range(len(x)):
                log.append(float(i))
                a = (x[i] * w).sum() + log[-1]
                total = total + a
            return total
        """,
    # heavy operands of effect statements: computed at once, the effects replayed in order
    "one_line_effects": """
        def f(x, y, th):
            hard = []
            for i in range(len(x)):
                if F.cross_entropy(x[i:i+1], y[i:i+1]).item() > th:
                    hard.append(i)
                print(f"{i}: {(x[i] ** 2).sum().item():.4f}")
            return hard
        """,
    # a non-linear recurrence (an RNN cell): its input term and a statement after it are
    # hoisted; the statement it feeds stays
    "after_residual": """
        def f(x, W, U, y, s):
            total = 0
            for t in range(x.shape[1]):
                s = torch.tanh(s @ U + x[:, t] @ W)
                e = F.mse_loss(x[:, t], y[:, t])
                g = (s * e).sum()
                total = total + g
            return total
        """,
    # no heavy statement to hoist (elementwise only): kept as written
    "not_worth_it": """
        def f(x):
            for i in range(len(x)):
                v = torch.tanh(x[i] * 2)
                print(v)
        """,
}

GOLDEN = {
    "hard_examples": """
        def f(x, y, th):
            hard = []
            if not isinstance(th, torch.Tensor) and isinstance(x, torch.Tensor) and (len(x) <= x.shape[0]) and isinstance(y, torch.Tensor) and (len(x) <= y.shape[0]) and (type(hard) is list) and isinstance(len(x), int) and (len(x) > 0) and (not _rounds_gradients(x, y)):
                'optimize_loss: loop at line 3 vectorized'
                if x.dim() >= 1 and y.dim() >= 1 and (x.dim() == y.dim() + 1) and (1 >= y.dim()) and (y.dtype in (torch.int64, torch.int32)) and (not isinstance(th, torch.Tensor)):
                    _x_row = x if len(x) == x.shape[0] else x[0:len(x):1]
                    _y_row = y if len(x) == y.shape[0] else y[0:len(x):1]
                    l = _loss_of_items(F.cross_entropy, _x_row.unsqueeze(1), _y_row.unsqueeze(1), 'mean', ignore_index=-100)
                    _cond = torch.ne(l.detach().double() > th, False)
                    _hard_item = _loss_of_items(F.cross_entropy, torch.where(_cond.reshape(_cond.shape[:1] + _branch_shape[_cond.shape[1:], _x_row.shape[1:]]), _x_row, _x_row.detach()).unsqueeze(1), torch.where(_cond.reshape(_cond.shape[:1] + _branch_shape[_cond.shape[1:], _y_row.shape[1:]]), _y_row, _y_row.detach()).unsqueeze(1), 'mean', ignore_index=-100)
                    _outs = (_hard_item, _cond)
                else:

                    def _body(_x_row, _y_row):
                        l = _cross_entropy(_x_row.unsqueeze(0), _y_row.unsqueeze(0))
                        _cond = torch.ne(l.detach().double() > th, False)
                        _hard_item = _cross_entropy(torch.where(_cond.reshape(_branch_shape[_cond.shape, _x_row.shape]), _x_row, _x_row.detach()).unsqueeze(0), torch.where(_cond.reshape(_branch_shape[_cond.shape, _y_row.shape]), _y_row, _y_row.detach()).unsqueeze(0))
                        return (torch.as_tensor(_hard_item), torch.as_tensor(_cond))
                    _outs = _map_in_chunks(_body, in_dims=(0, 0))(x if len(x) == x.shape[0] else x[0:len(x):1], y if len(x) == y.shape[0] else y[0:len(x):1])
                hard.extend(_outs[0][_outs[1]].unbind(0))
            else:
                for i in range(len(x)):
                    l = F.cross_entropy(x[i:i + 1], y[i:i + 1])
                    if l.item() > th:
                        hard.append(l)
            return torch.stack(hard).sum() if hard else x.sum() * 0
        """,
    "recurrence": """
        def f(x, W, beta):
            s = 0
            if isinstance(x, torch.Tensor) and x.shape[1] <= x.shape[1] and isinstance(x.shape[1], int) and (x.shape[1] > 0) and (not _rounds_gradients(W)):
                'optimize_loss: loop at line 3 vectorized'
                if x.dim() >= 2 and (isinstance(W, torch.Tensor) and W.dim() == 2):
                    _x_row = (x if x.shape[1] == x.shape[1] else x[:, 0:x.shape[1]:1]).movedim(1, 0)
                    h = torch.tanh(_x_row @ W)
                    _h_all_item = h
                    _outs_1 = (_h_all_item,)
                else:

                    def _body(_x_row):
                        h = torch.tanh(_x_row @ W)
                        _h_all_item = h
                        return (torch.as_tensor(_h_all_item),)
                    _outs_1 = _map_in_chunks(_body, in_dims=(1,))(x if x.shape[1] == x.shape[1] else x[:, 0:x.shape[1]:1])
                _h_all = _outs_1[0].unbind(0)
                for t in range(x.shape[1]):
                    h = _h_all[t]
                    s = torch.tanh(beta * s + (1 - beta) * h)
            else:
                for t in range(x.shape[1]):
                    h = torch.tanh(x[:, t] @ W)
                    s = torch.tanh(beta * s + (1 - beta) * h)
            return s.sum()
        """,
    "print_losses": """
        def f(x, y):
            total = 0
            if isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(y, torch.Tensor) and (len(x) <= y.shape[0]) and isinstance(len(x), int) and (len(x) > 0) and (not _rounds_gradients(x, y)):
                'optimize_loss: loop at line 3 vectorized'
                if x.dim() >= 1 and y.dim() >= 1 and (x.dim() == y.dim() + 1) and (1 >= y.dim()) and (y.dtype in (torch.int64, torch.int32)):
                    _x_row = x if len(x) == x.shape[0] else x[0:len(x):1]
                    _y_row = y if len(x) == y.shape[0] else y[0:len(x):1]
                    l = _loss_of_items(F.cross_entropy, _x_row.unsqueeze(1), _y_row.unsqueeze(1), 'mean', ignore_index=-100)
                    _l_all_item = l
                    _outs_1 = (_l_all_item,)
                else:

                    def _body(_x_row, _y_row):
                        l = _cross_entropy(_x_row.unsqueeze(0), _y_row.unsqueeze(0))
                        _l_all_item = l
                        return (torch.as_tensor(_l_all_item),)
                    _outs_1 = _map_in_chunks(_body, in_dims=(0, 0))(x if len(x) == x.shape[0] else x[0:len(x):1], y if len(x) == y.shape[0] else y[0:len(x):1])
                _l_all = _outs_1[0].unbind(0)
                for i in range(len(x)):
                    l = _l_all[i]
                    print(f'{i}: {l.item():.4f}')
                    total += l
            else:
                for i in range(len(x)):
                    l = F.cross_entropy(x[i:i + 1], y[i:i + 1])
                    print(f'{i}: {l.item():.4f}')
                    total += l
            return total
        """,
    "ordered": SOURCES["ordered"],
    "one_line_effects": """
        def f(x, y, th):
            hard = []
            if isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(y, torch.Tensor) and (len(x) <= y.shape[0]) and isinstance(len(x), int) and (len(x) > 0):
                'optimize_loss: loop at line 3 vectorized'
                if x.dim() >= 1 and y.dim() >= 1 and (x.dim() == y.dim() + 1) and (1 >= y.dim()) and (y.dtype in (torch.int64, torch.int32)):
                    _x_row = x if len(x) == x.shape[0] else x[0:len(x):1]
                    _y_row = y if len(x) == y.shape[0] else y[0:len(x):1]
                    _value = _loss_of_items(F.cross_entropy, _x_row.unsqueeze(1), _y_row.unsqueeze(1), 'mean', ignore_index=-100).detach()
                    _t = _x_row ** 2
                    _value_1 = (_t.sum(tuple(range(1, _t.dim()))) if _t.dim() > 1 else _t.reshape(len(_t), -1).sum(1)).detach()
                    _value_all_item = _value
                    _value_1_all_item = _value_1
                    _outs_1 = (_value_all_item, _value_1_all_item)
                else:

                    def _body(_x_row, _y_row):
                        _value = _cross_entropy(_x_row.unsqueeze(0), _y_row.unsqueeze(0)).detach()
                        _value_1 = (_x_row ** 2).sum().detach()
                        _value_all_item = _value
                        _value_1_all_item = _value_1
                        return (torch.as_tensor(_value_all_item), torch.as_tensor(_value_1_all_item))
                    _outs_1 = _map_in_chunks(_body, in_dims=(0, 0))(x if len(x) == x.shape[0] else x[0:len(x):1], y if len(x) == y.shape[0] else y[0:len(x):1])
                _value_all = _outs_1[0].tolist()
                _value_1_all = _outs_1[1].tolist()
                for i in range(len(x)):
                    _value = _value_all[i]
                    _value_1 = _value_1_all[i]
                    if _value > th:
                        hard.append(i)
                    print(f'{i}: {_value_1:.4f}')
            else:
                for i in range(len(x)):
                    if F.cross_entropy(x[i:i + 1], y[i:i + 1]).item() > th:
                        hard.append(i)
                    print(f'{i}: {(x[i] ** 2).sum().item():.4f}')
            return hard
        """,
    "after_residual": """
        def f(x, W, U, y, s):
            total = 0
            if isinstance(x, torch.Tensor) and x.shape[1] <= x.shape[1] and isinstance(y, torch.Tensor) and (x.shape[1] <= y.shape[1]) and isinstance(x.shape[1], int) and (x.shape[1] > 0) and (not _rounds_gradients(W)):
                'optimize_loss: loop at line 3 vectorized'
                if x.dim() >= 2 and (isinstance(W, torch.Tensor) and W.dim() == 2) and (y.dim() == x.dim()):
                    _x_row = (x if x.shape[1] == x.shape[1] else x[:, 0:x.shape[1]:1]).movedim(1, 0)
                    _y_row = (y if x.shape[1] == y.shape[1] else y[:, 0:x.shape[1]:1]).movedim(1, 0)
                    _value = _x_row @ W
                    _t = F.mse_loss(_x_row, _y_row, reduction='none')
                    e = _t.reshape(len(_t), -1).mean(1)
                    _value_all_item = _value
                    _e_all_item = e
                    _outs_1 = (_value_all_item, _e_all_item)
                else:

                    def _body(_x_row, _y_row):
                        _value = _x_row @ W
                        e = F.mse_loss(_x_row, _y_row)
                        _value_all_item = _value
                        _e_all_item = e
                        return (torch.as_tensor(_value_all_item), torch.as_tensor(_e_all_item))
                    _outs_1 = _map_in_chunks(_body, in_dims=(1, 1))(x if x.shape[1] == x.shape[1] else x[:, 0:x.shape[1]:1], y if x.shape[1] == y.shape[1] else y[:, 0:x.shape[1]:1])
                _value_all = _outs_1[0].unbind(0)
                _e_all = _outs_1[1].unbind(0)
                for t in range(x.shape[1]):
                    _value = _value_all[t]
                    e = _e_all[t]
                    s = torch.tanh(s @ U + _value)
                    g = (s * e).sum()
                    total = total + g
            else:
                for t in range(x.shape[1]):
                    s = torch.tanh(s @ U + x[:, t] @ W)
                    e = F.mse_loss(x[:, t], y[:, t])
                    g = (s * e).sum()
                    total = total + g
            return total
        """,
    "not_worth_it": SOURCES["not_worth_it"],
}

EXPECTED = {"hard_examples": {3: "batched"}, "recurrence": {3: "distributed"},
            "print_losses": {3: "distributed"}, "one_line_effects": {3: "distributed"},
            "after_residual": {3: "distributed"}, "ordered": {3: "kept"},
            "not_worth_it": {2: "kept"}}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_golden(name):
    code, report = rewrite_source(SOURCES[name])
    assert code == normalise(GOLDEN[name])
    assert strategies(report) == EXPECTED[name]
    assert rewrite_source(code)[0] == code  # a second run changes nothing


def test_report_names_the_residual_statements_and_their_reasons():
    _, report = rewrite_source(SOURCES["print_losses"])
    reason = report.loops[0].reason
    assert reason.startswith("line 4 hoisted into one loop (batched); residual loop: ")
    assert "<test>:5 `print(f'{i}: {l.item():.4f}')`: I/O call `print`" in reason
    assert "<test>:6 `total += l`: accumulates into `total`" in reason
    assert "when `x`, `y` are tensors, else the loop runs as written" in reason


# ---------------------------------------------------------------------------------------------
# Equivalence: value, gradients, printed lines, the same exception after the same lines.

def class_inputs(dtype, seed):
    return randn(7, 4, dtype=dtype, seed=seed), labels(7, 4, seed)


@pytest.mark.parametrize("dtype", DTYPES)
def test_hard_examples_are_equivalent(dtype):
    original, optimized, _, _ = build(SOURCES["hard_examples"])
    for th in (0.5, 1.5, 100.0):  # some, most and none appended
        assert_equivalent(original, optimized, *class_inputs(dtype, 3), th)


@pytest.mark.parametrize("dtype", DTYPES)
def test_recurrence_is_equivalent(dtype):
    original, optimized, _, _ = build(SOURCES["recurrence"])
    assert_equivalent(original, optimized, randn(3, 6, 5, dtype=dtype, seed=1),
                      randn(5, 2, dtype=dtype, seed=2), 0.7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_printed_lines_and_sum_are_the_same(dtype, capsys):
    original, optimized, _, _ = build(SOURCES["print_losses"])
    inputs = class_inputs(dtype, 5)
    want = original(*inputs)
    printed = capsys.readouterr().out
    got = optimized(*inputs)
    assert capsys.readouterr().out == printed and printed.count("\n") == 7
    torch.testing.assert_close(got, want)
    assert_equivalent(original, optimized, *inputs)


def test_residual_raises_at_the_same_iteration(capsys):
    src = """
        def f(x, y, th):
            total = 0
            for i in range(len(x)):
                l = F.cross_entropy(x[i:i+1], y[i:i+1])
                print(i)
                assert l.item() < th, f"sample {i}"
                total = total + l
            return total
        """
    original, optimized, _, report = build(src)
    assert strategies(report) == {3: "distributed"}
    x, y = class_inputs(torch.float64, 7)
    losses = [torch.nn.functional.cross_entropy(x[i:i+1], y[i:i+1]).item() for i in range(7)]
    th = sorted(losses)[3]  # the first loss at least this large stops the loop
    outcomes = []
    for fn in (original, optimized):
        with pytest.raises(AssertionError) as err:
            fn(x, y, th)
        outcomes.append((str(err.value), capsys.readouterr().out))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1].count("\n") == 1 + next(k for k, l in enumerate(losses) if l >= th)


def test_values_read_after_the_loop_are_the_last_iterations():
    src = """
        def f(x, w):
            out = []
            for k, row in enumerate(x):
                d = (row * w).sum()
                out.append(d.item())
                print(k)
            return d, out
        """
    # `print` keeps the whole loop from being vectorized; distribution hoists `d`.
    original, optimized, code, report = build(src)
    assert strategies(report) == {3: "distributed"}
    assert "for _k, (k, row) in enumerate(enumerate(x)):" in code
    for dtype in DTYPES:
        assert_equivalent(original, optimized, randn(5, 3, dtype=dtype, seed=4),
                          randn(3, dtype=dtype, seed=5))
        xs, w = randn(5, 3, dtype=dtype, seed=4), randn(3, dtype=dtype, seed=5)
        assert all(type(v) is float for v in optimized(xs, w)[1])
    for fn in (original, optimized):  # no iteration: `d` is unbound in both
        with pytest.raises(UnboundLocalError):
            fn(torch.zeros(0, 3), torch.ones(3))


def test_values_changed_in_place_by_the_residual_loop_are_read_as_copies(capsys):
    src = """
        def f(x, w):
            for i in range(len(x)):
                p = (x[i] * w).sum(0, keepdim=True)
                q = p
                q += 1
                print(q.sum().item())
            return p
        """
    original, optimized, code, report = build(src)
    assert strategies(report) == {2: "distributed"} and "p = _p_all[i].clone()" in code
    x, w = torch.randn(4, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    want = original(x, w.requires_grad_())
    printed = capsys.readouterr().out
    got = optimized(x, w)
    assert capsys.readouterr().out == printed and printed.count("\n") == 4
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert_equivalent(original, optimized, x, w)


def test_random_draws_stay_in_the_residual_loop_in_order():
    src = """
        def f(x, y):
            total = 0
            for i in range(len(x)):
                d = ((x[i] - y) ** 2).sum(-1)
                noise = torch.rand(()) * 0.1
                total = total + d.min() + noise
            return total
        """
    original, optimized, code, report = build(src)
    assert strategies(report) == {3: "distributed"}
    assert "random op `torch.rand`" in report.loops[0].reason
    for dtype in DTYPES:
        x, y = randn(5, 3, dtype=dtype, seed=8), randn(4, 3, dtype=dtype, seed=9)
        torch.manual_seed(0)
        want = original(x, y)
        torch.manual_seed(0)
        torch.testing.assert_close(optimized(x, y), want)
        assert_equivalent(original, optimized, x, y)  # same seed on both sides


def test_python_numbers_stay_python_numbers():
    src = """
        def f(x, w):
            out = []
            for i in range(len(x)):
                v = (x[i] * w).sum().item()
                j = i * 2
                if v > 0:
                    out.append((j, v))
            return out
        """
    original, optimized, _, report = build(src)
    assert strategies(report) == {3: "distributed"}
    assert "<test>:5 `j = i * 2`: `j` is read by the residual loop" in report.loops[0].reason
    x, w = randn(6, 3, dtype=torch.float64, seed=6), randn(3, dtype=torch.float64, seed=7)
    want, got = original(x, w), optimized(x, w)
    assert got == want and want and all(type(j) is int and type(v) is float for j, v in got)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_line_effects_print_the_same_lines_and_append_the_same(dtype, capsys):
    original, optimized, _, report = build(SOURCES["one_line_effects"])
    assert "`print(f'{i}: {(x[i] ** 2).sum().item():.4f}')`: I/O call" in report.loops[0].reason
    x, y = class_inputs(dtype, 6)
    for th in (0.5, 1.5, 100.0):
        want = original(x, y, th)
        printed = capsys.readouterr().out
        assert optimized(x, y, th) == want and capsys.readouterr().out == printed
        assert printed.count("\n") == 7


@pytest.mark.parametrize("dtype", DTYPES)
def test_statements_after_the_residual_one_are_equivalent(dtype):
    original, optimized, _, report = build(SOURCES["after_residual"])
    assert report.loops[0].reason.startswith("lines 4, 5 hoisted")
    assert_equivalent(original, optimized, randn(3, 6, 5, dtype=dtype, seed=1),
                      randn(5, 5, dtype=dtype, seed=2), randn(5, 5, dtype=dtype, seed=4),
                      randn(3, 6, 5, dtype=dtype, seed=3), randn(3, 5, dtype=dtype, seed=5))


def test_one_line_assert_raises_at_the_same_iteration(capsys):
    src = """
        def f(x, y, th):
            total = 0
            for i in range(len(x)):
                print(i)
                assert F.cross_entropy(x[i:i+1], y[i:i+1]).item() < th, f"sample {i}"
                total = total + (x[i] ** 2).sum()
            return total
        """
    original, optimized, _, report = build(src)
    assert strategies(report) == {3: "distributed"}
    x, y = class_inputs(torch.float64, 7)
    losses = [torch.nn.functional.cross_entropy(x[i:i+1], y[i:i+1]).item() for i in range(7)]
    th = sorted(losses)[3]
    outcomes = []
    for fn in (original, optimized):
        with pytest.raises(AssertionError) as err:
            fn(x, y, th)
        outcomes.append((str(err.value), capsys.readouterr().out))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1].count("\n") == 1 + next(k for k, l in enumerate(losses) if l >= th)
    assert_equivalent(original, optimized, x, y, 100.0)


def test_operands_under_a_condition_or_reading_what_the_statement_writes_stay():
    # (a heavy operand in an `if` branch leaves the statement: tests/test_distribute_branches.py)
    src = """
        def f(x, log, th):
            for i in range(len(x)):
                print(th > 0 and (x[i] ** 2).sum().item())
                log.append(torch.stack(log).sum())
        """
    code, report = rewrite_source(src)
    assert code == normalise(src) and strategies(report) == {2: "kept"}
    assert "not distributed: no statement left to hoist does real work" in report.loops[0].reason


def test_the_hoisted_loop_knows_the_functions_boolean_masks(capsys):
    # `mask` is boolean: the hoisted loop must know it as the whole loop does (batched as an
    # integer gather and then vmapped, rows of a boolean mask failed at run time)
    src = """
        def f(x, t):
            dist = (x[:, None] - x[None]).pow(2).sum(-1)
            mask = t.expand(len(t), len(t)).eq(t.expand(len(t), len(t)).t())
            ap = []
            for i in range(len(x)):
                ap.append(dist[i][mask[i]].max().unsqueeze(0))
                print(i)
            return torch.cat(ap)
        """
    original, optimized, code, report = build(src)
    assert strategies(report) == {5: "distributed"}
    assert_equivalent(original, optimized, randn(6, 3, dtype=torch.float64, seed=2),
                      torch.tensor([0, 1, 0, 2, 1, 0]))


def test_every_refused_loop_says_why_it_is_not_distributed():
    src = """
        def f(x, rs, gamma):
            out = []
            for i in range(len(x)):
                v = (x[i] ** 2).sum()
                if v.item() > 1:
                    if i > 2:  # (a `break` ending a top-level `if` is distributed)
                        break
                out.append(v)
            R = 0
            for r in reversed(list(rs)):  # (`reversed(rs)` is a scan)
                R = r + gamma * R
                out.append(R)
            return out
        """
    _, report = rewrite_source(src)
    reasons = {loop.lineno: loop.reason for loop in report.loops}
    assert "; not distributed: <test>:7 `break` leaves the iteration early" in reasons[3]
    assert reasons[10].startswith("iterated value `reversed(list(rs))`")
    assert reasons[10].endswith("; not distributed: the loop's header is refused as a whole")


# ---------------------------------------------------------------------------------------------
# Random bodies: heavy statements, residual statements, dependences between them.

HEAVY = ["a{k} = (x[i] * w).sum()", "a{k} = torch.logsumexp(x[i] - w, 0)",
         "a{k} = (x[i] @ M).tanh().sum()"]
RESIDUAL = ["print(f'{{i}} {{{v}.item():.3f}}')", "s = s * 0.5 + {v}",
            "if {v}.item() > 0: log.append({v})", "total += {v} * {v}",
            "assert (x[i] * {v}).sum().item() < 1e6", "print(torch.logsumexp(x[i] * {v}, 0).item())"]
# a residual statement has a heavy operand of its own when it reads the reduction `x[i].sum()`
# or is one of the last two forms (``_operands_out`` hoists it)


def random_body(stmts: list[tuple[bool, int]], heavy_forms: list[str] = HEAVY):
    """The lines of a body of heavy and residual statements, the value each line's residual
    statement reads (the last one made before it), and whether some residual statement has
    heavy work and whether one appends a heavy value to `log`."""
    lines, made, heavy, returned = [], ["x[i].sum()"], False, False
    for k, (hoistable, pick) in enumerate(stmts):
        if hoistable:
            lines.append(heavy_forms[pick % len(heavy_forms)].format(k=k))
            made.append(f"a{k}")
        else:
            lines.append(RESIDUAL[pick].format(v=made[-1]))
            heavy = heavy or pick >= 4 or len(made) == 1
            # a heavy value appended to `log`, which the caller may read in part
            returned = returned or pick == 2 and len(made) > 1
        heavy = heavy or hoistable
    return lines, made, heavy, returned


def random_loop(lines: list[str], params: str = "x, w, M",
                header: str = "i in range(len(x))") -> str:
    body = "\n".join(f"        {line}" for line in lines)
    return (f"def f({params}):\n    s = 0\n    total = 0\n    log = []\n"
            f"    for {header}:\n{body}\n    return s, total, log\n")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=6))
def test_random_bodies_are_equivalent(stmts):
    lines, made, heavy, returned = random_body(stmts)
    original, optimized, _, report = build(random_loop(lines))
    x, w, M = randn(6, 3, dtype=torch.float64, seed=1), randn(3, dtype=torch.float64, seed=2), \
        randn(3, 3, dtype=torch.float64, seed=3)
    assert_equivalent(original, optimized, x, w, M)
    linear = sum(not h and pick == 1 for h, pick in stmts)  # updates of `s` alone are a scan,
    others = any(not h and pick != 1 for h, pick in stmts)  # two with other effects are not
    asserts = sum(not h and pick == 4 for h, pick in stmts)  # one value assert is counted
    appends = sum(not h and pick == 2 for h, pick in stmts)  # one keeps its items by a mask
    blocking = linear > 1 and others or asserts > 1 or appends > 1 or any(
        not h and pick in (0, 5) for h, pick in stmts)
    want = "kept" if returned else ("distributed" if heavy else "kept") if blocking else \
        "scan" if linear else "batched"
    # vmap: a product of ranks its batched form does not fit; several updates of `s`: one scan,
    # or split around the statements between them
    allowed = {want, "vmap"} if want == "batched" else {want}
    if linear > 1 and not returned:
        allowed |= {"scan", "distributed" if heavy else "kept"}
    assert report.loops[0].strategy in allowed


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=6))
def test_random_bodies_counting_down_are_equivalent(stmts):
    """Over `reversed(range(len(x)))` (refused whole): the hoisted loop runs forwards, the
    residual loop counts down; the same values, gradients, printed lines and order of `log`."""
    lines = random_body(stmts)[0]
    src = random_loop(lines, header="i in reversed(range(len(x)))")
    original, optimized, _, report = build(src)
    x, w, M = randn(6, 3, dtype=torch.float64, seed=1), randn(3, dtype=torch.float64, seed=2), \
        randn(3, 3, dtype=torch.float64, seed=3)
    assert_equivalent(original, optimized, x, w, M)
    loop = report.loops[0]
    assert loop.strategy in ("distributed", "scan") or "; not distributed: " in loop.reason


# A `break` at a random place, its test on the mask `m` (it breaks at row 3) or on a value made
# before it (row 3 is large: most values exceed 50 there). Rows 4 and 5 are spoiled: the log
# form's derivative is infinite at row 4 (log 0), row 5 holds inf and NaN; a residual assert
# raises on them. The original runs them only when the value test does not break first.
BREAK_HEAVY = HEAVY + ["a{k} = torch.log(x[i] + 2).sum()"]
# A `return` ends the loop as a `break` does, its value computed in the iteration that returns.
BREAK_TESTS = ["if m[i] == 0: break", "if abs({v}.item()) > 50: break",
               "if m[i] == 0: return {v}, total, log", "if abs({v}.item()) > 50: return s, {v}, log"]


def outcome(fn, *inputs):
    try:
        return fn(*inputs)
    except Exception as exc:  # the same type and message as the original's
        return type(exc), str(exc)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=6),
       st.integers(0, 6), st.integers(0, 3), st.booleans())
def test_random_bodies_with_a_break_are_equivalent(stmts, at, test, elements):
    """Over a range or over elements (the first rows of `x` hoisted: `x[:_n]`)."""
    at = min(at, len(stmts))
    lines, made = random_body(stmts, BREAK_HEAVY)[0], random_body(stmts[:at], BREAK_HEAVY)[1]
    src = random_loop(lines[:at] + [BREAK_TESTS[test].format(v=made[-1])] + lines[at:],
                      "x, w, M, m",
                      "i, row in enumerate(x)" if elements else "i in range(len(x))")
    original, optimized, _, report = build(src)
    x = torch.rand(6, 3, dtype=torch.float64, generator=gen(1)) - 0.5
    x[3], x[4], x[5] = 100.0, torch.tensor([-2.0, 0, 0]), torch.tensor([INF, NAN, 1])
    w, M = randn(3, dtype=torch.float64, seed=2).abs() + 0.5, randn(3, 3, dtype=torch.float64,
                                                                     seed=3)
    m = torch.tensor([1, 1, 1, 0, 1, 1]) if test % 2 == 0 else torch.ones(6)
    x.requires_grad_()
    want = outcome(original, x, w, M, m)
    if isinstance(want, tuple) and isinstance(want[0], type):
        assert outcome(optimized, x, w, M, m) == want
    else:
        assert_equivalent(original, optimized, x, w, M, m)
    loop = report.loops[0]
    assert loop.strategy == "distributed" or "; not distributed: " in loop.reason
