"""ragged_slices_to_masks: slices with per-iteration bounds (`x[i, :L]`, `L = lengths[i].item()`,
`x[i][a:b]`) become selections by a position mask that masked_selections_to_where turns into
masked dense ops. Behaviour: value, every gradient and dtype equal the original's (float32 and
float64), negative bounds and bounds past the end read as Python slices them, empty slices
(NaN mean, the error of max), ties, NaN/inf in the padding never reaching a gradient; forms
left as written keep the loop with the slice-bound reason; run-time counts."""
from __future__ import annotations

import pytest
import torch

import rewrite
from passes.loops import ragged_slices_to_masks
from rewrite.testing import assert_equivalent
from tests.helpers import load_module
from tests.loop_helpers import dedent, finite_grads
from tests.loop_stage_helpers import plan_before, show
from tests.test_masked_selections_to_where import build  # sees the names the pass binds

CASES = {
    "item_length": """
        def f(x, lengths):
            loss = 0
            for i in range(x.shape[0]):
                L = lengths[i].item()
                loss = loss + x[i, :L].pow(2).sum() / max(L, 1)
            return loss
        """,
    "tensor_bound_rows_and_max": """
        def f(x, lengths):
            loss = 0
            for i in range(x.shape[0]):
                loss = loss + x[i, :lengths[i]].abs().mean().nan_to_num() + x[i][:lengths[i] + 1].amax()
            return loss
        """,
    "both_bounds_python_reading": """
        def f(x, lengths):
            loss = 0
            for i in range(x.shape[0]):
                loss = loss + (x[i][lengths[i] - 4:] * 2).sum() + x[i, lengths[i]:].sum() \
                    + x[i][1 - lengths[i]:lengths[i]].sum()
            return loss
        """,
}


def inputs(dtype, seed, rank=2):
    g = torch.Generator().manual_seed(seed)
    shape = (5, 6) if rank == 2 else (5, 6, 3)
    x = torch.randn(*shape, generator=g, dtype=dtype)
    x[1, 2] = x[1, 0]                                 # a tie inside the slice
    lengths = torch.tensor([3, 6, -2, 9, 1])          # negative and past the end
    for k, n in enumerate(lengths.tolist()):          # padding NaN/inf: never read
        if 0 <= n < 5:
            x[k, n + 1:] = float("nan") if k % 2 else float("inf")
    return x.requires_grad_(), lengths


@pytest.mark.parametrize("rank", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", CASES)
def test_equivalent_value_gradients_dtype(name, dtype, rank):
    original, optimized, code, report = build(CASES[name])
    assert report.loops[0].vectorized, report.loops[0].reason
    args = inputs(dtype, 0, rank)
    if name != "tensor_bound_rows_and_max":
        args = (args[0].detach().nan_to_num(0.0, 0.0, 0.0).requires_grad_(), args[1])
    assert_equivalent(original, optimized, *args)
    if finite_grads(original, *args):
        assert finite_grads(optimized, *args), code


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_rows_reduced_along_another_dim(dtype):
    """Each kept row reduced along its features (``OpSpec.along_dim``): the padding's NaN and
    inf stay out of the values and gradients, as the original never reads them."""
    original, optimized, code, report = build("""
        def f(x, lengths):
            loss = 0
            for i in range(x.shape[0]):
                L = lengths[i].item()
                loss = loss + x[i, :L].pow(2).sum(1).sqrt().sum() + x[i, :L].amax(-1).mean()
            return loss
        """)
    assert report.loops[0].vectorized, report.loops[0].reason
    args = inputs(dtype, 0, rank=3)
    args = (args[0], args[1].clamp(min=1))  # no empty row: its mean is NaN
    assert_equivalent(original, optimized, *args)
    assert finite_grads(original, *args) and finite_grads(optimized, *args), code


def test_max_of_an_empty_slice_raises_the_original_error():
    original, optimized, _, _ = build("""
        def f(x, lengths):
            s = 0
            for i in range(x.shape[0]):
                s = s + x[i, :lengths[i]].max()
            return s
        """)
    x, lengths = torch.randn(3, 4), torch.tensor([2, 0, 4])
    with pytest.raises(RuntimeError) as want:
        original(x, lengths)
    with pytest.raises(RuntimeError) as got:
        optimized(x, lengths)
    assert str(want.value) == str(got.value)


@pytest.mark.parametrize("body", [
    "loss = loss + torch.nn.functional.mse_loss(x[i, :L], x[i, :L] * 0, reduction='none').sum()",  # no dense form
    "loss = loss + x[i, :L].cumsum(1).sum()",                              # along another dim
    "loss = loss + x[i, :L:2].sum()",                                      # a step
    "loss = loss + x[i, 1:, :L].sum()",                                    # not the row's first dim
])
def test_unconverted_forms_keep_the_loop_with_the_slice_bound_reason(body):
    original, optimized, _, report = build(f"""
        def f(x, lengths):
            loss = 0
            for i in range(x.shape[0]):
                L = lengths[i].item()
                {body}
            return loss
        """)
    assert not report.loops[0].vectorized
    assert "slice bound" in report.loops[0].reason and "varies per iteration" in \
        report.loops[0].reason, report.loops[0].reason
    x, lengths = inputs(torch.float64, 0, 3)
    assert_equivalent(original, optimized, x.detach().nan_to_num(0.0, 0.0, 0.0), lengths.clamp(2, 5))


@pytest.mark.parametrize("block, same", [
    ("r[i * k:(i + 1) * k, i * k:(i + 1) * k]", True),    # Smooth-AP's per-class diagonal block
    ("r[4 * i:4 * i + 4, i:i + 2]", True),                # two moving slices (one is a window)
    ("r[i * k:L]", False),                               # L varies: the size differs too
    ("r[:L]", False),
])
def test_a_slice_at_a_moving_position_says_whether_its_size_varies(block, same):
    _, _, _, report = build(f"""
        def f(r, p, lengths, k):
            ap = 0
            for i in range(p.shape[0]):
                L = lengths[i].item()
                ap = ap + torch.sum(p[i] / {block})
            return ap
        """)
    reason = report.loops[0].reason
    assert not report.loops[0].vectorized and "slice bound" in reason
    assert ("though its size is the same" in reason) == same, reason
    assert ("the slice's size would differ" in reason) != same, reason


def test_vectorized_branch_runs(tmp_path):
    module = load_module(tmp_path, "import torch\n\n\n" + dedent(CASES["item_length"]))
    fn = rewrite.optimize_loss(module.f, compile=False)
    for dtype in (torch.float32, torch.float64):
        x, lengths = inputs(dtype, 1)
        assert_equivalent(module.f, fn, x.detach().nan_to_num(0.0, 0.0, 0.0).requires_grad_(),
                          lengths)
    loop = fn.report.loops[0]
    assert loop.vectorized and loop.vectorized_runs > 0 and loop.original_runs == 0, loop
    assert not fn.report.fallbacks


WRITE = """
    def f(x, lengths):
        out = x * 1
        for i in range(x.shape[0]):
            out[i, :, lengths[i]:] = 0
        return (out ** 2).sum()
    """


def test_golden_write_of_a_number_past_the_lengths():
    plan, ctx = plan_before(WRITE, ragged_slices_to_masks)
    assert show(ragged_slices_to_masks.stage(plan, ctx), ("body",)) == dedent("""
        # body
        _pos = torch.arange(out[i].shape[1], device=out[i].device).reshape((-1,) + (1,) * (out[i].dim() - 1 - 1))
        _in = _pos >= _slice_bound(lengths[i]) + out[i].shape[1] * (_slice_bound(lengths[i]) < 0)
        out[i] = torch.where(_in, 0, out[i])
        """)


@pytest.mark.parametrize("write", [
    "out[i, :, lengths[i]:] = x[i, :, 0]",   # not a number: its shape follows the slice's
    "out[i, :, 0, lengths[i]:] = 0",         # an index after a slice
])
def test_golden_writes_left_as_written(write):
    src = WRITE.replace("out[i, :, lengths[i]:] = 0", write)
    plan, ctx = plan_before(src, ragged_slices_to_masks)
    before = show(plan, ("body",))
    assert show(ragged_slices_to_masks.stage(plan, ctx), ("body",)) == before


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_write_equivalent_value_gradients_dtype(dtype):
    original, optimized, _, report = build(WRITE)
    assert report.loops[0].vectorized, report.loops[0].reason
    x = torch.randn(5, 2, 6, dtype=dtype, generator=torch.Generator().manual_seed(2))
    assert_equivalent(original, optimized, x.requires_grad_(), torch.tensor([3, 6, -2, 9, 0]))


FILL = """
    def f(scores, lengths):
        mask = torch.zeros(scores.shape[0], scores.shape[1])
        for i in range(scores.shape[0]):
            mask[i, :lengths[i]].fill_(1)
        return (scores * mask).sum() / mask.sum()
    """


def test_golden_fill_of_a_ragged_slice_is_a_masked_row_write():
    plan, ctx = plan_before(FILL, ragged_slices_to_masks)
    assert show(ragged_slices_to_masks.stage(plan, ctx), ("body",)) == dedent("""
        # body
        _pos = torch.arange(mask[i].shape[0], device=mask[i].device).reshape((-1,) + (1,) * (mask[i].dim() - 0 - 1))
        _in = _pos < _slice_bound(lengths[i]) + mask[i].shape[0] * (_slice_bound(lengths[i]) < 0)
        mask[i] = torch.where(_in, 1, mask[i])
        """)
    plan, ctx = plan_before(FILL.replace("fill_(1)", "fill_(scores[i, 0])"), ragged_slices_to_masks)
    before = show(plan, ("body",))
    assert show(ragged_slices_to_masks.stage(plan, ctx), ("body",)) == before  # not a number


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_fill_equivalent_value_gradients_dtype(dtype):
    original, optimized, _, report = build(FILL)
    assert report.loops[0].vectorized, report.loops[0].reason
    scores = torch.randn(4, 6, dtype=dtype, generator=torch.Generator().manual_seed(3))
    assert_equivalent(original, optimized, scores.requires_grad_(), torch.tensor([6, 2, -1, 9]))


BOX = """
    def f(att, in_lens, out_lens):
        mask = torch.zeros_like(att, dtype=torch.bool)
        for b in range(att.shape[0]):
            mask[b, :out_lens[b], :in_lens[b]] = True
        return att.masked_select(mask).mean()
    """


def test_golden_write_of_a_box_by_two_lengths():
    plan, ctx = plan_before(BOX, ragged_slices_to_masks)
    assert show(ragged_slices_to_masks.stage(plan, ctx), ("body",)) == dedent("""
        # body
        _pos = torch.arange(mask[b].shape[0], device=mask[b].device).reshape((-1,) + (1,) * (mask[b].dim() - 0 - 1))
        _in = _pos < _slice_bound(out_lens[b]) + mask[b].shape[0] * (_slice_bound(out_lens[b]) < 0)
        _pos_1 = torch.arange(mask[b].shape[1], device=mask[b].device).reshape((-1,) + (1,) * (mask[b].dim() - 1 - 1))
        _in_1 = _pos_1 < _slice_bound(in_lens[b]) + mask[b].shape[1] * (_slice_bound(in_lens[b]) < 0)
        _in_2 = _in & _in_1
        mask[b] = torch.where(_in_2, True, mask[b])
        """)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_box_write_equivalent_value_gradients_dtype(dtype):
    original, optimized, _, report = build(BOX)
    assert report.loops[0].vectorized, report.loops[0].reason
    att = torch.rand(4, 9, 7, dtype=dtype, generator=torch.Generator().manual_seed(4))
    assert_equivalent(original, optimized, att.requires_grad_(), torch.tensor([7, 5, 3, 6]),
                      torch.tensor([9, 4, 8, -2]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_write_along_the_rows_first_dim_masks_whole_rows_of_it(dtype):
    # the row's positions along its first dim are a column: against a square row they were
    # once compared along its last dim, a wrong value with no error
    original, optimized, _, report = build(WRITE.replace("out[i, :, lengths[i]:]",
                                                         "out[i, lengths[i]:]"))
    assert report.loops[0].vectorized, report.loops[0].reason
    x = torch.randn(3, 4, 4, dtype=dtype, generator=torch.Generator().manual_seed(5))
    assert_equivalent(original, optimized, x.requires_grad_(), torch.tensor([1, 2, 3]))


@pytest.mark.parametrize("body", [
    "out = x.clone()\n    for i in range(x.shape[0]):\n        out[i, L[i]:] = 0\n    return out",
    "s = 0\n    for i in range(x.shape[0]):\n        s = s + x[i, :L[i]].sum()\n    return s",
    "s = 0\n    for i in range(x.shape[0]):\n        n = L[i].item()\n"
    "        s = s + x[i, :n].sum()\n    return s",
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.int32],
                         ids=str)
def test_float_lengths_raise_the_original_type_error(tmp_path, body, dtype):
    """A slice bound that is a float (a float tensor's item, a float tensor) raises TypeError as
    written; the masks would compare it as a number and return a value."""
    fn = load_module(tmp_path, f"import torch\n\ndef f(x, L):\n    {body}\n").f
    fast = rewrite.optimize_loss(fn, compile=False)
    x, lengths = torch.randn(4, 6), torch.tensor([2, 6, 0, 3]).to(dtype)
    if dtype.is_floating_point:
        with pytest.raises(TypeError) as want:
            fn(x, lengths)
        with pytest.raises(TypeError) as got:
            fast(x, lengths)
        assert str(got.value) == str(want.value)
    else:
        assert_equivalent(fn, fast, x, lengths)
        assert fast.report.loops[0].vectorized_runs == 1, str(fast.report.loops[0])
