"""Precisions and memory layouts: every example (and a few losses of our own) optimized gives the
original's value, gradients and dtype in float64, float16, bfloat16 and under CPU autocast to
bfloat16, and on non-contiguous, channels_last and expanded inputs and on views of a larger
tensor (the layouts are built from a leaf, so gradients are compared at that leaf)."""
from __future__ import annotations

import functools
import importlib
import tempfile
from pathlib import Path

import pytest
import torch
from torch.utils._pytree import tree_flatten, tree_map

import rewrite
from rewrite.testing import assert_equivalent
from tests.helpers import EXAMPLE_NAMES, load_module

OWN = '''
import torch
import torch.nn.functional as F


def naive(image, target):
    """Per-channel MSE of an NCHW image: a loop over dim 1 (channels_last makes it strided)."""
    loss = 0
    for c in range(image.shape[1]):
        loss += ((image[:, c] - target[:, c]) ** 2).mean()
    return loss / image.shape[1]


def rows(pred, target):
    out = torch.zeros_like(pred)
    for i in range(pred.shape[0]):
        if pred[i].sum() > 0:
            out[i] = (pred[i] - target[i]).abs()
        else:
            out[i] = pred[i] * target[i]
    return out.sum()
'''


@functools.lru_cache(maxsize=None)
def case(name: str):
    """(original, optimized, make_inputs(dtype)) for an example or one of our own losses."""
    if name.startswith("own."):
        module = load_module(Path(tempfile.mkdtemp()), OWN)
        fn = getattr(module, name[4:])

        def make(dtype, seed=0):
            g = torch.Generator().manual_seed(seed)
            shape = (2, 3, 4, 4)
            return (torch.randn(shape, generator=g).to(dtype).requires_grad_(),
                    torch.randn(shape, generator=g).to(dtype))
    else:
        module = importlib.import_module(f"examples.{name}")
        fn = module.naive

        def make(dtype, seed=0):
            return module.make_inputs("small", dtype, seed)
    return fn, rewrite.optimize_loss(fn, compile=False, strict=True), make


NAMES = EXAMPLE_NAMES + ["own.naive", "own.rows"]


def assert_same_result(original, fast, args, **tol):
    """The original's exception, or its value, gradients and dtypes."""
    try:
        original(*args)
    except Exception as exc:  # noqa: BLE001 - e.g. an op without a half-precision CPU kernel
        with pytest.raises(type(exc)):
            fast(*args)
        return
    assert_equivalent(original, fast, *args, **tol)


# Half precision: the original's Python loop rounds the running sum after every item and the
# vectorized sum once, so they differ by a few units in the last place over ~32 items: the
# tolerance is that of the accumulation, not of one op (rewrite.testing.TOLERANCES).
HALF = {torch.float16: (1e-2, 1e-2), torch.bfloat16: (8e-2, 5e-2)}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_precisions(name, dtype):
    original, fast, make = case(name)
    rtol, atol = HALF.get(dtype, (None, None))
    assert_same_result(original, fast, make(dtype), rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", NAMES)
def test_cpu_autocast_to_bfloat16(name):
    original, fast, make = case(name)

    def under_autocast(fn):
        def run(*args):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fn(*args)
        return run
    rtol, atol = HALF[torch.bfloat16]  # outputs may be float32 computed from bfloat16
    assert_same_result(under_autocast(original), under_autocast(fast), make(torch.float32),
                rtol=rtol, atol=atol)


# Each layout: (the leaf made from an input tensor, the input made from that leaf and the tensor);
# the input has the tensor's shape, and its values except for "expanded" (every row the first).
LAYOUTS = {
    "non_contiguous": (lambda t: t.mT.contiguous() if t.dim() > 1 else torch.stack([t, t], -1),
                       lambda leaf, t: leaf.mT if t.dim() > 1 else leaf[..., 0]),
    "channels_last": (lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4
                      else t.clone(), lambda leaf, t: leaf),
    "expanded": (lambda t: t[:1].clone() if t.dim() else t.clone(),
                 lambda leaf, t: leaf.expand(t.shape)),
    "view_of_larger": (lambda t: torch.stack([t, torch.full_like(t, 7)], dim=-1),
                       lambda leaf, t: leaf[..., 0]),
}


def layout_inputs(args, layout: str):
    """(inputs in ``layout``, the leaves to take gradients at)."""
    make_leaf, view = LAYOUTS[layout]
    leaves = []

    def convert(t):
        if not isinstance(t, torch.Tensor):
            return t
        leaf = make_leaf(t.detach()).requires_grad_(t.requires_grad)
        if t.requires_grad:
            leaves.append(leaf)
        return view(leaf, t)
    return tree_map(convert, args), leaves


def run(fn, args, leaves):
    out = fn(*args)
    flat, _ = tree_flatten(out)
    total = sum(v.float().sum() * (k + 1) for k, v in enumerate(flat)
                if isinstance(v, torch.Tensor) and v.requires_grad)
    grads = torch.autograd.grad(total, leaves, allow_unused=True) if leaves else ()
    return flat, grads


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", NAMES)
def test_layouts(name, layout):
    original, fast, make = case(name)
    base = make(torch.float64)
    want_args, want_leaves = layout_inputs(base, layout)
    got_args, got_leaves = layout_inputs(base, layout)
    assert [t.stride() for t in tree_flatten(want_args)[0] if isinstance(t, torch.Tensor)] == \
        [t.stride() for t in tree_flatten(got_args)[0] if isinstance(t, torch.Tensor)]
    try:
        want, want_grads = run(original, want_args, want_leaves)
    except Exception as exc:  # noqa: BLE001
        with pytest.raises(type(exc)):
            run(fast, got_args, got_leaves)
        return
    got, got_grads = run(fast, got_args, got_leaves)
    assert len(want) == len(got)
    for w, g in zip(want + list(want_grads), got + list(got_grads)):
        if isinstance(w, torch.Tensor):
            torch.testing.assert_close(g, w, equal_nan=True)
        else:
            assert w == g


def test_the_layouts_are_what_they_say():
    t = torch.randn(2, 3, 4, 5)
    for layout, check in [("non_contiguous", lambda x: not x.is_contiguous()),
                          ("channels_last",
                           lambda x: x.is_contiguous(memory_format=torch.channels_last)),
                          ("expanded", lambda x: 0 in x.stride()),
                          ("view_of_larger", lambda x: x.untyped_storage().nbytes() > x.nbytes)]:
        (x,), _ = layout_inputs((t,), layout)
        assert check(x) and x.shape == t.shape, layout
