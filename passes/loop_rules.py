"""Per-op facts the loop passes rely on. Rules are data: add an op here, not an if-chain there.

Functions are keyed by their canonical dotted name ("torch.log", "torch.nn.functional.relu",
"math.log", "max" for the builtin); methods by their bare name (``x.log()`` -> "log").
``resolve_call`` in ``loop_dataflow`` produces these keys.
"""
from __future__ import annotations

import ast

from . import op_facts

# Module spellings used when a function's globals are not available (golden tests, snippets).
DEFAULT_ALIASES = {"torch": "torch", "F": "torch.nn.functional", "nn": "torch.nn", "math": "math"}

# Accumulator updates: how `s = s <op> e` combines, its identity for masked iterations, and the
# reduction over the loop axis. "-" accumulates `-e` into a sum, so it shares "sum".
ACC_BINOPS = {ast.Add: "sum", ast.Sub: "sum", ast.Mult: "prod"}
ACC_CALLS = {                  # s = f(s, e): family
    "torch.maximum": "max", "torch.max": "max", "max": "builtin_max",
    "torch.minimum": "min", "torch.min": "min", "min": "builtin_min",
}
FAMILY_IDENTITY = {"sum": "0", "prod": "1"}
# How the per-iteration contributions ``v`` (stacked on dim 0) reduce over the loop, and how
# the reduction ``r`` folds into the accumulator ``s``.
FAMILY_REDUCE = {"sum": "v.sum(0)", "prod": "v.prod(0)", "max": "v.amax(0)", "min": "v.amin(0)",
                 "builtin_max": "v.amax(0)", "builtin_min": "v.amin(0)"}
FAMILY_FOLD = {"sum": "s + r", "prod": "s * r", "max": "torch.maximum(s, r)",
               "min": "torch.minimum(s, r)", "builtin_max": "max(s, r)", "builtin_min": "min(s, r)"}
# ... when ``s`` is the int 0 at the loop (``loop_dataflow.zero_before_loops``): ``0 + r`` is
# ``r`` (a fresh tensor or a Python number, never bool: sums of bools are int64), without the
# extra add and its backward node.
FAMILY_FOLD_FROM_ZERO = {"sum": "r"}
# ... when every update was ``s += e`` / ``s *= e``: in place, as the original.
FAMILY_FOLD_INPLACE = {"sum": "s += r", "prod": "s *= r"}
# Running values read inside the loop (prefix sums/products): scan over the loop axis.
FAMILY_SCAN = {"sum": "s + v.cumsum(0)", "prod": "s * v.cumprod(0)"}
# `out[i] op= e` writes: the in-place op applied to the written slots.
WRITE_AUGOPS = {ast.Add: "add_", ast.Sub: "sub_", ast.Mult: "mul_", ast.Div: "div_"}
# ... that give the same result whatever the order, when several iterations hit one slot
# (``counts[t[i]] += 1``): an accumulating index_put_ of the (negated) values.
WRITE_ACCUMULATE = {"add_": "v", "sub_": "-v"}

# Calls that make a loop impossible to vectorize, with the reason shown to the user.
# Random ops: ``op_facts.RANDOM`` (shared with the FX passes) under torch, plus these modules.
RANDOM_MODULES = ("random.", "numpy.random.")
RANDOM_METHODS = frozenset({"uniform_", "normal_", "bernoulli_", "random_", "exponential_",
                            "geometric_", "cauchy_", "log_normal_"})
IO = frozenset({"print", "open", "input", "breakpoint", "torch.save", "torch.load",
                "logging.info", "logging.debug", "logging.warning", "warnings.warn"})
IO_METHODS = frozenset({"write", "flush", "info", "debug", "warning", "log", "add_scalar"})
# Methods that mutate their receiver even without the trailing underscore.
MUTATING_METHODS = frozenset({"append", "extend", "insert", "pop", "remove", "clear", "update",
                              "setdefault", "add", "discard", "copy_", "__setitem__"})

# Shape queries: same value in every iteration (vmap keeps per-example shapes equal), so they
# never make a value loop-variant.
SHAPE_ATTRS = op_facts.METADATA_ATTRIBUTES
SHAPE_METHODS = frozenset({"size", "dim", "numel", "ndimension", "nelement", "type"})
SHAPE_FUNCS = frozenset({"len", "isinstance"})

# Ops whose operand(s) can make NaN/inf outside their domain. When such an op runs on
# iterations a condition deselects, its operand is first replaced by a safe value:
# torch.where(cond, torch.log(torch.where(cond, x, 1)), other) -- the "double where".
# Entry: (index of the risky positional argument, safe value).
SANITIZE = {
    "torch.log": (0, "1"), "torch.log2": (0, "1"), "torch.log10": (0, "1"),
    "torch.log1p": (0, "0"), "torch.sqrt": (0, "1"), "torch.rsqrt": (0, "1"),
    "torch.reciprocal": (0, "1"), "torch.acos": (0, "0"), "torch.asin": (0, "0"),
    "torch.atanh": (0, "0"), "torch.acosh": (0, "2"), "torch.exp": (0, "0"),
    "torch.expm1": (0, "0"), "torch.exp2": (0, "0"), "torch.sinh": (0, "0"),
    "torch.cosh": (0, "0"), "torch.tan": (0, "0"), "torch.lgamma": (0, "1"),
    "torch.digamma": (0, "1"), "torch.div": (1, "1"), "torch.true_divide": (1, "1"),
    "torch.pow": (0, "1"), "torch.xlogy": (1, "1"), "torch.logit": (0, "0.5"),
}
SANITIZE_METHODS = {
    "log": "1", "log2": "1", "log10": "1", "log1p": "0", "sqrt": "1", "rsqrt": "1",
    "reciprocal": "1", "acos": "0", "asin": "0", "atanh": "0", "exp": "0",
    "expm1": "0", "tan": "0", "lgamma": "1", "digamma": "1", "pow": "1",
    "logit": "0.5",
}
# Binary operators: which side is risky, and its safe value.
SANITIZE_BINOPS = {ast.Div: ("right", "1"), ast.FloorDiv: ("right", "1"),
                   ast.Mod: ("right", "1"), ast.Pow: ("left", "1")}

# Ops that are finite with finite gradients on any finite input: safe to run on deselected
# iterations as they are. Anything under a tensor condition that is neither here nor in the
# SANITIZE tables (user functions, losses with index targets, ...) makes the loop kept.
TOTAL = frozenset({
    "torch.where", "torch.abs", "torch.neg", "torch.relu", "torch.sigmoid", "torch.tanh",
    "torch.sin", "torch.cos", "torch.atan", "torch.square", "torch.clamp", "torch.clip",
    "torch.minimum", "torch.maximum", "torch.sum", "torch.mean", "torch.amax", "torch.amin",
    "torch.softmax", "torch.log_softmax", "torch.logsumexp", "torch.stack", "torch.cat",
    "torch.dot", "torch.matmul", "torch.mul", "torch.add", "torch.sub", "torch.ne", "torch.eq",
    "torch.gt", "torch.lt", "torch.ge", "torch.le", "torch.logical_and", "torch.logical_or",
    "torch.logical_not", "torch.sign", "torch.zeros_like", "torch.ones_like", "torch.full_like",
    "torch.as_tensor", "torch.tensor", "torch.norm", "torch.floor", "torch.ceil", "torch.round",
    "torch.nn.functional.relu", "torch.nn.functional.softplus", "torch.nn.functional.logsigmoid",
    "torch.nn.functional.log_softmax", "torch.nn.functional.softmax",
    "torch.nn.functional.mse_loss", "torch.nn.functional.l1_loss",
    "torch.nn.functional.smooth_l1_loss", "torch.nn.functional.huber_loss",
    "torch.nn.functional.leaky_relu", "torch.nn.functional.gelu", "torch.nn.functional.silu",
    "torch.nn.functional.sigmoid", "torch.nn.functional.tanh",
    "abs", "float", "int", "bool", "len", "min", "max", "isinstance",
})
TOTAL_METHODS = frozenset({
    "abs", "neg", "relu", "sigmoid", "tanh", "sin", "cos", "square", "clamp", "clip", "sum",
    "mean", "amax", "amin", "max", "min", "softmax", "log_softmax", "logsumexp", "dot", "matmul",
    "float", "double", "long", "int", "bool", "detach", "clone", "unsqueeze", "squeeze",
    "reshape", "view", "flatten", "t", "transpose", "permute", "expand", "expand_as",
    "contiguous", "to", "type_as", "ne", "eq", "gt", "lt", "ge", "le", "sign", "norm", "item",
    "tolist", "size", "dim", "numel", "any", "all", "floor", "ceil", "round", "mul", "add",
    "sub",
})

# Host round trips on loop-varying values and the tensor op that replaces each (``e`` is the
# argument / receiver). Values the original pulled to the host carried no gradient: detach.
HOST_CALLS = {
    "int": "e.long()",
    "float": "e.detach() * 1.0",
    "bool": "torch.ne(e, 0)",
}
# Which Python number each round trip produced (see NUMBER_FOLD).
HOST_NUMBER_KIND = {"int": "int", "float": "float", "item": "item"}
HOST_METHODS = {"item": "e.detach()", "tolist": "e.detach()"}
HOST_MATH = {  # math.f(e) -> torch.f(e), detached like float(e)
    "math.log": "torch.log", "math.exp": "torch.exp", "math.sqrt": "torch.sqrt",
    "math.log1p": "torch.log1p", "math.expm1": "torch.expm1", "math.sin": "torch.sin",
    "math.cos": "torch.cos", "math.tanh": "torch.tanh", "math.atan": "torch.atan",
    "math.fabs": "torch.abs", "math.log2": "torch.log2", "math.log10": "torch.log10",
}
# Builtins over tensor elements: two arguments pick one (first wins on ties, as Python does);
# one argument iterates dim 0.
HOST_BUILTIN_PAIR = {"min": "torch.where(b < a, b, a)", "max": "torch.where(b > a, b, a)"}
HOST_BUILTIN_ITER = {"min": "e.amin(0)", "max": "e.amax(0)", "sum": "e.sum(0)"}

# Boolean-valued calls: indexing with their result selects a data-dependent number of elements.
BOOLEAN_FUNCS = frozenset({"torch.logical_and", "torch.logical_or", "torch.logical_not",
                           "torch.logical_xor", "torch.isnan", "torch.isinf", "torch.isfinite",
                           "torch.eq", "torch.ne", "torch.gt", "torch.lt", "torch.ge", "torch.le",
                           "torch.isin"})
BOOLEAN_METHODS = frozenset({"bool", "logical_and", "logical_or", "logical_not", "isnan",
                             "isinf", "isfinite", "eq", "ne", "gt", "lt", "ge", "le"})

# Accumulators whose contributions were Python numbers in the original (literals, or host
# round trips): the folded result is turned back into the same kind of Python number.
NUMBER_FOLD = {"int": "int(r)", "float": "float(r)", "item": "r.item()"}

# Batched forms (``batch_loop_bodies``): how a per-iteration op runs on all iterations at once,
# every loop-varying value carrying the loop dim in front.
# Elementwise: the same call, operands broadcast (per-item ranks must agree: checked at run time).
BATCHED_ELEMENTWISE = frozenset({
    "torch.abs", "torch.neg", "torch.exp", "torch.expm1", "torch.log", "torch.log1p",
    "torch.log2", "torch.sqrt", "torch.rsqrt", "torch.square", "torch.sigmoid", "torch.tanh",
    "torch.relu", "torch.sin", "torch.cos", "torch.sign", "torch.floor", "torch.ceil",
    "torch.round", "torch.reciprocal", "torch.clamp", "torch.clip", "torch.where",
    "torch.maximum", "torch.minimum", "torch.pow", "torch.mul", "torch.add", "torch.sub",
    "torch.div", "torch.true_divide", "torch.xlogy", "torch.logaddexp", "torch.ne", "torch.eq",
    "torch.gt", "torch.lt", "torch.ge", "torch.le", "torch.logical_and", "torch.logical_or",
    "torch.logical_not", "torch.zeros_like", "torch.ones_like", "torch.full_like",
    "torch.nn.functional.relu", "torch.nn.functional.softplus",
    "torch.nn.functional.logsigmoid", "torch.nn.functional.leaky_relu",
    "torch.nn.functional.gelu", "torch.nn.functional.silu", "torch.nn.functional.sigmoid",
    "torch.nn.functional.tanh", "abs",
})
BATCHED_ELEMENTWISE_METHODS = frozenset({
    "abs", "neg", "exp", "expm1", "log", "log1p", "log2", "sqrt", "rsqrt", "square", "sigmoid",
    "tanh", "relu", "sin", "cos", "sign", "floor", "ceil", "round", "reciprocal", "clamp",
    "clip", "clamp_min", "clamp_max", "pow", "mul", "add", "sub", "div", "ne", "eq", "gt", "lt",
    "ge", "le", "logical_not", "float", "double", "long", "int", "bool", "detach", "clone",
})
# ``m.reshape(h[m.shape, x.shape, ...])`` of a helper ``h`` of per-item shapes (marked
# ``per_item_shapes``; masked_selections_to_where's ``_mask_shape``): the helper sees each item's
# shape, the same in every iteration, and the loop dim goes in front.
BATCHED_SHAPE = "x.shape[1:]"
BATCHED_MASK_RESHAPE = "m.reshape(m.shape[:1] + h[shapes])"
# A per-item value ``v`` next to the loop input ``w`` itself (``labels == labels[i]``: per item
# a broadcast to ``w``'s higher rank): ``k`` dims of size 1 after the loop dim, so the item dims
# align from the right with ``w``'s (``k`` = ``w``'s rank - the per-item rank, an int or source).
BATCHED_UNDER_SET = "v[(slice(None),) + (None,) * (k)]"
BATCHED_UNDER_SET_CONST = "v[:{nones}]"  # k known: ``v[:, None]``
# Methods of two operands of one per-item rank (both loop-varying): the same call.
BATCHED_SAME_RANK_METHODS = frozenset({"expand_as", "type_as"})
# Per item ``x.flatten()`` (per-item rank >= 1: a 0-d item would flatten to [1]).
BATCHED_FLATTEN = {"flatten": "x.flatten(1)"}
# Metadata of a loop-varying value, the same in every iteration: a value that does not vary
# (and so are its attributes: ``x.dtype.is_floating_point``).
BATCHED_METADATA = {"dtype": "x.dtype"}
# Methods whose result is an integer tensor (usable as an index).
INTEGER_METHODS = frozenset({"long", "int"})
# Ops that keep integer dtype on integer operands (with Python int constants).
INTEGER_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod)
# Reductions over all elements: per item ``x.f()`` / ``torch.f(x)`` -> ``x.flatten(1).g(1)``.
BATCHED_FULL_REDUCTIONS = {"sum": "sum", "mean": "mean", "amax": "amax", "amin": "amin",
                           "max": "amax", "min": "amin", "prod": "prod"}
# ... as one reduction over the item dims (no copy of a non-contiguous x), for the methods that
# take a tuple of dims; per-item 0-d values (x 1-d) reduce their one element.
BATCHED_TUPLE_DIMS = frozenset({"sum", "mean", "amax", "amin"})
BATCHED_ITEM_DIMS_REDUCTION = ("x.{reduce}(tuple(range(1, x.dim()))) if x.dim() > 1 "
                               "else x.reshape(len(x), -1).{reduce}(1)")
BATCHED_FLAT_REDUCTION = "x.reshape(len(x), -1).{reduce}(1)"
# Ops with a ``dim`` (per-item dims shift by one; negative dims stay): rank change of the result
# (without keepdim).
BATCHED_DIM_OPS = {"sum": -1, "mean": -1, "amax": -1, "amin": -1, "logsumexp": -1, "prod": -1,
                   "softmax": 0, "log_softmax": 0, "cumsum": 0, "unsqueeze": 1, "any": -1,
                   "all": -1}
BATCHED_DIM_FUNCS = {"torch.sum": "sum", "torch.mean": "mean", "torch.amax": "amax",
                     "torch.amin": "amin", "torch.logsumexp": "logsumexp", "torch.prod": "prod",
                     "torch.softmax": "softmax", "torch.log_softmax": "log_softmax",
                     "torch.cumsum": "cumsum", "torch.nn.functional.softmax": "softmax",
                     "torch.nn.functional.log_softmax": "log_softmax"}
# Losses of two same-shaped operands: elementwise (reduction="none"), then reduced per item.
BATCHED_POINTWISE_LOSSES = frozenset({
    "torch.nn.functional.mse_loss", "torch.nn.functional.l1_loss",
    "torch.nn.functional.smooth_l1_loss", "torch.nn.functional.huber_loss",
    "torch.nn.functional.binary_cross_entropy_with_logits",
})
# Losses of an [N, C] input and [N] class indices: per item mean = sum / non-ignored targets
# (what reduction="mean" divides by).
BATCHED_CLASS_LOSSES = frozenset({"torch.nn.functional.cross_entropy",
                                  "torch.nn.functional.nll_loss"})
# Sums over the loop of per-item values, fused into one op (``summed`` in batch_loop_bodies).
# Full reductions of the batched ``x``: all items have the same number of elements; ``n`` is the
# number of iterations (the batched ``x``'s first dim), so ``x`` is used once and needs no
# temporary that a later fusion (fuse_loss_idioms) could not remove.
SUMMED_FULL_REDUCTIONS = {"sum": "x.sum()", "mean": "x.mean() * n"}
# Pointwise losses by per-item reduction: ``l`` is the call on the batched items with that same
# reduction over all items.
SUMMED_POINTWISE_LOSSES = {"sum": "l", "mean": "l * n"}
# The same, averaged over the loop (``loss / B`` after the loop, see vectorize_loops).
AVERAGED_FULL_REDUCTIONS = {"sum": "x.sum() / n", "mean": "x.mean()"}
AVERAGED_POINTWISE_LOSSES = {"sum": "l / n", "mean": "l"}
# Integer dtypes an index tensor must have for the batched gather (bool/uint8 would be masks).
INDEX_DTYPES = "(torch.int64, torch.int32)"
# Cosine similarity: positional parameters and defaults. Both operands loop-varying (or one fixed
# of at most the per-item rank): the same call, its dim shifted like any dim= op.
BATCHED_SIMILARITIES = {"torch.nn.functional.cosine_similarity": ("x1", "x2", "dim", "eps"),
                        "torch.cosine_similarity": ("x1", "x2", "dim", "eps")}
SIMILARITY_DEFAULTS = {"dim": 1, "eps": 1e-8}
# A loop-varying point ``x`` (per item [D], a loop input's rows) against a fixed ``w`` evaluated
# before the loop, reduced over the feature dim: one matmul or cdist instead of the broadcast
# [n, m, D] intermediate. ``w`` is [D] (per item a number; ``x`` [n, D] @ ``w``) or a set [m, D]
# (per item [m]: the per-item rank of the result). Dtypes, ranks and feature sizes are checked
# at run time; with both forms possible the batched code has both, chosen by ``w.dim()``.
SET_FORM_DTYPES = "(torch.float32, torch.float64)"
# Cosine similarity: ``x`` and ``w`` normalized (``NORMALIZED``), then one product.
SIMILARITY_SET_FORMS = {1: ("x @ w", 0), 2: ("x @ w.t()", 1)}    # w.dim(): (form, rank)
# ``x / max(|x|, eps)`` as cosine_similarity computes it: the norm clamped without gradient
# (d/d|x| stays 1 below eps, unlike ``clamp_min``); ``n`` is ``NORM`` of ``x``.
NORM = "torch.linalg.vector_norm(x, dim=-1, keepdim=True)"
NORMALIZED = "x / torch.where(n < eps, n + (eps - n).detach(), n)"
# ``((w - x) ** 2).sum(dim)`` of a set ``w`` [m, D]: the direct (not matmul-based) cdist, which
# has no cancellation; its backward is 0 at distance 0, as 2 * (x - w) is there.
DISTANCE_SET_FORMS = {2: ("torch.cdist(x, w, compute_mode='donot_use_mm_for_euclid_dist')"
                          ".square()", 1)}
# Spellings of ``e ** 2``: method / function -> the literal arguments after ``e``.
SQUARE_METHODS = {"square": (), "pow": (2,)}
SQUARE_FUNCS = {"torch.square": (), "torch.pow": (2,)}

# Consumers of a comprehension's list, rewritten to use the stacked values ``v`` directly.
LIST_CONSUMERS = {
    "torch.stack": "v",
    "torch.cat": "v.flatten(0, 1)",
    "torch.tensor": "v.detach().clone()",
}
# torch.tensor over appended host values (``.item()``, ``float()``): Python numbers, so the
# original's dtype is the one torch.tensor infers from numbers.
LIST_CONSUMERS_OF_HOST_VALUES = {**LIST_CONSUMERS, "torch.tensor": "torch.tensor(v.tolist())"}

# A list bound to a name, ``xs = [...]`` (``normalize_comprehensions.stackable_lists``): reads a
# tensor of the stacked items ``v`` answers as the list does. These consumers are rewritten to
# use ``v`` when ``xs`` is bound to it; a Python sum of equal-shaped items is their sum over dim 0.
BOUND_LIST_CONSUMERS = {**LIST_CONSUMERS, "sum": "v.sum(0)"}
# ... these read the items as they are (one list argument) ...
READS_ONE_LIST = frozenset({"len", "max", "min"})
# ... and these iterate every positional argument.
ITERATES_ARGUMENTS = frozenset({"zip", "enumerate"})
# Builtins that never modify their arguments (values that may alias a list's items can be
# passed to them, and to torch functions).
PURE_BUILTINS = frozenset({"len", "max", "min", "sum", "abs", "float", "int", "bool", "zip",
                           "enumerate", "range", "isinstance", "print", "list", "tuple"})
