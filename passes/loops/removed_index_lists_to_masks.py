"""Stage: a list of positions with the iteration's own removed, ``idx = [*range(n)];
idx.remove(j)``, that selects along one dim of a tensor reduced along that dim becomes the
reduction masked by ``arange != j``.

GE2E's exclusive centroids (voxceleb_trainer) average every utterance but the iteration's own::

    for j in range(0, m):                              for j in range(0, m):
        idx = [*range(0, m)]                               _pos = torch.arange(x.shape[1], device=x.device)
        idx.remove(j)                            ->        _keep = ((_pos != j) & (_pos < m)).reshape(
        c = torch.mean(x[:, idx, :], 1)                        (-1,) + (1,) * (x.dim() - 2))
                                                           c = torch.where(_keep, x, False).sum(1) / _keep.sum()

The list's size is the same in every iteration, but its values vary, and ``list.remove`` needs
them on the host. ``x[:, idx, :]`` keeps the positions ``p < n``, ``p != j`` of dim ``d`` in order,
so its sum along ``d`` is the masked sum (deselected values, NaN or inf, never reach an op or a
gradient) and its mean that sum over the count, as ``torch.mean`` divides (no positions left: 0 / 0
is its NaN, its gradient 0 as before).

Taken: ``idx = [*range(n)]`` or ``list(range(n))`` (a start, if any, the literal 0), the next
statement ``idx.remove(j)`` with ``j`` the loop index, and every other read of ``idx`` an entry
``x[:, ..., :, idx, ...]`` after only full slices, reduced by ``.sum(d)``/``.mean(d)`` or
``torch.sum(..., d)``/``torch.mean(..., d)`` (``dim=d`` too), the mask computed before the
statement; ``x``, ``n`` not bound in the body (``n`` pure), ``idx`` not read after the loop. The runtime check requires what makes the
original well-defined (else it runs as written and raises as before): ``x`` a tensor, ``n`` an int
with ``n <= x.shape[d]`` (no position out of range), ``j`` counting up in ``[0, n)`` (``remove``
finds it), and for a mean a floating ``x`` (``torch.mean`` of integers raises). Anything else
leaves the body as written.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, Transformer, clone, is_int, is_name, is_pure, replace, walk
from .loop_dataflow import loads, method_name, resolve_call, stores_in
from .plan import LoopPlan

_KEEP = """
p = torch.arange(x.shape[d], device=x.device)
k = ((p != j) & (p < n)).reshape((-1,) + (1,) * (x.dim() - d - 1))
"""
_FORMS = {"sum": "torch.where(k, x, False).sum(d)",
          "mean": "torch.where(k, x, False).sum(d) / k.sum()"}


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    body, index = plan.body, plan.iteration.index
    for at in range(len(body) - 1):
        size = _removed_list(body[at], body[at + 1], index, ctx)
        if size is None or body[at].targets[0].id in plan.live_after or not is_pure(size):
            continue
        name = body[at].targets[0].id
        rest = clone(body[at + 2:])
        bound = stores_in(rest)
        masked = _Masked(name, size, index, bound, ctx)
        out = []
        for s in rest:
            s = masked.visit(s)
            out += masked.pre + [s]
            masked.pre = []
        if not masked.made or name in bound or any(
                is_name(n, name) for s in out for n in walk(s)) or loads(size) & bound:
            continue
        plan.body = body[:at] + out
        plan.need_plain_range()
        if ast.dump(plan.iteration.stop) != ast.dump(size):  # the usual `range(n)` needs none
            plan.check("b <= n", b=plan.iteration.stop, n=size)
        for check in masked.checks:
            plan.checks.add(check)
        return plan
    return plan


def _removed_list(make: ast.stmt, remove: ast.stmt, index: str, ctx: PassContext) -> ast.expr | None:
    """``n`` of ``idx = [*range(n)]`` (or ``list(range(n))``) followed by ``idx.remove(j)``."""
    if not (isinstance(make, ast.Assign) and len(make.targets) == 1
            and isinstance(make.targets[0], ast.Name)):
        return None
    value = make.value
    if isinstance(value, ast.List) and len(value.elts) == 1 \
            and isinstance(value.elts[0], ast.Starred):
        rng = value.elts[0].value
    elif isinstance(value, ast.Call) and resolve_call(value.func, ctx) == "list" \
            and len(value.args) == 1 and not value.keywords:
        rng = value.args[0]
    else:
        return None
    if not (isinstance(rng, ast.Call) and resolve_call(rng.func, ctx) == "range"
            and not rng.keywords and len(rng.args) in (1, 2)
            and not any(isinstance(a, ast.Starred) for a in rng.args)
            and (len(rng.args) == 1 or is_int(rng.args[0], 0))):
        return None
    call = remove.value if isinstance(remove, ast.Expr) else None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and call.func.attr == "remove" and is_name(call.func.value, make.targets[0].id)
            and len(call.args) == 1 and is_name(call.args[0], index) and not call.keywords):
        return None
    return rng.args[-1]


class _Masked(Transformer):
    """Replaces the reductions of ``x[..., idx, ...]`` (see the module docstring); ``pre``: the
    statements computing their masks, to go before the statement being visited."""

    def __init__(self, name: str, size: ast.expr, index: str, bound: set[str], ctx: PassContext):
        self.name, self.size, self.index, self.bound, self.ctx = name, size, index, bound, ctx
        self.pre: list[ast.stmt] = []
        self.checks: list[ast.expr] = []
        self.made = 0

    def visit_Call(self, call: ast.Call) -> ast.AST:
        self.generic_visit(call)
        found = self._reduction(call)
        if found is None:
            return call
        form, base, d = found
        pos, keep = self.ctx.namer.new("pos"), self.ctx.namer.new("keep")
        dim = ast.Constant(d)
        self.pre += replace(_KEEP, loc=call, torch_name=self.ctx.torch_name, p=pos, k=keep,
                            x=base, d=dim, j=ast.Name(self.index, ast.Load()), n=self.size)
        test = "isinstance(x, torch.Tensor) and isinstance(n, int) and x.dim() > d " \
               "and n <= x.shape[d]" + (" and x.is_floating_point()" if form == "mean" else "")
        self.checks.append(replace(test, loc=call, torch_name=self.ctx.torch_name, x=base,
                                   n=self.size, d=dim))
        self.made += 1
        return replace(_FORMS[form], loc=call, torch_name=self.ctx.torch_name, k=keep, x=base,
                       d=dim)

    def _reduction(self, call: ast.Call) -> tuple[str, ast.expr, int] | None:
        """(form, x, d) of a sum or mean of ``x[:, ..., idx, ...]`` along ``d``, else None."""
        func = resolve_call(call.func, self.ctx)
        form = method_name(call, self.ctx) if func is None else func.removeprefix("torch.")
        args = list(call.args) if func is None else list(call.args[1:])
        operand = call.func.value if func is None else (call.args[0] if call.args else None)
        if func is not None and not func.startswith("torch."):
            return None
        args += [k.value for k in call.keywords if k.arg == "dim"]
        if form not in _FORMS or len(args) != 1 or len(call.keywords) > 1 \
                or (call.keywords and call.keywords[0].arg != "dim") \
                or not isinstance(operand, ast.Subscript):
            return None
        entries = operand.slice.elts if isinstance(operand.slice, ast.Tuple) else [operand.slice]
        at = [k for k, e in enumerate(entries) if is_name(e, self.name)]
        if len(at) != 1 or not is_int(args[0], at[0]) or not all(
                isinstance(e, ast.Slice) and e.lower is None and e.upper is None and e.step is None
                for k, e in enumerate(entries) if k != at[0]):
            return None
        base = operand.value
        if not isinstance(base, (ast.Name, ast.Attribute)) or loads(base) & self.bound \
                or self.index in loads(base):
            return None
        return form, base, at[0]
