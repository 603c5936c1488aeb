"""Stage: what leaves an iteration becomes outputs of the body and folds after the loop.

Each effect statement (``classify_effects``), its value made safe under its mask
(``tensor_branches_to_where``), becomes per-iteration statements binding an output, and
``plan.folds`` get the statements that fold or store the stacked outputs (``_outs[k]``) after
the loop::

    loss += e          ->   _loss_part = _loss_part + e     (folded by ``fold_accumulators``)
    m = max(m, e)      ->   _m_step = e                     (ditto, with amax)
    s += e; c.append(s)->   _s_step = e                     _s_running = torch.cumsum(_outs[0], 0)
                                                            s = _s_running[-1]; c.extend(...)
    lst.append(e)      ->   _lst_item = e                   lst.extend(_outs[0].unbind(0))
    out[i] = e         ->   _out_item = e                   out[a:b:s] = _outs[0].reshape(...)
    out[i, t[i]] = e   ->   _out_slot = t[i]; _out_item = e out[arange, _outs[0].reshape(n)] = ...
    counts[t[i]] += e  ->   ...                             counts.index_put_(..., accumulate=True)

Under a mask ``p``, sums add ``torch.where(p, e, 0)``, writes keep what is there, appends add the
items of the iterations that append (``lst.extend(_outs[0][_outs[1]].unbind(0))``, never a
binding of the list: with none appended its consumers raise as the original's). Appended
stand-ins of selections (``plan.selection_appends``) add each iteration's selection::

    lst.append(x[i][m])  ->   _lst_item = <x[i]'s stand-in>    lst.extend(torch.split(
                              (and its mask ``_taken``)            _outs[0][_outs[1]], <counts>))

A comprehension's
own list keeps its stacked values for its consumer (``plan.own_list_values``); a ``lst = []`` list
the loop builds is bound to them (``plan.bound_lists``).
"""
from __future__ import annotations

import ast

from .. import accumulating_writes, ast_marks
from .. import loop_rules as rules
from .. import ops
from ..ast_tools import PassContext, clone, is_name, unparse, walk, write_target
from ..errors import Unsupported
from . import inline_inner_loops
from .loop_dataflow import (Effect, call_op, data_index, depends, index_offset, loads,
                            resolve_call, stores, stores_in, write_entries)
from .number_kinds import NUMBERS, number_kind, on_host
from .plan import Accumulator, LoopPlan, OwnList


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    plan.body = _lower(plan, plan.body, ctx, _always_updated(plan, plan.body))
    return plan


def _lower(plan: LoopPlan, stmts: list[ast.stmt], ctx: PassContext, always: set[str],
           guarded: bool = False) -> list[ast.stmt]:
    """``guarded``: ``stmts`` are in a branch of a Python condition of the body; ``always``:
    the names every iteration updates whatever those conditions (no flags for them)."""
    out = []
    for s in stmts:
        if s in plan.masked:
            value, mask = plan.masked[s]
            e = plan.facts.effects[s]
            out += _effect(plan, e, value, mask, ctx, guarded and e.name not in always, guarded)
        elif isinstance(s, ast.If):  # a Python condition (tensor ones are masks by now)
            s.body = _lower(plan, s.body, ctx, always, True) or [ast.Pass()]
            s.orelse = _lower(plan, s.orelse, ctx, always, True)
            out.append(s)
        else:
            out.append(s)
    return out


def _always_updated(plan: LoopPlan, stmts: list[ast.stmt]) -> set[str]:
    """The names ``stmts`` update in every iteration: outside any condition, or in both
    branches of a Python one."""
    names = set()
    for s in stmts:
        if s in plan.masked and plan.masked[s][1] is None:
            names.add(plan.facts.effects[s].name)
        elif isinstance(s, ast.If):
            names |= _always_updated(plan, s.body) & _always_updated(plan, s.orelse)
    return names


def _effect(plan: LoopPlan, e: Effect, value: ast.expr, mask: str | None,
            ctx: PassContext, flagged: bool = False, guarded: bool = False) -> list[ast.stmt]:
    """Per-iteration statements of an effect; its fold over the loop goes to ``plan.folds``;
    ``guarded``: under a Python condition of the body."""
    if e.kind == "append" and e.name in plan.lists_read_in_part:
        raise Unsupported(f"`{e.name}` " + rules.READ_IN_PART.format(
            op=plan.lists_read_in_part[e.name]), e.stmt.lineno)
    if e.kind == "append":
        _check_invariant_number(plan, e, ctx)
    if e.kind == "acc" and e.family in rules.FAMILY_IDENTITY:
        return _partial(plan, e, value, mask, ctx, flagged, guarded)
    if e.kind in ("acc", "scan"):  # running max/min, prefix sum/product: one value each
        step = ctx.namer.new(f"{e.name}_step")
        stacked = plan.output(step)
        if e.kind == "acc":
            plan.accumulators[e.name] = Accumulator(step, e.family, stacked, {"tensor"})
        else:
            run = plan.running[e.name] = ctx.namer.new(f"{e.name}_running")
            fn = rules.FAMILY_SCAN_FN[e.family]
            scan = plan.sub(rules.FAMILY_SCAN[e.family], s=e.name, v=stacked,
                            f=ctx.bind(fn, fn.__name__))
            plan.folds += plan.sub("r = x", r=run, x=scan)
            plan.folds += plan.sub("s = r[-1]", s=e.name, r=run)
        return plan.sub("p = v", p=step, v=value)
    if e.scan_of:  # the running value itself: comes from the scan
        plan.folds += _place(plan, e, ast.Name(plan.running[e.scan_of], ast.Load()), ctx)
        return []
    if e.kind == "write" and mask is not None:
        value = _masked_write(plan, e, value, mask)
    item = ctx.namer.new(f"{e.name}_item")
    stmts, slots = [], {}  # data-dependent index entries, returned by each iteration too
    if e.kind == "write":
        plan.last_write[unparse(write_target(e.stmt))] = item
        for k, x in enumerate(write_entries(write_target(e.stmt))):
            if not is_name(x, plan.iteration.index) and data_index(x, plan.facts, ctx):
                _check_index(plan, x, ctx)
                slot = ctx.namer.new(f"{e.name}_slot")
                stmts += plan.sub("k = x", k=slot, x=x)
                slots[k] = plan.output(slot)
    stacked = plan.output(item)
    if number_kind(e.value, ctx, _bound(plan)) == "float" and on_host(e.value, _bound(plan)):
        plan.float_items.add(item)  # `sizes.append(math.sqrt(o.shape[0]))`: a Python float
    selected = plan.selection_appends.get(e.name) if e.kind == "append" else None
    if e.kind == "append" and (mask is not None or selected) and e.name in plan.own_lists:
        raise Unsupported(f"`{e.name}.append` under a tensor condition or of a selection: its "
                          "consumer reads one item per iteration", e.stmt.lineno)
    selected = selected and plan.output(selected)
    if e.kind == "append" and mask is not None:  # the items of the iterations that append
        taken = plan.output(mask)
        stacked = plan.sub("v[p]", v=stacked, p=taken)
        selected = selected and plan.sub("m[p]", m=selected, p=taken)
    if selected:  # each item the selection of its stand-in by its mask
        plan.folds.append(ast.Expr(plan.sub(
            "lst.extend(torch.split(v[m], m.reshape(len(m), -1).sum(1).tolist()))",
            lst=e.name, v=stacked, m=selected)))
    else:
        plan.folds += _place_at(plan, e, stacked, slots, ctx) if slots else \
            _place(plan, e, stacked, ctx, bind=mask is None)
    return stmts + plan.sub("x = v", x=item, v=value)


def _partial(plan: LoopPlan, e: Effect, value: ast.expr, mask: str | None,
             ctx: PassContext, flagged: bool, guarded: bool) -> list[ast.stmt]:
    """``s += e`` (sum, product): a partial starting at the family's identity. An update
    under a Python condition of the body that may not run (``flagged``) also sets a flag of
    its own, its mask or True where it runs (``acc.masks``: whether any iteration was
    selected)."""
    ident = rules.FAMILY_IDENTITY[e.family]
    if mask is not None:
        value = plan.sub(f"torch.where(p, v, {ident})", p=mask, v=value)
    if e.name not in plan.accumulators:
        part = ctx.namer.new(f"{e.name}_part")
        plan.init += plan.sub(f"p = {ident}", p=part)
        plan.accumulators[e.name] = Accumulator(part, e.family, plan.output(part), set())
    acc = plan.accumulators[e.name]
    kind, host = _kind(plan, e, ctx), on_host(e.value, _bound(plan))
    if kind == "float" and not host and e.name not in plan.wide:
        raise Unsupported(f"`{unparse(e.value)}` is a Python float of a number the vectorized "
                          "form computes as a tensor (the loop index, an item's value): it would "
                          "add it in float32, not as Python's double", e.stmt.lineno)
    acc.kinds.add(kind)
    if guarded:
        acc.guarded.add(kind)
    acc.on_host &= host
    acc.several |= e.steps > 1 or bool(acc.masks) or bool(ast_marks.get(e.stmt, ast_marks.INLINED))
    if not isinstance(e.stmt, ast.AugAssign):
        acc.rebound = True
    op = "*" if e.family == "prod" else ("-" if e.negate else "+")
    update = plan.sub(f"p = p {op} v", p=acc.part, v=value)
    counter = ast_marks.get(e.stmt, ast_marks.SELECTED_BY)
    if counter:  # an inner loop's fold: selected where its counter counts (under our masks too)
        acc.masks.append(counter)
        acc.counters.add(counter)
        return update
    when = ast_marks.get(e.stmt, ast_marks.SELECTED_WHEN)
    if when is not None:  # ... where its test on indices holds: ours too, on the host
        if flagged or mask is not None and mask not in plan.index_tests:
            raise Unsupported(f"`{e.name}` is updated by an inner loop under a condition on loop "
                              "indices and a condition here: whether any iteration updates it "
                              "is not known on the host", e.stmt.lineno)
        if not _on_host_after(plan, when):
            raise Unsupported(f"`{e.name}` is updated by an inner loop under a condition on loop "
                              "indices whose test or range reads values of this loop: whether "
                              "any iteration updates it is not known on the host", e.stmt.lineno)
        key = ctx.namer.new(f"{e.name}_when")
        acc.masks.append(key)
        acc.selected_when[key] = when if mask is None else \
            plan.sub("t and w", t=plan.index_tests[mask], w=when)
        return update
    if not flagged:
        acc.masks.append(mask)
        return update
    flag = ctx.namer.new(f"{e.name}_taken")
    plan.init += plan.sub("f = False", f=flag)
    acc.masks.append(flag)
    acc.flags.add(flag)
    return update + plan.sub("f = m", f=flag, m=mask or ast.Constant(True))


def _on_host_after(plan: LoopPlan, test: ast.expr) -> bool:
    """``test`` (an inner loop's, on this loop's index) reads no name this loop binds but its
    index: it can run after the loop (``for a in x: for j in range(a.shape[0])`` cannot)."""
    it = plan.iteration
    own = {n.id for n in walk(test) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    bound = stores_in(plan.node.body) | {e for e, _ in it.elements}
    return not (loads(test) - own - {it.index}) & bound


def _check_invariant_number(plan: LoopPlan, e: Effect, ctx: PassContext) -> None:
    """An appended value the loop does not vary is computed once, as a tensor; a Python number
    from the host there (``lst.append(w.sum().item())``) would be a tensor in the list (or a
    float32 one, rounded): refused. ``host_roundtrips_to_tensor_ops`` converts the varying ones,
    which stay numbers."""
    if depends(e.value, plan.variant, ctx) or (
            _kind(plan, e, ctx) in NUMBERS and on_host(e.value, _bound(plan))):
        return  # (a number of the item's sizes: its Python type is known, ``number_kinds``)
    host = next((n for n in walk(e.value) if isinstance(n, ast.Call) and (
        call_op(n, ctx).host_number or ops.by_host_math(resolve_call(n.func, ctx)).functions)),
        None)
    if host is not None:
        raise Unsupported(f"`{unparse(e.stmt)}` appends a Python number (`{unparse(host)}`) the "
                          "loop does not vary: the list holds numbers, not tensors",
                          e.stmt.lineno)


def _masked_write(plan: LoopPlan, e: Effect, value: ast.expr, mask: str) -> ast.expr:
    """A write under a mask: deselected iterations add nothing, or keep what is there."""
    if e.family:
        keep = "0" if e.family in ("add_", "sub_") else "1"
        return plan.sub(f"torch.where(p, v, {keep})", p=mask, v=value)
    # deselected iterations keep what is there: this iteration's last write
    old = clone(write_target(e.stmt))
    old.ctx = ast.Load()
    old = plan.last_write.get(unparse(old), old)
    return plan.sub("torch.where(p, v, old)", p=mask, v=value, old=old)


def _check_index(plan: LoopPlan, x: ast.expr, ctx: PassContext) -> None:
    """A data-dependent write index must be one integer per iteration: ``int(...)``, the loop
    index plus or minus a fixed int (``mask[i, n + i]``), or an element / row of a 1-d integer
    tensor (a bool one would be a mask), or of a row of one at fixed ints (``l[i, j]``)."""
    if ast_marks.get(x, ast_marks.HOST_NUMBER) == "int":
        return
    if ast_marks.get(x, ast_marks.HOST_NUMBER) == "item" and isinstance(x, ast.Name):
        src = _item_source(plan, x.id)
        if src is not None:  # ``c = label[i].item()``: an int when ``label`` holds ints
            plan.check(f"x.dtype in {rules.INDEX_DTYPES}", x=src)
            return
    offset = index_offset(x, plan.iteration.index, plan.facts, ctx)
    if offset is not None:
        if not (isinstance(offset, ast.Constant) and type(offset.value) is int):
            plan.check("isinstance(c, int)", c=offset)
        return
    # rows at fixed ints only (``l[i, j]`` of an inner loop over ``j``): of elements
    rows = {r.param: (name, len(r.prefix)) for (name, _), r in plan.row_slices.items()
            if not any(isinstance(e, ast.Slice) for e in r.prefix) and not r.from_end}
    sources = dict(plan.iteration.elements)
    src, fixed = (sources.get(x.id), 0) if isinstance(x, ast.Name) else (None, 0)
    if src is None and isinstance(x, ast.Name) and x.id in rows:
        src, fixed = ast.Name(rows[x.id][0], ast.Load()), rows[x.id][1]
    if src is None:
        raise Unsupported(f"write index `{unparse(x)}`: not known to be one integer per "
                          "iteration")
    plan.check(f"x.dtype in {rules.INDEX_DTYPES} and x.dim() == {1 + fixed}", x=src)


def _kind(plan: LoopPlan, e: Effect, ctx: PassContext) -> str:
    """Which Python number (or tensor) ``e`` adds or appends in the original
    (``number_kinds``); one whose type depends on the data is refused."""
    kind = number_kind(e.value, ctx, _bound(plan))
    if kind == "unknown":
        raise Unsupported(f"`{unparse(e.value)}` is a Python int or a float depending on the "
                          "data: which one the vectorized form would return is not known",
                          e.stmt.lineno)
    return kind


def _bound(plan: LoopPlan):
    """name -> the value the body binds it to, once, at its top level by ``name = value``;
    None for other names."""
    def value(name: str) -> ast.expr | None:
        binds = [s for s in plan.body if name in stores(s)]
        if len(binds) != 1 or not (isinstance(binds[0], ast.Assign) and len(binds[0].targets)
                                   == 1 and is_name(binds[0].targets[0], name)):
            return None
        return binds[0].value
    return value


def _item_source(plan: LoopPlan, name: str) -> ast.expr | None:
    """The tensor whose element ``name`` holds, bound once at the body's top level by
    ``name = t[...].item()`` (``t[...].detach()`` here): ``t``, a name the body does not
    bind (a row parameter: the tensor it is a row of; an element: what the loop iterates);
    else None."""
    value = _bound(plan)(name)
    if value is None:
        return None
    while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) \
            and value.func.attr == "detach" and not value.args and not value.keywords:
        value = value.func.value
    while isinstance(value, ast.Subscript):
        value = value.value
    if not isinstance(value, ast.Name) or value.id in stores_in(plan.body) - {
            r.param for r in plan.row_slices.values()}:
        return None
    rows = {r.param: src for (src, _), r in plan.row_slices.items() if not r.prefix}
    sources = dict(plan.iteration.elements)
    if value.id in rows:
        return ast.Name(rows[value.id], ast.Load())
    return sources.get(value.id, value)


def _place_at(plan: LoopPlan, e: Effect, stacked: ast.expr, slots: dict[int, ast.expr],
              ctx: PassContext) -> list[ast.stmt]:
    """``out[i, t[i]] = v`` -> ``out[arange, slots] = stacked``; without the bare ``i``,
    ``counts[t[i]] += v`` -> ``counts.index_put_((slots,), stacked, accumulate=True)``."""
    it, target = plan.iteration, clone(write_target(e.stmt))
    entries = write_entries(target)
    plan.scattered.add(e.name)
    trips = it.trips(plan)
    index = []
    for k, x in enumerate(entries):
        if k in slots:  # one index per iteration (else reshape raises, as int(...) would)
            index.append(plan.sub("j.reshape(n)", j=slots[k], n=trips))
        elif is_name(x, it.index):
            index.append(plan.sub("torch.arange(a, b, s, device=out.device)", a=it.start,
                                  b=it.stop, s=it.step, out=e.name))
        else:
            if not (isinstance(x, ast.Constant) and type(x.value) is int):
                plan.check("isinstance(x, int)", x=x)
            index.append(x)
    values = ctx.namer.new(f"{e.name}_values")
    stmts = plan.sub(f"v = s.reshape(s.shape[:1] + (1,) * (out.dim() - {len(entries) - 1}"
                     " - s.dim()) + s.shape[1:])", v=values, s=stacked, out=e.name)
    target.slice = ast.Tuple(index, ast.Load())
    if not any(is_name(x, it.index) for x in entries):  # offsets alone: apart while >= 0
        for x in entries:
            c = index_offset(x, it.index, plan.facts, ctx)
            if c is not None:
                plan.check("s > 0 and x >= 0", s=it.step, x=ast.BinOp(it.start, x.op, c))
    if any(is_name(x, it.index) or index_offset(x, it.index, plan.facts, ctx) is not None
           for x in entries):  # distinct slots: a plain indexed write
        if isinstance(e.stmt, ast.AugAssign):
            return stmts + [ast.AugAssign(target, e.stmt.op, ast.Name(values, ast.Load()))]
        # `out[i, j] = v` casts v to out's dtype; an index_put_ would raise instead
        return stmts + [ast.Assign([target], plan.sub("v.to(out.dtype)", v=values,
                                                      out=e.name))]
    # in place as `+=` would: the values cast to the written dtype, or the same error;
    # index_put_ takes tensors only (a fixed int broadcasts as a 0-d one)
    target.slice.elts = [x if k in slots else plan.sub(
        "torch.as_tensor(x, device=out.device)", x=x, out=e.name) for k, x in enumerate(index)]
    v = plan.sub(rules.WRITE_ACCUMULATE[e.family], v=values)
    put = ctx.bind(accumulating_writes.index_accumulate, "index_accumulate")
    return stmts + [ast.Expr(plan.sub(f"{put}(out, i, v)", out=e.name, i=target.slice, v=v))]


def _place(plan: LoopPlan, e: Effect, stacked: ast.expr, ctx: PassContext,
           bind: bool = True) -> list[ast.stmt]:
    """Store the stacked per-iteration values of an append or write; ``bind``: a list the loop
    builds may be bound to them (not when they may be none: its consumers raise on an empty
    list, as the original's do)."""
    kind = _kind(plan, e, ctx) if e.kind == "append" else None
    host = ast_marks.get(e.value, ast_marks.HOST_NUMBER) or (kind if kind in NUMBERS else None)
    if e.kind == "append" and e.name in plan.own_lists:  # its consumer is known
        plan.own_list_values[e.name] = OwnList(stacked, host)
        return []
    if e.kind == "append" and bind and e.name in plan.buildable_lists and not host:
        plan.bound_lists.add(e.name)
        return plan.sub("lst = v", lst=e.name, v=stacked)
    if e.kind == "append":  # host values (`.item()`) were Python numbers in the list
        how = "v.tolist()" if host else "v.unbind(0)"
        return [ast.Expr(plan.sub(f"lst.extend({how})", lst=e.name, v=stacked))]
    return _place_slice(plan, e, stacked, ctx)


def _invariant_slice(plan: LoopPlan, x: ast.Slice, ctx: PassContext) -> ast.Slice:
    """An inner loop's slice in a write, bounded by an item of this loop (``0:len(spk):1``):
    the same bounds on the whole tensor (``emb.shape[1]``), which every item shares."""
    lifted = inline_inner_loops.lifted_to_tensors(x, plan, ctx)
    if lifted is None:
        raise Unsupported(f"the written slice `{unparse(x)}` varies with the iteration",
                          plan.node.lineno)
    for check in lifted[:-1]:
        plan.checks.add(check)
    return lifted[-1]


def _place_slice(plan: LoopPlan, e: Effect, stacked: ast.expr,
                 ctx: PassContext) -> list[ast.stmt]:
    """``out[..., i, ...] = v`` -> ``out[..., a:b:s, ...] = <stacked values>``."""
    plan.need_plain_range()
    it = plan.iteration
    target = clone(write_target(e.stmt))
    entries = write_entries(target)
    at = next(k for k, x in enumerate(entries) if is_name(x, it.index))
    for x in entries:
        if not isinstance(x, ast.Slice) and x is not entries[at] and not (
                isinstance(x, ast.Constant) and type(x.value) is int):
            plan.check("isinstance(x, int)", x=x)
    entries[at] = ast.Slice(it.start, it.stop, it.step)
    entries = [_invariant_slice(plan, x, ctx) if isinstance(x, ast.Slice) and k != at
               and loads(x) & plan.facts.variant else x for k, x in enumerate(entries)]
    target.slice = ast.Tuple(entries, ast.Load()) if len(entries) > 1 else entries[0]
    fixed = sum(not isinstance(x, ast.Slice) for x in entries)  # int entries drop a dim
    moved = sum(isinstance(x, ast.Slice) for x in entries[:at])
    # values of shape (n, *value_shape): pad to the written rank, loop axis to its place
    placed = plan.sub(rules.WRITE_PLACED, v=stacked, out=e.name, k=ast.Constant(fixed))
    if not isinstance(e.stmt, ast.AugAssign):
        # a 0-d value written into a row is a `fill_`: its gradient is summed in the written
        # dtype, then cast; the stacked values' broadcast `copy_` would cast first (float32
        # rounding apart). `+=` computes in the promoted dtype: its values stay as they are.
        placed = plan.sub(rules.WRITE_PLACED_CAST, p=placed, v=stacked, out=e.name)
    if moved:
        placed = plan.sub(f"v.movedim(0, {moved})", v=placed)
    if isinstance(e.stmt, ast.AugAssign):
        return [ast.AugAssign(target=target, op=e.stmt.op, value=placed)]
    return [ast.Assign(targets=[target], value=placed)]
