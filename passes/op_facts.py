"""Per-op facts the FX passes and the hoisting runtime rely on: tables, not if-chains.

Ops are matched by name (``call_method`` target, or the ``__name__`` of a ``call_function``
target), so ``torch.rand``, ``Tensor.rand`` and ``torch.ops.aten.rand`` match alike. A name that
matches by accident only costs a missed hoist; a missing name could cache what must run every
call, so the tables err on the side of listing too much.
"""
from __future__ import annotations

import operator
from typing import Any

import torch.fx

# Random: a cached result would repeat one sample on every call.
RANDOM = frozenset({
    "rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like",
    "bernoulli", "multinomial", "normal", "poisson", "binomial", "_standard_gamma",
    "_sample_dirichlet", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
    "feature_alpha_dropout", "feature_dropout", "native_dropout", "rrelu", "rrelu_with_noise",
    "gumbel_softmax", "fractional_max_pool2d", "fractional_max_pool3d",
})

# Uninitialised memory: the values are whatever the allocator returns.
UNINITIALIZED = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"})

# Global state (grad mode, autocast, RNG seed, profiler): must run where it stands, every call.
GLOBAL_STATE = frozenset({
    "_set_grad_enabled", "set_grad_enabled", "_enter_autocast", "_exit_autocast",
    "manual_seed", "seed", "set_default_dtype", "_record_function_enter",
    "_record_function_enter_new", "_record_function_exit",
})

# torch.func transforms (vmap, grad, jvp) as Dynamo inlines them: level switches, and values
# that exist only inside the transform (batched or grad-wrapped tensors). Nothing reading them
# may move out of the transform.
FUNCTORCH = frozenset({
    "_vmap_increment_nesting", "_vmap_decrement_nesting", "_add_batch_dim", "_remove_batch_dim",
    "_grad_increment_nesting", "_grad_decrement_nesting", "_wrap_for_grad", "_unwrap_for_grad",
    "_jvp_increment_nesting", "_jvp_decrement_nesting", "_func_increment_nesting",
    "_func_decrement_nesting", "_wrap_functional_tensor", "_unwrap_functional_tensor",
    "_set_tensor_requires_grad", "_autograd_grad", "_saved_tensors_hooks_disable",
    "_saved_tensors_hooks_enable", "set_inplace_requires_grad_allowed", "_make_dual",
    "_unpack_dual", "enter_dual_level", "exit_dual_level", "_set_fwd_grad_enabled",
})

# Cheaper to recompute than to cache: comparisons, logic, selection and views. A target-only
# value made of these (``mask = target > 0``, ``torch.where(mask, target, 0)``) is recomputed by
# the core, where a compiler fuses it into the kernels that read those inputs anyway; cached, it
# would be one more tensor to read (on CPU, Inductor reads a bool tensor input several times
# slower than it recomputes the comparison).
RECOMPUTED = frozenset({
    "gt", "lt", "ge", "le", "eq", "ne", "logical_not", "logical_and", "logical_or", "logical_xor",
    "bitwise_not", "invert", "and_", "or_", "xor", "where", "reshape", "view", "unsqueeze",
    "squeeze", "expand", "expand_as",
})

# Functions that write into their first argument (``x[i] = v``, ``x += y``). Methods and
# functions whose name ends in "_" (``add_``, ``index_put_``, ``torch.relu_``) are in-place too.
MUTATING_FUNCTIONS = frozenset({
    operator.setitem, operator.delitem, operator.iadd, operator.isub, operator.imul,
    operator.itruediv, operator.ifloordiv, operator.imod, operator.ipow, operator.imatmul,
    operator.iand, operator.ior, operator.ixor, operator.ilshift, operator.irshift,
})

# Ops whose result depends only on the shape, dtype and device of their first argument, never
# on its values: the result carries no gradient from it, and a cache needs only its metadata.
METADATA_ONLY = frozenset({
    "size", "dim", "ndimension", "numel", "stride", "element_size", "sym_size", "sym_numel",
    "sym_stride", "new_zeros", "new_ones", "new_full", "new_empty", "new_tensor",
    "zeros_like", "ones_like", "full_like", "empty_like",
})
# ``getattr(x, name)`` nodes that read metadata (``x.T``, ``x.grad`` read values or state).
METADATA_ATTRIBUTES = frozenset({"shape", "dtype", "device", "ndim", "layout", "is_cuda"})


def op_name(node: torch.fx.Node) -> str:
    """``"add_"`` for ``x.add_(y)``, ``"rand"`` for ``torch.rand(...)``; "" for non-calls."""
    if node.op == "call_method":
        return node.target
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return name.split(".")[0]  # aten overloads: "rand.default" -> "rand"
    return ""


def is_mutating(node: torch.fx.Node) -> bool:
    if node.op == "call_function" and node.target in MUTATING_FUNCTIONS:
        return True
    name = op_name(node)
    if name.endswith("_") and not name.startswith("__"):
        return True
    return node.kwargs.get("inplace") is True or node.kwargs.get("out") is not None


def reads_only_metadata(node: torch.fx.Node, arg: Any) -> bool:
    """``node`` uses ``arg`` only as its first argument, for its shape/dtype/device."""
    if not node.args or node.args[0] is not arg or arg in node.args[1:] or arg in node.kwargs.values():
        return False
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] in METADATA_ATTRIBUTES
    return op_name(node) in METADATA_ONLY


# Ops whose result requires grad whatever their inputs (torch.func.grad marks its input so).
CREATES_GRAD = frozenset({"_set_tensor_requires_grad", "requires_grad_"})


def creates_grad(node: torch.fx.Node) -> bool:
    """The result requires grad by itself: ``torch.zeros(3, requires_grad=True)``, or a table op."""
    return node.kwargs.get("requires_grad") is True or op_name(node) in CREATES_GRAD
