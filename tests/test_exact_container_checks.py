"""Run-time checks on containers the vectorized form reads or writes through the builtin type's
methods accept exactly that type: a subclass may override the methods the loop as written calls
(``append``, item access, iteration), and the vectorized form would bypass them."""
from collections import namedtuple

import pytest
import torch

from passes.stacked_views import stack_items
from tests.loop_helpers import build, namespace

DTYPES = [torch.float32, torch.float64]


class Doubling(list):
    def append(self, v):
        super().append(v * 2)


class DoublingExtend(list):
    def extend(self, vs):
        super().extend(v * 2 for v in vs)


class DoublingInsert(list):
    def insert(self, k, v):
        super().insert(k, v * 2)


class DoublingSetitem(list):
    def __setitem__(self, k, v):
        super().__setitem__(k, v * 2)


class DoublingGetitem(list):
    def __getitem__(self, k):
        return super().__getitem__(k) * 2


class DoublingTupleItems(tuple):
    def __getitem__(self, k):
        return super().__getitem__(k) * 2


Pair = namedtuple("Pair", "a b c")

APPENDING = '''
def f(x, out):
    for i in range(len(x)):
        out.append(x[i] + 1)
    return torch.stack(list(out))
'''

INDEXED = '''
def f(preds, target):
    loss = 0
    for i in range(len(target)):
        loss = loss + F.mse_loss(preds[i], target[i])
    return loss
'''


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", [Doubling, DoublingExtend, DoublingInsert, DoublingSetitem])
def test_list_subclass_appended_to_gives_the_loops_values(kind, dtype):
    ns = namespace(**{kind.__name__: kind})
    original, rewritten, _, report = build(APPENDING, ns)
    x = torch.randn(3, 2, dtype=dtype)
    assert report.loops[0].strategy == "batched"  # a plain list still runs vectorized
    assert torch.equal(rewritten(x, kind()), original(x, kind()))
    assert torch.equal(rewritten(x, []), original(x, []))


def test_list_subclass_overriding_append_runs_as_written():
    original, rewritten, code, _ = build(APPENDING, namespace(Doubling=Doubling))
    assert "type(out) is list" in code
    x = torch.randn(3, 2)
    assert torch.equal(rewritten(x, Doubling()), original(x, Doubling()))
    assert torch.equal(rewritten(x, Doubling())[0], 2 * (x[0] + 1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", [list, tuple, Pair._make, DoublingGetitem, DoublingTupleItems],
                         ids=["list", "tuple", "namedtuple", "list_getitem", "tuple_getitem"])
def test_stacked_sequences_value_and_gradients(make, dtype):
    original, rewritten, code, report = build(INDEXED)
    assert report.loops[0].strategy == "batched"
    rows = [torch.randn(4, dtype=dtype, requires_grad=True) for _ in range(3)]
    target = torch.randn(3, 4, dtype=dtype)
    want = original(make(rows), target)
    got = rewritten(make(rows), target)
    assert got.dtype == want.dtype == dtype
    assert torch.allclose(got, want)
    for r, g, w in zip(rows, torch.autograd.grad(got, rows), torch.autograd.grad(want, rows)):
        assert torch.allclose(g, w)


def test_namedtuple_is_stacked_and_an_overriding_subclass_is_not():
    """The guard's stacked tensor: a namedtuple (tuple's item access) becomes one, a sequence
    overriding item access stays itself (the loop as written runs)."""
    _, _, code, _ = build(INDEXED)
    prelude = next(line for line in code.splitlines() if "_preds_stacked =" in line)
    ns = {"torch": torch, "preds": None, "_v": None, "_stack_items": stack_items}
    rows = [torch.randn(4) for _ in range(3)]
    stmt = prelude.strip()
    for make, stacked in [(Pair._make, True), (tuple, True), (list, True),
                          (DoublingGetitem, False), (DoublingTupleItems, False)]:
        ns["preds"] = make(rows)
        exec(stmt, ns)
        assert isinstance(ns["_preds_stacked"], torch.Tensor) is stacked, make
