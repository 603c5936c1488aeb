"""Stage: the sort of a 1-D selection that is read only at its ends, in comparisons, and by ops
that do not see the order, is no sort: its ends become the selection's extremes.

A per-item ``torch.sort`` of a data-dependent number of elements has no masked dense form, but a
sorted sequence read only this way needs none (a hard-mining loss's anchor loop)::

    pos = torch.masked_select(sim[i], same)      pos = torch.masked_select(sim[i], same)
    pos = torch.sort(pos)[0]                     neg = torch.masked_select(sim[i], other)
    neg = torch.masked_select(sim[i], other) ->  hard = torch.masked_select(neg,
    neg = torch.sort(neg)[0]                         neg + 0.1 > <the first of pos sorted>)
    hard = torch.masked_select(neg,              loss += torch.exp(hard).sum()
        neg + 0.1 > pos[0])
    loss += torch.exp(hard).sum()

and ``masked_selections_to_where`` takes the selections that are left. The first of an ascending
sort (the last of a descending one) is the least value that is not NaN, NaN when every value is
(``FIRST``); the other end is NaN when any value is, else the greatest: ``max()`` (``LAST``).

What is sorted: ``torch.sort(e)[0]``, ``torch.sort(e).values``, ``e.sort()[0]``, ...with
``descending=`` (or ``dim=0``/``-1``, ``stable=``) as literals, bound to a name by a statement of
the body's top level, ``e`` 1-D by construction: a ``masked_select`` call, or a name every
binding of which in the body is one, or such a sort; sorted once, and not read in the body
before it (that would be the previous iteration's value). Every later read of a sorted name, and
of the names bound to what it flows into (its family), must be one of:

* its end, ``s[0]`` or ``s[-1]``, where only arithmetic stands between it and a comparison
  (a mask: no gradient flows through it, so the sort's choice among ties does not matter);
  ``s`` the sorted name or ``masked_select(s, m)`` of it, bound to a name (the order kept);
* an operand of elementwise arithmetic, comparisons, the registry's elementwise ops, or
  ``masked_select`` (the result is read by these rules in turn), whose other operands pair
  their elements with the sorted ones as they did: numbers, 0-d values (whole reductions,
  ends), the same family, or names the body does not bind, which the loop's runtime check
  requires to be numbers or 0-d tensors (``SCALAR_GUARD``);
* reduced whole by an op that does not see the order (``ORDER_FREE``: sums in another order
  round differently, by an ulp, as any vectorized sum does).

Anything else, or a name of the family also bound otherwise, leaves the body as it is. Sorts
along other dims, ``argsort`` and the indices of the sort are left alone.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, clone, is_pure, replace, walk
from .loop_dataflow import call_op, loads, method_name, resolve_call
from .plan import LoopPlan

# The ends of an ascending sort by the unsorted values (``s``): FIRST and LAST.
FIRST = "s.nan_to_num(torch.inf, torch.inf, -torch.inf).min() * (s == s).sum().sign()"
LAST = "s.max()"
# Whole reductions the order of the elements does not change (their value up to rounding).
ORDER_FREE = frozenset({"sum", "mean", "max", "min", "amax", "amin", "logsumexp", "numel",
                        "len", "prod", "any", "all", "nansum", "count_nonzero"})
SELECT = "masked_select"
# Checked before the loop (else it runs as written): what a sorted value meets elementwise and
# the body does not bind is a number or a 0-d tensor (a tensor of the selection's length would
# pair its elements with the sorted ones).
SCALAR_GUARD = "isinstance(x, (int, float)) or torch.is_tensor(x) and x.dim() == 0"
_ARITHMETIC = (ast.BinOp, ast.UnaryOp)


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    sorts = _sorts(plan.body, ctx)
    if not sorts:
        return plan
    body = clone(plan.body)
    it = plan.iteration
    reads = _Reads(body, sorts, {it.index} | {name for name, _ in it.elements}, ctx)
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
        ends[sub] = replace(FIRST if first else LAST, loc=sub, torch_name=ctx.torch_name,
                                s=sub.value)
    plan.body = [_Ends(ends).visit(s) for s in unsorted]
    for x in {ast.dump(g): g for g in reads.guards}.values():
        plan.check(SCALAR_GUARD, x=x)
    return plan


class _Ends(ast.NodeTransformer):
    def __init__(self, ends: dict[ast.Subscript, ast.expr]):
        self.ends = ends

    def visit_Subscript(self, node: ast.Subscript) -> ast.expr:
        return self.ends.get(node) or self.generic_visit(node)


def _sorts(body: list[ast.stmt], ctx: PassContext) -> dict[str, bool]:
    """The names top-level statements ``s = <sort of a 1-D value>`` bind -> descending."""
    bindings: dict[str, list[ast.expr]] = {}
    for n in (x for s in body for x in walk(s)):
        for t in _stored(n):
            if isinstance(t, ast.Name):
                simple = isinstance(n, ast.Assign) and t in n.targets
                bindings.setdefault(t.id, []).append(n.value if simple else ast.Constant(None))
    found: dict[str, bool] = {}
    sorted_twice, read_first, bound = set(), set(), set()
    for s in body:
        read_first |= loads(s) - bound
        if isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name):
            sort = _sorted(s.value, ctx)
            if sort is not None and _one_dim(sort[0], bindings, ctx, set()):
                if s.targets[0].id in found:
                    sorted_twice.add(s.targets[0].id)
                found[s.targets[0].id] = sort[1]
        bound |= {t.id for n in walk(s) for t in _stored(n) if isinstance(t, ast.Name)}
    return {name: d for name, d in found.items() if name not in sorted_twice | read_first}


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
    they have; ``guards``: names read next to them that must be numbers or 0-d tensors."""

    def __init__(self, body: list[ast.stmt], sorts: dict[str, bool], loop_vars: set[str],
                 ctx: PassContext):
        self.body, self.sorts, self.ctx = body, sorts, ctx
        self.parents = {id(c): n for s in body for n in walk(s) for c in ast.iter_child_nodes(n)}
        self.bound = loop_vars | {t.id for s in body for n in walk(s) for t in _stored(n)
                                  if isinstance(t, ast.Name)}
        self.ends: list[tuple[ast.Subscript, str]] = []
        self.guards: list[ast.expr] = []
        self.order: dict[str, str] = {}   # names in the order of a sorted name -> that name
        self.root: dict[str, str] = {}    # every tracked name -> the sorted name it comes from

    def ok(self) -> bool:
        for s in self.body:
            flows = [self.read(n) for n in walk(s) if isinstance(n, ast.Name)
                     and isinstance(n.ctx, ast.Load) and n.id in self.root]
            if None in flows:
                return False
            target = s.targets[0].id if isinstance(s, ast.Assign) and len(s.targets) == 1 \
                and isinstance(s.targets[0], ast.Name) else None
            stored = {t.id for n in walk(s) for t in _stored(n) if isinstance(t, ast.Name)}
            if target is not None and target in self.sorts and _sorted(s.value, self.ctx):
                self.order[target] = self.root[target] = target
            elif target is not None and any(f not in ("end", "reduced") for f in flows):
                root = next(f for f in flows if f not in ("end", "reduced"))
                self.order.pop(target, None)
                self.root[target] = root
                ordered = self._kept_order(s.value)
                if ordered is not None:
                    self.order[target] = root
            elif any(f not in ("end", "reduced") for f in flows) or stored & set(self.root):
                return False  # into a compound statement, or bound otherwise
        return True

    def _kept_order(self, value: ast.expr) -> str | None:
        """The ordered name ``value`` is, or selects from (``masked_select(s, m)``)."""
        if isinstance(value, ast.Name) and value.id in self.order:
            return value.id
        base = _selected_from(value, self.ctx)
        return base.id if isinstance(base, ast.Name) and base.id in self.order else None

    def read(self, name: ast.Name) -> str | None:
        """How this read of a tracked name is used: "end", "reduced", the sorted name it comes
        from when it flows into the value of the statement's assignment, or None (refused)."""
        root = self.root[name.id]
        node, parent = name, self.parents.get(id(name))
        if isinstance(parent, ast.Subscript) and parent.value is node:
            if name.id in self.order and _index(parent.slice) in (0, -1) \
                    and self._in_comparison(parent):
                self.ends.append((parent, self.order[name.id]))
                return "end"
            return None
        while True:
            if isinstance(parent, (ast.BinOp, ast.UnaryOp, ast.Compare)):
                if not all(self._same_order(c, root) for c in ast.iter_child_nodes(parent)
                           if isinstance(c, ast.expr)):
                    return None
                node, parent = parent, self.parents.get(id(parent))
                continue
            if isinstance(parent, ast.Attribute) and parent.value is node:
                parent = self.parents.get(id(parent))
                if not (isinstance(parent, ast.Call) and parent.func.value is node):
                    return None
            elif not (isinstance(parent, ast.Call) and node is not parent.func):
                return root if isinstance(parent, ast.Assign) and len(parent.targets) == 1 \
                    and isinstance(parent.targets[0], ast.Name) else None
            use = self._use(parent, root)
            if use != "flows":
                return use
            node, parent = parent, self.parents.get(id(parent))

    def _use(self, call: ast.Call, root: str) -> str | None:
        """A call reading the value: "reduced" when it reduces it whole, ignoring the order;
        "flows" when its result is elementwise of it or selected from it, every other operand
        a number, a 0-d value or of the same order; else None."""
        method = method_name(call, self.ctx)
        fn = resolve_call(call.func, self.ctx) or method or ""
        short = fn.rsplit(".", 1)[-1]
        operands = ([call.func.value] if method else []) + call.args
        if short in ORDER_FREE and not call.keywords and len(operands) == 1 \
                and (method or fn in ("len", f"torch.{short}")):
            return "reduced"
        if (short == SELECT or call_op(call, self.ctx).batched == "elementwise") and all(
                self._same_order(a, root) for a in operands + [k.value for k in call.keywords]):
            return "flows"
        return None

    def _same_order(self, e: ast.expr, root: str) -> bool:
        """``e`` pairs its elements with those of ``root``'s family as the sorted values do: made
        of names of that family, numbers, whole reductions and ends (0-d), and names the body
        does not bind (checked to be numbers or 0-d tensors), by elementwise ops."""
        if isinstance(e, ast.Name) and e.id in self.root:
            return self.root[e.id] == root
        if isinstance(e, ast.Constant):
            return type(e.value) in (int, float, bool)
        if isinstance(e, (ast.Name, ast.Attribute)) and not loads(e) & self.bound:
            if is_pure(e):
                self.guards.append(e)
                return True
            return False
        if isinstance(e, ast.Subscript):
            return isinstance(e.value, ast.Name) and e.value.id in self.order \
                and _index(e.slice) in (0, -1)
        if isinstance(e, ast.Call):
            return self._use(e, root) is not None and all(
                isinstance(a, ast.Name) and a.id in self.root or self._same_order(a, root)
                for a in e.args)
        return isinstance(e, (ast.BinOp, ast.UnaryOp, ast.Compare, ast.operator, ast.unaryop,
                              ast.cmpop)) and all(
            self._same_order(c, root) for c in ast.iter_child_nodes(e) if isinstance(c, ast.expr))

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
