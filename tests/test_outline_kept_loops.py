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


def test_golden_loop_over_values():
    # how many iterations is known at the call: outlined when more than a few, each value
    # evaluated once, the loop as written otherwise
    code, bindings = outline("""
        def f(x, trans, ys):
            alpha = x[0]
            for i, feat in enumerate(x.unbind(0)):
                alpha = torch.logsumexp(alpha + trans + feat, 1)
            for p, t in zip(x, ys):
                alpha = alpha + p * t
            return alpha
        """)
    assert code == normalise('''
        def f(x, trans, ys):
            alpha = x[0]
            _kept_iter = x.unbind(0)
            if _iterates_many(_kept_iter):

                def _kept_loop():
                    nonlocal alpha, feat, i
                    for i, feat in enumerate(_kept_iter):
                        alpha = torch.logsumexp(alpha + trans + feat, 1)
                _run_eagerly(_kept_loop)
            else:
                for i, feat in enumerate(_kept_iter):
                    alpha = torch.logsumexp(alpha + trans + feat, 1)
            if _iterates_many(x, ys):

                def _kept_loop_1():
                    nonlocal alpha, p, t
                    for p, t in zip(x, ys):
                        alpha = alpha + p * t
                _run_eagerly(_kept_loop_1)
            else:
                for p, t in zip(x, ys):
                    alpha = alpha + p * t
            return alpha
        ''')
    assert bindings == {"_iterates_many": outline_kept_loops.iterates_many,
                        "_run_eagerly": outline_kept_loops.run_eagerly}


@pytest.mark.parametrize("values, many", [
    ((torch.zeros(17, 2),), True), ((torch.zeros(16, 2),), False), ((torch.zeros(()),), False),
    ((list(range(17)), range(20), tuple(range(17))), True), ((torch.zeros(40), [0] * 3), False),
    ((iter(range(40)),), False), (({k: k for k in range(40)},), False)])
def test_iterates_many(values, many):
    assert outline_kept_loops.iterates_many(*values) is many


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
    # loops over a few literal steps or items, or over unpacked rows, stay in the graph
    """
    def f(preds, targets):
        loss = 0
        for w, p in zip((1.0, 0.5), preds):
            loss = loss + w * p.mean()
        for k in range(3):
            loss = loss * 0.5
        for i, p in enumerate([preds, targets]):
            loss = loss + p.sum() * i
        for p, t in zip(*targets):
            loss = loss + (p - t).sum()
        return loss
    """,
    # a loop over values that returns from the function
    """
    def f(feats):
        for feat in feats:
            if feat.sum() > 0:
                return feat
        return feats[0]
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


def log_sum_exp(vec):
    top = torch.max(vec)
    return top + torch.log(torch.sum(torch.exp(vec - top.view(1, -1).expand(1, vec.size()[1]))))


def tutorial_crf(feats, transitions, start):
    # the BiLSTM-CRF tutorial's forward algorithm: a recurrence over the rows of `feats`
    forward_var = torch.full((1, transitions.shape[0]), -10000., dtype=feats.dtype)
    forward_var[0][start] = 0.
    for feat in feats:
        alphas_t = []
        for next_tag in range(transitions.shape[0]):
            emit_score = feat[next_tag].view(1, -1).expand(1, transitions.shape[0])
            trans_score = transitions[next_tag].view(1, -1)
            alphas_t.append(log_sum_exp(forward_var + trans_score + emit_score).view(1))
        forward_var = torch.cat(alphas_t).view(1, -1)
    return log_sum_exp(forward_var + transitions[start])


def rows(xs, stop):
    total = torch.zeros_like(xs[0])
    for k, x in enumerate(xs):
        if k == stop:
            raise ValueError(f"row {k}")
        total = torch.sin(total * x + x)
        last = x
    return total.sum() * last.sum()


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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", [None, "aot_eager"])
def test_a_loop_over_a_tensors_rows_is_equivalent(user, dtype, backend, keep_faster_on):
    # keep_faster times forms with the inner loop's vmapped body as written: its `def` is gone
    g = torch.Generator().manual_seed(0)
    trans = torch.randn(3, 3, generator=g, dtype=dtype, requires_grad=True)
    opt = rewrite.optimize_loss(user.tutorial_crf, compile=backend is not None,
                                backend=backend or "inductor", strict=True)
    for T in (20, 4):  # outlined; as written
        feats = torch.randn(T, 3, generator=g, dtype=dtype, requires_grad=True)
        assert_equivalent(user.tutorial_crf, opt, feats, trans, 1)
        assert opt(feats, trans, 1).dtype == dtype
    assert "runs eagerly, outside the graph, when it iterates more than 16 items" \
        in str(opt.report)


def test_a_loop_over_a_tensors_rows_compiles_to_graphs_that_do_not_grow_with_its_rows(user):
    # the tutorial's CRF at T=40 was unrolled by Dynamo: 161 s to compile with Inductor
    graphs, ops = {}, {}
    for T in (20, 40):
        torch._dynamo.reset()
        counter = torch._dynamo.testing.CompileCounter()
        opt = rewrite.optimize_loss(user.tutorial_crf, backend=counter, verify_compiled=False,
                                    strict=True)
        feats, trans = torch.randn(T, 3, requires_grad=True), torch.randn(3, 3)
        torch.testing.assert_close(opt(feats, trans, 1), user.tutorial_crf(feats, trans, 1))
        graphs[T], ops[T] = counter.frame_count, counter.op_count
    assert graphs[20] == graphs[40] <= 3 and ops[20] == ops[40] < 20, (graphs, ops)


@pytest.mark.parametrize("n", [20, 3])
def test_a_loop_over_a_list_keeps_values_exceptions_and_their_lines(user, n):
    xs = [torch.randn(2, dtype=torch.float64, requires_grad=True) for _ in range(n)]
    opt = rewrite.optimize_loss(user.rows, compile=False, strict=True)
    assert_equivalent(user.rows, opt, xs, -1)
    with pytest.raises(ValueError, match=f"row {n - 2}") as want:
        user.rows(xs, n - 2)
    with pytest.raises(ValueError, match=f"row {n - 2}") as got:
        opt(xs, n - 2)
    assert got.traceback[-1].lineno == want.traceback[-1].lineno
    assert "outside the graph, when it iterates more than 16 items" in str(opt.report)
