"""Per-op facts the FX passes and the hoisting runtime rely on, by name, from the op registry.

Ops are matched by name (``call_method`` target, or the ``__name__`` of a ``call_function``
target), so ``torch.rand``, ``Tensor.rand`` and ``torch.ops.aten.rand`` match alike. A name that
matches by accident only costs a missed hoist; a missing name could cache what must run every
call, so the registry errs on the side of listing too much.
"""
from __future__ import annotations

import importlib
import operator
from typing import Any

import torch.fx

from . import ops

# Random: a cached result would repeat one sample on every call.
RANDOM = ops.fx_names(lambda s: s.effect == "random")
# Uninitialised memory: the values are whatever the allocator returns.
UNINITIALIZED = ops.fx_names(lambda s: s.effect == "uninitialized")
# Global state (grad mode, autocast, RNG seed, profiler): must run where it stands, every call.
GLOBAL_STATE = ops.fx_names(lambda s: s.effect == "global_state")
# Writes tensors without moving their version counters (batch_norm's running statistics, in
# train mode; an eval-mode call reads them): a value cached by versions would be stale.
UNVERSIONED = ops.fx_names(lambda s: s.effect == "unversioned")
# torch.func transforms (vmap, grad, jvp) as Dynamo inlines them: level switches, and values
# that exist only inside the transform (batched or grad-wrapped tensors). Nothing reading them
# may move out of the transform.
FUNCTORCH = ops.fx_names(lambda s: s.effect == "functorch")
# Cheaper to recompute than to cache: comparisons, logic, selection and views. A target-only
# value made of these (``mask = target > 0``, ``torch.where(mask, target, 0)``) is recomputed by
# the core, where a compiler fuses it into the kernels that read those inputs anyway; cached, it
# would be one more tensor to read (on CPU, Inductor reads a bool tensor input several times
# slower than it recomputes the comparison).
RECOMPUTED = ops.fx_names(lambda s: s.recomputed)
# Elementwise comparisons and logic, with a bool result: a Python integer operand and a 0-d
# integer tensor of it give the same result (type promotion ranks both as scalars).
NUMBER_OPERAND_TESTS = ops.fx_names(lambda s: s.boolean and s.batched == "elementwise")
# Functions that write into their first argument (``x[i] = v``, ``x += y``). Methods and
# functions whose name ends in "_" (``add_``, ``index_put_``, ``torch.relu_``) are in-place too.
MUTATING_FUNCTIONS = frozenset(getattr(operator, f.removeprefix("operator."))
                               for s in ops.REGISTRY if s.effect == "mutates"
                               for f in s.functions if f.startswith("operator."))
# Ops whose result depends only on the shape, dtype and device of their first argument, never
# on its values: the result carries no gradient from it, and a cache needs only its metadata.
METADATA_ONLY = ops.fx_names(lambda s: s.metadata_only)
# ``getattr(x, name)`` nodes that read metadata.
METADATA_ATTRIBUTES = ops.METADATA_ATTRIBUTES
# Ops whose result requires grad whatever their inputs (torch.func.grad marks its input so).
CREATES_GRAD = ops.fx_names(lambda s: s.creates_grad)


def _function(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


# The form a vmapped body calls instead of a torch function (the registry's ``vmap_fn``: eager's
# gradients, errors and speed where functorch's batching rule differs), by the function object a
# graph's ``call_function`` node holds.
VMAP_FORMS = {_function(f): s.vmap_fn for s in ops.REGISTRY if s.vmap_fn for f in s.functions}


def op_name(node: torch.fx.Node) -> str:
    """``"add_"`` for ``x.add_(y)``, ``"rand"`` for ``torch.rand(...)``; "" for non-calls."""
    if node.op == "call_method":
        return node.target
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return name.split(".")[0]  # aten overloads: "rand.default" -> "rand"
    return ""


def is_mutating(node: torch.fx.Node) -> bool:
    if node.op == "call_function" and getattr(node.target, "__module__", None) == "_operator":
        return node.target in MUTATING_FUNCTIONS  # `and_`, `or_`: named so, not in place
    name = op_name(node)
    if ops.is_inplace(name):
        return True
    return node.kwargs.get("inplace") is True or node.kwargs.get("out") is not None


def reads_only_metadata(node: torch.fx.Node, arg: Any) -> bool:
    """``node`` uses ``arg`` only as its first argument, for its shape/dtype/device."""
    if not node.args or node.args[0] is not arg or arg in node.args[1:] or arg in node.kwargs.values():
        return False
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] in METADATA_ATTRIBUTES
    return op_name(node) in METADATA_ONLY


def creates_grad(node: torch.fx.Node) -> bool:
    """The result requires grad by itself: ``torch.zeros(3, requires_grad=True)``, or a table op."""
    return node.kwargs.get("requires_grad") is True or op_name(node) in CREATES_GRAD

# ``nn.Module`` methods that return the module itself (torch's own, where a class does not
# override them): ``Cls(...).to(device)`` is the module ``Cls(...)`` made.
MODULE_SELF_METHODS = frozenset({"to", "cuda", "cpu", "float", "double", "half", "bfloat16",
                                 "train", "eval", "requires_grad_"})

# ``nn`` loss modules whose ``forward`` is one call of a ``torch.nn.functional`` function: the
# class's name -> (that function, the module attributes its forward passes by keyword). A call of
# such a module (of exactly that class, without hooks) is that function with those attributes.
MODULE_LOSSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "CrossEntropyLoss": ("cross_entropy", ("weight", "ignore_index", "reduction",
                                           "label_smoothing")),
    "NLLLoss": ("nll_loss", ("weight", "ignore_index", "reduction")),
    "MSELoss": ("mse_loss", ("reduction",)),
    "L1Loss": ("l1_loss", ("reduction",)),
    "SmoothL1Loss": ("smooth_l1_loss", ("reduction", "beta")),
    "HuberLoss": ("huber_loss", ("reduction", "delta")),
    "BCEWithLogitsLoss": ("binary_cross_entropy_with_logits", ("weight", "pos_weight",
                                                               "reduction")),
    "CosineSimilarity": ("cosine_similarity", ("dim", "eps")),
}

# ``nn`` modules of one tensor argument whose ``forward`` is one call of an elementwise
# ``torch.nn.functional`` function: the class's name -> (that function, the module attributes
# its forward passes by keyword, the conditions on the module ``m`` under which that call is all
# it does). In place, the call writes its argument: the loop runs as written. (``nn.Softmax``
# is not here: its batched form needs its ``dim`` as a literal, and the module holds it.)
MODULE_ACTIVATIONS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "Softplus": ("softplus", ("beta", "threshold"), ()),
    "ReLU": ("relu", (), ("not m.inplace",)),
    "LeakyReLU": ("leaky_relu", ("negative_slope",), ("not m.inplace",)),
    "SiLU": ("silu", (), ("not m.inplace",)),
    "GELU": ("gelu", ("approximate",), ()),
    "Sigmoid": ("sigmoid", (), ()),
    "Tanh": ("tanh", (), ()),
    "LogSigmoid": ("logsigmoid", (), ()),
}

# ``nn`` modules of one tensor argument whose ``forward`` is one call of a ``torch.nn.functional``
# function that maps over the input's leading dims (the items of a batch in front give every
# item's result): the class's name -> (that function, the module attributes its forward passes
# by keyword, the conditions on the module ``m`` under which that call is all it does).
# ``nn.Linear.forward`` is ``F.linear(input, self.weight, self.bias)``.
MODULE_MAPS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "Linear": ("linear", ("weight", "bias"), ()),
}
