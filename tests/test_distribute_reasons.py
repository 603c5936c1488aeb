"""distribute_loops' choices and reasons around builtin ``max``/``min`` and generated names.

A value reaching a builtin ``max``/``min`` only as a Python number (``max(1.0, n.item())``, a
clamp of a count) takes no gradient there: it is stacked like any other (golden, equivalence of
values, every gradient, printed lines), while a tensor that a builtin ``max``/``min`` may not
pick stays residual; one reaching it as ``bool(n)`` is stacked too, and rows handed to a registry
op (``torch.median``) are hoisted: it changes nothing. Reasons quote the user's statements and
names: not the names the rewrite makes (``_value`` for an operand bound first, the stand-in of a
rebound name)."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent
from tests.loop_helpers import assert_golden, build, rewrite_source

DTYPES = [torch.float32, torch.float64]

SOURCES = {
    # the count taken to the host first: a Python number from there, hoisted with the loss
    "host_item_first": """
        def f(x, y, m):
            total = 0
            for i in range(len(x)):
                n = m[i].sum().item()
                l = F.mse_loss(x[i], y[i], reduction="sum")
                print(f"{i}: {l.item():.4f}")
                total = total + l / max(1.0, n)
            return total
        """,
    # the count clamped on the host is hoisted with the loss (both reductions)
    "host_clamp": """
        def f(x, y, m):
            total = 0
            for i in range(len(x)):
                n = m[i].sum()
                l = F.mse_loss(x[i], y[i], reduction="sum")
                print(f"{i}: {l.item():.4f}")
                total = total + l / max(1.0, n.item())
            return total
        """,
}
# the clamped value is a tensor: where 1.0 is picked the original takes no gradient through
# `n`, so `n` stays residual
SOURCES["tensor_clamp"] = SOURCES["host_clamp"].replace("max(1.0, n.item())", "max(1.0, n)")
# `bool(n)` is a Python bool: no gradient through it either, `n` is hoisted
SOURCES["bool_clamp"] = SOURCES["host_clamp"].replace("max(1.0, n.item())", "max(1.0, bool(n))")
# `torch.median` changes nothing it is handed: the rows it reads are hoisted with the loss
SOURCES["printed_median"] = """
        def f(x, y, m):
            total = 0
            for i in range(len(x)):
                row = x[i] * y[i] + m[i].sum()
                print(f"{i}: {torch.median(row).item():.4f}")
                total = total + row.sum()
            return total
        """
GOLDEN = {
    "host_clamp": """
        def f(x, y, m):
            total = 0
            if isinstance(m, torch.Tensor) and len(x) <= m.shape[0] and isinstance(x, torch.Tensor) and (len(x) <= x.shape[0]) and isinstance(y, torch.Tensor) and (len(x) <= y.shape[0]) and isinstance(len(x), int) and (len(x) > 0):
                'optimize_loss: loop at line 3 vectorized'
                if y.dim() == x.dim():
                    _m_row = m if len(x) == m.shape[0] else m[0:len(x):1]
                    _x_row = x if len(x) == x.shape[0] else x[0:len(x):1]
                    _y_row = y if len(x) == y.shape[0] else y[0:len(x):1]
                    n = _m_row.sum(tuple(range(1, _m_row.dim()))) if _m_row.dim() > 1 else _m_row.reshape(len(_m_row), -1).sum(1)
                    _t = F.mse_loss(_x_row, _y_row, reduction='none')
                    l = _t.reshape(len(_t), -1).sum(1)
                    _l_all_item = l
                    _n_all_item = n
                    _outs_1 = (_l_all_item, _n_all_item)
                else:

                    def _body(_m_row, _x_row, _y_row):
                        n = _m_row.sum()
                        l = F.mse_loss(_x_row, _y_row, reduction='sum')
                        _l_all_item = l
                        _n_all_item = n
                        return (torch.as_tensor(_l_all_item), torch.as_tensor(_n_all_item))
                    _outs_1 = _map_in_chunks(_body, in_dims=(0, 0, 0))(m if len(x) == m.shape[0] else m[0:len(x):1], x if len(x) == x.shape[0] else x[0:len(x):1], y if len(x) == y.shape[0] else y[0:len(x):1])
                _l_all = _outs_1[0].unbind(0)
                _n_all = _outs_1[1].unbind(0)
                for i in range(len(x)):
                    l = _l_all[i]
                    n = _n_all[i]
                    print(f'{i}: {l.item():.4f}')
                    total = total + l / max(1.0, n.item())
            else:
                for i in range(len(x)):
                    n = m[i].sum()
                    l = F.mse_loss(x[i], y[i], reduction='sum')
                    print(f'{i}: {l.item():.4f}')
                    total = total + l / max(1.0, n.item())
            return total
        """,
}


def test_golden_host_clamp():
    assert_golden(SOURCES["host_clamp"], GOLDEN["host_clamp"], {3: "distributed"})


def test_a_python_number_a_builtin_max_picks_is_hoisted():
    # `n` is a Python number: no backward runs through it, picked or not
    _, report = rewrite_source(SOURCES["host_item_first"])
    reason = report.loops[0].reason
    assert reason.startswith("lines 4, 5 hoisted into one loop"), reason
    assert "picks from" not in reason


def test_a_bool_a_builtin_max_picks_is_hoisted():
    _, report = rewrite_source(SOURCES["bool_clamp"])
    reason = report.loops[0].reason
    assert reason.startswith("lines 4, 5 hoisted into one loop"), reason


def test_rows_handed_to_median_are_hoisted():
    # before `torch.median` was in the registry: "reads `row`, which line 5 (residual) hands to
    # `torch.median(...)`, which may change it", and the loop was kept
    _, report = rewrite_source(SOURCES["printed_median"])
    reason = report.loops[0].reason
    assert report.loops[0].strategy == "distributed", reason
    assert reason.startswith("lines 4, 6 hoisted into one loop"), reason
    assert "may change" not in reason


def test_a_tensor_a_builtin_max_may_not_pick_stays_residual():
    _, report = rewrite_source(SOURCES["tensor_clamp"])
    reason = report.loops[0].reason
    assert reason.startswith("line 5 hoisted into one loop")
    assert "<test>:4 `n = m[i].sum()`: its value flows into an item a builtin `max`/`min` " \
           "picks from" in reason


@pytest.mark.parametrize("name", sorted(SOURCES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_clamps_are_equivalent(name, dtype, capsys):
    original, optimized, _, _ = build(SOURCES[name])
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 4, generator=g, dtype=dtype)
    x[1, 2] = float("nan")
    x[3, 0] = float("inf")
    y = torch.randn(5, 4, generator=g, dtype=dtype)
    # counts 0 (clamped to 1), fractional (clamped) and above 1; a NaN weight's sum
    m = torch.tensor([[0.0, 0], [0.25, 0.5], [2, 1], [1, 3], [float("nan"), 1]], dtype=dtype)
    inputs = (x.requires_grad_(), y.requires_grad_(), m.requires_grad_())
    want = original(*inputs)
    printed = capsys.readouterr().out
    got = optimized(*inputs)
    assert capsys.readouterr().out == printed and printed.count("\n") == 5
    torch.testing.assert_close(got, want, equal_nan=True)
    assert_equivalent(original, optimized, *inputs)


QUOTED = {
    # `F.l1_loss(w, w * 2).item()` does not vary with the iteration: it stays in the residual
    # loop, and the reason quotes it, not the name it is bound to (`_value`)
    "operand_bound_first": ("""
        def f(x, y, w):
            total = 0
            for i in range(len(x)):
                l = F.mse_loss(x[i], y[i])
                print(F.l1_loss(w, w * 2).item(), l.item())
                total = total + l
            return total
        """, "<test>:5 `print(F.l1_loss(w, w * 2).item(), l.item())`: `F.l1_loss(w, w * 2).item()` "
             "is read by the residual loop or after the loop, and is not a per-iteration tensor "
             "value"),
    # `a = a[a[:, 0] > 0]` reads the `a` the line before binds: the check of the statement on
    # its own stands that value in under another name, which the reason does not show
    "rebound_name": ("""
        def f(x, y, boxes):
            total = 0
            for i in range(len(x)):
                l = F.mse_loss(x[i], y[i])
                a = boxes[i]
                a = a[a[:, 0] > 0]
                total = total + l + a.sum()
            return total
        """, "<test>:6 `a = a[a[:, 0] > 0]`: boolean mask indexing `a[a[:, 0] > 0]`: the number "
             "of selected elements varies per iteration"),
    # the operand of a residual statement left it: the statement is judged as written
    "judged_as_written": ("""
        def f(x, W, U):
            s = 0
            for t in range(x.shape[1]):
                s = torch.tanh(s @ U + x[:, t] @ W)
            return s.sum()
        """, "`s` is a loop-carried recurrence: s = torch.tanh(s @ U + x[:, t] @ W) (line 4)"),
}


@pytest.mark.parametrize("name", sorted(QUOTED))
def test_reasons_quote_the_users_statements(name):
    src, want = QUOTED[name]
    _, report = rewrite_source(src)
    reason = report.loops[0].reason
    assert report.loops[0].strategy == "distributed"
    assert want in reason
    assert "_value" not in reason and "before line" not in reason


def test_a_kept_loop_lists_each_statement_once_without_generated_names():
    # a forward-algorithm step: `n = torch.logsumexp(n, dim=1)` has its operand bound first
    # (`_value = torch.logsumexp(n, dim=1)`, then `n = _value`); both parts stay, and the
    # reason lists the statement the user wrote once, not the name the rewrite made
    _, report = rewrite_source("""
        def f(e, T, m):
            a = e[0]
            for t in range(1, e.shape[0]):
                n = a.unsqueeze(2) + T + e[t].unsqueeze(1)
                n = torch.logsumexp(n, dim=1)
                a = torch.where(m[t].unsqueeze(1), n, a)
            return a.sum()
        """)
    reason = report.loops[0].reason
    assert report.loops[0].strategy == "kept"
    assert "_value" not in reason
    assert reason.count("<test>:5 `n = torch.logsumexp(n, dim=1)`") == 1
    assert "<test>:5 `n = torch.logsumexp(n, dim=1)`: reads `n`, which line 4 (residual) " \
           "binds" in reason


CTC_PER_SEQUENCE = """
    def f(lp, tg, in_lens, tgt_lens):
        total = 0
        for i in range(lp.shape[1]):
            a = lp[:in_lens[i], i:i + 1]
            b = tg[i:i + 1, :tgt_lens[i]]
            total += {loss}(a, b, in_lens[i:i + 1], tgt_lens[i:i + 1], reduction="sum")
        return total
    """


def test_a_name_handed_to_an_unknown_function_is_not_said_to_be_bound():
    # per-sequence CTC through a binding the registry does not know (warp-ctc's): it may change
    # the lengths it is handed, and the slices reading them stay residual; the reason says so,
    # not that line 6 binds `in_lens` (it never does)
    _, report = rewrite_source(CTC_PER_SEQUENCE.format(loss="warp_ctc"))
    reason = report.loops[0].reason
    assert report.loops[0].strategy == "kept"
    assert "<test>:4 `a = lp[:in_lens[i], i:i + 1]`: reads `in_lens`, which line 6 (residual) " \
           "hands to `warp_ctc(...)`, which may change it" in reason
    assert "(residual) binds" not in reason


def test_a_functional_loss_is_not_said_to_change_its_arguments():
    # `F.ctc_loss` is in the registry (no batched form nor batching rule, no effect): the loop
    # stays for that, not for a change `F.ctc_loss` could make to the lengths it is handed
    _, report = rewrite_source(CTC_PER_SEQUENCE.format(loss="F.ctc_loss"))
    reason = report.loops[0].reason
    assert report.loops[0].strategy == "kept"
    assert reason.startswith("`F.ctc_loss(...)` has no batched form, and vmap would run it once "
                             "per iteration itself")
    assert "may change it" not in reason


def test_a_returned_list_of_losses_says_why_its_items_are_not_stacked():
    # HiFi-GAN's generator loss: the per-discriminator losses are returned as a list, which the
    # caller may read item by item; the reason says so, and how a stacked form would differ
    _, report = rewrite_source("""
        def f(disc_outputs):
            loss = 0
            gen_losses = []
            for dg in disc_outputs:
                l = torch.mean((1 - dg) ** 2)
                gen_losses.append(l)
                loss += l
            return loss, gen_losses
        """)
    loop, = report.loops
    assert loop.strategy == "kept"
    assert loop.reason.startswith(
        "`gen_losses` may be read in part after the loop (an item alone, as the caller can do "
        "with a list the function returns), and `(1 - dg) ** 2` may have a NaN/inf derivative: "
        "stacked, the backward through the items read would also run through the others "
        "(0 * NaN/inf = NaN), which the original leaves alone")
