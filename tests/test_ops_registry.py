"""The op registry (passes/ops.py) agrees with itself and with torch: every spelling names one op,
every op the batcher runs under a tensor condition is made safe or known total there, and the
domain facts (which ops can make NaN/inf on finite inputs) hold numerically."""
from __future__ import annotations

import builtins
import importlib
import operator

import pytest
import torch

from passes import ops
from passes.loops import batch_calls

# Tensor.where takes the condition as its argument, the kept values as its receiver.
NO_METHOD_SPELLING = {"where"}
# Finite inputs, some outside every domain (0, negatives, large values that overflow exp).
GRID = torch.tensor([-100.0, -3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0, 100.0])
# Arguments beyond the tensors: ops that cannot be called on tensors alone.
EXTRA_ARGS = {"clamp": (-1.0, 1.0), "clip": (-1.0, 1.0), "clamp_min": (0.0,), "clamp_max": (0.0,),
              "full_like": (2.0,), "number_op": (float, "truediv", False)}


def _spellings(spec: ops.OpSpec) -> list[tuple[str | None, str | None]]:
    return [(f, None) for f in spec.functions] + [(None, m) for m in spec.methods]


def _resolve(name: str):
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module) if module else builtins, attr)


def test_every_spelling_names_one_op():
    for key in ("functions", "methods", "operators"):
        seen = [k for s in ops.REGISTRY for k in getattr(s, key)]
        assert len(seen) == len(set(seen)), [k for k in set(seen) if seen.count(k) > 1]


def test_spellings_exist():
    for spec in ops.REGISTRY:
        for name in spec.functions + tuple(filter(None, [spec.host_math])):
            assert callable(_resolve(name)), name
        for meth in spec.methods:
            assert hasattr(torch.Tensor, meth), meth


def test_reading_object_methods_are_no_tensor_methods():
    """``READING_OBJECT_METHODS`` tells a method that only reads its receiver among those no
    tensor has (a call of any other may change anything): none is a tensor's, nor an effect's."""
    for meth in ops.READING_OBJECT_METHODS:
        assert not hasattr(torch.Tensor, meth) and meth not in ops.OBJECT_METHODS, meth
        assert ops.by_call(None, meth) is ops.UNKNOWN, meth


def test_size_positions_name_arguments():
    """``sizes``: argument positions (``...`` only right after one: every positional argument
    from it on) and keyword names; ``size_arguments`` picks them from a call's arguments."""
    for spec in ops.REGISTRY:
        for k, s in enumerate(spec.sizes):
            assert isinstance(s, str) and s.isidentifier() or isinstance(s, int) and s >= 0 \
                or s is ... and k > 0 and isinstance(spec.sizes[k - 1], int), spec.names
    view, hann = ops.by_call(None, "view"), ops.by_call("torch.hann_window", None)
    assert ops.size_arguments(view, ["x", "n", "m"], {}) == ["n", "m"]
    assert ops.size_arguments(view, ["x"], {"size": "s"}) == ["s"]
    assert ops.size_arguments(hann, ["n", "p"], {"dtype": "d"}) == ["n"]
    assert ops.size_arguments(ops.by_call(None, "add"), ["x", "y"], {}) == []


def test_queries_find_every_spelling():
    for spec in ops.REGISTRY:
        for name, meth in _spellings(spec):
            assert ops.by_call(name, meth) is spec
        for op in spec.operators:
            assert ops.by_operator(op) is spec
    assert ops.by_call("helper", None) is ops.UNKNOWN and ops.by_call(None, "helper") is ops.UNKNOWN


def test_operand_only_forms_are_listed_methods():
    """``operand_only`` names the op a one-operand call is, by its method spelling."""
    for spec in ops.REGISTRY:
        if spec.operand_only:
            assert ops.by_call(None, spec.operand_only) is not ops.UNKNOWN, spec.names


def test_tensor_functions_have_their_method_spelling():
    """``torch.f(x, ...)`` and ``x.f(...)`` are one op: a spelling missing from one fact table
    (``x.div(y)`` batched but not sanitized) cannot happen when both name one entry."""
    for spec in ops.REGISTRY:
        for name in spec.functions:
            short = name.removeprefix("torch.")
            if "." not in short and name != short and hasattr(torch.Tensor, short) \
                    and short not in NO_METHOD_SPELLING:
                assert short in spec.methods, name


def test_batched_elementwise_ops_run_under_a_tensor_condition():
    """What the batcher runs on all iterations, a tensor condition runs on deselected ones too:
    each spelling is made safe there (``sanitize``) or is total."""
    for spec in ops.REGISTRY:
        if spec.batched != "elementwise":
            continue
        for name, meth in _spellings(spec):
            op = ops.by_call(name, meth)
            assert op.sanitize is not None or op.total, (name, meth)


def test_sanitize_positions_name_an_operand():
    for spec in ops.REGISTRY:
        if spec.sanitize is not None:
            assert not spec.total, spec.aten
            k, safe = spec.sanitize
            assert k in (0, 1) and float(safe) == float(safe)
            assert not spec.operators or k < 2


def _sample(spec: ops.OpSpec, tensors: list[torch.Tensor]) -> torch.Tensor:
    extra = EXTRA_ARGS.get(spec.aten, ())
    if spec.aten == "where":
        return torch.where(tensors[0] > 0, *tensors)
    if spec.aten == "masked_divisor":  # (mask, dividend, divisor)
        return _resolve(spec.functions[0])(tensors[0] > 0, *tensors)
    if spec.functions:
        return _resolve(spec.functions[0])(*tensors, *extra)
    return getattr(tensors[0], spec.methods[0])(*tensors[1:], *extra)


def _evaluate(spec: ops.OpSpec, columns: list[torch.Tensor]) -> bool:
    """Whether ``spec`` on these operands gives finite values and finite gradients."""
    leaves = [c.clone().requires_grad_() for c in columns]
    out = _sample(spec, leaves)
    if not out.is_floating_point():
        return True
    finite = bool(torch.isfinite(out).all())
    try:
        grads = torch.autograd.grad(out.sum(), leaves, allow_unused=True)
    except RuntimeError:  # not differentiable (floor_divide)
        return finite
    return finite and all(g is None or bool(torch.isfinite(g).all()) for g in grads)


def _arity(spec: ops.OpSpec) -> int:
    for n in (1, 2):
        try:
            _sample(spec, [GRID.clone() for _ in range(n)])
            return n
        except (TypeError, RuntimeError):
            continue
    raise AssertionError(f"{spec.aten}: cannot be sampled with one or two tensors")


# defined on integer operands only (a float raises, as slicing with it does): no float samples
INTEGER_DOMAIN = {"slice_bound"}
ELEMENTWISE = [s for s in ops.REGISTRY if not s.names & INTEGER_DOMAIN
               and (s.batched == "elementwise" or s.sanitize is not None)]


@pytest.mark.parametrize("spec", ELEMENTWISE, ids=lambda s: sorted(s.names)[0])
def test_domain_facts_hold_on_finite_inputs(spec):
    """An op giving NaN/inf (value or gradient) on some finite input needs a sanitize rule, and
    the rule's safe value gives finite results whatever the other operand."""
    arity = _arity(spec)
    columns = [GRID] if arity == 1 else [GRID.repeat_interleave(len(GRID)), GRID.repeat(len(GRID))]
    if not _evaluate(spec, columns):
        assert spec.sanitize is not None, f"{sorted(spec.names)} is NaN/inf on finite inputs"
        assert not spec.total
    if spec.sanitize is not None:
        k, safe = spec.sanitize
        columns[k] = torch.full_like(columns[k], float(safe))
        assert _evaluate(spec, columns), f"{sorted(spec.names)} at its safe value {safe}"


def test_reductions_and_handlers():
    handled = set(batch_calls.HANDLERS) | {"similarity", "mask_reshape", "flatten", "sized_view"}
    for spec in ops.REGISTRY:
        assert spec.batched is None or spec.batched in handled, spec.batched
        if spec.batched == "reduction":
            assert spec.reduce is not None or spec.dim_rank is not None, spec.aten
        if spec.reduce is not None or spec.dim_rank is not None:
            assert spec.batched == "reduction", spec.aten
        if spec.reduce is not None:
            assert hasattr(torch.Tensor, spec.reduce)
        if spec.summed is not None:
            assert spec.reduce == spec.aten, spec.aten
        if spec.shape_query and spec.aten is not None:
            assert spec.metadata_only, spec.aten


@pytest.mark.parametrize("spec", [s for s in ops.REGISTRY if s.counts_true], ids=lambda s: s.aten)
def test_counts_of_true_elements_are_zero_exactly_when_none_is_true(spec):
    masks = [torch.zeros(0, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.bool),
             torch.tensor([False, True, False]), torch.ones(4, dtype=torch.bool)]
    for m in masks:
        for name, meth in _spellings(spec):
            value = getattr(m, meth)() if meth else _resolve(name)(m)
            assert bool(value == 0) == (not m.any()), (spec.aten, m)
            assert bool(value > 0) == bool(m.any()), (spec.aten, m)


def test_fx_names_and_effects():
    from passes import op_facts
    assert {"rand", "dropout", "normal_"} <= op_facts.RANDOM
    assert "log" not in op_facts.RANDOM and "add_" not in op_facts.RANDOM
    assert operator.setitem in op_facts.MUTATING_FUNCTIONS
    assert ops.effect("torch.nn.functional.dropout", None) == "random"
    assert ops.effect("random.random", None) == "random"
    assert ops.effect("print", None) == "io" and ops.effect(None, "append") == "mutates"
    assert ops.effect("torch.log", None) is None and ops.effect(None, "exp") is None


@pytest.mark.parametrize("spec", [s for s in ops.REGISTRY if s.dense_fn], ids=lambda s: s.aten)
@pytest.mark.parametrize("shapes", [((6, 1, 4), (1, 5, 4)), ((3, 4), (3, 4)), ((4,), (4,))])
def test_dense_forms_give_the_op_s_values_and_gradients(spec, shapes):
    """A ``dense_fn`` replaces every call of its op (``broadcast_products``): on operands that
    broadcast against each other and on plain ones, the op's values and gradients."""
    op = _resolve(spec.functions[0])
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(s, dtype=torch.float64, generator=gen, requires_grad=True) for s in shapes)
    want, got = op(a, b, dim=-1), spec.dense_fn(a, b, dim=-1)
    torch.testing.assert_close(got, want)
    g = torch.randn(want.shape, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(torch.autograd.grad(got, (a, b), g), torch.autograd.grad(want, (a, b), g))


def test_unknown_methods_are_an_objects_own():
    """One rule for a method of unknown effect (``helper_effects`` keeps a loop calling one,
    ``mutated_arguments`` takes it to change its object): no tensor method, none the registry
    lists; a string's name (``model.encode``) is no proof of a string."""
    for meth in ("tick", "update_center", "encode", "compute_gae"):
        assert ops.unknown_method(meth), meth
    for meth in ("sum", "view", "append", "reverse", "popitem", "get", "split", "index", "log"):
        assert not ops.unknown_method(meth), meth
