"""Stage: accumulators are folded after the loop from their stacked per-iteration values.

Sum partials leave the body already summed over the loop; the others are reduced
(``loop_rules.FAMILY_REDUCE``; products by ``loop_products.product``, the original's gradient at
a NaN/inf factor); Python-number counters stay Python numbers (``NUMBER_FOLD``)::

    loss = 0; for ...: loss += e        ->   loss = _outs[0]             (``FAMILY_FOLD_FROM_ZERO``)
    loss += e  (loss a tensor)          ->   loss += _outs[0]            (in place: aliases see it)
    m = max(m, f(x[i]))                 ->   _m_picked = <the first largest's index in _outs[0]>
                                             m = max(m, f(x[start + _m_picked * step]))

Running ``torch.maximum``/``torch.minimum`` values are refused (``FAMILY_KEPT``), and so are
builtin ones whose item cannot be evaluated again on its own (the batched backward would run for
the items not picked too: 0 * inf = NaN where one's derivative is infinite).

A sum starting at 0 that the next statement only divides by the trip count
(``return loss / B`` after ``for i in range(B)``) is left as the mean (``plan.averaged``), with
``_averaged = True`` among the folds: the vectorized branch computes ``x.mean()``, not
``x.mean() * B`` then ``/ B``.

An accumulator every update of which is conditional (under a tensor condition's mask, or a
Python condition of the body, which sets a flag) folds only when an iteration was selected: the
original's Python number stays that number (0, 0.0, 5: type and value, no gradient) when none
was. One host sync, as the original's ``if`` had one per iteration; none when it is a tensor::

    s = 0; for ...: if c: s += e        ->   if _outs[1].any():         (``_outs[1]``: the masks)
                                                 s = _outs[0]

A tensor start folds the (all-zero) sum even when no iteration was selected: its value is the
original's, and the gradient reaching what the body read is exactly 0 (``torch.where`` both
sides), but the graph reaches values computed before the loop that the original's does not: one
whose own backward makes NaN of a zero gradient (``log_softmax`` of a NaN row) gives NaN where
the original has none. Not cut: that needs the host sync (a graph break when compiled) on every
call (``tests/test_skipped_iterations_gradients.py``).

Conditions on loop indices only (``if i != j``) are tested on the host, as the original does (it
reads nothing back from a device for them), stopping at the first iteration that meets one; run
eagerly under torch.compile, which would unroll it and specialise the sizes::

    if i != k: s += e                   ->   if run_eagerly(lambda: any(i != k for i in range(...))):

An exclusion (``i != k``, ``not i == k``) passes some index of two or more whatever the one
value ``k`` is: a 0-d tensor ``k`` (a loop index a vmapped caller hands over, which the host
cannot read) is not compared then (``len(range(...)) > 1 and isinstance(k, torch.Tensor) and
k.numel() == 1 or any(...)``).

An inner loop's guard would be a tensor condition of the outer body: its folds stay, marked with
a counter of the iterations that selected (``ast_marks.SELECTED_BY``: ``c = c + _outs[1].sum()``,
summed by the outer loop like its accumulators, zeroed before the outermost) or, under index
conditions only, with their test on the outer index (``SELECTED_WHEN``: ``any(... for j in
range(...))``); the outermost vectorized loop guards its own fold by them. Python numbers and
tensors added under conditions to one name are refused: whether it ends a number or a tensor
depends on the data.

A rebound sum or product under tensor conditions (``p = p * x[i]`` after ``if y[i] > 0:
continue``) whose items would promote the accumulator's dtype leaves that condition in
``plan.promotions``: the original promotes it only once an iteration is selected, which the
vectorized form does not know without reading the masks back.
"""
from __future__ import annotations

import ast

from .. import ast_marks
from .. import loop_rules as rules
from .. import loop_sums_keep_dtypes, ops
from ..ast_tools import (PassContext, Transformer, clone, is_int, is_name, replace, root_name,
                         unparse, walk)
from ..errors import Unsupported
from ..outline_kept_loops import run_eagerly
from .loop_dataflow import call_op, loads, stores, stores_in
from .plan import Accumulator, LoopPlan
from .promoting_folds_run_as_written import (PROMOTED, SEVERAL_STEPS, STEPS_ONTO, TENSOR_START,
                                             WIDER_START)


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    plan.averaged = _averaged(plan)
    if plan.averaged:
        plan.averaged_flag = ctx.namer.new("averaged")
        plan.folds += plan.sub("f = True", f=plan.averaged_flag)
    last = []  # what reads the inner loops' counters: after their folds
    for name, acc in plan.accumulators.items():
        if acc.family in rules.FAMILY_KEPT:
            raise Unsupported(rules.FAMILY_KEPT[acc.family], plan.node.lineno)
        if len(acc.kinds) > 1 and "tensor" in acc.kinds and (any(acc.masks)
                                                              or "tensor" in acc.guarded):
            raise Unsupported(f"`{name}` adds Python numbers and, under a condition, tensors: "
                              "whether it ends a number or a tensor depends on the data",
                              plan.node.lineno)
        if plan.inner and name in plan.zeros and _conditional_number(plan, name, acc):
            raise Unsupported(f"`{name}` starts as the number 0 in each iteration of the outer "
                              "loop and is added to only under conditions: where none holds it "
                              "stays that number, which the outer loop's vectorized form would "
                              "see as a tensor 0", plan.node.lineno)
        keeps = acc.family in rules.FAMILY_KEEPS_ITEM_DTYPE and name not in plan.zeros \
            and acc.kinds == {"tensor"} and name in stores_in(plan.node.body)
        if keeps and _onto_start(plan, name, acc):
            _fold_onto_start(plan, name, acc, ctx)
        reduced = acc.stacked if acc.family == "sum" else _reduced(plan, name, acc, ctx)
        start = len(plan.folds)
        # (ints and floats of the items' sizes add up to a float: ``number_kinds``)
        kind = next(iter(acc.kinds)) if len(acc.kinds) == 1 else \
            "float" if acc.kinds == {"int", "float"} and acc.on_host else None
        if kind == "float" and acc.on_host and name not in plan.zeros | plan.numbers.keys():
            # a start of unknown type: as written when it is a tensor (float16 steps round)
            plan.promotions.append((plan.sub("isinstance(s, torch.Tensor)", s=name),
                                    TENSOR_START))
        if name in plan.wide and kind in rules.NUMBER_FOLD_WIDE:
            # `total += x[i].item()`: the original's Python float, summed in float64
            reduced = plan.sub(rules.NUMBER_FOLD_WIDE[kind], r=reduced, w=plan.wide[name])
        elif kind in rules.NUMBER_FOLD:
            # `count += 1`, `n += m.sum().item()`: the original's Python number
            if kind == "int":
                ast_marks.put(reduced, ast_marks.INTEGER_FOLD, True)
            reduced = plan.sub(rules.NUMBER_FOLD[kind], r=reduced)
        if keeps:
            # the loop's sum or product keeps a narrow integer dtype (``loop_sums_keep_dtypes``;
            # the user's accumulators: the rewrite's own counters start at 0 and count in int64)
            plan.promotions.append((plan.sub(loop_sums_keep_dtypes.WIDER_START, s=name,
                                             r=_item(plan, acc)), WIDER_START))
            _check_steps_onto(plan, name, acc, ctx)
        if acc.several and "tensor" in acc.kinds:
            rounded = ctx.bind(loop_sums_keep_dtypes.rounded_every_step, "rounded_every_step")
            plan.promotions.append((plan.sub(f"{rounded}(r)", r=_item(plan, acc)), SEVERAL_STEPS))
        if name in plan.zeros and acc.family in rules.FAMILY_FOLD_FROM_ZERO:
            plan.folds += plan.sub("s = x", s=name, x=plan.sub(
                rules.FAMILY_FOLD_FROM_ZERO[acc.family], r=reduced))
        elif not acc.rebound and acc.family in rules.FAMILY_FOLD_INPLACE:
            # `s += e` on a tensor is in place: s keeps its dtype, and its aliases see it
            plan.folds += plan.sub(rules.FAMILY_FOLD_INPLACE[acc.family], s=name, r=reduced)
        else:
            plan.folds += plan.sub("s = x", s=name, x=plan.sub(
                rules.FAMILY_FOLD[acc.family], s=name, r=reduced))
            if plan.uses_where and acc.family in rules.FAMILY_REDUCE:
                plan.promotions.append((plan.sub(
                    "isinstance(s, torch.Tensor) and torch.result_type(s, e) != s.dtype",
                    s=name, e=_item(plan, acc)), PROMOTED))
        if _selected_only(plan, name, acc) and plan.inner:
            last += _exported_selection(plan, name, acc, plan.folds[start:], ctx)
        elif _selected_only(plan, name, acc):
            node = _when_selected(plan, name, acc, plan.folds[start:], ctx)
            plan.folds[start:] = [] if acc.counters else [node]
            last += [node] if acc.counters else []
    plan.folds += last
    if not plan.inner:  # the inner loops' counters, summed over this loop
        plan.first += [s for c in sorted(_counters(plan)) for s in plan.sub("c = 0", c=c)]
    return plan


def _check_steps_onto(plan: LoopPlan, name: str, acc: Accumulator, ctx: PassContext) -> None:
    """Float16/bfloat16 items folded onto a start other than the family's identity run the
    loop as written (``loop_sums_keep_dtypes.steps_differ``); a number literal equal to it
    (``0.0``, ``1``) needs no check: ``0.0 + r`` is the original's first step's ``0.0 + x[0]``."""
    ident = rules.FAMILY_IDENTITY[acc.family]
    if name in plan.numbers and plan.numbers[name] == int(ident):
        return
    differ = ctx.bind(loop_sums_keep_dtypes.steps_differ, "steps_differ")
    plan.promotions.append((plan.sub(f"{differ}(s, r, {ident})", s=name, r=_item(plan, acc)),
                            STEPS_ONTO))


def _onto_start(plan: LoopPlan, name: str, acc: Accumulator) -> bool:
    """Whether ``name``'s partial is reduced in the dtype of its additions onto its start: an
    inner loop's start the outer body binds again (the check of a wider start below is not made
    there; another start is the outer loop's accumulator, read only by its fold), and a
    top-level loop's sum onto a start that is not a Python number (a float64 tensor adds float32
    items in float64; their sum is float32's). A Python number leaves the items' dtype (or, of a
    float onto integers, the dtype the sum's addition to it gives), so the items' own sum is
    kept there. Not a top-level product: its partial, a factor of the start's shape, has no
    batched form (the narrow-integer check below runs it as written; a float64 start of float32
    factors multiplies them in float32)."""
    if plan.inner:
        return name in plan.outer_binds
    # (the inner loops' counters of selected iterations start at the int 0 too)
    return acc.family == "sum" and name not in plan.numbers.keys() | _counters(plan)


def _fold_onto_start(plan: LoopPlan, name: str, acc: Accumulator, ctx: PassContext) -> None:
    """The partial of ``name`` starts from the family's identity in its start's dtype (``0 * t
    + e`` has the dtype of the original's ``t + e``: a bool ``e`` counted in ``t``'s), and is
    reduced in that dtype (``plan.fold_starts``)."""
    plan.fold_starts[acc.part] = name
    like = ctx.bind(loop_sums_keep_dtypes.identity_of, "identity_of")
    ident = rules.FAMILY_IDENTITY[acc.family]
    plan.init = [plan.sub(f"p = {like}(s, {ident})", p=acc.part, s=name)[0]
                 if isinstance(s, ast.Assign) and is_name(s.targets[0], acc.part) else s
                 for s in plan.init]


def _item(plan: LoopPlan, acc: Accumulator) -> ast.expr:
    """An item's dtype and shape: the summed part has the item's shape, others the loop dim."""
    return acc.stacked if acc.family == "sum" else plan.sub("v[0]", v=acc.stacked)


def _selected_only(plan: LoopPlan, name: str, acc: Accumulator) -> bool:
    """``_conditional_number``, but not for a sum an inner loop starts (its outer body binds it
    again: the per-iteration value is not folded, and the stage refuses it)."""
    return _conditional_number(plan, name, acc) and not (plan.inner and name in plan.zeros)


def _conditional_number(plan: LoopPlan, name: str, acc: Accumulator) -> bool:
    """Every update of ``name`` is conditional, and what it adds may change its type (a number
    plus the int 0 keeps its type: not counters; float64 twins and counters of errors are read
    only by the folds and checks after the loop)."""
    internal = {*plan.wide.values(), *plan.empty_selections, *plan.host_errors, *_counters(plan)}
    return bool(acc.masks) and None not in acc.masks and name not in internal \
        and acc.kinds != {"int"}


def _counters(plan: LoopPlan) -> set[str]:
    """The inner loops' counters of the iterations that selected an accumulator's update."""
    return {c for acc in plan.accumulators.values() for c in acc.counters}


def _selections(plan: LoopPlan, acc: Accumulator, host: bool = True) -> list[tuple[str, ast.expr]]:
    """Each of ``acc.masks`` once: ``("mask", its stacked values)``, ``("flag", ...)`` for
    those of Python conditions (a bool in the batched form, a tensor when mapped), ``("counter",
    its name)`` for an inner loop's counter (folded by now), ``("host", a Python test on this
    loop's index)`` for conditions on loop indices only (``host``: else masks)."""
    seen: dict[str, tuple[str, ast.expr]] = {}
    for m in acc.masks:
        if m in seen:
            continue
        if m in acc.counters:
            seen[m] = ("counter", ast.Name(m, ast.Load()))
        elif m in acc.selected_when:
            seen[m] = ("host", acc.selected_when[m])
        elif host and m in plan.index_tests:
            seen[m] = ("host", plan.index_tests[m])
        else:  # one output per mask, shared
            value = plan.sub(f"o[{plan.outputs.index(m)}]", o=plan.outs) \
                if m in plan.outputs else plan.output(m)
            seen[m] = ("flag" if m in acc.flags else "mask", value)
    return list(seen.values())


def _any_iteration(plan: LoopPlan, tests: list[ast.expr]) -> ast.expr:
    """Whether one of ``tests`` (on loop indices: Python ints) holds in an iteration, on the
    host as the original evaluates them: no device read; it stops at the first that does."""
    it = plan.iteration
    test = tests[0] if len(tests) == 1 else ast.BoolOp(ast.Or(), tests)
    found = plan.sub("any(t for i in range(a, b, s))", t=test, i=it.index, a=it.start,
                     b=it.stop, s=it.step)
    ast_marks.put(found.args[0], ast_marks.GENERATED, True)
    value = next(filter(None, (_excluded_value(t, it.index) for t in tests)), None)
    if value is None:
        return found
    # one value equals at most one index: another passes (a tensor one is not read on the host)
    return plan.sub("len(range(a, b, s)) > 1 and isinstance(v, torch.Tensor) and v.numel() == 1 "
                    "or f", a=it.start, b=it.stop, s=it.step, v=value, f=found)


def _excluded_value(test: ast.expr, index: str) -> ast.expr | None:
    """``v`` of ``i != v``, ``v != i``, ``not i == v`` or ``not v == i`` (``v`` not reading the
    index ``i``), else None."""
    negated = isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)
    c = test.operand if negated else test
    if not (isinstance(c, ast.Compare) and len(c.ops) == 1
            and isinstance(c.ops[0], ast.Eq if negated else ast.NotEq)):
        return None
    sides = [c.left, c.comparators[0]]
    others = [x for x in sides if not is_name(x, index)]
    return others[0] if len(others) == 1 and index not in loads(others[0]) else None


def _on_host(ctx: PassContext, test: ast.expr) -> ast.expr:
    """``test`` run eagerly under torch.compile: Dynamo would unroll its loop over sizes,
    specialising them (one graph per batch size)."""
    return replace("r(lambda: t)", loc=test, torch_name=ctx.torch_name,
                   r=ctx.bind(run_eagerly, "run_eagerly"), t=test)


def _exported_selection(plan: LoopPlan, name: str, acc: Accumulator, folds: list[ast.stmt],
                        ctx: PassContext) -> list[ast.stmt]:
    """An inner loop's ``folds`` of ``name`` stay (they add only selected values), marked with
    what tells whether an iteration selected one: the outer loop guards its own fold of
    ``name`` by it (``_when_selected``); a guard here would be a tensor condition of the outer
    body. Under conditions on loop indices only, the Python test of the outer index (the outer
    loop tests it on the host); else a counter, which the outer loop sums like its other
    accumulators."""
    selections = _selections(plan, acc)
    stored = [s for s in folds if name in stores(s)]
    if all(kind == "host" for kind, _ in selections):
        test = _any_iteration(plan, [t for _, t in selections])
        for s in stored:
            ast_marks.put(s, ast_marks.SELECTED_WHEN, test)
        return []
    if acc.selected_when or len(acc.counters) > 1:
        raise Unsupported(f"`{name}` is updated in inner loops under conditions of more than one "
                          "kind or loop: whether any iteration updates it is not known in one "
                          "counter", plan.node.lineno)
    # an inner loop's counter counts this loop's selections too (one counter per accumulator:
    # a second one adding the first would read an accumulator of the outer loop)
    counter = next(iter(acc.counters), None) or ctx.namer.new(f"{name}_selected")
    for s in stored:
        ast_marks.put(s, ast_marks.SELECTED_BY, counter)
    selections = [(k, v) for k, v in _selections(plan, acc, host=False) if k != "counter"]
    if not selections:
        return []
    terms = {"mask": "{m}.sum()", "flag": "torch.as_tensor({m}).sum()"}
    count = " + ".join(terms[kind].format(m=f"m{k}") for k, (kind, _) in enumerate(selections))
    return plan.sub(f"c = c + ({count})", c=counter,
                    **{f"m{k}": v for k, (_, v) in enumerate(selections)})


def _when_selected(plan: LoopPlan, name: str, acc: Accumulator, folds: list[ast.stmt],
                   ctx: PassContext) -> ast.If:
    """``folds`` run only when an iteration was selected: with none, ``name`` stays what it was
    before the loop, as in the original (a Python number keeps its type and value, and gets no
    gradient). One host sync, as the original's ``if`` had one per iteration; none for a tensor
    (its folds are the original's value either way), nor for conditions on loop indices only
    (tested on the host first, as the original did)."""
    selections = _selections(plan, acc)
    hosts = [t for kind, t in selections if kind == "host"]
    selections = [(k, v) for k, v in selections if k != "host"]
    terms = {"mask": "{m}.any()", "flag": "torch.as_tensor({m}).any()", "counter": "{m}.any()"}
    tests = ["h"] * bool(hosts) + [terms[kind].format(m=f"m{k}")
                                   for k, (kind, _) in enumerate(selections)]
    test = " or ".join(tests)
    if name not in plan.zeros:  # the int 0 otherwise
        test = f"isinstance(s, torch.Tensor) or {test}"
    subs = {f"m{k}": v for k, (_, v) in enumerate(selections)}
    if hosts:
        subs["h"] = _on_host(ctx, _any_iteration(plan, hosts))
    node = plan.sub(f"if {test}:\n    pass", s=name, **subs)[0]
    node.body = folds
    return node


def _reduced(plan: LoopPlan, name: str, acc: Accumulator, ctx: PassContext) -> ast.expr:
    """The stacked values reduced over the loop; a builtin max/min's picked item evaluated again
    on its own (``PICKED_INDEX``), or ``Unsupported``."""
    if acc.part in plan.fold_starts and acc.family in rules.FAMILY_REDUCE_ONTO_FN:
        fn = rules.FAMILY_REDUCE_ONTO_FN[acc.family]
        return plan.sub(f"{ctx.bind(fn, fn.__name__)}(s, v)", s=name, v=acc.stacked)
    if acc.family not in rules.FAMILY_PICK:
        fn = rules.FAMILY_REDUCE_FN.get(acc.family)
        return plan.sub(f"{ctx.bind(fn, fn.__name__)}(v)" if fn else
                        rules.FAMILY_REDUCE[acc.family], v=acc.stacked)
    k = plan.sub(rules.FAMILY_PICK[acc.family], v=acc.stacked)
    item = _self_contained_item(plan, name, ctx)
    if item is None:  # the batched backward would also run for the items not picked, and
        # pass on 0 * inf = NaN where an item's derivative is infinite (or NaN at a NaN input)
        raise Unsupported(f"the item `{name}` picks cannot be evaluated again at its index, so "
                          "the items not picked would pass on a NaN/inf derivative",
                          plan.node.lineno)
    plan.detached.add(acc.part)
    it = plan.iteration
    picked = ctx.namer.new(f"{name}_picked")
    plan.folds += plan.sub("p = k", p=picked, k=k)
    index = ast.Name(picked, ast.Load()) if is_int(it.start, 0) and is_int(it.step, 1) \
        else plan.sub(rules.PICKED_INDEX, a=it.start, k=picked, s=it.step)
    subs = {it.index: index}
    subs.update((element, plan.sub("xs[k]", xs=xs, k=picked)) for element, xs in it.elements)
    return _Substituted(subs).visit(clone(item))


def _self_contained_item(plan: LoopPlan, name: str, ctx: PassContext) -> ast.expr | None:
    """``e`` of the loop's one update ``name = max(name, e)`` as written, when it reads the index
    only as a subscript, elements and names the loop does not bind, and calls known pure ops.
    Names the body binds once, at its top before the update, are replaced by their values."""
    updates = [s for s in walk(plan.node) if isinstance(s, ast.stmt) and name in stores(s)]
    if len(updates) != 1 or updates[0] not in plan.node.body:
        return None
    value = updates[0].value
    item = next((a for a in value.args if not is_name(a, name)), None)
    it = plan.iteration
    own = {it.index} | {element for element, _ in it.elements}
    if item is not None:
        item = _Substituted(_top_definitions(plan.node, updates[0])).visit(clone(item))
    if item is None or loads(item) & (stores_in(plan.node.body) - own | _mutated(plan.node)) \
            or name in loads(item):
        return None
    if any(isinstance(n, ast.Call) and (call_op(n, ctx) is ops.UNKNOWN or call_op(n, ctx).effect)
           for n in walk(item)):
        return None
    index_reads = [n for n in walk(item) if is_name(n, it.index)]
    entries = [e for n in walk(item) if isinstance(n, ast.Subscript)
               for e in (n.slice.elts if isinstance(n.slice, ast.Tuple) else [n.slice])]
    if not all(any(e is n for e in entries) for n in index_reads):
        return None  # `i` in arithmetic: a Python int in the original, a tensor here
    return item


def _top_definitions(loop: ast.For, update: ast.stmt) -> dict[str, ast.expr]:
    """``d`` -> its value, for the names bound once in the body, by a plain ``d = v`` at its top
    before ``update``, whose values read no name bound after them (substituted into each other,
    in order: the value as of the update)."""
    body = loop.body[:loop.body.index(update)]
    counts: dict[str, int] = {}
    for s in walk(loop):
        if isinstance(s, ast.stmt) and s is not loop:
            for n in stores(s):
                counts[n] = counts.get(n, 0) + 1
    defs: dict[str, ast.expr] = {}
    for s in body:
        if isinstance(s, ast.Assign) and len(s.targets) == 1 \
                and isinstance(s.targets[0], ast.Name) and counts[s.targets[0].id] == 1:
            defs[s.targets[0].id] = _Substituted(defs).visit(clone(s.value))
    return defs


def _mutated(loop: ast.For) -> set[str]:
    """Names the loop may change in place: written into (``out[i] = v``) or receivers of in-place
    methods (``t.add_(1)``)."""
    targets = [t for s in walk(loop) if isinstance(s, (ast.Assign, ast.AugAssign))
               for t in (s.targets if isinstance(s, ast.Assign) else [s.target])]
    receivers = [n.func.value for n in walk(loop) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Attribute) and ops.is_inplace(n.func.attr)]
    return {root_name(t) for t in targets + receivers} - {None}


class _Substituted(Transformer):
    def __init__(self, subs: dict[str, ast.expr]):
        self.subs = subs

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return clone(self.subs[node.id]) if node.id in self.subs else node


def _averaged(plan: LoopPlan) -> set[str]:
    """Sum accumulators starting at 0 that the next statement only divides by the trip count."""
    it = plan.iteration
    if not (is_int(it.start, 0) and is_int(it.step, 1)):
        return set()
    if loads(it.stop) & stores_in(plan.body):
        return set()
    stop = unparse(it.stop)
    return {name for name, acc in plan.accumulators.items()
            if acc.family == "sum" and acc.kinds == {"tensor"} and name in plan.zeros
            and not _selected_only(plan, name, acc)
            and plan.divided.get(name) == stop}
