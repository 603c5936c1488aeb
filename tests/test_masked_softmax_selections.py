"""masked_selections_to_where's maps along a dim of a selection (``SELECTED_MAPS``): ListNet /
ListMLE written per query over the real items of a padded list, ``F.softmax(t[q][m[q]], 0) *
F.log_softmax(s[q][m[q]], 0)`` reduced, become dense forms: the deselected items filled with
-inf before the softmax, the result 0 there after it. Golden before/after, equivalence through
vectorize_loops (value, every gradient, dtype; float32 and float64; a query with no real item,
whose empty softmax sums to 0 as the original's; tied scores; NaN and inf where the mask excludes
and where it selects), the original's errors (integer scores), masks that keep the loop or fall
back (2-D masks, ``dtype=``)."""
from __future__ import annotations

import warnings

import pytest
import torch

from rewrite import optimize_loss
from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, normalise, strategies

DTYPES = [torch.float32, torch.float64]
PAD = -1

LISTNET = """
    def f(scores, labels):
        mask = labels != -1
        loss = 0
        for q in range(scores.shape[0]):
            s = scores[q][mask[q]]
            t = labels[q][mask[q]]
            loss = loss - (F.softmax(t, dim=0) * F.log_softmax(s, dim=0)).sum()
        return loss / scores.shape[0]
    """

LISTNET_GOLDEN = """
    def f(scores, labels):
        mask = labels != -1
        loss = 0
        _averaged = False
        _labels_stacked = _stack_items(tuple(labels)) if (type(labels) is list or (isinstance(labels, tuple) and type(labels).__getitem__ is tuple.__getitem__ and (type(labels).__iter__ is tuple.__iter__) and (type(labels).__len__ is tuple.__len__))) and len(labels) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == labels[0].shape and (_v.dtype == labels[0].dtype) and (_v.device == labels[0].device) for _v in labels)) else labels
        if isinstance(mask, torch.Tensor) and scores.shape[0] <= mask.shape[0] and isinstance(scores, torch.Tensor) and (scores.shape[0] <= scores.shape[0]) and isinstance(_labels_stacked, torch.Tensor) and (scores.shape[0] <= _labels_stacked.shape[0]) and isinstance(scores.shape[0], int) and (scores.shape[0] > 0):
            'optimize_loss: loop at line 4 vectorized'
            if mask.dim() >= 2 and scores.dim() == _labels_stacked.dim() and (_labels_stacked.dim() >= 2):
                _mask_row = mask if scores.shape[0] == mask.shape[0] else mask[0:scores.shape[0]:1]
                _scores_row = scores if scores.shape[0] == scores.shape[0] else scores[0:scores.shape[0]:1]
                _labels_row = _labels_stacked if scores.shape[0] == _labels_stacked.shape[0] else _labels_stacked[0:scores.shape[0]:1]
                _loss_part = 0
                _mask = _mask_row
                _keep = _mask.reshape(_mask.shape[:1] + _mask_shape[_mask.shape[1:], _scores_row.shape[1:]])
                s = torch.where(_keep, _scores_row, False)
                _mask_1 = _mask_row
                _keep_1 = _mask_1.reshape(_mask_1.shape[:1] + _mask_shape[_mask_1.shape[1:], _labels_row.shape[1:]])
                t = torch.where(_keep_1, _labels_row, False)
                _mask_2 = _mask_row
                _keep_2 = _mask_2.reshape(_mask_2.shape[:1] + _vector_mask[_mask_2.shape[1:], _labels_row.shape[1:], _scores_row.shape[1:]])
                _vals = t
                _vals_1 = s

                def _items_sum():
                    _t = torch.where(_keep_2, torch.where(_keep_2, F.softmax(torch.where(_keep_2, _vals, torch.full_like(_vals, -torch.inf)), dim=1), 0) * torch.where(_keep_2, F.log_softmax(torch.where(_keep_2, _vals_1, torch.full_like(_vals_1, -torch.inf)), dim=1), 0), 0)
                    return (_t.sum(tuple(range(1, _t.dim()))) if _t.dim() > 1 else _t.reshape(len(_t), -1).sum(1)).sum(0) / scores.shape[0]
                _loss_part = _loss_part - _summed_in_steps(torch.where(_keep_2, torch.where(_keep_2, F.softmax(torch.where(_keep_2, _vals, torch.full_like(_vals, -torch.inf)), dim=1), 0) * torch.where(_keep_2, F.log_softmax(torch.where(_keep_2, _vals_1, torch.full_like(_vals_1, -torch.inf)), dim=1), 0), 0).sum() / scores.shape[0], _items_sum)
                _outs = (_loss_part,)
            else:

                def _body(_mask_row, _scores_row, _labels_row):
                    _loss_part = 0
                    _mask = _mask_row
                    _keep = _mask.reshape(_mask_shape[_mask.shape, _scores_row.shape])
                    s = torch.where(_keep, _scores_row, False)
                    _mask_1 = _mask_row
                    _keep_1 = _mask_1.reshape(_mask_shape[_mask_1.shape, _labels_row.shape])
                    t = torch.where(_keep_1, _labels_row, False)
                    _mask_2 = _mask_row
                    _keep_2 = _mask_2.reshape(_vector_mask[_mask_2.shape, _labels_row.shape, _scores_row.shape])
                    _vals = t
                    _vals_1 = s
                    _loss_part = _loss_part - torch.where(_keep_2, torch.where(_keep_2, F.softmax(torch.where(_keep_2, _vals, torch.full_like(_vals, -torch.inf)), dim=0), 0) * torch.where(_keep_2, F.log_softmax(torch.where(_keep_2, _vals_1, torch.full_like(_vals_1, -torch.inf)), dim=0), 0), 0).sum()
                    return (torch.as_tensor(_loss_part),)
                _outs = _map_in_chunks(_body, in_dims=(0, 0, 0))(mask if scores.shape[0] == mask.shape[0] else mask[0:scores.shape[0]:1], scores if scores.shape[0] == scores.shape[0] else scores[0:scores.shape[0]:1], _labels_stacked if scores.shape[0] == _labels_stacked.shape[0] else _labels_stacked[0:scores.shape[0]:1])
                _outs = (_outs[0].sum(0) / scores.shape[0],)
            _averaged = True
            loss = _outs[0]
        else:
            for q in range(scores.shape[0]):
                s = scores[q][mask[q]]
                t = labels[q][mask[q]]
                loss = loss - (F.softmax(t, dim=0) * F.log_softmax(s, dim=0)).sum()
        return loss if _averaged else loss / scores.shape[0]
    """

SOURCES = {
    "names": LISTNET,
    # inline selections, torch's functions, dim=-1, a row index beside the mask
    "inline": """
        def f(scores, labels):
            valid = labels >= 0
            total = 0.0
            for q in range(len(scores)):
                p = torch.softmax(labels[q, valid[q]], 0)
                total = total - (p * torch.log_softmax(scores[q, valid[q]], -1)).sum()
            return total
        """,
    # methods, the mask bound in the body, a mean over the real items (ListMLE-like top term)
    "methods": """
        def f(scores, labels):
            out = []
            for q in range(scores.shape[0]):
                keep = labels[q] > -1
                logp = scores[q][keep].log_softmax(0)
                out.append(-(logp * labels[q][keep].softmax(dim=0)).sum() + logp.sum() * 0.1)
            return torch.stack(out).mean()
        """,
    # rows of features per item (a 1-D mask of rows), a softmax over the feature dim
    "rows": """
        def f(scores, labels):
            mask = labels != -1
            loss = 0
            for q in range(scores.shape[0]):
                x = scores[q][mask[q]]
                loss = loss + (F.softmax(x, dim=-1) * x).sum() + F.log_softmax(x, 0).sum()
            return loss
        """,
}


def inputs(dtype, Q=5, L=7, seed=0, rows=False, labels_grad=False):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(Q, L, *((3,) if rows else ()), generator=g, dtype=dtype)
    labels = torch.rand(Q, L, generator=g, dtype=dtype) * 4
    labels[torch.rand(Q, L, generator=g) < 0.3] = PAD
    labels[1] = PAD  # a query with no real item
    labels[2, :] = 2.0  # tied labels, all real
    scores[3, :3] = 0.5  # tied scores
    return scores.requires_grad_(), labels.requires_grad_(labels_grad)


def test_golden_listnet():
    _, _, code, report = build(LISTNET)
    assert code == normalise(LISTNET_GOLDEN), code
    assert report.loops[0].vectorized, report.loops[0].reason


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", SOURCES)
@pytest.mark.parametrize("labels_grad", [False, True])
def test_equivalent_with_an_empty_query_and_ties(name, dtype, labels_grad):
    original, rewritten, _, report = build(SOURCES[name])
    assert report.loops[0].vectorized, report.loops[0].reason
    assert_equivalent(original, rewritten,
                      *inputs(dtype, rows=name == "rows", labels_grad=labels_grad))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["padded", "real"])
def test_nan_and_inf_where_padded_stay_out_and_where_real_propagate(bad, where):
    original, rewritten, _, report = build(LISTNET)
    assert report.loops[0].vectorized, report.loops[0].reason
    scores, labels = inputs(torch.float64)
    scores = scores.detach()
    q, k = 0, int((labels[0] == PAD).nonzero()[0]) if where == "padded" else \
        int((labels[0] != PAD).nonzero()[0])
    scores[q, k] = bad
    assert_equivalent(original, rewritten, scores.requires_grad_(), labels)
    if where == "padded":
        g, = torch.autograd.grad(rewritten(scores, labels), scores)
        assert torch.isfinite(g).all()


def test_only_padded_queries_sum_to_zero():
    original, rewritten, _, report = build(SOURCES["inline"])
    assert report.loops[0].vectorized, report.loops[0].reason
    scores = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.full((3, 4), -1.0, dtype=torch.float64)
    assert_equivalent(original, rewritten, scores, labels)
    assert rewritten(scores, labels).item() == 0


def test_integer_scores_raise_as_the_original():
    original, rewritten, _, _ = build(LISTNET)
    scores = torch.randint(0, 5, (3, 4))
    labels = torch.ones(3, 4)
    for fn in (original, rewritten):
        with pytest.raises(RuntimeError):
            fn(scores, labels)


def test_a_mask_of_two_dims_runs_the_original():
    """``x[m]`` by a 2-D mask is 1-D: its softmax runs over both dims, which the dense form's
    does not; ``_vector_mask`` raises and the decorator runs the original."""
    def f(scores, labels):
        mask = labels != -1
        loss = 0
        for q in range(scores.shape[0]):
            loss = loss - torch.log_softmax(scores[q][mask[q]], 0).sum()
        return loss
    scores = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.randn(3, 4, 5, dtype=torch.float64).round()
    opt = optimize_loss(f, compile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_equivalent(f, opt, scores, labels)


@pytest.mark.parametrize("call", ["F.softmax(s, dim=0, dtype=torch.float64)",
                                  "F.softmax(s)", "torch.softmax(s, 0).cumsum(0)",
                                  # a softmax of no selection (a 0-d value): its dim is not one
                                  "s * F.softmax(scores.sum(), 0)"])
def test_maps_that_stay_selections(call):
    src = f"""
        def f(scores, labels):
            mask = labels != -1
            loss = 0
            for q in range(scores.shape[0]):
                s = scores[q][mask[q]]
                loss = loss + ({call}).sum()
            return loss
        """
    _, _, code, report = build(src)
    assert strategies(report) == {4: "kept"}
    assert "boolean mask indexing" in report.loops[0].reason
