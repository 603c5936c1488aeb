"""normalize_comprehensions: reduced comprehensions as the equivalent loop."""
from __future__ import annotations

import ast

import pytest
import torch

from passes.loops import normalize_comprehensions
from rewrite.testing import assert_equivalent
from tests.loop_helpers import (build, context, dedent, namespace, normalise, rewrite_source,
                                strategies)


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
    init, loop, result, _ = to_loop("out = torch.stack([f(r) for r in rows])")
    assert ast.unparse(result) == "out = torch.stack(_items)"
    assert ast.unparse(loop) == normalise("for _r in rows:\n    _items.append(f(_r))")


@pytest.mark.parametrize("src", ["torch.stack([f(r) for r in rows], 1)",
                                 "torch.cat([f(r) for r in rows], dim=-2)"])
def test_stack_or_cat_along_a_literal_dim_becomes_appends(src):
    init, loop, result, _ = to_loop(f"out = {src}")
    assert ast.unparse(result) == "out = " + src.replace("[f(r) for r in rows]", "_items")
    assert ast.unparse(loop) == normalise("for _r in rows:\n    _items.append(f(_r))")


@pytest.mark.parametrize("src", ["torch.stack([f(r) for r in rows], d)",   # not a literal
                                 "torch.cat([f(r) for r in rows], dim=1.0)",
                                 "torch.cat([f(r) for r in rows], dim=1, out=o)",
                                 "torch.tensor([f(r) for r in rows], dtype=t)"])
def test_stack_or_cat_along_other_dims_is_not_taken(src):
    assert to_loop(f"out = {src}") is None


JOINED = """
    def f(x):
        a = torch.stack([x[i] * 2 for i in range(x.shape[0])], dim=1)
        b = torch.cat([x[i].exp() for i in range(x.shape[0])], -1)
        c = torch.cat([x[i, None] * x[i, None] for i in range(x.shape[0])], dim=-2)
        d = torch.stack([x[i].sum(1) for i in range(x.shape[0])], -1)
        return a.sin().sum() + (b * b.cumsum(-1)).sum() + c.cos().sum() + d.tanh().sum()
    """


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_stack_or_cat_along_a_dim_is_the_moved_stacked_items(dtype):
    original, optimized, code, report = build(JOINED)
    assert [l.strategy for l in report.loops] == ["batched"] * 4
    for form in (".movedim(0, 1)", ".movedim(0, -2).flatten(-2, -1)",
                 ".movedim(0, -3).flatten(-3, -2)", ".movedim(0, -1)"):
        assert form in code, form
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 4, dtype=dtype, generator=g)
    x[1, 0, 0] = x[0, 0, 0]  # ties
    assert_equivalent(original, optimized, x.requires_grad_())
    nan = x.detach().clone()
    nan[2, 1, 3] = float("nan")
    assert_equivalent(original, optimized, nan.requires_grad_())


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


# ---------------------------------------------------------------------------------------------
# Lists bound to a name: `xs = [...]` read only in ways the stacked tensor answers the same.

def lists_of(src: str) -> frozenset:
    tree = ast.parse(dedent(src))
    return normalize_comprehensions.stackable_lists(tree.body[0], context(tree, namespace()))


def test_bound_list_becomes_appends_to_own_list():
    tree = ast.parse("xs = [f(r) for r in rows]")
    ctx = context(ast.Module([ast.parse("def f(): pass").body[0]], []), namespace())
    init, loop, result, comp = normalize_comprehensions.to_loop(tree.body[0], ctx,
                                                                frozenset({"xs"}))
    assert ast.unparse(ast.Module(init + [loop, result], [])) == normalise("""
        _items = []
        for _r in rows:
            _items.append(f(_r))
        xs = _items
        """)
    assert comp.lineno == 1 and normalize_comprehensions.to_loop(tree.body[0], ctx) is None


STACKABLE = """
    def f(x, w):
        xs = [x[i] * 2 for i in range(3)]
        c = xs[0]
        for v in xs:
            c = c + v * w
        ms = [x[i].sum() for i in range(3)]
        return sum(xs) / len(xs) + torch.stack(xs).mean() + c + max(ms) * min(ms)
    """


@pytest.mark.parametrize("use", [
    "return xs",                              # escapes: a list of tensors expected
    "xs.append(x); return len(xs)",           # mutated
    "return sum(xs[1:])",                     # a slice: a list vs a tensor
    "c = xs[0]; c.add_(1); return c",         # an alias modified in place
    "c = xs[0]; c += 1; return c",
    "ys = []; ys.append(xs[0]); ys[0].mul_(2); return ys[0]",
    "return helper(xs[0])",                   # a user function might modify it
    "xs = [x[0]]; return len(xs)",            # bound twice
    "return torch.stack(xs, 1)",              # the stacked tensor is not a sequence of tensors
])
def test_bound_list_with_other_reads_is_not_stacked(use):
    assert lists_of(STACKABLE) == {"xs", "ms"}
    src = "def f(x):\n    xs = [x[i] * 2 for i in range(3)]\n    " + use.replace("; ", "\n    ")
    assert lists_of(src) == frozenset()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_bound_list_is_stacked_and_equivalent(dtype):
    original, optimized, code, report = build(STACKABLE)
    assert [(l.lineno, l.strategy) for l in report.loops] == [(2, "batched"), (4, "batched"),
                                                             (6, "batched")]
    assert "(xs.sum(0) if isinstance(xs, torch.Tensor) else sum(xs))" in code
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, dtype=dtype, generator=g, requires_grad=True)
    w = torch.randn(4, dtype=dtype, generator=g, requires_grad=True)
    assert_equivalent(original, optimized, x, w)
    assert_equivalent(original, optimized, [x[0], x[1], x[2]], w)  # a list: the original runs


def test_bound_list_of_host_values_stays_a_list_of_numbers():
    original, optimized, code, report = build("""
        def f(x):
            xs = [x[i].sum().item() for i in range(x.shape[0])]
            return sum(xs) / len(xs) * x.sum()
        """)
    assert report.loops[0].vectorized and "tolist()" in code
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert_equivalent(original, optimized, x)


# ---------------------------------------------------------------------------------------------
# Lists built by a loop: `lst = []`, appends, then reads a tensor of the items answers the same.

def built_lists(src: str) -> list[set]:
    tree = ast.parse(dedent(src))
    found = normalize_comprehensions.lists_built_by_loops(tree.body[0], context(tree, namespace()))
    loops = sorted((n for n in ast.walk(tree) if isinstance(n, ast.For)), key=lambda n: n.lineno)
    return [found.get(loop) for loop in loops]


BUILT = """
    def f(x, w):
        total = 0
        for j in range(x.shape[0]):
            scores = []
            for k in range(x.shape[1]):
                scores.append(x[j, k] * w)
            scores = torch.stack(scores)
            total = total + torch.logsumexp(scores, dim=0) - scores[0]
        rows = []
        for j in range(x.shape[0]):
            rows.append(x[j].sum() * 2)
        return total + sum(rows) / len(rows) + max(rows)
    """


@pytest.mark.parametrize("after", [
    "return scores",                      # escapes as a list
    "scores.append(x); return len(scores)",
    "return torch.stack(scores, 1)",
    "c = scores[0]; c.add_(1); return c",  # an alias modified in place
    "if w: scores = 1\n    return torch.stack(scores)",  # rebound inside a statement
])
def test_lists_built_by_loops_only_with_reads_the_stacked_items_answer(after):
    assert built_lists(BUILT) == [set(), {"scores"}, {"rows"}]
    src = ("def f(x, w):\n    scores = []\n    for k in range(3):\n"
           "        scores.append(x[k])\n    " + after.replace("; ", "\n    "))
    assert built_lists(src) == [set()]
    # not empty, or mentioned between `[]` and the loop
    assert built_lists("def f(x):\n    s = [x]\n    for k in range(3):\n        s.append(x[k])\n"
                       "    return torch.stack(s)\n") == [set()]
    assert built_lists("def f(x):\n    s = []\n    t = s\n    for k in range(3):\n"
                       "        s.append(x[k])\n    return torch.stack(s)\n") == [set()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_lists_built_by_loops_let_the_outer_loop_vectorize(dtype):
    original, optimized, code, report = build(BUILT)
    assert all(loop.vectorized for loop in report.loops), report.loops
    assert "scores = scores if isinstance(scores, torch.Tensor) else torch.stack(scores)" in code
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, dtype=dtype, generator=g, requires_grad=True)
    w = torch.randn((), dtype=dtype, generator=g, requires_grad=True)
    assert_equivalent(original, optimized, x, w)
    assert_equivalent(original, optimized, x[:1], w)


# ---------------------------------------------------------------------------------------------
# Every comprehension is reported once, at its line; a second run changes nothing.

def test_every_comprehension_is_reported_once_with_a_reason():
    src = """
        def f(x, c):
            a = {i: x[i] for i in range(2)}
            b = [x[i] + x[j] for i in range(2) for j in range(2)]
            for r in [x[k] for k in range(2)]:
                a[0] = a[0] + r
            d = sum(x[i] for i in range(2)) if c else 0
            e = [sum(x[i] * j for i in range(2)) for j in range(3)]
            g = sum(x[k] for k in range(2)) + torch.stack([x[k].exp() for k in range(len(b))])
            return a, b, d, e, g, [v for v in x]
        """
    code, report = rewrite_source(src)
    lines = sorted((l.lineno, l.strategy) for l in report.loops)
    assert lines == [(2, "kept"), (3, "kept"), (4, "kept"), (4, "kept"), (6, "kept"),
                     (7, "kept"), (7, "kept"), (8, "batched"), (8, "batched"), (9, "kept")]
    assert all(l.reason for l in report.loops)
    reasons = {l.lineno: l.reason for l in report.loops}
    assert "set/dict" in reasons[2] and "several `for`" in reasons[3]
    assert rewrite_source(code)[0] == code


def test_kept_comprehensions_name_what_reads_their_list():
    code, report = rewrite_source("""
        def f(x, w):
            a = [{'v': x[i]} for i in range(2)]
            b = np.array([x[i].sum().item() for i in range(2)])
            c = [x[i] * 2 for i in range(2)]
            use(c)
            d = [x[i] + 1 for i in range(2)]
            d = [v * w for v in d]
            return use(a, b, sum(d), [1] + [x[i] for i in range(2)])
        """)
    reasons = {l.lineno: l.reason for l in report.loops}
    assert reasons[2].startswith("its items are dicts: only tensors are stacked")
    assert reasons[3].startswith("its result is handed to `np.array(...)`")
    assert reasons[4].startswith("bound to `c`, which is read by `use(c)` (line 5)")
    assert reasons[6].startswith("bound to `d`, which is bound again (line 7)")
    assert reasons[7].startswith("bound to `d`, which is bound again (line 6)")
    assert reasons[8].startswith("its list is an operand of `[1] + [x[i] for i in range(2)]`: "
                                 "the list itself is needed")
    assert not any(l.vectorized for l in report.loops)


def test_a_kept_comprehensions_reason_quotes_the_code_as_written():
    # a JSD consistency loss: the second comprehension iterates `probs` and is vectorized first;
    # the first one's reason names why `probs` is not stacked, not the stacking code that
    # vectorizing the second one made of `probs`
    _, report = rewrite_source("""
        def f(output, n):
            logits_split = torch.split(output, n)
            probs = [F.softmax(logits, dim=1) for logits in logits_split]
            m = torch.clamp(torch.stack(probs).mean(axis=0), 1e-7, 1).log()
            return sum([F.kl_div(m, p, reduction="batchmean") for p in probs]) / len(probs)
        """)
    reasons = {l.lineno: l.reason for l in report.loops}
    assert [l.vectorized for l in sorted(report.loops, key=lambda l: l.lineno)] == [False, True]
    assert reasons[3].startswith(
        "bound to `probs`, which may be read in part after the loop (an item alone, as the "
        "caller can do with a list the function returns), and `F.softmax(logits, dim=1)` may "
        "have a NaN/inf derivative: stacked, the backward through the items read would also run "
        "through the others (0 * NaN/inf = NaN), which the original leaves alone; not "
        "distributed:")


def test_returned_list_becomes_appends_returned_as_a_list():
    init, loop, result, _ = to_loop("return [f(r) for r in rows]")
    assert ast.unparse(result) == "return list(_items)"
    assert ast.unparse(loop) == normalise("for _r in rows:\n    _items.append(f(_r))")
    assert to_loop("return a, [f(r) for r in rows]") is None  # a tuple holding it: not taken
    assert to_loop("return [f(r, s) for r in rows for s in rows]") is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_returned_list_is_the_rows_of_the_stacked_items(dtype):
    original, optimized, code, report = build("""
        def f(xs, w):
            return [(x * w).exp().amax() for x in xs]
        """)
    assert report.loops[0].strategy == "batched" and "list(" in code and ".unbind(0))" in code
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(4, 3, dtype=dtype, generator=g)
    xs[1, 2] = xs[1, 0]  # a tie in the max
    xs[3, 1] = float("nan")
    w = torch.randn(3, dtype=dtype, generator=g)
    got = optimized(xs.requires_grad_(), w.requires_grad_())
    assert type(got) is list and len(got) == 4
    assert_equivalent(lambda *a: torch.stack(original(*a)), lambda *a: torch.stack(optimized(*a)),
                      xs, w)
    assert_equivalent(original, optimized, list(xs.detach()), w)  # a list: stacked too


def test_returned_list_of_host_values_stays_numbers():
    original, optimized, code, report = build("""
        def f(xs):
            return [x.sum().item() for x in xs]
        """)
    assert report.loops[0].vectorized and "tolist()" in code
    xs = torch.randn(3, 5, dtype=torch.float64)
    got, want = optimized(xs), original(xs)
    assert got == want and all(type(v) is float for v in got)


def test_second_run_changes_nothing():
    code, _ = rewrite_source(STACKABLE)
    assert rewrite_source(code)[0] == code


# ---------------------------------------------------------------------------------------------
# A list reduced by the next statement, its only reader: the comprehension taken in the reducer
# (`xs = [...]; y = torch.cat(xs, dim=1)`), also when that statement binds the name again.

REUSED = """
    def f(x, k):
        per = []
        for j in range(x.shape[1]):
            per.append((x[:, j] * 2).pow(2))
        per = [p.mean(dim=1).unsqueeze(dim=1) for p in per]
        per = torch.cat(per, dim=1)
        return hardest(per, k)
    """


def hardest(per, k):  # a helper the rewrite does not see into: it could modify `per`
    top, _ = per.topk(k, dim=1, sorted=False)
    return top.sum(1).mean()


def reduced_next(src: str) -> list[str]:
    tree = ast.parse(dedent(src))
    found = normalize_comprehensions.lists_reduced_next(tree.body[0], context(tree, namespace()))
    return sorted(ast.unparse(s) for s in found.values())


def test_a_list_reduced_by_the_next_statement_is_taken_there():
    assert reduced_next(REUSED) == ["per = torch.cat(per, dim=1)"]
    assert reduced_next("""
        def f(x):
            ms = [x[i].sum(0) for i in range(3)]
            return torch.stack(ms, -1)
        """) == ["return torch.stack(ms, -1)"]


@pytest.mark.parametrize("src", [
    "ms = [x[i] for i in range(3)]\n    y = torch.cat(ms, 1)\n    return y + len(ms)",  # read again
    "ms = [x[i] for i in range(3)]\n    y = torch.cat(ms, 1) * 2\n    return y",  # inside: not first
    "ms = [x[i] for i in range(3)]\n    y = torch.cat(ms, d)\n    return y",  # not a literal dim
    "ms = [x[i] for i in range(3)]\n    z = 1\n    return torch.cat(ms, 1)",  # not the next one
    "ms = [x[i] for i in range(3)]\n    try:\n        return torch.cat(ms, 1)\n"
    "    except RuntimeError:\n        return ms",
    "global ms\n    ms = [x[i] for i in range(3)]\n    return torch.cat(ms, 1)",
])
def test_a_list_read_otherwise_is_not_taken_in_its_reducer(src):
    assert reduced_next("def f(x, d):\n    " + src + "\n") == []


def test_a_reused_name_golden():
    code, report = rewrite_source(REUSED, namespace(hardest=hardest))
    assert strategies(report) == {3: "batched", 5: "batched"}
    assert code == normalise("""
        def f(x, k):
            per = []
            if isinstance(x, torch.Tensor) and x.shape[1] <= x.shape[1] and isinstance(x.shape[1], int) and (x.shape[1] > 0):
                'optimize_loss: loop at line 3 vectorized'
                _x_row = (x if x.shape[1] == x.shape[1] else x[:, 0:x.shape[1]:1]).movedim(1, 0)
                _per_item = (_x_row * 2).pow(2)
                _outs = (_per_item,)
                per = _outs[0]
            else:
                for j in range(x.shape[1]):
                    per.append((x[:, j] * 2).pow(2))
            if isinstance(per, torch.Tensor) and per.dim() > 0 and isinstance(len(per), int) and (len(per) > 0):
                'optimize_loss: loop at line 5 vectorized'
                if per.dim() >= 3:
                    _p = per
                    _items_item = _p.mean(dim=2).unsqueeze(dim=2)
                    _outs_1 = (_items_item,)
                else:

                    def _body_1(_p):
                        _items_item = _p.mean(dim=1).unsqueeze(dim=1)
                        return (torch.as_tensor(_items_item),)
                    _outs_1 = _map_in_chunks(_body_1, in_dims=(0,))(per)
                per = _outs_1[0].movedim(0, 1).flatten(1, 2)
            else:
                per = torch.cat([p.mean(dim=1).unsqueeze(dim=1) for p in per], dim=1)
            return hardest(per, k)
        """)
    assert rewrite_source(code, namespace(hardest=hardest))[0] == code


def test_a_reused_name_read_otherwise_is_kept_as_written():
    src = REUSED.replace("        per = torch.cat", "        use(per)\n        per = torch.cat")
    code, report = rewrite_source(src, namespace(hardest=hardest))
    # not vectorized whole: the list itself is read; distribution splits it (the heavy part
    # vectorized, a residual loop builds the list `use` reads)
    assert [l.strategy for l in report.loops if l.lineno == 5] == ["distributed"]
    assert "    use(per)\n" in code


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_reused_name_is_equivalent(dtype):
    original, optimized, code, report = build(REUSED, namespace(hardest=hardest))
    assert all(l.vectorized for l in report.loops)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, dtype=dtype, generator=g, requires_grad=True)
    assert_equivalent(original, optimized, x, 2)
    assert original(x, 2).dtype == optimized(x, 2).dtype == dtype
    ties = x.detach().clone()
    ties[:, 1:4] = ties[:, :1]  # equal joints: ties in the top-k
    assert_equivalent(original, optimized, ties.requires_grad_(), 3)
    assert_equivalent(original, optimized, x, 5)  # every joint


def test_a_list_rebound_to_a_new_tensor_is_built_by_its_loop():
    # `hardest(per, k)` reads the new tensor, not the list: the appended list may be stacked
    assert built_lists(REUSED) == [{"per"}]
    # ... but not when the rebinding may share the list's memory, or another name holds an item
    assert built_lists(REUSED.replace("[p.mean(dim=1).unsqueeze(dim=1) for p in per]",
                                      "[p.unsqueeze(dim=1) for p in per]")) == [set()]
    assert built_lists(REUSED.replace("        per = [p.mean", "        first = per[0]\n"
                                      "        per = [p.mean")) == [set()]
