"""The examples suites: every ``examples/<name>.py`` and ``examples/real/<name>.py`` follows the
convention and its naive and expert losses agree in value and in every gradient."""
from __future__ import annotations

import importlib
import inspect

import pytest
import torch
from torch.utils._pytree import tree_flatten

import examples.real
from rewrite.testing import assert_equivalent
from tests.helpers import EXAMPLE_NAMES as NAMES
from tests.helpers import REAL_EXAMPLE_NAMES as REAL_NAMES

ALL = NAMES + REAL_NAMES
DTYPES = [torch.float32, torch.float64]
SEEDS = [0, 1, 2]


def load(name):
    return importlib.import_module(f"examples.{name}")


def tensors(inputs):
    """Every tensor in the inputs, looking inside lists (multi-head outputs come as one list)."""
    flat, _ = tree_flatten(inputs)
    return [x for x in flat if isinstance(x, torch.Tensor)]


def test_discovers_the_suite():
    assert len(NAMES) >= 22 and "slow_add" in NAMES and "ge2e" in NAMES


@pytest.mark.parametrize("name", ALL)
def test_follows_the_convention(name):
    module = load(name)
    assert module.__doc__ and len(module.__doc__.split()) >= 20, "docstring must explain the pattern"
    case = module.CASE
    assert case["loops"] in ("vectorize", "kept")
    assert isinstance(case["elementwise"], bool)
    assert set(case["sizes"]) == {"small", "bench"}
    assert inspect.signature(module.naive) == inspect.signature(module.expert)
    params = inspect.signature(module.naive).parameters
    assert set(case.get("target_args", ())) <= set(params)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ALL)
def test_naive_matches_expert(name, dtype, seed):
    module = load(name)
    assert_equivalent(module.naive, module.expert, *module.make_inputs("small", dtype, seed))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ALL)
def test_naive_gradients_are_finite(name, dtype):
    # assert_equivalent treats NaN == NaN as equal, so a NaN in both versions would slip through.
    module = load(name)
    inputs = module.make_inputs("small", dtype)
    wrt = [t for t in tensors(inputs) if t.requires_grad]
    loss = module.naive(*inputs)
    assert loss.dim() == 0 and torch.isfinite(loss)
    for grad in torch.autograd.grad(loss, wrt):
        assert torch.isfinite(grad).all()


@pytest.mark.parametrize("name", ALL)
def test_make_inputs_is_deterministic(name):
    module = load(name)
    first, again, other = (tensors(module.make_inputs("small", seed=s)) for s in (0, 0, 1))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ALL)
def test_make_inputs_dtypes_and_requires_grad(name, dtype):
    module = load(name)
    inputs = module.make_inputs("small", dtype)
    flat = tensors(inputs)
    assert any(t.requires_grad for t in flat), "some input must be a model output or parameter"
    for t in flat:
        if t.is_floating_point():
            assert t.dtype == dtype
        else:
            assert not t.requires_grad, "labels and indices never require grad"
        assert not t.requires_grad or t.is_leaf, "grad inputs are leaves, like parameters"
    # Arguments the benchmark treats as a fixed target must not require grad.
    bound = inspect.signature(module.naive).bind(*inputs).arguments
    for arg in module.CASE.get("target_args", ()):
        assert not any(t.requires_grad for t in tensors(bound[arg]))


@pytest.mark.parametrize("name", REAL_NAMES)
def test_real_losses_name_their_source_and_field(name):
    case = load(name).CASE
    repo, _, path = case["source"].partition(":")
    assert repo.count("/") == 1 and path.endswith(".py"), "source is 'owner/repo:path/file.py'"
    assert case["field"] in examples.real.FIELDS


def test_the_real_corpus_is_broad():
    # At least 40 losses from 25 public repositories across 8 fields: real code, not our idioms.
    cases = [load(name).CASE for name in REAL_NAMES]
    assert len(cases) >= 40
    assert len({case["source"].partition(":")[0] for case in cases}) >= 25
    assert len({case["field"] for case in cases}) >= 8
