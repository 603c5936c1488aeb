"""The op registry: every per-op fact the AST and FX passes rely on, one ``OpSpec`` per op.

An op is found by any of its spellings: a function by its canonical dotted name (``"torch.log"``,
``"torch.nn.functional.relu"``, ``"max"`` for the builtin; ``loop_dataflow.resolve_call`` makes
these), a method by its bare name (``x.log()`` -> ``"log"``), a Python operator by its ``ast``
class (``a / b`` -> ``ast.Div``). FX nodes are matched by bare name (``fx_names``): the aten name,
the method names and the last part of the function names, so ``torch.rand``, ``Tensor.rand`` and
``torch.ops.aten.rand`` match alike. Every spelling of an op shares its facts: add an op here, not
an if-chain in a pass. ``tests/test_ops_registry.py`` checks the facts against each other and
against torch.

A pass asks ``by_call(name, meth)`` (``UNKNOWN``, with every fact off, for calls not listed) or
``by_operator(type(node.op))``.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import (bce_with_logits, class_index_targets, cosine_products, dtype_queries,
               full_extremes, gathered_nll_loss, grad_free, inplace_results, item_broadcasts,
               kl_div_terms, masked_divisors, number_operands, row_dots, selection_windows,
               set_distances, slice_bounds, stacked_views)

# Module spellings used when a function's globals are not available (golden tests, snippets).
DEFAULT_ALIASES = {"torch": "torch", "F": "torch.nn.functional", "nn": "torch.nn", "math": "math"}


@dataclass(frozen=True)
class OpSpec:
    aten: str | None                          # its aten name (FX nodes match it); None: Python only
    functions: tuple[str, ...] = ()           # canonical dotted names
    methods: tuple[str, ...] = ()             # method names
    operators: tuple[type, ...] = ()          # ast operator classes (``ast.Div``)
    # Batched form (batch_loop_bodies): the handler running the op on all iterations at once,
    # every loop-varying value carrying the loop dim in front. "elementwise": the same call,
    # operands broadcast; "reduction": ``reduce``/``dim_rank`` below; "dot", "matmul",
    # "same_rank", "flatten", "pointwise_loss", "class_loss", "similarity", "mask_reshape"
    # (else as "sized_view"), "sized_view" (int sizes, the loop dim put in front), "item_size"
    # (``p.size(k)``, ``p.numel()``, ...: metadata of the items, the same in every iteration): see the
    # batcher; "from_start": a helper ``f(..., start)`` reducing the dims from ``start``;
    # "positions": a 1-D range of int sizes, the same in every iteration (``torch.arange(n)``).
    batched: str | None = None
    # Its result is an int (a Python int, an integer tensor) or it raises (``slice_bound``)
    int_or_raises: bool = False
    # ... of its form on two tensors, where a second operand that is a number is a dim
    # (``torch.max(a, b)``, elementwise, against ``torch.max(x, 1)``)
    tensor_pair: str | None = None
    reduce: str | None = None                 # over all elements per item: ``x.<reduce>(dims)``
    # ... when that method's gradient differs from the op's (NaN, ties): ``f(x, first_dim)``,
    # bound into the generated code
    reduce_fn: Callable | None = None
    tuple_dims: bool = False                  # ... ``reduce`` takes a tuple of dims (no copy)
    dim_rank: int | None = None               # with ``dim``: rank change of the result (no keepdim)
    # A full reduction summed over the loop, and averaged (``x`` the batched operand, ``n`` the
    # number of iterations): one op instead of a per-item reduction and a sum.
    summed: tuple[str, str] | None = None
    square: tuple[int, ...] | None = None     # literal arguments after ``e`` making it ``e ** 2``
    selection: str | None = None              # dense form of it on a masked selection
    # Along a dim: (how many tensor operands come first, the position of its ``dim`` argument,
    # the dim when none is given or None): along a dim after the first, the result's row ``r``
    # is a function of its operands' rows ``r`` alone (``x.pow(2).sum(1)``, a cosine of two
    # rows), so it commutes with a selection of rows (masked_selections_to_where).
    along_dim: tuple[int, int, int | None] | None = None
    # Under a tensor condition the op also runs on deselected iterations
    # (tensor_branches_to_where): (position of the operand that can make NaN/inf outside its
    # domain, a safe value there); positions count the function's arguments: a method's
    # receiver is 0, an operator's left operand 0.
    sanitize: tuple[int, str] | None = None
    total: bool = False                       # finite, with finite gradients, on any finite input
    # It reduces its operands to a smaller result (a number per pair of vectors): a selection
    # between two values of an operand is cheaper after it than before it
    # (``sink_own_item_selections``). The value: what the operand holds where the selection
    # does not take it; the op is finite there, with finite gradients, in every dtype, wherever
    # its other operand is one it is finite at.
    sink_selection: str | None = None
    # ... computed instead by this function of the op's arguments, with the unmasked operand and
    # ``deselected=`` the selection: the op where it is false, no gradient through it where it
    # is true (NaN, inf there too), so no masked copy of the operand per selection (bound into
    # the generated code)
    sink_selection_fn: Callable | None = None
    # How its derivative depends on the values, whatever they are (NaN and inf included):
    # "constant" (sums, selections: never NaN/inf; views, conversions, comparisons and shape
    # queries are so too), "bounded" (finite or NaN, never +-inf); None: it may be +-inf
    # (``exp(inf)``, ``sqrt(0)``, a product of two values). See ``invariant_values_take_no_grad``.
    derivative: str | None = None
    boolean: bool = False                     # a bool tensor (indexing with it selects)
    # Its result has the dtype of its operand at this position (positions counted as for
    # ``sanitize``): views, copies and ``*_like`` of a mask are masks (``(t >= t[i]).squeeze()``)
    dtype_of: int | None = None
    # Of a bool tensor, called without arguments: 0 (False) when no element is true, positive
    # (True) otherwise, so a test of it tells whether a mask selects anything (``m.sum() == 0``).
    counts_true: bool = False
    # The result is an integer tensor when the operands at these positions are (Python int
    # constants keep it, extra operands or keywords lose it); () always.
    integer: tuple[int, ...] | None = None
    # The result holds positions along a dim (int64, at least 0: indices a sort returns) when the
    # operands at these positions do (positions counted as for ``sanitize``); ``positions_item``:
    # the item of its tuple result that always holds them (``torch.sort``'s indices).
    positions: tuple[int, ...] | None = None
    positions_item: int | None = None
    shape_query: bool = False                 # Python metadata (the same in every iteration)
    metadata_only: bool = False               # depends on its first argument's metadata only (FX)
    recomputed: bool = False                  # cheaper to recompute than to cache (FX)
    creates_grad: bool = False                # its result requires grad whatever its inputs
    aliases: bool = False                     # its result may share memory with an operand
    # Operands (positions counted as for ``sanitize``) that broadcast against each other and
    # promote as an operator's do: per-item tensors of other ranks there are lifted in the
    # batched form (``batch_scope.lifted_operands``); ``broadcast_numbers``: the position of the
    # argument naming the kind of Python numbers the second one's items stand for (a row of
    # ``number_operands``: converted by the op, not cast when lifted)
    broadcasts: tuple[int, ...] = ()
    broadcast_numbers: int | None = None
    # A helper whose result may be a Python number where its operands are tensors (a divisor
    # kept the number it is): no tensor to lift (``int_or_raises`` alike)
    may_be_number: bool = False
    # ``f(b, a)`` of ``x = f(a, b)`` (two tensors first): the same values, computed from ``x``
    swapped: str | None = None
    # ... computed by this function of (``x``, ``b``, ``a``) instead, bound into generated code
    swapped_fn: Callable | None = None
    # Operands read for their metadata only (shape, dtype, device), positions counted as for
    # ``sanitize``: ``x.expand_as(y)`` neither holds nor writes ``y``'s memory.
    metadata_operands: tuple[int, ...] = ()
    data_shape: bool = False                  # its result's shape depends on the values
    # Called with one positional operand and no keyword, its result is 1-D (``torch.unique(x)``)
    one_d: bool = False
    # Called with one positional operand and no keyword, it is this other op (its method
    # name): ``torch.where(c)`` is ``torch.nonzero(c, as_tuple=True)``, whose shape depends on
    # the values, where ``torch.where(c, a, b)`` is elementwise.
    operand_only: str | None = None
    # It makes a tensor of Python values, its first argument's: "any" value (``torch.tensor``
    # copies even a tensor by its items), "display" the items of a list or tuple display
    # (``torch.as_tensor([i])``; a tensor itself is taken as it is). Under vmap such a value
    # that varies per iteration is a tensor, whose item it cannot read (``check_mapped_body``).
    from_data: str | None = None
    # Its arguments that are sizes (lengths, counts, shapes, window lengths), which shape its
    # result: positions counted as for ``sanitize``, keywords by name; ``...`` after a position:
    # every positional argument from that one on (``x.view(*shape)``). Under vmap a size that
    # varies per iteration is a tensor, which no op takes as a size (``check_mapped_body``).
    sizes: tuple = ()
    # "random", "io", "mutates", "global_state", "functorch", "autograd", "storage" (reads
    # memory by strides): must run where it stands, every call and every iteration;
    # "uninitialized": not cached (no effect); "unversioned": writes tensors without moving their
    # version counter (batch_norm's running statistics), so a cache keyed on versions does not
    # see them change: not cached, and runs where it stands.
    effect: str | None = None
    # Host round trips on loop-varying values (host_roundtrips_to_tensor_ops): the tensor op
    # replacing one of argument/receiver ``e``, and which Python number the original produced.
    host: str | None = None
    host_number: str | None = None
    # Its result is a Python number no gradient flows through, which ``host_number`` does not
    # name (``bool(x)``: stacked, it is a bool tensor, not folded back); see ``gives_number``
    python_number: bool = False
    host_pair: str | None = None              # a builtin of two tensor elements ``a``, ``b``
    # ... of two Python ints, ``a`` one the rewrite computes as an integer tensor: one op reading
    # each operand once (``host_pair`` reads one twice, so a count is computed twice)
    host_int_pair: str | None = None
    host_math: str | None = None              # its ``math`` module spelling
    # Where the host function raises: (condition on its argument ``e``, as float64 and with only
    # total ops, so a tensor condition may guard it; an argument it raises on, which gives the
    # exception the vectorized form raises).
    host_raises: tuple[tuple[str, float], ...] = ()
    # ``torch.<name>(number, ...)`` runs whatever the other arguments: a Python number may be
    # its first argument (most ops raise TypeError there; such a loop runs as written).
    number_first: bool = False
    # Under ``torch.vmap`` its gradients are wrong (its batching rule, torch 2.13), when called
    # with any of these keywords (``()``: always): a loop calling it runs as written.
    vmap_wrong: tuple[str, ...] | None = None
    # No batching rule (torch 2.13): ``torch.vmap`` runs it once per item, warning of a
    # performance drop; with no batched form either, a loop calling it runs as written.
    vmap_loops: bool = False
    # Under ``torch.vmap`` its gradients differ from eager's, or its batching rule makes a
    # broadcast intermediate a matrix product avoids: the vmapped body calls this, with the same
    # arguments, instead (bound into the generated code).
    vmap_fn: Callable | None = None
    # A form that is faster than the op for some operands anywhere, not only in vmapped bodies,
    # and runs the op itself for the others: every call of the op calls it, with the same
    # arguments (``broadcast_products``; bound into the generated code).
    dense_fn: Callable | None = None
    names: frozenset[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self):
        short = {f.rsplit(".", 1)[-1] for f in self.functions}
        object.__setattr__(self, "names", frozenset(
            {self.aten} - {None} | set(self.methods) | short))


UNKNOWN = OpSpec(None)
_F = "torch.nn.functional."


def _t(name: str, *, fn: bool = True, meth: bool = True, extra: tuple[str, ...] = (),
       **facts) -> OpSpec:
    """An op spelled ``torch.<name>`` (``fn``), ``x.<name>()`` (``meth``) and ``extra``."""
    return OpSpec(name, ((f"torch.{name}",) if fn else ()) + extra,
                  (name,) if meth else (), **facts)


def _aten(*names: str, **facts) -> list[OpSpec]:
    """Ops known by name only (FX passes, and ``torch.<name>`` calls in loops)."""
    return [OpSpec(n, **facts) for n in names]


def _helper(fn: Callable, **facts) -> OpSpec:
    """A function of ``passes`` that generated code calls, by its module path."""
    return OpSpec(fn.__name__, (f"{fn.__module__}.{fn.__qualname__}",), **facts)


def _builtin(name: str, **facts) -> OpSpec:
    return OpSpec(None, (name,), **facts)


# Python's max/min of an iterable ``e``: its first item unless a later one compares greater
# (less). NaN compares false: a NaN first item stays, later NaNs are skipped. So the first index
# of the extreme with NaN as -inf (+inf), or 0 when item 0 is NaN; picked by index, so only the
# picked item gets a gradient (amax/amin would split it between ties, and return NaN). Items
# of more than one element raise, as their comparison does.
_FIRST_EXTREME = ("e[e.reshape(len(e)).nan_to_num({nan}, float('inf'), float('-inf')).{arg}(0)"
                  " * e.reshape(len(e))[0].isnan().logical_not()]")
# Where math functions raise ValueError (``host_raises``) ...
_NOT_POSITIVE = (("e <= 0", 0.0),)
_INFINITE = (("e.abs() == torch.inf", float("inf")),)
# ... ``int()`` of NaN/inf (never of an integer tensor's elements) ...
_NONFINITE = (("e != e", float("nan")), ("e.abs() == torch.inf", float("inf")))
# ... and OverflowError: a finite argument whose float64 result is infinite.
_OVERFLOWS = "torch.logical_and(e.abs() < torch.inf, torch.{f}(e).abs() == torch.inf)"
_E = dict(batched="elementwise")
_ET = dict(batched="elementwise", total=True)
_CMP = dict(batched="elementwise", total=True, boolean=True, recomputed=True)

REGISTRY: tuple[OpSpec, ...] = (
    # -- elementwise, total -----------------------------------------------------------------
    # recomputed: a target-only ``1 - onehot`` or ``onehot * (1 - eps) + eps / C`` of recomputed
    # values fuses into the kernel that reads it; cached, it is a full-size tensor read from
    # memory every call (the one-hot's labels are C times smaller)
    _t("abs", extra=("abs",), host_math="math.fabs", derivative="bounded", **_ET),
    _t("neg", derivative="constant", recomputed=True, **_ET), _t("square", square=(), **_ET),
    _t("sign", derivative="constant", **_ET),
    _t("sigmoid", extra=(_F + "sigmoid",), derivative="bounded", **_ET),
    _t("tanh", extra=(_F + "tanh",), host_math="math.tanh", derivative="bounded", **_ET),
    _t("relu", extra=(_F + "relu",), derivative="constant", **_ET),
    _t("sin", host_math="math.sin", host_raises=_INFINITE, derivative="bounded", **_ET),
    _t("cos", host_math="math.cos", host_raises=_INFINITE, derivative="bounded", **_ET),
    *(_t(n, derivative="constant", **_ET) for n in ("floor", "ceil", "round", "clamp", "clip",
                                                     "nan_to_num")),
    *(_t(n, derivative="constant", **_ET) for n in ("clamp_min", "clamp_max")),
    *(_t(n, derivative="bounded", broadcasts=(0, 1), **_ET)
      for n in ("maximum", "minimum", "logaddexp")),
    _t("add", operators=(ast.Add,), integer=(0, 1), number_first=True, derivative="constant",
       recomputed=True, **_ET),
    _t("sub", operators=(ast.Sub,), integer=(0, 1), number_first=True, derivative="constant",
       recomputed=True, **_ET),
    _t("mul", operators=(ast.Mult,), integer=(0, 1), number_first=True, recomputed=True, **_ET),
    _t("eq", **_CMP), _t("ne", **_CMP), _t("gt", **_CMP), _t("lt", **_CMP), _t("ge", **_CMP),
    _t("le", **_CMP), _t("logical_and", **_CMP), _t("logical_or", **_CMP),
    _t("logical_not", **_CMP),
    # Tensor.where takes the condition as its argument, not as its receiver: no method spelling
    _t("where", meth=False, integer=(1, 2), positions=(1, 2), recomputed=True,
       derivative="constant", operand_only="nonzero", **_ET),
    _t("zeros_like", meth=False, integer=(0,), dtype_of=0, positions=(0,), metadata_only=True, **_ET),
    _t("ones_like", meth=False, integer=(0,), dtype_of=0, metadata_only=True, **_ET),
    _t("full_like", meth=False, metadata_only=True, **_ET),
    *(OpSpec(n, (_F + n,), derivative="bounded", **_ET)
      for n in ("softplus", "logsigmoid", "leaky_relu", "gelu", "silu")),
    # conversions return the tensor itself when it has the dtype already
    _t("float", fn=False, aliases=True, **_ET), _t("double", fn=False, aliases=True, **_ET),
    _t("long", fn=False, integer=(), aliases=True, **_ET),
    _t("int", fn=False, integer=(), aliases=True, **_ET),
    _t("bool", fn=False, boolean=True, aliases=True, **_ET),
    _t("detach", fn=False, integer=(0,), dtype_of=0, positions=(0,), aliases=True,
       extra=("torch.autograd.variable.Variable",), **_ET),
    _t("clone", fn=False, integer=(0,), dtype_of=0, positions=(0,), derivative="constant", **_ET),
    # -- elementwise, NaN/inf outside their domain ------------------------------------------
    _t("exp", sanitize=(0, "0"), host_math="math.exp",
       host_raises=((_OVERFLOWS.format(f="exp"), 1e308),), **_E),
    _t("expm1", sanitize=(0, "0"), host_math="math.expm1",
       host_raises=((_OVERFLOWS.format(f="expm1"), 1e308),), **_E),
    _t("log", sanitize=(0, "1"), host_math="math.log", host_raises=_NOT_POSITIVE, **_E),
    _t("log1p", sanitize=(0, "0"), host_math="math.log1p", host_raises=(("e <= -1", -1.0),), **_E),
    _t("log2", sanitize=(0, "1"), host_math="math.log2", host_raises=_NOT_POSITIVE, **_E),
    _t("sqrt", sanitize=(0, "1"), host_math="math.sqrt", host_raises=(("e < 0", -1.0),), **_E),
    _t("rsqrt", sanitize=(0, "1"), **_E),
    _t("reciprocal", sanitize=(0, "1"), **_E),
    _t("pow", operators=(ast.Pow,), sanitize=(0, "1"), square=(2,), **_E),
    _t("div", operators=(ast.Div,), sanitize=(1, "1"), number_first=True, **_E),
    _t("true_divide", sanitize=(1, "1"), number_first=True, **_E),
    _t("xlogy", sanitize=(1, "1"), **_E),
    _t("floor_divide", operators=(ast.FloorDiv,), sanitize=(1, "1"), integer=(0, 1),
       number_first=True, **_E),
    _t("remainder", operators=(ast.Mod,), sanitize=(1, "1"), integer=(0, 1), **_E),
    _t("log10", sanitize=(0, "1"), host_math="math.log10", host_raises=_NOT_POSITIVE, **_E),
    *(_t(n, sanitize=(0, safe), **_E) for n, safe in (
        ("acos", "0"), ("asin", "0"), ("atanh", "0"), ("acosh", "2"), ("exp2", "0"),
        ("sinh", "0"), ("cosh", "0"), ("tan", "0"), ("lgamma", "1"), ("digamma", "1"),
        ("logit", "0.5"))),
    _t("atan", host_math="math.atan", total=True, derivative="bounded", **_E),
    # -- reductions and ops with a dim --------------------------------------------------------
    _t("sum", batched="reduction", reduce="sum", tuple_dims=True, dim_rank=-1,
       summed=("x.sum()", "x.sum() / n"), selection="sum", total=True, derivative="constant",
       counts_true=True, along_dim=(1, 1, None)),
    _t("mean", batched="reduction", reduce="mean", tuple_dims=True, dim_rank=-1,
       summed=("x.mean() * n", "x.mean()"), selection="mean", total=True,
       derivative="constant", along_dim=(1, 1, None)),
    _t("amax", batched="reduction", reduce="amax", tuple_dims=True, dim_rank=-1,
       selection="amax", total=True, derivative="constant", along_dim=(1, 1, None)),
    _t("amin", batched="reduction", reduce="amin", tuple_dims=True, dim_rank=-1,
       selection="amin", total=True, derivative="constant", along_dim=(1, 1, None)),
    _t("max", batched="reduction", reduce="amax", reduce_fn=full_extremes.max_of_all,
       tuple_dims=True, selection="max", total=True, derivative="constant",
       tensor_pair="elementwise"),
    _t("min", batched="reduction", reduce="amin", reduce_fn=full_extremes.min_of_all,
       tuple_dims=True, selection="min", total=True, derivative="constant",
       tensor_pair="elementwise"),
    _t("prod", batched="reduction", reduce="prod", dim_rank=-1),
    # over all elements or dims, with Bessel's correction unless told otherwise
    *(_t(n, batched="variance") for n in ("var", "std")),
    _t("logsumexp", batched="reduction", dim_rank=-1, selection="logsumexp", total=True,
       derivative="bounded", along_dim=(1, 1, None)),
    _t("softmax", extra=(_F + "softmax",), batched="reduction", dim_rank=0, total=True,
       derivative="bounded", selection="softmax"),
    _t("log_softmax", extra=(_F + "log_softmax",), batched="reduction", dim_rank=0, total=True,
       derivative="bounded", selection="log_softmax"),
    _t("cumsum", batched="reduction", dim_rank=0, total=True, derivative="constant"),
    # values and indices; its backward scatters the gradient back to the sorted positions
    _t("sort", total=True, derivative="constant", positions_item=1),
    # a value of its operand (the lower middle one; without NaNs: nanmedian), gradient 1 there;
    # with a dim, values and indices
    *(_t(n, total=True, derivative="constant") for n in ("median", "nanmedian")),
    _t("any", fn=False, batched="reduction", reduce="any", dim_rank=-1, total=True,
       counts_true=True),
    _t("all", fn=False, batched="reduction", reduce="all", dim_rank=-1, total=True),
    _t("unsqueeze", batched="reduction", dim_rank=1, integer=(0,), dtype_of=0, total=True,
       recomputed=True, aliases=True),
    _t("dot", batched="dot", total=True),
    _t("norm", batched="norm", total=True, derivative="bounded", along_dim=(1, 2, None)),
    # the norm of ``a - b`` over every element (``p``: 2)
    _t("dist", batched="pairwise", total=True, derivative="bounded"),
    _t("matmul", operators=(ast.MatMult,), batched="matmul", total=True),
    _t("mm", total=True),
    # a copy: the diagonal of a matrix, or a matrix of a vector's entries on its diagonal
    _t("diag", total=True, derivative="constant"),
    # |a_i - b_j| is |b_j - a_i|: bit for bit without the matmul form, else up to rounding
    _t("cdist", meth=False, swapped="x.mT", derivative="bounded"),
    # helpers bound into generated code, by module path (``share_common_subexpressions``)
    _helper(set_distances.squared_distances, swapped="x.mT", swapped_fn=set_distances.transposed),
    _helper(full_extremes.min_of_all), _helper(full_extremes.max_of_all),
    _helper(row_dots.dot_rows, total=True),
    # ``f(x, m, start)``: reduces every dim from ``start`` on (masked_selections_to_where)
    *(_helper(f, batched="from_start", total=True, derivative="constant")
      for f in (full_extremes.min_of_selected, full_extremes.max_of_selected,
                full_extremes.first_min_of_selected, full_extremes.first_max_of_selected)),
    _helper(grad_free.detached, aliases=True, derivative="constant", may_be_number=True, **_ET),
    # the identity on a slice bound that raises where slicing with a float would
    _helper(slice_bounds.slice_bound, aliases=True, derivative="constant", int_or_raises=True,
            **_ET),
    # the mask of a slice of a selection: ``x[m][a:b]`` is ``x[selection_window(m, a, b)]``
    _helper(selection_windows.selection_window, boolean=True, derivative="constant"),
    # a fixed divisor under a mask: the number itself, or 1 where the mask is off
    _helper(masked_divisors.masked_divisor, derivative="constant", may_be_number=True, **_ET),
    # an in-place write's value in the written tensor's dtype (``inplace_writes_to_functional``)
    _helper(inplace_results.inplace_result, **_ET),
    _helper(stacked_views.stack_items, total=True, derivative="constant"),
    # a tensor operand and a row of Python numbers, in the dtype the number would give; a row
    # of 1 divides safely where a tensor condition deselects it
    _helper(number_operands.weak_int, batched="elementwise", total=True, derivative="constant"),
    _helper(number_operands.number_op, batched="elementwise", sanitize=(1, "1"),
            broadcasts=(0, 1), broadcast_numbers=2),
    # a batched operand lifted against another's items of higher rank (a view, or its cast)
    _helper(item_broadcasts.broadcast_item, aliases=True, total=True),
    # -- losses -----------------------------------------------------------------------------
    # selection: on masked selections, the loss per element (``reduction="none"``) masked
    # ("pointwise_loss"), or per row with the deselected rows' targets the ignored class
    # ("class_loss"; masked_selections_to_where)
    OpSpec("mse_loss", (_F + "mse_loss",), batched="pointwise_loss", selection="pointwise_loss",
           total=True),
    *(OpSpec(n, (_F + n,), batched="pointwise_loss", selection="pointwise_loss", total=True,
             derivative="bounded")
      for n in ("l1_loss", "smooth_l1_loss", "huber_loss")),
    # per element ``xlogy(t, t) - t * x`` (NaN at a negative target: not total); vmap has no
    # batching rule for it (a warning and a Python loop over the batch), the batched form does
    # not need one, and a vmapped body calls its terms (``kl_div_terms``)
    OpSpec("kl_div", (_F + "kl_div",), batched="pointwise_loss", vmap_fn=kl_div_terms.kl_div),
    # functorch's composite of it is NaN at an infinite logit; finite with finite gradients at
    # any finite logit, target and weights (no log of a probability: total)
    OpSpec("binary_cross_entropy_with_logits", (_F + "binary_cross_entropy_with_logits",),
           batched="pointwise_loss", selection="pointwise_loss", total=True,
           vmap_fn=bce_with_logits.binary_cross_entropy_with_logits),
    # functorch's composite takes an int32/bool target eager refuses
    OpSpec("cross_entropy", (_F + "cross_entropy",), batched="class_loss", selection="class_loss",
           derivative="bounded", vmap_fn=class_index_targets.cross_entropy),
    # functorch's composite weights the whole input before picking the targets
    OpSpec("nll_loss", (_F + "nll_loss",), batched="class_loss", selection="class_loss",
           derivative="bounded", vmap_fn=gathered_nll_loss.nll_loss),
    # ``x @ weight.T + bias`` over the last dim: every leading dim of ``x`` is a batch dim
    OpSpec("linear", (_F + "linear",), batched="linear"),
    OpSpec("cosine_similarity", ("torch.cosine_similarity", _F + "cosine_similarity"),
           batched="similarity", derivative="bounded", total=True, sink_selection="1",
           along_dim=(2, 2, 1),
           sink_selection_fn=cosine_products.cosine_similarity_unless,
           vmap_fn=cosine_products.cosine_similarity, dense_fn=cosine_products.broadcast_cosine_similarity),
    # the norm of ``x1 - x2 + eps`` over the last dim: finite, its gradient bounded (a norm's is
    # 0 at 0); contrastive and triplet losses call it per pair, under a tensor condition
    OpSpec("pairwise_distance", ("torch.pairwise_distance", _F + "pairwise_distance"),
           batched="pairwise", total=True, derivative="bounded"),
    # ``x`` over its norm along ``dim`` clamped to ``eps``: finite, as its gradient
    OpSpec(None, (_F + "normalize",), batched="normalize", total=True),
    # the other functional losses: no batched form, but known to change none of their
    # arguments, so a loop calling one with a tensor it also reads is split around it
    # (``triplet_margin_with_distance_loss`` calls the user's distance function: left unknown);
    # vmap runs the composite ones ...
    *(OpSpec(n, (_F + n,)) for n in (
        "binary_cross_entropy", "cosine_embedding_loss", "gaussian_nll_loss",
        "hinge_embedding_loss", "multilabel_soft_margin_loss", "poisson_nll_loss")),
    # ... and the others one item at a time (a per-utterance CTC loop stays a loop)
    *(OpSpec(n, (_F + n,), vmap_loops=True) for n in (
        "ctc_loss", "margin_ranking_loss", "multi_margin_loss", "multilabel_margin_loss",
        "soft_margin_loss", "triplet_margin_loss")),
    # the functional form of an in-place write (``inplace_writes_to_functional``): finite, with
    # finite gradients, wherever its indices are in range (it raises where they are not)
    _t("scatter", total=True, derivative="constant"),
    # ... and of an add into a row (``row_index_adds_to_writes``), batched by ``index_add_rows``
    _t("index_add", total=True, derivative="constant", batched="index_add"),
    # vmap gives a loop-invariant source the gradient of every row's slot: several times its own
    _t("select_scatter", vmap_wrong=()),
    # chunked (``options=``): no gradient reaches the batched rows
    OpSpec("linear_cross_entropy", (_F + "linear_cross_entropy",), vmap_wrong=("options",)),
    # -- layout, views, conversions -----------------------------------------------------------
    # a new tensor of one number (no operand: no gradient); in-place writes into it are their
    # functional forms (``inplace_writes_to_functional``). Not yet ``zeros``/``ones``: a bool
    # mask made by them and written per iteration is refused by ``check_mapped_body`` as an
    # unknown op's result, where functionally written it would index under vmap (no batching);
    # without ``dtype=`` they are float and written functionally (``loop_dataflow.float_filled``)
    _t("full", meth=False, total=True, derivative="constant", sizes=(0, "size")),
    _t("stack", meth=False, total=True, derivative="constant"),
    _t("cat", meth=False, total=True, derivative="constant"),
    _t("as_tensor", meth=False, total=True, aliases=True, number_first=True,
       from_data="display"),
    _t("tensor", meth=False, total=True, number_first=True, from_data="any"),
    # a range of numbers: no gradient flows through it, whatever its bounds
    _t("arange", meth=False, total=True, derivative="constant", batched="positions",
       sizes=(0, ..., "start", "end", "step")),
    # views, and conversions that return the tensor itself when there is nothing to do
    _t("flatten", fn=False, batched="flatten", dtype_of=0, total=True, aliases=True),
    _t("expand_as", fn=False, batched="same_rank", dtype_of=0, total=True, recomputed=True, aliases=True,
       metadata_operands=(1,)),
    _t("type_as", fn=False, batched="same_rank", dtype_of=1, total=True, aliases=True,
       metadata_operands=(1,)),
    _t("reshape", fn=False, batched="mask_reshape", dtype_of=0, total=True, recomputed=True, aliases=True,
       sizes=(1, ..., "shape")),
    _t("view", fn=False, batched="sized_view", dtype_of=0, total=True, recomputed=True,
       aliases=True, sizes=(1, ..., "size")),
    _t("squeeze", fn=False, dtype_of=0, total=True, recomputed=True, aliases=True),
    _t("expand", fn=False, dtype_of=0, total=True, recomputed=True, aliases=True, sizes=(1, ..., "size")),
    _t("contiguous", fn=False, batched="elementwise", dtype_of=0, total=True, aliases=True),
    *(_t(n, fn=False, dtype_of=0, total=True, recomputed=True, aliases=True)
      for n in ("t", "transpose", "permute", "movedim")),
    # per item as on the whole: a dtype or device. Recomputed: a dtype conversion fuses into
    # the kernel that reads it (a cached target-only one-hot in float is read from memory at
    # C times the size of its integer labels); a device copy is redone per call, as written.
    _t("to", fn=False, aliases=True, recomputed=True, **_ET),
    # A comparison of the labels with every class: fused into its reader, never worth caching.
    OpSpec("one_hot", (_F + "one_hot",), batched="one_hot", recomputed=True, integer=()),
    _t("item", fn=False, total=True, host="e.detach()", host_number="item"),
    _t("tolist", fn=False, total=True, host="e.detach()", derivative="constant"),
    # -- logic and tests ----------------------------------------------------------------------
    _t("logical_xor", boolean=True, recomputed=True),
    _t("isnan", boolean=True), _t("isinf", boolean=True), _t("isfinite", boolean=True),
    _t("isin", meth=False, boolean=True),
    *(_t(n, data_shape=True, one_d=True) for n in ("masked_select", "unique")),
    # positions: integers, which take no gradient
    *(_t(n, data_shape=True, derivative="constant") for n in ("nonzero", "argwhere")),
    # positions along a dim (in the flattened operand without one): integers, no gradient;
    # pure (unknown, a call might change its receiver in place)
    *(_t(n, total=True, derivative="constant", integer=()) for n in ("argmax", "argmin", "argsort")),
    _t("bitwise_not", extra=("operator.invert",), recomputed=True),
    *(OpSpec(None, (f"operator.{n}",), recomputed=True) for n in ("and_", "or_", "xor")),
    # -- metadata -----------------------------------------------------------------------------
    *(_t(n, fn=False, shape_query=True, metadata_only=True, total=True, batched="item_size")
      for n in ("size", "dim")),
    *(_t(n, fn=False, shape_query=True, metadata_only=True, total=True)
      for n in ("ndimension", "type", "nelement")),
    _t("numel", fn=False, shape_query=True, metadata_only=True, selection="numel", total=True,
       batched="item_size"),
    # a dtype, from its operands' dtypes (``loop_rules.HOST_WEAK``)
    _t("result_type", meth=False, shape_query=True, metadata_only=True, total=True,
       batched="result_type"),
    # ... the dtype an op with a Python number computes in (``loop_rules.HOST_WEAK_OPMATH``)
    _helper(dtype_queries.opmath_type, shape_query=True, metadata_only=True, total=True,
            batched="result_type"),
    *(_t(n, fn=False, metadata_only=True) for n in ("stride", "element_size", "new_tensor")),
    *(_t(n, fn=False, metadata_only=True, sizes=(1, ..., "size"))
      for n in ("new_zeros", "new_ones")),
    _t("new_full", fn=False, metadata_only=True, sizes=(1, "size")),
    *_aten("sym_size", "sym_numel", "sym_stride", metadata_only=True),
    # -- effects ------------------------------------------------------------------------------
    *_aten("rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like",
           "multinomial", "poisson", "binomial", "_standard_gamma", "_sample_dirichlet",
           "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
           "feature_alpha_dropout", "feature_dropout", "native_dropout", "rrelu",
           "rrelu_with_noise", "gumbel_softmax", "fractional_max_pool2d",
           "fractional_max_pool3d", effect="random"),
    *(OpSpec(n, methods=(n + "_",), effect="random")
      for n in ("bernoulli", "normal", "uniform", "random", "exponential", "geometric", "cauchy",
                "log_normal")),
    *_aten("empty", "empty_strided", "new_empty_strided", effect="uninitialized"),
    # the kernel updates the running statistics in place in train mode, their version counters
    # left as they were (an eval-mode call reads them: what a cache of it keys on never moves)
    *_aten("batch_norm", "instance_norm", "native_batch_norm", "_native_batch_norm_legit",
           "_native_batch_norm_legit_no_training", "_batch_norm_with_update",
           "_batch_norm_no_update", "cudnn_batch_norm", "miopen_batch_norm",
           effect="unversioned"),
    # Strides and offset count in the storage, not the view: on a row ``x[i]`` they address all
    # of ``x`` (a vectorized row is another view, at another offset).
    _t("as_strided", effect="storage"), _t("as_strided_scatter", effect="storage"),
    _t("as_strided_copy", meth=False, effect="storage"),
    OpSpec("as_strided_", methods=("as_strided_",), effect="storage"),
    *_aten("empty_like", "new_empty", effect="uninitialized", metadata_only=True),
    *_aten("_set_grad_enabled", "set_grad_enabled", "_enter_autocast", "_exit_autocast",
           "manual_seed", "seed", "set_default_dtype", "_record_function_enter",
           "_record_function_enter_new", "_record_function_exit", effect="global_state"),
    *_aten("_vmap_increment_nesting", "_vmap_decrement_nesting", "_add_batch_dim",
           "_remove_batch_dim", "_grad_increment_nesting", "_grad_decrement_nesting",
           "_wrap_for_grad", "_unwrap_for_grad", "_jvp_increment_nesting",
           "_jvp_decrement_nesting", "_func_increment_nesting", "_func_decrement_nesting",
           "_wrap_functional_tensor", "_unwrap_functional_tensor", "_autograd_grad",
           "_saved_tensors_hooks_disable", "_saved_tensors_hooks_enable",
           "set_inplace_requires_grad_allowed", "_make_dual", "_unpack_dual", "enter_dual_level",
           "exit_dual_level", "_set_fwd_grad_enabled", effect="functorch"),
    OpSpec("set_printoptions", ("torch.set_printoptions",), effect="global_state"),
    *(OpSpec(None, methods=(n,), effect="autograd")
      for n in ("backward", "register_hook", "retain_grad")),
    # a gradient inside the loss (GradNorm's per-task norms): each iteration's own backward
    OpSpec(None, ("torch.autograd.grad", "torch.autograd.backward"), effect="autograd"),
    OpSpec("_set_tensor_requires_grad", effect="functorch", creates_grad=True),
    OpSpec("requires_grad_", creates_grad=True),
    *(OpSpec(None, (f"operator.{n}",), effect="mutates")
      for n in ("setitem", "delitem", "iadd", "isub", "imul", "itruediv", "ifloordiv", "imod",
                "ipow", "imatmul", "iand", "ior", "ixor", "ilshift", "irshift")),
    *(OpSpec(None, (n,), effect="io")
      for n in ("print", "open", "input", "breakpoint", "torch.save", "torch.load",
                "logging.info", "logging.debug", "logging.warning", "warnings.warn")),
    # -- Python builtins ----------------------------------------------------------------------
    _builtin("len", total=True, shape_query=True, selection="len"),
    _builtin("isinstance", total=True, shape_query=True),
    _builtin("type", total=True, shape_query=True),  # one argument: its class, like isinstance
    _builtin("int", total=True, host="e.long()", host_number="int", host_raises=_NONFINITE),
    _builtin("float", total=True, host="e.detach() * 1.0", host_number="float"),
    _builtin("bool", total=True, host="torch.ne(e, 0)", python_number=True),
    # two arguments pick one (first wins on ties, as Python does); one iterates dim 0
    _builtin("min", total=True, derivative="constant", host_pair="torch.where(b < a, b, a)",
             host_int_pair="torch.clamp_max(a, b)",
             selection="first_min",
             host=_FIRST_EXTREME.format(nan="float('inf')", arg="argmin")),
    _builtin("max", total=True, derivative="constant", host_pair="torch.where(b > a, b, a)",
             host_int_pair="torch.clamp_min(a, b)",
             selection="first_max",
             host=_FIRST_EXTREME.format(nan="float('-inf')", arg="argmax")),
    _builtin("sum", host="e.sum(0)", derivative="constant"),
    *(_builtin(n, derivative="constant")
      for n in ("range", "zip", "enumerate", "list", "tuple", "round", "all", "any")),
    _builtin("pow"),
    # -- known for their sizes only (no aten name: ``zeros``/``ones`` stay out of the facts of
    # tensor ops, see ``full``); new tensors no gradient flows through, whatever their
    # arguments (``derivative``: ``torch.ones(n)`` needs no check that ``n`` takes no gradient)
    *(OpSpec(None, (f"torch.{n}",), sizes=(0, ..., "size"), derivative="constant")
      for n in ("zeros", "ones")),
    *(OpSpec(None, (f"torch.{n}",), sizes=(0, "window_length"), derivative="constant")
      for n in ("hann_window", "hamming_window", "blackman_window", "bartlett_window",
                "kaiser_window")),
    OpSpec(None, ("torch.eye",), sizes=(0, 1, "n", "m"), derivative="constant"),
    *(OpSpec(None, (f"torch.{n}",), sizes=(2, "steps"), derivative="constant")
      for n in ("linspace", "logspace")),
    OpSpec(None, methods=("repeat",), sizes=(1, ..., "repeats")),
    OpSpec(None, ("torch.tile",), ("tile",), sizes=(1, "dims")),
    OpSpec(None, ("torch.repeat_interleave",), ("repeat_interleave",),
           sizes=(1, "repeats", "output_size")),
    OpSpec(None, ("torch.narrow",), ("narrow",), sizes=(2, 3, "start", "length")),
    OpSpec(None, methods=("unflatten",), sizes=(2, "sizes")),
    OpSpec(None, ("torch.stft",), ("stft",), sizes=(1, 2, 3, "n_fft", "hop_length", "win_length")),
    OpSpec(None, ("torch.istft",), ("istft",),
           sizes=(1, 2, 3, "n_fft", "hop_length", "win_length", "length")),
    *(OpSpec(None, (f"torch.{n}",), (n,), sizes=(1, "k")) for n in ("topk", "kthvalue")),
    OpSpec(None, ("torch.split",), ("split",), sizes=(1, "split_size_or_sections", "split_size")),
    OpSpec(None, ("torch.chunk",), ("chunk",), sizes=(1, "chunks")),
    OpSpec(None, ("torch.roll",), ("roll",), sizes=(1, "shifts")),
    OpSpec(None, (_F + "pad",), sizes=(1, "pad")),
)
# Methods of Python objects (lists, dicts, sets, loggers, files, summary writers), by effect.
# Some share a name with a tensor op (``log``, ``add``): such calls count as both.
OBJECT_METHODS = {
    **dict.fromkeys(("write", "flush", "info", "debug", "warning", "log", "add_scalar"), "io"),
    **dict.fromkeys(("append", "extend", "insert", "pop", "remove", "clear", "update",
                     "appendleft", "extendleft", "popleft", "reverse", "popitem",
                     "setdefault", "add", "discard", "copy_", "__setitem__", "__delitem__"),
                    "mutates"),
}
# Methods of dicts, strings and numpy arrays that only read their receiver, and that no tensor
# has: a call of any other method no tensor has, on an object the loop does not make, may change
# anything (``counter.tick()``), and the loop keeps it (``passes/loops/helper_effects.py``).
READING_OBJECT_METHODS = frozenset({
    "get", "keys", "items", "count", "startswith", "endswith", "format", "join", "lower",
    "upper", "strip", "replace", "astype", "copy", "find", "rfind", "rsplit", "lstrip",
    "rstrip", "splitlines", "partition", "union", "intersection", "difference", "issubset",
    "issuperset", "fromkeys", "isdigit", "isalpha"})
# Random calls outside torch, by module prefix.
RANDOM_MODULES = ("random.", "numpy.random.")
# numpy functions that only read their arguments and make a new array or number: a loop's
# iterable made of them may be evaluated again, in front of the loop (``index_tuples_to_tensors``).
NUMPY_READING_FUNCTIONS = frozenset({
    "numpy.arange", "numpy.delete", "numpy.setdiff1d", "numpy.concatenate", "numpy.array",
    "numpy.asarray", "numpy.sum", "numpy.cumsum", "numpy.flatnonzero", "numpy.unique",
    "numpy.sort", "numpy.argsort", "numpy.roll"})

# Attributes of a tensor that read its metadata (``x.T``, ``x.grad`` read values or state) ...
METADATA_ATTRIBUTES = frozenset({"shape", "dtype", "device", "ndim", "layout", "is_cuda"})
# ... and those the same in every iteration, with their form on the batched value ``x``.
BATCHED_ATTRIBUTES = {"dtype": "x.dtype", "device": "x.device"}


def _index(key: Callable[[OpSpec], tuple]) -> dict:
    return {k: s for s in REGISTRY for k in key(s)}


_FUNCTIONS = _index(lambda s: s.functions)
_METHODS = _index(lambda s: s.methods)
_OPERATORS = _index(lambda s: s.operators)
_MATH = _index(lambda s: (s.host_math,) if s.host_math else ())


def by_call(name: str | None, meth: str | None) -> OpSpec:
    """The op called as function ``name`` or method ``meth`` (``resolve_call``/``method_name``);
    ``UNKNOWN`` when it is not listed."""
    if meth is not None:
        return _METHODS.get(meth, UNKNOWN)
    return _FUNCTIONS.get(name, UNKNOWN)


def by_operator(op: type) -> OpSpec:
    """The op of a Python operator: ``by_operator(ast.Div)`` is ``torch.div``'s."""
    return _OPERATORS.get(op, UNKNOWN)


def size_arguments(spec: OpSpec, positional: list, keywords: dict) -> list:
    """The arguments of a call of ``spec`` that are sizes (``OpSpec.sizes``): of
    ``positional`` (a method's receiver first) and ``keywords`` (by name)."""
    found = [keywords[s] for s in spec.sizes if isinstance(s, str) and s in keywords]
    for k, s in enumerate(spec.sizes):
        if isinstance(s, int):
            rest = spec.sizes[k + 1:k + 2] == (...,)
            found += positional[s:] if rest else positional[s:s + 1]
    return found


def by_host_math(name: str | None) -> OpSpec:
    """The op that ``math`` function ``name`` (``"math.log"``) computes on a number."""
    return _MATH.get(name, UNKNOWN)


def is_builtin(name: str | None, effects: tuple[str | None, ...] = (None,)) -> bool:
    """``name`` is a Python builtin listed here with one of ``effects`` (None: it has none)."""
    spec = _FUNCTIONS.get(name)
    return spec is not None and "." not in name and spec.effect in effects


def is_pure_method(meth: str) -> bool:
    """``x.<meth>(...)`` is a tensor op listed here without effects, and no object method
    (``add``, ``log``) has that name: it changes nothing."""
    return by_call(None, meth).aten is not None and effect(None, meth) is None


def unknown_method(meth: str) -> bool:
    """``recv.<meth>(...)`` may be a method of an object's own class: no tensor method, none
    listed above (``OBJECT_METHODS``, ``READING_OBJECT_METHODS``; a name a builtin container or
    string also has is not enough: ``model.encode(x)``). Its effects are unknown: it may change
    its object (``self.bn(x)``, ``counter.tick()``)."""
    return by_call(None, meth) is UNKNOWN and meth not in OBJECT_METHODS \
        and meth not in READING_OBJECT_METHODS and not hasattr(torch.Tensor, meth)


def gives_number(spec: OpSpec) -> bool:
    """A call of ``spec`` makes a Python number (``x.item()``, ``int(x)``, ``bool(x)``): no
    gradient flows through it."""
    return spec.host_number is not None or spec.python_number


def fx_names(fact: Callable[[OpSpec], object]) -> frozenset[str]:
    """Bare names (aten, method, function) of the ops with ``fact``, for matching FX nodes."""
    return frozenset(n for s in REGISTRY if fact(s) for n in s.names)


def operators(fact: Callable[[OpSpec], object]) -> tuple[type, ...]:
    """The Python operators of the ops with ``fact`` (for ``isinstance(node.op, ...)``)."""
    return tuple(o for s in REGISTRY if fact(s) for o in s.operators)


def is_inplace(name: str) -> bool:
    """Torch's naming rule: a method or function whose name ends in ``_`` (``add_``,
    ``index_put_``, ``torch.relu_``) writes into its first operand; dunders (``__setitem__``)
    are not covered by the rule."""
    return name.endswith("_") and not name.startswith("__")


def effect(name: str | None, meth: str | None, call: ast.Call | None = None) -> str | None:
    """What a call must not be moved or batched for: an op's effect, or an object method's; for
    torch functions matched by their last name too (``torch.nn.functional.dropout``). With the
    ``call``, a method named like an object's that the call shows to be the tensor op has none."""
    if meth is not None:
        if call is not None and _tensor_spelling(meth, call):
            return by_call(None, meth).effect
        return by_call(None, meth).effect or OBJECT_METHODS.get(meth)
    if name is None:
        return None
    if name.startswith(RANDOM_MODULES):
        return "random"
    found = by_call(name, None).effect
    if found is None and name.startswith("torch."):
        return _TORCH_EFFECTS.get(name.rsplit(".", 1)[-1])
    return found


_TORCH_EFFECTS = {n: s.effect for s in REGISTRY if s.effect for n in s.names}
# Values no logger, file, list, set or dict comes from: arithmetic and comparisons.
_COMPUTED = (ast.BinOp, ast.UnaryOp, ast.Compare)


def _tensor_spelling(meth: str, call: ast.Call) -> bool:
    """``recv.meth(...)`` is the tensor op of that name, not the object method: ``x.log()`` has
    no argument (a logger's ``log`` takes a level and a message), or the receiver is computed
    by arithmetic (``(a + b).log()``, ``(p - t).add(1)``), which makes no Python object, or by a
    tensor op no Python object has a method of (``x.exp().add(1)``, ``torch.exp(x).add(1)``)."""
    if by_call(None, meth) is UNKNOWN:
        return False
    receiver = call.func.value if isinstance(call.func, ast.Attribute) else None
    made_by = receiver.func.attr if isinstance(receiver, ast.Call) \
        and isinstance(receiver.func, ast.Attribute) else None
    return (meth == "log" and not call.args and not call.keywords) \
        or isinstance(receiver, _COMPUTED) or (made_by is not None and made_by not in OBJECT_METHODS
                                               and by_call(None, made_by) is not UNKNOWN)
