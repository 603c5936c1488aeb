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


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, dtype, seed):
    return torch.randn(*shape, generator=gen(seed), dtype=dtype).requires_grad_()


def labels(n, classes, seed):
    return torch.randint(0, classes, (n,), generator=gen(seed))


SOURCES = {
    # a data-dependent append: one batched cross entropy, the residual compares and appends
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
    # no heavy statement to hoist: kept as written
    "not_worth_it": """
        def f(x, th):
            out = []
            for i in range(len(x)):
                v = x[i] * 2
                if v.sum().item() > th:
                    out.append(v)
            return out
        """,
}

GOLDEN = {
    "hard_examples": """
        def f(x, y, th):
            hard = []
            if isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(y, torch.Tensor) and (len(x) <= y.shape[0]) and isinstance(len(x), int) and (len(x) > 0):
                'optimize_loss: loop at line 3 vectorized'
                if x.dim() >= 1 and y.dim() >= 1 and (x.dim() == 2) and (y.dim() == 1) and (y.dtype in (torch.int64, torch.int32)):
                    _x_row = x if len(x) == x.shape[0] else x[0:len(x):1]
                    _y_row = y if len(x) == y.shape[0] else y[0:len(x):1]
                    _t = _y_row.unsqueeze(1)
                    _t_1 = F.cross_entropy(_x_row.unsqueeze(1).flatten(0, 1), _t.flatten(), reduction='none', ignore_index=-100).view(_t.shape)
                    l = _t_1.sum(1) / (_t != -100).sum(1)
                    _l_all_item = l
                    _outs_1 = (_l_all_item,)
                else:

                    def _body(_x_row, _y_row):
                        l = F.cross_entropy(_x_row.unsqueeze(0), _y_row.unsqueeze(0))
                        _l_all_item = l
                        return (torch.as_tensor(_l_all_item),)
                    _outs_1 = torch.vmap(_body, in_dims=(0, 0))(x if len(x) == x.shape[0] else x[0:len(x):1], y if len(x) == y.shape[0] else y[0:len(x):1])
                _l_all = _outs_1[0].unbind(0)
                for i in range(len(x)):
                    l = _l_all[i]
                    if l.item() > th:
                        hard.append(l)
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
            if isinstance(x, torch.Tensor) and x.shape[1] <= x.shape[1] and isinstance(x.shape[1], int) and (x.shape[1] > 0):
                'optimize_loss: loop at line 3 vectorized'
                if not isinstance(W, torch.Tensor) or (x.dim() >= 2 and x.dim() >= W.dim() + 1):
                    _x_row = (x if x.shape[1] == x.shape[1] else x[:, 0:x.shape[1]:1]).movedim(1, 0)
                    h = torch.tanh(_x_row @ W)
                    _h_all_item = h
                    _outs_1 = (_h_all_item,)
                else:

                    def _body(_x_row):
                        h = torch.tanh(_x_row @ W)
                        _h_all_item = h
                        return (torch.as_tensor(_h_all_item),)
                    _outs_1 = torch.vmap(_body, in_dims=(1,))(x if x.shape[1] == x.shape[1] else x[:, 0:x.shape[1]:1])
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
            if isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(y, torch.Tensor) and (len(x) <= y.shape[0]) and isinstance(len(x), int) and (len(x) > 0):
                'optimize_loss: loop at line 3 vectorized'
                if x.dim() >= 1 and y.dim() >= 1 and (x.dim() == 2) and (y.dim() == 1) and (y.dtype in (torch.int64, torch.int32)):
                    _x_row = x if len(x) == x.shape[0] else x[0:len(x):1]
                    _y_row = y if len(x) == y.shape[0] else y[0:len(x):1]
                    _t = _y_row.unsqueeze(1)
                    _t_1 = F.cross_entropy(_x_row.unsqueeze(1).flatten(0, 1), _t.flatten(), reduction='none', ignore_index=-100).view(_t.shape)
                    l = _t_1.sum(1) / (_t != -100).sum(1)
                    _l_all_item = l
                    _outs_1 = (_l_all_item,)
                else:

                    def _body(_x_row, _y_row):
                        l = F.cross_entropy(_x_row.unsqueeze(0), _y_row.unsqueeze(0))
                        _l_all_item = l
                        return (torch.as_tensor(_l_all_item),)
                    _outs_1 = torch.vmap(_body, in_dims=(0, 0))(x if len(x) == x.shape[0] else x[0:len(x):1], y if len(x) == y.shape[0] else y[0:len(x):1])
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
    "not_worth_it": SOURCES["not_worth_it"],
}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_golden(name):
    code, report = rewrite_source(SOURCES[name])
    assert code == normalise(GOLDEN[name])
    distributed = name in ("hard_examples", "recurrence", "print_losses")
    assert strategies(report) == {3: "distributed" if distributed else "kept"}
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
            return d, out
        """
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


def test_values_changed_in_place_by_the_residual_loop_are_not_stacked():
    src = """
        def f(x, w):
            for i in range(len(x)):
                p = (x[i] * w).softmax(0)
                q = p
                q += 1
                print(q.sum().item())
        """
    code, report = rewrite_source(src)
    assert strategies(report) == {2: "kept"} and code == normalise(src)


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


# ---------------------------------------------------------------------------------------------
# Random bodies: heavy statements, residual statements, dependences between them.

HEAVY = ["a{k} = (x[i] * w).sum()", "a{k} = torch.logsumexp(x[i] - w, 0)",
         "a{k} = (x[i] @ M).tanh().sum()"]
RESIDUAL = ["print(f'{{i}} {{{v}.item():.3f}}')", "s = s * 0.5 + {v}",
            "if {v}.item() > 0: log.append({v})", "total += {v} * {v}"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3)), min_size=2, max_size=6))
def test_random_bodies_are_equivalent(stmts):
    lines, made = [], ["x[i].sum()"]
    for k, (heavy, pick) in enumerate(stmts):
        if heavy:
            lines.append(HEAVY[pick % len(HEAVY)].format(k=k))
            made.append(f"a{k}")
        else:
            lines.append(RESIDUAL[pick].format(v=made[-1]))
    body = "\n".join(f"        {line}" for line in lines)
    src = (f"def f(x, w, M):\n    s = 0\n    total = 0\n    log = []\n"
           f"    for i in range(len(x)):\n{body}\n    return s, total, log\n")
    original, optimized, _, report = build(src)
    x, w, M = randn(6, 3, dtype=torch.float64, seed=1), randn(3, dtype=torch.float64, seed=2), \
        randn(3, 3, dtype=torch.float64, seed=3)
    assert_equivalent(original, optimized, x, w, M)
    heavy = any(h for h, _ in stmts)
    linear = sum(not h and pick == 1 for h, pick in stmts)  # one is a scan, two updates are not
    blocking = linear > 1 or any(not h and pick in (0, 2) for h, pick in stmts)  # and effects
    want = ("distributed" if heavy else "kept") if blocking else "scan" if linear else "batched"
    assert report.loops[0].strategy == want
