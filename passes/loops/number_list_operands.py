"""Stage: items of a list of Python numbers the loop reads as an operand of arithmetic become
rows of a tensor, converted per operation as the original converts the number.

Class weights and deep-supervision level weights are lists of Python numbers (``weight = [1] *
n_classes``, ``weight=[0.2, 0.8]``); the loop reads them only as operands of ``+ - * /`` with
its tensors::

    for i in range(n):               ->    _w_kind = number_kind(w)           (in front of the guard)
        loss += dice * w[i]                <stack_tensor_lists: _w_stacked = number_rows(w) ...>
                                           for each row _w_row of _w_stacked[0:n:1] (batched):
                                               loss += number_op(dice, _w_row, _w_kind, "mul", False)

``number_kind`` says whether ``w`` is a list (or plain tuple) of numbers of one type, all
``float`` or all ``int`` (bools, mixed types, a tensor among them: None, and the list stays one:
the guard's ``isinstance`` check fails and the loop runs as written); ``stack_tensor_lists`` then
holds them in a float64 or int64 tensor (``number_rows``), exactly, whose length the row check
compares with the range (a shorter list: as written, which raises its ``IndexError``).
``number_op`` computes each operation in the dtype the original's does, ``result_type(dice,
w[k])`` (the same for every item of one type), so values, gradients and dtypes are the
original's (``passes/number_operands.py``); with ``kind`` None (``w`` a tensor, or stacked
tensors) it is the operation itself.

A module's weights are an attribute (DSS-pytorch's side outputs, ``self.weight[i] * bce``, with
``self.weight = (0.2, ..., 1.0)``): an attribute chain on a name the body does not bind and only
reads attributes of (``attribute_writes_to_names.only_read``) is read through a name bound to it
in front of the guard (``_weight = self.weight``), which is then such a list; the loop as
written still reads the attribute, and the report names it.

A list zipped with the loop's other lists (``for out, w in zip(outs, weights)``, FlowNet's
level weights), or enumerated (``for i, q in enumerate(self.quantiles)``, a pinball loss's
quantiles: an attribute's list is read through a name, which the loop then iterates), has its
element read as the item at the loop index when every read of it is such an operand, none with
another element (``_elements_read_as_items``).

An operand may be Python arithmetic of one item with number literals (``(q - 1) * errors``,
``d / (0.5 * w[i] + 2)``): it is computed on the float64 row, as Python computes it on a float,
and then taken as the item is; the guard asks that the list hold no ints (on an int64 row
``0.5 * w[i]`` would be float32, ``w[i] - 1`` might wrap).

A list of the module (``CLASS_WEIGHTS = [0.1, 0.3, 0.3, 0.3]``, a global the function does not
bind) is read as a parameter's is: what it holds at each call is checked there. A name the body
binds to an item first (``w = CLASS_WEIGHTS[c]``, then ``w * dice``; bound nowhere else in the
body, not read after the loop) is read as the item itself, when every read of it is then such an
operand; otherwise the body stays as it was.

An item at an int label instead of the loop index (``ALPHA[c]`` after ``c = int(target[i])``,
a focal loss's per-class alpha; a name ``host_roundtrips_to_tensor_ops`` marks an int host
number) is read the same way: the stacked numbers are gathered at the labels (the names are
``plan.number_labels``, which ``stack_tensor_lists`` reads as rows). The other operand may then
read items of the iteration (``(1 - p[i, c]) ** gamma``: a tensor, as the guard asks ``p`` to
be), but no host number (a Python number next to which the item stays one). A label out of the
list's range raises in the gather (the tensor's ``IndexError``), and the original then runs,
raising its own from the user's line; a negative label picks from the end in both.

Only a name the function may hold as a list (``list_names``), such an attribute chain or a
module's list, which the body does not bind, and reads only as such operands at the loop index (``w[i] * t`` and
``t * w[i]``, ``t`` a value the iteration computed, not an expression of the loop index's
items): another read
(``x ** w[i]``, ``torch.pow(x, w[i])``, ``if w[i] > 0``) would see a tensor where the original
sees a number, so nothing changes.
"""
from __future__ import annotations

import ast

from .. import ast_marks
from ..ast_tools import PassContext, Transformer, clone, is_name, replace, unparse, walk
from ..number_operands import number_kind, number_op
from .attribute_writes_to_names import only_read, read_through_name, root
from .loop_dataflow import depends, exposed_reads, loads, stores_in
from .plan import LoopPlan
from .scan_step_values import ReadsAs

# The operators converted, by the name ``number_operands.OPERATORS`` gives each.
_OPERATORS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "truediv"}


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    plan.number_labels = _int_labels(plan)
    candidates = (plan.list_names - stores_in(plan.body)) | _attribute_lists(plan) \
        | _global_lists(plan, ctx)
    body, plan.body = plan.body, _items_read_through_names(plan, candidates)
    plan.body = _elements_read_as_items(plan, candidates, ctx)
    found = _found(plan, candidates, ctx)
    if plan.body is not body and not set(found) >= _listed_items(body, plan, candidates):
        plan.body = body  # a name bound to an item is read otherwise: the body as it was
        found = _found(plan, candidates, ctx)
    if not found:
        return plan
    # an attribute's list is read through a name bound to it, which is then stacked as one;
    # a global's is read as it is, as a parameter's
    names = [n if n in plan.list_names or n.isidentifier() else _read_through_name(plan, n, ctx)
             for n in found]
    plan.list_names |= set(names)
    kinds = {n: ctx.namer.new(f"{n}_kind") for n in names}
    for name in names:
        plan.prelude += plan.sub(f"k = {ctx.bind(number_kind, 'number_kind')}(x)", k=kinds[name],
                                 x=ast.Name(name, ast.Load()))
    plan.number_lists |= set(names)
    plan.number_kinds |= set(kinds.values())
    to_ops = _ToNumberOps(plan, kinds, ctx)
    plan.body = [to_ops.visit(s) for s in plan.body]
    # on an int64 row, ``w[i] * 0.5`` and ``w[i] / 2`` would be float32, and ``w[i] - 1`` may
    # wrap where a Python int does not: a list of ints runs as written
    for kind in sorted(to_ops.floats):
        plan.check("k is not int", k=ast.Name(kind, ast.Load()))
    plan.float_lists |= {n for n, k in kinds.items() if k in to_ops.floats}
    return plan


def _found(plan: LoopPlan, candidates: set[str], ctx: PassContext) -> list[str]:
    """The candidate lists ``plan.body`` reads only as operands at the loop index."""
    operands = _Operands(plan, candidates, ctx)
    for s in plan.body:
        operands.visit(s)
    reads = {}  # list -> ids of its nodes read, at the index as operands or not
    for s in plan.body:
        for n in walk(s):
            key = _key(n)
            if key in candidates:
                reads.setdefault(key, set()).add(id(n))
    return sorted(n for n in reads if reads[n] <= operands.found.get(n, set()))


def _global_lists(plan: LoopPlan, ctx: PassContext) -> set[str]:
    """Names of the module's lists or tuples (``CLASS_WEIGHTS = [0.1, 0.3]``) the body reads,
    which the function does not bind: what they hold at each call is checked there
    (``number_kind``), as a parameter's is."""
    if ctx.local_names is None:
        return set()
    return {n for n in loads(ast.Module(plan.body, [])) - ctx.local_names - stores_in(plan.body)
            if isinstance(ctx.globals.get(n), (list, tuple))}


def _items_read_through_names(plan: LoopPlan, candidates: set[str]) -> list[ast.stmt]:
    """The body with each name bound to an item first (``w = weights[c]``, at its top level,
    bound nowhere else in it, read only after, not after the loop) read as the item itself
    (``w * dice`` -> ``weights[c] * dice``): the item is then an operand as written."""
    body = list(plan.body)
    for k, s in enumerate(plan.body):
        if not (isinstance(s, ast.Assign) and len(s.targets) == 1
                and isinstance(s.targets[0], ast.Name)
                and _item(s.value, plan, candidates)):
            continue
        name = s.targets[0].id
        if name in plan.live_after or name in loads(ast.Module(plan.body[:k], [])) \
                or sum(name in stores_in([t]) for t in plan.body) != 1:
            continue
        body[k] = None
        body[k + 1:] = [ReadsAs(name, s.value).visit(clone(t)) for t in body[k + 1:]]
    return plan.body if None not in body else [s for s in body if s is not None]


def _elements_read_as_items(plan: LoopPlan, candidates: set[str],
                            ctx: PassContext) -> list[ast.stmt]:
    """The body with each element of a candidate list (``w`` of ``for out, w in zip(outs,
    weights)``, bound nowhere in the body, not read after the loop) read as the item at the
    loop index (``weights[_i]``) where every read of it is then such an operand, and none with
    another element (``p - t`` of ``zip(preds, targets)``: items, likely tensors)."""
    elements = {e for e, _ in plan.iteration.elements}
    for name, source in plan.iteration.elements:
        if _key(source) not in candidates or name in stores_in(plan.body) \
                or name in plan.live_after:
            continue
        item = ast.Subscript(clone(source), ast.Name(plan.iteration.index, ast.Load()),
                             ast.Load())
        kept, plan.body = plan.body, [ReadsAs(name, item).visit(clone(s)) for s in plan.body]
        pairs = [(n.left, n.right) for s in kept for n in walk(s) if isinstance(n, ast.BinOp)]
        if _key(source) not in _found(plan, {_key(source)}, ctx) or any(
                {_key(_signed(a)), _key(_signed(b))} <= elements and name in (
                    _key(_signed(a)), _key(_signed(b))) for a, b in pairs):
            plan.body = kept
    return plan.body


def _listed_items(body: list[ast.stmt], plan: LoopPlan, candidates: set[str]) -> set[str]:
    """The lists whose items ``body`` binds names to (see ``_items_read_through_names``)."""
    return {_item(s.value, plan, candidates) for s in body
            if isinstance(s, ast.Assign) and _item(s.value, plan, candidates)}


def _key(node: ast.AST) -> str | None:
    """The list a node may be: a name's id, an attribute chain's source (``self.weight``)."""
    if isinstance(node, ast.Name):
        return node.id
    return unparse(node) if root(node) is not None else None


def _attribute_lists(plan: LoopPlan) -> set[str]:
    """Attribute chains (``self.weight``) the body reads as items at the loop index (or at an
    int label), on a name
    the body does not bind and only reads attributes of (``attribute_writes_to_names``): the
    same list in every iteration. None for an inner loop (its binding would be a statement of
    the outer loop's body)."""
    if plan.inner:
        return set()
    parents = {c: n for s in plan.body for n in walk(s) for c in ast.iter_child_nodes(n)}
    bound = stores_in(plan.body)
    read = [n.value for s in plan.body for n in walk(s)
            if isinstance(n, ast.Subscript) and _at_row(n.slice, plan)]
    iterated = [src for _, src in plan.iteration.elements if isinstance(src, ast.Attribute)]
    return {unparse(n) for n in read + iterated if root(n) not in (None, *bound)
            and only_read(root(n), plan.body, parents)}


def _read_through_name(plan: LoopPlan, chain: str, ctx: PassContext) -> str:
    node = next(n for s in plan.body for n in walk(s) if _key(n) == chain)
    return read_through_name(plan, node, ctx)


def _item(node: ast.expr, plan: LoopPlan, names) -> str | None:
    """The list ``w`` of ``w[i]`` (or ``-w[i]``) at the loop index or at an int label, when
    ``w`` is among ``names``."""
    node = _signed(node)
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) \
            and _key(node.value) in names and _at_row(node.slice, plan):
        return _key(node.value)
    return None


def _at_row(x: ast.expr, plan: LoopPlan) -> bool:
    return is_name(x, plan.iteration.index) or _label(x, plan)


def _label(x: ast.expr, plan: LoopPlan) -> bool:
    return isinstance(x, ast.Name) and x.id in plan.number_labels


def _int_labels(plan: LoopPlan) -> set[str]:
    """Names the body binds once, at its top, to an int host number a call made (``c =
    int(target[i])``, now ``target[i].long()``): a Python int in the original, read from the
    data, an int64 tensor in the rewrite. Not the index, nor arithmetic on it."""
    bound = [t.id for s in plan.body if isinstance(s, ast.Assign) for t in s.targets
             if isinstance(t, ast.Name)]
    return {s.targets[0].id for s in plan.body if isinstance(s, ast.Assign)
            and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
            and bound.count(s.targets[0].id) == 1 and isinstance(s.value, ast.Call)
            and ast_marks.get(s.value, ast_marks.HOST_NUMBER) == "int"} - {plan.iteration.index}


def _of_item(node: ast.expr, plan: LoopPlan, names) -> str | None:
    """The list ``w`` of ``w[i]`` (``_item``) or of Python arithmetic of it with number literals
    (``w[i] - 1``, ``1 - w[i]``, ``0.5 * w[i]``: a quantile loss's ``(q - 1) * errors``), no
    division by it or by 0 (Python raises where the row's division gives inf)."""
    found = _item(node, plan, names)
    if found or not isinstance(node, (ast.BinOp, ast.UnaryOp)):
        return found
    if isinstance(node, ast.UnaryOp):
        return _of_item(node.operand, plan, names) if isinstance(
            node.op, (ast.USub, ast.UAdd)) else None
    if type(node.op) not in _OPERATORS:
        return None
    if _number_literal(node.right) and not (isinstance(node.op, ast.Div)
                                            and node.right.value == 0):
        return _of_item(node.left, plan, names)
    # a division by the item, which Python raises ZeroDivisionError at where a tensor has inf
    divided = isinstance(node.op, ast.Div)
    return _of_item(node.right, plan, names) if _number_literal(node.left) and not divided \
        else None


def _number_literal(node: ast.expr) -> bool:
    """A float or int literal that a float64 holds exactly (a larger int converts as Python's
    float does, but torch refuses one past int64)."""
    return isinstance(node, ast.Constant) and (type(node.value) is float or type(
        node.value) is int and abs(node.value) <= 2 ** 53)


def _arithmetic(node: ast.expr) -> bool:
    """``node`` is arithmetic of an item (``_of_item``), not the (signed) item itself."""
    return isinstance(_signed(node), (ast.BinOp, ast.UnaryOp))


def _signed(node: ast.expr) -> ast.expr:
    """``w[i]`` of ``-w[i]`` and ``+w[i]`` (a number of the list's kind too), else ``node``."""
    return node.operand if isinstance(node, ast.UnaryOp) and isinstance(
        node.op, (ast.USub, ast.UAdd)) else node


def _operand(node: ast.BinOp, plan: LoopPlan, names, ctx: PassContext,
             excluded: set[str]) -> tuple[str, bool] | None:
    """(the list, whether it is the left operand) of ``t <op> w[i]`` or ``w[i] <op> t`` (or
    ``_of_item`` arithmetic of ``w[i]``), ``t`` a value the iteration computes: not a fixed one,
    which may be a Python number, with which the item stays one in the original (``1 - w[i]``
    alone); reading no name of ``excluded`` (the
    index, names carried from the iteration before: ``acc + w[i]`` is a fold, which
    ``fold_accumulators`` reads) and no items (``target[i] * torch.log(pred[i])``, ``ests[s] -
    refs[t]``): those are likely tensors, whose expressions later passes fuse into losses."""
    if type(node.op) not in _OPERATORS:
        return None
    left, right = _of_item(node.left, plan, names), _of_item(node.right, plan, names)
    other = node.right if left else node.left
    if (left is None) == (right is None) or not depends(other, plan.variant, ctx):
        return None
    if any(isinstance(n, ast.Subscript) and _label(n.slice, plan)
           for n in walk(node.left if left else node.right)):
        # at a label: other items are fine (a tensor's), no host number nor the index as one
        if ast_marks.get(other, ast_marks.HOST_NUMBER) or _outside_indices(other) & excluded:
            return None
    elif loads(other) & excluded or any(isinstance(n, ast.Subscript)
                                        and depends(n.slice, plan.variant, ctx)
                                        for n in walk(other)):
        return None
    return (left, True) if left else (right, False)


def _outside_indices(x: ast.expr) -> set[str]:
    """The names ``x`` reads other than in subscripts' indices (``p[i, c]`` reads ``p``)."""
    inside = {n for sub in walk(x) if isinstance(sub, ast.Subscript) for n in walk(sub.slice)}
    return {n.id for n in walk(x) if isinstance(n, ast.Name) and n not in inside}


def _excluded(plan: LoopPlan) -> set[str]:
    """The loop index, and names an iteration reads before it binds them: from the one before."""
    carried: dict[str, ast.stmt] = {}
    exposed_reads(plan.body, set(), stores_in(plan.body), carried)
    return set(carried) | {plan.iteration.index}


class _Operands(Transformer):
    """The name nodes of the items read as such operands, by list."""

    def __init__(self, plan: LoopPlan, names, ctx: PassContext):
        self.plan, self.names, self.ctx, self.found = plan, names, ctx, {}
        self.excluded = _excluded(plan)

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        found = _operand(node, self.plan, self.names, self.ctx, self.excluded)
        if found:
            item = node.left if found[1] else node.right
            self.found.setdefault(found[0], set()).update(
                id(n) for n in walk(item) if _key(n) == found[0])
        return node


class _ToNumberOps(Transformer):
    """``t <op> w[i]`` -> ``number_op(t, w[i], _w_kind, op, reflected)``."""

    def __init__(self, plan: LoopPlan, kinds: dict[str, str], ctx: PassContext):
        self.plan, self.kinds, self.ctx = plan, kinds, ctx
        self.excluded = _excluded(plan)
        self.fn = ctx.bind(number_op, "number_op")
        self.floats: set[str] = set()  # kinds that must be float: arithmetic on an item

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        found = _operand(node, self.plan, self.kinds, self.ctx, self.excluded)
        if not found:
            return node
        name, reflected = found
        item, x = (node.left, node.right) if reflected else (node.right, node.left)
        if _arithmetic(item):  # computed on the float64 row as Python computes it on a float
            self.floats.add(self.kinds[name])
        return replace(f"{self.fn}(x, w, k, o, r)", loc=node, x=x, w=item, k=self.kinds[name],
                       o=ast.Constant(_OPERATORS[type(node.op)]), r=ast.Constant(reflected))
