"""Stage: a branch on ``index == x`` selected after the costly op that reads it, not before.

In a loop over ``k``, a branch ``if k == x: v = a else: v = b`` whose arm ``a`` and ``x`` vary
with no iteration, where ``v`` is read once afterwards, as an operand of an op that reduces its
operands to a smaller result (``OpSpec.sink_selection``: the cosine similarity of two vectors is
one number), its other operands as fixed, is selected after that op. The op on ``a`` runs once,
before the loop (``plan.first``), instead of the op on a per-iteration ``torch.where`` of ``a``
and ``b`` that ``tensor_branches_to_where`` would make (GE2E's exclusive centroid: an [N, M, N,
D] intermediate where N x M cosines of [D] vectors suffice)::

    for k in range(n):                   (before the loop)
        if k == j:                       _hit = torch.eq(torch.arange(0, n, 1, device=...), j).any()
            c = (s - e) / (m - 1)   ->   _own = F.cosine_similarity(_fixed_operand(_hit, e), ...)
        else:                            (the body)
            c = cs[k]                    _sel = k == j
        r = w * F.cosine_similarity(     _keep = torch.logical_not(torch.ne(_sel, False))
            e, c)                        c = torch.where(_keep, cs[k], 1)  (shaped)
                                         _sim = F.cosine_similarity(e, c)
                                         _sim = torch.where(_sel, _own, _sim)
                                         r = w * _sim

Exact: at most one iteration has ``k == x``, so ``_own``'s cotangent is that iteration's alone,
as in the original. Where none has it (``_hit`` false) the original never ran the arm, so the
arm's reads that take a gradient are zeros there (``tensor_branches_to_where``'s
``FixedOperand``): a zero cotangent times an infinite derivative would be NaN, and
``torch.where`` passes exactly 0 whatever the cotangent (the arm's value there, never picked,
needs no safe operands). Where ``_sel`` holds, ``b`` is the op's safe value
(``OpSpec.sink_selection``: ones for the cosine, whose value and gradients are finite there in
every dtype; zeros give NaN in float16), its reads masked alike; ``torch.where`` passes the
cotangent to ``_own`` there.

Without the masks, one product of every pair (``e @ cs.T``, what a hand-vectorized GE2E does)
gives the deselected pair a zero cotangent times that pair's row, NaN if the row has one: the
fixed operand's gradient would be NaN where the original's is finite (a NaN only in ``cs[j]``,
which iteration ``j`` never reads). The masked ``b`` is exact but, under an outer vmap over
``x``, one copy of the rows per ``x`` ([N, N, D] in GE2E). So an op with a
``sink_selection_fn`` (the cosine: ``cosine_products.cosine_similarity_unless``) takes ``b``
unmasked and the selection itself, when ``b`` only reads (an arm computed by ops keeps the
masks)::

    _sel = k == j
    _t = cs[k]
    _sim = _cosine_similarity_unless(e, _t, dim=0, deselected=_sel)
    _sim = torch.where(_sel, _own, _sim)

Left to ``tensor_branches_to_where`` (the branch as it is): other conditions, arms of several
statements, an arm or operand that varies with the iteration or reads what the body binds, ``v``
read elsewhere or after the loop, range bounds the body rebinds, arms whose calls are not total.
One branch per loop.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, clone, is_name, replace, walk
from ..errors import Unsupported
from .loop_dataflow import call_op, depends, loads, stores, variant_names
from .plan import LoopPlan
from .tensor_branches_to_where import BRANCH_SHAPE, Sanitize

# on the device of ``x``, or of the op's other operand when ``x`` is a Python number
_HIT = ("h = torch.eq(torch.arange(a, b, s, device=x.device if isinstance(x, torch.Tensor) "
        "else torch.as_tensor(o).device), x).any()")
_OWN = "o = own"
# an arm that only reads (a row ``cs[k]``): its reads need no mask, the pick is the mask
_READS = (ast.Name, ast.Subscript, ast.Constant, ast.Slice, ast.Tuple, ast.expr_context)
_SIMPLE = (ast.Assign, ast.AugAssign, ast.Expr)
_PER_ITEM = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.IfExp,
             ast.BoolOp, ast.NamedExpr)
_KEEP = "t = test\nm = torch.logical_not(torch.ne(t, False))"
# the op's own form with no gradient through the deselected pairs: no masked copy of the arm
_UNLESS = """
t = test
x = other
r = call
r = torch.where(t, o, r)
"""
_SUNK = """
v = torch.where(m.reshape(h[m.shape, x.shape]), x, torch.full_like(x, safe))
r = call
r = torch.where(t, o, r)
"""


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    seeds = {it.index} | {name for name, _ in it.elements}
    variant = variant_names(plan.body, seeds, ctx)
    bound = {n for s in plan.body for n in stores(s)}
    if loads(ast.Tuple([it.start, it.stop, it.step], ast.Load())) & bound:
        return plan  # the range's bounds are not what they were before the loop
    for pos in range(len(plan.body)):
        body, at = _with_default_as_else(plan.body, pos, seeds)
        s = body[at]
        found = _branch(s, it.index, variant, ctx)
        if found is None or loads(ast.Tuple([found[1], found[2]], ast.Load())) & bound:
            continue  # the arm runs before the loop: it reads what the loop reads first
        use = _single_use(plan, body, at, found[0], variant, ctx)
        if use is not None and not loads(use) - {found[0]} & bound:
            plan.body = body
            plan.body[at:at + 1] = _sunk(plan, s, found, use, variant, ctx)
            return plan  # the names it made are not in ``variant`` and ``bound``
    return plan


def _with_default_as_else(body: list[ast.stmt], pos: int,
                          names: set[str]) -> tuple[list[ast.stmt], int]:
    """``body`` with ``v = b`` (``b`` one of ``names`` or a name an earlier statement binds:
    nothing to fail or to run) followed by ``if t: v = a`` at ``pos`` as ``if t: v = a else: v
    = b`` (a rebound loop item, ``rename_rebound_loop_variables``), and the position of the
    ``if``; else ``body`` and ``pos``."""
    s, before = body[pos], body[pos - 1] if pos else None
    default = _assigned(before) if before is not None else None
    if not (isinstance(s, ast.If) and not s.orelse and len(s.body) == 1 and default
            and isinstance(default[1], ast.Name) and default[0] not in loads(s.test)):
        return body, pos
    arm = _assigned(s.body[0])
    known = names | {n for b in body[:pos - 1] for n in stores(b)}
    if arm is None or arm[0] != default[0] or default[1].id not in known:
        return body, pos
    merged = ast.copy_location(ast.If(s.test, s.body, [before]), s)
    return body[:pos - 1] + [merged] + body[pos + 1:], pos - 1


def _branch(s: ast.stmt, index: str, variant: set[str],
            ctx: PassContext) -> tuple[str, ast.expr, ast.expr, ast.expr] | None:
    """``(v, x, a, b)`` of ``if index == x: v = a else: v = b`` (or ``x == index``), with ``x``
    and ``a`` the same in every iteration."""
    if not (isinstance(s, ast.If) and len(s.body) == len(s.orelse) == 1):
        return None
    test = s.test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq)):
        return None
    left, right = test.left, test.comparators[0]
    x = right if is_name(left, index) else left if is_name(right, index) else None
    arms = [_assigned(a) for a in (s.body[0], s.orelse[0])]
    if x is None or None in arms or arms[0][0] != arms[1][0] \
            or arms[0][0] in loads(arms[0][1]) | loads(arms[1][1]) or depends(x, variant, ctx) \
            or depends(arms[0][1], variant, ctx):
        return None
    return arms[0][0], x, arms[0][1], arms[1][1]


def _assigned(s: ast.stmt) -> tuple[str, ast.expr] | None:
    if isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name):
        return s.targets[0].id, s.value
    return None


def _single_use(plan: LoopPlan, body: list[ast.stmt], pos: int, name: str, variant: set[str],
                ctx: PassContext) -> ast.Call | None:
    """The call of a ``sink_selection`` op that is the one read of ``name`` in ``body`` (after
    ``pos``, in a statement evaluated once, in order), its other operands the same in every
    iteration; None if there is none."""
    if name in plan.live_after:
        return None
    rest = body[:pos] + body[pos + 1:]
    reads = [n for s in rest for n in walk(s) if isinstance(n, ast.Name) and n.id == name]
    if len(reads) != 1 or any(name in stores(s) for s in rest):
        return None
    for s in body[pos + 1:]:
        if not isinstance(s, _SIMPLE) or any(isinstance(n, _PER_ITEM) for n in walk(s)):
            continue  # evaluated in a block, per item or lazily: not where the branch was
        for n in walk(s):
            if isinstance(n, ast.Call) and call_op(n, ctx).sink_selection and any(
                    a is reads[0] for a in n.args + [k.value for k in n.keywords]):
                others = [a for a in n.args + [k.value for k in n.keywords] if a is not reads[0]]
                return n if not any(depends(a, variant, ctx) for a in others) else None
    return None


def _sunk(plan: LoopPlan, s: ast.If, found: tuple, use: ast.Call, variant: set[str],
          ctx: PassContext) -> list[ast.stmt]:
    """The statements replacing the branch ``s``; ``use`` becomes the selected result."""
    name, x, own, other = found
    it, hit = plan.iteration, ctx.namer.new("hit")
    operand = next((a for a in use.args + [k.value for k in use.keywords]
                    if not is_name(a, name)), x)
    first = replace(_HIT, loc=s, torch_name=ctx.torch_name, h=hit, a=clone(it.start),
                    b=clone(it.stop), s=clone(it.step), x=clone(x), o=clone(operand))
    own_call = clone(use)
    _swap(own_call, lambda n: is_name(n, name), clone(own))
    sel, keep, arm = ctx.namer.new("sel"), ctx.namer.new("keep"), ctx.namer.new("t")
    pre, pre_other = [], []
    try:
        own_call = _MaskedReads(hit, variant, it.index, ctx, pre).safe(own_call)
        if not all(isinstance(n, _READS) for n in walk(other)):  # reads inside ops
            other = _MaskedReads(keep, variant, it.index, ctx, pre_other).safe(clone(other))
    except Unsupported:
        return [s]  # an op that may fail where its arm is not taken: the branch as it is
    picked, own_name = ctx.namer.new("sim"), ctx.namer.new("own")
    plan.first += first + pre + replace(_OWN, loc=s, o=own_name, own=own_call)
    fn = call_op(use, ctx).sink_selection_fn
    if fn is not None and not pre_other:
        out = replace(_UNLESS, loc=s, torch_name=ctx.torch_name, t=sel, test=s.test, x=arm,
                      other=other, r=picked, o=own_name, call=_unless(use, name, arm, sel, fn, ctx))
    else:
        out = replace(_KEEP, loc=s, torch_name=ctx.torch_name, t=sel, test=s.test, m=keep) \
            + pre_other + replace("x = other", loc=s, x=arm, other=other) + replace(
                _SUNK, loc=s, torch_name=ctx.torch_name, t=sel, m=keep, x=arm, o=own_name,
                v=name, h=ctx.bind(BRANCH_SHAPE, "branch_shape"), r=picked, call=clone(use),
                safe=replace(call_op(use, ctx).sink_selection, loc=s))
    for after in plan.body:
        _swap(after, lambda n: n is use, ast.Name(picked, ast.Load()))
    return out


def _unless(use: ast.Call, name: str, arm: str, sel: str, fn, ctx: PassContext) -> ast.Call:
    """``use`` on the unmasked arm, as the registry's ``sink_selection_fn`` deselected by
    ``sel``."""
    call = clone(use)
    _swap(call, lambda n: is_name(n, name), ast.Name(arm, ast.Load()))
    call.func = ast.Name(ctx.bind(fn, fn.__name__), ast.Load())
    call.keywords.append(ast.keyword("deselected", ast.Name(sel, ast.Load())))
    return call


def _swap(tree: ast.AST, old, new: ast.expr) -> None:
    """Every node under ``tree`` for which ``old`` holds replaced by a copy of ``new``, in place
    (the statements keep their identity: ``classify_effects`` keys on it)."""
    for n in walk(tree):
        for field, child in ast.iter_fields(n):
            if isinstance(child, ast.AST) and old(child):
                setattr(n, field, clone(new))
            elif isinstance(child, list):
                child[:] = [clone(new) if isinstance(c, ast.AST) and old(c) else c for c in child]


class _MaskedReads(Sanitize):
    """``Sanitize``'s reads (what takes a gradient read as zeros where ``pred`` is false) and
    refusals (calls that may fail), without its safe values for ops: an arm's value where it is
    not taken is never picked, and the masked reads stop its gradient there, NaN or not. (The
    safe values' dtype casts, ``torch.result_type``, would also break the compiled graph.)"""

    def _safe(self, operand: ast.expr, safe: str) -> ast.expr:
        return operand

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        return self.generic_visit(node)
