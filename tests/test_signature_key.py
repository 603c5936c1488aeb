"""The input signature key (``rewrite.runtime.signature_key``), read on every call: a long list
costs its length and its two ends whatever its length, and every change of what it reads makes a
new signature (decided again: compiled, checked, timed), in place or not."""
from __future__ import annotations

import pytest
import torch

from rewrite import optimize_loss, runtime
from rewrite.runtime import ITEMS_KEYED, signature_key
from tests.helpers import load_module

LONG = 50


def _items(n=LONG, dtype=torch.float32):
    return [torch.ones(4, 2, dtype=dtype) for _ in range(n)]


def _key(items):
    return signature_key((items,), {})


def test_a_long_list_reads_its_length_and_its_ends_only(monkeypatch):
    """The per-call cost does not grow with the list: three leaves (the list, its two ends)."""
    read = []
    leaf_key = runtime._leaf_key
    monkeypatch.setattr(runtime, "_leaf_key", lambda a: read.append(a) or leaf_key(a))
    items = _items(1000)
    signature_key((items,), {})
    assert len(read) == 3 and read[1] is items[0] and read[2] is items[-1]


@pytest.mark.parametrize("end", [0, -1])
@pytest.mark.parametrize("change", [
    lambda t: t.double(), lambda t: t[:3], lambda t: t[None], lambda t: t.clone().requires_grad_(),
    lambda t: t.to("meta")])
def test_a_changed_end_item_is_a_new_signature(end, change):
    items = _items()
    before = _key(items)
    items[end] = change(items[end])
    assert _key(items) != before


@pytest.mark.parametrize("change", [lambda xs: xs.append(xs[0]), lambda xs: xs.pop(),
                                    lambda xs: xs.insert(0, xs[0].double())])
def test_a_changed_length_is_a_new_signature(change):
    items = _items()
    before = _key(items)
    change(items)
    assert _key(items) != before


@pytest.mark.parametrize("end", [0, -1])
@pytest.mark.parametrize("change", [lambda t: t.requires_grad_(), lambda t: t.resize_(3, 2),
                                    lambda t: t.unsqueeze_(0), lambda t: t.set_(torch.zeros(2))])
def test_an_end_item_changed_in_place_is_a_new_signature(end, change):
    items = _items()
    before = _key(items)
    change(items[end])
    assert _key(items) != before


def test_a_short_list_reads_every_item():
    """Heterogeneous outputs (logits, boxes, masks) come as a few items: each one counts."""
    items = _items(ITEMS_KEYED)
    before = _key(items)
    items[1] = items[1].double()
    assert _key(items) != before
    # a long list's middle is not read: it shares its ends' signature (see ``signature_key``)
    long = _items()
    long[LONG // 2] = long[LONG // 2].double()
    assert _key(long) == _key(_items())


LIST_CODE = '''
import torch

def total(xs, w):
    out = 0
    for x in xs:
        out = out + (x * w).sum()
    return out
'''


@pytest.mark.usefixtures("keep_faster_on")  # per band: a later signature is decided and counted
def test_repeated_calls_on_fresh_lists_decide_once(tmp_path, monkeypatch):
    """The per-call path: a list of the same signature (fresh objects every step, as a rollout's)
    finds its decision without deciding again; a changed end dtype, length or requires_grad of an
    end item is decided again, and its result is the original's."""
    user = load_module(tmp_path, LIST_CODE)
    f = optimize_loss(user.total, compile=False)
    decided = []
    specialize = f._specialize
    monkeypatch.setattr(f, "_specialize", lambda key, *a: decided.append(key) or specialize(key, *a))
    w = torch.tensor(2.0, requires_grad=True)
    for _ in range(30):
        f(_items(), w)
    assert len(decided) == 1
    for items in (_items(LONG + 1), _items()[:-1] + [torch.ones(4, 2, dtype=torch.float64)],
                  _items()[:-1] + [torch.ones(4, 2, requires_grad=True)]):
        out = f(items, w)
        torch.testing.assert_close(out, user.total(items, w))
        assert out.dtype == user.total(items, w).dtype
    assert len(decided) == 4 and len(set(decided)) == 4
