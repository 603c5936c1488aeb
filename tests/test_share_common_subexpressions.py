"""share_common_subexpressions: a value an earlier assignment of the block holds is read by name,
only where recomputing it could not give another result; same value, gradients and dtype."""
from __future__ import annotations

import ast

import pytest
import torch

from passes import share_common_subexpressions
from passes.ast_tools import Namer, PassContext, unparse
from rewrite import Report, assert_equivalent, optimize_loss
from tests.helpers import FRONTEND, load_module

SOURCE = '''
import torch

def two_helpers(probs, labels):
    onehot = (labels > 0.5).to(probs.dtype)
    p = probs
    t = onehot
    a = p * t
    inter = a.sum(1) if a.dim() > 1 else a.reshape(len(a), -1).sum(1)
    q = probs
    u = onehot
    b = q * u
    tp = b.sum(1) if b.dim() > 1 else b.reshape(len(b), -1).sum(1)
    return (1 - (2 * inter + 1) / (p.sum(1) + t.sum(1) + 1) + tp / (tp + 0.5 * (q * (1 - u)).sum(1))).sum()

def product_of_arguments(p, t):
    a = p * t
    b = p * t
    return a.sum() + torch.where(t < 1, b, 0).sum()

def infinite_derivative(x):
    a = torch.sqrt(x)
    b = torch.sqrt(x)
    d = b - x
    return a.sum() + (d * d).sum()

def rebound_between(p, t):
    a = p * t
    p = p + 1
    b = p * t
    return a.sum() + b.sum()

def written_between(p, t):
    a = p * t
    p.mul_(2)
    b = p * t
    return a.sum() + b.sum()

def random_value(p):
    a = torch.rand_like(p) * p
    b = torch.rand_like(p) * p
    return a.sum() + b.sum()

def escapes_into_tuple(p, t):
    a = p * t
    b = p * t
    out = (a, b)
    out[0].add_(1)
    return out[1].sum()

def augmented(p, t):
    a = p * t
    b = p * t
    a += 1
    return a.sum() + b.sum()

def view_escapes(p, t):
    a = p * t
    b = p * t
    v = a.reshape(-1)
    v.add_(1)
    return a.sum() + b.sum()

def walrus_alias(p, t):
    a = p * t
    b = p * t
    w = (v := a).sum()
    v.add_(1)
    return a.sum() + b.sum() + w

def constants(p):
    s = 0.0
    r = 0.0
    return p.sum() + s + r

def in_branches(p, t):
    if p.sum() > 0:
        a = p * t
    else:
        a = p
    b = p * t
    return a.sum() + b.sum()

def two_directions(a, b, c):
    if a.dim() == 2:
        d = torch.cdist(a, b) * 2
        x = d.amin(1).mean()
    else:
        x = ((a - b) ** 2).sum()
    s = c
    if s.dim() == 2 and isinstance(a, torch.Tensor):
        e = torch.cdist(s, a) * 2
        y = e.amin(1).mean()
    else:
        y = 0.0
    return x + y

def pair_written_between(a, b):
    if a.dim() == 2:
        d = torch.cdist(a, b)
        x = d.amin(1).mean()
    b.mul_(2)
    e = torch.cdist(b, a)
    return x + e.amin(1).mean()

def pair_exclusive(a, b):
    if a.dim() == 2:
        d = torch.cdist(a, b)
    else:
        d = torch.cdist(b, a)
    return d.sum()

def pair_reads_another_name(a, b, p):
    if a.dim() == 2:
        d = torch.cdist(a, b, p=p)
        x = d.sum()
    e = torch.cdist(b, a, p=p)
    return x + e.sum()

def pair_in_loop(a, b):
    x = 0
    for _ in range(2):
        d = torch.cdist(a, b)
        x = x + d.sum()
    e = torch.cdist(b, a)
    return x + e.sum()

def pair_rebinds_operand(a, b):
    if a.dim() == 2:
        a = torch.cdist(a, b)
    e = torch.cdist(b, a)
    return a.sum() + e.sum()

def pair_selected(a, b):
    if a.dim() == 2:
        d = torch.cdist(a, b)[0]
        x = d.sum()
    e = torch.cdist(b, a)[0]
    return x + e.sum()

def pair_operand_outside(a, b):
    if a.dim() == 2:
        d = torch.cdist(a, b) * a
        x = d.sum()
    e = torch.cdist(b, a) * a
    return x + e.sum()

def pair_transposed_value(a, b):
    if a.dim() == 2:
        d = torch.cdist(a, b).mT
        x = d.sum()
    e = torch.cdist(b, a).mT
    return x + e.sum()

def pair_squared(a, b):
    if a.dim() == 2:
        d = torch.cdist(a, b).square()
        x = d.amin(1).mean()
    e = torch.cdist(b, a).square()
    return x + e.amin(1).mean()

def shared_past_unpack(x, y):
    s = x.sum(0)
    values, indices = y.max(0)
    t = x.sum(0)
    return s.sum() + values.sum() + t.sum()

def shared_past_copy(x, y):
    s = x.sum(0)
    p = s
    t = x.sum(0)
    return p.sum() + t.sum()

def shared_past_expand_as(x, y):
    s = x.sum(0)
    r = y[0].expand_as(s)
    t = x.sum(0)
    return (s * r).sum() + t.sum()

def unpack_rebinds(x, y):
    s = x.sum(0)
    x, indices = y.max(0)
    t = x.sum(0)
    return s.sum() + t.sum()

def copy_escapes(x, y):
    s = x.sum(0)
    p = s
    t = x.sum(0)
    p.add_(1)
    return s.sum() + t.sum()

def expanded_receiver_escapes(x, y):
    s = x.sum(0)
    r = s.expand_as(y)
    t = x.sum(0)
    r.add_(1)
    return s.sum() + t.sum()

def pair_escapes(a, b):
    if a.dim() == 2:
        d = torch.cdist(a, b)
    e = torch.cdist(b, a)
    return d, e.sum()
'''

# Not shared: ``product_of_arguments`` (``t`` may be inf: a summed cotangent times inf differs
# from a zero one's NaN), ``infinite_derivative``, ``pair_squared`` (``square``'s derivative may
# be inf).
UNCHANGED = ["product_of_arguments", "infinite_derivative", "pair_squared", "rebound_between", "written_between", "random_value", "escapes_into_tuple", "augmented",
             "view_escapes", "walrus_alias", "constants", "in_branches", "pair_written_between",
             "pair_exclusive", "pair_reads_another_name", "pair_in_loop", "pair_escapes",
             "pair_rebinds_operand", "pair_selected", "pair_transposed_value",
             "unpack_rebinds", "copy_escapes", "expanded_receiver_escapes"]


def _source(fn_name: str) -> ast.Module:
    module = ast.parse(SOURCE)
    return ast.Module([f for f in module.body if getattr(f, "name", None) == fn_name], [])


def _run_pass(tree: ast.Module) -> str:
    ctx = PassContext("user.py", "f", Namer.for_tree(tree), Report("f", "user.py", 1),
                      torch_name="torch", **FRONTEND)
    return unparse(share_common_subexpressions.transform(tree, ctx))


def test_golden_shared_through_copies():
    out = _run_pass(_source("two_helpers"))
    before = unparse(_source("two_helpers"))
    assert out == before.replace("b = q * u", "b = a").replace(
        "tp = b.sum(1) if b.dim() > 1 else b.reshape(len(b), -1).sum(1)", "tp = inter"), out
    assert "(q * (1 - u)).sum(1)" in out  # another value: kept


@pytest.mark.parametrize("name", UNCHANGED)
def test_golden_unchanged(name):
    assert _run_pass(_source(name)) == unparse(_source(name))


def test_golden_swapped_pair_across_guards():
    out = _run_pass(_source("two_directions"))
    before = unparse(_source("two_directions"))
    assert out == before.replace(
        "    if a.dim() == 2:\n", "    _pair = None\n    if a.dim() == 2:\n", 1).replace(
        "d = torch.cdist(a, b) * 2\n", "d = torch.cdist(a, b) * 2\n        _pair = (d, a, b)\n"
    ).replace("e = torch.cdist(s, a) * 2", "e = _pair[0].mT if _pair is not None and _pair[1] is a "
              "and (_pair[2] is s) else torch.cdist(s, a) * 2"), out


def test_golden_swapped_pair_read_by_another_op():
    # the value also reads ``a``: not shared whole; the pair op itself is, under its own name
    out = _run_pass(_source("pair_operand_outside"))
    before = unparse(_source("pair_operand_outside"))
    assert out == before.replace(
        "    if a.dim() == 2:\n", "    _pair = None\n    if a.dim() == 2:\n", 1).replace(
        "d = torch.cdist(a, b) * a\n",
        "_t = torch.cdist(a, b)\n        _pair = (_t, a, b)\n        d = _t * a\n").replace(
        "e = torch.cdist(b, a) * a", "e = (_pair[0].mT if _pair is not None and _pair[1] is a "
        "and (_pair[2] is b) else torch.cdist(b, a)) * a"), out


PAST = ["shared_past_unpack", "shared_past_copy", "shared_past_expand_as"]


@pytest.mark.parametrize("name", PAST)
def test_golden_shared_past_unpacks_copies_and_shape_reads(name):
    # ``v, i = y.max(0)`` binds two names (the rest is still known); ``p = s`` copies into a
    # confined name; ``y.expand_as(s)`` reads only ``s``'s shape
    out = _run_pass(_source(name))
    assert out == unparse(_source(name)).replace("t = x.sum(0)", "t = s"), out


@pytest.mark.parametrize("name", ["two_helpers", "two_directions", "pair_operand_outside",
                                  *PAST, *UNCHANGED])
def test_second_run_changes_nothing(name):
    once = _run_pass(_source(name))
    assert _run_pass(ast.parse(once)) == once


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("cse"), SOURCE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_equivalent(user, dtype):
    fast = optimize_loss(user.two_helpers, compile=False)
    assert "b = a" in fast.report.rewritten_source and "tp = inter" in fast.report.rewritten_source
    gen = torch.Generator().manual_seed(0)
    for shape in [(4, 3, 5), (4, 3)]:
        probs = torch.rand(shape, generator=gen, dtype=dtype).requires_grad_()
        labels = torch.rand(shape, generator=gen, dtype=dtype).requires_grad_()
        assert_equivalent(user.two_helpers, fast, probs, labels)
    nan = torch.tensor([[0.5, float("nan")], [float("inf"), 0.0]], dtype=dtype, requires_grad=True)
    assert_equivalent(user.two_helpers, fast, nan, torch.tensor([[1., 0.], [1., 1.]], dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_values_with_an_infinite_derivative_keep_each_backward(user, dtype):
    # one use's zero cotangent times an infinite local derivative is NaN in the original; shared,
    # the other use's cotangent would make it inf
    inf, nan = float("inf"), float("nan")
    for fn, args in [(user.infinite_derivative, [torch.tensor([0.0, 1.0, 0.25, inf, nan])]),
                     (user.product_of_arguments, [torch.tensor([1.0, 2.0, -1.0, 0.0]),
                                                  torch.tensor([inf, 0.5, nan, 2.0])])]:
        fast = optimize_loss(fn, compile=False)
        args = [a.to(dtype).requires_grad_() for a in args]
        assert_equivalent(fn, fast, *args)
        a, b = fn(*args), fast(*args)
        assert torch.equal(torch.autograd.grad(a, args[0])[0].isnan(),
                           torch.autograd.grad(b, args[0])[0].isnan())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_dice_tversky_shares_the_product_with_its_one_hot_at_nan_and_inf(dtype):
    # the one-hot labels are finite and take no gradient: ``p * onehot`` has the derivative
    # ``onehot`` (finite), so its shared backward is the original's
    from examples import dice_tversky
    fast = optimize_loss(dice_tversky.naive, compile=False)
    assert "_tversky_tp = _dice_inter" in fast.report.rewritten_source
    logits, target = dice_tversky.make_inputs("small", dtype)
    logits = logits.detach().clone()
    logits[0, 1, 2, 3], logits[1, 0, 0, 0], logits[1, 2, 5, 5] = float("nan"), float("inf"), -float("inf")
    assert_equivalent(dice_tversky.naive, fast, logits.requires_grad_(), target)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_swapped_pair_equivalent(user, dtype):
    fast = optimize_loss(user.two_directions, compile=False)
    assert "_pair[0].mT" in fast.report.rewritten_source
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(7, 3, generator=gen, dtype=dtype)
    b = torch.randn(5, 3, generator=gen, dtype=dtype)
    ties = torch.cat([b[:2], b[:2], a[:3]])  # points at distance 0 (and equal distances)
    nan = a.clone()
    nan[1, 2] = float("nan")
    inf = a.clone()
    inf[2, 0] = float("inf")
    for x, y in [(a, b), (ties, b), (nan, b), (inf, b), (a, a)]:
        x, y = x.clone().requires_grad_(), y.clone().requires_grad_()
        assert_equivalent(user.two_directions, fast, x, y, y)  # shared: ``c`` is ``b``
        c = torch.randn(y.shape, generator=gen, dtype=dtype, requires_grad=True)
        assert_equivalent(user.two_directions, fast, x, y, c)  # ``c`` not ``b``: recomputed
        assert_equivalent(user.two_directions, fast, x, y, x)  # another orientation: recomputed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_swapped_pair_read_by_another_op_equivalent(user, dtype):
    fast = optimize_loss(user.pair_operand_outside, compile=False)
    assert "_pair[0].mT" in fast.report.rewritten_source
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 3, generator=gen, dtype=dtype)  # [n, m] * [n, D]: m == D
    nan = a.clone()
    nan[1, 2] = float("nan")
    for x in (a, nan):
        x = x.clone().requires_grad_()
        b = torch.randn(3, 3, generator=gen, dtype=dtype, requires_grad=True)
        assert_equivalent(user.pair_operand_outside, fast, x, b)
        assert_equivalent(user.pair_operand_outside, fast, x, x)



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", PAST + ["unpack_rebinds", "copy_escapes"])
def test_shared_past_unpacks_copies_and_shape_reads_equivalent(user, name, dtype):
    fn = getattr(user, name)
    fast = optimize_loss(fn, compile=False)
    assert ("t = s\n" in fast.report.rewritten_source) == (name in PAST)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, generator=gen, dtype=dtype)
    y = torch.randn(4, 3, generator=gen, dtype=dtype)
    bad = x.clone()
    bad[1, 2], bad[2, 0] = float("nan"), float("inf")
    for a in (x, bad):
        args = [a.clone().requires_grad_(), y.clone().requires_grad_()]
        assert_equivalent(fn, fast, *args)
        assert fast(*args).dtype == dtype
