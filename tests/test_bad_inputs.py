"""Bad inputs, over every example: NaN/inf in predictions or targets (the original's NaN
propagation, in value and gradients), out-of-range and negative class indices, float labels, a
target of the wrong shape (the original's exception type and message, raised from the user's
line), empty batches, 0-d tensors and ``meta`` tensors (the original's result or exception).

Cases where the optimized loss differs today are listed in ``KNOWN`` as xfail(strict=True) with
what differs, so each flips to a failure once fixed.
"""
from __future__ import annotations

import functools
import importlib
import traceback

import pytest
import torch
from torch.utils._pytree import tree_flatten, tree_map

import rewrite
from rewrite.testing import assert_equivalent
from tests.helpers import EXAMPLE_NAMES


@functools.lru_cache(maxsize=None)
def example(name: str):
    module = importlib.import_module(f"examples.{name}")
    # keep_faster=False: every call runs the rewritten function, whose behaviour is under test
    # (the timed choice of form would run the original on some calls).
    return module, rewrite.optimize_loss(module.naive, compile=False, strict=True,
                                         keep_faster=False)


def _poke(args: tuple, k: int, value) -> tuple:
    a = list(args)
    t = a[k].detach().clone()
    t.view(-1)[t.numel() // 2] = value
    a[k] = t.requires_grad_(args[k].requires_grad)
    return tuple(a)


def _first(args, want_grad: bool | None = None, floating: bool = True) -> int | None:
    return next((k for k, t in enumerate(args) if isinstance(t, torch.Tensor) and t.numel()
                 and t.is_floating_point() == floating
                 and (want_grad is None or t.requires_grad == want_grad)), None)


def _labels_as_float(args, k):
    return args[:k] + (args[k].float(),) + args[k + 1:]


def _trim_target(args):
    return (args[0], args[1][..., :-1]) + args[2:]


# variant -> (which argument it needs, how it changes the inputs)
VARIANTS = {
    "nan_prediction": (lambda a: _first(a, True), lambda a, k: _poke(a, k, float("nan"))),
    "inf_prediction": (lambda a: _first(a, True), lambda a, k: _poke(a, k, float("inf"))),
    "nan_target": (lambda a: _first(a, False), lambda a, k: _poke(a, k, float("nan"))),
    "class_out_of_range": (lambda a: _first(a, floating=False), lambda a, k: _poke(a, k, 10**4)),
    "negative_class": (lambda a: _first(a, floating=False), lambda a, k: _poke(a, k, -1)),
    "float_labels": (lambda a: _first(a, floating=False), _labels_as_float),
    "wrong_target_shape": (lambda a: 1 if len(a) > 1 and isinstance(a[1], torch.Tensor)
                           and a[1].dim() else None, lambda a, k: _trim_target(a)),
    "empty_batch": (lambda a: 0, lambda a, k: tree_map(
        lambda t: t[:0] if isinstance(t, torch.Tensor) and t.dim() else t, a)),
    "zero_d": (lambda a: 0, lambda a, k: tree_map(
        lambda t: t.detach().reshape(-1)[0].clone().requires_grad_(t.requires_grad)
        if isinstance(t, torch.Tensor) and t.dim() else t, a)),
    "meta": (lambda a: 0, lambda a, k: tree_map(
        lambda t: t.detach().to("meta").requires_grad_(t.requires_grad)
        if isinstance(t, torch.Tensor) else t, a)),
}

KNOWN: dict[tuple[str, str], str] = {}


def _cases() -> list:
    return [pytest.param(name, variant, id=f"{name}-{variant}",
                         marks=[pytest.mark.xfail(strict=True, reason=KNOWN[name, variant])]
                         if (name, variant) in KNOWN else [])
            for name in EXAMPLE_NAMES for variant in VARIANTS]


def _raised(fn, args, filename):
    """(type, first message line, last line of ``filename`` in the traceback) or None."""
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001
        frames = traceback.extract_tb(exc.__traceback__)
        lines = [f.lineno for f in frames if f.filename == filename]
        return type(exc), str(exc).split("\n")[0], lines[-1] if lines else None
    return None


def _meta_outputs(fn, args):
    flat, _ = tree_flatten(fn(*args))
    return [(tuple(t.shape), t.dtype, t.device) if isinstance(t, torch.Tensor) else t for t in flat]


@pytest.mark.parametrize("name, variant", _cases())
def test_bad_inputs_behave_as_the_original(name, variant):
    module, fast = example(name)
    args = module.make_inputs("small", torch.float64)
    where, change = VARIANTS[variant]
    k = where(args)
    if k is None:
        pytest.skip(f"{name} has no argument for {variant}")
    args = change(args, k)
    want = _raised(module.naive, args, module.__file__)
    if want is not None:
        assert _raised(fast, args, module.__file__) == want
    elif variant == "meta":
        assert _meta_outputs(fast, args) == _meta_outputs(module.naive, args)
    else:
        assert_equivalent(module.naive, fast, *args)
