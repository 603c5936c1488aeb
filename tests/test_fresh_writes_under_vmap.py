"""Writes into a tensor a helper makes filled with one number, in a helper a vmapped body calls
(``mapped_writes_to_functional``), as a SimCLR pair loss writes them (a paraphrase of the loss of
sunjesse/PyTorch-Implementation-of-SimCLR: ``one(i, j, z)`` fills ``neg = torch.zeros(n)`` in
its own loop, skipping ``k == i``; the caller loops over the pairs).

Both loops were reported vectorized, and the first call fell back to the original: the helper's
loop, batched, leaves ``neg[0:n:1] = <stacked values>`` after it, which under the caller's vmap
writes a batched value into the unbatched ``neg`` in place and raises ("inplace arithmetic ...
`other` being vmapped over but `self` not"). The write is now a new tensor bound to ``neg``.
A tensor something else may share (a view of it, an appended copy) keeps its writes as written,
and a caller's loop whose vmapped body calls a helper writing such a tensor is kept, with the
reason at its line (it was reported vectorized, and raised at every call).
"""
from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest
import torch

from passes import mapped_writes_to_functional
from passes.loops import loop_dataflow
from passes.ast_tools import Namer, PassContext, unparse
from rewrite import Report, assert_equivalent, frontend, optimize_loss
from rewrite.frontend import MAPPED_REWRITE, REWRITE_OF
from tests.helpers import FRONTEND, golden_text, load_module, optimized_and_vectorized

DTYPES = (torch.float32, torch.float64)
GOLDEN = Path(__file__).parent / "golden" / "fresh_writes_under_vmap"

SOURCE = """
import torch
import torch.nn as nn
import torch.nn.functional as F


class PairLoss(nn.Module):
    def __init__(self, tau=0.5):
        super().__init__()
        self.tau = tau

    def sim(self, u, v):
        return F.cosine_similarity(u, v, dim=0)

    def one(self, i, j, z):
        n = z.shape[0]
        neg = torch.zeros(n)
        for k in range(n):
            if k != i:
                neg[k] = torch.exp(self.sim(z[i], z[k]) / self.tau)
        return -torch.log(torch.exp(self.sim(z[i], z[j]) / self.tau) / neg.sum())

    def forward(self, z):
        N = z.shape[0] // 2
        loss = 0
        for k in range(N):
            loss += self.one(k, k + N, z) + self.one(k + N, k, z)
        return loss / (2 * N)


class DotPairLoss(nn.Module):
    # no op with a form for vmap: `one` is rewritten for vmap because it writes an item
    def __init__(self, tau=0.5):
        super().__init__()
        self.tau = tau

    def sim(self, u, v):
        return torch.dot(u, v) / (u.norm() * v.norm())

    def one(self, i, j, z):
        n = z.shape[0]
        neg = torch.zeros(n, dtype=z.dtype)
        for k in range(n):
            if k != i:
                neg[k] = torch.exp(self.sim(z[i], z[k]) / self.tau)
        return -torch.log(torch.exp(self.sim(z[i], z[j]) / self.tau) / neg.sum())

    def forward(self, z):
        N = z.shape[0] // 2
        loss = 0
        for k in range(N):
            loss += self.one(k, k + N, z) + self.one(k + N, k, z)
        return loss / (2 * N)


def sim(u, v):
    return F.cosine_similarity(u, v, dim=0)


def one(i, j, z, tau):
    n = z.shape[0]
    neg = torch.zeros(n, dtype=z.dtype)
    for k in range(n):
        if k != i:
            neg[k] = torch.exp(sim(z[i], z[k]) / tau)
    return -torch.log(torch.exp(sim(z[i], z[j]) / tau) / neg.sum())


def pair_loss(z, tau=0.5):
    N = z.shape[0] // 2
    loss = 0
    for k in range(N):
        loss = loss + one(k, k + N, z, tau) + one(k + N, k, z, tau)
    return loss / (2 * N)


def one_reads(i, j, z, tau):
    # the loop reads the rows it writes: its vectorized form binds a view of them first
    n = z.shape[0]
    neg = torch.ones(n)
    for k in range(n):
        if k != i:
            neg[k] = 2 * neg[k] + torch.exp(sim(z[i], z[k]) / tau)
    return -torch.log(torch.exp(sim(z[i], z[j]) / tau) / neg.sum())


def pair_loss_reads(z, tau=0.5):
    N = z.shape[0] // 2
    loss = 0
    for k in range(N):
        loss = loss + one_reads(k, k + N, z, tau)
    return loss / N


def one_shared(i, j, z, tau):
    n = z.shape[0]
    neg = torch.zeros(n, dtype=z.dtype)
    first = neg[:1]  # a view: it sees the writes below
    for k in range(n):
        if k != i:
            neg[k] = torch.exp(sim(z[i], z[k]) / tau)
    return -torch.log(torch.exp(sim(z[i], z[j]) / tau) / neg.sum()) + first.sum()


def pair_loss_shared(z, tau=0.5):
    N = z.shape[0] // 2
    loss = 0
    for k in range(N):
        loss = loss + one_shared(k, k + N, z, tau)
    return loss / N


def last_of(i, z):
    out = z.new_zeros(3)
    out[0] = z[i].sum()
    out[1:] += z[i, :2]
    return out.prod()


def shared_view(i, z):
    out = torch.zeros(3)
    head = out[:2]
    out[0] = z[i].sum()
    return head.sum() + out.sum()


def appended(i, z):
    out = torch.zeros(3)
    kept = [out]
    out[0] = z[i].sum()
    return kept[0].sum()


def written_argument(i, z, out):
    out[0] = z[i].sum()
    return out.sum()


def to_one_hot(label, num_classes):
    vec = torch.zeros(num_classes)
    vec[label] = 1
    return vec


def soft_ce(logits, labels):
    total = 0
    for b in range(logits.shape[0]):
        target = to_one_hot(labels[b], logits.shape[1])
        total = total + -(target * F.log_softmax(logits[b], dim=0)).sum()
    return total / logits.shape[0]



def by_rows(z):
    loss = 0
    for i in range(z.shape[0]):
        loss = loss + last_of(i, z)
    return loss
"""


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("fresh_writes"), SOURCE)


def _mapped_helper_source(fn) -> str:
    """The source of the helper ``fn``'s rewrite binds for its vmapped body."""
    rebuilt, _ = frontend.rewrite_function(fn, Report(fn.__qualname__, "", 1))
    bindings = getattr(rebuilt, REWRITE_OF)[2]
    helper = next(v for v in bindings.values() if getattr(v, MAPPED_REWRITE, False))
    return getattr(helper, REWRITE_OF)[0]


def _pass_alone(fn) -> tuple[str, str]:
    """(the source of ``fn``, after ``mapped_writes_to_functional`` for calls under vmap)."""
    parsed = frontend.parse_function(fn)
    ctx = PassContext(parsed.filename, fn.__qualname__,
                      Namer.for_tree(parsed.tree, set(fn.__globals__)),
                      Report(fn.__qualname__, parsed.filename, parsed.lineno), fn.__globals__,
                      mapped=True, **FRONTEND)
    before = unparse(parsed.tree)
    return before, unparse(mapped_writes_to_functional.transform(parsed.tree, ctx))


@pytest.mark.parametrize("form", ("module", "dot", "function", "reads"))
@pytest.mark.parametrize("dtype", DTYPES)
def test_simclr_pair_loss_runs_vectorized(user, form, dtype):
    fn = {"module": user.PairLoss, "dot": user.DotPairLoss, "function": lambda: user.pair_loss,
          "reads": lambda: user.pair_loss_reads}[form]()
    z = torch.randn(8, 5, dtype=dtype, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        opt = optimized_and_vectorized(fn, z)  # strict: a raising vectorized form raises
    caller = [loop for loop in opt.report.loops if loop.vectorized and loop.vectorized_runs]
    assert caller and not any(loop.failed_runs for loop in opt.report.loops)
    assert not opt.report.fallbacks
    assert opt(z).dtype == dtype


def test_golden_mapped_helper(user):
    code = _mapped_helper_source(user.pair_loss)
    assert "neg[0:n:1] = " not in code  # the write after the loop is out of place
    assert code == golden_text(GOLDEN / "one_mapped.py", code)


def test_golden_writes_and_added_writes(user):
    before, after = _pass_alone(user.last_of)
    assert after != before
    assert after == golden_text(GOLDEN / "last_of.py", after)
    # rewritten for calls outside vmap, the writes stay in place
    rebuilt, _ = frontend.rewrite_function(user.last_of, Report("last_of", "", 1))
    assert "out[0] = z[i].sum()" in getattr(rebuilt, REWRITE_OF)[0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_added_write_into_new_zeros_under_vmap(user, dtype):
    z = torch.randn(4, 5, dtype=dtype, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt = optimized_and_vectorized(user.by_rows, z)
    assert opt(z).dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_hot_made_in_the_body_runs_vectorized(user, dtype):
    logits = torch.randn(6, 4, dtype=dtype, requires_grad=True)
    labels = torch.tensor([0, 3, 3, 1, 2, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt = optimized_and_vectorized(user.soft_ce, logits, labels)
    assert opt(logits, labels).dtype == dtype


def test_golden_one_hot_body(user):
    rebuilt, _ = frontend.rewrite_function(user.soft_ce, Report("soft_ce", "", 1))
    code = getattr(rebuilt, REWRITE_OF)[0]
    assert code == golden_text(GOLDEN / "soft_ce.py", code)


@pytest.mark.parametrize("expr, made", [
    ("torch.zeros(n)", True), ("torch.ones(n, m)", True),
    # a given dtype may be bool (a mask written per iteration would index under vmap), a
    # `_like` or method form takes its operand's; a leaf requiring grad raises when written
    ("torch.zeros(n, dtype=torch.bool)", False), ("torch.ones_like(x)", False),
    ("x.new_zeros(n)", False), ("torch.zeros(n, requires_grad=True)", False),
])
def test_float_filled_constructors(user, expr, made):
    ctx = PassContext("", "f", Namer(set()), Report("f", "", 1), {"torch": torch}, **FRONTEND)
    assert loop_dataflow.float_filled(ast.parse(expr, mode="eval").body, ctx) is made


@pytest.mark.parametrize("name", ("shared_view", "appended", "written_argument", "one_shared"))
def test_shared_or_given_tensors_keep_their_writes(user, name):
    before, after = _pass_alone(getattr(user, name))
    assert after == before


@pytest.mark.parametrize("dtype", DTYPES)
def test_helper_writing_a_shared_tensor_keeps_the_callers_loop(user, dtype):
    z = torch.randn(6, 4, dtype=dtype, requires_grad=True)
    opt = optimize_loss(user.pair_loss_shared, compile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback: the loop is kept, not vectorized
        assert_equivalent(user.pair_loss_shared, opt, z)
    caller = next(loop for loop in opt.report.loops if "one_shared(...)" in loop.reason)
    assert not caller.vectorized
    assert "`one_shared` writes `neg[k] = " in caller.reason and "may share" in caller.reason
    assert not opt.report.fallbacks
