"""A class's rows selected by its id and reduced, in a loop over the ids (prototypical networks'
``torch.stack([emb[target == i].mean(0) for i in range(n_way)])``), become one segment reduction
before the loop (``class_selections_to_segments``, ``class_segments.class_rows``): each row is
added once into its class's row, not once per class as the dense masked form did (slower than
the loop it replaced). Same values, gradients and dtypes: empty classes (sum 0, mean NaN),
labels outside the loop's ids, NaN/inf rows of another class, steps and reversed ranges; what
the helper does not take runs the loop as written; no host sync; Dynamo traces it whole."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from passes.class_segments import class_rows
from rewrite import optimize_loss
from rewrite.testing import assert_equivalent
from rewrite.tools.host_syncs import count_host_syncs
from tests.helpers import optimized_and_vectorized
from tests.loop_helpers import assert_golden, build

DTYPES = [torch.float32, torch.float64]

PROTOS = '''
def f(emb, target, n_way):
    protos = torch.stack([emb[target == i].mean(0) for i in range(n_way)])
    return protos
'''

# sums and counts through a mask name, by `eq` and `i == labels`, over every other id
SUMS = '''
def f(emb, labels, n):
    out = []
    for c in range(1, n, 2):
        m = labels.eq(c)
        out.append(emb[m].sum(0) * 2 + torch.sum(emb[c == labels], dim=0) / m.sum())
    return torch.stack(out)
'''

REVERSED = '''
def f(emb, labels, n):
    out = []
    for c in reversed(range(n)):
        out.append(emb[labels == c].mean(dim=0))
    return torch.stack(out)
'''

# the labels change in the loop; a max of the class's rows; a mask that is not `labels == c`
LABELS_CHANGED = '''
def f(emb, labels, n):
    out = []
    for c in range(n):
        labels = labels.clamp(max=n - 1)
        out.append(emb[labels == c].mean(0))
    return torch.stack(out)
'''
WRITTEN_INTO = LABELS_CHANGED.replace("labels = labels.clamp(max=n - 1)", "labels.clamp_(max=n - 1)")
MAX = PROTOS.replace(".mean(0)", ".amax(0)")
OTHER_MASK = PROTOS.replace("target == i", "target != i")


def test_prototypes_golden():
    assert_golden(PROTOS, '''
    def f(emb, target, n_way):
        _emb_mean = _class_rows(emb, target, 0, n_way, 1, 'mean')
        if _emb_mean is not None and isinstance(_emb_mean, torch.Tensor) and (n_way <= _emb_mean.shape[0]) and isinstance(n_way, int) and (n_way > 0) and (not _rounds_gradients(emb)):
            'optimize_loss: loop at line 2 vectorized'
            _emb_mean_row = _emb_mean if n_way == _emb_mean.shape[0] else _emb_mean[0:n_way:1]
            _items_item = _emb_mean_row
            _outs = (_items_item,)
            protos = _outs[0]
        else:
            protos = torch.stack([emb[target == i].mean(0) for i in range(n_way)])
        return protos
    ''', {2: "batched"})


@pytest.mark.parametrize("changed, expected", [(LABELS_CHANGED, "kept"), (WRITTEN_INTO, "kept"),
                                               (MAX, "kept"), (OTHER_MASK, "vmap")],
                         ids=["labels_changed", "written_into", "max", "other_mask"])
def test_what_is_not_a_class_reduction_keeps_its_form(changed, expected):
    """Next to the form taken (the labels fixed, a mean, ``== i``): no segments, as before."""
    fixed = LABELS_CHANGED.replace("        labels = labels.clamp(max=n - 1)\n", "")
    taken = {LABELS_CHANGED: fixed, WRITTEN_INTO: fixed, MAX: PROTOS, OTHER_MASK: PROTOS}[changed]
    assert "_class_rows(" in build(taken)[2]
    _, _, code, report = build(changed)
    assert "_class_rows" not in code
    assert [loop.strategy for loop in report.loops] == [expected]


def _labels(n_rows: int, n: int) -> torch.Tensor:
    """Ids 0..n-1 with class 2 empty, and rows labelled -1 and n + 3 (no iteration's id)."""
    labels = torch.arange(n_rows) % (n + 2) - 1
    labels[labels == 2] = n + 3
    return labels


def _rows(dtype: torch.dtype, labels: torch.Tensor, d: int = 3) -> torch.Tensor:
    """Random rows; NaN and inf in rows of class 3 and of ids outside the loop's."""
    emb = torch.randn(len(labels), d, dtype=dtype)
    emb[labels == -1] = float("inf")
    emb[(labels == 3).nonzero()[0], 0] = float("nan")
    emb[labels == labels.max()] = float("nan")
    return emb.requires_grad_()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("src", [PROTOS, SUMS, REVERSED], ids=["protos", "sums", "reversed"])
def test_same_values_gradients_and_dtypes(src, dtype):
    """Built without the runtime's fallback: the segment form itself is compared."""
    original, rewritten, code, report = build(src)
    assert "_class_rows(" in code and report.loops[0].strategy != "kept"
    labels = _labels(40, 7)
    assert_equivalent(original, rewritten, _rows(dtype, labels), labels, 7)
    assert_equivalent(original, rewritten, _rows(dtype, labels)[:, 0], labels, 7)  # 1-D rows
    assert_equivalent(original, rewritten, _rows(dtype, labels).reshape(8, 5, 3),
                      labels.reshape(8, 5), 7)  # 2-D labels: the selected rows flattened
    out = rewritten(_rows(dtype, labels), labels, 7)
    assert out.dtype == dtype and out.isnan().any()  # the empty and the NaN class


# over the items of a tensor of ids (`torch.unique`'s, or the caller's), through `enumerate` too
OVER_IDS = '''
def f(emb, labels, classes):
    protos = torch.stack([emb[labels == c].mean(0) for c in classes])
    return protos
'''
ENUMERATED = '''
def f(emb, labels, classes):
    out = []
    for k, c in enumerate(classes):
        out.append(emb[labels.eq(c)].sum(0) * k / (labels == c).sum())
    return torch.stack(out)
'''


def test_over_a_tensor_of_ids_golden():
    assert_golden(OVER_IDS, '''
    def f(emb, labels, classes):
        _emb_mean = _class_rows_at(emb, labels, classes, 'mean')
        _classes_stacked = _stack_items(tuple(classes)) if (type(classes) is list or (isinstance(classes, tuple) and type(classes).__getitem__ is tuple.__getitem__ and (type(classes).__iter__ is tuple.__iter__) and (type(classes).__len__ is tuple.__len__))) and len(classes) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == classes[0].shape and (_v.dtype == classes[0].dtype) and (_v.device == classes[0].device) for _v in classes)) else classes
        if _emb_mean is not None and isinstance(_emb_mean, torch.Tensor) and (len(_classes_stacked) <= _emb_mean.shape[0]) and isinstance(_classes_stacked, torch.Tensor) and (_classes_stacked.dim() > 0) and isinstance(len(_classes_stacked), int) and (len(_classes_stacked) > 0) and (not _rounds_gradients(emb)):
            'optimize_loss: loop at line 2 vectorized'
            _c = _classes_stacked
            _emb_mean_row = _emb_mean if len(_classes_stacked) == _emb_mean.shape[0] else _emb_mean[0:len(_classes_stacked):1]
            _items_item = _emb_mean_row
            _outs = (_items_item,)
            protos = _outs[0]
        else:
            protos = torch.stack([emb[labels == c].mean(0) for c in classes])
        return protos
    ''', {2: "batched"})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("src", [OVER_IDS, ENUMERATED], ids=["items", "enumerated"])
def test_over_a_tensor_of_ids_same_values_gradients_and_dtypes(src, dtype):
    """Ids unsorted, repeated, absent from the labels, negative, an empty class, and ids the
    labels' dtype wraps (an int8 label 44 equals the id 300, as `==` casts the 0-d id)."""
    original, rewritten, code, _ = build(src)
    assert "_class_rows_at(" in code
    labels = _labels(40, 7)
    classes = torch.tensor([5, 1, 1, 2, 40, -1, 0, 3, 6])
    for ids in (classes, classes.int()):
        assert_equivalent(original, rewritten, _rows(dtype, labels), labels, ids)
    wrapped = labels.to(torch.int8)
    wrapped[:5] = 44
    assert_equivalent(original, rewritten, _rows(dtype, labels), wrapped, torch.tensor([300, 2, 44]))
    assert (wrapped == torch.tensor(300)).sum() == 5  # the original's class 300: the rows of 44


def test_integer_and_half_rows_keep_the_originals_dtypes():
    original, rewritten, code, _ = build(SUMS)
    assert "_class_rows(" in code
    labels = _labels(40, 7)
    ints = torch.randint(-5, 5, (40, 3), dtype=torch.int32)
    assert rewritten(ints, labels, 7).dtype == original(ints, labels, 7).dtype
    assert torch.equal(rewritten(ints, labels, 7), original(ints, labels, 7))
    half = torch.randn(40, 3).to(torch.bfloat16).requires_grad_()
    assert_equivalent(original, rewritten, half, labels, 7, rtol=2e-2, atol=2e-2)


def test_what_the_helper_does_not_take_runs_as_written():
    """Float labels, ids an int8 cannot hold (the original's `==` compares wrapped ints), a mean
    of integers (the original's RuntimeError)."""
    original, rewritten, _, _ = build(PROTOS)
    labels = _labels(40, 7)
    emb = torch.randn(40, 3)
    assert class_rows(emb, labels.float(), 0, 7, 1, "mean") is None
    torch.testing.assert_close(rewritten(emb, labels.float(), 7), original(emb, labels.float(), 7),
                               equal_nan=True)
    wrapped = labels.to(torch.int8)
    assert class_rows(emb, wrapped, 0, 300, 1, "mean") is None
    torch.testing.assert_close(rewritten(emb, wrapped, 300), original(emb, wrapped, 300),
                               equal_nan=True)
    with pytest.raises(RuntimeError):
        original(emb.long(), labels, 7)
    with pytest.raises(RuntimeError):
        rewritten(emb.long(), labels, 7)


def test_no_warning_no_host_sync_and_dynamo_traces_it_whole():
    _, rewritten, code, _ = build(PROTOS)
    assert "_class_rows(" in code
    labels = _labels(40, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rewritten(_rows(torch.float32, labels), labels, 7).nansum().backward()
    assert not count_host_syncs(rewritten, _rows(torch.float32, labels), labels, 7)
    torch.compiler.reset()
    compiled = torch.compile(rewritten, backend="eager", fullgraph=True)
    emb = _rows(torch.float64, labels)
    torch.testing.assert_close(compiled(emb, labels, 7), rewritten(emb, labels, 7), equal_nan=True)


def protos_only(emb, target, n_way=20):
    protos = torch.stack([emb[target == i].mean(0) for i in range(n_way)])
    return protos.pow(2).sum()


def proto_loss(emb, target, n_way=20):
    protos = torch.stack([emb[target == i].mean(0) for i in range(n_way)])
    d = torch.cdist(emb, protos)
    return F.nll_loss((-d).log_softmax(dim=1), target)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", [protos_only, proto_loss])
def test_prototypical_losses_end_to_end(fn, dtype):
    """The trial's losses (a paraphrase of maods2/research-retrieval's prototypical loss):
    vectorized, each call's loop in the batched segment form."""
    g = torch.Generator().manual_seed(0)
    target = torch.arange(20).repeat_interleave(5)[torch.randperm(100, generator=g)]
    emb = torch.randn(100, 16, generator=g, dtype=dtype, requires_grad=True)
    opt = optimized_and_vectorized(fn, emb, target)
    assert [loop.strategy for loop in opt.report.loops] == ["batched"]


def test_under_torch_compile():
    g = torch.Generator().manual_seed(1)
    target = torch.arange(20).repeat_interleave(3)
    emb = torch.randn(60, 8, generator=g, dtype=torch.float64, requires_grad=True)
    opt = optimize_loss(proto_loss, compile=True, backend="aot_eager", strict=True)
    assert_equivalent(proto_loss, opt, emb, target)
    assert [(loop.strategy, loop.vectorized_runs > 0) for loop in opt.report.loops] == [
        ("batched", True)]
