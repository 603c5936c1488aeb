"""normalize_comprehensions: reduced comprehensions as the equivalent loop."""
from __future__ import annotations

import ast

import torch

from passes import normalize_comprehensions
from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, context, dedent, namespace, normalise


def to_loop(stmt_src: str):
    tree = ast.parse(dedent(stmt_src))
    ctx = context(ast.Module([ast.parse("def f(): pass").body[0]], []), namespace())
    return normalize_comprehensions.to_loop(tree.body[0], ctx)


def test_sum_with_condition_becomes_a_masked_accumulation():
    init, loop, result, lineno = to_loop("loss = sum(w[i] * x[i] for i in range(n) if m[i])")
    code = ast.unparse(ast.Module(init + [loop, result], []))
    assert code == normalise("""
        _acc = 0
        for _i in range(n):
            if m[_i]:
                _acc = _acc + w[_i] * x[_i]
        loss = _acc
        """)


def test_stack_becomes_appends():
    assert to_loop("out = torch.stack([f(r) for r in rows], 1)") is None  # dim: not taken
    init, loop, result, _ = to_loop("out = torch.stack([f(r) for r in rows])")
    assert ast.unparse(result) == "out = torch.stack(_items)"
    assert ast.unparse(loop) == normalise("for _r in rows:\n    _items.append(f(_r))")


def test_not_taken_where_evaluation_is_conditional():
    assert to_loop("y = a if c else sum(x[i] for i in range(3))") is None
    assert to_loop("y = c and torch.stack([x[i] for i in range(3)])") is None
    assert to_loop("y = [sum(x[i] for i in range(3)) for j in range(2)]") is None


def test_comprehensions_are_equivalent_and_reported():
    original, optimized, code, report = build("""
        def f(x, y):
            i = 7
            a = sum((x[i] - y[i]).pow(2).sum() for i in range(x.shape[0]) if y[i].sum() > 0)
            b = torch.stack([x[j] * 2 for j in range(3)]).sum() + torch.tensor([x[k, 0].item() for k in range(2)]).sum()
            return a + b + i
        """)
    assert [(l.lineno, l.strategy) for l in report.loops] == [(3, "batched"), (4, "batched"),
                                                             (4, "batched")]
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        assert_equivalent(original, optimized,
                          torch.randn(4, 3, dtype=dtype, generator=g, requires_grad=True),
                          torch.randn(4, 3, dtype=dtype, generator=g, requires_grad=True))
