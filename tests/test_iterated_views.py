"""Loops over a view of a tensor (``for src in est.transpose(0, 1)``, as asteroid's pair-wise PIT
losses iterate sources): vectorized, the receiver checked to be a tensor before the view is taken
again; the same values, every gradient and the dtype as the loop as written (NaN, inf, ties).
Iterated values that are not views stay kept with their reason."""
from __future__ import annotations

import pytest
import torch

from rewrite.testing import assert_equivalent
from tests.helpers import equivalent_report, load_module
from tests.loop_helpers import build, strategies

PAIRS = """
def f(est, tgt, w):
    b, n = tgt.shape[:2]
    pw = tgt.new_empty(b, n, n)
    for i, e in enumerate(est.transpose(0, 1)):
        for j, t in enumerate(tgt.transpose(0, 1)):
            pw[:, i, j] = ((e - t) ** 2).mean(-1)
    return pw
"""

USER_CODE = '''
import torch


def pair_losses(loss_func, est, tgt):
    b, n = tgt.shape[:2]
    pw = tgt.new_empty(b, n, n)
    for i, e in enumerate(est.transpose(0, 1)):
        for j, t in enumerate(tgt.transpose(0, 1)):
            pw[:, i, j] = loss_func(e, t)
    return pw


def neg_snr(e, t):
    return -10 * torch.log10((t ** 2).sum(-1) / (((e - t) ** 2).sum(-1) + 1e-8) + 1e-8)


def pit(est, tgt):
    return pair_losses(neg_snr, est, tgt).amin((1, 2)).mean()


def rows_of(x):
    total = 0
    for r in x.permute(1, 0, 2):
        total = total + r.abs().sum()
    return total
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("views"), USER_CODE)


def _signals(dtype, special, shape=(2, 3, 16)):
    gen = torch.Generator().manual_seed(0)
    est, tgt = (torch.randn(*shape, dtype=dtype, generator=gen) for _ in range(2))
    if special:  # NaN, inf and a tie (an estimate equal to its target)
        est[0, 0, 0] = float("nan")
        est[1, 2, 3] = float("inf")
        est[1, 1] = tgt[1, 1]
    return est.requires_grad_(), tgt


def test_views_golden():
    _, _, code, report = build(PAIRS)
    assert strategies(report) == {4: "vmap", 5: "batched"}, (report, code)
    guard = next(line for line in code.splitlines() if "isinstance(est, torch.Tensor)" in line)
    for x in ("est", "tgt"):  # the receiver is checked before its view is taken
        assert guard.index(f"isinstance({x}, torch.Tensor)") < guard.index(f"{x}.transpose"), guard


def test_other_iterated_calls_are_kept():
    for made in ("torch.randperm(est.shape[0]).view(-1, 1) + est", "est.tolist()", "g(est)"):
        _, _, code, report = build(PAIRS.replace("est.transpose(0, 1)", made))
        kept = {loop.lineno: loop.reason for loop in report.loops if not loop.vectorized}
        assert list(kept) == [4] and f"`{made}` is not a plain name" in kept[4], report


CLASSES = """
def f(x, labels):
    total = 0
    for c in torch.unique(labels):
        total = total + x[labels == c].mean(0).norm()
    for r in x.abs():
        total = total + r.max()
    return total
"""


def test_golden_a_made_iterated_value_is_bound_before_the_check():
    """An effect-free op's value is made once, in front of the check, as Python makes it once;
    a method's receiver that is no tensor gives None (the loop as written calls it)."""
    _, _, code, report = build(CLASSES)
    assert [loop.vectorized for loop in report.loops] == [True, True], report
    lines = [line.strip() for line in code.splitlines()]
    guard = next(k for k, line in enumerate(lines) if line.startswith("if ") and "_iterated" in line)
    assert lines.index("_iterated = torch.unique(labels)") < guard, code
    assert "_iterated_1 = x.abs() if isinstance(x, torch.Tensor) else None" in lines, code
    assert lines.count("for c in torch.unique(labels):") == 1, code  # the loop as written


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_made_iterated_values_equivalent_and_run_vectorized(tmp_path, dtype):
    module = load_module(tmp_path, "import torch\n" + CLASSES)
    x = torch.randn(12, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    x[5] = x[2]  # a tie
    labels = torch.tensor([0, 2, 2, 5, 0, 5, 5, 2, 0, 0, 2, 5])
    report = equivalent_report(module.f, x.requires_grad_(), labels)
    assert [(loop.vectorized_runs, loop.original_runs) for loop in report.loops] == [(1, 0)] * 2


def test_a_made_value_of_an_object_that_is_no_tensor_is_made_once():
    calls = []

    class Rows:
        def abs(self):
            calls.append(1)
            return [torch.ones(3), torch.full((3,), 2.0)]

    original, optimized, _, _ = build("""
def f(x):
    total = 0
    for r in x.abs():
        total = total + r.max()
    return total
""")
    assert original(Rows()) == optimized(Rows()) == 3.0 and calls == [1, 1]


def test_an_inner_loop_over_a_made_value_runs_vectorized_in_the_loop_as_written():
    """Its value is made in the outer loop's body: that loop runs as written."""
    original, optimized, _, report = build("""
def f(x):
    total = 0
    for i in range(x.shape[0]):
        for v in x[i].abs():
            total = total + v
    return total
""")
    outer, inner = sorted(report.loops, key=lambda loop: loop.lineno)
    assert not outer.vectorized and "inner loop that could not be vectorized" in outer.reason
    assert inner.vectorized, inner
    assert_equivalent(original, optimized, torch.randn(3, 4, 2, dtype=torch.float64,
                                                       requires_grad=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("special", [False, True])
def test_pair_losses_run_vectorized_and_equivalent(user, dtype, special):
    est, tgt = _signals(dtype, special)
    report = equivalent_report(user.pit, est, tgt)
    outer, inner = sorted(report.loops, key=lambda loop: loop.lineno)
    assert outer.vectorized and (outer.vectorized_runs, outer.original_runs) == (1, 0), outer
    assert inner.vectorized


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_permuted_view_equivalent(user, dtype):
    x = _signals(dtype, True, (3, 4, 5))[0]
    [loop] = equivalent_report(user.rows_of, x).loops
    assert (loop.vectorized_runs, loop.original_runs) == (1, 0)


def test_a_receiver_that_is_no_tensor_runs_as_written():
    """An object with its own ``transpose``: called as often as by the loop as written."""
    calls = []

    class Sources:
        def transpose(self, a, b):
            calls.append((a, b))
            return [torch.ones(2, 4), torch.zeros(2, 4)]

    original, optimized, _, _ = build(PAIRS)
    tgt = torch.randn(2, 2, 4)
    want = original(Sources(), tgt, None)
    assert calls == [(0, 1)]
    assert torch.equal(optimized(Sources(), tgt, None), want) and calls == [(0, 1)] * 2


CALLED_ITEMS = """
    def f(ws, xs, fns, t):
        total = 0
        for w, x, fn in zip(ws, xs, fns):
            total = total + w * fn(x, t)
        return total
    """


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_loop_calling_its_items_is_kept_with_the_reason(dtype):
    """Items the body calls are functions: stacking them could never pass its check, so the
    loop is kept (it was reported vectorized and always ran as written), and still equivalent."""
    original, optimized, _, report = build(CALLED_ITEMS)
    [loop] = report.loops
    assert not loop.vectorized and "`fn` is called: its items are functions" in loop.reason, loop
    fns = [lambda x, t: (x - t).abs().mean(), lambda x, t: ((x - t) ** 2).mean()]
    xs = [torch.randn(4, 3, dtype=dtype, requires_grad=True) for _ in fns]
    assert_equivalent(original, optimized, [0.4, 1.0], xs, fns, torch.randn(4, 3, dtype=dtype))


# Class ids of `torch.unique` are 0-d items (a 1-D result, ``OpSpec.one_d``): next to a tensor
# named before the loop they broadcast as the original's 0-d values do, batched.
PER_CLASS = """
def f(logits, labels, classes, beta):
    loss = 0
    for c in torch.unique(classes):
        n_c = (labels == c).sum()
        w = (1 - beta) / (1 - beta ** n_c)
        loss = loss + w * F.binary_cross_entropy_with_logits(
            logits[:, c], (labels == c).to(logits.dtype), reduction="sum")
    return loss
"""


def test_golden_class_ids_next_to_a_fixed_tensor_are_batched():
    _, _, code, report = build(PER_CLASS)
    assert strategies(report) == {3: "batched"}, (report, code)
    assert "labels == c[(slice(None),) + (None,) * labels.dim()]" in code, code
    assert "labels.dtype == _iterated.dtype" in code, code  # per item a 0-d value: no promotion


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_class_ids_next_to_a_fixed_tensor_equivalent(tmp_path, dtype, monkeypatch):
    module = load_module(tmp_path, "import torch\nimport torch.nn.functional as F\n" + PER_CLASS)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 6, generator=g, dtype=dtype)
    logits[3, 2] = logits[4, 2]  # a tie
    labels = torch.tensor([0, 2, 2, 5, 0, 1, 1, 2, 0, 0, 2, 3])
    with monkeypatch.context() as m:
        m.setattr(torch, "vmap", None)  # the batched code must not need it
        report = equivalent_report(module.f, logits.requires_grad_(), labels, labels, 0.9)
    assert [(l.vectorized_runs, l.original_runs) for l in report.loops] == [(1, 0)], report
    # labels of another dtype than the ids: per item a 0-d id does not promote them, batched
    # it would; the batched check fails and vmap runs
    report = equivalent_report(module.f, logits.requires_grad_(), labels.to(torch.int32),
                               labels, 0.9)
    assert [(l.vectorized_runs, l.original_runs) for l in report.loops] == [(1, 0)], report
