"""loop_dataflow: liveness, loop-carried variables, dependence and effect classification."""
from __future__ import annotations

import ast

import pytest

from passes.loops import loop_dataflow
from passes.errors import Unsupported
from tests.loop_helpers import context, dedent, namespace


def parse(src: str) -> tuple[ast.FunctionDef, list[ast.For]]:
    func = ast.parse(dedent(src)).body[0]
    return func, sorted((n for n in ast.walk(func) if isinstance(n, ast.For)),
                        key=lambda n: n.lineno)


def analyze(src: str) -> loop_dataflow.LoopFacts:
    func, (loop, *_) = parse(src)
    live = loop_dataflow.live_after_loops(func)[loop]
    ctx = context(ast.Module([func], []), namespace())
    return loop_dataflow.analyze(loop.body, loop.target.id, {loop.target.id}, live, ctx)


def test_liveness_after_each_loop():
    func, (first, second, inner) = parse("""
        def f(x):
            t = 0
            for i in range(3):
                t = x[i]
                u = t * 2
            for j in range(3):
                for k in range(2):
                    v = x[k]
                w = v + j
            return t
        """)
    live = loop_dataflow.live_after_loops(func)
    # t is returned; x and v (the inner loop may run zero times) are read later; u is dead
    assert {"t", "x", "v"} <= live[first] and "u" not in live[first]
    assert live[second] == {"t"}
    assert "v" in live[inner] and "j" in live[inner]  # read after the inner loop


def test_liveness_through_the_back_edge():
    func, (outer, inner) = parse("""
        def f(x):
            s = 0
            for i in range(3):
                for j in range(2):
                    s = s + x[j]
                y = 1
            return y
        """)
    assert "s" in loop_dataflow.live_after_loops(func)[inner]  # next outer iteration


def test_names_bound_to_zero_when_each_loop_starts():
    func, (first, second, third, inner, fourth) = parse("""
        def f(x, g):
            global total
            s, t, u, total = 0, 0, 0, 0
            s = 0
            t = 0.0
            u = 0
            k = u + 1
            total = 0
            for i in range(3):
                s += x[i]
            v = 0
            w = False
            g(v)
            for i in range(3):
                s += x[i]
            c = 0
            if k:
                pass
            for i in range(3):
                c = 0
                for j in range(2):
                    c += x[j]
            (d := 0)
            e = 0
            del e
            for i in range(3):
                pass
        """)
    zeros = loop_dataflow.zero_before_loops(func)
    # t is a float, u is read in between, total is global (a call could rebind it)
    assert zeros[first] == {"s"}
    assert zeros[second] == set()  # v is passed to a call: it is mentioned
    assert zeros[third] == set()   # an `if` in between may rebind anything
    assert zeros[inner] == {"c"}
    assert zeros[fourth] == set()  # the walrus is not `name = 0`, `del e` mentions e


def test_names_bound_to_numbers_when_each_loop_starts():
    """Python number literals, also bound by a tuple assignment, and through an `if` whose test
    does not mention them (the counted `while` loop's `for` form)."""
    func, (first, second, third) = parse("""
        def f(x, k):
            a, b, c = 0, -1.5, x
            d = torch.zeros(())
            for i in range(3):
                a += x[i]
            e, g = 0.0, 0
            if type(k) is int:
                for i in range(k):
                    e += x[i]
            if e > g:
                for i in range(k):
                    e += x[i]
        """)
    numbers = loop_dataflow.numbers_before_loops(func)
    assert numbers[first] == {"a": 0, "b": -1.5}  # c and d are no number literals
    assert numbers[second] == {"e": 0.0, "g": 0}
    assert numbers[third] == {}  # the test reads them: the branches after it do not know
    assert loop_dataflow.zero_before_loops(func)[second] == {"g"}


@pytest.mark.parametrize("after, divided", [
    ("return s / n", {"s": "n"}),
    ("return (s / n, t / len(x))", {"s": "n", "t": "len(x)"}),
    ("return s / n + s", {}),             # the sum is read too
    ("return s / n + s / m", {}),         # two divisors
    ("return s / s.shape[0]", {}),        # the divisor reads the sum
    ("return s // n", {}),
    ("s = s / n + 1", {"s": "n"}),
    ("t = s / n", {}),                    # s stays live: only a rebound name
    ("s /= n", {}),
])
def test_divisions_right_after_a_loop(after, divided):
    func, (loop,) = parse(f"""
        def f(x, n, m):
            s = t = 0
            for i in range(n):
                s += x[i]
            {after}
        """)
    found = loop_dataflow.divisions_after_loops(func)
    assert found.get(loop, (None, {}))[1] == divided


def test_divisions_after_inner_loops_are_not_means_of_the_function():
    func, (outer, inner) = parse("""
        def f(x, n):
            for j in range(2):
                s = 0
                for i in range(n):
                    s += x[i]
                t = s / n
            return t / 2
        """)
    assert inner not in loop_dataflow.divisions_after_loops(func)


def test_accumulators_and_effects_are_classified():
    facts = analyze("""
        def f(x, out, lst):
            s = 0
            m = 0
            for i in range(3):
                t = x[i] * 2
                s = s - t + 1
                m = max(m, t)
                lst.append(t)
                out[i] = t
            return s, m
        """)
    kinds = sorted((e.kind, e.name, e.family) for e in facts.effects.values())
    assert kinds == [("acc", "m", "builtin_max"), ("acc", "s", "sum"),
                     ("append", "lst", ""), ("write", "out", "")]
    assert {"t", "s", "m", "i"} <= facts.variant


def test_carried_local_defined_on_one_branch_only_is_a_recurrence():
    with pytest.raises(Unsupported, match="`prev` is a loop-carried recurrence"):
        analyze("""
            def f(x):
                prev = 0
                s = 0
                for i in range(3):
                    if i > 0:
                        s = s + x[i] - prev
                    prev = x[i]
                return s
            """)


def test_prefix_sum_becomes_a_scan():
    facts = analyze("""
        def f(x, out):
            s = 0
            for i in range(3):
                s = s + x[i]
                out[i] = s
            return s
        """)
    assert sorted(e.kind for e in facts.effects.values()) == ["scan", "write"]


@pytest.mark.parametrize("src, reason", [
    ("""
        def f(x, out):
            for i in range(3):
                out[i] = out[i - 1] + x[i]
            return out
     """, "reads `out` while writing it"),
    ("""
        def f(x):
            s = 0
            for i in range(3):
                s = s * 0.5 + x[i]
            return s
     """, "`s` is a loop-carried recurrence: s = s * 0.5 + x[i] (line 4)"),
    ("""
        def f(x):
            for i in range(3):
                i = i + 1
            return x
     """, "rebinds the loop variable `i` (line 3)"),
])
def test_refusals_say_why(src, reason):
    with pytest.raises(Unsupported, match=reason.replace("(", r"\(").replace(")", r"\)")
                       .replace("*", r"\*").replace("[", r"\[").replace("]", r"\]")
                       .replace("+", r"\+")):
        analyze(src)


def test_shape_queries_do_not_vary():
    func = ast.parse("y = x[i].shape[0] + len(z[i])").body[0]
    ctx = context(ast.Module([ast.parse("def f(): pass").body[0]], []), namespace())
    assert not loop_dataflow.depends(func.value, {"i"}, ctx)
