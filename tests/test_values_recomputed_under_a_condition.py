"""A value computed before a tensor condition and read under it (hard-example mining): the
original never differentiates it for a deselected iteration, so the vectorized branch reads it
computed again from inputs detached where deselected (tensor_branches_to_where), and a
distributed loop does not stack it (distribute_loops); same value, gradients and dtype at NaN,
inf and ties."""
from __future__ import annotations

import pytest
import torch

from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, normalise, rewrite_source, strategies

NAN, INF = float("nan"), float("inf")
DTYPES = [torch.float32, torch.float64]

HARD = """
    def f(x, y, th):
        s, hard = 0, []
        for i in range(len(x)):
            l = F.cross_entropy(x[i:i + 1], y[i:i + 1])
            if l.item() > th:
                {update}
        return {result}
    """
UPDATES = {"accumulated": ("s += l", "s"), "appended": ("hard.append(l)", "torch.stack(hard).sum()")}


def _hard(update: str) -> str:
    step, result = UPDATES[update]
    return HARD.replace("{update}", step).replace("{result}", result)


def _rows(dtype: torch.dtype, shape: tuple = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits with a NaN row, an infinite one and two equal rows (ties), and their targets."""
    x = torch.tensor([[1., 3.], [NAN, 0.], [2., -1.], [INF, 0.], [2., -1.], [0.5, 0.5]],
                     dtype=dtype)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    if shape:  # a K-dimensional loss: [N, C, d] against [N, d]
        x, y = x[..., None].expand(6, 2, *shape).clone(), y[:, None].expand(6, *shape).clone()
    return x, y


def test_golden_recomputed_from_inputs_detached_where_deselected():
    code, _ = rewrite_source("""
        def f(x, th):
            s = 0
            for i in range(x.shape[0]):
                l = torch.log(x[i])
                if l.sum() > th:
                    s = s + l
            return s
        """)
    assert "_cond = torch.ne(l.sum() > th, False)" in code
    assert "torch.log(torch.where(_cond.reshape(" in code and "x[i].detach()" not in code
    assert ", _x_row, _x_row.detach()))" in code, code


def test_golden_value_with_a_constant_derivative_is_read_as_before():
    # 0 times a constant derivative is 0: the zeroed value is exact, nothing is recomputed
    code, _ = rewrite_source("""
        def f(x, th):
            s = 0
            for i in range(x.shape[0]):
                l = x[i].sum()
                if l.item() > th:
                    s = s + l
            return s
        """)
    assert "detach()" not in code.replace("l.detach()", "")
    assert "torch.where(_cond.reshape(_branch_shape[_cond.shape, l.shape]), l, False)" \
        in code, code


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("update", sorted(UPDATES))
@pytest.mark.parametrize("shape", [(), (3,)], ids=["batched", "vmap"])
def test_hard_example_mining_at_nan_inf_and_ties(dtype, update, shape):
    original, fast, code, report = build(_hard(update))
    assert report.loops[0].vectorized, report
    x, y = _rows(dtype, shape)
    tie = original(x[2:3], y[2:3], -1.0).item()  # rows 2 and 4 at the threshold: not selected
    for th in (0.5, tie, -1.0):
        assert_equivalent(original, fast, x.clone().requires_grad_(), y, th)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_weight_taking_a_gradient_gets_nothing_from_deselected_rows(dtype):
    original, fast, _, report = build("""
        def f(x, y, w, th):
            s = 0
            for i in range(len(x)):
                l = F.cross_entropy(x[i:i + 1] * w, y[i:i + 1])
                if l.item() > th:
                    s += l
            return s
        """)
    assert report.loops[0].vectorized, report
    x, y = _rows(dtype)
    for w in ([0.5, 2.0], [INF, 1.0]):
        assert_equivalent(original, fast, x.clone().requires_grad_(), y,
                          torch.tensor(w, dtype=dtype, requires_grad=True), 0.5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_rebound_input_is_not_read_again(dtype):
    # `a` changes after `l` is computed: the branch reads `l` (zeroed where deselected), never
    # log of the new `a`
    original, fast, _, report = build("""
        def f(x, th):
            s = 0
            for i in range(x.shape[0]):
                a = x[i]
                l = torch.log(a)
                a = a * 2
                if l.sum() > th:
                    s = s + l.sum() + a.sum()
            return s
        """)
    assert report.loops[0].vectorized, report
    x = torch.tensor([[1., 3.], [0.5, 0.25], [2., 4.]], dtype=dtype, requires_grad=True)
    assert_equivalent(original, fast, x, 0.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("update", sorted(UPDATES))
def test_distributed_loop_keeps_a_value_differentiated_in_some_iterations(dtype, update):
    src = _hard(update).replace("            if l.item()",
                                "            print(f'{l.item():.3f}')\n            if l.item()")
    code, report = rewrite_source(src)
    assert strategies(report) == {3: "kept"}, report
    assert "differentiated only in the iterations a residual `if` selects" in report.loops[0].reason
    original, fast, _, _ = build(src)
    x, y = _rows(dtype)
    assert_equivalent(original, fast, x.requires_grad_(), y, 0.5)


def test_distributed_loop_stacks_a_value_every_iteration_differentiates():
    # the no-change case: `total += l` differentiates every iteration's `l`
    src = """
        def f(x, y):
            total = 0
            for i in range(len(x)):
                l = F.cross_entropy(x[i:i+1], y[i:i+1])
                print(f"{i}: {l.item():.4f}")
                total += l
            return total
        """
    code, report = rewrite_source(src)
    assert strategies(report) == {3: "distributed"}, report
    assert rewrite_source(normalise(src))[0] == code


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_value_bound_in_one_branch_of_a_python_if_is_not_read_again(dtype):
    # with `flag` false `l` is `x[i]`: the branch must not read log(x[i])
    original, fast, _, report = build("""
        def f(x, th, flag):
            s = 0
            for i in range(x.shape[0]):
                l = x[i] * 1
                if flag:
                    l = torch.log(x[i])
                if l.sum() > th:
                    s = s + l.sum()
            return s
        """)
    assert report.loops[0].vectorized, report
    x = torch.tensor([[1., 3.], [0.5, 0.25], [2., 4.]], dtype=dtype, requires_grad=True)
    for flag in (False, True):
        assert_equivalent(original, fast, x, 1.0, flag)
