"""Stage: a list or tuple of tensors the loop reads item by item is stacked at run time, when its
items agree, so the vectorized form iterates one tensor.

Real losses take lists of tensors: deep supervision heads, feature groups, ``.split`` chunks.
A name the function may hold as a list (``list_names``) whose items the loop reads, as an
iterated value (``for p, t in zip(preds, targets)``) or indexed by the loop (``x[i]``), is
stacked in front of the loop's guard, and the finished vectorized statements and their check
read the stacked tensor instead (the items' names in the body stay the user's)::

    for p, t in zip(preds, targets):    ->    _preds_stacked = torch.stack(tuple(preds)) if (
        loss += F.mse_loss(p, t)                  <preds a list or plain tuple> and len(preds) > 0
                                                  and all(isinstance(_v, torch.Tensor)
                                                          and _v.shape == preds[0].shape
                                                          and _v.dtype == preds[0].dtype
                                                          and _v.device == preds[0].device
                                                          for _v in preds)) else preds
                                              _targets_stacked = ...
                                              if isinstance(_preds_stacked, torch.Tensor) and ...:
                                                  <vectorized over _preds_stacked, _targets_stacked>
                                              else:
                                                  <the loop as written, over preds and targets>

A list read at an element the body uses only as an index (``refs[t] for s, t in
enumerate(perm)``, the permutation-invariant losses of speech separation) is stacked too; the
iterated list of such elements may hold Python ints, which become an int64 tensor (the same
items indexed; not bools, which index tensors as masks). A nested function reads the enclosing
function's lists (``vectorize_loops``).

A name the function binds otherwise (a loop target, a dict's value) is stacked in a branch
whose ``if`` test says it is a list or tuple, or in the ``else`` of one that asks for a tensor
(``narrowed_lists``; mmdetection's ``elif isinstance(loss_value, list): sum(_loss.mean() for
_loss in loss_value)``).

A name ``number_list_operands`` bound to an attribute's list of numbers (``_weight =
self.weight``) is stacked too, and so is a list of numbers it reads at int labels
(``ALPHA[c]``, ``c = int(target[i])``: ``plan.number_labels``), gathered there. The guard's checks that attributes are tensors (``self.gamma[i]``
read otherwise, a module's configuration, often a tuple) come first, in the guard and in each
stacking's test: when one fails, the loop runs as written without stacking the lists first.
They read the attribute as ``getattr(self, 'gamma', None)``: also when the loop has no iterations,
where the original reads nothing, a missing attribute fails the check instead of raising.

A tensor stays itself; a list whose items differ in shape, dtype or device (deep supervision at
several resolutions) stays a list, fails the guard's ``isinstance`` check, and the loop runs as
written. Stacking copies the items: the values and the gradients of every item are those of the
loop, but writes into the copy would not reach the user's tensors, so a name is not stacked when
the body writes into its items (stores, in-place methods on an item or its element name) or reads
it other than as items. Items that are evenly spaced views of one tensor in one layout (the
chunks of ``x.split(1, d)``, ``x.unbind(d)``: a heatmap per joint) are not copied: the stack is
that view of the tensor they view (``stacked_views.stack_items``), the same values, and the same
gradients, which reach that tensor either way.
"""
from __future__ import annotations

import ast

from .. import ast_marks, ops
from ..ast_tools import PassContext, clone, is_name, rename, unparse, walk
from ..number_operands import number_rows
from ..stacked_views import stack_items
from .attribute_writes_to_names import guarded_read, root
from .index_tests_to_selected_indices import index_entries_only
from .loop_dataflow import loads, resolve_call, stores_in
from .plan import LoopPlan
from .runtime_checks import conjuncts, proven_tensors

# Calls whose result is a list or tuple of tensors.
_LIST_MAKERS = {"list", "tuple", "torch.split", "torch.chunk", "torch.unbind", "torch.tensor_split"}
_LIST_METHODS = {"split", "chunk", "unbind", "tensor_split"}
# Types an ``isinstance`` test may ask for of a list the function is handed.
_SEQUENCE_TYPES = {"list", "tuple"}

# Exactly a list, or a tuple whose item access is the builtin's: the stacked tensor holds what
# ``tuple(x)`` iterates, which is what the loop reads only when neither iteration nor ``x[i]`` nor
# ``len`` is overridden. A namedtuple (its own fields, tuple's item access) is stacked; a list
# subclass (it may override any of them, or change how its items are written) is not.
_SEQUENCE = ("(type(x) is list or isinstance(x, tuple) and type(x).__getitem__ is tuple.__getitem__"
             " and type(x).__iter__ is tuple.__iter__ and type(x).__len__ is tuple.__len__)")

STACKED = (f"stack_items(tuple(x)) if {_SEQUENCE} and len(x) > 0 and all("
            "isinstance(v, torch.Tensor) and v.shape == x[0].shape and v.dtype == x[0].dtype "
            "and v.device == x[0].device for v in x) else x")

# Python ints the loop uses only as indices (``refs[t] for s, t in enumerate(perm)``): the int64
# tensor of them indexes the same items (bools would index as masks, so ints only).
INTS = f"({_SEQUENCE} and len(x) > 0 and all(type(v) is int for v in x))"


def stacked_template(ctx: PassContext) -> str:
    """``STACKED`` with its helper's name in this function's generated code."""
    return STACKED.replace("stack_items(", f"{ctx.bind(stack_items, 'stack_items')}(", 1)


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    sources = {src.id for _, src in it.elements if isinstance(src, ast.Name)}
    rows = {it.index} | {e for e, _ in it.elements if index_only(e, plan.node.body)
                         or _entry_only(e, plan.node.body, ctx)}
    # lists of numbers are gathered at int labels too (``number_list_operands``)
    labelled = rows | plan.number_labels
    indexed = {n.value.id for s in plan.node.body for n in walk(s) if isinstance(n, ast.Subscript)
               and isinstance(n.value, ast.Name)
               and _reads_row(n, labelled if n.value.id in plan.number_lists else rows)}
    # names bound to attributes' lists of numbers, which the loop as written reads as attributes
    read_through = {n for n in plan.number_lists if n in plan.user_names}
    names = sorted((sources | indexed) & plan.list_names | read_through)
    first = _type_checks(plan, set(names))
    for name in names:
        elements = {e for e, src in it.elements if is_name(src, name)}
        if name not in read_through and not _only_items_read(
                name, elements, plan.node.body, labelled if name in plan.number_lists else rows):
            continue
        stacked = ctx.namer.new(f"{name}_stacked")
        made = stacked_template(ctx)
        if first:  # the guard fails without them: no stacking for nothing
            made = made.replace(" if ", " if c and ", 1)
        if elements and elements <= rows:
            made = made.removesuffix(" else x") + f" else torch.tensor(x) if {INTS} else x"
            plan.index_lists.add(name)
        elif name in plan.number_lists:
            made = made.removesuffix(" else x") + f" else {ctx.bind(number_rows, 'number_rows')}(x)"
        checked = {"c": ast.BoolOp(ast.And(), [clone(c) for c in first]) if len(first) > 1
                   else clone(first[0])} if first else {}
        prelude = plan.sub(f"s = {made}", s=stacked, x=ast.Name(name, ast.Load()),
                           v=ctx.namer.new("v"), **checked)
        for n in walk(prelude[0]):
            if isinstance(n, ast.GeneratorExp):
                ast_marks.put(n, ast_marks.GENERATED, True)
        plan.prelude += prelude
        plan.stacked[stacked] = name
        # first in the guard too: its first false check is the one a failed run reports
        plan.checks.conditions[:] = first + [c for c in plan.checks.conditions if c not in first]
    # The vectorized statements and their check read the stacked tensors; the loop as written
    # (the guard's else) keeps the user's lists.
    users = {name: stacked for stacked, name in plan.stacked.items()}
    for s in plan.stmts:
        rename(s, users)
    for c in plan.checks.conditions:
        rename(c, users)
    return plan


def _type_checks(plan: LoopPlan, stacking: set[str]) -> list[ast.expr]:
    """The guard's ``isinstance(x, torch.Tensor)`` checks of attribute chains (``self.weight``,
    a module's configuration: a tuple of numbers as often as a tensor) that no stacking, nor
    anything else in front of the guard, binds: cheap, and checked first, so that the lists are
    not stacked for nothing when one of them fails (the guard reads them whenever the loop has
    iterations anyway)."""
    bound = stacking | stores_in(plan.prelude)
    found = [c for c in plan.checks.conditions if len(proven_tensors(c)) == 1
             and root(proven_tensors(c)[0]) and not loads(c) & bound]
    for c in found:  # read also when the loop has no iterations: a missing one fails the check
        for g in conjuncts(c):
            if isinstance(g, ast.Call) and any(g.args[0] is x for x in proven_tensors(c)):
                chain = unparse(g.args[0])
                g.args[0] = guarded_read(g.args[0])
                plan.user_names[unparse(g.args[0])] = plan.user_names.get(chain, chain)
    return found


def stacked_sources(tree: ast.AST) -> dict[str, str]:
    """The names ``tree`` binds to ``STACKED``'s result, each to the name of the list it stacks:
    read from the generated code itself, which the runtime parses again from its source."""
    found = {}
    for n in walk(tree):
        if not (isinstance(n, ast.Assign) and len(n.targets) == 1
                and isinstance(n.targets[0], ast.Name) and isinstance(n.value, ast.IfExp)):
            continue
        made, last = n.value.body, n.value
        while isinstance(last, ast.IfExp):
            last = last.orelse
        if (isinstance(last, ast.Name) and isinstance(made, ast.Call) and len(made.args) == 1
                and isinstance(made.args[0], ast.Call) and is_name(made.args[0].func, "tuple")
                and [is_name(a, last.id) for a in made.args[0].args] == [True]):
            found[n.targets[0].id] = last.id
    return found


def list_names(func: ast.FunctionDef, ctx: PassContext) -> frozenset[str]:
    """Names ``func`` may hold as lists or tuples of tensors: its parameters, and names every
    binding of which makes a list or tuple (a display, a comprehension, ``list(...)``,
    ``x.split(...)``); none of which the function reads as a tensor (an attribute of it)."""
    a = func.args
    params = {p.arg for p in a.posonlyargs + a.args + a.kwonlyargs} - {"self", "cls"}
    bound: dict[str, bool] = {}  # name -> every binding makes a list
    for n in walk(func):
        for t in _targets(n):
            if isinstance(t, ast.Name):
                bound[t.id] = bound.get(t.id, True) and isinstance(n, ast.Assign) \
                    and _makes_list(n.value, ctx)
            elif isinstance(t, (ast.Tuple, ast.List)):
                bound.update({e.id: False for e in t.elts if isinstance(e, ast.Name)})
    names = {p for p in params if p not in bound} | {n for n, ok in bound.items() if ok}
    as_tensor = {n.value.id for n in walk(func) if isinstance(n, ast.Attribute)
                 and isinstance(n.value, ast.Name)}
    return frozenset(names - as_tensor)


def narrowed_lists(test: ast.expr, ctx: PassContext) -> tuple[frozenset[str], frozenset[str]]:
    """The names an ``if`` test says may be lists of tensors, whatever the function binds them
    to: in its body, those it asks to be lists or tuples (``isinstance(v, list)``, mmdetection's
    ``_parse_losses``); in its ``else``, those it asks to be tensors (``isinstance(v,
    torch.Tensor)``: not one there, mmengine's ``elif is_list_of(v, torch.Tensor)``). A test
    ``a and b`` narrows the body by both, ``not a`` the other way round."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        lists, not_tensors = narrowed_lists(test.operand, ctx)
        return not_tensors, lists
    tests = test.values if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And) \
        else [test]
    body = {n for t in tests for n in _isinstance_of(t, _SEQUENCE_TYPES, ctx)}
    orelse = set(_isinstance_of(test, {"torch.Tensor"}, ctx))
    return frozenset(body), frozenset(orelse)


def _isinstance_of(test: ast.expr, types: set[str], ctx: PassContext) -> list[str]:
    """``[x]`` when ``test`` is ``isinstance(x, T)`` with ``T`` (or each type of a tuple of
    them) among ``types``."""
    if not (isinstance(test, ast.Call) and resolve_call(test.func, ctx) == "isinstance"
            and len(test.args) == 2 and not test.keywords and isinstance(test.args[0], ast.Name)):
        return []
    kinds = test.args[1].elts if isinstance(test.args[1], ast.Tuple) else [test.args[1]]
    named = [resolve_call(k, ctx) for k in kinds]
    return [test.args[0].id] if named and all(k in types for k in named) else []


def _targets(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        return node.targets
    if isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.comprehension)):
        return [node.target]
    if isinstance(node, ast.withitem) and node.optional_vars is not None:
        return [node.optional_vars]
    if isinstance(node, ast.NamedExpr):
        return [node.target]
    return []


def _makes_list(value: ast.expr, ctx: PassContext) -> bool:
    if isinstance(value, (ast.List, ast.Tuple, ast.ListComp)):
        return True
    if isinstance(value, ast.BinOp) and isinstance(value.op, (ast.Add, ast.Mult)):
        # `xs + [x]`: joined lists; `[1] * n`: a repeated one
        return any(isinstance(v, (ast.List, ast.ListComp)) for v in (value.left, value.right))
    if not isinstance(value, ast.Call):
        return False
    if isinstance(value.func, ast.Attribute) and value.func.attr in _LIST_METHODS:
        return True
    return resolve_call(value.func, ctx) in _LIST_MAKERS


def _reads_row(sub: ast.Subscript, rows: set[str]) -> bool:
    """``x[i]`` or ``x[i, ...]``: the loop index (or an element used only as an index) picks an
    item; or the index shifted by an int literal (``x[i + 1]``, the next head after a first one
    taken before the loop)."""
    first = sub.slice.elts[0] if isinstance(sub.slice, ast.Tuple) and sub.slice.elts else sub.slice
    if isinstance(first, ast.BinOp) and isinstance(first.op, (ast.Add, ast.Sub)):
        shift = first.right if _named(first.left, rows) else \
            first.left if isinstance(first.op, ast.Add) and _named(first.right, rows) else None
        return isinstance(shift, ast.Constant) and type(shift.value) is int
    return _named(first, rows)


def _named(x: ast.expr, names: set[str]) -> bool:
    return isinstance(x, ast.Name) and x.id in names


def index_only(element: str, body: list[ast.stmt]) -> bool:
    """The body reads ``element`` only as the whole index of a name's item (``x[t]``)."""
    uses = {id(n) for s in body for n in walk(s) if is_name(n, element)}
    indices = {id(n.slice) for s in body for n in walk(s) if isinstance(n, ast.Subscript)
               and isinstance(n.value, ast.Name) and is_name(n.slice, element)}
    return bool(uses) and uses <= indices


def _entry_only(element: str, body: list[ast.stmt], ctx: PassContext) -> bool:
    """The body reads ``element`` only as a whole entry of a subscript of a name that is no module
    global (``probs[:, c]``, ``x[i, j]``): a 0-d int64 tensor there indexes as the int does (a
    global may be a list, which a tensor under vmap cannot index)."""
    if not index_entries_only(element, body):
        return False
    indexing = [n for s in body for n in walk(s) if isinstance(n, ast.Subscript) and any(
        is_name(e, element) for e in (n.slice.elts if isinstance(n.slice, ast.Tuple)
                                      else [n.slice]))]
    return all(isinstance(n.value, ast.Name) and n.value.id not in ctx.globals for n in indexing)


def _only_items_read(name: str, elements: set[str], body: list[ast.stmt], rows: set[str]) -> bool:
    """The body reads ``name`` only as ``name[i]`` and writes into neither those items nor the
    element names bound to its items."""
    items = set()
    for s in body:
        for n in walk(s):
            if isinstance(n, ast.Subscript) and is_name(n.value, name):
                if not (_reads_row(n, rows) and isinstance(n.ctx, ast.Load)):
                    return False
                items.add(id(n.value))
            elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) \
                    and ops.is_inplace(n.func.attr) and _item_of(n.func.value, name, elements):
                return False
            elif isinstance(n, (ast.Subscript, ast.Attribute)) and not isinstance(n.ctx, ast.Load) \
                    and _item_of(n.value, name, elements):
                return False
    loose = [n for s in body for n in walk(s) if is_name(n, name) and id(n) not in items]
    return not loose


def _item_of(expr: ast.expr, name: str, elements: set[str]) -> bool:
    while isinstance(expr, (ast.Subscript, ast.Attribute)):
        expr = expr.value
    return isinstance(expr, ast.Name) and (expr.id == name or expr.id in elements)
