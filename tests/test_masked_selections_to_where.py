"""masked_selections_to_where: boolean-mask selections reduced through elementwise ops become
masked dense ops. Golden rewrites (and what comes back unchanged), behaviour through
vectorize_loops (value and every gradient, float32 and float64, masks selecting nothing or
everything, NaN/inf where the mask excludes, ties), the original's errors, invariants, a property
test, and the two examples the rewrite unlocks."""
from __future__ import annotations

import ast
import functools
import importlib
import inspect

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import examples.masked_mse
import rewrite
from passes.loops import (loop_dataflow, masked_selections_to_where, raise_on_empty_selections,
                          vectorize_loops)
from passes.ast_tools import unparse
from passes.errors import Unsupported
from rewrite.testing import assert_equivalent
from tests.helpers import load_module
from tests.loop_helpers import (context, dedent, finite_grads, namespace, normalise,
                                same_python_types)

inf, nan = float("inf"), float("nan")


def rewrite_body(src: str, seeds: tuple[str, ...] = ("i",), outer_masks: frozenset = frozenset()):
    """(the rewritten body, normalised, and the Dense result) of loop-body statements;
    ``outer_masks``: the function's names bound only to boolean tensors."""
    body = ast.parse(dedent(src)).body
    ctx = context(ast.Module([ast.parse("def f(): pass").body[0]], []), namespace())
    dense = masked_selections_to_where.rewrite(body, set(seeds), ctx, outer_masks)
    return ast.unparse(ast.Module(dense.body, [])), dense


@functools.lru_cache(maxsize=None)
def build(src: str):
    """(original, rewritten function, rewritten source, report); the rewritten function sees
    the names the pass bound (``_mask_shape``), as the frontend's rebuilt function does."""
    ns = namespace()
    tree = ast.parse(dedent(src))
    ctx = context(tree, ns)
    code = unparse(vectorize_loops.transform(tree, ctx))
    name = tree.body[0].name
    before, after = dict(ns), {**ns, **ctx.bindings}
    exec(compile(dedent(src), "<original>", "exec"), before)
    exec(compile(code, "<rewritten>", "exec"), after)
    return before[name], after[name], code, ctx.report


def outcome(fn, *inputs):
    try:
        return fn(*inputs)
    except Exception as exc:  # noqa: BLE001 - the error is the behaviour under test
        return exc


def same_error(original, optimized, *inputs) -> str:
    """Both raise the same exception type and message; returns the message."""
    a, b = outcome(original, *inputs), outcome(optimized, *inputs)
    assert isinstance(a, Exception), "the original should raise"
    assert type(a) is type(b) and str(a) == str(b), (a, b)
    return str(a)


# ---------------------------------------------------------------------------------------------
# Golden: rewritten loop bodies (loop index `i`)

def test_golden_named_selection_and_count():
    code, dense = rewrite_body("""
        mask = target[i] > 0
        diff = pred[i][mask] - target[i][mask]
        total = total + (diff ** 2).sum()
        n = n + pred[i][mask].numel()
        """)
    assert code == normalise("""
        mask = target[i] > 0
        _keep = mask.reshape(_mask_shape[mask.shape, pred[i].shape, target[i].shape])
        diff = torch.where(_keep, pred[i], False) - torch.where(_keep, target[i], False)
        total = total + torch.where(_keep, diff ** 2, 0).sum()
        _keep_1 = mask.reshape(_mask_shape[mask.shape, pred[i].shape])
        _vals = torch.where(_keep_1, pred[i], False)
        n = n + _keep_1.expand_as(_vals).sum()
        """)
    assert dense.guards == [] and dense.empty == {}


def test_golden_max_counts_empty_selections_and_splits_ties():
    code, dense = rewrite_body("""
        same = labels == labels[i]
        hardest = dist[same].max()
        """)
    assert code == normalise("""
        same = labels == labels[i]
        _keep = same.reshape(_mask_shape[same.shape, dist.shape])
        _vals = torch.where(_keep, dist, False)
        _empty_max = _empty_max + (_keep.expand_as(_vals).sum() == 0)
        hardest = _max_of_selected(_vals, _keep.expand_as(_vals), 0)
        """)
    assert dense.empty == {"_empty_max": masked_selections_to_where.EMPTY_ERRORS["max"]}


def test_golden_builtin_min_of_a_selection_is_the_first_extreme_item():
    code, dense = rewrite_body("""
        pos = sim[i][labels == labels[i]]
        lo = min(pos)
        """)
    assert code == normalise("""
        _mask = labels == labels[i]
        _keep = _mask.reshape(_mask_shape[_mask.shape, sim[i].shape])
        pos = torch.where(_keep, sim[i], False)
        _keep_1 = _keep.reshape(_whole_mask[_keep.shape, sim[i].shape])
        _vals = pos
        _empty_first_min = _empty_first_min + (_keep_1.expand_as(_vals).sum() == 0)
        lo = _first_min_of_selected(_vals, _keep_1.expand_as(_vals), 0)
        """)
    # Python's min() of nothing raises ValueError, read on the host like a host function's
    assert dense.empty == {} and [e for e, _ in dense.host_errors.values()] == [
        "ValueError('min() arg is an empty sequence')"]


def test_golden_mean_len_and_inline_masks():
    code, _ = rewrite_body("""
        m = x[i][~(x[i] > 0)].mean()
        k = len(x[i][w[i] > 0])
        """)
    assert code == normalise("""
        _mask = ~(x[i] > 0)
        _keep = _mask.reshape(_mask_shape[_mask.shape, x[i].shape])
        _vals = torch.where(_keep, x[i], False)
        m = torch.where(_keep, _vals, 0).sum().mean() / _keep.expand_as(_vals).sum()
        _mask_1 = w[i] > 0
        _keep_1 = _mask_1.reshape(_mask_shape[_mask_1.shape, x[i].shape])
        k = _keep_1.sum()
        """)


def test_golden_risky_ops_get_safe_operands_where_deselected():
    code, _ = rewrite_body("ok = t[i] > 0\ns = s + (torch.log(p[i][ok]) / t[i][ok]).sum()")
    assert code == normalise("""
        ok = t[i] > 0
        _keep = ok.reshape(_mask_shape[ok.shape, p[i].shape, t[i].shape])
        s = s + torch.where(_keep, torch.log(torch.where(_keep, torch.where(_keep, p[i], False), 1)) / torch.where(_keep, torch.where(_keep, t[i], False), 1), 0).sum()
        """)


def test_golden_operands_that_do_not_vary_are_checked_to_be_numbers_or_0d():
    code, dense = rewrite_body("m = x[i] > 0\ns = s + (x[i][m] * eps + 1).sum()")
    assert "torch.where(_keep, x[i], False) * eps + 1" in code
    assert [unparse(g) for g in dense.guards] == [
        "isinstance(eps, (int, float)) or (torch.is_tensor(eps) and eps.dim() == 0)"]
    code, dense = rewrite_body("s = s + w[x[i] > 0].sum()")  # `w` selected, does not vary
    assert "torch.where(_keep, w, 0).sum()" in code
    assert [unparse(g) for g in dense.guards] == ["isinstance(w, torch.Tensor)"]


UNCHANGED = {
    "appended_not_elementwise": "m = x[i] > 0\nlst.append(x[i][m].cumsum(0))",
    "stored": "m = x[i] > 0\nout[i] = x[i][m]",
    "shape_queried": "m = x[i] > 0\ny = x[i][m]\nt = t + y.shape[-1]",  # [0]: its count
    "indexed_again": "m = x[i] > 0\ns = s + x[i][m][0]",
    "matmul": "m = x[i] > 0\ns = s + (x[i][m] @ w).sum()",
    "dim_reduction": "m = x[i] > 0\ns = s + x[i][m].sum(1)",
    "max_with_dim": "m = x[i] > 0\ns = s + x[i][m].max(0).values",
    "prod": "m = x[i] > 0\ns = s + x[i][m].prod()",
    "unknown_op": "m = x[i] > 0\ns = s + torch.erfinv(x[i][m]).sum()",
    "int_indexing": "s = s + x[idx[i]].sum()",
    "tuple_index": "s = s + x[i, x[i] > 0].sum()",
    "two_masks": "s = s + (a[i][a[i] > 0] - b[i][b[i] > 0]).sum()",
    "longer_operand": "t = x[i] * 2\ns = s + (x[i][x[i] > 0] - t).sum()",
    "conditional_expression": "s = s + (x[i][x[i] > 0].sum() if c else 0)",
    "python_and": "s = s + x[i][(x[i] > 0) and (x[i] < 1)].sum()",
    "mask_rebound": "m = x[i] > 0\nm = m & (x[i] < 1)\ns = s + x[i][m].sum()",
    "call_result_indexed": "s = s + f(x[i])[x[i] > 0].sum()",
    "one_of_two_escapes": "m = x[i] > 0\ns = s + x[i][m].sum()\nlst.append(x[i][m].cumsum(0))",
    "under_a_branch_binding": "m = x[i] > 0\nif c:\n    d = x[i][m]\ns = s + d.sum()",
}


def test_golden_rows_of_a_function_mask_are_masks():
    code, _ = rewrite_body("s = s + dist[i][mask[i]].sum() + dist[i][mask[i] == 0].mean()",
                           outer_masks=frozenset({"mask"}))
    assert code == normalise("""
        _mask = mask[i]
        _keep = _mask.reshape(_mask_shape[_mask.shape, dist[i].shape])
        _mask_1 = mask[i] == 0
        _keep_1 = _mask_1.reshape(_mask_shape[_mask_1.shape, dist[i].shape])
        _vals = torch.where(_keep_1, dist[i], False)
        s = s + torch.where(_keep, dist[i], 0).sum() + torch.where(_keep_1, _vals, 0).sum().mean() / _keep_1.expand_as(_vals).sum()
        """)


@pytest.mark.parametrize("src", [
    "s = s + dist[i][mask[i]].sum()",                      # `mask` is not known to be boolean
    "mask = dist[i] * 2\ns = s + dist[i][mask[i]].sum()",  # rebound in the body: not a mask
    "s = s + dist[i][mask[i:]].sum()",                     # a slice of rows is not a row
])
def test_golden_unchanged_rows_that_are_not_mask_rows(src):
    outer = frozenset() if src.startswith("s = s + dist[i][mask[i]]") else frozenset({"mask"})
    code, dense = rewrite_body(src, outer_masks=outer)
    assert code == normalise(src) and dense.empty == {} and dense.guards == []


def test_golden_a_row_index_beside_the_mask_selects_from_the_row():
    src = "p = d[i, (y == y[i]) & (torch.arange(n) != i)].max()"
    body = ast.parse(src).body
    ctx = context(ast.Module([ast.parse("def f(): pass").body[0]], []), namespace())
    dense = masked_selections_to_where.rewrite(body, {"i"}, ctx, ints=frozenset({"i"}))
    assert ast.unparse(ast.Module(dense.body, [])) == normalise("""
        _mask = (y == y[i]) & (torch.arange(n) != i)
        _keep = _mask.reshape(_mask_shape[_mask.shape, d[i].shape])
        _vals = torch.where(_keep, d[i], False)
        _empty_max = _empty_max + (_keep.expand_as(_vals).sum() == 0)
        p = _max_of_selected(_vals, _keep.expand_as(_vals), 0)
        """)
    # not a Python int (a tensor index broadcasts against the mask's positions): unchanged
    code, dense = rewrite_body(src.replace("d[i,", "d[j,"), seeds=("i", "j"))
    assert code == normalise(src.replace("d[i,", "d[j,")) and dense.refused


def test_golden_a_mask_that_does_not_vary_converts_too():
    """Exact either way, and an unconverted selection keeps the loop: the outer loop of a
    nested pair (``dist[i][target != t_i]`` in the inner loop over ``j``) maps over it."""
    code, dense = rewrite_body("m = w > 0\ns = s + x[i][m].sum()")
    assert code == normalise("m = w > 0\n_keep = m.reshape(_mask_shape[m.shape, x[i].shape])\n"
                             "s = s + torch.where(_keep, x[i], 0).sum()"), code


@pytest.mark.parametrize("name", UNCHANGED)
def test_golden_unchanged(name):
    src = UNCHANGED[name]
    code, dense = rewrite_body(src)
    assert code == normalise(src) and dense.empty == {} and dense.guards == []


def test_golden_raise_if_empty_goes_before_the_results_are_stored():
    _, dense = rewrite_body("m = x[i] > 0\nt = x[i][m].amin()")
    stmts = ast.parse("_outs = f()\n_empty_amin = _empty_amin + _outs[0]\nlst.extend(_outs[1])"
                      ).body
    folds = [stmts[2], stmts[1]]  # appends fold first, accumulators after
    stmts = [stmts[0], stmts[2], stmts[1]]
    stmts = raise_on_empty_selections.raise_if_counted(
        stmts, folds, raise_on_empty_selections.selection_checks(dense.empty, dense.body[0]))
    assert ast.unparse(ast.Module(stmts, [])) == normalise(f"""
        _empty_amin = 0
        _outs = f()
        _empty_amin = _empty_amin + _outs[0]
        torch._assert_async(torch.as_tensor(_empty_amin == 0), {masked_selections_to_where.EMPTY_ERRORS["amin"]!r})
        lst.extend(_outs[1])
        """)


# ---------------------------------------------------------------------------------------------
# Behaviour through vectorize_loops

def g(seed):
    return torch.Generator().manual_seed(seed)


def leaf(t):
    return t.requires_grad_()


def masked_targets(dt, s):
    """Targets with invalid (0 / NaN / inf) entries the loss masks out; a row with none valid."""
    pred = leaf(torch.randn(5, 6, generator=g(s), dtype=dt))
    target = torch.randn(5, 6, generator=g(s + 1), dtype=dt)
    target[target < -0.3] = 0.0
    target[1] = 0.0
    return pred, target


def nan_targets(dt, s):
    pred, target = masked_targets(dt, s)
    target = target.clone()
    target[target == 0] = nan
    target[2, :2] = inf
    return pred, target


def distances(dt, s):
    emb = leaf(torch.randn(8, 3, generator=g(s), dtype=dt))
    return emb, torch.tensor([0, 1, 0, 1, 2, 2, 0, 1])


def distances_with_a_singleton(dt, s):
    emb, _ = distances(dt, s)
    return emb, torch.tensor([0, 1, 0, 1, 2, 2, 0, 3])  # anchor 7 has no positive


def ties(dt, s):
    x = torch.tensor([[1., 3., 3., 2.], [-inf, -inf, 5., 1.], [1., nan, 3., nan],
                      [2., 2., 2., 2.], [4., -1., 4., 4.]], dtype=dt)
    y = torch.tensor([[1, 1, -1, 1], [1, 1, -1, -1], [1, 1, -1, 1], [1, -1, 1, -1],
                      [-1, 1, 1, 1]], dtype=dt)
    return leaf(x), y


def rows(dt, s):
    return (leaf(torch.randn(4, 3, 2, generator=g(s), dtype=dt)),
            torch.randn(4, 3, generator=g(s + 1), dtype=dt).abs() * torch.tensor([1., -1., 1.],
                                                                                  dtype=dt))


CASES = {
    # the example, on targets with a row of no valid pixel (skipped by its `continue`)
    "masked_mse": (inspect.getsource(examples.masked_mse.naive), masked_targets),
    "empty_rows_sum_and_mean": ("""
        def f(pred, target):
            s = 0
            for i in range(pred.shape[0]):
                m = target[i] != 0
                s = s + (pred[i][m] - target[i][m]).abs().sum() + pred[i][m].mean().nan_to_num()
            return s
        """, masked_targets),
    "nan_and_inf_excluded": ("""
        def f(pred, target):
            s = 0
            for i in range(pred.shape[0]):
                ok = torch.isfinite(target[i])
                d = pred[i][ok] - target[i][ok]
                s = s + (d ** 2).sum() + torch.log(d.abs() + 1).sum() + (d.exp() / (1 + d * d)).sum()
            return s
        """, nan_targets),
    "hardest_pair": ("""
        def f(emb, labels):
            losses = []
            for i in range(len(emb)):
                dist = (emb - emb[i]).pow(2).sum(dim=1).clamp(min=1e-12).sqrt()
                same = labels == labels[i]
                losses.append(torch.relu(dist[same].max() - dist[~same].min() + 0.3))
            return torch.stack(losses).mean()
        """, distances),
    "ties_minus_inf_nan": ("""
        def f(x, y):
            s = 0
            for i in range(x.shape[0]):
                m = y[i] > 0
                s = s + x[i][m].max() + x[i][~m].amin() * 2 + torch.max(x[i][m] * 3)
            return s
        """, ties),
    "rows_and_0d_masks": ("""
        def f(x, w):
            s = 0
            for i in range(x.shape[0]):
                s = s + x[i][w[i] > 0].sum() + x[i][w[i, 0] > 0].mean() + x[i][w[i] > 0].amax() \\
                    + (x[i][w[i, 1] > 0] * 2).sum()
            return s
        """, rows),
    # reid-style hardest positive / negative from rows of a mask the function computed
    "rows_of_a_function_mask": ("""
        def f(emb, labels):
            n = emb.size(0)
            dist = (emb[:, None] - emb[None]).pow(2).sum(-1).clamp(min=1e-12).sqrt()
            mask = labels.expand(n, n).eq(labels.expand(n, n).t())
            ap, an = [], []
            for i in range(n):
                ap.append(dist[i][mask[i]].max().unsqueeze(0))
                an.append(dist[i][mask[i] == 0].min().unsqueeze(0))
            return (torch.cat(ap) - torch.cat(an) + 0.3).clamp(min=0).mean()
        """, distances),
    # a per-anchor hardest pair written with the row index beside the mask, the anchor left
    # out by positions, anchors without a positive skipped
    "row_index_beside_the_mask": ("""
        def f(emb, labels):
            d = torch.cdist(emb, emb)
            s = 0
            for i in range(len(emb)):
                pos = d[i, (labels == labels[i]) & (torch.arange(len(emb)) != i)]
                neg = d[i, labels != labels[i]]
                if len(pos) == 0 or len(neg) == 0:
                    continue
                s = s + torch.relu(pos.max() - neg.min() + 0.3)
            return s
        """, distances_with_a_singleton),
    # multi-similarity mining as research code writes it: Python's min()/max() of selections
    # (the first extreme item, NaN first item kept), a selection of a selection, continues
    "builtin_extremes_mining": ("""
        def f(emb, labels):
            sim = emb @ emb.t()
            total = 0
            for i in range(emb.shape[0]):
                pos = sim[i][labels == labels[i]]
                pos = pos[pos < 0.999]
                neg = sim[i][labels != labels[i]]
                if len(neg) < 1 or len(pos) < 1:
                    continue
                hard_neg = neg[neg + 0.1 > min(pos)]
                hard_pos = pos[pos - 0.1 < max(neg)]
                if len(hard_neg) < 1 or len(hard_pos) < 1:
                    continue
                total = total + torch.log(1 + torch.exp(-2 * (hard_pos - 0.5)).sum()) / 2 \\
                    + min(hard_neg) * max(pos) + torch.exp(40 * (hard_neg - 0.5)).sum() / 40
            return total
        """, distances),
    # a stand-in rebound from its own selection, then reduced along its last dim or by a
    # builtin (both need the whole mask): the keep of what it holds, not its first mask's
    "reselected_then_whole_mask_reductions": ("""
        def f(emb, labels):
            unit = emb / emb.norm(dim=1, keepdim=True)
            sim = unit @ unit.t()
            total = 0
            for i in range(emb.shape[0]):
                pos = sim[i][labels == labels[i]]
                pos = pos[pos < 0.999]
                total = total + torch.logsumexp(pos, -1) + max(pos) * 2
            return total
        """, distances),
    # circle loss per anchor: margins bound in the body from numbers and arguments (one name,
    # then a tuple), read next to the selections: the same in every iteration
    "fixed_names_bound_in_the_body": ("""
        def f(emb, labels, m=0.25):
            sim = emb @ emb.t()
            total = 0
            for i in range(emb.shape[0]):
                sp = sim[i][(labels == labels[i]) & (torch.arange(len(labels)) != i)]
                sn = sim[i][labels != labels[i]]
                if sp.numel() == 0 or sn.numel() == 0:
                    continue
                gamma = 8.0
                delta_p, delta_n = 1 - m, m
                ap = torch.clamp_min(-sp.detach() + 1 + m, min=0.)
                logit_p = -ap * (sp - delta_p) * gamma
                logit_n = (sn - delta_n) * gamma
                total = total + F.softplus(torch.logsumexp(logit_n, 0) + torch.logsumexp(logit_p, 0))
            return total
        """, distances_with_a_singleton),
    "condition_guards_the_max": ("""
        def f(pred, target):
            s = 0
            for i in range(pred.shape[0]):
                m = target[i] > 0
                if m.sum() == 0:
                    continue
                if target[i].sum() > 1:
                    s = s + pred[i][m].max()
                else:
                    s = s - (pred[i][m] - 1).pow(2).min()
            return s
        """, masked_targets),
    "named_selection_twice_and_scalars": ("""
        def f(pred, target):
            s = 0
            for i in range(pred.shape[0]):
                m = target[i] > -1
                d = pred[i][m] - target[i][m]
                mu = d.mean()
                s = s + ((d - mu) ** 2).sum() / len(pred[i][m]) + d.max() * mu
            return s
        """, masked_targets),
}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", CASES)
def test_equivalent_value_and_gradients(name, dtype, seed):
    src, make = CASES[name]
    original, optimized, code, report = build(src)
    assert report.loops[0].vectorized, report.loops[0].reason
    inputs = make(dtype, seed)
    assert_equivalent(original, optimized, *inputs)
    if finite_grads(original, *inputs):  # NaN/inf the mask excludes never reach a gradient
        assert finite_grads(optimized, *inputs), code


@pytest.mark.parametrize("fill", [0.5, -0.5])
def test_masks_selecting_everything_or_nothing(fill):
    original, optimized, _, _ = build(CASES["empty_rows_sum_and_mean"][0])
    pred = leaf(torch.randn(3, 4, dtype=torch.float64, generator=g(3)))
    target = torch.full((3, 4), fill, dtype=torch.float64) * (fill > 0)
    assert_equivalent(original, optimized, pred, target)
    assert finite_grads(optimized, pred, target)


def test_counts_stay_python_ints():
    src = """
        def f(x, y):
            n = 0
            for i in range(x.shape[0]):
                n += len(x[i][y[i] > 0]) + x[i][y[i] > 0].numel() + 1
            return n
        """
    original, optimized, _, report = build(src)
    x, y = torch.randn(4, 3, 2), torch.randn(4, 3)
    assert report.loops[0].vectorized
    assert original(x, y) == optimized(x, y) and same_python_types(original(x, y), optimized(x, y))


# Python's min()/max() of selections beside the methods: the first extreme item
EXTREMES_OF_SELECTIONS = """
    def f(x, y):
        s = 0
        for i in range(x.shape[0]):
            m = y[i] > 0
            s = s + x[i][m].sum() + x[i][m].max() + (x[i][m] * 2).amin() + len(x[i][m]) \\
                + min(x[i][m]) * 3 + max(x[i][m] * 2)
        return s
    """


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool], ids=str)
def test_integer_and_bool_selections_keep_their_dtypes(dtype):
    original, optimized, _, _ = build(EXTREMES_OF_SELECTIONS)
    x = torch.randint(-3, 3, (5, 4), generator=g(0)).to(dtype)
    y = torch.randn(5, 4, generator=g(1)).abs() * torch.tensor([1., -1., 1., -1.])
    a, b = original(x, y), optimized(x, y)
    assert a.dtype == b.dtype and torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# The original's errors

def test_max_of_an_empty_selection_raises_the_original_error():
    original, optimized, _, _ = build(CASES["ties_minus_inf_nan"][0])
    x, y = ties(torch.float64, 0)
    y = y.clone()
    y[1] = 1  # row 1: ~m selects nothing
    assert "min()" in same_error(original, optimized, x, y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_builtin_min_max_of_selections_pick_the_first_extreme_item(dtype):
    original, optimized, code, report = build(EXTREMES_OF_SELECTIONS)
    assert report.loops[0].vectorized, report.loops[0].reason
    x, y = ties(dtype, 0)  # ties (the first takes the gradient), -inf, NaN first and later
    assert_equivalent(original, optimized, x, y)
    # an anchor without positives: Python's ValueError, not torch's RuntimeError
    original, optimized, _, _ = build(CASES["reselected_then_whole_mask_reductions"][0])
    emb, labels = distances_with_a_singleton(dtype, 0)
    assert same_error(original, optimized, emb, labels) == "max() arg is an empty sequence"


def test_fixed_names_bound_in_the_body_are_checked_to_be_numbers_or_0d():
    original, optimized, code, _ = build(CASES["fixed_names_bound_in_the_body"][0])
    assert "isinstance(m, (int, float)) or (torch.is_tensor(m) and m.dim() == 0)" in code
    emb, labels = distances(torch.float64, 0)
    m = torch.tensor([0.25, 0.3, 0.1, 0.2, 0.25, 0.3, 0.1, 0.2], dtype=torch.float64)
    assert type(outcome(original, emb, labels, m)) is type(outcome(optimized, emb, labels, m))


def test_empty_selections_deselected_by_a_condition_do_not_raise():
    original, optimized, _, _ = build(CASES["condition_guards_the_max"][0])
    pred, target = masked_targets(torch.float64, 0)  # row 1 selects nothing, and is skipped
    assert_equivalent(original, optimized, pred, target)


def test_mask_shape_mismatch_raises_the_original_index_error():
    original, optimized, _, _ = build(CASES["ties_minus_inf_nan"][0])
    x, y = ties(torch.float64, 0)
    assert "does not match the shape" in same_error(original, optimized, x, y[:, :3])
    assert "too many indices" in same_error(original, optimized, x[:, 0], y)


def test_mean_of_integers_raises_as_the_original():
    src = """
        def f(x, y):
            s = 0
            for i in range(x.shape[0]):
                s = s + x[i][y[i] > 0].mean()
            return s
        """
    original, optimized, _, _ = build(src)
    assert "mean()" in same_error(original, optimized, torch.ones(3, 2, dtype=torch.long),
                                  torch.ones(3, 2))


RANKS = """
    def f(x, z, y):
        s = 0
        for i in range(x.shape[0]):
            m = y[i] > 0
            s = s + (x[i][m] + z[i][m]).sum()
        return s
    """


def test_selections_of_different_ranks_raise(tmp_path):
    # [k] + [k, 5]: the original's broadcasting depends on k, the dense form cannot follow it
    original, optimized, _, _ = build(RANKS)
    x, z = torch.randn(2, 5), torch.randn(2, 5, 5)
    three = torch.tensor([1., 1., 1., -1., -1.]).expand(2, 5)  # k = 3: the original fails too
    assert isinstance(outcome(original, x, z, three), RuntimeError)
    assert isinstance(outcome(optimized, x, z, three), RuntimeError)
    # k = 5 happens to broadcast: the decorator's fallback runs the original
    fn = load_module(tmp_path, "import torch\n" + dedent(RANKS)).f
    opt = rewrite.optimize_loss(fn, compile=False)
    with pytest.warns(rewrite.RewriteWarning, match="ranks"):
        torch.testing.assert_close(opt(x, z, torch.ones(2, 5)), fn(x, z, torch.ones(2, 5)))


def test_operands_that_do_not_vary_must_be_numbers_or_0d():
    src = """
        def f(x, y, eps):
            s = 0
            for i in range(x.shape[0]):
                s = s + torch.log(x[i][y[i] > 0] + eps).sum()
            return s
        """
    original, optimized, code, _ = build(src)
    x, y = leaf(torch.rand(4, 3, dtype=torch.float64)), torch.rand(4, 3, dtype=torch.float64)
    for eps in (0.1, torch.tensor(0.1, dtype=torch.float64), torch.full((3,), 0.1,
                                                                        dtype=torch.float64)):
        # all selected: the [3] one broadcasts in the original; the check runs the original loop
        assert_equivalent(original, optimized, x, y, eps)


# ---------------------------------------------------------------------------------------------
# Invariants

@pytest.mark.parametrize("name", CASES)
def test_second_run_changes_nothing(name):
    _, _, code, _ = build(CASES[name][0])
    tree = ast.parse(code)
    again = unparse(vectorize_loops.transform(tree, context(tree, namespace())))
    assert again == code


@pytest.mark.parametrize("src", [
    "mask = target[i] > 0\nd = pred[i][mask] - target[i][mask]\nt = t + (d ** 2).sum()",
    "h = dist[labels == labels[i]].max()\nk = len(x[i][x[i] > 0])"])
def test_rewriting_the_output_again_changes_nothing(src):
    _, dense = rewrite_body(src)
    ctx = context(ast.Module([ast.parse("def f(): pass").body[0]], []), namespace())
    assert masked_selections_to_where.rewrite(dense.body, {"i"}, ctx).body is dense.body


def test_rewrite_leaves_its_input_alone_and_marks_what_it_converted():
    src = "m = x[i] > 0\ns = s + x[i][m].sum()"
    body = ast.parse(src).body
    ctx = context(ast.Module([ast.parse("def f(): pass").body[0]], []), namespace())
    dense = masked_selections_to_where.rewrite(body, {"i"}, ctx)
    assert ast.unparse(ast.Module(body, [])) == src and dense.body is not body
    loop_dataflow._check_mask_indexing(body, ctx)  # converted: not refused any more
    kept = ast.parse("m = x[i] > 0\nlst.append(x[i][m].cumsum(0))").body
    assert masked_selections_to_where.rewrite(kept, {"i"}, ctx).body is kept
    with pytest.raises(Unsupported, match="boolean mask indexing"):
        loop_dataflow._check_mask_indexing(kept, ctx)


def test_kept_loops_keep_the_mask_indexing_reason():
    _, _, _, report = build("""
        def f(x, y):
            out = []
            for i in range(x.shape[0]):
                out.append(x[i][y[i] > 0].cumsum(0))
            return out
        """)
    assert not report.loops[0].vectorized
    assert report.loops[0].reason.startswith("boolean mask indexing `x[i][y[i] > 0]`")


COX_EVENTS = """
def f(risk, c, t, w):
    events = (c.squeeze() == 1).nonzero()
    ll = torch.tensor([0.0], requires_grad=True)
    for i in events:
        at_risk = (t >= t[i]).squeeze()
        ll = ll + risk[i] - torch.logsumexp(risk[at_risk] + torch.log(w[at_risk]), dim=0)
    return -ll / c.sum()
"""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["ties", "nan", "inf", "no_events", "zero_weight"])
def test_a_view_of_a_comparison_is_a_mask(case, dtype):
    # a Cox partial likelihood over its event rows: the risk set `(t >= t[i]).squeeze()` is a
    # comparison's view, a mask as the comparison is (`OpSpec.dtype_of`): its selections are
    # converted, where before the loop was mapped with the selections in it and vmap raised
    original, optimized, code, report = build(COX_EVENTS)
    assert report.loops[0].vectorized and "torch.where(" in code, report.loops[0].reason
    g = torch.Generator().manual_seed(3)
    risk = torch.randn(10, 1, generator=g, dtype=dtype)
    c = (torch.arange(10) % 3 != 0).to(dtype).reshape(10, 1)
    t = torch.tensor([3, 1, 3, 0, 2, 2, 5, 1, 3, 4], dtype=dtype).reshape(10, 1)
    w = torch.rand(10, 1, generator=g, dtype=dtype) + 0.5
    if case == "nan":
        risk[4] = nan
    elif case == "inf":
        risk[2], risk[6] = inf, -inf
    elif case == "no_events":
        c = torch.zeros_like(c)
    elif case == "zero_weight":
        w[3] = 0
    assert_equivalent(original, optimized, risk.requires_grad_(), c, t, w.requires_grad_())


@pytest.mark.parametrize("index", ["torch.ones_like(m, dtype=torch.long)", "m.view(x.dtype)"])
def test_a_like_or_view_given_another_dtype_is_no_mask(index):
    # `ones_like(m, dtype=torch.long)` indexes rows (all row 1), no mask: taken for one, its
    # selection became a `torch.where` on a long condition, which raised on every call
    original, optimized, code, _ = build(f"""
        def f(x, t):
            total = 0
            for i in range(x.shape[0]):
                m = t > t[i]
                total = total + x[{index}].sum()
            return total
        """)
    assert "torch.where" not in code, code
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, dtype=torch.float64)
    if "view" in index:  # a float view of a bool raises, as written
        assert type(outcome(original, x, t)) is type(outcome(optimized, x, t)) is RuntimeError
        return
    assert_equivalent(original, optimized, x, t)


def test_a_view_of_a_mask_that_stays_a_selection_keeps_the_loop():
    # not reduced, the selection stays: the loop is kept with the mask's reason, not mapped
    # (vmap raised on every call at the selection)
    _, _, _, report = build("""
        def f(x, t):
            out = []
            for i in range(x.shape[0]):
                out.append(x[(t >= t[i]).squeeze(1)].cumsum(0))
            return out
        """)
    assert not report.loops[0].vectorized
    assert report.loops[0].reason.startswith("boolean mask indexing `x[(t >= t[i]).squeeze(1)]`")


def test_mask_shape_lookup():
    shape = masked_selections_to_where.MASK_SHAPE
    assert shape[torch.Size([3]), torch.Size([3])] == (3,)
    assert shape[torch.Size([3]), torch.Size([3, 2, 4])] == (3, 1, 1)
    assert shape[torch.Size([]), torch.Size([3])] == (1, 1)
    assert shape[(2, 3), (2, 3, 5), (2, 3, 1)] == (2, 3, 1)
    with pytest.raises(IndexError, match="does not match the shape of the mask|shape of the mask"):
        shape[(3,), (4,)]
    with pytest.raises(IndexError, match="too many indices"):
        shape[(3, 1), (3,)]
    with pytest.raises(RuntimeError, match="ranks"):
        shape[(3,), (3,), (3, 2)]


# ---------------------------------------------------------------------------------------------
# Property: random values (ties, +-inf and NaN inside and outside the mask), random masks (empty
# rows), every reduction and a few elementwise chains.

CHAINS = ["x[i][m]", "x[i][m] * 2 - 1", "(x[i][m] - y[i][m]).abs()", "torch.sigmoid(x[i][m])",
          "x[i][m].clamp(min=-1) ** 2", "1 / (1 + x[i][m] * x[i][m])", "x[i][m] / y[i][m]",
          "torch.log(x[i][m].abs() + 1)", "x[i][m].sqrt()",
          "torch.where(x[i][m] > y[i][m], x[i][m], y[i][m] * 2)"]
REDUCTIONS = ["sum()", "mean()", "max()", "min()", "amax()", "amin()"]
VALUES = [-inf, -2.0, -0.5, 0.0, 1.0, 1.0, 3.0, inf, nan]


@functools.lru_cache(maxsize=None)
def chain_loss(chain: str, reduction: str):
    return build(f"""
        def f(x, y, w):
            s = 0
            for i in range(x.shape[0]):
                m = w[i] > 0
                s = s + ({chain}).{reduction}
            return s
        """)


@settings(max_examples=40, deadline=None)
@given(chain=st.sampled_from(CHAINS), reduction=st.sampled_from(REDUCTIONS),
       data=st.data(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_property_random_values_and_masks(chain, reduction, data, dtype):
    rows_, cols = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    cells = rows_ * cols
    x = torch.tensor(data.draw(st.lists(st.sampled_from(VALUES), min_size=cells,
                                        max_size=cells)), dtype=dtype).reshape(rows_, cols)
    y = torch.tensor(data.draw(st.lists(st.sampled_from(VALUES), min_size=cells,
                                        max_size=cells)), dtype=dtype).reshape(rows_, cols)
    w = torch.tensor(data.draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=cells,
                                        max_size=cells)), dtype=dtype).reshape(rows_, cols)
    original, optimized, code, report = chain_loss(chain, reduction)
    assert report.loops[0].vectorized, report.loops[0].reason
    expected = outcome(original, x, y, w)
    if isinstance(expected, Exception):  # max/min of an empty row
        assert type(outcome(optimized, x, y, w)) is type(expected)
        return
    assert_equivalent(original, optimized, leaf(x), y, w)
    if finite_grads(original, x, y, w):
        assert finite_grads(optimized, x, y, w), code


# ---------------------------------------------------------------------------------------------
# The examples it unlocks

@pytest.mark.parametrize("name", ["masked_mse", "triplet_hardest"])
def test_examples_are_vectorized_and_equivalent(name):
    module = importlib.import_module(f"examples.{name}")
    opt = rewrite.optimize_loss(module.naive, compile=False, strict=True)
    for dtype in (torch.float32, torch.float64):
        assert_equivalent(module.naive, opt, *module.make_inputs("small", dtype))
    assert [loop.vectorized for loop in opt.report.loops] == [True], opt.report


def test_a_refusal_says_why_the_selections_stay():
    # `len(boxes) == 0` would be a count of a selection, were `boxes` reduced: as it is not, the
    # `continue` is under a Python condition, and the reason says which selection stays, with the
    # lines of both
    for src, line, kept in [("""
def f(ann, anchors):
    total = 0
    for j in range(ann.shape[0]):
        boxes = ann[j][ann[j][:, 4] != -1]
        if len(boxes) == 0:
            continue
        total = total + (anchors[:, None, 0] - boxes[None, :, 0]).abs().amin(1).sum()
    return total
""", 5, "`boxes` read outside a reduction (line 7)"), ("""
def f(sim, labels):
    total = 0
    for i in range(sim.shape[0]):
        neg = torch.masked_select(sim[i], labels != labels[i])
        neg = torch.sort(neg)[0]
        if len(neg) == 0:
            continue
        total = total + neg[0]
    return total
""", 6, "`neg` read outside a reduction (line 5)")]:
        _, _, _, report = build(src)
        assert not report.loops[0].vectorized
        assert report.loops[0].reason.startswith(
            f"`continue` under a Python condition (line {line}) (the body's selections stay as "
            f"written: {kept})")
