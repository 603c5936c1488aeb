"""length_masks_to_compares: a padding mask filled with 0 or 1 right before a loop that writes the
other number past (or before) each row's length becomes one comparison of positions with the
lengths, written into the mask. Golden before/after and forms left to the other stages;
behaviour: value, every gradient and dtype equal the original's (float32, float64, bool and
float16 masks), negative lengths and lengths past the end read as Python slices them, rows
fewer than the mask's, lengths that are not 1-D integer tensors run the loop as written (its
errors included)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from passes.row_lengths import row_lengths
from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, dedent, rewrite_source

MASK = """
    def f(x, lengths):
        B, C, T = x.shape
        mask = x.new_ones((B, 1, T))
        for i in range(B):
            mask[i, :, lengths[i]:] = 0
        return (x * mask).sum(), mask
    """


def test_golden_tail_write_into_a_filled_mask_is_one_comparison():
    code, report = rewrite_source(MASK)
    assert code + "\n" == dedent("""
        def f(x, lengths):
            B, C, T = x.shape
            mask = x.new_ones((B, 1, T))
            if isinstance(B, int) and B > 0 and (_row_lengths(lengths) is not None) and (B <= lengths.shape[0]) and isinstance(mask, torch.Tensor) and (_row_lengths(lengths).device == mask.device) and (not mask.is_complex()) and (mask.dim() >= 3) and (B <= mask.shape[0]):
                'optimize_loss: loop at line 4 vectorized'
                _rows = mask if B == mask.shape[0] else mask[0:B]
                _lengths = _row_lengths(lengths) if B == lengths.shape[0] else _row_lengths(lengths)[0:B]
                _d = mask.dtype if mask.dtype in (torch.float32, torch.float64) and mask.shape[2] <= 16777216 else torch.int64
                _pos = torch.arange(mask.shape[2], dtype=_d, device=mask.device).reshape((-1,) + (1,) * (mask.dim() - 2 - 1))
                _bound = (_lengths + mask.shape[2] * (_lengths < 0)).to(_d).reshape((-1,) + (1,) * (mask.dim() - 1))
                torch.lt(_pos.expand(_rows.shape), _bound, out=_rows)
            else:
                for i in range(B):
                    mask[i, :, lengths[i]:] = 0
            return ((x * mask).sum(), mask)
        """)
    [loop] = report.loops
    assert loop.vectorized and loop.strategy == "batched", loop
    assert "`mask` filled with 1 before the loop, 0 written past each row's length" in loop.reason


HEAD = """
    def f(x, lengths):
        mask = torch.zeros(x.shape[0], x.shape[1], dtype=torch.bool)
        for i, n in enumerate(lengths):
            mask[i, :n].fill_(True)
        return x[mask].sum(), mask
    """


def test_golden_head_fill_over_enumerate_compares_below_the_lengths():
    code, report = rewrite_source(HEAD)
    assert code + "\n" == dedent("""
        def f(x, lengths):
            mask = torch.zeros(x.shape[0], x.shape[1], dtype=torch.bool)
            if isinstance(lengths, torch.Tensor) and lengths.dim() == 1 and (lengths.shape[0] > 0) and isinstance(mask, torch.Tensor) and (_row_lengths(lengths) is not None) and (_row_lengths(lengths).device == mask.device) and (not mask.is_complex()) and (mask.dim() >= 2) and (lengths.shape[0] <= mask.shape[0]):
                'optimize_loss: loop at line 3 vectorized'
                _rows = mask if lengths.shape[0] == mask.shape[0] else mask[0:lengths.shape[0]]
                _d = mask.dtype if mask.dtype in (torch.float32, torch.float64) and mask.shape[1] <= 16777216 else torch.int64
                _pos = torch.arange(mask.shape[1], dtype=_d, device=mask.device).reshape((-1,) + (1,) * (mask.dim() - 1 - 1))
                _bound = (lengths + mask.shape[1] * (lengths < 0)).to(_d).reshape((-1,) + (1,) * (mask.dim() - 1))
                torch.lt(_pos.expand(_rows.shape), _bound, out=_rows)
            else:
                for i, n in enumerate(lengths):
                    mask[i, :n].fill_(True)
            return (x[mask].sum(), mask)
        """)
    assert report.loops[0].strategy == "batched", report.loops[0]


@pytest.mark.parametrize("change", [
    ("mask = x.new_ones((B, 1, T))", "mask = x.new_ones((B, 1, T))\n        mask[0] = 2"),  # written
    ("mask = x.new_ones((B, 1, T))", "mask = x.new_ones((B, 1, T)) * 2"),  # not a constructor
    ("mask = x.new_ones((B, 1, T))", "mask = x.new_ones((B, 1, T), requires_grad=True)"),
    ("mask = x.new_ones((B, 1, T))", "ones = x.new_full\n        mask = ones((B, 1, T), 2.0)"),
    ("mask[i, :, lengths[i]:] = 0", "mask[i, :, lengths[i]:] = 1"),  # the fill itself
    ("mask[i, :, lengths[i]:] = 0", "mask[i, :, lengths[i]:] = 0.5"),
    ("mask[i, :, lengths[i]:] = 0", "mask[i, :, lengths[i]:lengths[i] + 3] = 0"),  # two bounds
    ("mask[i, :, lengths[i]:] = 0", "mask[i, 0, lengths[i]:] = 0"),  # an index after the row's
])
def test_golden_other_forms_are_left_to_the_stages(change):
    code, report = rewrite_source(MASK.replace(*change))
    assert "out=_rows" not in code
    assert not report.loops or "filled with" not in report.loops[0].reason


def mask_inputs(dtype, lengths):
    x = torch.randn(len(lengths), 2, 7, dtype=dtype, generator=torch.Generator().manual_seed(3))
    return x.requires_grad_(), torch.tensor(lengths)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("lengths", [[7, 3, 0, 5], [-2, 9, -9, 7], [1, -7, -8, 100]])
def test_tail_write_equivalent_value_gradients_dtype(dtype, lengths):
    original, optimized, code, _ = build(MASK)
    assert "out=_rows" in code
    assert_equivalent(original, optimized, *mask_inputs(dtype, lengths))
    want, got = original(*mask_inputs(dtype, lengths))[1], optimized(*mask_inputs(dtype, lengths))[1]
    assert got.dtype == want.dtype and torch.equal(got, want)


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float16, torch.int64, torch.float32])
@pytest.mark.parametrize("write", ["mask[i, :n] = 1", "mask[i, n:].fill_(0)"])
def test_head_and_tail_writes_over_enumerate_every_mask_dtype(mask_dtype, write):
    fill = "zeros" if write.endswith("1") else "ones"
    src = f"""
        def f(x, lengths):
            mask = torch.{fill}(x.shape[0] + 1, x.shape[1], 2, dtype=dtype)
            for i, n in enumerate(lengths):
                {write}
            return mask
        """
    original, optimized, code, _ = build(src)
    assert "out=_rows" in code
    x = torch.zeros(3, 6)
    for lengths in ([2, 6, 0], [-1, 8, -7], [4]):
        for ns_fn in (original, optimized):
            ns_fn.__globals__["dtype"] = mask_dtype
        want, got = original(x, torch.tensor(lengths)), optimized(x, torch.tensor(lengths))
        assert got.dtype == want.dtype and torch.equal(got, want), (lengths, got, want)


@pytest.mark.parametrize("lengths", [torch.tensor([2.0, 3.0, 1.0, 4.0]),  # not an index: raises
                                     torch.tensor([[2], [3], [1], [4]]),  # a row per item
                                     [2, 3, 1, 4]])                       # a list
def test_lengths_not_a_1d_integer_tensor_run_the_loop_as_written(lengths):
    _same_as_the_original(lengths)


def _same_as_the_original(lengths) -> None:
    """MASK's rewrite with ``lengths`` gives the original's mask, or raises its error type."""
    original, optimized, _, _ = build(MASK)
    x = torch.randn(4, 2, 7)
    try:
        want = original(x, lengths)
    except Exception as exc:  # noqa: BLE001 - the same error, whatever it is
        with pytest.raises(type(exc)):
            optimized(x, lengths)
        return
    assert torch.equal(optimized(x, lengths)[1], want[1])


CHAINED = """
    def f(x, lengths):
        mask = torch.zeros(x.shape[0], x.shape[1])
        for i in range(len(lengths)):
            mask[i][:lengths[i]] = 1
        return (x * mask).sum(), mask
    """


def test_golden_chained_row_write_is_one_comparison():
    # the row ``mask[i]`` a view of the tensor written through: ``mask[i, :lengths[i]] = 1``
    code, report = rewrite_source(CHAINED)
    assert "torch.lt(_pos.expand(_rows.shape), _bound, out=_rows)" in code
    assert code.endswith("else:\n        for i in range(len(lengths)):\n"
                         "            mask[i][:lengths[i]] = 1\n    return ((x * mask).sum(), mask)")
    [loop] = report.loops
    assert loop.vectorized and loop.strategy == "batched", loop
    assert "`mask` filled with 0 before the loop, 1 written before each row's length" in loop.reason


def test_golden_chained_write_at_another_row_is_left_to_the_stages():
    code, _ = rewrite_source(CHAINED.replace("mask[i][:lengths[i]]", "mask[0][:lengths[i]]"))
    assert "out=_rows" not in code


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("lengths", [[7, 3, 0, 5], [-2, 9, -9, 7], [1, -7]])
def test_chained_row_write_equivalent_value_gradients_dtype(dtype, lengths):
    original, optimized, code, _ = build(CHAINED)
    assert "out=_rows" in code
    x = torch.randn(4, 7, dtype=dtype, generator=torch.Generator().manual_seed(3)).requires_grad_()
    assert_equivalent(original, optimized, x, torch.tensor(lengths))
    want, got = original(x, torch.tensor(lengths))[1], optimized(x, torch.tensor(lengths))[1]
    assert got.dtype == want.dtype and torch.equal(got, want)


NUMPY = """
    def f(x, seq_len):
        lengths = seq_len.detach().cpu().numpy()
        mask = torch.zeros(len(lengths), x.shape[1])
        for i in range(len(lengths)):
            mask[i][:lengths[i]] = 1
        return (x * mask).sum(), mask
    """


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("lengths", [[7, 3, 0, 5], [-2, 9, -9, 7]])
def test_numpy_lengths_over_range_are_one_comparison(dtype, lengths):
    # a seq2seq sequence_mask: the lengths moved to the host as a numpy array
    original, optimized, code, report = build(NUMPY)
    x = torch.randn(4, 7, dtype=dtype, generator=torch.Generator().manual_seed(3)).requires_grad_()
    for seq_len in (torch.tensor(lengths), torch.tensor(lengths, dtype=torch.int32)):
        assert_equivalent(original, optimized, x, seq_len)
        want, got = original(x, seq_len)[1], optimized(x, seq_len)[1]
        assert got.dtype == want.dtype and torch.equal(got, want)
    assert "_row_lengths(lengths)" in code
    # the check takes the host's lengths
    assert torch.equal(row_lengths(torch.tensor(lengths).numpy()), torch.tensor(lengths))


@pytest.mark.parametrize("lengths", [np.array([2, 3, 1, 4], dtype=np.uint8),  # unsigned
                                     np.array([2, 3, 1, 4], dtype=">i8"),     # not native
                                     np.array([2.0, 3.0, 1.0, 4.0]),          # not an index
                                     np.array([[2], [3], [1], [4]])])         # a row per item
def test_other_numpy_lengths_run_the_loop_as_written(lengths):
    _same_as_the_original(lengths)
    assert row_lengths(lengths) is None  # the check refuses them


def test_real_get_mask_is_one_comparison_and_equivalent():
    from examples.real import sep_sisnr_pit_mask as m
    import rewrite
    fn = rewrite.optimize_loss(m.naive, compile=False)
    for dtype in (torch.float32, torch.float64):
        inputs = m.make_inputs("small", dtype)
        assert_equivalent(m.naive, fn, *inputs)
    [loop] = [loop for loop in fn.report.loops if loop.lineno == 28]
    assert loop.strategy == "batched" and loop.vectorized_runs > 0, loop
