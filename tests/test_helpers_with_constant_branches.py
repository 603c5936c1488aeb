"""Helpers whose ``if``s test parameters a call binds to constants (``pick(y, k, True)``,
``reduce(l, reduction="mean")``, ``if weight is None``) are inlined with the branch the
constants take (``inline_helper_calls._fold``); items of tensors the helper made may be written
(``m[k] = False`` on ``m = torch.ones(...)``). The soft-nearest-neighbour loss as public code
writes it (a mask helper with a ``same`` flag) then runs vectorized instead of failing under
vmap at run time; a test on a value, on a rebound parameter or on a non-constant argument keeps
the helper called, with the reason in the report."""
import ast

import pytest
import torch

from passes.loops import inline_helper_calls
from passes.ast_tools import unparse
from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module
from tests.test_inline_helper_calls import _context

DTYPES = [torch.float32, torch.float64]

SOURCE = '''
import torch


def pick(y, k, same=False):
    if same:
        m = y == y[k]
    else:
        m = torch.ones(y.shape[0], dtype=torch.bool)
    m[k] = False
    return m


def reduce(l, reduction="mean", weight=None):
    if weight is not None:
        l = l * weight
    if reduction == "none":
        return l
    elif reduction in ("sum",):
        return l.sum()
    return l.mean()


def by_value(p, t):
    if t.sum() > 0:
        return p.sum()
    return t.sum()


def rebinds(p, flag):
    flag = not flag
    if flag:
        return p.sum()
    return p.mean()


def writes_parameter(p, k):
    p[k] = 0
    return p.sum()


def snn(x, y):
    e = torch.exp(-torch.cdist(x, x))
    out = torch.zeros(y.shape[0], dtype=x.dtype)
    for k in range(y.shape[0]):
        num = e[k, pick(y, k, True)]
        den = e[k, pick(y, k)]
        out[k] = torch.log(num.sum() / den.sum())
    return -out.sum() / y.shape[0]


def reduced(x, t):
    loss = 0
    for i in range(x.shape[0]):
        loss = loss + reduce((x[i] - t[i]) ** 2, "sum") + reduce(x[i].abs(), reduction="none").sum()
    return loss


def flagged(x, y, same):
    d = x @ x.T
    out = torch.zeros(y.shape[0], dtype=x.dtype)
    for k in range(y.shape[0]):
        out[k] = d[k, pick(y, k, same)].sum()
    return out.sum()


def valued(x, t):
    loss = 0
    for i in range(x.shape[0]):
        loss = loss + by_value(x[i], t[i])
    return loss


def rebound(x):
    loss = 0
    for i in range(x.shape[0]):
        loss = loss + rebinds(x[i], True)
    return loss


class SoftNearestNeighbours(torch.nn.Module):
    def __init__(self, y, t=0.1, eps=1e-8):
        super().__init__()
        self.y = y
        self.n = y.shape[0]
        self.w = torch.nn.Parameter(torch.zeros(1) + 1 / t)
        self.eps = eps

    def pick(self, k, same=False):
        if same:
            m = self.y == self.y[k]
        else:
            m = torch.ones(self.n, dtype=torch.bool)
        m[k] = False
        return m

    def forward(self, x):
        e = torch.exp(-torch.cdist(x, x) * self.w[0])
        out = torch.zeros(self.n, dtype=x.dtype)
        for k in range(self.n):
            num = e[k, self.pick(k, True)]
            den = e[k, self.pick(k)]
            out[k] = torch.log(num.sum() / (den.sum() + self.eps))
        return (-1 / self.n) * out.sum()


def written(x):
    loss = 0
    for i in range(x.shape[0]):
        loss = loss + writes_parameter(x[i].clone(), 0)
    return loss
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("flags"), SOURCE)


def _inlined(fn) -> tuple[str, list[str]]:
    tree, ctx = _context(fn)
    loop = next(n for n in ast.walk(tree) if isinstance(n, ast.For))
    body, _ = inline_helper_calls.rewrite(loop, loop.body, ctx)
    return unparse(ast.Module(body, [])), ctx.report.notes


def _golden(src: str) -> str:
    return ast.unparse(ast.parse(src))


# ---- golden before/after -----------------------------------------------------------------------

def test_the_branch_the_flag_takes_is_inlined(user):
    body, _ = _inlined(user.snn)
    assert body == _golden("""
_pick_y = y
_pick_k = k
_pick_same = True
_pick_m = _pick_y == _pick_y[_pick_k]
_pick_m[_pick_k] = False
_pick = _pick_m
num = e[k, _pick]
_pick_y_1 = y
_pick_k_1 = k
_pick_same_1 = False
_pick_m_1 = torch.ones(_pick_y_1.shape[0], dtype=torch.bool)
_pick_m_1[_pick_k_1] = False
_pick_1 = _pick_m_1
den = e[k, _pick_1]
out[k] = torch.log(num.sum() / den.sum())
""")


def test_a_return_in_the_branch_taken_ends_the_body(user):
    body, _ = _inlined(user.reduced)
    assert "_reduce = _reduce_l.sum()" in body and "_reduce_1 = _reduce_l_1\n" in body + "\n"
    assert ".mean()" not in body and "weight" not in body.replace("_reduce_weight", "")


@pytest.mark.parametrize("name, reason", [
    ("flagged", "`if same` is not decided by constant arguments of the call"),
    ("valued", "`if t.sum() > 0` is not decided by constant arguments of the call"),
    ("rebound", "`if flag` is not decided by constant arguments of the call"),
    ("written", "only assignments to plain names or tuples of them (and to items of tensors it "
                "made)"),
])
def test_helpers_not_decided_by_constants_stay_called(user, name, reason):
    body, notes = _inlined(getattr(user, name))
    tree, _ = _context(getattr(user, name))
    loop = next(n for n in ast.walk(tree) if isinstance(n, ast.For))
    assert body == unparse(ast.Module(loop.body, []))  # no change
    assert any(reason in n for n in notes), notes


# ---- behaviour ---------------------------------------------------------------------------------

def _points(dtype, n=24, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g, dtype=dtype)
    x[3] = x[2]  # a tie: a zero distance
    y = torch.randint(0, classes, (n,), generator=g)
    y[-1] = classes  # a class of one point: an empty selection, log(0)
    return x.requires_grad_(), y


@pytest.mark.parametrize("dtype", DTYPES)
def test_soft_nearest_neighbours_runs_vectorized_and_equivalent(user, dtype):
    opt = optimize_loss(user.snn, compile=False, keep_faster=False)
    assert_equivalent(user.snn, opt, *_points(dtype))
    loop, = opt.report.loops
    assert loop.strategy == "vmap" and loop.vectorized_runs > 0 and loop.original_runs == 0, loop


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["reduced", "valued", "rebound", "written"])
def test_other_helpers_are_equivalent(user, name, dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 7, generator=g, dtype=dtype, requires_grad=True)
    t = torch.randn(6, 7, generator=g, dtype=dtype)
    fn = getattr(user, name)
    args = (x, t) if name in ("reduced", "valued") else (x,)
    assert_equivalent(fn, optimize_loss(fn, compile=False, keep_faster=False), *args)


@pytest.mark.parametrize("same", [True, False])
def test_a_flag_from_the_caller_keeps_the_helper_called(user, same):
    # mapped with vmap, the mask `pick` returns would index on every call and raise: the loop
    # runs as written, with the reason, and no fallback warning
    x, y = _points(torch.float64)
    opt = optimize_loss(user.flagged, compile=False, strict=True)
    assert_equivalent(user.flagged, opt, x, y, same)
    loop, = opt.report.loops
    assert not loop.vectorized and not loop.failed_runs and not opt.report.fallbacks
    assert loop.reason.startswith("`d[k, pick(y, k, same)]`: boolean mask indexing by what "
                                  "`pick` returns"), loop.reason


# ---- methods of the caller's own object --------------------------------------------------------

def test_a_method_of_the_object_is_inlined_with_its_branch(user):
    tree, ctx = _context(user.SoftNearestNeighbours.forward)
    ctx.func_name = "SoftNearestNeighbours.forward"
    loop = next(n for n in ast.walk(tree) if isinstance(n, ast.For))
    body, guards = inline_helper_calls.rewrite(loop, loop.body, ctx)
    assert unparse(ast.Module(body[:6], [])) == _golden("""
_pick_self = self
_pick_k = k
_pick_same = True
_pick_m = _pick_self.y == _pick_self.y[_pick_k]
_pick_m[_pick_k] = False
_pick = _pick_m
""")
    assert [unparse(g) for g in guards] == [
        "getattr(type(self), 'pick', None) is _pick_inlined and 'pick' not in "
        "getattr(self, '__dict__', ())"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_module_runs_vectorized_and_equivalent(user, dtype):
    x, y = _points(dtype)
    loss = user.SoftNearestNeighbours(y).to(dtype)
    opt = optimize_loss(loss, compile=False, keep_faster=False)
    assert_equivalent(loss, opt, x)  # the parameter's gradient too
    loop, = opt.report.loops
    assert loop.strategy == "vmap" and loop.vectorized_runs > 0 and loop.original_runs == 0, loop


def test_a_method_replaced_on_the_object_runs_as_written(user):
    x, y = _points(torch.float64)
    loss = user.SoftNearestNeighbours(y).double()
    opt = optimize_loss(loss, compile=False, keep_faster=False)
    loss.pick = lambda k, same=False: user.pick(y, k, not same)  # the object's own attribute
    assert_equivalent(loss, opt, x)
    loop, = opt.report.loops
    assert loop.vectorized_runs == 0 and loop.original_runs == 1, loop
