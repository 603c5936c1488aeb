"""Loop-structure templates of the loop passes: accumulator families, write templates, batched
and set forms, list consumers. Facts about single ops live in the op registry (``passes/ops.py``).
"""
from __future__ import annotations

import ast

from . import loop_products, loop_sums_keep_dtypes

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
# ``max(s, e)`` keeps ``s`` unless ``e > s`` (Python's pick): the first iteration's value among
# ties, NaN never picked (compares false) -- the iteration ``FAMILY_PICK`` finds -- picked by
# index, so only it gets a gradient. Items of more than one element raise, as comparing them does.
FAMILY_PICK = {"builtin_max": "v.reshape(len(v)).nan_to_num(float('-inf'), float('inf'), "
                              "float('-inf')).argmax(0)",
               "builtin_min": "v.reshape(len(v)).nan_to_num(float('inf'), float('inf'), "
                              "float('-inf')).argmin(0)"}
FAMILY_REDUCE = {"sum": "v.sum(0)", "prod": "v.prod(0)"}
# ... those reduced by a function bound into the generated code instead: a product's gradient as
# the original's factor-by-factor one (``loop_products``)
FAMILY_REDUCE_FN = {"prod": loop_products.product}
# ... and those of an inner loop folding onto a start the outer body binds (``fold_starts``): in
# the dtype of the fold onto it (sums: ``loop_sums_keep_dtypes.loop_sum_onto``, at the sum)
FAMILY_REDUCE_ONTO_FN = {"prod": loop_products.product_onto}
# ... those whose reduction keeps narrow integer items' dtype, as the original's steps do: started
# from a wider value they run as written (``loop_sums_keep_dtypes.WIDER_START``)
FAMILY_KEEPS_ITEM_DTYPE = frozenset({"sum", "prod"})
# ... but ``v[k]`` would run the backward of the batched items for the items not picked too
# (zero cotangent times their local derivatives: NaN where one is NaN/inf). So the item ``e``,
# when it reads only the iteration's index (as a subscript) and names the loop does not bind, is
# evaluated again at the picked iteration ``k``, on its own: the index becomes this, the
# elements ``xs[k]``; any other item keeps the loop.
PICKED_INDEX = "a + k * s"
# ``torch.maximum(s, e)`` splits the gradient between equal values at each step (1/2, 1/4, ...
# along three or more ties), ``amax`` splits it evenly: such loops are kept.
FAMILY_KEPT = {"max": "running `torch.maximum`/`torch.max`: its gradient at ties is split step by "
                      "step, which one reduction over the loop does not reproduce",
               "min": "running `torch.minimum`/`torch.min`: its gradient at ties is split step "
                      "by step, which one reduction over the loop does not reproduce"}
FAMILY_FOLD = {"sum": "s + r", "prod": "s * r", "builtin_max": "max(s, r)",
               "builtin_min": "min(s, r)"}
# ... when ``s`` is the int 0 at the loop (``loop_dataflow.zero_before_loops``): ``0 + r`` is
# ``r`` (a fresh tensor or a Python number, never bool: sums of bools are int64), without the
# extra add and its backward node.
FAMILY_FOLD_FROM_ZERO = {"sum": "r"}
# ... when every update was ``s += e`` / ``s *= e``: in place, as the original.
FAMILY_FOLD_INPLACE = {"sum": "s += r", "prod": "s *= r"}
# Running values read inside the loop (prefix sums/products): scan over the loop axis.
FAMILY_SCAN = {"sum": "s + f(v)", "prod": "s * f(v)"}
# ... ``f``: ``v.cumsum(0)``/``v.cumprod(0)`` keeping narrow integer dtypes as the original's steps
FAMILY_SCAN_FN = {"sum": loop_sums_keep_dtypes.running_sum,
                  "prod": loop_sums_keep_dtypes.running_product}
# Operators whose result is a bool tensor when both operands are: the logical ones, and the
# arithmetic ones torch keeps bool for bool tensors (``a.gt(lo) * a.le(hi)``, a bin's mask in
# calibration losses: ``*`` is and, ``+`` or). Python bools make ints of the arithmetic ones
# (``x[True * True]`` is ``x[1]``), so those need an operand that is surely a tensor.
MASK_BINOPS = {ast.BitAnd: False, ast.BitOr: False, ast.BitXor: False,
               ast.Mult: True, ast.Add: True}  # operator: needs a tensor operand

# Why a list appended to and read in part after the loop keeps it (``lists_read_in_part``),
# after the list's name: ``op`` may have a NaN/inf derivative
READ_IN_PART = ("may be read in part after the loop (an item alone, as the caller can do with a "
                "list the function returns), and `{op}` may have a NaN/inf derivative: stacked, "
                "the backward through the items read would also run through the others "
                "(0 * NaN/inf = NaN), which the original leaves alone")
# `out[i] op= e` writes: the in-place op applied to the written slots.
WRITE_AUGOPS = {ast.Add: "add_", ast.Sub: "sub_", ast.Mult: "mul_", ast.Div: "div_"}
# ... that give the same result whatever the order, when several iterations hit one slot
# (``counts[t[i]] += 1``): an accumulating index_put_ of the (negated) values.
WRITE_ACCUMULATE = {"add_": "v", "sub_": "-v"}
# The stacked values ``v`` (loop dim in front) of a write ``out[..., i, ...] = e`` with ``k`` int
# entries: dims of size 1 after the loop dim up to the written rank. Row by row: ``v`` with more
# loop dims flattened into its first gives those rows placed alike (``batch_both_loop_levels``).
WRITE_PLACED = "v.reshape(v.shape[:1] + (1,) * (out.dim() - k - v.dim()) + v.shape[1:])"
# ... cast, for a plain write (not ``+=``): a 0-d value written into a row is a ``fill_``, its
# gradient summed in the written dtype, then cast (``effects_to_outputs``)
WRITE_PLACED_CAST = "p.to(out.dtype if v.dim() == 1 else v.dtype)"

# Accumulators whose contributions were Python numbers in the original (literals, or host
# round trips): the folded result is turned back into the same kind of Python number.
NUMBER_FOLD = {"int": "int(r)", "float": "float(r)", "item": "r.item()"}
# Methods of a tensor without arguments that are Python ints of its metadata, added up as such
# (``n += o.numel()``; ``len(o)``, ``o.shape[k]``, ``o.size(k)``: ``batch_scope.int_size``).
INT_SIZE_QUERIES = frozenset({"dim", "ndimension", "numel", "nelement"})
# ... and the int operators that keep two Python ints one
INT_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod)
# Reductions of a tensor to one bool (``OpSpec.reduce``): ``t.any()``, ``t.all()``
TRUTH_REDUCTIONS = frozenset({"any", "all"})
# Python functions of Python numbers (an item's sizes, literals), by (name, argument count), and
# the number they make: "int", "float", "same" (their arguments' one kind; of mixed kinds it
# depends on the data) or "first" (the first argument's). ``math`` functions the registry lists
# (``OpSpec.host_math``: ``math.sqrt``, ``math.log``) make floats, ``int``/``float`` their
# ``OpSpec.host_number``.
NUMBER_FUNCTIONS = {("abs", 1): "same", ("min", 2): "same", ("max", 2): "same",
                    ("round", 1): "int", ("round", 2): "first", ("pow", 2): "pow",
                    ("math.floor", 1): "int", ("math.ceil", 1): "int", ("math.trunc", 1): "int",
                    ("math.isqrt", 1): "int", ("math.fabs", 1): "float", ("math.pow", 2): "float",
                    ("math.log", 2): "float", ("math.hypot", 2): "float"}
# A host number ``h`` (a tensor in the rewrite) next to a tensor ``t``: as the Python number it
# was, a weak scalar, so the tensor's dtype decides (float32 ``t`` times a float64 weight's
# ``.item()`` stays float32). Ints (int64 here) need no cast next to floating tensors, the usual
# case, and have none: next to an int32 tensor they widen it to int64.
# The kind of ``h.item()``: a float from a floating tensor, else an int (a bool tensor's True
# promotes as 1 does, but next to a bool tensor). ``batch_loop_bodies`` spells it ``1`` for an
# ``h`` known to be an integer tensor per item (the loop's check).
HOST_ITEM_NUMBER = "h.dtype.is_floating_point and 1.0 or 1"
HOST_WEAK = {
    "float": "h.to(torch.result_type(t, 1.0))",
    "item": f"h.to(torch.result_type(t, {HOST_ITEM_NUMBER}))",
}
# ... as an operand of ``*`` and ``/`` with ``t`` (``+`` and ``-`` round the number to 16 bits):
# the number and ``t`` (``x``) in the dtype the op computes in (``o``:
# ``dtype_queries.opmath_type``, float32 next to float16/bfloat16), the result ``r`` rounded
# once to the dtype of the original's op
HOST_WEAK_OPMATH = {
    "float": "h.to(o(t, 1.0))",
    "item": f"h.to(o(t, {HOST_ITEM_NUMBER}))",
}
HOST_WEAK_OPMATH_TENSOR = {
    "float": "x.to(o(t, 1.0))",
    "item": f"x.to(o(t, {HOST_ITEM_NUMBER}))",
}
HOST_WEAK_ROUNDED = {
    "float": "r.to(torch.result_type(t, 1.0))",
    "item": f"r.to(torch.result_type(t, {HOST_ITEM_NUMBER}))",
}
HOST_WEAK_INT = "h.to(torch.result_type(t, 1))"  # ... of an ``h`` known to be an integer tensor
# ... with its float64 twin ``w`` (host_roundtrips_to_tensor_ops): Python adds floats in double
# precision (``.item()`` of an integer tensor is an int: its own sum ``r``).
NUMBER_FOLD_WIDE = {"float": "float(w)", "item": "(w if r.is_floating_point() else r).item()"}
# ... left on the device as the divisor of a tensor sum ``s`` (``divisions_by_counters``),
# dividing as the Python number does: an int as int64 (true division promotes alike), a float
# as a weak scalar, cast to the quotient's dtype.
DEVICE_DIVISOR = {"int": "r", "float": "w.to(torch.result_type(s, 1.0))",
                  "item": "(w.to(torch.result_type(s, 1.0)) if r.is_floating_point() else r)"}
# A host number compared with ``t``, a value of unknown type: in float64 (``d``) next to a
# Python number, as Python compares; as a weak scalar (``w``) next to a tensor, in its dtype.
HOST_COMPARED = "d if not isinstance(t, torch.Tensor) else w"

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
# Metadata of the items of a batched ``x`` (``x.size()``, ``x.numel()``, ``x.dim()`` per item):
# the same in every iteration.
BATCHED_ITEM_METADATA = {"size": "x.shape[1:]", "numel": "x.shape[1:].numel()",
                         "dim": "(x.dim() - 1)"}
# Per-item tensors of ranks that may differ as operands of one elementwise op (``x[i] * w[i]``):
# the lower one lifted against the other, cast as its items promote (``item_broadcasts``).
BROADCAST_ITEM = "fn(a, b)"
BROADCAST_NUMBERS = "fn(a, b, k)"  # ``a`` a row of Python numbers of kind ``k``
# Per item ``x.flatten()`` (per-item rank >= 1: a 0-d item would flatten to [1]).
BATCHED_FLATTEN = "x.flatten(1)"
# Reductions over all elements: per item ``x.f()`` / ``torch.f(x)`` -> one reduction over the
# item dims (no copy of a non-contiguous x) for the ops that take a tuple of dims; per-item 0-d
# values (x 1-d) reduce their one element. Else over the flattened items.
BATCHED_ITEM_DIMS_REDUCTION = ("x.{reduce}(tuple(range(1, x.dim()))) if x.dim() > 1 "
                               "else x.reshape(len(x), -1).{reduce}(1)")
BATCHED_FLAT_REDUCTION = "x.reshape(len(x), -1).{reduce}(1)"
# Vector norms (torch.norm of a number p, which calls vector_norm): per item over all elements,
# as the reductions above; over given dims, those shifted by one.
BATCHED_ITEM_NORM = ("torch.linalg.vector_norm(x, p, tuple(range(1, x.dim()))) if x.dim() > 1 "
                     "else torch.linalg.vector_norm(x.reshape(len(x), -1), p, 1)")
BATCHED_DIM_NORM = "torch.linalg.vector_norm(x, p, d, k)"
# Sums over the loop of per-item values, fused into one op (``summed`` in batch_loop_bodies; full
# reductions: ``OpSpec.summed``). Pointwise losses by per-item reduction: ``l`` is the call on the
# batched items with that same reduction over all items; ``n`` the number of iterations.
SUMMED_POINTWISE_LOSSES = {"sum": "l", "mean": "l * n"}
# The same, averaged over the loop (``loss / B`` after the loop, see vectorize_loops).
AVERAGED_POINTWISE_LOSSES = {"sum": "l / n", "mean": "l"}
# A loss's option the check can read before the loop (``scope.free``: ``criterion.weight``,
# the settings ``module_loss_calls`` reads off an ``nn`` loss module): the runtime condition on
# its value ``x`` under which the batched forms (``class_loss``, ``pointwise_loss``) reproduce the
# call; passed as written (a weight, a smoothing: dropped where they have no effect). An option
# not here, or whose condition fails at run time, keeps the loop's other forms.
CHECKED_LOSS_OPTIONS = {
    "reduction": "x in ('mean', 'sum')",  # picked at run time: CHECKED_REDUCTION
    "ignore_index": "type(x) is int",
    # a pointwise loss's; a class loss passes its class weight (``batch_calls.class_loss``)
    "weight": "x is None",
    "pos_weight": "x is None",
    "label_smoothing": "type(x) in (int, float) and x == 0",
    "beta": "type(x) in (int, float)",  # elementwise: the same number for every item
    "delta": "type(x) in (int, float)",
}
# A form for each reduction, picked by a reduction ``r`` read at run time (Dynamo folds the test).
CHECKED_REDUCTION = "({mean}) if r == 'mean' else ({sum})"
# Integer dtypes an index tensor must have for the batched gather (bool/uint8 would be masks).
INDEX_DTYPES = "(torch.int64, torch.int32)"
# ``t[k] = v`` as a new tensor bound to ``t`` (``p`` a new name): the positions ``k`` selects,
# scattered into. Out of place, so legal under vmap with ``v`` batched and ``t`` not.
FUNCTIONAL_WRITE = ("p = torch.arange(t.numel(), device=t.device).view(t.shape)[k]\n"
                    "t = t.flatten().scatter(0, p.flatten(), torch.as_tensor(v, dtype=t.dtype, "
                    "device=t.device).expand(p.shape).flatten()).view(t.shape)")
# Constructors of a new tensor every element of which is one number: name -> (the number, called
# as a tensor's method). ``loop_dataflow.filled_before_loops`` finds the names bound to them.
FILLED_TENSORS = {"zeros": (0, False), "ones": (1, False), "zeros_like": (0, False),
                  "ones_like": (1, False), "new_zeros": (0, True), "new_ones": (1, True)}
# numpy's constructors of a new array: a loop writing into a name bound to one writes into a
# host array, never a tensor (``loop_dataflow.host_arrays_before_loops``).
NUMPY_ARRAY_MAKERS = frozenset({"numpy.zeros", "numpy.ones", "numpy.empty", "numpy.full",
                                "numpy.zeros_like", "numpy.ones_like", "numpy.empty_like",
                                "numpy.full_like"})
# Cosine similarity: positional parameters and defaults. Both operands loop-varying (or one fixed
# of at most the per-item rank): the same call, its dim shifted like any dim= op.
SIMILARITY_PARAMS = ("x1", "x2", "dim", "eps")
# var/std: positional parameters after the operand (the overload without a bool first), and
# the keywords (``correction``: keyword only)
VARIANCE_PARAMS = ("dim", "unbiased", "keepdim")
VARIANCE_KEYWORDS = ("dim", "unbiased", "keepdim", "correction")
# F.normalize's parameters, and its dim when not given
NORMALIZE_PARAMS = ("input", "p", "dim", "eps")
NORMALIZE_DIM = 1
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
# has no cancellation, with the original's backward (``set_distances``, bound as ``fn``).
DISTANCE_SET_FORMS = {2: ("{fn}(x, w)", 1)}

# Consumers of a comprehension's list, rewritten to use the stacked values ``v`` directly.
LIST_CONSUMERS = {
    "torch.stack": "v",
    "torch.cat": "v.flatten(0, 1)",
    "torch.tensor": "v.detach().clone()",
    "list": "list(v.unbind(0))",  # a returned list: the rows, as appended lists get them
}
# ... and along a literal ``dim`` d other than 0: the stacked dim moved to where the items are
# joined, ``a`` (d for stack; for cat d, or d - 1 when negative: just before the items' dim d),
# ``b`` = a + 1.
LIST_CONSUMERS_ALONG_DIM = {
    "torch.stack": "v.movedim(0, a)",
    "torch.cat": "v.movedim(0, a).flatten(a, b)",
}
# torch.tensor over appended host values (``.item()``, ``float()``): Python numbers, so the
# original's dtype is the one torch.tensor infers from numbers.
LIST_CONSUMERS_OF_HOST_VALUES = {**LIST_CONSUMERS, "torch.tensor": "torch.tensor(v.tolist())",
                                 "list": "v.tolist()"}

# A list bound to a name, ``xs = [...]`` (``normalize_comprehensions.stackable_lists``): reads a
# tensor of the stacked items ``v`` answers as the list does. These consumers are rewritten to
# use ``v`` when ``xs`` is bound to it; a Python sum of equal-shaped items is their sum over dim 0.
BOUND_LIST_CONSUMERS = {**LIST_CONSUMERS, "sum": "v.sum(0)"}
# Builtins that add up a container's items with ``+``: on a list the loop body builds (``parts =
# []; ...; sum(parts)``) they work on per-iteration tensors as written, vmapped or batched.
ADDS_CONTAINER_ITEMS = frozenset({"sum"})
# ... these read the items as they are (one list argument) ...
READS_ONE_LIST = frozenset({"len", "max", "min"})
# ... and these iterate every positional argument.
ITERATES_ARGUMENTS = frozenset({"zip", "enumerate"})
# Of these reads, the ones through which every item of the stacked tensor gets the gradient the
# list's item gets (or none, ``len``); the others (``xs[k]``, ``max(xs)``, ``for v in xs``, ...)
# may leave items the original never differentiates, whose batched backward still runs.
READS_EVERY_ITEM = frozenset({"torch.stack", "torch.cat", "torch.tensor", "sum", "len"})
