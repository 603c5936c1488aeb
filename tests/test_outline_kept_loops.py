"""outline_kept_loops: loops that stay loops run eagerly, outside the compiled graph. Golden
before/after (and what is left in place), equivalence (value, gradients, names the loop leaves
bound or unbound, break/continue), and the invariant the pass exists for: the graph Dynamo
captures does not grow with the trip count."""
from __future__ import annotations

import ast
import textwrap

import pytest
import torch
import torch._dynamo.testing

import rewrite
from passes import outline_kept_loops
from rewrite.testing import assert_equivalent
from tests.helpers import load_module
from tests.loop_helpers import context, dedent, namespace, normalise

DTYPES = [torch.float32, torch.float64]


def outline(src: str) -> tuple[str, dict]:
    """The pass alone on ``src``: the new source, the objects it binds."""
    tree = ast.parse(dedent(src))
    ctx = context(tree, namespace())
    tree = outline_kept_loops.transform(tree, ctx)
    return ast.unparse(tree), ctx.bindings


def test_golden():
    code, bindings = outline("""
        def f(x, w):
            '''doc'''
            s = torch.zeros_like(x[0])
            for t in range(x.shape[0]):
                s = torch.tanh(w * s + x[t])
                last = t
            return s.sum() + last
        """)
    assert code == normalise('''
        def f(x, w):
            """doc"""
            last: object
            t: object
            s = torch.zeros_like(x[0])

            def _kept_loop():
                nonlocal last, s, t
                for t in range(x.shape[0]):
                    s = torch.tanh(w * s + x[t])
                    last = t
            _run_eagerly(_kept_loop)
            return s.sum() + last
        ''')
    assert bindings == {"_run_eagerly": outline_kept_loops.run_eagerly}


@pytest.mark.parametrize("src", [
    # no loop
    """
    def f(x):
        return x.sum()
    """,
    # a loop that returns from the function
    """
    def f(x):
        for t in range(len(x)):
            if x[t] > 0:
                return x[t]
        return x.sum()
    """,
    # a loop binding a name the function declares global
    """
    def f(x):
        global g
        for t in range(len(x)):
            g = x[t]
        return g
    """,
    # loops over containers (heads, layers) and over a few literal steps stay in the graph
    """
    def f(preds, targets):
        loss = 0
        for p, t in zip(preds, targets):
            loss = loss + ((p - t) ** 2).mean()
        for k in range(3):
            loss = loss * 0.5
        return loss
    """,
    # the original loop a vectorized loop keeps as its else branch
    """
    def f(x):
        if isinstance(x, torch.Tensor):
            'optimize_loss: loop at line 3 vectorized'
            s = x.sum()
        else:
            for t in range(len(x)):
                s = s + x[t]
        return s
    """,
])
def test_left_in_place(src):
    code, _ = outline(src)
    assert code == normalise(src)


def test_loops_in_the_vectorized_branch_and_nested_blocks_are_outlined():
    code, _ = outline("""
        def f(x):
            if isinstance(x, torch.Tensor):
                'optimize_loss: loop at line 3 vectorized'
                with torch.no_grad():
                    while x.abs().max() > 1:
                        x = x / 2
            else:
                for t in range(len(x)):
                    pass
            return x
        """)
    assert code.count("_run_eagerly(_kept_loop)") == 1 and "nonlocal x" in code
    assert "else:\n        for t in range(len(x)):" in code


def test_a_loop_defining_a_function_is_outlined_with_the_names_it_binds_itself():
    # a vectorized inner loop's vmapped body: its `return` and its locals are its own
    code, _ = outline("""
        def f(x):
            s = x[0]
            for t in range(x.shape[0]):
                def _body(r):
                    y = r * s
                    return y
                s = _body(x[t])
            return s
        """)
    assert "_run_eagerly(_kept_loop)" in code and "nonlocal _body, s, t\n" in code, code


SOURCES = """
import torch


def rnn(x, w):
    s = torch.zeros_like(x[0])
    for t in range(x.shape[0]):
        s = torch.tanh(w * s + x[t])
        last = t
    return s.sum() * last


def skips(x):
    total = 0
    for k in range(len(x)):
        row = x[k]
        if row.sum() > 0:
            continue
        total = total + row.exp().sum()
        if total > 100:
            break
    return total


def unbound(x, n):
    for t in range(n):
        y = x[t]
    return y.sum()


def crf(feats, trans):
    alpha = feats[0]
    for t in range(1, feats.shape[0]):
        parts = []
        for k in range(feats.shape[1]):
            emit = feats[t, k].view(1, -1).expand(1, feats.shape[1])
            parts.append(torch.logsumexp(alpha + trans[k] + emit, 1).view(1))
        alpha = torch.cat(parts)
    return torch.logsumexp(alpha, 0)


def halve(x):
    n = 0
    while x.abs().max() > 1:
        x = x / 2
        n += 1
    return x.sum() * n
"""


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("outline"), SOURCES)


@pytest.mark.parametrize("dtype", DTYPES)
def test_equivalent(user, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 4, generator=g, dtype=dtype, requires_grad=True)
    for fn, args in ((user.rnn, (x, 0.5)), (user.skips, (x,)), (user.unbound, (x, 3)),
                     (user.halve, (x * 10,)), (user.crf, (x, x[:4].detach()))):
        opt = rewrite.optimize_loss(fn, compile=False, strict=True)
        assert_equivalent(fn, opt, *args)
        assert "runs eagerly, outside the graph" in str(opt.report)


def test_a_loop_that_did_not_run_leaves_its_names_unbound(user):
    opt = rewrite.optimize_loss(user.unbound, compile=False, strict=True)
    with pytest.raises(UnboundLocalError) as want:
        user.unbound(torch.ones(3, 2), 0)
    with pytest.raises(UnboundLocalError) as got:
        opt(torch.ones(3, 2), 0)
    assert str(got.value) == str(want.value)


def test_the_captured_graph_does_not_grow_with_the_trip_count(user):
    ops = {}
    for T in (4, 40):
        counter = torch._dynamo.testing.CompileCounter()
        opt = rewrite.optimize_loss(user.rnn, backend=counter, verify_compiled=False, strict=True)
        x = torch.randn(T, 3, requires_grad=True)
        torch.testing.assert_close(opt(x, 0.5), user.rnn(x, 0.5))
        ops[T] = counter.op_count
    assert ops[4] == ops[40] and ops[4] < 10


def test_a_kept_loop_around_a_vmapped_inner_loop_is_outlined(user):
    # the inner loop's vmapped body holds a `return`: the outer loop was left in the graph,
    # unrolled by Dynamo (ops x10 from T=4 to T=40; 161 s to compile the tutorial's CRF at T=40)
    ops = {}
    for T in (4, 40):
        counter = torch._dynamo.testing.CompileCounter()
        opt = rewrite.optimize_loss(user.crf, backend=counter, verify_compiled=False, strict=True)
        x, trans = torch.randn(T, 5, requires_grad=True), torch.randn(5, 5)
        torch.testing.assert_close(opt(x, trans), user.crf(x, trans))
        ops[T] = counter.op_count
    assert ops[4] == ops[40] and ops[4] < 10, ops
    assert {loop.strategy for loop in opt.report.loops} == {"kept", "vmap"}, opt.report
