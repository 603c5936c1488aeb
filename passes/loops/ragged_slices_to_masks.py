"""Stage: slices whose bounds vary per iteration (ragged lengths) become selections by a mask.

``x[i, :L]`` with ``L = lengths[i].item()`` (or ``x[i, :lengths[i]]``, ``x[i][a:b]``) keeps a
number of rows that differs between iterations: no batched form holds it. Rows ``a:b`` of ``R``
are the rows whose position ``p`` (``arange(len(R))``) has ``a' <= p < b'``, with Python's
reading of a negative bound (``a' = a + len(R)`` when ``a < 0``; bounds past either end select
up to the end, as slicing clamps). So the slice becomes ``R[_in]``, which
``masked_selections_to_where`` turns into masked dense ops with counts (``sum``, ``mean``,
``len``, ``max``/``min`` with their errors on empty selections)::

    L = lengths[i].item()                      L = lengths[i].item()
    s = s + x[i, :L].sum() / L         ->      _pos = torch.arange(x[i].shape[0], device=x[i].device)
                                               _in = _pos < _slice_bound(L) + x[i].shape[0] * (_slice_bound(L) < 0)
                                               s = s + x[i][_in].sum() / L

Rows sliced alike in one statement share the mask (``F.mse_loss(p[i, :L], t[i, :L])`` selects
both by ``_in``: masked_selections_to_where combines selections of one mask only); rows of
different lengths then fail the mask's shape check, and the decorator runs the original.
The masked forms batch without vmap (``batch_loop_bodies``): ``x[i].shape[0]`` is the rows'
``shape[1]``, so the positions are one fixed tensor and the mask ``_pos < L[:, None]``.

A write of a number past (or up to) per-item lengths becomes a masked write of the row, the
positions taken along the ragged slice's dim of the row and broadcast against the dims after it::

    mask[i, :, lengths[i]:] = 0        ->      _pos = torch.arange(mask[i].shape[1], device=mask[i].device)
                                                   .reshape((-1,) + (1,) * (mask[i].dim() - 1 - 1))
                                               _in = _pos >= _slice_bound(lengths[i]) + mask[i].shape[1] * (_slice_bound(lengths[i]) < 0)
                                               mask[i] = torch.where(_in, 0, mask[i])

(``torch.where`` with a Python number keeps the row's dtype; the written positions get no
gradient, as in the original. Every bound goes through ``slice_bound``: a float raises the
original's ``TypeError``.) Written: ``X[P, :, ..., a:b, :, ...] = <number literal>`` and the
statement ``X[P, ..., a:b, ...].fill_(<number literal>)``, ``P`` plain indices, then ragged and
full slices: several ragged slices (``mask[i, :T[i], :N[i]] = True``, a mask from two lengths)
write the box where every one of their position tests holds.

What is read: a subscript whose one slice with a varying bound (step absent or 1) comes
right after plain indices (names, numbers; the sliced dim is the first of the row ``R`` they
pick) and before nothing but full slices ``:``, where ``R`` is a name, attribute or subscript by
names and numbers, or the flattened one of those, ``s.flatten()[:L]``, named before the
statement (``_flat = s.flatten()``; ``flatten`` has no effect to move). All or nothing: when
``masked_selections_to_where`` would not convert every such selection (a slice stored, fed to a
call with no dense form, ``cumsum(1)``, ...), the body stays as written and
``check_mapped_body`` keeps the loop with the slice-bound reason at the user's line.
"""
from __future__ import annotations

import ast

from .. import ast_marks
from ..ast_tools import PassContext, clone, replace
from ..slice_bounds import slice_bound
from .batch_values import number_literal
from .loop_dataflow import depends, variant_names
from .masked_selections_to_where import _index_entry, _simple
from .masked_selections_to_where import rewrite as to_where
from .plan import LoopPlan

_POSITIONS = "p = torch.arange(r.shape[0], device=r.device)"
# positions along dim k of the row, as a column broadcasting against the dims after it
_POSITIONS_AT = ("p = torch.arange(r.shape[k], device=r.device)"
                 ".reshape((-1,) + (1,) * (r.dim() - k - 1))")
_LOWER = "p >= a + r.shape[k] * (a < 0)"
_UPPER = "p < a + r.shape[k] * (a < 0)"


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    seeds = {plan.iteration.index} | {name for name, _ in plan.iteration.elements}
    ragged = _Ragged(variant_names(plan.body, seeds, ctx), ctx)
    body = ragged.block(clone(plan.body))
    if ragged.made:
        # marks what it would convert; a softmax of a slice moving evenly is a window's
        # (moving_slices_to_windows: a view, no mask over every position)
        to_where(body, seeds, ctx, frozenset(plan.masks), maps=False)
    if (ragged.made or ragged.written) and all(
            ast_marks.get(s, ast_marks.WHERE_CONVERTED, False) for s in ragged.made):
        plan.body = body
    return plan


class _Ragged(ast.NodeTransformer):
    def __init__(self, variant: set[str], ctx: PassContext):
        self.variant, self.ctx = variant, ctx
        self.made: list[ast.Subscript] = []   # the selections this stage wrote
        self.written: list[ast.stmt] = []     # the writes it converted
        self.pre: list[ast.stmt] = []
        # in one statement: slice (ast.dump) -> its mask, shared by the rows sliced alike, so
        # that `F.mse_loss(p[i, :L], t[i, :L])` selects both by one mask (rows of different
        # lengths fail the mask's shape check, and the decorator runs the original)
        self.shared: dict[str, str] = {}

    def block(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for s in stmts:
            self.shared = {}
            if isinstance(s, ast.If):
                s.test = self.visit(s.test)
                pre, self.pre = self.pre, []
                s.body, s.orelse = self.block(s.body), self.block(s.orelse)
                out += pre + [s]
            elif isinstance(s, (ast.FunctionDef, ast.For, ast.While, ast.With)):
                out.append(s)  # not looked into: their statements run per call or per item
            elif isinstance(s, ast.Assign) and len(s.targets) == 1 \
                    and isinstance(s.targets[0], ast.Subscript) or _fill(s):
                s = self.write(s)
                out += self.pre + [s]
                self.pre = []
            else:
                s = self.visit(s)
                out += self.pre + [s]
                self.pre = []
        return out

    def _as_written(self, node: ast.AST) -> ast.AST:
        return node  # evaluated per call or per item, not once per statement

    visit_Lambda = visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = \
        _as_written

    def visit_Subscript(self, sub: ast.Subscript) -> ast.expr:
        """``sub`` as ``R[_in]`` when it is a ragged slice, else itself."""
        self.generic_visit(sub)
        found = self._split(sub)
        if found is None:
            return sub
        row, cut = found
        key = ast.dump(cut)
        keep = self.shared.get(key) or self.shared.setdefault(
            key, self.mask(row, None, cut, sub))
        made = replace("r[k]", loc=sub, r=row, k=keep)
        self.made.append(made)
        return made

    def mask(self, row: ast.expr, k: int | None, cut: ast.Slice, loc: ast.AST) -> str:
        """A name bound (in ``pre``) to the positions of ``row``'s dim ``k`` inside ``cut``, a
        column broadcasting against the dims after it; ``k`` None: the positions of dim 0 as
        they are (a selection's mask picks rows)."""
        pos, keep = self.ctx.namer.new("pos"), self.ctx.namer.new("in")
        self.pre += replace(_POSITIONS if k is None else _POSITIONS_AT, loc=loc,
                            torch_name=self.ctx.torch_name, p=pos, r=row, k=ast.Constant(k or 0))
        checked = self.ctx.bind(slice_bound, "slice_bound")
        tests = [replace(t, loc=loc, p=pos, r=row, k=ast.Constant(k or 0),
                         a=replace(f"{checked}(a)", loc=loc, a=bound))
                 for t, bound in ((_LOWER, cut.lower), (_UPPER, cut.upper)) if bound is not None]
        mask = tests[0] if len(tests) == 1 else ast.BinOp(tests[0], ast.BitAnd(), tests[1])
        self.pre += replace("k = m", loc=loc, k=keep, m=mask)
        return keep

    def write(self, s: ast.Assign | ast.Expr) -> ast.stmt:
        """``X[P, :, ..., a:b, :, ...] = number`` (or ``.fill_(number)`` of it) as
        ``X[P] = torch.where(_in, number, X[P])``."""
        if isinstance(s, ast.Expr):
            assign = ast.copy_location(ast.Assign([s.value.func.value], s.value.args[0],
                                                  lineno=s.lineno), s)
            converted = self.write(assign)
            return s if converted is assign else converted
        target = s.targets[0]
        entries = target.slice.elts if isinstance(target.slice, ast.Tuple) else [target.slice]
        cuts = [k for k, e in enumerate(entries) if isinstance(e, ast.Slice)]
        ragged = [k for k in cuts if self._ragged(entries[k])]
        if not ragged or not number_literal(s.value):
            return s
        prefix = entries[:cuts[0]]
        if not prefix or any(not _index_entry(e) for e in prefix) or not all(
                k in ragged or _full(e) for k, e in enumerate(entries) if k >= len(prefix)):
            return s  # after the row's indices: full slices and the ragged ones
        row = ast.copy_location(ast.Subscript(
            target.value, prefix[0] if len(prefix) == 1 else ast.Tuple(prefix, ast.Load()),
            ast.Load()), target)
        if not _simple(row):
            return s
        # one column of positions per ragged dim; together they broadcast to the written box
        masks = [self.mask(row, at - len(prefix), entries[at], s) for at in ragged]
        keep = masks[0]
        if len(masks) > 1:
            keep = self.ctx.namer.new("in")
            self.pre += replace("k = " + " & ".join(masks), loc=s, k=keep)
        self.written.append(s)
        return replace("r = torch.where(k, v, r)", loc=s, torch_name=self.ctx.torch_name,
                       r=row, k=keep, v=s.value)[0]

    def _ragged(self, cut: ast.Slice) -> bool:
        """A slice with a bound that varies per iteration, and no step but 1; not ``a:a+k``
        (one size: ``unit_slices_to_index`` and ``row_slices_to_params`` read those)."""
        return any(b is not None and depends(b, self.variant, self.ctx)
                   for b in (cut.lower, cut.upper)) and (cut.step is None or isinstance(
                       cut.step, ast.Constant) and cut.step.value == 1) and not _fixed_size(cut)

    def _split(self, sub: ast.Subscript) -> tuple[ast.expr, ast.Slice] | None:
        """(the row ``R``, the ragged slice) of ``sub``, or None."""
        entries = sub.slice.elts if isinstance(sub.slice, ast.Tuple) else [sub.slice]
        at = next((k for k, e in enumerate(entries) if isinstance(e, ast.Slice)), None)
        if at is None or not isinstance(sub.ctx, ast.Load) or not self._ragged(entries[at]):
            return None
        cut = entries[at]
        if not all(_index_entry(e) and not isinstance(e, ast.Slice) for e in entries[:at]) \
                or not all(_full(e) for e in entries[at + 1:]):
            return None
        row = sub.value if at == 0 else ast.Subscript(
            sub.value, entries[0] if at == 1 else ast.Tuple(entries[:at], ast.Load()), ast.Load())
        if at == 0 and _flattened(row):  # named before the statement: the mask reads its length
            name = self.ctx.namer.new("flat")
            self.pre += replace("n = r", loc=sub, n=name, r=row)
            row = ast.Name(name, ast.Load())
        return (ast.copy_location(row, sub), cut) if _simple(row) else None


# Methods whose result, of no argument, is a new 1-D tensor of the receiver's elements: no
# effect, so evaluated before the statement it is in as well as inside it
_FLATTENING = ("flatten", "ravel")


def _flattened(e: ast.expr) -> bool:
    """``R.flatten()`` (``_FLATTENING``), ``R`` a name, attribute or subscript by names and
    numbers."""
    return isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) \
        and e.func.attr in _FLATTENING and not e.args and not e.keywords and _simple(e.func.value)


def _full(e: ast.expr) -> bool:
    return isinstance(e, ast.Slice) and e.lower is None and e.upper is None and e.step is None


def _fixed_size(cut: ast.Slice) -> bool:
    """``a:a+k`` or ``a-k:a`` with a number ``k``."""
    lo, hi = cut.lower, cut.upper
    if lo is None or hi is None:
        return False
    for bound, base, op in ((hi, lo, ast.Add), (lo, hi, ast.Sub)):
        if isinstance(bound, ast.BinOp) and isinstance(bound.op, op) \
                and isinstance(bound.right, ast.Constant) \
                and ast.dump(bound.left) == ast.dump(base):
            return True
    return False


def _fill(s: ast.stmt) -> bool:
    """``X[...].fill_(v)`` as a statement (its result unused)."""
    call = s.value if isinstance(s, ast.Expr) else None
    return isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) \
        and call.func.attr == "fill_" and isinstance(call.func.value, ast.Subscript) \
        and len(call.args) == 1 and not call.keywords
