"""Pass: Python ``for`` loops over tensor elements become one batched computation.

The loop body is outlined into a function of one iteration; when every op in it has a batched
form it becomes plain tensor code over all iterations (``batch_loop_bodies``, strategy
"batched"), else the function is mapped over all iterations with ``torch.vmap`` (strategy
"vmap"). What leaves an iteration is folded afterwards. Behind a runtime check, because at AST
time nothing knows whether ``pred`` is a tensor or a list (the original loop is the else); the
batched form has its own check of per-item ranks and dtypes, with the vmap form as its else::

    loss = 0                            loss = 0
    for i in range(len(pred)):          if isinstance(pred, torch.Tensor) and ... and len(range(0, len(pred), 1)) > 0:
        loss += (pred[i] - target[i])       'optimize_loss: loop at line 2 vectorized'
                    .abs().sum()   ->       if target.dim() == pred.dim():
                                                _pred_row = pred if len(pred) == pred.shape[0] else pred[0:len(pred):1]
                                                _target_row = ...
                                                _loss_part = 0
                                                _loss_part = _loss_part + (_pred_row - _target_row).abs().sum()
                                                _outs = (_loss_part,)
                                            else:
                                                def _body(_pred_row, _target_row):
                                                    _loss_part = 0
                                                    _loss_part = _loss_part + (_pred_row - _target_row).abs().sum()
                                                    return (torch.as_tensor(_loss_part),)
                                                _outs = torch.vmap(_body, in_dims=(0, 0))(<the same rows>)
                                                _outs = (_outs[0].sum(0),)
                                            loss = loss + _outs[0]
                                        else:
                                            <the original loop>

Rows ``x[a:b:s]`` covering the whole tensor are the tensor itself (a slice's backward
zero-fills and copies a full-size gradient).

Sum accumulators leave both forms already summed over the loop (the batched form fuses that sum
into the op making the per-item values, see ``batch_loop_bodies``). What leaves an iteration
(classified by ``loop_dataflow``): accumulators ``s += e``, ``s -= e``,
``s = s + a - b``, ``s *= e``, ``s = torch.maximum(s, e)`` / ``max(s, e)`` (folded with sum /
prod / amax / amin; Python-number counters stay Python numbers), prefix sums and products whose
running value is written or appended (``cumsum`` / ``cumprod``), ``lst.append(e)``
(``lst.extend(stacked.unbind(0))``), and writes ``out[..., i, ...] = e`` / ``+=`` (one slice
assignment ``out[..., a:b:s, ...] = stacked``). Tensor ``if``/``continue`` become masks
(``tensor_branches_to_where``), host round trips tensor ops (``host_roundtrips_to_tensor_ops``),
``x[i:i+1]`` becomes ``x[i].unsqueeze(0)``, and ``x[:, i]`` over a plain range is handed to vmap
as the slice ``x[:, a:b:s]`` (no gather). Comprehensions in ``sum``/``torch.stack``/``torch.cat``/
``torch.tensor`` take the same route (``normalize_comprehensions``), and so does ``xs = [...]``
when only reads a tensor answers the same way follow: ``xs`` is then bound to the stacked items
(``list``'s consumers use them directly). Inner loops are vectorized first; an outer loop then
maps over the inner's vectorized form (nested vmap) when the inner's runtime check does not
depend on it.

Folds after the loop: ``s = 0`` right before the loop makes ``s = s + <sum>`` just ``s = <sum>``
(``loop_dataflow.zero_before_loops``); ``s += e`` on a tensor folds in place (``s += <sum>``: the
original keeps ``s``'s dtype and its aliases see the sum). A sum the next statement only divides by
the trip count is the mean over the loop (``loop_dataflow.divisions_after_loops``), computed
directly (``x.mean()``, not ``x.mean() * n`` and then ``/ n``)::

    loss = 0                            loss = 0
    for i in range(B):                  _averaged = False
        loss += ((pred[i] -     ->      if <check>:
                  target[i]) ** 2)          ...; _loss_part = ((_pred_row - _target_row) ** 2).mean()
                  .mean()                   _averaged = True
    return loss / B                         loss = _outs[0]
                                        else:
                                            <the original loop>
                                        return loss if _averaged else loss / B

Every loop and every comprehension gets one report entry: the strategy, or the reason it is kept
exactly as it was.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field

from .errors import Unsupported

from . import (batch_loop_bodies, host_roundtrips_to_tensor_ops, inline_helper_calls,
               loop_dataflow, normalize_comprehensions)
from . import loop_rules as rules
from . import masked_selections_to_where, ops, tensor_branches_to_where
from .ast_tools import (PassContext, Transformer, clone, fix_missing_locations, is_int, replace,
                        unparse, walk)
from .loop_dataflow import Effect, depends, loads, resolve_call

MARKER = "optimize_loss: loop at line {} vectorized"


def transform(tree: ast.Module, ctx: PassContext) -> ast.Module:
    vectorizer = _Vectorizer(ctx)
    vectorizer.visit(tree.body[0])
    if not any(isinstance(n, normalize_comprehensions.COMPREHENSIONS) for n in walk(tree)):
        return tree  # the usual case, told by one quick walk
    for comp in _comprehensions(tree.body[0]):  # what no rule took: kept, with the reason
        vectorizer.kept(comp, normalize_comprehensions.kept_reason(comp))
    return tree


def _comprehensions(node: ast.AST) -> list[ast.expr]:
    """The comprehensions of ``node`` (depth first, in source order), outside the originals
    kept by vectorized guards."""
    found, todo = [], [node]
    while todo:  # a stack, not nested generators: this runs over the whole rewritten function
        n = todo.pop()
        if isinstance(n, normalize_comprehensions.COMPREHENSIONS):
            found.append(n)
        kept = n.orelse[0] if is_vectorized_guard(n) else None
        todo += reversed([c for c in ast.iter_child_nodes(n) if c is not kept])
    return found


def is_vectorized_guard(node: ast.AST) -> bool:
    """The ``if <check>: <vectorized> else: <original>`` this pass emits."""
    return (isinstance(node, ast.If) and len(node.orelse) == 1 and bool(node.body)
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
            and isinstance(node.body[0].value.value, str)
            and node.body[0].value.value.startswith("optimize_loss: loop at line"))


@dataclass
class _Iteration:
    """What a loop iterates: an index over ``range(start, stop, step)`` and/or elements."""
    index: str
    start: ast.expr
    stop: ast.expr
    step: ast.expr
    elements: list[tuple[str, ast.expr]] = field(default_factory=list)  # (name, iterable)
    index_is_user: bool = True


class _Vectorizer(Transformer):
    def __init__(self, ctx: PassContext):
        self.ctx = ctx
        self.live: dict[int, set[str]] = {}
        self.zeros: dict[int, set[str]] = {}
        self.divisions: dict[int, tuple[ast.stmt, dict[str, str]]] = {}
        self.built: dict[int, set[str]] = {}
        self.func: ast.FunctionDef | None = None
        self.lists: frozenset[str] = frozenset()  # `xs = [...]` names stackable_lists accepts
        self.bound: set[str] = set()              # ... that a vectorized statement binds
        # Comprehensions reported, by position: the vectorized forms copy them (vmap body,
        # original branch), each is reported once.
        self.seen: set[tuple[int, int]] = set()

    def kept(self, comp: ast.expr, reason: str) -> None:
        if (comp.lineno, comp.col_offset) not in self.seen:
            self.seen.add((comp.lineno, comp.col_offset))
            self.ctx.report.add_loop(comp.lineno, False, "kept", reason)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        outer = self.live, self.zeros, self.divisions, self.built, self.func, self.lists, self.bound
        self.live = {**self.live, **loop_dataflow.live_after_loops(node)}
        self.zeros = {**self.zeros, **loop_dataflow.zero_before_loops(node)}
        self.divisions = {**self.divisions, **loop_dataflow.divisions_after_loops(node)}
        self.built = {**self.built, **normalize_comprehensions.lists_built_by_loops(node, self.ctx)}
        self.func = node
        self.lists = normalize_comprehensions.stackable_lists(node, self.ctx)
        self.bound = set()
        self.generic_visit(node)
        if self.bound:
            normalize_comprehensions.bound_list_consumers(node, self.bound, self.ctx)
        self.live, self.zeros, self.divisions, self.built, self.func, self.lists, self.bound = outer
        return node

    def visit_If(self, node: ast.If) -> ast.AST:
        if is_vectorized_guard(node):  # already vectorized (second run): leave the original
            node.body = [self.visit(s) for s in node.body]
            return node
        return self.generic_visit(node)

    def visit_While(self, node: ast.While) -> ast.AST:
        self.generic_visit(node)
        self.ctx.report.add_loop(node.lineno, False, "kept",
                                 "`while` loop: the trip count depends on the data")
        return node

    def visit_For(self, node: ast.For) -> ast.AST:
        original = clone(node)
        self.generic_visit(node)  # inner loops first
        try:
            live = self.live.get(id(node))
            if live is None:  # unseen loop: all names live (not a default: it walks the function)
                live = loads(self.func)
            after, divided = self.divisions.get(id(node), (None, {}))
            loop = _Loop(node, live, self.ctx, zeros=self.zeros.get(id(node), set()),
                         divided=divided, built=self.built.get(id(node), set()))
            guard, stmts, strategy, why = loop.build()
        except Unsupported as exc:
            self.ctx.report.add_loop(node.lineno, False, "kept", exc.reason)
            return node
        self.ctx.report.add_loop(node.lineno, True, strategy, why + _runs_when(guard))
        marker = ast.Expr(ast.Constant(MARKER.format(node.lineno)))
        vectorized = ast.copy_location(
            ast.If(test=guard, body=[marker] + stmts, orelse=[original]), node)
        self.bound |= loop.bound_lists
        vectorized.bound_lists = loop.bound_lists  # for an outer loop that inlines this one
        if not loop.averaged:
            return vectorized
        # `return loss / B` -> `return loss if _averaged else loss / B`: the vectorized branch
        # left the mean in `loss`, the original its sum.
        _DivideUnlessAveraged(loop.averaged, loop.flag, self.ctx).visit(after)
        return replace("f = False", loc=node, f=loop.flag) + [vectorized]

    def visit_Assign(self, node: ast.stmt) -> ast.AST:
        return self._comprehension(node)

    visit_AugAssign = visit_Return = visit_Expr = visit_Assign

    def _comprehension(self, node: ast.stmt) -> ast.AST:
        """``sum(f(i) for i in ...)`` and friends: vectorized as the equivalent loop."""
        found = normalize_comprehensions.to_loop(node, self.ctx, self.lists)
        if found is None:
            return self.generic_visit(node)
        init, loop, result, comp = found
        lineno = comp.lineno
        vec = _Loop(loop, set(), self.ctx, init)
        try:
            guard, stmts, strategy, why = vec.build()
        except Unsupported as exc:
            self.kept(comp, exc.reason)
            for other in _comprehensions(node):  # the statement runs as written
                self.kept(other, f"in the statement of the comprehension at line {lineno}, "
                                 "which is kept")
            return node
        if vec.stacked:  # torch.stack(_items) -> the stacked values themselves
            init = []
            result = _UseStacked(vec.stacked, self.ctx).visit(result)
            if isinstance(result, ast.Assign) and not any(h for _, h in vec.stacked.values()):
                self.bound |= {t.id for t in result.targets if isinstance(t, ast.Name)
                               and t.id in self.lists}
        self.seen.add((comp.lineno, comp.col_offset))
        self.ctx.report.add_loop(lineno, True, strategy, why + " (comprehension)" + _runs_when(guard))
        result = self._comprehension(result)  # the statement's next comprehension, if any
        marker = ast.Expr(ast.Constant(MARKER.format(lineno)))
        return ast.copy_location(
            ast.If(test=guard, body=[marker] + init + stmts + [result], orelse=[node]), node)


def _runs_when(guard: ast.expr) -> str:
    """The report names what the runtime check needs: for other inputs (a list of heads, say)
    the loop runs as written, and the report must not suggest otherwise."""
    names = sorted({unparse(x) for x in _proven_tensors(guard)})
    if not names:
        return ""
    verb = "is a tensor" if len(names) == 1 else "are tensors"
    return f"; when {', '.join(f'`{n}`' for n in names)} {verb}, else the loop runs as written"


def _proven_tensors(guard: ast.expr) -> list[ast.expr]:
    """What ``guard`` proves to be tensors: its ``isinstance(x, torch.Tensor)`` conjuncts."""
    return [g.args[0] for g in _conjuncts(guard) if isinstance(g, ast.Call)
            and isinstance(g.func, ast.Name) and g.func.id == "isinstance" and len(g.args) == 2
            and unparse(g.args[1]).endswith(".Tensor")]


class _Loop:
    """One loop: check it, then build (runtime check, vectorized statements)."""

    def __init__(self, node: ast.For, live_after: set[str], ctx: PassContext,
                 init: list[ast.stmt] = (), zeros: set[str] = frozenset(),
                 divided: dict[str, str] | None = None, built: set[str] = frozenset()):
        self.node = node
        self.zeros = zeros                            # bound to the int 0 when the loop starts
        self.divided = divided or {}                  # divided after the loop: name -> divisor
        self.averaged: set[str] = set()               # ... by the trip count: left as means
        self.flag = ""                                # set when the loop left means
        self.built = built                            # `lst = []` lists it may build ...
        self.bound_lists: set[str] = set()            # ... and builds: bound to stacked items
        self.known = set().union(*(loop_dataflow.stores(s) for s in init))  # our own `_items = []`
        self.ctx = ctx
        self.live_after = live_after
        self.guards: list[ast.expr] = []              # runtime checks, all must hold
        self.guard_texts: set[str] = set()
        self.init: list[ast.stmt] = []                # top of the body: partials' identities
        self.outputs: list[str] = []                  # returned by each iteration
        self.folds: list[ast.stmt] = []               # after vmap: fold / store the outputs
        self.accs: dict[str, tuple] = {}              # name -> (partial, family, stacked, kinds)
        self.rebound: set[str] = set()                # ... updated by `s = s + e`, not `s += e`
        self.runs: dict[str, str] = {}                # scanned accumulator -> running values
        self.slices: dict[tuple[str, int], str] = {}  # (tensor, dim) -> row parameter
        self.last_write: dict[str, str] = {}          # write target -> item last written
        self.scattered: set[str] = set()              # written at data-dependent slots
        self.stacked: dict[str, tuple] = {}           # own list -> (stacked values, host kind)
        self.outs = ctx.namer.new("outs")
        self.uses_where = False
        self.unbatched = ""                            # why the body is mapped with vmap
        self.batched_if: ast.expr | None = None        # the batched form's own check

    def _sub(self, template: str, **subs) -> object:
        return replace(template, loc=self.node, torch_name=self.ctx.torch_name, **subs)

    def _guard(self, template: str, **subs) -> None:
        expr = self._sub(template, **subs)
        text = unparse(expr)
        if text not in self.guard_texts:
            self.guard_texts.add(text)
            self.guards.append(expr)

    # ----------------------------------------------------------------------------------------
    def build(self) -> tuple[ast.expr, list[ast.stmt], str, str]:
        node = self.node
        if node.orelse:
            raise Unsupported("`for ... else`")
        it = self.it = self._iteration()
        body, inner_guards = self._inline_inner(clone(node.body), it)
        # Helper calls -> the helpers' statements, checked to be the same functions at run time
        body, helper_guards = inline_helper_calls.rewrite(node, body, self.ctx)
        seeds = {it.index} | {name for name, _ in it.elements}
        # Mask selections reduced elementwise -> masked dense ops (marked: the check skips them)
        dense = masked_selections_to_where.rewrite(body, seeds, self.ctx)
        # Check the body as the user wrote it (reasons quote their code) ...
        loop_dataflow.analyze(body, it.index, seeds, self.live_after, self.ctx)
        # ... then rewrite it and analyse again: the effects must be the final body's nodes.
        body = dense.body
        variant = loop_dataflow.variant_names(body, seeds, self.ctx)
        body = host_roundtrips_to_tensor_ops.rewrite(body, variant, self.ctx)
        body = [_UnitSlices(it.index, self.ctx).visit(s) for s in body]
        assigned = set().union(*(loop_dataflow.stores(n) for s in body for n in walk(s)
                                 if isinstance(n, ast.stmt)))
        body = [_RowSlices(self, it, assigned, variant).visit(s) for s in body]
        seeds |= {param for param, _ in self.slices.values()}
        self.facts = facts = loop_dataflow.analyze(body, it.index, seeds, self.live_after,
                                                   self.ctx)
        for g in inner_guards + dense.guards:
            self._guard("g", g=g)
        self._guard_iterables(it, body, seeds)
        for g in helper_guards:  # last: only read once the loop runs at all
            self._guard("g", g=g)
        converted = tensor_branches_to_where.if_convert(body, facts, it.index, self._effect,
                                                        self.ctx)
        stmts = dense.raise_if_empty(self._assemble(it, converted), self.folds)
        return self._check(), stmts, self._strategy(), self._why()

    def _strategy(self) -> str:
        kinds = {e.kind for e in self.facts.effects.values()}
        if "scan" in kinds:
            fam = {e.family for e in self.facts.of_kind("scan")}
            return "cumprod" if fam == {"prod"} else "cumsum"
        return "vmap" if self.unbatched else "batched"

    def _why(self) -> str:
        parts = []
        for e in self.facts.effects.values():
            if e.name in self.known:  # a comprehension's own list
                parts.append("items stacked")
                continue
            if e.name in self.ctx.namer.made:  # e.g. a counter of empty selections
                continue
            family = "mean" if e.name in self.averaged else e.family
            write = "written as a slice" if e.name not in self.scattered else \
                "written by advanced indexing" if any(_is(x, self.it.index) for x in
                                        loop_dataflow.write_entries(_write_target(e.stmt))) \
                else "accumulated with index_put_"
            desc = {"acc": f"`{e.name}` {family}-reduced", "scan": f"`{e.name}` running {e.family}",
                    "append": f"`{e.name}` appends stacked", "write": f"`{e.name}` {write}"}
            parts.append(desc[e.kind])
        if self.uses_where:
            parts.append("tensor conditions as torch.where masks")
        if self.unbatched:
            parts.append(f"vmap: {self.unbatched}")
        elif self.batched_if is not None:  # other ranks or dtypes than the usual
            parts.append(f"vmap where `{unparse(self.batched_if)}` does not hold")
        return "; ".join(dict.fromkeys(parts)) or "no effects"

    # ----------------------------------------------------------------------------------------
    def _iteration(self) -> _Iteration:
        node, ctx = self.node, self.ctx
        target, it = node.target, node.iter
        fn = resolve_call(it.func, ctx) if isinstance(it, ast.Call) else None
        if fn == "range" and isinstance(target, ast.Name) and not it.keywords \
                and 1 <= len(it.args) <= 3:
            args = list(it.args)
            for a in args:
                _require_pure(a, "range bound")
            start, stop, step = ([ast.Constant(0)] + args + [ast.Constant(1)])[:3] \
                if len(args) == 1 else (args + [ast.Constant(1)])[:3]
            return _Iteration(target.id, start, stop, step)
        if fn == "enumerate" and isinstance(target, ast.Tuple) and len(target.elts) == 2 \
                and isinstance(target.elts[0], ast.Name) and not it.keywords:
            offset = it.args[1] if len(it.args) == 2 else ast.Constant(0)
            _require_pure(offset, "enumerate start")
            inner = _Iteration("", offset, offset, ast.Constant(1))
            self._elements(target.elts[1], it.args[0], inner)
            inner.index = target.elts[0].id
            trip = self._trip(inner.elements)
            inner.stop = trip if is_int(offset, 0) else self._sub("a + n", a=offset, n=trip)
            return inner
        result = _Iteration(self.ctx.namer.new("i"), ast.Constant(0), ast.Constant(0),
                            ast.Constant(1), index_is_user=False)
        self._elements(target, it, result)
        result.stop = self._trip(result.elements)
        return result

    def _elements(self, target: ast.expr, iterable: ast.expr, into: _Iteration) -> None:
        fn = resolve_call(iterable.func, self.ctx) if isinstance(iterable, ast.Call) else None
        if fn == "zip" and isinstance(target, ast.Tuple) and not iterable.keywords \
                and len(target.elts) == len(iterable.args):
            for t, src in zip(target.elts, iterable.args):
                self._elements(t, src, into)
            return
        if not isinstance(target, ast.Name):
            raise Unsupported(f"loop target `{unparse(target)}` unpacks elements")
        _require_pure(iterable, "iterated value")
        into.elements.append((target.id, iterable))

    def _trip(self, elements: list[tuple[str, ast.expr]]) -> ast.expr:
        lens = [self._sub("len(x)", x=src) for _, src in elements]
        if len(lens) == 1:
            return lens[0]
        return ast.Call(ast.Name("min", ast.Load()), lens, [])

    def _inline_inner(self, body: list[ast.stmt], it: _Iteration) -> tuple[list, list]:
        """Replace vectorized inner loops by their vectorized branch; collect their checks."""
        seeds = {it.index} | {n for n, _ in it.elements}
        assigned = set().union(*(loop_dataflow.stores(s) for s in walk(ast.Module(body, []))
                                 if isinstance(s, ast.stmt)))
        guards, out, stacked = [], [], set()
        for s in body:
            if is_vectorized_guard(s):
                stacked |= getattr(s, "bound_lists", set())
                for g in _conjuncts(s.test):
                    if _is_int_check(g, seeds):
                        continue  # the inner writes out[i, ...]: this loop makes i a slice
                    if loads(g) & (seeds | assigned):
                        raise Unsupported(f"the inner loop at line {s.lineno} needs a "
                                          f"per-iteration runtime check: {unparse(g)}")
                    guards.append(g)
                out += s.body[1:]
            elif isinstance(s, ast.If):
                s.body, g1 = self._inline_inner(s.body, it)
                s.orelse, g2 = self._inline_inner(s.orelse, it)
                guards += g1 + g2
                out.append(s)
            else:
                out.append(s)
        if stacked:  # lists an inlined loop built: the stacked items here
            block = ast.Module(out, [])
            normalize_comprehensions.bound_list_consumers(block, stacked, self.ctx, stacked=True)
            out = block.body
        return out, guards

    def _guard_iterables(self, it: _Iteration, body: list[ast.stmt], seeds: set[str]) -> None:
        """Runtime checks: what the body indexes by the loop must be tensors; >= 1 iteration."""
        for _, src in it.elements:
            self._guard("isinstance(x, torch.Tensor)", x=src)
            self._guard("x.dim() > 0", x=src)
        # names bound anywhere in the body, also inside outlined inner bodies (their locals)
        local = {n.id for s in body for n in walk(s)
                 if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)} | {
            a.arg for s in body for a in walk(s) if isinstance(a, ast.arg)}
        for sub in (n for s in body for n in walk(s) if isinstance(n, ast.Subscript)):
            if _is_pure(sub.value) and not (loads(sub.value) & (self.facts.assigned | seeds | local)) \
                    and depends(sub.slice, self.facts.variant, self.ctx):
                self._guard("isinstance(x, torch.Tensor)", x=sub.value)
        for e in self.facts.of_kind("write"):
            self._guard("isinstance(x, torch.Tensor)", x=ast.Name(e.name, ast.Load()))
        for e in self.facts.of_kind("append"):
            if e.name not in self.known and e.name not in self.built:
                self._guard("isinstance(x, list)", x=ast.Name(e.name, ast.Load()))
        self._guard("len(range(a, b, s)) > 0", a=it.start, b=it.stop, s=it.step)

    def _need_plain_range(self) -> None:
        """Slices a:b:s select the same indices as range(a, b, s) when a >= 0 and s > 0."""
        it = self.it
        if not (isinstance(it.start, ast.Constant) and isinstance(it.start.value, int)
                and it.start.value >= 0):
            self._guard("a >= 0", a=it.start)
        if not (isinstance(it.step, ast.Constant) and isinstance(it.step.value, int)
                and it.step.value > 0):
            self._guard("s > 0", s=it.step)

    def _check(self) -> ast.expr:
        if len(self.guards) == 1:
            return self.guards[0]
        return ast.BoolOp(op=ast.And(), values=self.guards)

    # ----------------------------------------------------------------------------------------
    def _output(self, name: str) -> ast.expr:
        """Return ``name`` from each iteration; the stacked values' expression."""
        self.outputs.append(name)
        return self._sub(f"o[{len(self.outputs) - 1}]", o=self.outs)

    def _effect(self, e: Effect, value: ast.expr, pred: str | None) -> list[ast.stmt]:
        """Per-iteration statements of an effect; its fold over the loop goes to ``folds``."""
        self.uses_where |= pred is not None
        if e.kind == "acc" and e.family in rules.FAMILY_IDENTITY:
            ident = rules.FAMILY_IDENTITY[e.family]
            if pred is not None:
                value = self._sub(f"torch.where(p, v, {ident})", p=pred, v=value)
            if e.name not in self.accs:
                part = self.ctx.namer.new(f"{e.name}_part")
                self.init += self._sub(f"p = {ident}", p=part)
                self.accs[e.name] = (part, e.family, self._output(part), set())
            part, _, _, kinds = self.accs[e.name]
            kinds.add(_number_kind(e.value))
            if not isinstance(e.stmt, ast.AugAssign):
                self.rebound.add(e.name)
            op = "*" if e.family == "prod" else ("-" if e.negate else "+")
            return self._sub(f"p = p {op} v", p=part, v=value)
        if e.kind in ("acc", "scan"):  # running max/min, prefix sum/product: one value each
            step = self.ctx.namer.new(f"{e.name}_step")
            stacked = self._output(step)
            if e.kind == "acc":
                self.accs[e.name] = (step, e.family, stacked, {"tensor"})
            else:
                run = self.runs[e.name] = self.ctx.namer.new(f"{e.name}_running")
                scan = self._sub(rules.FAMILY_SCAN[e.family], s=e.name, v=stacked)
                self.folds += self._sub("r = x", r=run, x=scan)
                self.folds += self._sub("s = r[-1]", s=e.name, r=run)
            return self._sub("p = v", p=step, v=value)
        if e.scan_of:  # the running value itself: comes from the scan
            self.folds += self._place(e, ast.Name(self.runs[e.scan_of], ast.Load()))
            return []
        if e.kind == "write" and pred is not None:
            if e.family:
                keep = "0" if e.family in ("add_", "sub_") else "1"
                value = self._sub(f"torch.where(p, v, {keep})", p=pred, v=value)
            else:  # deselected iterations keep what is there: this iteration's last write
                old = clone(_write_target(e.stmt))
                old.ctx = ast.Load()
                old = self.last_write.get(unparse(old), old)
                value = self._sub("torch.where(p, v, old)", p=pred, v=value, old=old)
        item = self.ctx.namer.new(f"{e.name}_item")
        stmts, slots = [], {}  # data-dependent index entries, returned by each iteration too
        if e.kind == "write":
            self.last_write[unparse(_write_target(e.stmt))] = item
            for k, x in enumerate(loop_dataflow.write_entries(_write_target(e.stmt))):
                if not _is(x, self.it.index) and loop_dataflow.data_index(x, self.facts, self.ctx):
                    self._guard_index(x)
                    slot = self.ctx.namer.new(f"{e.name}_slot")
                    stmts += self._sub("k = x", k=slot, x=x)
                    slots[k] = self._output(slot)
        stacked = self._output(item)
        self.folds += self._place_at(e, stacked, slots) if slots else self._place(e, stacked)
        return stmts + self._sub("x = v", x=item, v=value)

    def _guard_index(self, x: ast.expr) -> None:
        """A data-dependent write index must be one integer per iteration: ``int(...)``, or an
        element / row of a 1-d integer tensor (a bool one would be a mask)."""
        if getattr(x, "host_number", None) == "int":
            return
        rows = {param: name for (name, _), (param, prefix) in self.slices.items() if not prefix}
        sources = dict(self.it.elements)
        src = sources.get(x.id) if isinstance(x, ast.Name) else None
        if src is None and isinstance(x, ast.Name) and x.id in rows:
            src = ast.Name(rows[x.id], ast.Load())
        if src is None:
            raise Unsupported(f"write index `{unparse(x)}`: not known to be one integer per "
                              "iteration")
        self._guard(f"x.dtype in {rules.INDEX_DTYPES} and x.dim() == 1", x=src)

    def _place_at(self, e: Effect, stacked: ast.expr, slots: dict[int, ast.expr]) -> list:
        """``out[i, t[i]] = v`` -> ``out[arange, slots] = stacked``; without the bare ``i``,
        ``counts[t[i]] += v`` -> ``counts.index_put_((slots,), stacked, accumulate=True)``."""
        it, target = self.it, clone(_write_target(e.stmt))
        entries = loop_dataflow.write_entries(target)
        self.scattered.add(e.name)
        trips = self._sub("len(range(a, b, s))", a=it.start, b=it.stop, s=it.step)
        index = []
        for k, x in enumerate(entries):
            if k in slots:  # one index per iteration (else reshape raises, as int(...) would)
                index.append(self._sub("j.reshape(n)", j=slots[k], n=trips))
            elif _is(x, it.index):
                index.append(self._sub("torch.arange(a, b, s, device=out.device)", a=it.start,
                                       b=it.stop, s=it.step, out=e.name))
            else:
                if not (isinstance(x, ast.Constant) and type(x.value) is int):
                    self._guard("isinstance(x, int)", x=x)
                index.append(x)
        values = self.ctx.namer.new(f"{e.name}_values")
        stmts = self._sub(f"v = s.reshape(s.shape[:1] + (1,) * (out.dim() - {len(entries) - 1}"
                          " - s.dim()) + s.shape[1:])", v=values, s=stacked, out=e.name)
        target.slice = ast.Tuple(index, ast.Load())
        if any(_is(x, it.index) for x in entries):  # distinct slots: a plain indexed write
            if isinstance(e.stmt, ast.AugAssign):
                return stmts + [ast.AugAssign(target, e.stmt.op, ast.Name(values, ast.Load()))]
            # `out[i, j] = v` casts v to out's dtype; an index_put_ would raise instead
            return stmts + [ast.Assign([target], self._sub("v.to(out.dtype)", v=values,
                                                           out=e.name))]
        # in place as `+=` would: the values cast to the written dtype, or the same error;
        # index_put_ takes tensors only (a fixed int broadcasts as a 0-d one)
        target.slice.elts = [x if k in slots else self._sub(
            "torch.as_tensor(x, device=out.device)", x=x, out=e.name) for k, x in enumerate(index)]
        v = self._sub(rules.WRITE_ACCUMULATE[e.family], v=values)
        return stmts + [ast.Expr(self._sub(
            "out.index_put_(i, v.to(out.dtype) if torch.can_cast(torch.result_type(out, v), "
            "out.dtype) else v, accumulate=True)", out=e.name, i=target.slice, v=v))]

    def _place(self, e: Effect, stacked: ast.expr) -> list[ast.stmt]:
        """Store the stacked per-iteration values of an append or write."""
        host = getattr(e.value, "host_number", None)
        if e.kind == "append" and e.name in self.known:  # our own list: its consumer is known
            self.stacked[e.name] = (stacked, host)
            return []
        if e.kind == "append" and e.name in self.built and not host:
            self.bound_lists.add(e.name)
            return self._sub("lst = v", lst=e.name, v=stacked)
        if e.kind == "append":  # host values (`.item()`) were Python numbers in the list
            how = "v.tolist()" if host else "v.unbind(0)"
            return [ast.Expr(self._sub(f"lst.extend({how})", lst=e.name, v=stacked))]
        self._need_plain_range()
        target = clone(_write_target(e.stmt))
        entries = loop_dataflow.write_entries(target)
        at = next(k for k, x in enumerate(entries) if isinstance(x, ast.Name)
                  and x.id == self.it.index)
        for x in entries:
            if not isinstance(x, ast.Slice) and x is not entries[at] and not (
                    isinstance(x, ast.Constant) and type(x.value) is int):
                self._guard("isinstance(x, int)", x=x)
        entries[at] = ast.Slice(self.it.start, self.it.stop, self.it.step)
        target.slice = ast.Tuple(entries, ast.Load()) if len(entries) > 1 else entries[0]
        fixed = sum(not isinstance(x, ast.Slice) for x in entries)  # int entries drop a dim
        moved = sum(isinstance(x, ast.Slice) for x in entries[:at])
        # values of shape (n, *value_shape): pad to the written rank, loop axis to its place
        placed = self._sub(f"v.reshape(v.shape[:1] + (1,) * (out.dim() - {fixed} - v.dim()) "
                           "+ v.shape[1:])", v=stacked, out=e.name)
        if moved:
            placed = self._sub(f"v.movedim(0, {moved})", v=placed)
        if isinstance(e.stmt, ast.AugAssign):
            return [ast.AugAssign(target=target, op=e.stmt.op, value=placed)]
        return [ast.Assign(targets=[target], value=placed)]

    def _assemble(self, it: _Iteration, converted: list[ast.stmt]) -> list[ast.stmt]:
        # Sum accumulators leave both forms summed over the loop: the batched form fuses the
        # sum into the ops that make the per-item values.
        summed = frozenset(part for part, family, _, _ in self.accs.values() if family == "sum")
        self.averaged = self._averaged(it, converted)
        averaged = frozenset(self.accs[name][0] for name in self.averaged)
        if averaged:
            self.flag = self.ctx.namer.new("averaged")
            self.folds += self._sub("f = True", f=self.flag)
        trips = self._sub("len(range(a, b, s))", a=it.start, b=it.stop, s=it.step)
        for name, (part, family, stacked, kinds) in self.accs.items():
            reduced = stacked if part in summed else self._sub(rules.FAMILY_REDUCE[family],
                                                                v=stacked)
            if len(kinds) == 1 and next(iter(kinds)) in rules.NUMBER_FOLD:
                # `count += 1`, `n += m.sum().item()`: the original's Python number
                reduced = self._sub(rules.NUMBER_FOLD[next(iter(kinds))], r=reduced)
            if name in self.zeros and family in rules.FAMILY_FOLD_FROM_ZERO:
                self.folds += self._sub("s = x", s=name, x=self._sub(
                    rules.FAMILY_FOLD_FROM_ZERO[family], r=reduced))
            elif name not in self.rebound and family in rules.FAMILY_FOLD_INPLACE:
                # `s += e` on a tensor is in place: s keeps its dtype, and its aliases see it
                self.folds += self._sub(rules.FAMILY_FOLD_INPLACE[family], s=name, r=reduced)
            else:
                self.folds += self._sub("s = x", s=name, x=self._sub(
                    rules.FAMILY_FOLD[family], s=name, r=reduced))
        body = self.init + converted
        params, inputs, dims, batched = [], [], [], []
        used = set().union(*(loads(s) for s in body)) if body else set()
        if it.index in used or not (it.elements or self.slices):
            device = self._device()
            params.append(it.index)
            inputs.append(self._sub("torch.arange(a, b, s" + (", device=d)" if device else ")"),
                                    a=it.start, b=it.stop, s=it.step, d=device))
            dims.append(0)
            batched.append(batch_loop_bodies.Param(it.index, inputs[-1], batch_loop_bodies.Rank(), ()))
        for name, src in it.elements:
            params.append(name)
            # zip stops at the shortest: all of a tensor is itself (a slice's backward copies)
            inputs.append(src if len(it.elements) == 1 else self._sub(
                "x if len(x) == n else x[:n]", x=src, n=it.stop))
            dims.append(0)
            batched.append(self._batched_param(name, inputs[-1], src, 0, 0))
        for (name, _), (param, prefix) in self.slices.items():
            params.append(param)
            index = prefix + [ast.Slice(it.start, it.stop, it.step)]
            rows = ast.Subscript(ast.Name(name, ast.Load()),
                                 ast.Tuple(index, ast.Load()) if prefix else index[0], ast.Load())
            dims.append(sum(isinstance(x, ast.Slice) for x in prefix))
            # All rows: the tensor itself, or `x[i]` for `x[i, a:b:s]`, whose backward needs no
            # zero-filled copy for the slice (and once an outer loop maps `x[i]`, no op at all).
            whole = [f"b == x.shape[{len(prefix)}]"] + [
                f"{v} == {k}" for v, k, bound in (("a", 0, it.start), ("s", 1, it.step))
                if not (isinstance(bound, ast.Constant) and bound.value == k)]
            kept = [x for x in prefix if not _full(x)] and prefix  # `x[:, :]` is `x`
            all_rows = ast.Subscript(ast.Name(name, ast.Load()), ast.Tuple(kept, ast.Load())
                                     if len(kept) > 1 else kept[0], ast.Load()) if kept else \
                ast.Name(name, ast.Load())
            rows = self._sub(f"w if {' and '.join(whole)} else r", w=all_rows,
                             x=ast.Name(name, ast.Load()), a=it.start, s=it.step, b=it.stop, r=rows)
            inputs.append(rows)
            fixed = sum(not isinstance(x, ast.Slice) for x in prefix)  # int entries drop a dim
            batched.append(self._batched_param(param, inputs[-1], ast.Name(name, ast.Load()),
                                               dims[-1], fixed))
        fn = self.ctx.namer.new("body")
        ret = ast.Return(ast.Tuple([self._sub("torch.as_tensor(v)", v=o) for o in self.outputs],
                                   ast.Load()))
        func = ast.FunctionDef(
            name=fn, args=ast.arguments(posonlyargs=[], args=[ast.arg(p) for p in params],
                                        kwonlyargs=[], kw_defaults=[], defaults=[]),
            body=body + [ret], decorator_list=[], returns=None, type_params=[])
        vmap = self._sub(f"torch.vmap(f, in_dims={tuple(dims)!r})", f=fn)
        mapped = [func] + self._sub("o = c", o=self.outs, c=ast.Call(vmap, inputs, []))
        if summed:
            outs = [self._sub(f"o[{k}].sum(0) / n" if name in averaged else
                              f"o[{k}].sum(0)" if name in summed else f"o[{k}]", o=self.outs,
                              n=trips)
                    for k, name in enumerate(self.outputs)]
            mapped += self._sub("o = v", o=self.outs, v=ast.Tuple(outs, ast.Load()))
        try:
            tensors = frozenset(x.id for x in _proven_tensors(self._check())
                                if isinstance(x, ast.Name))
            check, plain = batch_loop_bodies.batch(body, batched, self.outputs,
                                                   self.outs, trips, self.ctx, self.node, summed,
                                                   averaged, tensors)
        except Unsupported as exc:  # an op without a batched form: vmap maps the body
            self.unbatched = exc.reason
            stmts = mapped + self.folds
        else:  # the check holds for the usual shapes; vmap is the general path
            stmts = (plain if check is None else [ast.If(check, plain, mapped)]) + self.folds
            self.batched_if = check
        for s in stmts:
            ast.copy_location(s, self.node)
        return [fix_missing_locations(s) for s in stmts]

    def _averaged(self, it: _Iteration, body: list[ast.stmt]) -> set[str]:
        """Sum accumulators starting at 0 that the next statement only divides by the trip count
        (``return loss / B`` after ``for i in range(B)``): the loop leaves their mean, without
        the ``* B`` of a fused mean and the ``/ B`` after it."""
        if not (is_int(it.start, 0) and is_int(it.step, 1)):
            return set()
        assigned = set().union(*(loop_dataflow.stores(n) for s in body for n in walk(s)
                                 if isinstance(n, ast.stmt)))
        if loads(it.stop) & assigned:
            return set()
        stop = unparse(it.stop)
        return {name for name, (_, family, _, kinds) in self.accs.items()
                if family == "sum" and kinds == {"tensor"} and name in self.zeros
                and self.divided.get(name) == stop}

    def _batched_param(self, name: str, value: ast.expr, source: ast.expr, dim: int,
                       fixed: int) -> "batch_loop_bodies.Param":
        """A body parameter bound to ``value`` (loop axis at ``dim``), sliced from ``source``
        with ``fixed`` int entries: for the batched form, the loop axis goes in front."""
        if dim:
            value = self._sub(f"v.movedim({dim}, 0)", v=value)
        rank = batch_loop_bodies.Rank.of(unparse(self._sub("x.dim()", x=source)), -1 - fixed)
        integer = unparse(self._sub(f"x.dtype in {rules.INDEX_DTYPES}", x=source))
        return batch_loop_bodies.Param(name, value, rank, (integer,))

    def _device(self) -> ast.expr | None:
        """Where the indexed tensors live: the loop index must be there too."""
        tensors = [x for x in _proven_tensors(self._check())
                   if isinstance(x, (ast.Name, ast.Attribute))]
        return self._sub("x.device", x=tensors[0]) if tensors else None

    def row_param(self, name: str, prefix: list[ast.expr]) -> str:
        """Parameter of the body receiving ``name[prefix..., a:b:s]``, mapped over the loop's
        axis. ``prefix`` holds full slices and fixed ints (which drop their dims)."""
        key = (name, unparse(ast.Tuple(prefix, ast.Load())))
        if key not in self.slices:
            self.slices[key] = (self.ctx.namer.new(f"{name}_row"), prefix)
            self._need_plain_range()
            self._guard("isinstance(x, torch.Tensor)", x=ast.Name(name, ast.Load()))
            for x in prefix:
                if not isinstance(x, (ast.Slice, ast.Constant)):
                    self._guard("isinstance(x, int)", x=x)
            self._guard(f"b <= x.shape[{len(prefix)}]", b=self.it.stop,
                        x=ast.Name(name, ast.Load()))
        return self.slices[key][0]


def _number_kind(value: ast.expr) -> str:
    """What the original added: a Python int/float literal, a host number, or a tensor."""
    if isinstance(value, ast.Constant) and type(value.value) in (int, float):
        return type(value.value).__name__
    return getattr(value, "host_number", None) or "tensor"


class _UseStacked(Transformer):
    """``torch.stack(_items)`` over a comprehension's list -> the stacked values
    (``loop_rules.LIST_CONSUMERS``); ``xs = _items`` -> ``xs = <the stacked values>``, or their
    ``.tolist()`` for host values (Python numbers in the original's list)."""

    def __init__(self, stacked: dict[str, tuple], ctx: PassContext):
        self.stacked = stacked
        self.ctx = ctx

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in self.stacked:
            values, host = self.stacked[node.args[0].id]
            table = rules.LIST_CONSUMERS_OF_HOST_VALUES if host else rules.LIST_CONSUMERS
            template = table[resolve_call(node.func, self.ctx)]
            return replace(template, loc=node, torch_name=self.ctx.torch_name, v=values)
        return self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id not in self.stacked:
            return node
        values, host = self.stacked[node.id]
        return replace("v.tolist()" if host else "v", loc=node, torch_name=self.ctx.torch_name,
                       v=values)


class _UnitSlices(Transformer):
    """``x[..., i:i+1, ...]`` -> ``x[..., i, ...].unsqueeze(q)``: vmap cannot slice at a
    batched offset, but it can index."""

    def __init__(self, index: str, ctx: PassContext):
        self.index = index
        self.ctx = ctx

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        entries = loop_dataflow.write_entries(node)
        at = [k for k, x in enumerate(entries) if self._unit(x)]
        if not isinstance(node.ctx, ast.Load) or len(at) != 1 \
                or not all(isinstance(x, ast.Slice) for x in entries[:at[0]]):
            return node
        k = at[0]
        entries[k] = ast.Name(self.index, ast.Load())
        node.slice = ast.Tuple(entries, ast.Load()) if len(entries) > 1 else entries[0]
        return replace(f"x.unsqueeze({k})", loc=node, x=node)

    def _unit(self, x: ast.expr) -> bool:
        if not (isinstance(x, ast.Slice) and x.step is None and _is(x.lower, self.index)):
            return False
        up = x.upper
        return isinstance(up, ast.BinOp) and isinstance(up.op, ast.Add) and (
            (_is(up.left, self.index) and is_int(up.right, 1))
            or (is_int(up.left, 1) and _is(up.right, self.index)))


def _is(node: ast.AST | None, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


class _DivideUnlessAveraged(Transformer):
    """``s / d`` -> ``(s if flag else s / d)`` for the averaged names ``s``."""

    def __init__(self, names: set[str], flag: str, ctx: PassContext):
        self.names, self.flag, self.ctx = names, flag, ctx

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Div) and isinstance(node.left, ast.Name) \
                and node.left.id in self.names:
            return replace("s if f else e", loc=node, s=node.left.id, f=self.flag, e=node)
        return node


class _RowSlices(Transformer):
    """``x[:, k, i, rest]`` with ``x`` and ``k`` fixed -> ``row[rest]``, ``row`` mapped from
    ``x[:, k, a:b:s]``: vmap hands each iteration its slice, no gather (and no scatter in the
    backward). ``k`` must be an int (checked at run time)."""

    def __init__(self, loop: _Loop, it: _Iteration, assigned: set[str], variant: set[str]):
        self.loop = loop
        self.index = it.index
        self.assigned = assigned
        self.variant = variant

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        base = node.value
        if not (isinstance(node.ctx, ast.Load) and isinstance(base, ast.Name)
                and base.id not in self.assigned and base.id != self.index):
            return node
        entries = loop_dataflow.write_entries(node)
        at = [k for k, x in enumerate(entries) if _is(x, self.index)]
        if len(at) != 1 or not all(_full(x) or self._fixed_int(x) for x in entries[:at[0]]):
            return node
        row = ast.Name(self.loop.row_param(base.id, entries[:at[0]]), ast.Load())
        rest = entries[at[0] + 1:]
        if not rest:
            return ast.copy_location(row, node)
        node.value = row
        node.slice = ast.Tuple(rest, ast.Load()) if len(rest) > 1 else rest[0]
        return node

    def _fixed_int(self, x: ast.expr) -> bool:
        """An index the loop does not change, which can be re-evaluated before the loop."""
        if isinstance(x, ast.Constant):
            return type(x.value) is int
        return (isinstance(x, (ast.Name, ast.Attribute, ast.BinOp)) and _is_pure(x)
                and not depends(x, self.variant, self.loop.ctx)
                and not (loads(x) & self.assigned))


def _full(x: ast.expr) -> bool:
    return isinstance(x, ast.Slice) and x.lower is None and x.upper is None and x.step is None


def _conjuncts(test: ast.expr) -> list[ast.expr]:
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return list(test.values)
    return [test]


def _is_int_check(g: ast.expr, names: set[str]) -> bool:
    """``isinstance(i, int)`` for one of ``names``."""
    return (isinstance(g, ast.Call) and isinstance(g.func, ast.Name) and g.func.id == "isinstance"
            and len(g.args) == 2 and isinstance(g.args[0], ast.Name) and g.args[0].id in names
            and isinstance(g.args[1], ast.Name) and g.args[1].id == "int")


def _write_target(stmt: ast.stmt) -> ast.Subscript:
    return stmt.targets[0] if isinstance(stmt, ast.Assign) else stmt.target


_PURE = (ast.Name, ast.Constant, ast.Attribute, ast.Subscript, ast.BinOp, ast.UnaryOp, ast.Slice,
         ast.Tuple, ast.Load, ast.operator, ast.unaryop, ast.Call, ast.keyword)


def _is_pure(expr: ast.expr) -> bool:
    """Cheap and side-effect free to evaluate again: names, attributes, constants, arithmetic,
    subscripts, and shape queries (``len(x)``, ``x.size(0)``)."""
    for n in walk(expr):
        if not isinstance(n, _PURE):
            return False
        if isinstance(n, ast.Call):
            f = n.func
            ok = (isinstance(f, ast.Name) and f.id in ("len", "min", "max", "int")) or (
                isinstance(f, ast.Attribute) and ops.by_call(None, f.attr).shape_query)
            if not ok:
                return False
    return True


def _require_pure(expr: ast.expr, what: str) -> None:
    if not _is_pure(expr):
        raise Unsupported(f"{what} `{unparse(expr)}` is not a plain name or shape expression")
