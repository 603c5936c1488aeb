"""vectorize_loops: golden rewrites, behavioural equivalence (value and every gradient, float32
and float64), invariants, fuzzing, and the examples suite."""
from __future__ import annotations

import ast
import functools
import gc
import importlib
import inspect
import textwrap
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rewrite
from passes.loops import batch_loop_bodies, vectorize_loops
from passes.errors import Unsupported
from rewrite.testing import assert_equivalent
from tests.helpers import EXAMPLE_NAMES as NAMES
from tests.helpers import load_module
from tests.loop_helpers import (build, context, dedent, finite_grads, namespace, normalise,
                                rewrite_source, same_python_types, strategies)

DTYPES = [torch.float32, torch.float64]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, dtype, seed):
    return torch.randn(*shape, generator=gen(seed), dtype=dtype).requires_grad_()


def rand(*shape, dtype, seed):
    return torch.rand(*shape, generator=gen(seed), dtype=dtype).requires_grad_()


def labels(n, classes, seed):
    return torch.randint(0, classes, (n,), generator=gen(seed))


# ---------------------------------------------------------------------------------------------
# Behaviour: (source, inputs(dtype, seed), {lineno: strategy}) per loop pattern vectorized.
# Line numbers count from the `def` line = 1.

CASES = {
    # 1. iteration forms
    "range_len": ("""
        def f(pred, target):
            loss = 0
            for i in range(len(pred)):
                d = pred[i] - target[i]
                loss += (d * d).sum()
            return loss / len(pred)
        """, lambda dt, s: (randn(5, 3, dtype=dt, seed=s), randn(5, 3, dtype=dt, seed=s + 9)),
        {3: "batched"}),
    "range_shape_size_step": ("""
        def f(x):
            s = 0
            for i in range(1, x.size(0), 2):
                s = s + x[i].exp().sum()
            for j in range(x.shape[1]):
                s = s - x[:, j].max()
            return s
        """, lambda dt, s: (randn(7, 3, dtype=dt, seed=s),), {3: "batched", 5: "batched"}),
    "zip_enumerate": ("""
        def f(xs, ys):
            total = 0
            for k, (a, b) in enumerate(zip(xs, ys)):
                total = total + (a - b).abs().sum() * k
            return total
        """, lambda dt, s: (randn(5, 2, dtype=dt, seed=s), randn(4, 2, dtype=dt, seed=s + 1)),
        {3: "batched"}),
    "iterate_tensor": ("""
        def f(x, w):
            outs = []
            for row in x:
                outs.append((row * w).sum())
            return torch.stack(outs).mean()
        """, lambda dt, s: (randn(5, 3, dtype=dt, seed=s), randn(3, dtype=dt, seed=s + 1)),
        {3: "batched"}),
    "comprehensions": ("""
        def f(x, y):
            a = sum((x[i] - y[i]).pow(2).sum() for i in range(x.shape[0]))
            b = torch.stack([x[j].sum() for j in range(2)]).sum()
            c = torch.cat([y[k] * 2 for k in range(3)]).sum()
            return a + b + c
        """, lambda dt, s: (randn(5, 3, dtype=dt, seed=s), randn(5, 3, dtype=dt, seed=s + 1)),
        {2: "batched", 3: "batched", 4: "batched"}),
    # 2. indexing by the loop variable
    "index_forms": ("""
        def f(x, w, t):
            s = 0
            for i in range(x.shape[0]):
                s = s + x[i, i % 3] * i + w[i % 2] + x[i:i + 1].sum() + x[..., i % 3].sum() * t[i]
            return s
        """, lambda dt, s: (randn(4, 3, dtype=dt, seed=s), randn(2, dtype=dt, seed=s + 1),
                            randn(4, dtype=dt, seed=s + 2)), {3: "vmap"}),
    "gather_by_labels": ("""
        def f(feats, centers, lab):
            loss = 0
            for i in range(feats.shape[0]):
                loss = loss + ((feats[i] - centers[lab[i]]) ** 2).sum()
            return loss
        """, lambda dt, s: (randn(6, 3, dtype=dt, seed=s), randn(4, 3, dtype=dt, seed=s + 1),
                            labels(6, 4, s)), {3: "batched"}),
    "unit_slices_cross_entropy": ("""
        def f(logits, t):
            loss = 0
            for i in range(logits.shape[0]):
                loss = loss + F.cross_entropy(logits[i:i+1], t[i:i+1])
            return loss
        """, lambda dt, s: (randn(5, 3, dtype=dt, seed=s), labels(5, 3, s)), {3: "batched"}),
    # 3. accumulators
    "accumulators": ("""
        def f(x):
            s = 0.0
            p = torch.ones(())
            m = torch.tensor(float("-inf"), dtype=x.dtype)
            b = float("inf")
            n = 0
            for i in range(x.shape[0]):
                s += x[i].sum()
                s -= x[i, 0]
                p = p * (1 + x[i, 1].tanh() * 0.1)
                m = max(m, x[i].sum())  # torch.maximum is kept: tests/test_python_semantics.py
                b = min(b, x[i].min())
                n += 1
            return s, p, m, b, n
        """, lambda dt, s: (randn(5, 3, dtype=dt, seed=s),), {7: "batched"}),
    "conditional_counter": ("""
        def f(y, p):
            count = 0
            hits = 0.0
            for i in range(len(y)):
                if y[i] > 0.5:
                    count += 1
                    hits += p[i]
            return count, hits
        """, lambda dt, s: (torch.rand(8, generator=gen(s), dtype=dt), randn(8, dtype=dt, seed=s)),
        {4: "batched"}),
    # 4. appends
    "append_consumers": ("""
        def f(x):
            a, b, c = [], [], []
            for i in range(x.shape[0]):
                a.append(x[i] * 2)
                b.append(x[i].sum())
                c.append(x[i, 0].item())
            return (torch.stack(a).sum() + torch.cat(a).mean() + sum(b) * len(b)
                    + torch.mean(torch.stack(b)), torch.tensor(c))
        """, lambda dt, s: (randn(4, 3, dtype=dt, seed=s),), {3: "batched"}),
    # 5. writes into preallocated tensors
    "slow_add": ("""
        def f(a, b):
            out = torch.zeros_like(a)
            for i in range(a.shape[0]):
                for j in range(a.shape[1]):
                    out[i, j] = a[i, j] + b[i, j]
            return out
        """, lambda dt, s: (randn(4, 3, dtype=dt, seed=s), randn(4, 3, dtype=dt, seed=s + 1)),
        {3: "batched", 4: "batched"}),
    "writes": ("""
        def f(x, w):
            out = torch.zeros(x.shape[0], 5, dtype=x.dtype)
            acc = x.new_zeros(x.shape[0])
            cols = torch.full((x.shape[0], 3), 7.0, dtype=x.dtype)
            for i in range(x.shape[0]):
                out[i, :3] = x[i] * w
                out[i, 4] = x[i].sum()
                acc[i] += x[i, 0] * 2
            for c in range(3):
                cols[:, c] = x[:, c] * c
            return out, acc, cols
        """, lambda dt, s: (randn(4, 3, dtype=dt, seed=s), randn(3, dtype=dt, seed=s + 1)),
        {5: "batched", 9: "batched"}),
    # 6. if/elif/else on tensor values, with the NaN trap
    "bce_if_else": ("""
        def f(p, y):
            loss = 0
            for i in range(p.shape[0]):
                if y[i] > 0.5:
                    loss = loss - torch.log(p[i])
                else:
                    loss = loss - torch.log(1 - p[i])
            return loss
        """, lambda dt, s: (rand(7, dtype=dt, seed=s),
                            (torch.rand(7, generator=gen(s + 1)) > 0.5).to(dt)), {3: "batched"}),
    "nan_trap_branches": ("""
        def f(x):
            s = 0
            for i in range(x.shape[0]):
                if x[i] > 0:
                    t = torch.log(x[i]) + x[i].sqrt() + 1 / x[i] + x[i] ** 0.5
                elif x[i] > -0.5:
                    t = torch.sqrt(-x[i]) + torch.exp(x[i] * 1000)
                else:
                    t = x[i] * 2
                s = s + t
            return s
        """, lambda dt, s: (randn(9, dtype=dt, seed=s),), {3: "batched"}),
    "smooth_l1_out_writes": ("""
        def f(pred, target, beta=1.0 / 9):
            out = torch.zeros_like(pred)
            for i in range(pred.shape[0]):
                for j in range(pred.shape[1]):
                    diff = pred[i, j] - target[i, j]
                    if diff.abs() < beta:
                        out[i, j] = 0.5 * diff ** 2 / beta
                    else:
                        out[i, j] = diff.abs() - 0.5 * beta
            return out.mean()
        """, lambda dt, s: (0.3 * randn(6, 4, dtype=dt, seed=s), 0.3 * randn(6, 4, dtype=dt,
                                                                             seed=s + 1)),
        {3: "batched", 4: "batched"}),
    # 7. masked continue
    "ignore_index_continue": ("""
        def f(logp, target, ignore_index=-100):
            loss = 0
            count = 0
            for i in range(len(target)):
                if target[i] == ignore_index:
                    continue
                loss = loss - logp[i, target[i]]
                count += 1
            return loss / max(count, 1)
        """, lambda dt, s: (randn(6, 3, dtype=dt, seed=s), torch.tensor([0, -100, 2, 1, -100, 0])),
        {4: "batched"}),
    "empty_class_continue": ("""
        def f(probs, lab):
            loss = 0
            for c in range(probs.shape[1]):
                fg = (lab == c).float()
                if fg.sum() == 0:
                    continue
                inter = (probs[:, c] * fg).sum()
                loss += 1 - 2 * inter / (probs[:, c].sum() + fg.sum())
            return loss
        """, lambda dt, s: (rand(10, 4, dtype=dt, seed=s), torch.tensor([0, 0, 1, 1, 0, 1, 0, 0, 1, 1])),
        {3: "batched"}),
    # 8. host round trips
    "host_round_trips": ("""
        def f(p, w, lab, c):
            s = 0
            for i in range(p.shape[0]):
                k = int(lab[i])
                s = s + w[i] * math.log(p[i]) + p[i].item() * w[i] + float(w[i]) * c[k].sum()
                s = s + max(p[i], 0.5) + min(w[i], p[i]) + abs(w[i]) + sum(c[k]) + c[k].tolist()[0]
            return s
        """, lambda dt, s: (rand(5, dtype=dt, seed=s), randn(5, dtype=dt, seed=s + 1),
                            labels(5, 3, s), randn(3, 2, dtype=dt, seed=s + 2)),
        # `.item()` next to a tensor is a weak scalar: batched for items of an integer tensor
        # (checked before the loop), so these float inputs run the vmap form
        {3: "batched"}),
    # 9. nested loops and calls to user functions
    "nested_with_helper": ("""
        def f(x, y):
            loss = 0
            for i in range(x.shape[0]):
                for j in range(y.shape[0]):
                    loss = loss + helper(x[i], y[j])
            return loss
        """, lambda dt, s: (randn(3, 4, dtype=dt, seed=s), randn(5, 4, dtype=dt, seed=s + 1)),
        {3: "vmap", 4: "vmap"}),
    # 10. prefix sums / products
    "cumsum_cumprod": ("""
        def f(x):
            s = 0
            p = 1
            out = torch.zeros_like(x)
            prods = []
            for i in range(x.shape[0]):
                s = s + x[i]
                out[i] = s
            for i in range(x.shape[0]):
                p = p * (1 + x[i] * 0.1)
                prods.append(p)
            return out, s, torch.stack(prods), p
        """, lambda dt, s: (randn(6, dtype=dt, seed=s),), {6: "cumsum", 9: "cumprod"}),
}


def helper(a, b):
    return torch.dot(a, b).tanh()


@pytest.mark.parametrize("name", sorted(CASES))
def test_equivalent_value_and_gradients(name):
    src, make, expected = CASES[name]
    original, optimized, code, report = build(src, namespace(helper=helper))
    assert strategies(report) == expected, (report, code)
    for dtype in DTYPES:
        for seed in range(2):
            inputs = make(dtype, seed)
            assert_equivalent(original, optimized, *inputs)
            assert same_python_types(original(*inputs), optimized(*inputs))


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if "batched" in c[2].values()))
def test_equivalent_through_vmap_when_not_batched(name, monkeypatch):
    """The vmap form of the same bodies (what runs when the batched form's check fails)."""
    def refuse(*args):
        raise Unsupported("batched form disabled by the test")
    monkeypatch.setattr(batch_loop_bodies, "batch", refuse)
    src, make, _ = CASES[name]
    original, optimized, code, report = build(src, namespace(helper=helper))
    # a body reading an item only as rows it picks (`centers[lab[i]]`) maps by `_map_tabulated`
    assert "batched" not in strategies(report).values() and (
        "_map_in_chunks(" in code or "_map_tabulated(" in code)
    for dtype in DTYPES:
        assert_equivalent(original, optimized, *make(dtype, 0))


# Bodies whose batched form's runtime check fails for these inputs: the vmap branch runs.
RANK_FALLBACKS = {
    # (a per-item tensor of a lower rank next to another is lifted: test_lifted_item_ranks; the
    # index is a Python int per item, no tensor to lift)
    "index_next_to_rows": ("""
        def f(x):
            s = 0
            for i in range(x.shape[0]):
                s = s + (x[i] * i).sum()
            return s
        """, lambda dt: (randn(4, 3, dtype=dt, seed=0),)),
    "fixed_0d_tensor_of_another_dtype": ("""
        def f(x, c):
            s = 0
            for i in range(x.shape[0]):
                s = s + x[i] * c
            return s
        """, lambda dt: (randn(4, dtype=dt, seed=0), torch.tensor(2.0, dtype=torch.float64))),
    "dim_minus_one_of_0d_items": ("""
        def f(x):
            s = 0
            for i in range(x.shape[0]):
                s = s + x[i].softmax(-1)
            return s
        """, lambda dt: (randn(4, dtype=dt, seed=0),)),
    "several_labels_per_item": ("""
        def f(x, t):
            s = 0
            for i in range(x.shape[0]):
                s = s + x[i][t[i]]
            return s
        """, lambda dt: (randn(4, 3, dtype=dt, seed=0), labels(8, 3, 0).view(4, 2))),
}


@pytest.mark.parametrize("name", sorted(RANK_FALLBACKS))
def test_batched_check_fails_then_vmap_runs(name):
    src, make = RANK_FALLBACKS[name]
    original, optimized, code, report = build(src)
    assert strategies(report) == {3: "batched"} and "_map_in_chunks(" in code
    for dtype in DTYPES:
        inputs = make(dtype)
        assert_equivalent(original, optimized, *inputs)
        assert original(*inputs).dtype == optimized(*inputs).dtype


@pytest.mark.parametrize("body, reason", [
    ("s = s + helper(x[i], x[i])", "`helper(...)` has no batched form"),
    ("s = s + x[i].sum() / x[i].shape[-1]", "`x[i].shape` has no batched form"),
    ("s = s + x[i].max(0)[0].sum()", "`x[i].max(...)` has no batched form"),
    ("s = s + x[..., i, 0].sum()", "index without a batched form"),
])
def test_ops_without_batched_form_are_mapped_with_vmap(body, reason):
    src = f"def f(x):\n    s = 0\n    for i in range(x.shape[0]):\n        {body}\n    return s\n"
    original, optimized, code, report = build(src, namespace(helper=helper))
    assert strategies(report) == {3: "vmap"}, code
    assert reason in report.loops[0].reason.replace("_x_row", "x[i]")
    assert_equivalent(original, optimized, randn(3, 3, dtype=torch.float64, seed=0))


@pytest.mark.parametrize("name", sorted(CASES))
def test_rewrite_is_idempotent(name):
    code, _ = rewrite_source(CASES[name][0], namespace(helper=helper))
    again, report = rewrite_source(code, namespace(helper=helper))
    assert again == code


def test_the_rewrite_is_the_same_every_time():
    """A pass's memo keyed by ``id()`` of a node it later replaced reads another node's entry once
    the freed id is reused: ``float(w[i])`` became ``math.log(p[i])``'s float64 form in about one
    build in ten (a wrong value, found by the suite's order under pytest-xdist). The nodes are
    the keys now; with collections in between, every build is the same. The freed nodes go by
    reference counting and the youngest generation: a full collection walks the whole heap of a
    late worker (seconds each) and found the old code no more often (3 of 3 runs either way)."""
    codes = set()
    for _ in range(40):
        codes.add(rewrite_source(CASES["host_round_trips"][0], namespace(helper=helper))[0])
        gc.collect(0)
    assert len(codes) == 1, codes


def test_non_tensor_inputs_run_the_original_loop():
    src = """
        def f(xs, ws):
            total = 0
            for i in range(len(xs)):
                total += xs[i] * ws[i]
            return total
        """
    original, optimized, _, report = build(src)
    assert strategies(report) == {3: "batched"}
    assert optimized([1.0, 2.0], [3.0, 4.0]) == original([1.0, 2.0], [3.0, 4.0]) == 11.0
    assert optimized([], []) == 0  # zero iterations: the initial value, not an error
    assert optimized(torch.zeros(0, 3), torch.zeros(0, 3)) == 0


def test_writes_into_a_dict_run_the_original_loop():
    src = """
        def f(x, stats):
            for i in range(x.shape[0]):
                stats[i] = x[i].sum()
            return stats
        """
    _, optimized, _, report = build(src)
    x = torch.randn(3, 2)
    assert strategies(report) == {2: "batched"}
    assert optimized(x, {}) == {i: x[i].sum() for i in range(3)}
    assert torch.equal(optimized(x, torch.zeros(3)), x.sum(1))


def test_zero_iterations_keep_the_initial_value_and_type():
    src = """
        def f(x, n):
            count = 0
            lst = []
            for i in range(n):
                count += 1
                lst.append(x[i])
            return count, len(lst)
        """
    _, optimized, _, _ = build(src)
    assert optimized(torch.ones(3), 0) == (0, 0)
    assert optimized(torch.ones(3), 2) == (2, 2)


def test_nan_trap_gradients_stay_finite():
    # where(x > 0, log(x), ...) evaluated naively has NaN gradients for x <= 0.
    src = CASES["nan_trap_branches"][0]
    original, optimized, code, _ = build(src)
    x = torch.tensor([-2.0, -0.3, -1e-3, 1e-3, 2.0], dtype=torch.float64)
    assert finite_grads(original, x) and finite_grads(optimized, x)
    assert "torch.where(_cond, x" not in code  # the risky operands are sanitised
    assert_equivalent(original, optimized, x.requires_grad_())


# ---------------------------------------------------------------------------------------------
# Kept loops: unchanged, with the reason at the user's line.

KEPT = {
    "ema_of_squares": ("""
        def f(x):
            s = 0
            for t in range(x.shape[0]):
                s = 0.9 * s * s + x[t]
            return s
        """, "`s` is a loop-carried recurrence: s = 0.9 * s * s + x[t] (line 4)"),
    "rnn_state": ("""
        def f(x, w):
            h = torch.zeros(3)
            for t in range(x.shape[0]):
                h = torch.tanh(w @ h + x[t])
            return h
        """, "`h` is a loop-carried recurrence"),
    "break": ("""
        def f(x):
            s = 0
            for i in range(x.shape[0]):
                if x[i] > 1:
                    break
                s += x[i]
            return s
        """, "`break`"),
    "return_inside": ("""
        def f(x):
            for i in range(x.shape[0]):
                if x[i] > 1:
                    return x[i]
            return x.sum()
        """, "`return` inside the loop"),
    "print": ("""
        def f(x):
            s = 0
            for i in range(x.shape[0]):
                print(i)
                s += x[i]
            return s
        """, "I/O call `print`"),
    "logger_log": ("""
        def f(x, logger):
            s = 0
            for i in range(x.shape[0]):
                logger.log(10, "step")
                s += x[i].log()
            return s
        """, "I/O call `logger.log`"),
    "dropout": ("""
        def f(x):
            s = 0
            for i in range(x.shape[0]):
                s += F.dropout(x[i], 0.5).sum()
            return s
        """, "random op `F.dropout`"),
    "outer_list_mutation": ("""
        def f(x, seen):
            s = 0
            for i in range(x.shape[0]):
                seen.extend([i])
                s += x[i]
            return s
        """, "mutates `seen`"),
    # `s = s + x[i]` is a running sum read in its step, scanned (test_running_sums_read_in_step)
    "running_value_read_in_place": ("""
        def f(x):
            s = 0
            t = 0
            for i in range(x.shape[0]):
                s += x[i]
                t = t + s * x[i]
            return t
        """, "`s` is read in the loop body (line 6) after being updated: a loop-carried "
             "recurrence (`s += x[i]` changes `s` in place"),
    "last_value_after_loop": ("""
        def f(x):
            for i in range(x.shape[0]):
                last = x[i] * 2
            return last
        """, "`last` is read after the loop"),
    "same_element_writes": ("""
        def f(x, lab):
            counts = torch.zeros(3)
            for i in range(x.shape[0]):
                counts[lab[i]] = x[i] * 2
            return counts
        """, "iterations may hit the same element"),
    "append_under_a_python_condition": ("""
        def f(x, flag):
            keep = []
            for i in range(x.shape[0]):
                if flag:
                    keep.append(x[i])
            return torch.stack(keep).sum()
        """, "the list length depends on the data"),
    "unknown_call_under_condition": ("""
        def f(x, t):
            s = 0
            for i in range(x.shape[0]):
                if t[i] >= 0:
                    s = s + F.cross_entropy(x[i:i+1], t[i:i+1])
            return s
        """, "would also run on iterations its tensor condition excludes"),
    "mask_indexing": ("""
        def f(x, y):
            s = 0
            for i in range(x.shape[0]):
                m = y[i] > 0
                s = s + x[i][m].cumsum(0).sum()
            return s
        """, "boolean mask indexing `x[i][m]`"),
    "data_dependent_while": ("""
        def f(x):
            while x.sum() > 1:
                x = x / 2
            return x
        """, "`while` loop"),
}


@pytest.mark.parametrize("name", sorted(KEPT))
def test_kept_loops_are_unchanged_with_reason(name):
    src, reason = KEPT[name]
    code, report = rewrite_source(src)
    assert code == normalise(src)
    assert [loop.strategy for loop in report.loops] == ["kept"]
    assert report.loops[0].lineno == normalise(src).splitlines().index(
        next(l for l in normalise(src).splitlines() if l.lstrip().startswith(("for", "while")))) + 1
    if reason:
        assert reason in report.loops[0].reason


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_tensor_methods_named_like_object_methods_are_tensor_ops(dtype):
    # `x.log()` takes no argument (a logger's log takes a level and a message); a receiver made
    # by arithmetic or by a tensor op is a value, never a logger or a set: all are the tensor ops.
    original, rewritten, code, report = build("""
        def f(p, q):
            s = 0
            for i in range(p.shape[0]):
                s = s + p[i].log().sum() + (p[i] + q[i]).log().mean() + (p[i] - q[i]).add(1).sum()
                s = s + p[i].exp().add(q[i]).sum() + torch.sqrt(q[i]).add(1).mean()
            return s
        """)
    assert strategies(report) == {3: "batched"}
    p, q = (torch.rand(5, 3, dtype=dtype, generator=torch.Generator().manual_seed(k)) + 0.5
            for k in (0, 1))
    assert_equivalent(original, rewritten, p.requires_grad_(), q.requires_grad_())


def test_kept_outer_keeps_vectorized_inner():
    src = """
        def f(x):
            h = torch.zeros(x.shape[1])
            for t in range(x.shape[0]):
                s = 0
                for j in range(x.shape[1]):
                    s = s + x[t, j] * h[j]
                h = torch.tanh(h + s)
            return h
        """
    original, optimized, _, report = build(src)
    assert strategies(report) == {3: "kept", 5: "batched"}
    assert_equivalent(original, optimized, randn(4, 3, dtype=torch.float64, seed=0))


# ---------------------------------------------------------------------------------------------
# Golden rewrites

GOLDEN_ACCUMULATOR = ("""
    def f(pred, target):
        loss = 0
        for i in range(len(pred)):
            loss += (pred[i] - target[i]).abs().sum()
        return loss
    """, """
    def f(pred, target):
        loss = 0
        _pred_stacked = _stack_items(tuple(pred)) if (type(pred) is list or (isinstance(pred, tuple) and type(pred).__getitem__ is tuple.__getitem__ and (type(pred).__iter__ is tuple.__iter__) and (type(pred).__len__ is tuple.__len__))) and len(pred) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == pred[0].shape and (_v.dtype == pred[0].dtype) and (_v.device == pred[0].device) for _v in pred)) else pred
        _target_stacked = _stack_items(tuple(target)) if (type(target) is list or (isinstance(target, tuple) and type(target).__getitem__ is tuple.__getitem__ and (type(target).__iter__ is tuple.__iter__) and (type(target).__len__ is tuple.__len__))) and len(target) > 0 and all((isinstance(_v_1, torch.Tensor) and _v_1.shape == target[0].shape and (_v_1.dtype == target[0].dtype) and (_v_1.device == target[0].device) for _v_1 in target)) else target
        if isinstance(_pred_stacked, torch.Tensor) and len(_pred_stacked) <= _pred_stacked.shape[0] and isinstance(_target_stacked, torch.Tensor) and (len(_pred_stacked) <= _target_stacked.shape[0]) and isinstance(len(_pred_stacked), int) and (len(_pred_stacked) > 0):
            'optimize_loss: loop at line 3 vectorized'
            if _target_stacked.dim() == _pred_stacked.dim():
                _pred_row = _pred_stacked if len(_pred_stacked) == _pred_stacked.shape[0] else _pred_stacked[0:len(_pred_stacked):1]
                _target_row = _target_stacked if len(_pred_stacked) == _target_stacked.shape[0] else _target_stacked[0:len(_pred_stacked):1]
                _loss_part = 0

                def _items_sum():
                    _t = (_pred_row - _target_row).abs()
                    return (_t.sum(tuple(range(1, _t.dim()))) if _t.dim() > 1 else _t.reshape(len(_t), -1).sum(1)).sum(0)
                _loss_part = _summed_in_steps((_pred_row - _target_row).abs().sum(), _items_sum)
                _outs = (_loss_part,)
            else:
                _pred_row = _pred_stacked if len(_pred_stacked) == _pred_stacked.shape[0] else _pred_stacked[0:len(_pred_stacked):1]
                _target_row = _target_stacked if len(_pred_stacked) == _target_stacked.shape[0] else _target_stacked[0:len(_pred_stacked):1]
                _loss_part = 0

                def _items_sum_1():
                    _t_1 = (_broadcast_item(_pred_row, _target_row) - _broadcast_item(_target_row, _pred_row)).abs()
                    return (_t_1.sum(tuple(range(1, _t_1.dim()))) if _t_1.dim() > 1 else _t_1.reshape(len(_t_1), -1).sum(1)).sum(0)
                _loss_part = _summed_in_steps((_broadcast_item(_pred_row, _target_row) - _broadcast_item(_target_row, _pred_row)).abs().sum(), _items_sum_1)
                _outs = (_loss_part,)
            loss = _outs[0]
        else:
            for i in range(len(pred)):
                loss += (pred[i] - target[i]).abs().sum()
        return loss
    """)

GOLDEN_MASKED = ("""
    def f(logp, target):
        loss = 0
        for i in range(len(target)):
            if target[i] < 0:
                continue
            loss = loss - torch.log(logp[i, target[i]])
        return loss
    """, """
    def f(logp, target):
        loss = 0
        _logp_stacked = _stack_items(tuple(logp)) if (type(logp) is list or (isinstance(logp, tuple) and type(logp).__getitem__ is tuple.__getitem__ and (type(logp).__iter__ is tuple.__iter__) and (type(logp).__len__ is tuple.__len__))) and len(logp) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == logp[0].shape and (_v.dtype == logp[0].dtype) and (_v.device == logp[0].device) for _v in logp)) else logp
        _target_stacked = _stack_items(tuple(target)) if (type(target) is list or (isinstance(target, tuple) and type(target).__getitem__ is tuple.__getitem__ and (type(target).__iter__ is tuple.__iter__) and (type(target).__len__ is tuple.__len__))) and len(target) > 0 and all((isinstance(_v_1, torch.Tensor) and _v_1.shape == target[0].shape and (_v_1.dtype == target[0].dtype) and (_v_1.device == target[0].device) for _v_1 in target)) else target
        if isinstance(_target_stacked, torch.Tensor) and len(_target_stacked) <= _target_stacked.shape[0] and isinstance(_logp_stacked, torch.Tensor) and (len(_target_stacked) <= _logp_stacked.shape[0]) and isinstance(len(_target_stacked), int) and (len(_target_stacked) > 0):
            'optimize_loss: loop at line 3 vectorized'
            if _target_stacked.dtype in (torch.int64, torch.int32) and _target_stacked.dim() == 1 and (_logp_stacked.dim() >= 2) and (_logp_stacked.dim() == _target_stacked.dim() + 1):
                _target_row = _target_stacked if len(_target_stacked) == _target_stacked.shape[0] else _target_stacked[0:len(_target_stacked):1]
                _logp_row = _logp_stacked if len(_target_stacked) == _logp_stacked.shape[0] else _logp_stacked[0:len(_target_stacked):1]
                _loss_part = 0
                _cond = torch.ne(_target_row < 0, False)
                _mask = torch.logical_not(_cond)
                _t = _logp_row[torch.arange(len(_logp_row), device=_logp_row.device), torch.where(_mask, _target_row, torch.zeros_like(_target_row))]
                _loss_part = _loss_part - torch.where(_mask, torch.log(torch.where(_mask, torch.where(_mask.reshape(_mask.shape[:1] + _branch_shape[_mask.shape[1:], _t.shape[1:]]), _t, False), 1)), 0).sum(0)
                _outs = (_loss_part, _mask)
            else:

                def _body(_target_row, _logp_row):
                    _loss_part = 0
                    _cond = torch.ne(_target_row < 0, False)
                    _mask = torch.logical_not(_cond)
                    _t = _logp_row[torch.where(_mask, _target_row, torch.zeros_like(_target_row))]
                    _loss_part = _loss_part - torch.where(_mask, torch.log(torch.where(_mask, torch.where(_mask.reshape(_branch_shape[_mask.shape, _t.shape]), _t, False), 1)), 0)
                    return (torch.as_tensor(_loss_part), torch.as_tensor(_mask))
                _outs = _map_in_chunks(_body, in_dims=(0, 0))(_target_stacked if len(_target_stacked) == _target_stacked.shape[0] else _target_stacked[0:len(_target_stacked):1], _logp_stacked if len(_target_stacked) == _logp_stacked.shape[0] else _logp_stacked[0:len(_target_stacked):1])
                _outs = (_outs[0].sum(0), _outs[1])
            if _outs[1].any():
                loss = _outs[0]
        else:
            for i in range(len(target)):
                if target[i] < 0:
                    continue
                loss = loss - torch.log(logp[i, target[i]])
        return loss
    """)

GOLDEN_CROSS_ENTROPY = ("""
    def f(logits, t):
        loss = 0
        for i in range(logits.shape[0]):
            loss = loss + F.cross_entropy(logits[i:i+1], t[i:i+1])
        return loss
    """, """
    def f(logits, t):
        loss = 0
        if isinstance(logits, torch.Tensor) and logits.shape[0] <= logits.shape[0] and isinstance(t, torch.Tensor) and (logits.shape[0] <= t.shape[0]) and isinstance(logits.shape[0], int) and (logits.shape[0] > 0) and (not _rounds_gradients(logits, t)):
            'optimize_loss: loop at line 3 vectorized'
            if logits.dim() >= 1 and t.dim() >= 1 and (logits.dim() == t.dim() + 1) and (1 >= t.dim()) and (t.dtype in (torch.int64, torch.int32)):
                _logits_row = logits if logits.shape[0] == logits.shape[0] else logits[0:logits.shape[0]:1]
                _t_row = t if logits.shape[0] == t.shape[0] else t[0:logits.shape[0]:1]
                _loss_part = 0
                _loss_part = _summed_in_steps(_loss_of_items(F.cross_entropy, _logits_row.unsqueeze(1), _t_row.unsqueeze(1), 'mean', ignore_index=-100).sum(0), lambda: _loss_of_items(F.cross_entropy, _logits_row.unsqueeze(1), _t_row.unsqueeze(1), 'mean', ignore_index=-100).sum(0))
                _outs = (_loss_part,)
            else:

                def _body(_logits_row, _t_row):
                    _loss_part = 0
                    _loss_part = _loss_part + _cross_entropy(_logits_row.unsqueeze(0), _t_row.unsqueeze(0))
                    return (torch.as_tensor(_loss_part),)
                _outs = _map_in_chunks(_body, in_dims=(0, 0))(logits if logits.shape[0] == logits.shape[0] else logits[0:logits.shape[0]:1], t if logits.shape[0] == t.shape[0] else t[0:logits.shape[0]:1])
                _outs = (_outs[0].sum(0),)
            loss = _outs[0]
        else:
            for i in range(logits.shape[0]):
                loss = loss + F.cross_entropy(logits[i:i + 1], t[i:i + 1])
        return loss
    """)


GOLDEN_MEAN = ("""
    def f(pred, target):
        B = pred.shape[0]
        loss = 0
        for i in range(B):
            loss += ((pred[i] - target[i]) ** 2).mean()
        return loss / B
    """, """
    def f(pred, target):
        B = pred.shape[0]
        loss = 0
        _averaged = False
        _target_stacked = _stack_items(tuple(target)) if (type(target) is list or (isinstance(target, tuple) and type(target).__getitem__ is tuple.__getitem__ and (type(target).__iter__ is tuple.__iter__) and (type(target).__len__ is tuple.__len__))) and len(target) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == target[0].shape and (_v.dtype == target[0].dtype) and (_v.device == target[0].device) for _v in target)) else target
        if isinstance(pred, torch.Tensor) and B <= pred.shape[0] and isinstance(_target_stacked, torch.Tensor) and (B <= _target_stacked.shape[0]) and isinstance(B, int) and (B > 0):
            'optimize_loss: loop at line 4 vectorized'
            if _target_stacked.dim() == pred.dim():
                _pred_row = pred if B == pred.shape[0] else pred[0:B:1]
                _target_row = _target_stacked if B == _target_stacked.shape[0] else _target_stacked[0:B:1]
                _loss_part = 0

                def _items_sum():
                    _t = (_pred_row - _target_row) ** 2
                    return (_t.mean(tuple(range(1, _t.dim()))) if _t.dim() > 1 else _t.reshape(len(_t), -1).mean(1)).sum(0) / B
                _loss_part = _summed_in_steps(((_pred_row - _target_row) ** 2).mean(), _items_sum)
                _outs = (_loss_part,)
            else:
                _pred_row = pred if B == pred.shape[0] else pred[0:B:1]
                _target_row = _target_stacked if B == _target_stacked.shape[0] else _target_stacked[0:B:1]
                _loss_part = 0

                def _items_sum_1():
                    _t_1 = (_broadcast_item(_pred_row, _target_row) - _broadcast_item(_target_row, _pred_row)) ** 2
                    return (_t_1.mean(tuple(range(1, _t_1.dim()))) if _t_1.dim() > 1 else _t_1.reshape(len(_t_1), -1).mean(1)).sum(0) / B
                _loss_part = _summed_in_steps(((_broadcast_item(_pred_row, _target_row) - _broadcast_item(_target_row, _pred_row)) ** 2).mean(), _items_sum_1)
                _outs = (_loss_part,)
            _averaged = True
            loss = _outs[0]
        else:
            for i in range(B):
                loss += ((pred[i] - target[i]) ** 2).mean()
        return loss if _averaged else loss / B
    """)


# An inner loop reads row i whole (`x[i]`, no slice of it), which the outer loop maps:
# the batched form indexes nothing.
GOLDEN_NESTED = ("""
    def f(x, w):
        out = torch.zeros_like(x)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                out[i, j] = x[i, j] * w[j]
        return out.sum()
    """, """
    def f(x, w):
        out = torch.zeros_like(x)
        if isinstance(x, torch.Tensor) and x.shape[0] <= x.shape[0] and (x.shape[1] <= x.shape[1]) and isinstance(w, torch.Tensor) and (x.shape[1] <= w.shape[0]) and isinstance(out, torch.Tensor) and isinstance(x.shape[1], int) and (x.shape[1] > 0) and _apart(out, (w, x)) and isinstance(x.shape[0], int) and (x.shape[0] > 0) and (not _rounds_gradients(w)):
            'optimize_loss: loop at line 3 vectorized'

            def _body_1(_x_row_1):
                if w.dim() + 1 == x.dim():
                    _x_row = _x_row_1 if x.shape[1] == x.shape[1] else _x_row_1[0:x.shape[1]:1]
                    _w_row = w if x.shape[1] == w.shape[0] else w[0:x.shape[1]:1]
                    _out_item = _x_row * _w_row
                    _outs = (_out_item,)
                else:

                    def _body(_x_row, _w_row):
                        _out_item = _x_row * _w_row
                        return (torch.as_tensor(_out_item),)
                    _outs = _map_in_chunks(_body, in_dims=(0, 0))(_x_row_1 if x.shape[1] == x.shape[1] else _x_row_1[0:x.shape[1]:1], w if x.shape[1] == w.shape[0] else w[0:x.shape[1]:1])
                _out_item_1 = _outs[0].reshape(_outs[0].shape[:1] + (1,) * (out.dim() - 1 - _outs[0].dim()) + _outs[0].shape[1:]).to(out.dtype if _outs[0].dim() == 1 else _outs[0].dtype)
                return (torch.as_tensor(_out_item_1),)
            _outs_1 = _map_in_chunks(_body_1, in_dims=(0,))(x if x.shape[0] == x.shape[0] else x[0:x.shape[0]:1])
            out[0:x.shape[0]:1, 0:x.shape[1]:1] = _outs_1[0].reshape(_outs_1[0].shape[:1] + (1,) * (out.dim() - 0 - _outs_1[0].dim()) + _outs_1[0].shape[1:]).to(out.dtype if _outs_1[0].dim() == 1 else _outs_1[0].dtype)
        else:
            for i in range(x.shape[0]):
                _w_stacked = _stack_items(tuple(w)) if (type(w) is list or (isinstance(w, tuple) and type(w).__getitem__ is tuple.__getitem__ and (type(w).__iter__ is tuple.__iter__) and (type(w).__len__ is tuple.__len__))) and len(w) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == w[0].shape and (_v.dtype == w[0].dtype) and (_v.device == w[0].device) for _v in w)) else w
                if isinstance(x, torch.Tensor) and isinstance(i, int) and (x.shape[1] <= x.shape[1]) and isinstance(_w_stacked, torch.Tensor) and (x.shape[1] <= _w_stacked.shape[0]) and isinstance(out, torch.Tensor) and _apart(out, (_w_stacked, x)) and isinstance(x.shape[1], int) and (x.shape[1] > 0):
                    'optimize_loss: loop at line 4 vectorized'
                    if _w_stacked.dim() + 1 == x.dim():
                        _x_row_2 = x[i] if x.shape[1] == x.shape[1] else x[i, 0:x.shape[1]:1]
                        _w_row_1 = _w_stacked if x.shape[1] == _w_stacked.shape[0] else _w_stacked[0:x.shape[1]:1]
                        _out_item_2 = _x_row_2 * _w_row_1
                        _outs_2 = (_out_item_2,)
                    else:
                        _x_row_2 = x[i] if x.shape[1] == x.shape[1] else x[i, 0:x.shape[1]:1]
                        _w_row_1 = _w_stacked if x.shape[1] == _w_stacked.shape[0] else _w_stacked[0:x.shape[1]:1]
                        _out_item_2 = _broadcast_item(_x_row_2, _w_row_1) * _broadcast_item(_w_row_1, _x_row_2)
                        _outs_2 = (_out_item_2,)
                    out[i, 0:x.shape[1]:1] = _outs_2[0].reshape(_outs_2[0].shape[:1] + (1,) * (out.dim() - 1 - _outs_2[0].dim()) + _outs_2[0].shape[1:]).to(out.dtype if _outs_2[0].dim() == 1 else _outs_2[0].dtype)
                else:
                    for j in range(x.shape[1]):
                        out[i, j] = x[i, j] * w[j]
        return out.sum()
    """)

@pytest.mark.parametrize("before, after", [GOLDEN_ACCUMULATOR, GOLDEN_MASKED,
                                           GOLDEN_CROSS_ENTROPY, GOLDEN_MEAN, GOLDEN_NESTED],
                         ids=["accumulator", "masked_continue", "cross_entropy", "mean", "nested"])
def test_golden(before, after):
    code, _ = rewrite_source(before)
    assert code == normalise(after)


@pytest.mark.parametrize("src", [
    # (the statement after the loop, what precedes it): the sum is what the code needs
    "    s = 0\n    for i in range(n):\n        s += x[i].sum()\n    return s / n, s\n",
    "    s = 0\n    for i in range(n):\n        s += x[i].sum()\n    return s / (n - 1)\n",
    "    s = 0\n    for i in range(1, n):\n        s += x[i].sum()\n    return s / n\n",
    "    s = 0\n    for i in range(n):\n        s += x[i].sum()\n    m = s / n\n    return m + s\n",
    "    s = 0.0\n    for i in range(n):\n        s += x[i].sum()\n    return s / n\n",
    "    s = torch.zeros(())\n    for i in range(n):\n        s += x[i].sum()\n    return s / n\n",
    "    s = 0\n    k = s\n    for i in range(n):\n        s += x[i].sum()\n    return s / n\n",
    "    s = 0\n    for i in range(n):\n        s += 1\n    return s / n\n",
    "    s = 0\n    for i in range(n):\n        s += x[i].sum()\n    s = s * (1 / n)\n    return s\n",
    "    s = 0\n    if n > 2:\n        s = 1\n    for i in range(n):\n        s += x[i].sum()\n"
    "    return s / n\n",
    "    t = 0\n    for j in range(2):\n        s = 0\n        for i in range(n):\n"
    "            s += x[i].sum() * j\n        t = t + s / n\n    return t\n",
])
def test_sums_that_are_not_a_mean_over_the_loop_stay_sums(src):
    src = "def f(x):\n    n = x.shape[0]\n" + src
    original, optimized, code, report = build(src)
    assert "_averaged" not in code and "mean-reduced" not in report.loops[-1].reason, code
    assert any(loop.vectorized for loop in report.loops)
    for dtype in DTYPES:
        x = randn(5, 3, dtype=dtype, seed=1).requires_grad_()
        assert_equivalent(original, optimized, x)


@pytest.mark.parametrize("loop", [
    "for i in range(n):\n        s += F.mse_loss(x[i], y[i])",
    "for i in range(len(x)):\n        s = s + (x[i] - y[i]).abs().mean() - 0.5 * x[i].sum()",
    "for i, a in enumerate(x):\n        s -= (a * y[i]).mean()",
    "for row in x:\n        s += row.amax()",
])
def test_a_sum_divided_by_the_trip_count_is_the_mean_over_the_loop(loop):
    stop = "n" if "(n)" in loop else "len(x)"
    src = f"def f(x, y):\n    n = len(x)\n    s = 0\n    {loop}\n    return s / {stop}\n"
    original, optimized, code, report = build(src)
    assert f"return s if _averaged else s / {stop}" in code, code
    assert "`s` mean-reduced" in report.loops[0].reason
    for dtype in DTYPES:
        x, y = randn(6, 4, dtype=dtype, seed=2).requires_grad_(), randn(6, 4, dtype=dtype, seed=3)
        assert_equivalent(original, optimized, x, y)
        assert_equivalent(original, optimized, x[:1], y[:1])
        # a list of rows takes the original loop, which must still divide
        rows = list(x.detach().unbind(0))
        torch.testing.assert_close(optimized(rows, list(y.unbind(0))),
                                   original(rows, list(y.unbind(0))))


def test_augmented_updates_of_a_tensor_accumulator_fold_in_place():
    # `s += e` on a float32 tensor stays float32 (and its alias sees the sum); `s = s + e`
    # rebinds s to the promoted result.
    src = """
        def f(x):
            s = torch.zeros(())
            alias = s
            r = torch.zeros(())
            for i in range(x.shape[0]):
                s += x[i].sum()
                r = r + x[i].sum()
            return s, alias, r
        """
    original, optimized, code, _ = build(src)
    assert "s += _outs[0]" in code and "r = r + _outs[1]" in code, code
    x = randn(4, 3, dtype=torch.float64, seed=0).requires_grad_()
    s, alias, r = optimized(x)
    assert s.dtype == alias.dtype == torch.float32 and r.dtype == torch.float64
    assert_equivalent(original, optimized, x)


GOLDEN_DATA_SLOTS = ("""
    def f(x, t):
        out = torch.zeros(x.shape[0], 4)
        counts = torch.zeros(4)
        for i in range(x.shape[0]):
            out[i, int(t[i])] = x[i].sum()
            counts[t[i]] += 1
        return out, counts
    """, """
    def f(x, t):
        out = torch.zeros(x.shape[0], 4)
        counts = torch.zeros(4)
        _t_stacked = _stack_items(tuple(t)) if (type(t) is list or (isinstance(t, tuple) and type(t).__getitem__ is tuple.__getitem__ and (type(t).__iter__ is tuple.__iter__) and (type(t).__len__ is tuple.__len__))) and len(t) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == t[0].shape and (_v.dtype == t[0].dtype) and (_v.device == t[0].device) for _v in t)) else t
        if not (isinstance(_t_stacked, torch.Tensor) and _t_stacked.is_floating_point()) and isinstance(_t_stacked, torch.Tensor) and (x.shape[0] <= _t_stacked.shape[0]) and isinstance(x, torch.Tensor) and (x.shape[0] <= x.shape[0]) and isinstance(out, torch.Tensor) and isinstance(counts, torch.Tensor) and _apart(counts, (out, _t_stacked, x)) and _apart(out, (counts, _t_stacked, x)) and isinstance(x.shape[0], int) and (x.shape[0] > 0) and (_t_stacked.dtype in (torch.int64, torch.int32) and _t_stacked.dim() == 1):
            'optimize_loss: loop at line 4 vectorized'
            _t_row = _t_stacked if x.shape[0] == _t_stacked.shape[0] else _t_stacked[0:x.shape[0]:1]
            _x_row = x if x.shape[0] == x.shape[0] else x[0:x.shape[0]:1]
            _out_slot = _t_row.long()
            _out_item = _x_row.sum(tuple(range(1, _x_row.dim()))) if _x_row.dim() > 1 else _x_row.reshape(len(_x_row), -1).sum(1)
            _counts_slot = _t_row
            _counts_item = 1
            _outs = (_out_slot, _out_item, _counts_slot, torch.as_tensor(_counts_item).expand(x.shape[0], *torch.as_tensor(_counts_item).shape))
            _out_values = _outs[1].reshape(_outs[1].shape[:1] + (1,) * (out.dim() - 1 - _outs[1].dim()) + _outs[1].shape[1:])
            out[torch.arange(0, x.shape[0], 1, device=out.device), _outs[0].reshape(x.shape[0])] = _out_values.to(out.dtype)
            _counts_values = _outs[3].reshape(_outs[3].shape[:1] + (1,) * (counts.dim() - 0 - _outs[3].dim()) + _outs[3].shape[1:])
            _index_accumulate(counts, (_outs[2].reshape(x.shape[0]),), _counts_values)
        else:
            for i in range(x.shape[0]):
                out[i, int(t[i])] = x[i].sum()
                counts[t[i]] += 1
        return (out, counts)
    """)


def test_golden_writes_at_data_dependent_slots():
    code, report = rewrite_source(GOLDEN_DATA_SLOTS[0])
    assert code == normalise(GOLDEN_DATA_SLOTS[1])
    assert "`out` written by advanced indexing" in report.loops[0].reason
    assert "`counts` accumulated with index_put_" in report.loops[0].reason


@pytest.mark.parametrize("body, out", [
    ("out[i, int(t[i])] = x[i].sum()", "torch.zeros(n, 5)"),
    ("out[i, t[i]] = x[i] * 2", "torch.zeros(n, 5, 3, dtype=torch.float64)"),  # cast on write
    ("out[i, t[i]] += x[i]", "torch.ones(n, 5, 3)"),                           # trailing dim
    ("out[t[i], i] -= x[i].sum()", "torch.ones(5, n)"),
    ("out[t[i]] += x[i].sum()", "torch.zeros(5)"),                          # repeated slots
    ("out[t[i], 2] -= x[i].sum() * 0.5", "torch.zeros(5, 3)"),
    ("out[int(t[i])] += 1", "torch.zeros(5, dtype=torch.int64)"),
    # a label read with .item() (ArcFace's margin written per sample): an int for int labels
    ("c = t[i].item()\n        out[i, c] = x[i].sum()", "torch.zeros(n, 5)"),
    ("c = t[i].item()\n        out[c] += x[i].sum()", "torch.zeros(5)"),
])
def test_writes_at_data_dependent_slots_are_equivalent(body, out):
    src = (f"def f(x, t):\n    n = x.shape[0]\n    out = {out}\n    for i in range(n):\n"
           f"        {body}\n    return out\n")
    original, optimized, code, report = build(src)
    assert report.loops[0].vectorized, report.loops[0].reason
    assert "advanced indexing" in report.loops[0].reason or "index_put_" in \
        report.loops[0].reason, report.loops[0].reason  # the write itself, not a residual loop
    for dtype in DTYPES:
        for tdtype in (torch.int64, torch.int32):
            x = randn(6, 3, dtype=dtype, seed=4).requires_grad_()
            t = torch.tensor([4, 0, 4, -1, 2, 4], dtype=tdtype)  # repeats, negative wraps
            assert_equivalent(original, optimized, x, t)
    x = randn(6, 3, dtype=torch.float32, seed=4)
    # a float or 2-d index tensor fails the check: the loop runs as written
    for t in (torch.tensor([4.0, 0, 4, 1, 2, 4]), torch.zeros(6, 1, dtype=torch.int64)):
        if "int(" not in body:
            try:
                want = original(x, t)
            except (IndexError, RuntimeError) as exc:
                with pytest.raises(type(exc)):
                    optimized(x, t)
            else:
                torch.testing.assert_close(optimized(x, t), want)
    with pytest.raises(IndexError):  # out of range: raises as written
        optimized(x, torch.tensor([9, 0, 0, 0, 0, 0]))


@pytest.mark.parametrize("body, reason", [
    ("out[t[i]] = x[i].sum()", "iterations may hit the same element"),
    ("out[t[i]] *= x[i].sum()", "iterations may hit the same element"),
    ("out[i, t[i], :] = x[i]", "a data-dependent index next to slices"),
    ("if x[i, 0] > 0:\n            out[i, t[i]] = x[i, 1]", "conditional write"),
    ("out[i, x[i, 0]] = 1.0", "not known to be one integer per iteration"),
])
def test_writes_at_data_dependent_slots_that_stay_loops(body, reason):
    src = (f"def f(x, t):\n    out = torch.zeros(x.shape[0], 5, 3)\n"
           f"    for i in range(x.shape[0]):\n        {body}\n    return out\n")
    original, optimized, _, report = build(src)
    # the write stays a loop: kept whole, or the residual loop of a distributed one (the sum
    # of `x[i]` hoisted)
    assert report.loops[0].strategy in ("kept", "distributed"), report.loops
    assert reason in report.loops[0].reason, report.loops
    if report.loops[0].vectorized:
        x = torch.randn(6, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        assert_equivalent(original, optimized, x.requires_grad_(), torch.tensor([4, 0, 4, 1, 2, 4]))


def test_torch_alias_is_respected():
    src = """
        def f(x, y):
            s = 0
            for i in range(x.shape[0]):
                s += th.exp(x[i] - y[i]).sum(1)
            return s
        """
    tree = ast.parse(dedent(src))
    ns = {"th": torch}
    ctx = context(tree, ns)
    ctx.torch_name = "th"
    code = ast.unparse(vectorize_loops.transform(tree, ctx))
    assert "torch." not in code and "th.as_tensor" in code and "_map_in_chunks(_body" in code


# ---------------------------------------------------------------------------------------------
# Invariants: one report entry per loop, at its line. (Speed is measured by `rewrite bench`: L1, L2.)

def test_one_report_entry_per_loop_at_its_line():
    src = """
        def f(x, y):
            s = 0
            for i in range(x.shape[0]):
                for j in range(x.shape[1]):
                    s = s + x[i, j]
            h = 0
            for t in range(y.shape[0]):
                h = h * 0.5 + y[t]
            z = sum(y[k] for k in range(2))
            while h.sum() > 100:
                h = h / 2
            return s + h + z
        """
    _, report = rewrite_source(src)
    assert sorted(strategies(report).items()) == [(3, "vmap"), (4, "batched"), (7, "scan"),
                                                   (9, "batched"), (10, "kept")]


# ---------------------------------------------------------------------------------------------
# End to end through the decorator, on real files.

def test_decorator_end_to_end(tmp_path):
    module = load_module(tmp_path, """
        import torch

        def per_sample(logits, target):
            loss = 0
            for i in range(logits.shape[0]):
                label = target[i].item()
                loss += torch.logsumexp(logits[i], dim=0) - logits[i, label]
            return loss / logits.shape[0]
        """)
    opt = rewrite.optimize_loss(module.per_sample, compile=False, strict=True)
    for dtype in DTYPES:
        assert_equivalent(module.per_sample, opt, randn(8, 5, dtype=dtype, seed=1), labels(8, 5, 1))
    assert [(l.lineno, l.strategy) for l in opt.report.loops] == [(6, "batched")]


@functools.lru_cache(maxsize=None)
def optimized_example(name: str):
    """``optimize_loss(compile=False, strict=True)`` of an example's ``naive``, rewritten once for
    the two tests below (the report's strategies are the rewrite's; ``strict`` raises at any
    call whose vectorized form fails, whatever ran before)."""
    return rewrite.optimize_loss(importlib.import_module(f"examples.{name}").naive,
                                 compile=False, strict=True)


@pytest.mark.parametrize("name", NAMES)
def test_examples_stay_equivalent(name):
    module = importlib.import_module(f"examples.{name}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        opt = optimized_example(name)
        for dtype in DTYPES:
            assert_equivalent(module.naive, opt, *module.make_inputs("small", dtype, 1))
    loops = opt.report.loops
    if module.CASE["loops"] == "kept":
        assert all(l.reason for l in loops)
    assert all(l.strategy in ("batched", "vmap", "cumsum", "cumprod", "scan", "distributed",
                                       "kept") for l in loops)


VECTORIZED_EXAMPLES = ["center_loss", "chamfer", "class_weighted_ce", "dice_tversky",
                       "discounted_returns", "elementwise_fn_loop", "elementwise_if_else",
                       "ema_recurrence", "gae_ppo", "ge2e",
                       "label_smoothing_rows", "masked_mse", "masked_nll_pad",
                       "onehot_smoothing_weights", "pairwise_similarity", "per_sample_ce",
                       "per_sample_ce_fn", "per_sample_mse", "seq_ce_eos_while", "seq_ce_time",
                       "slow_add",
                       "target_scaling", "triplet_hardest"]


@pytest.mark.parametrize("name", VECTORIZED_EXAMPLES)
def test_examples_marked_vectorize_are_vectorized(name):
    module = importlib.import_module(f"examples.{name}")
    opt = optimized_example(name)
    opt(*module.make_inputs("small"))
    assert opt.report.loops and all(l.vectorized for l in opt.report.loops), opt.report


LOOPS = (ast.For, ast.While, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _loops_in(fn, seen: set) -> int:
    """Loops and comprehensions of ``fn`` and of the same-module helpers it calls."""
    seen.add(fn)
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    count = sum(isinstance(n, LOOPS) for n in ast.walk(tree))
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        helper = fn.__globals__.get(getattr(call.func, "id", None))
        if inspect.isfunction(helper) and helper.__globals__ is fn.__globals__ \
                and helper not in seen:
            count += _loops_in(helper, seen)
    return count


@pytest.mark.parametrize("name", NAMES)
def test_examples_report_every_loop_and_comprehension_once(name):
    module = importlib.import_module(f"examples.{name}")
    report = rewrite.explain(module.naive)
    assert len(report.loops) == _loops_in(module.naive, set()), report
    assert all(l.reason for l in report.loops)


@pytest.mark.parametrize("name", ["log1p_target", "ge2e"])
def test_examples_comprehension_bound_to_a_name_is_vectorized(name):
    module = importlib.import_module(f"examples.{name}")
    report = rewrite.explain(module.naive)
    first = min(report.loops, key=lambda l: l.lineno)
    assert first.strategy == "batched" and "(comprehension)" in first.reason, report


# ---------------------------------------------------------------------------------------------
# Fuzzing: random loop bodies from a small grammar must stay equivalent (or be kept).

UNARY = ["torch.tanh({})", "({}).abs()", "torch.sigmoid({})", "({}) * 2.0", "-({})",
         "torch.log({})", "torch.sqrt({})", "1 / ({})", "torch.exp({})", "({}) ** 2",
         "({}).sum()", "({}).unsqueeze(0).mean(0)"]
LEAVES = ["x[i]", "y[i]", "x[i] * y[i]", "w[i % 2]", "x[i] - 0.5", "y[i] * i"]
CONDS = ["x[i] > 0", "y[i] < 0.3", "(x[i] > 0) and (y[i] > 0)", "x[i] != 0"]


@st.composite
def loop_bodies(draw):
    def expr():
        e = draw(st.sampled_from(LEAVES))
        for _ in range(draw(st.integers(0, 2))):
            e = draw(st.sampled_from(UNARY)).format(e)
        return e

    lines = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["acc", "if", "ifelse", "continue", "append", "write",
                                     "count", "local"]))
        if kind == "acc":
            lines.append(f"s = s {draw(st.sampled_from(['+', '-']))} {expr()}")
        elif kind == "local":
            lines += [f"t = {expr()}", "s = s + t"]
        elif kind == "if":
            lines += [f"if {draw(st.sampled_from(CONDS))}:", f"    s = s + {expr()}"]
        elif kind == "ifelse":
            lines += [f"if {draw(st.sampled_from(CONDS))}:", f"    t = {expr()}",
                      "else:", f"    t = {expr()}", "s = s + t"]
        elif kind == "continue":
            lines += [f"if {draw(st.sampled_from(CONDS))}:", "    continue"]
        elif kind == "append":
            lines.append(f"lst.append({expr()})")
        elif kind == "write":
            lines.append(f"out[i] = {expr()}")
        else:
            lines.append("n += 1")
    return "\n".join(lines)


@settings(max_examples=40, deadline=None)
@given(body=loop_bodies(), seed=st.integers(0, 3), dtype=st.sampled_from(DTYPES),
       mean=st.booleans())
def test_fuzz_loop_bodies(body, seed, dtype, mean):
    src = ("def f(x, y, w):\n    s = 0\n    n = 0\n    lst = []\n    out = torch.zeros_like(x)\n"
           "    for i in range(x.shape[0]):\n" + textwrap.indent(body, "        ") +
           f"\n    return s{' / x.shape[0]' if mean else ''}, n, out, "
           "torch.stack(lst).sum() if lst else 0.0\n")
    original, optimized, code, report = build(src)
    x = randn(6, dtype=dtype, seed=seed)
    y = rand(6, dtype=dtype, seed=seed + 7)
    w = randn(2, dtype=dtype, seed=seed + 3)
    try:
        want = original(x, y, w)
    except Exception as exc:  # e.g. log of a negative number gives NaN, not an error: fine
        with pytest.raises(type(exc)):
            optimized(x, y, w)
        return
    got = optimized(x, y, w)
    # A Python-number accumulator no iteration touched stays a number in the original, but
    # is a 0-d tensor of the same value once vectorized (which iterations count is data).
    assert all(same_python_types(a, b) or (a == 0 and isinstance(b, torch.Tensor))
               for a, b in zip(want, got))
    assert_equivalent(original, optimized, x, y, w)
    if finite_grads(lambda *a: sum(torch.as_tensor(v).sum() for v in original(*a)), x, y, w):
        # never NaN gradients the original did not have (double-where)
        assert finite_grads(lambda *a: sum(torch.as_tensor(v).sum() for v in optimized(*a)),
                            x, y, w), code


def test_report_names_what_the_runtime_check_needs():
    # Heads of different shapes are not stacked and never pass the tensor check: the loop runs
    # as written, and the report says so instead of only "vectorized".
    from examples import multi_head_list

    fast = rewrite.optimize_loss(multi_head_list.naive, compile=False)
    assert_equivalent(multi_head_list.naive, fast, *multi_head_list.make_inputs("small"))
    (loop,) = fast.report.loops
    assert loop.vectorized and ("when `heads` is a tensor or a list or tuple of tensors of one "
                                "shape, dtype and device (stacked), else the loop runs as "
                                "written") in loop.reason
    assert (loop.vectorized_runs, loop.original_runs) == (0, 1)


def test_report_names_the_batched_forms_own_check():
    _, optimized, _, report = build("""
        def f(pred, target):
            loss = 0
            for i in range(len(pred)):
                loss += F.l1_loss(pred[i], target[i], reduction="sum")
            return loss
        """)
    (loop,) = report.loops
    assert loop.strategy == "batched"
    assert "vmap where `target.dim() == pred.dim()` does not hold" in loop.reason
    # and it does not for a target of one number per row: the vmap form, the same result
    pred, target = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    with pytest.warns(UserWarning, match="target size"):
        torch.testing.assert_close(optimized(pred, target), (pred - target[:, None]).abs().sum())


def test_an_outer_loop_names_the_inner_loop_whose_form_choice_it_maps(tmp_path):
    # the outer loop's vmap reason named the generated shape check (`if b.dim() == a.dim():`),
    # code the user never wrote; it names the inner loop's line instead (`b[i]`, read whole in
    # the inner loop, keeps the outer vmap: batch_both_loop_levels takes rows of its rows only)
    fn = load_module(tmp_path, """
import torch
def f(a, b):
    out = torch.zeros_like(a)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = a[i, j] + b[i]
    return out.sum()
""").f
    loops = rewrite.optimize_loss(fn, compile=False).report.loops
    reason = next(loop.reason for loop in loops if loop.lineno == 5)
    assert "the inner loop at line 6 picks its batched or vmapped form" in reason
    assert "dim()" not in reason
