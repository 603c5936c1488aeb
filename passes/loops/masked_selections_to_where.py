"""Boolean-mask selections inside a loop body being vectorized become masked dense ops.

``x[m]`` keeps a data-dependent number of elements, which neither ``torch.vmap`` nor the batched
form can hold. When the selected values only flow through elementwise ops into a full reduction,
the same reduction over all elements, the deselected ones masked out, has the same value and the
same gradients. With ``_keep`` the mask reshaped to broadcast against ``x`` (``_mask_shape``
checks the shapes as indexing does) and ``x[m]``'s dense stand-in ``torch.where(_keep, x, False)``
(0 where deselected), this pattern::

    mask = target[i] > 0
    diff = pred[i][mask] - target[i][mask]
    total = total + (diff ** 2).sum()
    n = n + pred[i][mask].numel()

is converted to::

    mask = target[i] > 0
    _keep = mask.reshape(_mask_shape[mask.shape, pred[i].shape, target[i].shape])
    diff = torch.where(_keep, pred[i], False) - torch.where(_keep, target[i], False)
    total = total + torch.where(_keep, diff ** 2, 0).sum()
    _keep_1 = mask.reshape(_mask_shape[mask.shape, pred[i].shape])
    _vals = torch.where(_keep_1, pred[i], False)
    n = n + _keep_1.expand_as(_vals).sum()

and ``hardest = dist[same].max()`` (``same = labels == labels[i]``) to::

    _keep = same.reshape(_mask_shape[same.shape, dist.shape])
    _vals = torch.where(_keep, dist, False)
    _empty_max = _empty_max + (_keep.expand_as(_vals).sum() == 0)
    hardest = _max_of_selected(_vals, _keep.expand_as(_vals), 0)

(``full_extremes.max_of_selected``: eager's value and gradient over the selected elements).

The other forms (``DENSE_FORMS``, ``EXTREMES``): ``x[m].sum()`` -> ``torch.where(_keep, x,
0).sum()``; ``.mean()`` -> masked sum / number selected; ``len(x[m])`` (also spelled
``x[m].shape[0]``, ``x[m].size(0)``) -> ``_keep.sum()``;
``.amax()``/``.amin()`` like ``.max()`` with NaN ties counted as ``amax`` counts them; Python's
``min(pos)``/``max(neg)`` of a 1-D selection (multi-similarity mining) the first extreme item
(``full_extremes.first_min_of_selected``: a NaN first item stays, the picked item takes the
whole gradient), its empty selection the original's ``ValueError`` (read on the host, as the
original's iteration of the tensor reads every element); the
function forms ``torch.sum(x[m])``, ``torch.max(x[m])``, ... alike. Along the selected dim,
``x[m].sum(0)`` -> ``torch.where(_keep, x, 0)`` summed over the mask's dims, and ``x[m].mean(0)``
(a class centroid, ``emb[labels == c].mean(0)``) that sum / number selected;
``torch.logsumexp(x[m], 0)`` (the negatives of a contrastive loss written per row) ->
``torch.where(_keep, x, -inf)`` flattened over the mask's dims, its ``logsumexp(0)``, and
``dim=-1`` alike when ``x[m]`` is 1-D (``_whole_mask`` checks that ``m`` has ``x``'s whole
shape). A softmax or log_softmax along a dim of a selection by a 1-D mask (``SELECTED_MAPS``:
ListNet's ``F.softmax(t[q][m[q]], 0) * F.log_softmax(s[q][m[q]], 0)``) is a stand-in too: the op
on the stand-in filled with ``-inf`` where deselected, 0 there after it (``_vector_mask`` checks
the mask is 1-D). A reduction along a dim after the first of a selection of rows
(``OpSpec.along_dim``: a center loss's ``(feat[labels == c] - centers[c]).pow(2).sum(1).mean()``,
a norm, a cosine) reduces each row alone, so it runs on the stand-ins and its value per row is a
selection by the same mask (``_along_rows``)::

    _keep = m.reshape(_rows_mask[m.shape, feat.shape, centers[c].shape])
    _rows = (torch.where(_keep, feat, False) - centers[c]).pow(2).sum(1)
    _keep_1 = m.reshape(_mask_shape[m.shape, _rows.shape])
    ... torch.where(_keep_1, _rows, False) ..., reduced over the rows as above

where ``centers[c]``, the row at the loop's index or item of a tensor the loop does not change,
broadcasts against the selected rows (``RowsMask`` checks the mask 1-D, the dim not the
selected one, and the row operand of fewer dims than the rows, or with a first dim of 1; else
the original runs). Losses of selections (``LOSS_REDUCTIONS``): ``F.cross_entropy(x[m], y[m],
reduction=...)`` -> the call on the stand-ins with ``torch.where(_keep_y, y, ignore_index)`` as
targets; ``F.mse_loss(p[m], t[m])`` (pointwise losses) -> the loss per element, masked, summed
or averaged like ``.mean()``, its settings that the loop does not change (``weight=crit.weight``
of an ``nn`` loss module) checked None or 0-d (a longer one broadcasts against the selection).

Beyond one statement: an ``if`` test of counts and reductions joined by ``and``/``or``/``not``
(``if len(neg) == 0 or len(pos) <= 1: continue``) is converted part by part, and the converted
counts are marked (``ast_marks.SELECTION_COUNT``) so that the loop check sees a condition that
varies; a name rebound at the top of the body from its own stand-in (``v = v.clamp(0)``) stays a
stand-in; a stand-in selected by a condition on its values (``neg = neg[neg > pos.min()]``) is
a selection by its mask and that condition; ``lst.append(<stand-in>)`` appends the stand-in and
records the list's mask (``Dense.appends``), by which ``effects_to_outputs`` takes each
iteration's selection out of the stacked stand-ins after the loop.

What is rewritten: a selection ``x[m]``, ``x`` a name, attribute or subscript by names and
numbers, ``m`` a mask (a single comparison, ``~``/``&``/``|``/``^`` of masks, ``*``/``+`` of masks
one of which is a boolean op's call (``c.gt(lo) * c.le(hi)``), a call of a
boolean op (``OpSpec.boolean``), or a name every binding of which in the body is one; one that
does not vary too: an inner loop's ``dist[i][target != t_i]`` varies in the outer loop mapping
over it), whose value reaches a full reduction only through elementwise ops (arithmetic, single
comparisons, the registry's batched elementwise ops); a name bound once, at the top of the body,
to such a value is its stand-in, read only by such reductions. The selections of one reduction
share their mask; its other operands are numbers, 0-d values (reductions), names the body binds
once to numbers and such names by elementwise operators (``delta_p, delta_n = 1 - m, m``), or
names that do not vary, which the loop's runtime check requires to be numbers or 0-d tensors
(``Dense.guards``): a longer tensor broadcasts against the number of selected elements in the
original (in a reduction along rows, such a name is a row operand, ``mu`` of a class spread
``((feat[m] - mu) ** 2).sum(1)``: a number or a tensor, ``RowsMask`` checks its shape).

Why each piece:

* NaN/inf: the stand-ins are 0 where deselected, so what the mask excludes (NaN targets, say)
  never reaches an op or a gradient; ops with ``OpSpec.sanitize`` get safe operands there
  (``tensor_branches_to_where``'s double where), and the reduction masks once more.
* Shapes: ``x[m]`` raises ``IndexError`` unless ``m.shape == x.shape[:m.dim()]``, where ``where``
  would broadcast. ``_mask_shape`` (``MASK_SHAPE``, bound into the generated code) looks at shapes
  only, the same in every iteration: it raises the very ``IndexError`` indexing raises, and pads
  ``m``'s shape with 1s for row selections (``m.dim() < x.dim()``) and a leading 1 for a 0-d mask
  (``x[True]`` has a new leading dim). Selections of tensors of different ranks combined
  elementwise raise ``RuntimeError``: the original's broadcasting depends on how many elements
  are selected there (when it happens to work, the decorator's fallback runs the original).
* dtype: ``False`` promotes nothing, so the stand-in keeps ``x``'s dtype; sums of ints and bools
  are int64 as before; ``.sum().mean()`` raises for an integer mean as the original does; a
  logsumexp of them is of the default float dtype, as the ``-inf`` fill promotes them. Counts
  are Python ints in the original (tagged ``host_number``: accumulated counts fold back to ints).
* Empty selections: the sum is 0, the mean NaN and the logsumexp ``-inf`` in both;
  ``.max()``/``.min()`` of nothing raise ``RuntimeError`` in the original. The loop counts such
  iterations (an accumulator, masked like any other) and the stage ``raise_on_empty_selections``
  raises the original's error after the loop, before any of its results is stored. The dense
  value of an empty selection is 0: nothing NaN reaches the gradients of iterations a tensor
  condition deselects.
* Ties: ``x[m].max()`` splits the gradient evenly between the selected elements equal to the
  maximum, or between the selected NaNs: ``max_of_selected``'s backward does so (see
  ``full_extremes``). ``x[m].amax()`` splits it between the selected values equal to the
  maximum, unless the maximum is the ``-inf`` fill: every selected value ``-inf`` takes the mean
  of the ties instead, whose gradient is the same even split. It counts ties with ``==``: a NaN
  gives every selected element a NaN gradient, and the dense ``amax`` does the same.

Anything else is left alone, and then the whole body is (``loop_dataflow`` keeps the loop with
its "boolean mask indexing" reason): a selection stored, returned, shape-queried,
indexed again, under a conditional expression, or fed to a non-elementwise op or a reduction
with arguments; two masks in one op; a tuple index; Python ``and``/``not`` in a mask; a mask
bound twice or that does not vary. The converted selections are marked on the user's nodes
(``ast_marks.WHERE_CONVERTED``), so that check, run on the body as written, only sees what
is left.
"""
from __future__ import annotations

import ast
import builtins
import inspect
from dataclasses import dataclass, field
from dataclasses import replace as replace_field

import torch

from .. import ast_marks, full_extremes
from ..errors import Unsupported

from .. import loop_rules as rules
from .. import ops
from ..ast_tools import (PassContext, Transformer, clone, is_pure, replace, root_name, unparse,
                        walk)
from .loop_dataflow import (call_op, dtype_source, is_boolean, is_shape_query, loads,
                            makes_boolean, mask_operands_typed, method_name, stores,
                            write_entries)
from .batch_values import literal
from .plan import LoopPlan
from .tensor_branches_to_where import Sanitize

# Full reductions and counts of a selection (``x[m].sum()``, ``x[m].numel()`` the selected
# elements, ``len(x[m])`` the selected rows): ``OpSpec.selection`` names their dense form.
# Dense forms: ``k`` the mask shaped for ``v``, the elementwise value on the stand-ins; ``v`` is
# read once (templates reading it more often get a temporary).
LOGSUMEXP_ROWS = "torch.where(k, v, -torch.inf).flatten(0, max(m.dim(), 1) - 1).logsumexp(0)"
DENSE_FORMS = {
    "sum": "torch.where(k, v, 0).sum()",
    # .mean(): a 0-d float is itself; an integer sum raises as the original's mean does
    "mean": "torch.where(k, v, 0).sum().mean() / k.expand_as(v).sum()",
    "numel": "k.expand_as(v).sum()",
    "len": "k.sum()",
    # along the selected dim (``x[m].sum(0)``, class centroids): over the mask's dims (a 0-d
    # mask has one, the leading 1 of ``x[True]``); the mean of a size-1 dim raises for integers
    # as the original's mean does, an empty selection's mean is NaN in both
    "sum_rows": "torch.where(k, v, 0).sum(tuple(range(max(m.dim(), 1))))",
    "mean_rows": "torch.where(k, v, 0).sum(tuple(range(max(m.dim(), 1)))).unsqueeze(0).mean(0)"
                 " / k.sum()",
    # the deselected elements -inf, which adds nothing to a logsumexp (an empty selection is
    # -inf in both) and takes no gradient; integers become the default float dtype in both
    "logsumexp_rows": LOGSUMEXP_ROWS,
    # ``dim=-1`` of a 1-D selection (its mask reshaped by ``_whole_mask``): the selected dim
    "logsumexp_last": LOGSUMEXP_ROWS,
}
# Maps along a dim of a selection by a 1-D mask (``F.softmax(x[m], 0)``, ``F.log_softmax(s[m],
# dim=-1)``: ListNet's per-query distributions over the real items of a padded list): the op's
# form -> the fill of the deselected elements before the op, which adds nothing to its
# normalizer and takes no gradient. A 1-D mask keeps the selection's rank, so the op's dim is the
# same dim of the stand-in (``VECTOR_MASK`` checks the mask). The op's result is a stand-in,
# masked after the op (``MAP_RESULT``): an all-masked list's NaN never reaches a value or a
# gradient, and its reductions are the original's empty ones (a sum 0). The fill keeps ``v``'s
# dtype: ``full_like`` of an integer with -inf raises, as the op on integers does.
SELECTED_MAPS = {"softmax": "-torch.inf", "log_softmax": "-torch.inf"}
MAP_FILL = "torch.where(k, v, torch.full_like(v, {fill}))"
MAP_RESULT = "torch.where(k, r, 0)"
# Reductions of a selection along the selected dim that have a dense form: their op's form ->
# it, for ``dim=0`` and for ``dim=-1``.
ROW_FORMS = {"sum": "sum_rows", "mean": "mean_rows", "logsumexp": "logsumexp_rows"}
LAST_DIM_FORMS = {"logsumexp": "logsumexp_last"}
# ... max and min (see the module docstring): the dense reduction, the far end of the order
# (the fill of floats), the fill of other dtypes (<= / >= every selected value), and the steps.
# max()/min() split the gradient between the selected elements equal to the result, NaN ones
# when it is NaN (one call of the helper ``SELECTED_EXTREMES`` names); amax()/amin() count the
# ties with ``==``, so a NaN gives every selected element a NaN gradient, and split it between
# ``far`` ties with the mean of the ties.
EXTREMES = {"max": ("amax", "-torch.inf", "", "selected"),
            "min": ("amin", "torch.inf", "", "selected"),
            "amax": ("amax", "-torch.inf", "flat.amin(0, keepdim=True)", "equal_ties"),
            "amin": ("amin", "torch.inf", "flat.amax(0, keepdim=True)", "equal_ties"),
            # Python's builtins over a 1-D selection (``min(pos)``): the first extreme item
            "first_max": ("first_max", "", "", "selected"),
            "first_min": ("first_min", "", "", "selected")}
# The steps work on the flattened values (``flat``, selected where ``sel``) with reductions that
# keep their dim and a last ``[0]``: every value of one item has rank 1, which batch_loop_bodies
# batches (a 0-d reduction next to the values would not).
FILL = "torch.full_like(flat[:1], {far}) if flat.dtype.is_floating_point else {fill}"
MEAN_OF_TIES = ("(torch.where(ties, flat, 0).sum(0, keepdim=True)"
                " / ties.sum(0, keepdim=True).clamp(min=1)).type_as(top)")
FLAT = """
sel = k.expand_as(v).flatten()
flat = v.flatten()
"""
SELECTED_EXTREMES = {"amax": full_extremes.max_of_selected, "amin": full_extremes.min_of_selected,
                     "first_max": full_extremes.first_max_of_selected,
                     "first_min": full_extremes.first_min_of_selected}
# The builtins iterate the selection: its items are its elements only when it is 1-D (the mask
# has the whole shape), and an empty one raises ``ValueError`` (the loop reads it on the host).
BUILTIN_EXTREMES = ("first_max", "first_min")
EXTREME_STEPS = {
    "selected": ("", "{fn}(v, k.expand_as(v), 0)"),
    "equal_ties": (f"""{FLAT}
top = torch.where(sel, flat, {FILL}).{{reduce}}(0, keepdim=True)
ties = sel & (flat == top)
""", f"torch.where(top == {{far}}, {MEAN_OF_TIES}, top)[0]"),
}
# Counts are Python ints in the original (``NUMBER_FOLD`` turns accumulated ones back), and so
# is their integer arithmetic.
COUNT_KIND = "int"
COUNT_BINOPS = ops.operators(lambda s: s.integer is not None)
# Operators that are elementwise on selections (with numbers and 0-d values).
ELEMENTWISE_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
                      ast.BitAnd, ast.BitOr, ast.BitXor)
ELEMENTWISE_UNARYOPS = (ast.USub, ast.UAdd, ast.Invert)
# Checked before the loop (else it runs as written): an operand that does not vary is a number
# or a 0-d tensor; a selected value that does not vary is a tensor (``x.shape``, ``where``).
SCALAR_GUARD = "isinstance(x, (int, float)) or torch.is_tensor(x) and x.dim() == 0"
NONE_OR_SCALAR_GUARD = f"x is None or {SCALAR_GUARD}"
TENSOR_GUARD = "isinstance(x, torch.Tensor)"
# ... a value broadcast against selected rows, its shape for ``RowsMask`` (a number's is ``()``)
NUMBER_OR_TENSOR_GUARD = "isinstance(x, (int, float, torch.Tensor))"
ROW_OPERAND_SHAPE = "x.shape if isinstance(x, torch.Tensor) else ()"
# Losses of selections (``OpSpec.selection``) with ``reduction=`` "sum" or "mean" (the default):
# "pointwise_loss" (``F.mse_loss(p[m], t[m])``) is the loss per element on the stand-ins
# (``reduction="none"``), reduced as ``DENSE_FORMS`` reduce; "class_loss"
# (``F.cross_entropy(x[m], y[m])``) is the call as written on the stand-ins, the deselected
# rows' targets its ``ignore_index``, which its sum and its mean (over the weight of the rows
# not ignored) both leave out: the original's value, and an empty selection's NaN mean. Class
# indices are int64 (others raise in the loss, the bool ones would not once filled).
LOSS_REDUCTIONS = ("sum", "mean")
IGNORE_INDEX = inspect.signature(torch.nn.functional.cross_entropy).parameters["ignore_index"]
INDEX_GUARD = "isinstance(x, torch.Tensor) and x.dtype == torch.int64"


def _empty_error(op: str) -> str:
    """The message of the error a full ``max``/``min``/... of nothing raises."""
    try:
        getattr(torch.empty(0), op)()
    except RuntimeError as exc:
        return str(exc)
    return f"{op}(): the selection is empty"


def _empty_builtin_error(op: str) -> str:
    """The message of the ``ValueError`` Python's ``max``/``min`` of nothing raises."""
    try:
        getattr(builtins, op)(torch.empty(0))
    except ValueError as exc:
        return str(exc)
    return f"{op}() arg is an empty sequence"


EMPTY_ERRORS = {**{op: _empty_error(op) for op in ("max", "min", "amax", "amin")},
                **{f"first_{op}": _empty_builtin_error(op) for op in ("max", "min")}}


class MaskShape:
    """``_mask_shape[m.shape, x.shape, ...]``: the shape the mask ``m`` is reshaped to so that it
    broadcasts against the dense stand-ins of ``x[m], ...``. Raises what indexing raises when
    ``m`` cannot index ``x``. Shapes only: the same answer for every iteration, which lets
    batch_loop_bodies pass it each item's shapes (``per_item_shapes``)."""
    per_item_shapes = True

    def __getitem__(self, shapes: tuple) -> tuple[int, ...]:
        mask, *bases = (tuple(s) for s in shapes)
        for base in bases:
            if base[:len(mask)] != mask:
                # the original's own error and message
                torch.zeros(()).expand(base)[torch.zeros((), dtype=torch.bool).expand(mask)]
                raise IndexError(f"mask of shape {list(mask)} cannot index a tensor of shape "
                                 f"{list(base)}")
        ranks = sorted({len(b) for b in bases})
        if len(ranks) > 1:
            raise RuntimeError(f"selections with masks of shape {list(mask)} of tensors of "
                               f"ranks {ranks} are combined elementwise: how they broadcast "
                               "depends on the number of selected elements")
        return (mask or (1,)) + (1,) * (ranks[0] - len(mask))


MASK_SHAPE = MaskShape()


class ClassRows(MaskShape):
    """``_class_rows[m.shape, x.shape]``: ``_mask_shape``'s answer for the input of a class
    loss on selected rows (``F.cross_entropy(x[m], y[m])``), when ``m`` selects rows (rank 1)
    of an ``x`` with a class dim (rank 2 or more). Any other mask makes the loss read the
    selected elements, or the rows after the mask's dims, as classes, which the dense form
    does not: a ``RuntimeError``, and the decorator runs the original."""

    def __getitem__(self, shapes: tuple) -> tuple[int, ...]:
        shape = super().__getitem__(shapes)
        if len(shapes[0]) != 1 or len(shapes[1]) < 2:
            raise RuntimeError(f"a class loss of the selection by a mask of shape "
                               f"{list(shapes[0])} of a tensor of shape {list(shapes[1])}: only "
                               "rows of a tensor with a class dim have a dense form")
        return shape


CLASS_ROWS = ClassRows()


class WrittenMask(MaskShape):
    """``_written_mask[m.shape, x.shape]``: ``_mask_shape``'s answer for a write ``x[m] = v``
    (``masked_writes_to_where``), except that a 0-d mask writes all of ``x`` or nothing, with
    no new leading dim (reading ``x[True]`` has one)."""

    def __getitem__(self, shapes: tuple) -> tuple[int, ...]:
        shape = super().__getitem__(shapes)
        return shape if shapes[0] else shape[1:]


WRITTEN_MASK = WrittenMask()


class WholeMask(MaskShape):
    """``_whole_mask[m.shape, x.shape, ...]``: ``_mask_shape``'s answer when ``m`` has the whole
    shape of every ``x`` (at least one dim), so that ``x[m]`` is 1-D and its last dim is the
    selected one (``torch.logsumexp(x[m], -1)``). Any other mask makes the last dim another
    one: a ``RuntimeError``, and the decorator runs the original."""

    def __getitem__(self, shapes: tuple) -> tuple[int, ...]:
        shape = super().__getitem__(shapes)
        if not shapes[0] or any(len(b) != len(shapes[0]) for b in shapes[1:]):
            raise RuntimeError(f"a reduction over the last dim of the selection by a mask of "
                               f"shape {list(shapes[0])} of a tensor of shape "
                               f"{list(shapes[1])}: not the selected dim")
        return shape


WHOLE_MASK = WholeMask()


class VectorMask(MaskShape):
    """``_vector_mask[m.shape, x.shape, ...]``: ``_mask_shape``'s answer when ``m`` is 1-D, so
    that ``x[m]`` has ``x``'s rank and a map along one of its dims (``SELECTED_MAPS``) runs
    along the same dim of the stand-in. A mask of other rank makes ``x[m]``'s dims other ones:
    a ``RuntimeError``, and the decorator runs the original."""

    def __getitem__(self, shapes: tuple) -> tuple[int, ...]:
        if len(shapes[0]) != 1:
            raise RuntimeError(f"a softmax along a dim of the selection by a mask of shape "
                               f"{list(shapes[0])}: only a 1-D mask keeps the dims")
        return super().__getitem__(shapes)


VECTOR_MASK = VectorMask()


class RowsMask(VectorMask):
    """``_rows_mask[m.shape, x.shape, ..., b.shape, ...]``: ``_vector_mask``'s answer for the
    operands of a reduction along ``dim`` of a selection of rows (``(x[m] - c).pow(2).sum(1)``),
    the last ``operands`` shapes those of values broadcast against the selected rows
    (``c = centers[k]``). Along a dim after the first, each row is reduced alone, which the
    stand-in's rows are, and a row operand broadcasts the same against the selected rows and
    the stand-in's when it has fewer dims, or as many with a first dim of 1 (``[1, D]``);
    another one broadcasts against the number of selected rows, and ``dim`` counted from the
    end may be the selected dim: a ``RuntimeError``, and the decorator runs the original."""

    def __init__(self, dim: int, operands: int):
        self.dim, self.operands = dim, operands

    def __getitem__(self, shapes: tuple) -> tuple[int, ...]:
        bases, operands = shapes[:len(shapes) - self.operands], shapes[len(shapes) - self.operands:]
        for rank in {len(b) for b in bases[1:]}:
            if self.dim + rank == 0 or any(len(b) > rank or len(b) == rank and b[0] != 1
                                           for b in operands):
                raise RuntimeError(f"a reduction along dim {self.dim} of the selection of rows "
                                   f"of a tensor of rank {rank} next to operands of shapes "
                                   f"{[list(b) for b in operands]}: not row by row")
        return super().__getitem__(bases)


ROWS_MASKS: dict[tuple[int, int], RowsMask] = {}  # one per (dim, operands), bound by identity


def rows_mask(dim: int, operands: int) -> RowsMask:
    return ROWS_MASKS.setdefault((dim, operands), RowsMask(dim, operands))


@dataclass
class Dense:
    """The body with its selections converted, and what the vectorized loop needs besides."""
    body: list[ast.stmt]
    guards: list[ast.expr] = field(default_factory=list)    # loop's runtime checks
    empty: dict[str, str] = field(default_factory=dict)     # counter -> error message
    host_errors: dict[str, tuple[str, ast.AST]] = field(default_factory=dict)  # ValueErrors
    appends: dict[str, str] = field(default_factory=dict)   # list -> mask of its items
    stand_ins: frozenset[str] = frozenset()                  # names bound to stand-ins
    refused: str = ""                                        # why the selections stay


def rewrite(body: list[ast.stmt], seeds: set[str], ctx: PassContext,
            outer_masks: frozenset[str] = frozenset(), ints: frozenset[str] = frozenset(),
            maps: bool = True) -> Dense:
    """``body`` (the loop body over ``seeds``, not modified) with its selections converted, or
    ``body`` itself when it has none or one of them cannot be converted. ``outer_masks``: names
    the function binds only to boolean tensors, whose rows (``mask[i]``) are masks too;
    ``ints``: names that hold Python ints (the loop index); ``maps``: whether maps along a dim
    of a selection (``SELECTED_MAPS``) are converted."""
    lenient = _lenient_masks(body, ctx) | outer_masks
    if not any(_is_selection(sub, lenient, ctx) for s in body for sub in walk(s)
               if isinstance(sub, ast.Subscript)):
        return Dense(body)
    work = clone(body)
    # by node, not id(): the converter frees nodes of ``work``, and makes new ones
    users = dict(zip(_walk(work), _walk(body)))
    converter = _Converter(work, seeds, lenient, outer_masks, ctx, ints)
    converter.maps = maps
    try:
        dense = converter.block(work, top=True)
    except (_Refused, Unsupported) as exc:
        return Dense(body, refused=str(exc))
    for sub in converter.converted:
        ast_marks.put(users[sub], ast_marks.WHERE_CONVERTED, True)
    for call in converter.counted:
        ast_marks.put(users[call], ast_marks.SELECTION_COUNT, True)
    return Dense(dense, converter.guards, converter.empty, converter.host_errors,
                 converter.appends, frozenset(converter.selected))


def _at(node: ast.AST) -> str:
    """`` (line N)``: where the user wrote ``node``, for a refusal's reason; empty for a node
    the passes made without a location."""
    return f" (line {node.lineno})" if getattr(node, "lineno", None) else ""


class _Refused(Exception):
    """A selection that stays: the body is left as written."""


def _walk(stmts: list[ast.stmt]):
    for s in stmts:
        yield from walk(s)


def _lenient_masks(body: list[ast.stmt], ctx: PassContext) -> set[str]:
    """Names bound to a boolean anywhere in the body (what loop_dataflow's check looks for),
    also a mask the body makes by its dtype (``keep = torch.ones_like(row, dtype=torch.bool)``)."""
    names: set[str] = set()
    changed = True
    while changed:
        changed = False
        for s in (n for n in _walk(body) if isinstance(n, ast.Assign)):
            if is_boolean(s.value, names, ctx) or makes_boolean(s.value, ctx):
                new = {t.id for t in s.targets if isinstance(t, ast.Name)} - names
                names |= new
                changed |= bool(new)
    return names


def _is_selection(sub: ast.Subscript, lenient: set[str], ctx: PassContext) -> bool:
    return any(is_boolean(e, lenient, ctx) or _mask_row(e, lenient) for e in write_entries(sub))


def _mask_row(e: ast.expr, masks: set[str]) -> bool:
    """``m[i]``, ``m[i, j]``: a subscript of a mask name by names and numbers is boolean too."""
    return isinstance(e, ast.Subscript) and isinstance(e.value, ast.Name) \
        and e.value.id in masks and not isinstance(e.slice, ast.Slice) and all(
            _index_entry(x) and not isinstance(x, ast.Slice)
            for x in (e.slice.elts if isinstance(e.slice, ast.Tuple) else [e.slice]))


@dataclass
class _Group:
    """The selections of one reduction: their mask and the tensors they index."""
    mask: ast.expr
    key: str
    bases: dict[str, ast.expr]           # ast.dump -> base expression
    keep: str = ""                       # reuse: the keep a selected name was computed with
    # a selection of a stand-in (``neg[neg > t]``): the stand-in's keep, the condition's chain
    within: tuple[str, "_Chain"] | None = None
    mapped: bool = False                 # a map along a dim of it (``SELECTED_MAPS``) reads it
    rows: tuple[str, ...] = ()           # holes of reductions along rows (``_along_rows``)
    # operands broadcast against the selected rows (``centers[c]``): dump -> expression
    operands: dict[str, ast.expr] = field(default_factory=dict)


@dataclass
class _Chain:
    """An elementwise value of selections: its expression with placeholders for the leaves."""
    group: _Group
    expr: ast.expr
    leaves: dict[str, tuple[str, ast.expr]]   # placeholder -> ("select" | "name" | "scalar", node)
    guards: list[ast.expr]                    # for the loop's runtime check, once converted


class _Converter:
    def __init__(self, body: list[ast.stmt], seeds: set[str], lenient: set[str],
                 outer_masks: frozenset[str], ctx: PassContext, ints: frozenset[str]):
        self.ctx = ctx
        self.seeds = seeds
        self.ints = ints
        self.lenient = lenient
        counts: dict[str, int] = {}
        for s in (n for n in _walk(body) if isinstance(n, ast.stmt)):
            for name in stores(s):
                counts[name] = counts.get(name, 0) + 1
        self.assigned = set(counts)
        self.once = {n for n, k in counts.items() if k == 1}
        top = [t.id for s in body if isinstance(s, ast.Assign) for t in s.targets
               if isinstance(t, ast.Name)]
        self.top_only = {n for n in self.assigned if top.count(n) == counts[n]}
        self.masks = strict_masks(body, ctx) | (outer_masks - self.assigned)
        self.scalars: set[str] = set()
        self.scalar_guards: dict[str, list[ast.expr]] = {}  # a fixed name -> its leaves' checks
        self.selected: dict[str, _Group] = {}   # name bound to a dense stand-in -> its group
        self.converted: list[ast.Subscript] = []
        self.counted: list[ast.Call] = []        # the counts among the converted reductions
        self.appends: dict[str, str] = {}
        self.guards: list[ast.expr] = []
        self.empty: dict[str, str] = {}
        self.host_errors: dict[str, tuple[str, ast.AST]] = {}
        self.counters: dict[str, str] = {}
        self.pre: list[ast.stmt] = []
        self.keeps: dict[tuple, str] = {}        # in this statement: (mask, bases) -> keep
        self.mask_of: dict[str, ast.Name] = {}   # keep -> the mask it reshapes
        self.maps = True                         # maps are converted (``rewrite``'s ``maps``)
        self.pending: list[ast.expr] = []
        self.holes = 0
        # reductions along rows: hole -> (its operands' chain, dim); hole -> the name of its value
        self.rows: dict[str, tuple[_Chain, int]] = {}
        self.rows_values: dict[str, str] = {}
        self.operands: dict[str, ast.expr] | None = None  # row operands allowed: those found

    def _sub(self, template: str, loc: ast.AST, **subs) -> object:
        return replace(template, loc=loc, torch_name=self.ctx.torch_name, **subs)

    # -- statements ------------------------------------------------------------------------------
    def block(self, stmts: list[ast.stmt], top: bool) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for s in stmts:
            self.pre, self.keeps = [], {}
            if isinstance(s, ast.If):
                s.test = _test(self, s.test)
                pre = self.pre
                s.body = self.block(s.body, False)
                s.orelse = self.block(s.orelse, False)
                out += pre + [s]
                continue
            if top and _appended_selection(self, s) is not None:
                out += _append(self, s)
                continue
            if top and _binds_selection(self, s):
                name = s.targets[0].id
                chain = self.chain(s.value)
                keep = self.keep(chain.group, s.value)
                s.value = self.dense(chain, keep)
                self.selected[name] = _Group(chain.group.mask, chain.group.key,
                                             chain.group.bases, keep, chain.group.within)
                out += self.pre + [s]
                continue
            if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.refuse_inside(s)
                out.append(s)
                continue
            scalar = top and _binds_scalar(self, s)
            fixed = _binds_fixed(self, s) if top else None
            new = _Rewrite(self).visit(s)
            if scalar:
                self.scalars.add(s.targets[0].id)
            for name, guards in (fixed or {}).items():
                self.scalars.add(name)
                self.scalar_guards[name] = guards
            out += self.pre + [new]
        return out

    # -- expressions -----------------------------------------------------------------------------
    def expr(self, e: ast.expr) -> ast.expr:
        return _Rewrite(self).visit(e)

    def refuse_inside(self, node: ast.AST) -> None:
        """``node`` is evaluated as written: no selection or stand-in may occur in it."""
        for n in walk(node):
            if isinstance(n, ast.Subscript) and _is_selection(n, self.lenient, self.ctx):
                raise _Refused("selection in a conditional expression or nested function")
            if isinstance(n, ast.Name) and n.id in self.selected:
                raise _Refused(f"`{n.id}` read outside a reduction")

    def reduce(self, call: ast.expr) -> ast.expr | None:
        """The dense form of a full reduction of selections, None when ``call`` is not one."""
        found = _reduction(call, self.ctx)
        if found is None:
            return None
        form, operand = found
        if form == "loss":
            return _loss(self, call)
        chain = self.chain(operand)
        if chain is None:
            return None
        whole = form in LAST_DIM_FORMS.values() or form in BUILTIN_EXTREMES
        keep = self.keep(chain.group, call, *((WHOLE_MASK, "whole_mask") if whole else ()))
        value = self.dense(chain, keep)
        rows = {*ROW_FORMS.values(), *LAST_DIM_FORMS.values()}
        if form in ("sum", *rows) and isinstance(chain.expr, ast.Name) \
                and chain.expr.id in chain.leaves:
            value = _bare(value)  # the reduction's own where masks a bare selection
        if form in rows:
            if keep not in self.mask_of:
                return None
            return self._sub(DENSE_FORMS[form], call, k=keep, v=value, m=self.mask_of[keep])
        if form == "sum":
            return self._sub(DENSE_FORMS[form], call, k=keep, v=value)
        if form in ("len", "numel"):
            self.counted.append(call)
        if form == "len":
            out = self._sub(DENSE_FORMS[form], call, k=keep)
            ast_marks.put(out, ast_marks.HOST_NUMBER, COUNT_KIND)
            return out
        vals = self.ctx.namer.new("vals")
        self.pre += self._sub("v = e", call, v=vals, e=value)
        if form in ("mean", "numel"):
            out = self._sub(DENSE_FORMS[form], call, k=keep, v=vals)
            if form == "numel":
                ast_marks.put(out, ast_marks.HOST_NUMBER, COUNT_KIND)
            return out
        counter = self.counters.get(form)
        if counter is None:
            counter = self.counters[form] = self.ctx.namer.new(f"empty_{form}")
            if form in BUILTIN_EXTREMES:
                self.host_errors[counter] = (f"ValueError({EMPTY_ERRORS[form]!r})", call)
            else:
                self.empty[counter] = EMPTY_ERRORS[form]
        self.pre += self._sub("c = c + (k.expand_as(v).sum() == 0)", call, c=counter, k=keep,
                              v=vals)
        reduce_, far, fill, ties = EXTREMES[form]
        fn = SELECTED_EXTREMES[reduce_]
        fn = self.ctx.bind(fn, fn.__name__) if ties == "selected" else ""
        steps, result = (t.format(far=far, fill=fill, reduce=reduce_, fn=fn)
                         for t in EXTREME_STEPS[ties])
        used = {n.id for n in walk(ast.parse(steps)) if isinstance(n, ast.Name)}
        names = {n: self.ctx.namer.new(n) for n in ("sel", "flat", "nan", "top", "ties")
                 if n in used}
        self.pre += self._sub(steps, call, k=keep, v=vals, **names)
        return self._sub(result, call, k=keep, v=vals, **names)

    # -- chains of elementwise ops on selections --------------------------------------------------
    def chain(self, e: ast.expr) -> _Chain | None:
        """``e`` as an elementwise value of selections (all with one mask), else None."""
        leaves: dict[str, tuple[str, ast.expr]] = {}
        groups: list[_Group] = []
        self.pending = []
        self.mapped = False
        try:
            expr = self._chain(e, leaves, groups)
        except _NotChain:
            return None
        if not groups:
            return None
        if len({g.key for g in groups}) > 1:
            raise _Refused("selections with different masks in one elementwise op")
        bases = {k: b for g in groups for k, b in g.bases.items()}
        reuse = {g.keep for g in groups}
        keep = reuse.pop() if len(reuse) == 1 else ""
        if keep and any(g.bases.keys() != bases.keys() for g in groups):
            keep = ""
        rows = tuple(h for g in groups for h in g.rows)
        return _Chain(_Group(groups[0].mask, groups[0].key, bases, "" if rows else keep,
                             groups[0].within, self.mapped, rows), expr, leaves, self.pending)

    def _hole(self, kind: str, node: ast.expr, leaves: dict) -> ast.Name:
        self.holes += 1
        name = f"__leaf{self.holes}"
        leaves[name] = (kind, node)
        return ast.copy_location(ast.Name(name, ast.Load()), node)

    def _chain(self, e: ast.expr, leaves: dict, groups: list[_Group]) -> ast.expr:
        if isinstance(e, ast.Subscript) and _is_selection(e, self.lenient, self.ctx):
            groups.append(self._selection(e))
            return self._hole("select", e, leaves)
        if isinstance(e, ast.Name) and e.id in self.selected:
            groups.append(self.selected[e.id])
            return self._hole("name", e, leaves)
        if _is_constant(e):
            return clone(e)
        if _scalar(self, e):
            return self._hole("scalar", e, leaves)
        if isinstance(e, ast.BinOp) and isinstance(e.op, ELEMENTWISE_BINOPS):
            return ast.copy_location(ast.BinOp(self._chain(e.left, leaves, groups), e.op,
                                               self._chain(e.right, leaves, groups)), e)
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ELEMENTWISE_UNARYOPS):
            return ast.copy_location(ast.UnaryOp(e.op, self._chain(e.operand, leaves, groups)), e)
        if isinstance(e, ast.Compare) and len(e.ops) == 1:
            return ast.copy_location(ast.Compare(self._chain(e.left, leaves, groups), e.ops,
                                                 [self._chain(e.comparators[0], leaves, groups)]),
                                     e)
        if isinstance(e, ast.Call) and call_op(e, self.ctx).selection in SELECTED_MAPS:
            return _map(self, e, leaves, groups)
        if isinstance(e, ast.Call) and call_op(e, self.ctx).along_dim:
            return _along_rows(self, e, leaves, groups)
        if self.operands is not None and _row_operand(self, e):
            self.operands[ast.dump(e)] = e
            return self._hole("row", e, leaves)
        if isinstance(e, ast.Call) and not any(isinstance(a, ast.Starred) for a in e.args) \
                and all(k.arg is not None and _is_constant(k.value) for k in e.keywords):
            if call_op(e, self.ctx).batched != "elementwise":
                raise _NotChain
            if method_name(e, self.ctx) is not None:
                recv = self._chain(e.func.value, leaves, groups)
                func = ast.copy_location(ast.Attribute(recv, e.func.attr, ast.Load()), e.func)
            else:
                func = e.func
            args = [self._chain(a, leaves, groups) for a in e.args]
            return ast.copy_location(ast.Call(func, args, clone(e.keywords)), e)
        raise _NotChain

    def _selection(self, sub: ast.Subscript) -> _Group:
        """The group of one selection ``x[m]``; refuses what cannot be converted."""
        base, mask = selected_from(sub, self.ints)
        if isinstance(base, ast.Name) and base.id in self.selected:
            return _reselection(self, sub, self.selected[base.id])
        if isinstance(mask, ast.Tuple) or not _is_mask(self, mask):
            raise _Refused("mask indexing with other entries, or not a mask")
        if not _simple(base) or any(isinstance(n, ast.Subscript) and _is_selection(
                n, self.lenient, self.ctx) for n in walk(base)) \
                or loads(base) & (self.assigned - self.once) or loads(base) & self.selected.keys():
            raise _Refused("the selected tensor is not a plain name, attribute or subscript")
        if not loads(base) & (self.assigned | self.seeds):  # else a tensor, or already checked
            self.pending.append(self._sub(TENSOR_GUARD, base, x=base))
        return _Group(mask, ast.dump(mask), {ast.dump(base): base})

    # -- code ------------------------------------------------------------------------------------
    def keep(self, group: _Group, loc: ast.AST, shape: MaskShape = MASK_SHAPE,
             stem: str = "mask_shape") -> str:
        """The name of the group's mask shaped for its stand-ins (a statement in ``pre``; one
        per statement and group) by ``shape`` (bound as ``stem``)."""
        if group.mapped:
            shape, stem, group = _vector_keep(self, group, shape)
        if group.rows:
            _rows_values(self, group, loc)
        if group.keep and shape is MASK_SHAPE:
            return group.keep
        key = (group.key, tuple(group.bases), tuple(group.operands), stem)
        if key in self.keeps:
            return self.keeps[key]
        mask = group.mask
        if group.keep:  # a stand-in rebound from its own selection: its keep has what it holds
            mask = ast.Name(group.keep, ast.Load())
        elif group.within:  # the stand-in's elements that are selected and meet the condition
            outer, condition = group.within
            mask = self._sub("k & c", mask, k=outer, c=self.dense(condition, outer))
        if not isinstance(mask, ast.Name):
            name = self.ctx.namer.new("mask")
            self.pre += self._sub("m = e", mask, m=name, e=mask)
            mask = ast.Name(name, ast.Load())
        shapes = ast.Tuple([self._sub("m.shape", loc, m=mask)]
                           + [self._sub("x.shape", loc, x=b) for b in group.bases.values()]
                           + [self._sub("x.shape" if isinstance(b, (ast.Call, ast.Subscript))
                                        else ROW_OPERAND_SHAPE, loc, x=b)
                              for b in group.operands.values()],
                           ast.Load())
        keep = self.ctx.namer.new("keep")
        self.pre += self._sub("k = m.reshape(s[shapes])", loc, k=keep, m=mask,
                              s=self.ctx.bind(shape, stem), shapes=shapes)
        self.keeps[key] = keep
        self.mask_of[keep] = mask
        return keep

    def dense(self, chain: _Chain, keep: str) -> ast.expr:
        """The chain on the stand-ins; risky ops get safe operands where deselected."""
        try:
            expr = Sanitize(keep, set(), "", self.ctx).visit(clone(chain.expr))
        except Unsupported as exc:
            raise _Refused(exc.reason) from exc
        self.guards += chain.guards
        subs = {}
        for hole, (kind, node) in chain.leaves.items():
            if kind == "select":
                self.converted.append(node)
                subs[hole] = self._sub("torch.where(k, x, False)", node, k=keep,
                                       x=selected_from(node, self.ints)[0])
                if keep in self.mask_of:
                    ast_marks.put(subs[hole], ast_marks.SELECTS, self.mask_of[keep].id)
            elif kind == "scalar":
                subs[hole] = self.expr(node)
            elif kind == "map":  # its operand's holes come before it: filled already
                subs[hole] = _dense_map(self, node, keep, subs)
            elif kind == "rows":  # a value per row, computed by ``keep``
                subs[hole] = self._sub("torch.where(k, x, False)", node, k=keep,
                                       x=ast.Name(self.rows_values[hole], ast.Load()))
            else:
                subs[hole] = node
        return _Fill(subs).visit(expr)


def _binds_selection(conv: _Converter, s: ast.stmt) -> bool:
    """``name = <elementwise value of selections>``, bound once, or rebound from its own
    stand-in (``v = v.clamp(0)``): each binding, in order, a stand-in."""
    if not (isinstance(s, ast.Assign) and len(s.targets) == 1
            and isinstance(s.targets[0], ast.Name)):
        return False
    name = s.targets[0].id
    return name in conv.top_only and (name not in loads(s.value) or name in conv.selected) \
        and conv.chain(s.value) is not None


def _is_mask(conv: _Converter, m: ast.expr) -> bool:
    if not strict_mask(m, conv.masks, conv.ctx):
        return False
    if loads(m) & ((conv.assigned - conv.once) | conv.selected.keys()):
        return False  # a name bound twice could be a different mask at each use
    return not any(isinstance(n, ast.Subscript) and _is_selection(n, conv.lenient, conv.ctx)
                   for n in walk(m))


def _map(conv: _Converter, call: ast.Call, leaves: dict, groups: list[_Group]) -> ast.Name:
    """A map along a dim of selections (``SELECTED_MAPS``): a hole holding the call as written,
    its operand the chain of the operand (``_dense_map`` fills it). Only the operand and an int
    ``dim``: other settings (``dtype=``) are not taken."""
    if not conv.maps:
        raise _NotChain
    method = method_name(call, conv.ctx) is not None
    operand, *dims = [call.func.value, *call.args] if method else call.args or [None]
    dims += [k.value for k in call.keywords if k.arg == "dim"]
    if operand is None or len(dims) != 1 or type(literal(dims[0])) is not int \
            or any(k.arg != "dim" for k in call.keywords) \
            or any(isinstance(a, ast.Starred) for a in call.args):
        raise _NotChain
    selections = len(groups)
    inner = conv._chain(operand, leaves, groups)
    if len(groups) == selections:  # of numbers or 0-d values: no dim is the selection's
        raise _NotChain
    conv.mapped = True
    node = clone(call)
    if method:
        node.func.value = inner
    else:
        node.args[0] = inner
    return conv._hole("map", node, leaves)


def _dense_map(conv: _Converter, call: ast.Call, keep: str, subs: dict) -> ast.expr:
    """``MAP_RESULT`` of the call on its operand's stand-in filled (``MAP_FILL``); ``subs``:
    the stand-ins of the holes in the operand."""
    method = method_name(call, conv.ctx) is not None
    operand = call.func.value if method else call.args[0]
    try:
        operand = Sanitize(keep, set(), "", conv.ctx).visit(operand)
    except Unsupported as exc:
        raise _Refused(exc.reason) from exc
    vals = conv.ctx.namer.new("vals")
    conv.pre += conv._sub("v = e", call, v=vals, e=_Fill(subs).visit(operand))
    fill = SELECTED_MAPS[call_op(call, conv.ctx).selection]
    filled = conv._sub(MAP_FILL.format(fill=fill), call, k=keep, v=vals)
    if method:
        call.func.value = filled
    else:
        call.args[0] = filled
    return conv._sub(MAP_RESULT, call, k=keep, r=call)


def _along_rows(conv: _Converter, call: ast.Call, leaves: dict,
                groups: list[_Group]) -> ast.Name:
    """A reduction along a dim after the first of selections of rows (``OpSpec.along_dim``:
    ``(x[m] - centers[c]).pow(2).sum(1)``, ``F.cosine_similarity(f, c.unsqueeze(0))``): a hole
    for its value per row, a selection by the same mask of the op on the stand-ins
    (``_rows_values`` computes it), whose operands may broadcast values with no selection in
    them against the rows (``_row_operand``). Its other settings are numbers."""
    count, at, default = call_op(call, conv.ctx).along_dim
    method = method_name(call, conv.ctx) is not None
    args = [call.func.value, *call.args] if method else list(call.args)
    kws = {k.arg: k.value for k in call.keywords}
    dim = args[at] if len(args) > at else kws.get("dim", default)
    dim = dim if type(dim) is int or dim is None else literal(dim)
    settings = args[count:at] + args[at + 1:] + [v for k, v in kws.items() if k != "dim"]
    if None in kws or len(args) < count or any(isinstance(a, ast.Starred) for a in args) \
            or type(dim) is not int or dim == 0 or not all(map(_is_constant, settings)):
        raise _NotChain
    inner: tuple[dict, list[_Group]] = ({}, [])
    outer, conv.operands = conv.operands, {}
    try:
        chained = [conv._chain(a, *inner) for a in args[:count]]
        operands = conv.operands
    finally:
        conv.operands = outer
    found = inner[1]
    if not found:
        raise _NotChain
    if len({g.key for g in found}) > 1:
        raise _Refused("selections with different masks in one reduction along rows")
    if any(g.within for g in found):
        raise _Refused("a reduction along rows of a selection of a selection")
    node = clone(call)
    if method:
        node.func.value, node.args[:count - 1] = chained[0], chained[1:]
    else:
        node.args[:count] = chained
    group = _Group(found[0].mask, found[0].key, {k: b for g in found for k, b in g.bases.items()},
                   rows=tuple(h for g in found for h in g.rows), operands=operands)
    hole = conv._hole("rows", call, leaves)
    conv.rows[hole.id] = (_Chain(group, node, inner[0], []), dim)
    groups.append(_Group(group.mask, group.key, {}, rows=(hole.id,)))
    return hole


def _row_operand(conv: _Converter, e: ast.expr) -> bool:
    """A tensor with no selection in it, broadcast against selected rows: the row at the loop's
    index or item (``centers[c]``) of a tensor the loop does not change (checked a tensor before
    it), a name or attribute the loop does not change (``mu``: checked a number or a tensor, its
    shape ``()`` for a number), and registered ops without effects of such a value with numbers
    (``centers[c].unsqueeze(0)``). ``RowsMask`` checks its shape."""
    if isinstance(e, (ast.Name, ast.Attribute)) and _simple(e) \
            and not loads(e) & (conv.assigned | conv.seeds):
        conv.pending.append(conv._sub(NUMBER_OR_TENSOR_GUARD, e, x=e))
        return True
    if isinstance(e, ast.Call):
        method = method_name(e, conv.ctx) is not None
        args = [e.func.value, *e.args] if method else list(e.args)
        return bool(args) and _effect_free(e, conv.ctx) and _row_operand(conv, args[0]) \
            and all(map(_is_constant, args[1:] + [k.value for k in e.keywords]))
    base = e.value if isinstance(e, ast.Subscript) else None
    if not (isinstance(base, (ast.Name, ast.Attribute)) and _simple(base)
            and isinstance(e.slice, ast.Name) and e.slice.id in conv.seeds - conv.assigned
            and not loads(base) & (conv.assigned | conv.seeds)):
        return False
    conv.pending.append(conv._sub(TENSOR_GUARD, base, x=base))
    return True


def _rows_values(conv: _Converter, group: _Group, loc: ast.AST) -> None:
    """The values per row of the group's reductions along rows, each computed once (a
    statement in ``pre``: the op on its operands' stand-ins, kept by ``RowsMask``), added to
    the group's bases: the rows of a tensor selected by the group's mask."""
    for hole in group.rows:
        name = conv.rows_values.get(hole)
        if name is None:
            chain, dim = conv.rows[hole]
            keep = conv.keep(replace_field(chain.group, keep=""), loc,
                             rows_mask(dim, len(chain.group.operands)), "rows_mask")
            name = conv.rows_values[hole] = conv.ctx.namer.new("rows")
            conv.pre += conv._sub("r = e", loc, r=name, e=conv.dense(chain, keep))
        value = ast.Name(name, ast.Load())
        group.bases[ast.dump(value)] = value


def _vector_keep(conv: _Converter, group: _Group,
                 shape: MaskShape) -> tuple[MaskShape, str, _Group]:
    """How a group a map reads is kept: by the user's mask itself, checked 1-D (a stand-in's
    keep is reshaped already: its rank is no longer the mask's; a stand-in's keep not of a
    selection of a selection is its mask's, reshaped)."""
    if shape not in (MASK_SHAPE, WHOLE_MASK):
        raise _Refused("a softmax of a selection fed to a class loss")
    if group.within:
        raise _Refused("a softmax of a selection of a selection")
    return VECTOR_MASK, "vector_mask", replace_field(group, keep="")


def _length_spelled(e: ast.expr) -> ast.Call | None:
    """``len(x)`` for ``x.shape[0]``, ``x.size(0)``, ``x.size()[0]``: the same int for a selection
    (which has a first dim), None for other expressions."""
    if isinstance(e, ast.Subscript) and literal(e.slice) == 0 and (
            isinstance(e.value, ast.Attribute) and e.value.attr == "shape"
            or isinstance(e.value, ast.Call) and _size_call(e.value, ())):
        x = e.value.value if isinstance(e.value, ast.Attribute) else e.value.func.value
    elif isinstance(e, ast.Call) and _size_call(e, (0,)):
        x = e.func.value
    else:
        return None
    return ast.copy_location(ast.Call(ast.Name("len", ast.Load()), [x], []), e)


def _size_call(e: ast.Call, args: tuple) -> bool:
    return isinstance(e.func, ast.Attribute) and e.func.attr == "size" and not e.keywords \
        and tuple(literal(a) for a in e.args) == args


def _reduction(call: ast.expr, ctx: PassContext) -> tuple[str, ast.expr] | None:
    """(dense form, operand) of a full reduction or count call (a count also spelled
    ``x.shape[0]``, ``x.size(0)``); ("loss", call) for a loss reduced to one value
    (``LOSS_REDUCTIONS``)."""
    call = _length_spelled(call) or call
    if not isinstance(call, ast.Call):
        return None
    form = call_op(call, ctx).selection
    if form in ("pointwise_loss", "class_loss"):
        reduction = next((k.value for k in call.keywords if k.arg == "reduction"),
                         ast.Constant("mean"))
        found = isinstance(reduction, ast.Constant) and reduction.value in LOSS_REDUCTIONS
        return ("loss", call) if found else None
    if form is None or any(k.arg != "dim" for k in call.keywords) \
            or any(isinstance(a, ast.Starred) for a in call.args):
        return None
    method = method_name(call, ctx) is not None
    if not method and not call.args:
        return None
    operand, *dims = [call.func.value, *call.args] if method else call.args
    dims += [k.value for k in call.keywords]
    if not dims:
        return (form, operand) if form in DENSE_FORMS or form in EXTREMES else None
    dim = literal(dims[0]) if len(dims) == 1 else None
    forms = {0: ROW_FORMS, -1: LAST_DIM_FORMS}.get(dim, {}) if type(dim) is int else {}
    return (forms[form], operand) if form in forms else None


def _scalar(conv: _Converter, e: ast.expr) -> bool:
    """A 0-d value or a number: broadcasts the same against a selection and its stand-in."""
    if isinstance(e, ast.Name) and e.id in conv.scalars:
        conv.pending += [clone(g) for g in conv.scalar_guards.get(e.id, [])]
        return True
    if _reduction(e, conv.ctx) is not None:  # reductions and counts are 0-d or numbers
        return True
    if isinstance(e, (ast.Name, ast.Attribute)) and _simple(e) \
            and not (loads(e) & (conv.assigned | conv.seeds)) and conv.operands is None:
        conv.pending.append(conv._sub(SCALAR_GUARD, e, x=e))
        return True
    return False  # (along rows, a fixed name is a row operand: ``_row_operand``)


def _binds_scalar(conv: _Converter, s: ast.stmt) -> bool:
    """``name = <a reduction or count>``, ``name`` bound once: a 0-d value or a number."""
    return (isinstance(s, ast.Assign) and len(s.targets) == 1
            and isinstance(s.targets[0], ast.Name) and s.targets[0].id in conv.once
            and _reduction(s.value, conv.ctx) is not None)


def _binds_fixed(conv: _Converter, s: ast.stmt) -> dict[str, list[ast.expr]] | None:
    """``delta = 1 - conv.m`` (``a, b = 1 - m, m`` alike), each name bound once to numbers
    and values bound before the loop by elementwise operators: the same in every
    iteration, a number or 0-d tensor when what it reads is (name -> those checks)."""
    if not isinstance(s, ast.Assign) or len(s.targets) != 1:
        return None
    target, value = s.targets[0], s.value
    pairs = list(zip(target.elts, value.elts)) if isinstance(target, ast.Tuple) \
        and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts) \
        else [(target, value)]
    found = {}
    for name, e in pairs:
        guards = _fixed_guards(conv, e)
        if not (isinstance(name, ast.Name) and name.id in conv.once) or guards is None:
            return None
        found[name.id] = guards
    return found

def _fixed_guards(conv: _Converter, e: ast.expr) -> list[ast.expr] | None:
    """The checks that ``e``, numbers and fixed values joined by elementwise operators, is
    a number or 0-d tensor; None when it is not such an expression."""
    if _is_constant(e):
        return []
    if isinstance(e, ast.Name) and e.id in conv.scalars:
        return list(conv.scalar_guards.get(e.id, []))
    if isinstance(e, (ast.Name, ast.Attribute)) and _simple(e) \
            and not loads(e) & (conv.assigned | conv.seeds):
        return [conv._sub(SCALAR_GUARD, e, x=e)]
    if isinstance(e, ast.UnaryOp) and isinstance(e.op, ELEMENTWISE_UNARYOPS):
        return _fixed_guards(conv, e.operand)
    if isinstance(e, ast.BinOp) and isinstance(e.op, ELEMENTWISE_BINOPS):
        left, right = _fixed_guards(conv, e.left), _fixed_guards(conv, e.right)
        return None if left is None or right is None else left + right
    return None


def _test(conv: _Converter, e: ast.expr) -> ast.expr:
    """An ``if`` test: ``and``/``or``/``not`` of conditions on counts and reductions
    (``len(neg) == 0 or len(pos) <= 1``) convert part by part, for tensor_branches_to_where
    to combine as tensors; a part the original may skip (after the first) must not raise,
    so it takes no max/min of a selection (which raises on an empty one)."""
    if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.Not):
        e.operand = _test(conv, e.operand)
        return e
    if not isinstance(e, ast.BoolOp):
        return conv.expr(e)
    if any(_reduction(n, conv.ctx) is not None and _reduction(n, conv.ctx)[0] in EXTREMES
           for v in e.values[1:] for n in walk(v)):
        conv.refuse_inside(e)
    e.values = [_test(conv, v) for v in e.values]
    return e


def _appended_selection(conv: _Converter, s: ast.stmt) -> ast.expr | None:
    """The value of ``lst.append(<elementwise value of selections>)``, ``lst`` a name the body
    does not bind; None for other statements."""
    call = s.value if isinstance(s, ast.Expr) else None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and call.func.attr == "append" and isinstance(call.func.value, ast.Name)
            and call.func.value.id not in conv.assigned and len(call.args) == 1
            and not call.keywords and not isinstance(call.args[0], ast.Starred)):
        return None
    return call.args[0] if conv.chain(call.args[0]) is not None else None


def _reselection(conv: _Converter, sub: ast.Subscript, outer: _Group) -> _Group:
    """``neg[neg + margin > pos.min()]``, ``neg`` a stand-in: a selection by the stand-in's
    mask and a condition on its selected values (elementwise: the condition of an element
    stays its own, so it can be evaluated on the stand-in, where deselected elements do not
    count). Refuses other masks."""
    pending = conv.pending
    condition = conv.chain(sub.slice) if not isinstance(sub.slice, ast.Tuple) else None
    conv.pending = pending
    if condition is None or condition.group.key != outer.key or not outer.keep:
        raise _Refused("a selection of a selection by a mask that is no condition on it")
    return _Group(sub.slice, f"{outer.key} & {ast.dump(sub.slice)}",
                  {ast.dump(sub.value): sub.value}, within=(outer.keep, condition))


def _append(conv: _Converter, s: ast.Expr) -> list[ast.stmt]:
    """``lst.append(x[m])`` -> ``lst.append(<x's stand-in>)``, the list's items then taken by
    the stacked masks after the loop (``Dense.appends``, ``effects_to_outputs``). One mask
    per list: its items are the selections of every iteration."""
    name = s.value.func.value.id
    chain = conv.chain(s.value.args[0])
    if chain.group.within:
        raise _Refused(f"`{name}` appended a selection of a selection")
    keep = conv.keep(chain.group, s)
    s.value.args[0] = conv.dense(chain, keep)
    mask = chain.group.mask
    if not isinstance(mask, ast.Name):
        mask = ast.Name(conv.ctx.namer.new("taken"), ast.Load())
        conv.pre += conv._sub("m = e", s, m=mask, e=chain.group.mask)
    if conv.appends.setdefault(name, mask.id) != mask.id:
        raise _Refused(f"`{name}` appended selections by two masks")
    return conv.pre + [s]


def _loss(conv: _Converter, call: ast.Call) -> ast.expr | None:
    """The dense form of a loss of selections (``LOSS_REDUCTIONS``), None when its operands
    are no selections."""
    kind = call_op(call, conv.ctx).selection
    if len(call.args) != 2 or any(isinstance(a, ast.Starred) for a in call.args):
        return None
    chains = [conv.chain(a) for a in call.args]
    if not any(chains):
        return None
    if not all(chains) or chains[0].group.key != chains[1].group.key:
        raise _Refused("a loss of a selection and of a value that is not one")
    kws = {k.arg: k.value for k in call.keywords}
    # a tensor argument of a pointwise loss broadcasts against the selected elements: one the
    # loop does not change (an ``nn`` loss module's ``weight``) must be None or 0-d, checked
    settings = [v for k, v in kws.items() if k != "reduction" and not _is_constant(v)]
    if None in kws or not all(kind in ("class_loss", "pointwise_loss") and _invariant(conv, v)
                              for v in settings):
        raise _Refused("a loss of selections with arguments that are not numbers")
    if set(kws) & {"size_average", "reduce"}:  # they override the dense form's reduction
        raise _Refused("a loss of selections with `size_average`/`reduce`")
    if kind == "pointwise_loss":
        conv.guards += [conv._sub(NONE_OR_SCALAR_GUARD, v, x=v) for v in settings]
    if kind == "pointwise_loss":
        return _pointwise_loss(conv, call, chains, kws)
    ignore = kws.get("ignore_index", ast.Constant(IGNORE_INDEX.default))
    for base in chains[1].group.bases.values():
        root = root_name(base)
        if root is None or root in conv.assigned:
            raise _Refused("class indices not read from a tensor the loop does not change")
        conv.guards.append(conv._sub(INDEX_GUARD, base, x=ast.Name(root, ast.Load())))
    keep_x = conv.keep(chains[0].group, call, CLASS_ROWS, "class_rows")
    keep_y = conv.keep(chains[1].group, call)
    x = conv.dense(chains[0], keep_x)
    y = conv.dense(chains[1], keep_y)
    if isinstance(chains[1].expr, ast.Name) and chains[1].expr.id in chains[1].leaves:
        y = _bare(y)  # filled with the ignored class instead of 0
    y = conv._sub("torch.where(k, y, i)", call, k=keep_y, y=y, i=ignore)
    return ast.copy_location(ast.Call(call.func, [x, y], clone(call.keywords)), call)


def _invariant(conv: _Converter, e: ast.expr) -> bool:
    """A name, attribute or subscript the loop does not change (a class weight)."""
    return _simple(e) and not loads(e) & (conv.assigned | conv.seeds)


def _pointwise_loss(conv: _Converter, call: ast.Call, chains: list[_Chain],
                    kws: dict) -> ast.expr:
    """``torch.where(k, f(a, b, reduction="none"), 0).sum()`` (``DENSE_FORMS``'s mean)."""
    a, b = chains
    group = _Group(a.group.mask, a.group.key, {**a.group.bases, **b.group.bases})
    keep = conv.keep(group, call)
    keywords = [ast.keyword(k, clone(v)) for k, v in kws.items() if k != "reduction"]
    keywords.append(ast.keyword("reduction", ast.Constant("none")))
    loss = ast.copy_location(ast.Call(call.func, [conv.dense(a, keep), conv.dense(b, keep)],
                                      keywords), call)
    vals = conv.ctx.namer.new("vals")
    conv.pre += conv._sub("v = e", call, v=vals, e=loss)
    reduction = kws.get("reduction", ast.Constant("mean")).value
    return conv._sub(DENSE_FORMS[reduction], call, k=keep, v=vals)


def strict_mask(m: ast.expr, names: set[str], ctx: PassContext) -> bool:
    """A boolean tensor whatever the values: comparisons, bitwise logic, boolean calls."""
    if isinstance(m, ast.Name):
        return m.id in names
    if isinstance(m, ast.Subscript):
        return _mask_row(m, names)
    if isinstance(m, ast.Compare):
        return len(m.ops) == 1 and _pure(m, ctx)
    if isinstance(m, ast.UnaryOp) and isinstance(m.op, ast.Invert):
        return strict_mask(m.operand, names, ctx)
    if isinstance(m, ast.BinOp) and type(m.op) in rules.MASK_BINOPS:  # not and/or/not: bool()
        return strict_mask(m.left, names, ctx) and strict_mask(m.right, names, ctx) \
            and mask_operands_typed(m, ctx)
    if isinstance(m, ast.Call):
        kept = dtype_source(m, ctx)
        of_mask = kept is not None and strict_mask(kept, names, ctx)  # ``(t >= t[i]).squeeze()``
        return (call_op(m, ctx).boolean or of_mask or makes_boolean(m, ctx)) and _pure(m, ctx)
    return False

def strict_masks(body: list[ast.stmt], ctx: PassContext) -> set[str]:
    """Names every binding of which in the body is a mask."""
    binds: dict[str, list[ast.expr | None]] = {}
    for s in (n for n in _walk(body) if isinstance(n, ast.stmt)):
        for name in stores(s):
            value = s.value if isinstance(s, ast.Assign) and len(s.targets) == 1 \
                and isinstance(s.targets[0], ast.Name) else None
            binds.setdefault(name, []).append(value)
    names: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, values in binds.items():
            if name not in names and all(v is not None and strict_mask(v, names, ctx)
                                         for v in values):
                names.add(name)
                changed = True
    return names


class _NotChain(Exception):
    pass


class _Fill(Transformer):
    def __init__(self, subs: dict[str, ast.expr]):
        self.subs = subs

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return self.subs.get(node.id, node)


class _Rewrite(Transformer):
    """Reductions of selections in one statement become their dense forms; a selection or a
    stand-in anywhere else refuses the body."""

    def __init__(self, conv: _Converter):
        self.conv = conv

    def visit_Call(self, node: ast.Call) -> ast.AST:
        dense = self.conv.reduce(node)
        if dense is not None:
            return dense
        return self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, COUNT_BINOPS) and all(
                ast_marks.get(x, ast_marks.HOST_NUMBER) == COUNT_KIND
                or (isinstance(x, ast.Constant) and type(x.value) is int)
                for x in (node.left, node.right)):
            ast_marks.put(node, ast_marks.HOST_NUMBER, COUNT_KIND)  # `len(x[m]) + 1` is still a Python int
        return node

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        dense = self.conv.reduce(node) if _length_spelled(node) is not None else None
        if dense is not None:  # `x.shape[0]` of a selection: its count
            return dense
        if _is_selection(node, self.conv.lenient, self.conv.ctx):
            raise _Refused(f"`{unparse(node)}` is a selection that is not reduced{_at(node)}")
        return self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.conv.selected:
            raise _Refused(f"`{node.id}` read outside a reduction{_at(node)}")
        return node

    def _as_written(self, node: ast.AST) -> ast.AST:
        self.conv.refuse_inside(node)
        return node

    visit_IfExp = visit_BoolOp = visit_Lambda = _as_written
    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _as_written


def _bare(leaf: ast.expr) -> ast.expr:
    """``torch.where(k, x, False)`` -> ``x``."""
    return leaf.args[1] if isinstance(leaf, ast.Call) and len(leaf.args) == 3 else leaf


def _is_constant(e: ast.expr) -> bool:
    if isinstance(e, ast.UnaryOp) and isinstance(e.op, (ast.USub, ast.UAdd)):
        e = e.operand
    return isinstance(e, ast.Constant) and type(e.value) in (int, float, bool)


def _simple(e: ast.expr) -> bool:
    """A name, attribute or subscript by names, numbers and slices: cheap to evaluate again."""
    if isinstance(e, ast.Name):
        return True
    if isinstance(e, ast.Attribute):
        return _simple(e.value)
    if isinstance(e, ast.Subscript):
        entries = e.slice.elts if isinstance(e.slice, ast.Tuple) else [e.slice]
        return _simple(e.value) and all(_index_entry(x) for x in entries)
    return False


def selected_from(sub: ast.Subscript, ints: frozenset[str]) -> tuple[ast.expr, ast.expr]:
    """(the tensor, the index) of a selection ``x[m]``; ``x[i, m]`` with ``i`` Python ints
    (names in ``ints``, int constants) selects from the row ``x[i]`` as ``x[i][m]`` does."""
    mask, base = sub.slice, sub.value
    if isinstance(mask, ast.Tuple) and all(_int_entry(e, ints) for e in mask.elts[:-1]):
        rows = mask.elts[:-1]
        base = ast.copy_location(ast.Subscript(
            base, rows[0] if len(rows) == 1 else ast.Tuple(rows, ast.Load()), ast.Load()), sub)
        mask = mask.elts[-1]
    return base, mask


def _int_entry(x: ast.expr, ints: frozenset[str]) -> bool:
    """An int constant, or a name holding a Python int."""
    return (isinstance(x, ast.Name) and x.id in ints) or (
        isinstance(x, ast.Constant) and type(x.value) is int)


def _index_entry(x: ast.expr) -> bool:
    if isinstance(x, ast.Slice):
        return all(p is None or _index_entry(p) for p in (x.lower, x.upper, x.step))
    return isinstance(x, ast.Name) or _is_constant(x)


def _pure(e: ast.expr, ctx: PassContext) -> bool:
    """Evaluating ``e`` a statement earlier changes nothing: ``is_pure`` with known tensor ops."""
    return is_pure(e, lambda call: (is_shape_query(call, ctx) or call_op(call, ctx).boolean
                                    or call_op(call, ctx).batched == "elementwise"
                                    or _effect_free(call, ctx)))


def _effect_free(call: ast.Call, ctx: PassContext) -> bool:
    """A registered tensor op without effects: a function of its operands (``torch.arange(
    len(x)) != i``, the own-item mask of a per-anchor loss), a read to the host too
    (``c.gt(lo.item())``, a calibration bin's mask: the batched form reads ``lo`` as a tensor,
    ``OpSpec.host``)."""
    op = call_op(call, ctx)
    return op.aten is not None and op.effect is None


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    """The plan's body with its selections converted; the body as written is kept for the check
    (the converted selections in it marked ``ast_marks.WHERE_CONVERTED``)."""
    it = plan.iteration
    dense = rewrite(plan.body, {it.index} | {name for name, _ in it.elements}, ctx,
                    frozenset(plan.masks), frozenset({it.index}))
    plan.written, plan.body = plan.body, dense.body
    plan.selection_checks = dense.guards
    plan.empty_selections = {**plan.empty_selections, **dense.empty}  # inner loops' too
    plan.host_errors.update(dense.host_errors)
    plan.selection_appends = dense.appends
    plan.stand_ins = dense.stand_ins
    plan.selections_kept = dense.refused or plan.selections_kept  # masked_select's, if any
    plan.empty_selections_at = dense.body[0] if dense.body else None
    return plan
