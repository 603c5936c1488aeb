"""check_mapped_body: an op's size argument (``OpSpec.sizes``: a repeat count, an ``arange`` end,
a window length, a shape of ``zeros``/``view``/``expand``) that varies per iteration keeps the
loop as written, with the reason at the user's line: under vmap the size is a tensor, which the op
cannot take, so the vmap form would raise on every call and the original would run with a
warning. Behaviour: value, every gradient and dtype (float32 and float64) equal the original's,
with no warning; a size that is the same in every iteration stays vectorized."""
from __future__ import annotations

import warnings

import pytest
import torch

import rewrite
from rewrite.testing import assert_equivalent
from tests.helpers import load_module
from tests.loop_helpers import dedent

# name -> (source, the call quoted in the reason, the size quoted)
KEPT = {
    "repeat_count": ("""
        def f(x, lens):
            out = 0
            for i in range(x.shape[0]):
                out = out + x[i].repeat(lens[i], 1).sum()
            return out
        """, "x[i].repeat(lens[i], 1)", "lens[i]"),
    "arange_end": ("""
        def f(x, lens):
            out = 0
            for i in range(x.shape[0]):
                w = torch.arange(lens[i], dtype=x.dtype)
                out = out + (x[i, :1] * w).sum()
            return out
        """, "torch.arange(lens[i], dtype=x.dtype)", "lens[i]"),
    "zeros_of_an_int": ("""
        def f(x, lens):
            out = 0
            for i in range(x.shape[0]):
                n = int(lens[i])
                out = out + (torch.zeros(n, dtype=x.dtype) + x[i, 0]).sum()
            return out
        """, "torch.zeros(n, dtype=x.dtype)", "n"),
    "view_rows": ("""
        def f(x, rows):
            out = 0
            for i in range(x.shape[0]):
                out = out + x[i].view(rows[i], -1).sum(1).pow(2).sum()
            return out
        """, "x[i].view(rows[i], -1)", "rows[i]"),
    "expand_keyword": ("""
        def f(x, lens):
            out = 0
            for i in range(x.shape[0]):
                out = out + x[i].expand(size=(lens[i], x.shape[1])).sum()
            return out
        """, "x[i].expand(size=(lens[i], x.shape[1]))", "(lens[i], x.shape[1])"),
    "window_from_tensor_scales": ("""
        def f(x, y, scales):
            loss = 0
            for s in scales:
                n_fft = int(s) * 4
                window = torch.hann_window(n_fft, dtype=x.dtype)
                xs = torch.stft(x, n_fft, int(s), window=window, return_complex=True).abs()
                ys = torch.stft(y, n_fft, int(s), window=window, return_complex=True).abs()
                loss += (xs - ys).abs().mean()
            return loss / len(scales)
        """, "torch.hann_window(n_fft, dtype=x.dtype)", "n_fft"),
    "ragged_repeats_appended": ("""
        def f(anchor, other, lens):
            anchors = []
            for i in range(len(lens)):
                anchors.append(anchor[i, :].repeat(lens[i], 1))
            anchors = torch.cat(anchors)
            return (torch.cosine_similarity(anchors, other) * 20).logsumexp(0)
        """, "anchor[i, :].repeat(lens[i], 1)", "lens[i]"),
}


def inputs(name: str, dtype: torch.dtype) -> tuple:
    g = torch.Generator().manual_seed(0)
    if name == "window_from_tensor_scales":
        x, y = (torch.randn(2, 512, generator=g, dtype=dtype) for _ in range(2))
        return x.requires_grad_(), y, torch.tensor([8, 16, 32])
    lens = torch.tensor([1, 3, 2, 5, 4])
    if name == "view_rows":
        return torch.randn(5, 12, generator=g, dtype=dtype).requires_grad_(), \
            torch.tensor([2, 3, 4, 6, 12])
    if name == "ragged_repeats_appended":
        other = torch.randn(int(lens.sum()), 8, generator=g, dtype=dtype)
        return torch.randn(5, 8, generator=g, dtype=dtype).requires_grad_(), other, lens
    return torch.randn(5, 8, generator=g, dtype=dtype).requires_grad_(), lens


def optimized(tmp_path, src: str):
    module = load_module(tmp_path, "import torch\n\n\n" + dedent(src))
    return module.f, rewrite.optimize_loss(module.f, compile=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", KEPT)
def test_a_size_varying_per_iteration_keeps_the_loop_with_no_warning(tmp_path, name, dtype):
    src, call, size = KEPT[name]
    original, fn = optimized(tmp_path, src)
    with warnings.catch_warnings():  # the old vmap form raised: the original ran, with a warning
        warnings.simplefilter("error")
        assert_equivalent(original, fn, *inputs(name, dtype))
        assert fn(*inputs(name, dtype)).dtype == original(*inputs(name, dtype)).dtype == dtype
    loop = fn.report.loops[0]
    assert not loop.vectorized and loop.failed_runs == 0 and not fn.report.fallbacks, loop
    line = dedent(src).splitlines().index(next(
        s for s in dedent(src).splitlines() if call in s)) + 1 + 3  # the module's import lines
    assert loop.reason.startswith(f"`{call}`: a size that varies per iteration (`{size}`, "
                                  f"line {line}): "), loop.reason


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_size_the_same_in_every_iteration_stays_vectorized(tmp_path, dtype):
    original, fn = optimized(tmp_path, """
        def f(x, n, k):
            out = 0
            for i in range(x.shape[0]):
                out = out + x[i].repeat(n, 1).view(k, -1).expand(2, -1, -1).sum() \\
                    + torch.arange(x.shape[1], dtype=x.dtype).dot(x[i]) + torch.zeros(k).sum()
            return out
        """)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_equivalent(original, fn, *inputs("repeat_count", dtype)[:1], 3, 4)
    loop = fn.report.loops[0]
    assert loop.vectorized and loop.vectorized_runs > 0 and loop.failed_runs == 0, loop
    assert not fn.report.fallbacks
