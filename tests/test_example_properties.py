"""Property: every vectorized example gives the original's value, every gradient and dtype on
random inputs with ties, NaN and inf written into its floating inputs."""
from __future__ import annotations

import importlib

import pytest
import torch
from hypothesis import given, settings, strategies as st

import rewrite
from rewrite.testing import assert_equivalent, differences, outputs_and_gradients
from tests.helpers import EXAMPLE_NAMES

# Known differences at NaN/inf (one input that shows each): none.
KNOWN_DIFFERENT: dict[str, list] = {}
VECTORIZED = [n for n in EXAMPLE_NAMES if n not in KNOWN_DIFFERENT
              and importlib.import_module(f"examples.{n}").CASE["loops"] == "vectorize"]
SPECIAL = st.sampled_from(["tie", "nan", "inf", "-inf"])
_OPTIMIZED: dict[str, object] = {}


def optimized(name: str):
    if name not in _OPTIMIZED:
        module = importlib.import_module(f"examples.{name}")
        _OPTIMIZED[name] = rewrite.optimize_loss(module.naive, compile=False, strict=True)
    return _OPTIMIZED[name]


def perturbed(inputs: tuple, edits: list[tuple[int, str]]) -> tuple:
    """The inputs with ``edits`` (flat position, kind) applied to their floating tensors."""
    floats = [x for x in inputs if isinstance(x, torch.Tensor) and x.is_floating_point()]
    out = []
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            y = x.detach().clone()
            flat = y.view(-1)
            for pos, kind in edits:
                k = pos % flat.numel()
                flat[k] = {"tie": flat[(k + 1) % flat.numel()].item(), "nan": float("nan"),
                           "inf": float("inf"), "-inf": float("-inf")}[kind]
            x = y.requires_grad_(x.requires_grad)
        out.append(x)
    assert floats, "an example without floating inputs"
    return tuple(out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", VECTORIZED)
@settings(max_examples=3, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, 10 ** 6), SPECIAL), max_size=3),
       seed=st.integers(0, 3))
def test_vectorized_examples_keep_value_gradients_and_dtype(name, dtype, edits, seed):
    module = importlib.import_module(f"examples.{name}")
    inputs = perturbed(module.make_inputs("small", dtype, seed), edits)
    assert_equivalent(module.naive, optimized(name), *inputs)
    want, _ = outputs_and_gradients(module.naive, inputs, {})
    got, _ = outputs_and_gradients(optimized(name), inputs, {})
    assert [getattr(v, "dtype", type(v)) for v in got] == \
        [getattr(v, "dtype", type(v)) for v in want]


@pytest.mark.parametrize("name", sorted(KNOWN_DIFFERENT))
def test_known_differences_are_still_there(name):
    # when this fails, the difference is fixed: move the example back into the property test
    module = importlib.import_module(f"examples.{name}")
    inputs = perturbed(module.make_inputs("small", torch.float64, 0), KNOWN_DIFFERENT[name])
    assert differences(module.naive, optimized(name), inputs, {})
