"""Stage: the sort of a 1-D selection that is read only at its ends, in comparisons, and by ops
that do not see the order, is no sort: its ends become the selection's extremes.

A per-item ``torch.sort`` of a data-dependent number of elements has no masked dense form, but a
sorted sequence read only this way needs none (a hard-mining loss's anchor loop)::

    pos = torch.masked_select(sim[i], same)      pos = torch.masked_select(sim[i], same)
    pos = torch.sort(pos)[0]                     pos = pos
    neg = torch.masked_select(sim[i], other) ->  neg = torch.masked_select(sim[i], other)
    neg = torch.sort(neg)[0]                     neg = neg
    hard = torch.masked_select(neg,              hard = torch.masked_select(neg,
        neg + 0.1 > pos[0])                          neg + 0.1 > <the first of pos sorted>)
    loss += torch.exp(hard).sum()                loss += torch.exp(hard).sum()

and ``masked_selections_to_where`` takes the selections that are left. The first of an ascending
sort (the last of a descending one) is the least value that is not NaN, NaN when every value is
(``FIRST``); the other end is NaN when any value is, else the greatest: ``max()`` (``LAST``).

What is sorted: ``torch.sort(e)[0]``, ``torch.sort(e).values``, ``e.sort()[0]``, ...with
``descending=`` (or ``dim=0``/``-1``, ``stable=``) as literals, bound to a name by a statement of
the body's top level, ``e`` 1-D by construction: a ``masked_select`` call, or a name every
binding of which in the body is one, or such a sort. Every later read of a sorted name, and of
the names bound to what it flows into, must be one of:

* its end, ``s[0]`` or ``s[-1]``, where only arithmetic stands between it and a comparison
  (a mask: no gradient flows through it, so the sort's choice among ties does not matter);
  ``s`` the sorted name or ``masked_select(s, m)`` of it, bound to a name (the order kept);
* an operand of elementwise arithmetic, comparisons, the registry's elementwise ops, or
  ``masked_select`` (the result is read by these rules in turn);
* reduced whole by an op that does not see the order (``ORDER_FREE``: sums in another order
  round differently, by an ulp, as any vectorized sum does).

A sorted name read before its sort in the body (the previous iteration's value), anything else,
or a name also bound otherwise leaves the body as it is. Sorts along other dims, ``argsort`` and
the indices of the sort are left alone.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, clone, replace, walk
from .loop_dataflow import call_op, method_name, resolve_call
from .plan import LoopPlan

# The ends of an ascending sort by the unsorted values (``s``): FIRST and LAST.
FIRST = "s.nan_to_num(torch.inf, torch.inf, -torch.inf).min() * (s == s).sum().sign()"
LAST = "s.max()"
# Whole reductions the order of the elements does not change (their value up to rounding).
ORDER_FREE = frozenset({"sum", "mean", "max", "min", "amax", "amin", "logsumexp", "numel",
                        "len", "prod", "any", "all", "nansum", "count_nonzero"})
SELECT = "masked_select"
_ARITHMETIC = (ast.BinOp, ast.UnaryOp)


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    sorts = _sorts(plan.body, ctx)
    if not sorts:
        return plan
    body = clone(plan.body)
    reads = _Reads(body, sorts, ctx)
    if not reads.ok():
        return plan
    unsorted = []
    for s in body:
        if isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name) \
                and s.targets[0].id in sorts and _sorted(s.value, ctx) is not None:
            s.value = _sorted(s.value, ctx)[0]
            if isinstance(s.value, ast.Name) and s.value.id == s.targets[0].id:
                continue  # `s = s`
        unsorted.append(s)
    ends = {}
    for sub, name in reads.ends:
        first = (_index(sub.slice) == 0) != sorts[name]
        ends[id(sub)] = replace(FIRST if first else LAST, loc=sub, torch_name=ctx.torch_name,
                                s=sub.value)
    plan.body = [_Ends(ends).visit(s) for s in unsorted]
    return plan


class _Ends(ast.NodeTransformer):
    def __init__(self, ends: dict[int, ast.expr]):
        self.ends = ends

    def visit_Subscript(self, node: ast.Subscript) -> ast.expr:
        return self.ends.get(id(node)) or self.generic_visit(node)


def _sorts(body: list[ast.stmt], ctx: PassContext) -> dict[str, bool]:
    """The names top-level statements ``s = <sort of a 1-D value>`` bind -> descending."""
    bindings: dict[str, list[ast.expr]] = {}
    for n in (x for s in body for x in walk(s)):
        for t in _stored(n):
            if isinstance(t, ast.Name):
                simple = isinstance(n, ast.Assign) and t in n.targets
                bindings.setdefault(t.id, []).append(n.value if simple else ast.Constant(None))
    found = {}
    for s in body:
        if isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name):
            sort = _sorted(s.value, ctx)
            if sort is not None and _one_dim(sort[0], bindings, ctx, set()):
                found[s.targets[0].id] = sort[1]
    return found


def _index(node: ast.expr) -> int | None:
    """The integer literal ``node`` is (``0``, ``-1``), else None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _index(node.operand)
        return None if inner is None else -inner
    return node.value if isinstance(node, ast.Constant) and type(node.value) is int else None


def _sorted(value: ast.expr, ctx: PassContext) -> tuple[ast.expr, bool] | None:
    """(the value sorted, descending) when ``value`` is the sorted values of a sort along the
    only dim with literal arguments; else None."""
    if isinstance(value, ast.Subscript) and isinstance(value.slice, ast.Constant) \
            and value.slice.value == 0 and type(value.slice.value) is int:
        call = value.value
    elif isinstance(value, ast.Attribute) and value.attr == "values":
        call = value.value
    else:
        return None
    if not isinstance(call, ast.Call):
        return None
    method = isinstance(call.func, ast.Attribute) and call.func.attr == "sort" \
        and method_name(call, ctx) == "sort"
    if not (method or resolve_call(call.func, ctx) == "torch.sort"):
        return None
    args = ([call.func.value] if method else []) + call.args
    if not args or any(isinstance(a, ast.Starred) for a in args):
        return None
    given = dict(zip(("input", "dim", "descending"), args))
    for k in call.keywords:
        if k.arg not in ("dim", "descending", "stable") or k.arg in given:
            return None
        given[k.arg] = k.value
    try:
        options = {k: ast.literal_eval(v) for k, v in given.items() if k != "input"}
    except ValueError:
        return None
    if options.get("dim", -1) not in (0, -1) or type(options.get("descending", False)) is not bool:
        return None
    return given["input"], options.get("descending", False)


def _one_dim(value: ast.expr, bindings: dict[str, list[ast.expr]], ctx: PassContext,
             seen: set[str]) -> bool:
    """``value`` is 1-D by construction: ``masked_select``, a sort of such a value, or a name
    bound only to those, one of them a ``masked_select``."""
    if _selected_from(value, ctx) is not None:
        return True
    if _sorted(value, ctx) is not None:
        return _one_dim(_sorted(value, ctx)[0], bindings, ctx, seen)
    if isinstance(value, ast.Name) and value.id in seen:
        return True  # a sort of itself: its other bindings decide
    if isinstance(value, ast.Name) and value.id in bindings:
        values = bindings[value.id]
        return any(_selected_from(v, ctx) is not None for v in values) \
            and all(_one_dim(v, bindings, ctx, seen | {value.id}) for v in values)
    return False


class _Reads:
    """Whether every read of the sorted names (and of the names they flow into) is one the module
    docstring allows; ``ends``: the ``s[0]``/``s[-1]`` reads, with the sorted name whose order
    they have."""

    def __init__(self, body: list[ast.stmt], sorts: dict[str, bool], ctx: PassContext):
        self.body, self.sorts, self.ctx = body, sorts, ctx
        self.parents = {id(c): n for s in body for n in walk(s) for c in ast.iter_child_nodes(n)}
        self.ends: list[tuple[ast.Subscript, str]] = []
        self.order: dict[str, str] = {}   # names in the order of a sorted name -> that name
        self.unordered: set[str] = set()  # names of values made of those, elementwise

    def ok(self) -> bool:
        for s in self.body:
            tracked = self.unordered | set(self.order)
            flows = [self.read(n) for n in walk(s) if isinstance(n, ast.Name)
                     and isinstance(n.ctx, ast.Load) and n.id in tracked]
            if None in flows:
                return False
            target = s.targets[0].id if isinstance(s, ast.Assign) and len(s.targets) == 1 \
                and isinstance(s.targets[0], ast.Name) else None
            stored = {t.id for n in walk(s) for t in _stored(n) if isinstance(t, ast.Name)}
            if target is not None and target in self.sorts and _sorted(s.value, self.ctx):
                self.order[target] = target
                self.unordered.discard(target)
            elif target is not None and "flows" in flows:
                self.order.pop(target, None)
                self.unordered.discard(target)
                ordered = self._kept_order(s.value)
                if ordered is not None:
                    self.order[target] = self.order[ordered]
                else:
                    self.unordered.add(target)
            elif "flows" in flows or stored & (self.unordered | set(self.order)):
                return False  # into a compound statement, or bound otherwise
        return True

    def _kept_order(self, value: ast.expr) -> str | None:
        """The ordered name ``value`` is, or selects from (``masked_select(s, m)``)."""
        if isinstance(value, ast.Name) and value.id in self.order:
            return value.id
        base = _selected_from(value, self.ctx)
        return base.id if isinstance(base, ast.Name) and base.id in self.order else None

    def read(self, name: ast.Name) -> str | None:
        """How this read of a tracked name is used: "end", "reduced", "flows" (into the value
        of the statement's assignment), or None (refused)."""
        node, parent = name, self.parents.get(id(name))
        if isinstance(parent, ast.Subscript) and parent.value is node:
            if name.id in self.order and _index(parent.slice) in (0, -1) \
                    and self._in_comparison(parent):
                self.ends.append((parent, self.order[name.id]))
                return "end"
            return None
        while True:
            if isinstance(parent, (ast.BinOp, ast.UnaryOp, ast.Compare)):
                node, parent = parent, self.parents.get(id(parent))
                continue
            if isinstance(parent, ast.Attribute) and parent.value is node:
                call = self.parents.get(id(parent))
                if not (isinstance(call, ast.Call) and call.func is parent):
                    return None
                node, parent = call, self.parents.get(id(call))
                use = self._use(call, method=True)
            elif isinstance(parent, ast.Call) and node is not parent.func:
                use = self._use(parent, method=False)
                node, parent = parent, self.parents.get(id(parent))
            elif isinstance(parent, ast.Assign) and len(parent.targets) == 1 \
                    and isinstance(parent.targets[0], ast.Name):
                return "flows"
            else:
                return None
            if use != "flows":
                return use

    def _use(self, call: ast.Call, method: bool) -> str | None:
        """A call reading the value (its receiver when ``method``): "reduced" when it reduces it
        whole, ignoring the order; "flows" when its result is elementwise of it or selected from
        it; else None."""
        fn = method_name(call, self.ctx) if method else resolve_call(call.func, self.ctx)
        short = (fn or "").rsplit(".", 1)[-1]
        arity = 0 if method else 1
        if short in ORDER_FREE and not call.keywords and len(call.args) == arity \
                and (method or fn in ("len", f"torch.{short}")):
            return "reduced"
        if short == SELECT or call_op(call, self.ctx).batched == "elementwise":
            return "flows"
        return None

    def _in_comparison(self, node: ast.expr) -> bool:
        parent = self.parents.get(id(node))
        while isinstance(parent, _ARITHMETIC):
            node, parent = parent, self.parents.get(id(parent))
        return isinstance(parent, ast.Compare)


def _selected_from(value: ast.expr, ctx: PassContext) -> ast.expr | None:
    """``x`` of ``torch.masked_select(x, m)`` / ``x.masked_select(m)``, else None."""
    if not isinstance(value, ast.Call):
        return None
    if resolve_call(value.func, ctx) == "torch.masked_select" and value.args:
        return value.args[0]
    if method_name(value, ctx) == SELECT and isinstance(value.func, ast.Attribute):
        return value.func.value
    return None


def _stored(n: ast.AST) -> list[ast.expr]:
    targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(
        n, (ast.AugAssign, ast.AnnAssign, ast.For, ast.NamedExpr)) else []
    return [m for t in targets for m in walk(t)]
