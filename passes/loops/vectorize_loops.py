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
depend on it, or runs batched over both loop dims where it can (``batch_both_loop_levels``). An inner loop stacks and gathers no lists (that prelude would be a statement of the
outer body, which would keep the outer loop); when the outer loop is kept anyway, its inner loops
are planned again as if they were not inner, their preludes in its body, and so are those of a
vectorized loop's branch as written, where one of them then checks other tensors than the outer
check (``for dr in fmap_r: for rl in dr:`` over a list of tensors of rows of other shapes,
which the outer form never takes, takes each ``dr`` in its iteration); else the inner loop's
entry says it runs vectorized only within the outer loop's form.

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

Each loop goes through ``LOOP_STAGES``, one module per stage, each ``stage(plan, ctx) -> plan``
over the loop's ``plan.LoopPlan``, its docstring the stage's spec. The plan works on a copy of
the loop, so a stage refusing (``Unsupported``) leaves the loop as written.
"""
from __future__ import annotations

import ast
import contextlib
from typing import Callable

from .. import ast_marks
from .. import loop_rules as rules
from ..ast_tools import (PassContext, Transformer, clone, is_name, rename, replace, unparse,
                        walk, write_target)
from ..errors import Unsupported
from . import (asserts_to_counters, attribute_writes_to_names, batch_both_loop_levels, batch_values,
               batch_loop_bodies, check_body, class_selections_to_rows, class_selections_to_segments,
               check_mapped_body, cleared_positions_to_masks,
               classify_effects, contradicting_checks, conditional_expressions_to_branches,
               conditioned_writes_to_functional, counted_whiles_to_ranges,
               data_attributes_to_detach,
               distribute_comprehensions, distribute_loops, divisions_by_counters,
               effects_to_outputs, element_slices_to_indices, excluded_items_to_masks,
               fold_accumulators,
               gather_keyed_reads, hoist_calls_under_index_tests, hoist_invariant_checks,
               host_roundtrips_to_tensor_ops, index_tests_to_selected_indices,
               identity_tests_of_items, index_value_checks_to_ranges,
               index_tuples_to_tensors, inline_helper_calls, helper_effects,
               host_array_writes_run_as_written,
               inline_inner_loops,
               inplace_writes_to_functional, invariant_branches_to_checks,
               last_writes_to_scatters, length_masks_to_compares,
               invariant_values_take_no_grad, iteration, last_values_after_loop,
               list_mean_helpers,
               linear_recurrences_to_scans, loop_dataflow, masked_selections_to_where,
               masked_writes_to_where,
               masked_selects_to_selections, materialize_iterators, module_list_linears,
               module_loss_calls, moving_slices_to_windows,
               merge_branch_appends, merge_chained_indexing, newaxis_to_none,
               normalize_comprehensions,
               outer_dependent_ranges_to_masks, outline_body, pair_tests_to_selected_pairs,
               picked_rows_to_tables,
               promoting_folds_run_as_written,
               scan_python_numbers,
               ragged_slices_to_masks, record_items_run_as_written,
               raise_on_empty_selections, removed_index_lists_to_masks,
               number_list_operands,
               rename_rebound_loop_variables, rounded_gradients_run_as_written,
               row_index_adds_to_writes, row_slices_to_params,
               runtime_checks, sliced_selections_to_masks,
               no_grad_blocks_to_detach, sink_own_item_selections, split_tuple_assignments,
               sorts_read_at_ends, stack_tensor_lists, tensor_branches_to_where,
               unit_slices_to_index)
from .loop_dataflow import loads, resolve_call
from .plan import LoopPlan, OwnList, new_plan
from .row_slices_to_params import rows_as_written
from .runtime_checks import (MARKER, as_written_branch, is_as_written, is_vectorized_guard,
                             proven_tensors)

# The stages of one loop, in order: each a module with ``stage(plan, ctx) -> plan`` that raises
# ``Unsupported`` when the loop must run as written.
LOOP_STAGES: list = [
    index_tuples_to_tensors,      # before iteration: it makes the loop iterate a tensor
    index_tests_to_selected_indices,  # before iteration: it makes the loop iterate a tensor
    iteration,                    # first of the others: every stage reads the iteration
    record_items_run_as_written,  # on the body as written: its reason is the first to give
    host_array_writes_run_as_written,  # ... and so is its reason
    outer_dependent_ranges_to_masks,  # on the iteration as written, before the body is read
    materialize_iterators,        # on the iteration as written; before stack_tensor_lists
    rename_rebound_loop_variables,  # before the checks: they see a local, not a rebound item
    identity_tests_of_items,      # after rename_rebound_loop_variables: an item rebound is a local
    index_value_checks_to_ranges,  # before inline_inner_loops: it reads the inner loops' checks
    inline_inner_loops,           # before the checks: the inner loops' statements are checked too
    inline_helper_calls,          # ... and so are the helpers'
    helper_effects,               # after inline_helper_calls: the helper calls it left
    module_loss_calls,            # before the checks: they see the known functional op
    module_list_linears,          # before the checks: they see F.linear of stacked parameters
    # after the helper stages, which set the helper checks it adds to; before the stages that
    # read the body's `continue`s: it leaves top-level ones
    invariant_branches_to_checks,
    merge_branch_appends,         # before the checks: one append per iteration is no condition
    split_tuple_assignments,      # before the stages that merge one name at a time under a mask
    no_grad_blocks_to_detach,     # before the checks, which refuse a `with`
    data_attributes_to_detach,    # after inlining (a helper's `.data` too); vmap refuses `.data`
    newaxis_to_none,              # after inlining (a helper's too); before the stages reading indices
    merge_chained_indexing,       # on the inlined body, before the stages read its rows and writes
    row_index_adds_to_writes,     # after merge_chained_indexing (`m[i][j]` is one row); before
                                  # check_body, which refuses a method writing into an outer row
    attribute_writes_to_names,    # on the inlined body, before the stages that take written names
    gather_keyed_reads,           # on the inlined body, before the stages read its rows
    hoist_invariant_checks,       # before check_body, which refuses the checks left in the body
    asserts_to_counters,          # after hoist_invariant_checks: the asserts on item values left
    hoist_calls_under_index_tests,  # on the inlined body, before tensor_branches_to_where masks it
    element_slices_to_indices,    # before ragged_slices_to_masks, which would make its slices masks
    cleared_positions_to_masks,   # before masked_selections_to_where: it makes masks
    masked_writes_to_where,       # before masked_selections_to_where, which reads a write as a selection
    # after masked_writes_to_where (a mask's write of a number: a where); before
    # masked_selections_to_where, which keeps the body the checks read
    conditioned_writes_to_functional,
    excluded_items_to_masks,      # before ragged_slices_to_masks, which would split its slices
    removed_index_lists_to_masks,  # before check_body, which refuses `idx.remove(j)`
    ragged_slices_to_masks,       # before masked_selections_to_where: it makes selections
    sliced_selections_to_masks,   # before masked_selections_to_where: it makes selections
    # before masked_selects_to_selections: it reads the masked_select calls that make its sorted
    # values 1-D; it leaves selections, which the next two take
    sorts_read_at_ends,
    masked_selects_to_selections,  # before masked_selections_to_where: it makes selections
    # before masked_selections_to_where, which would make a class's selection a dense mask
    class_selections_to_segments,
    # after class_selections_to_segments, which takes a class's sum or mean more cheaply; before
    # masked_selections_to_where, which would make a class's selection a mask over every row
    class_selections_to_rows,
    masked_selections_to_where,   # before check_body: it marks the selections it converts
    last_values_after_loop,       # before check_body: what it folds is no longer read after
    check_body,                   # on the body as written: reasons quote the user's code
    conditional_expressions_to_branches,  # before tensor_branches_to_where: it masks the `if`s
    sink_own_item_selections,     # on its branches; before the stages that find what varies
    host_roundtrips_to_tensor_ops,  # finds what varies with the iteration, for the next stages
    unit_slices_to_index,         # before row_slices_to_params: `x[i:i+1]` reads the row x[i]
    # after unit_slices_to_index (a unit slice is a row, not a window); before
    # row_slices_to_params, which reads the windows' rows at the index
    moving_slices_to_windows,
    number_list_operands,         # before row_slices_to_params: it keeps `w[i]` an item read
    row_slices_to_params,
    classify_effects,             # on the final body: later stages rewrite its effect statements
    runtime_checks,               # after row_slices_to_params: its checks come first
    tensor_branches_to_where,
    effects_to_outputs,           # after tensor_branches_to_where: effects under their masks
    fold_accumulators,            # after effects_to_outputs: the accumulators it found
    divisions_by_counters,        # after fold_accumulators: the folds it divides on the device
    check_mapped_body,            # on the final body: what the stages before could not convert
    inplace_writes_to_functional,  # on the final body, before it is outlined and batched
    outline_body,                 # after the folds: summed and averaged outputs are known
    picked_rows_to_tables,        # on the vmap form outline_body made, before it is the else
    batch_loop_bodies,            # after outline_body: its parameters, vmap as the fallback
    batch_both_loop_levels,       # after batch_loop_bodies: the outer loops it left to vmap
    stack_tensor_lists,           # after batch_loop_bodies: renames the finished statements
    raise_on_empty_selections,    # around the finished statements
    invariant_values_take_no_grad,  # on the loop as written; before the guard is made
    rounded_gradients_run_as_written,  # on the loop as written; before the guard is made
    contradicting_checks,         # after every stage that adds to the check
    promoting_folds_run_as_written,  # last: around the folds and the checks before them
]


# Loop distribution hoists the iterations of a `for` loop; a `while` loop's are not known first.
_WHILE_NOT_SPLIT = "its iterations are not counted before it runs (only `for` loops and " \
    "counted `while` loops are split)"


def transform(tree: ast.Module, ctx: PassContext) -> ast.Module:
    if not any(isinstance(n, normalize_comprehensions.COMPREHENSIONS) for n in walk(tree)):
        _Vectorizer(ctx).visit(tree.body[0])
        return tree  # the usual case, told by one quick walk
    # A kept comprehension's reason quotes the reads of its list as written, not the code
    # vectorizing another loop made of them (the stacking of a list it iterates)
    func = clone(tree.body[0])
    written = {(c.lineno, c.col_offset): c for c in _comprehensions(func)}
    vectorizer = _Vectorizer(ctx)
    vectorizer.visit(tree.body[0])
    for comp in _comprehensions(tree.body[0]):  # what no rule took: kept, with the reason
        as_written = written.get((comp.lineno, comp.col_offset))
        reason = normalize_comprehensions.kept_reason(as_written, func, ctx) if as_written \
            else normalize_comprehensions.kept_reason(comp, tree.body[0], ctx)
        vectorizer.kept(comp, reason, lambda: vectorizer.verdicts.get(
            (comp.lineno, comp.col_offset)) or distribute_comprehensions.verdict(
            as_written or comp, func if as_written else tree.body[0], ctx, vectorize))
    return tree


def vectorize(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    """``plan`` through every stage; raises ``Unsupported``, its reason quoting the user's code
    where a stage had put a generated name (``_queue[:, j]`` for ``self.queue[:, j]``)."""
    try:
        for stage in LOOP_STAGES:
            plan = stage.stage(plan, ctx)
    except Unsupported as exc:
        exc.reason = plan.quoted(exc.reason)
        exc.args = (exc.reason,)
        raise
    plan.stmts = plan.first + plan.stmts  # hoisted checks run once, before the vectorized form
    return plan


def _bound_around(outer: ast.For, node: ast.For) -> set[str]:
    """The names the statements of ``outer``'s body other than the one holding ``node`` bind."""
    return {n for s in outer.body if not any(c is node for c in walk(s))
            for n in loop_dataflow.stores_in([s])}


def _comprehensions(node: ast.AST) -> list[ast.expr]:
    """The comprehensions of ``node`` (depth first, in source order), outside the originals
    kept by vectorized guards."""
    found, todo = [], [node]
    while todo:  # a stack, not nested generators: this runs over the whole rewritten function
        n = todo.pop()
        if isinstance(n, normalize_comprehensions.COMPREHENSIONS) \
                and not ast_marks.get(n, ast_marks.GENERATED):
            found.append(n)
        kept = as_written_branch(n) or []
        todo += reversed([c for c in ast.iter_child_nodes(n) if not any(c is k for k in kept)])
    return found


def _visit_branches(vectorizer: "_Vectorizer", node: ast.If,
                    narrowed: tuple[frozenset[str], frozenset[str]]) -> ast.If:
    """``node`` visited, the loops of its body and of its else each stacking the names its test
    narrows there to lists (``narrowed``: ``stack_tensor_lists.narrowed_lists``)."""
    body_lists, else_lists = narrowed
    if not (body_lists or else_lists):
        return vectorizer.generic_visit(node)
    names = vectorizer.list_names
    node.test = vectorizer.visit(node.test)
    vectorizer.list_names = names | body_lists
    node.body = vectorizer.statements(node.body)
    vectorizer.list_names = names | else_lists
    node.orelse = vectorizer.statements(node.orelse)
    vectorizer.list_names = names
    return node


class _Vectorizer(Transformer):
    def __init__(self, ctx: PassContext):
        self.ctx = ctx
        # the user's own ``getattr(x, 'a', None)`` calls, which reasons quote as written
        self.getattrs = attribute_writes_to_names.written_getattrs(ctx.report.original_source)
        self.live: dict[ast.stmt, set[str]] = {}  # by node: a freed loop's id is reused
        self.numbers: dict[ast.stmt, dict] = {}  # names bound to Python number literals, by loop
        self.filled: dict[ast.stmt, dict[str, int]] = {}  # tensors filled with one number, by loop
        self.arrays: dict[ast.stmt, dict[str, ast.expr]] = {}  # ... and new numpy arrays
        self.divisions: dict[ast.stmt, tuple[ast.stmt, dict[str, str]]] = {}
        self.buildable_lists: dict[ast.stmt, set[str]] = {}
        self.func: ast.FunctionDef | None = None
        self.stackable_lists: frozenset[str] = frozenset()  # `xs = [...]` names to stack
        self.bound_lists: set[str] = set()   # ... and `lst` names vectorized statements bind
        self.masks: set[str] = set()          # names the function binds to boolean tensors only
        self.outer_indices: list[str] = []    # the enclosing loops' range/enumerate indices
        self.around: list[ast.For] = []       # ... and the loops (or their copies) themselves
        self.outer_bounds: dict = {}          # ... the range ones' first and last values
        self.list_names: frozenset[str] = frozenset()  # names it may hold as lists of tensors
        self.host_containers: frozenset[str] = frozenset()  # ... and always holds as lists, dicts
        self.iterators: dict[str, tuple[int, int]] = {}  # bound to iterators: last read
        self.local_defs: dict[str, ast.FunctionDef] = {}  # nested in the function, as written
        # `xs = [...]` bindings -> the next statement, the only one reducing the list
        self.reduced_next: dict[ast.stmt, ast.stmt] = {}
        self.absorbed: set[ast.stmt] = set()  # ... those, when the reduction took the list
        self.depth = 0  # loops around the node visited: an inner loop stacks no lists (its
        # prelude would be a statement of the outer loop's body, which then keeps the outer loop)
        # Comprehensions reported, by position: the vectorized forms copy them (vmap body,
        # original branch), each is reported once.
        self.seen: set[tuple[int, int]] = set()
        # ... and why those split_list took are not distributed
        self.verdicts: dict[tuple[int, int], str] = {}

    def add_loop(self, lineno: int, vectorized: bool, strategy: str, reason: str,
                 at: LoopPlan | ast.AST) -> None:
        """Report the loop at ``lineno``, ``reason`` quoting only the user's code (``_quoted``)."""
        self.ctx.report.add_loop(lineno, vectorized, strategy, _quoted(reason, at, self.ctx))

    def kept(self, comp: ast.expr, reason: str, fission: Callable[[], str]) -> None:
        """Reports ``comp`` kept for ``reason``; ``fission`` says why it is not distributed
        (asked once per comprehension: the vectorized forms copy it)."""
        if (comp.lineno, comp.col_offset) not in self.seen:
            self.seen.add((comp.lineno, comp.col_offset))
            self.add_loop(comp.lineno, False, "kept", f"{reason}; not distributed: {fission()}",
                          comp)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        outer = (self.live, self.numbers, self.filled, self.arrays, self.divisions,
                 self.buildable_lists, self.func, self.stackable_lists, self.bound_lists,
                 self.masks, self.list_names, self.host_containers, self.iterators,
                 self.local_defs, self.reduced_next)
        self.local_defs = _local_defs(node)  # as written: the visit rewrites their loops
        # first: the facts below are then found for the `for` forms of counted `while` loops
        counted_whiles_to_ranges.rewrite(node, self.ctx)
        list_mean_helpers.rewrite_calls(node, self.ctx)  # before the lists it reads are found
        self.reduced_next = normalize_comprehensions.lists_reduced_next(node, self.ctx)
        self.live = {**self.live, **loop_dataflow.live_after_loops(node)}
        self.numbers = {**self.numbers, **loop_dataflow.numbers_before_loops(node)}
        self.filled = {**self.filled, **loop_dataflow.filled_before_loops(node, self.ctx)}
        self.arrays = {**self.arrays, **loop_dataflow.host_arrays_before_loops(node, self.ctx)}
        self.divisions = {**self.divisions, **loop_dataflow.divisions_after_loops(node)}
        self.buildable_lists = {**self.buildable_lists,
                                **normalize_comprehensions.lists_built_by_loops(node, self.ctx)}
        self.func = node
        self.stackable_lists = normalize_comprehensions.stackable_lists(node, self.ctx)
        self.bound_lists = set()
        self.masks = loop_dataflow.mask_names(node, self.ctx)
        self.list_names = stack_tensor_lists.list_names(node, self.ctx) | \
            gather_keyed_reads.free(self.list_names, node)  # a nested function reads them too
        # a nested function reads the enclosing function's containers it does not bind
        self.host_containers = gather_keyed_reads.host_containers(node) | \
            gather_keyed_reads.free(self.host_containers, node)
        self.iterators = materialize_iterators.iterator_names(node, self.ctx)
        self.generic_visit(node)
        if self.bound_lists:
            normalize_comprehensions.bound_list_consumers(node, self.bound_lists, self.ctx)
        (self.live, self.numbers, self.filled, self.arrays, self.divisions, self.buildable_lists,
         self.func, self.stackable_lists, self.bound_lists, self.masks, self.list_names,
         self.host_containers, self.iterators, self.local_defs, self.reduced_next) = outer
        return node

    def visit_If(self, node: ast.If) -> ast.AST:
        # (``statements``: a loop's visit may give several statements, spliced in)
        if is_vectorized_guard(node):  # already vectorized (second run): leave the original
            node.body = self.statements(node.body)
            return node
        if counted_whiles_to_ranges.is_counted_form(node):  # ... and a counted `while` loop
            node.body = self.statements(node.body)
            return node
        if is_as_written(node):  # ... and the loop a vectorized branch runs as written
            node.orelse = self.statements(node.orelse)
            return node
        return _visit_branches(self, node, stack_tensor_lists.narrowed_lists(node.test, self.ctx))

    def visit_While(self, node: ast.While) -> ast.AST:
        self.generic_visit(node)
        why = ast_marks.get(node, ast_marks.NOT_COUNTED)
        self.add_loop(node.lineno, False, "kept", f"{why}; not distributed: {_WHILE_NOT_SPLIT}",
                      node)
        return node

    def visit_For(self, node: ast.For) -> ast.AST:
        masked = None if self.depth else _whole_loop_form(self, node) or _pairs_form(self, node)
        if masked is not None:
            return masked
        original, twin = clone(node), self._twin(node)
        before = (len(self.ctx.report.loops), set(self.seen), set(self.bound_lists))
        index = _int_index(node, self.ctx)
        self._visit_inner(node, index, self.depth + 1)  # inner loops first
        live = _live(self, node)
        after, divided = self.divisions.get(node, (None, {}))
        numbers = self.numbers.get(node, {})
        known = dict(zeros=loop_dataflow.zeros(numbers), numbers=dict(numbers), masks=self.masks,
                     divided=divided, inner=bool(self.depth), local_defs=self.local_defs,
                     sole_divisors=divisions_by_counters.sole_divisors(self.func, node, divided),
                     buildable_lists=self.buildable_lists.get(node, set()),
                     lists_read_in_part=normalize_comprehensions.lists_read_in_part(
                         node, self.func, self.ctx, self.around[-1] if self.around else None),
                     outer_indices=set(self.outer_indices), outer_bounds=dict(self.outer_bounds),
                     outer_binds=_bound_around(self.around[-1], node) if self.around else set(),
                     host_arrays=self.arrays.get(node, {}))
        try:
            # lists stacked by this plan, a distributed loop's and a scan's
            plan = vectorize(new_plan(node, live, self.ctx, **_lists(self),
                                      **known), self.ctx)
        except Unsupported as exc:
            # kept whole: its linear recurrences may become scans ...
            scanned = linear_recurrences_to_scans.scan(node, live, self.ctx, vectorize, **known,
                                                       **_lists(self))
            if scanned is not None:
                self.add_loop(node.lineno, True, "scan", _scan_why(scanned, self.ctx)
                              + _runs_when(scanned.check, scanned.stacked,
                                           user_names=scanned.rest.user_names,
                                           written=self.getattrs), scanned.rest)
                self.bound_lists |= scanned.rest.bound_lists  # the rest's appends, stacked
                return self._averaged(scanned.rest, after, _guarded(
                    scanned.check, node.lineno, scanned.stmts, original, node))
            # ... or its vectorizable statements may still leave it (loop fission), unless it
            # appends to a list read in part: the hoisted values' batched backward would also
            # run for the items the original never differentiates
            fission = distribute_loops.distribute(node, live, self.masks, self.ctx, vectorize,
                                                  {**_lists(self), "numbers": known["numbers"]})
            if known["lists_read_in_part"] and not isinstance(fission, str):
                fission = "appends to " + ", ".join(
                    f"`{n}`" for n in sorted(known["lists_read_in_part"])) + \
                    ", read in part after the loop"
            if isinstance(fission, str):
                node = _inner_loops_again(self, node, twin, index, before) or node
                self.add_loop(node.lineno, False, "kept",
                              f"{exc.reason}; not distributed: {fission}", node)
                return node
            check = fission.plan.checks.expr()
            fp = fission.plan
            self.add_loop(node.lineno, True, "distributed", fission.reason + _runs_when(
                check, fp.stacked, fp.gathered, numbers=fp.number_lists, written=self.getattrs,
                windows=fp.windows, arrays=fp.arrays, ints=fp.index_lists,
                floats=fp.float_lists),
                fp)
            guarded = _guarded(check, node.lineno, fission.stmts, original, node)
            return fission.plan.prelude + [guarded] if fission.plan.prelude else guarded
        # (before its own entry: the inner loops' entries are the last ones)
        original = _as_written_again(self, node, twin, index, before,
                                     _proven(plan.checks.expr())) or original
        check = _reported(self, plan, node.lineno, "")
        vectorized = _guarded(check, node.lineno, plan.stmts, original, node)
        self.bound_lists |= plan.bound_lists
        # for an outer loop that inlines this one
        ast_marks.put(vectorized, ast_marks.BOUND_LISTS, plan.bound_lists)
        return self._averaged(plan, after, vectorized)

    def _visit_inner(self, node: ast.For, index: str | None, depth: int) -> None:
        self.outer_indices += [index] if index else []
        enclosing = self.outer_bounds
        self.outer_bounds = {**enclosing, **outer_dependent_ranges_to_masks.index_bounds(
            node, self.ctx)}
        outer, self.depth = self.depth, depth
        self.around.append(node)
        self.generic_visit(node)
        self.around.pop()
        self.depth = outer
        self.outer_bounds = enclosing
        del self.outer_indices[len(self.outer_indices) - bool(index):]

    def _twin(self, node: ast.For) -> ast.For | None:
        """A copy of ``node``, with the facts of the loops in it, when it has inner loops or
        comprehensions: if ``node`` is kept, they are planned again in the copy."""
        if not any(isinstance(n, (ast.For, *normalize_comprehensions.COMPREHENSIONS))
                   for s in node.body + node.orelse for n in walk(s)):
            return None
        twin = clone(node)
        for a, b in zip(walk(node), walk(twin)):
            for facts in (self.live, self.numbers, self.arrays, self.divisions,
                          self.buildable_lists):
                if a in facts:
                    facts[b] = facts[a]
        return twin

    def _averaged(self, plan: LoopPlan, after: ast.stmt | None, vectorized: ast.If) -> ast.AST:
        """``vectorized``; when it leaves means, ``return loss / B`` after it becomes
        ``return loss if _averaged else loss / B`` (the original left the sum in ``loss``), and
        likewise for the sums it divided by counters (``divisions_by_counters``)."""
        flags = divisions_by_counters.divide(after, plan) if plan.quotients else []
        if plan.averaged:
            _DivideUnlessAveraged(plan.averaged, plan.averaged_flag, self.ctx).visit(after)
            flags.append(plan.averaged_flag)
        if not flags:
            return plan.prelude + [vectorized] if plan.prelude else vectorized
        return [s for f in flags for s in replace("f = False", loc=vectorized, f=f)] \
            + plan.prelude + [vectorized]

    def visit_Assign(self, node: ast.stmt) -> ast.AST | None:
        if node in self.absorbed:  # the reduction of the list bound just before
            return None
        reader = self.reduced_next.get(node)
        if reader is not None and node.targets[0].id not in self.stackable_lists:
            merged = normalize_comprehensions.reduced_where_read(node, reader)
            new = self._comprehension(merged)
            if new is merged:  # kept (and reported): both statements run as written
                return node
            self.absorbed.add(reader)
            return new
        return self._comprehension(node)

    visit_AugAssign = visit_Return = visit_Expr = visit_Assign

    def _comprehension(self, node: ast.stmt) -> ast.AST:
        """``sum(f(i) for i in ...)`` and friends: vectorized as the equivalent loop."""
        found = normalize_comprehensions.to_loop(node, self.ctx, self.stackable_lists)
        if found is None:  # a list the function needs as a list: its loop may still be split
            split = None if self.depth else distribute_comprehensions.split_list(
                node, self.func, self.masks, _lists(self), self.ctx, vectorize)
            if isinstance(split, str):
                self.verdicts[(node.value.lineno, node.value.col_offset)] = split
            elif split is not None:
                return self._distributed(split[0], node.value, split[1], split[2], node)
            return self.generic_visit(node)
        init, loop, result, comp = found
        lineno = comp.lineno
        own = set().union(*(loop_dataflow.stores(s) for s in init))  # our own `_items = []`
        try:
            plan = vectorize(new_plan(loop, set(), self.ctx, own_lists=own, numbers=_numbers(init),
                                      local_defs=self.local_defs, **_lists(self)),
                             self.ctx)
        except Unsupported as exc:
            # its loop may still be split: the element's heavy operand hoisted
            fission = distribute_comprehensions.read_in_part(
                node, loop, init[0].targets[0].id, self.func, self.ctx) \
                or distribute_comprehensions.told(distribute_loops.distribute(
                    loop, loads(self.func) | own | loads(result), self.masks, self.ctx,
                    vectorize, _lists(self)), init, loop, comp)
            if not isinstance(fission, str):
                return self._distributed(fission, comp, init, result, node)
            self.kept(comp, exc.reason, lambda: fission)
            for other in _comprehensions(node):  # the statement runs as written
                self.kept(other, f"in the statement of the comprehension at line {lineno}, "
                                 "which is kept", lambda: "its statement runs as written")
            return node
        if plan.own_list_values:  # torch.stack(_items) -> the stacked values themselves
            init = []
            result = _UseStacked(plan.own_list_values, self.ctx).visit(result)
            if isinstance(result, ast.Assign) and not any(
                    v.host for v in plan.own_list_values.values()):
                self.bound_lists |= {t.id for t in result.targets if isinstance(t, ast.Name)
                                     and t.id in self.stackable_lists}
        self.seen.add((comp.lineno, comp.col_offset))
        check = _reported(self, plan, lineno, " (comprehension)")
        result = self._comprehension(result)  # the statement's next comprehension, if any
        guarded = _guarded(check, lineno, init + plan.stmts + [result], node, node)
        return plan.prelude + [guarded] if plan.prelude else guarded

    def _distributed(self, fission: distribute_loops.Fission, comp: ast.expr,
                     init: list[ast.stmt], result: ast.stmt, node: ast.stmt) -> ast.AST:
        """``node``, whose comprehension ``comp`` has the loop form ``init``, the loop
        ``fission`` split and the statement reading its ``result``: that form behind the
        hoisted loop's check."""
        check = fission.plan.checks.expr()
        self.add_loop(comp.lineno, True, "distributed", fission.reason + " (comprehension)"
                      + _runs_when(check, fission.plan.stacked, fission.plan.gathered,
                                   written=self.getattrs, windows=fission.plan.windows),
                      fission.plan)
        self.seen.add((comp.lineno, comp.col_offset))
        result = self._comprehension(result)  # the statement's next comprehension, if any
        guarded = _guarded(check, comp.lineno, init + fission.stmts + [result], node, node)
        return fission.plan.prelude + [guarded] if fission.plan.prelude else guarded



def _planned_again(v: "_Vectorizer", node: ast.For, twin: ast.For, index: str | None,
                   before: tuple) -> tuple[list, set, set]:
    """``twin``'s inner loops planned as if they were not inner, in ``node``'s place: they may
    stack and gather lists in front of themselves, in its body; the report entries, seen
    comprehensions and bound lists of their first plans (``before``: where those began)."""
    mark = before[0]
    first = (v.ctx.report.loops[mark:], v.seen, v.bound_lists)
    _, v.seen, v.bound_lists = before
    del v.ctx.report.loops[mark:]
    with _in_place_of(v.func, node, twin):
        v._visit_inner(twin, index, 0)
    return first


def _inner_loops_again(v: "_Vectorizer", node: ast.For, twin: ast.For | None, index: str | None,
                       before: tuple) -> ast.For | None:
    """For ``node`` kept: ``twin`` with its inner loops planned again (``_planned_again``: the
    loop around them runs as written, unlike inner loops of a vectorized loop), unless fewer
    of them are then vectorized; their first plans' entries dropped."""
    if twin is None or _block_of(v.func, node) is None:  # (the loop over selected pairs)
        return None
    first = _planned_again(v, node, twin, index, before)
    if sum(loop.vectorized for loop in v.ctx.report.loops[before[0]:]) < sum(
            loop.vectorized for loop in first[0]):  # never fewer than the first plans
        v.ctx.report.loops[before[0]:], v.seen, v.bound_lists = first
        return None
    return twin


def _as_written_again(v: "_Vectorizer", node: ast.For, twin: ast.For | None, index: str | None,
                      before: tuple, tensors: set[str]) -> ast.For | None:
    """For ``node`` vectorized behind a check proving ``tensors``: ``twin``, its branch as
    written, with its inner loops planned again (``_planned_again``: ``node``'s vectorized form
    never takes a list of lists, where an inner loop may still take each list, or its items
    as tensors), when one of them is then vectorized behind a check proving other tensors (one
    proving only ``tensors`` never holds there); each inner loop keeps one entry (``_merged``).
    None: the loop as written as it was."""
    # (an inner loop's branch as written is in a loop body)
    if twin is None or v.depth or _block_of(v.func, node) is None:
        return None
    point = v.ctx.namer.checkpoint()
    first = _planned_again(v, node, twin, index, before)
    again = v.ctx.report.loops[before[0]:]
    useful = any(_proven(g.test) - tensors for g in walk(twin) if is_vectorized_guard(g))
    merged = _merged(first[0], again if useful else [], node.lineno)
    if merged is None or not useful:
        v.ctx.report.loops[before[0]:] = merged or first[0]
        v.seen, v.bound_lists = first[1], first[2]
        # the names of what follows as if it had not been tried, but for the bound helpers
        # (bound once per function: later code may call them by those names)
        bound = set(v.ctx.bindings)
        v.ctx.namer.rollback((point[0] | bound, point[1] | (bound & v.ctx.namer.made)))
        return None
    v.ctx.report.loops[before[0]:] = merged
    v.seen |= first[1]
    v.bound_lists |= first[2]
    return twin


def _proven(check: ast.expr) -> set[str]:
    """What ``check`` proves to be tensors, as source text."""
    return {unparse(x) for x in proven_tensors(check)}


def _merged(first: list, again: list, line: int) -> list | None:
    """The entries of the inner loops of the vectorized loop at ``line``: ``first`` as part of
    its vectorized form, ``again`` in its branch as written; per inner loop the entry of the
    form it has there, or, when only the vectorized form at ``line`` holds it vectorized, that
    entry saying so (its run-time counts are that form's). None: the two do not pair up."""
    if not again:  # planned again to no avail: as part of that form only
        for f in first:
            if f.vectorized:
                f.reason += (f"; only within the vectorized form of line {line} (where that "
                             "loop runs as written, so does this one)")
        return first
    if [e.lineno for e in first] != [e.lineno for e in again]:
        return None
    merged = []
    for f, a in zip(first, again):
        if f.vectorized and not a.vectorized:
            f.reason += (f"; only within the vectorized form of line {line}: where that loop "
                         f"runs as written, this one is kept: {a.reason}")
            merged.append(f)
            continue
        if f.vectorized:
            a.reason += f"; within the vectorized form of line {line}, part of it"
        merged.append(a)
    return merged


def _quoted(reason: str, at: LoopPlan | ast.AST, ctx: PassContext) -> str:
    """``reason`` quoting only the user's code, as ``LoopPlan.quoted`` spells it on ``at`` (the
    loop's plan, else its node)."""
    plan = at if isinstance(at, LoopPlan) else LoopPlan(at, set(), namer=ctx.namer)
    return plan.quoted(rows_as_written(reason, plan))


def _lists(vectorizer: "_Vectorizer") -> dict[str, frozenset[str]]:
    """The lists a plan may stack or gather: none for an inner loop (its prelude would be a
    statement of the outer loop's body, which then keeps the outer loop)."""
    if vectorizer.depth:
        return {}
    return dict(list_names=vectorizer.list_names, host_containers=vectorizer.host_containers,
                iterators=vectorizer.iterators)


def _reported(vectorizer: "_Vectorizer", plan: LoopPlan, lineno: int, what: str) -> ast.expr:
    """The report entry of a vectorized loop; its runtime check."""
    check = plan.checks.expr()
    vectorizer.add_loop(lineno, True, _strategy(plan),
                        _why(plan, vectorizer.ctx) + what
                        + _runs_when(check, plan.stacked, plan.gathered, plan.user_names,
                                     plan.number_lists, vectorizer.getattrs, plan.windows,
                                     plan.arrays, plan.index_lists, plan.float_lists)
                        + plan.no_grad_reason, plan)
    return check


def _int_index(node: ast.For, ctx: PassContext) -> str | None:
    """The name ``for i in range(...)`` or ``for i, x in enumerate(...)`` binds to ints."""
    fn = resolve_call(node.iter.func, ctx) if isinstance(node.iter, ast.Call) else None
    target = node.target.elts[0] if fn == "enumerate" and isinstance(node.target, ast.Tuple) \
        and node.target.elts else node.target if fn == "range" else None
    return target.id if isinstance(target, ast.Name) else None


def _live(vectorizer: "_Vectorizer", node: ast.For) -> set[str]:
    """The names read after ``node``; for an unseen loop all names the function reads (not a
    default: it walks the function)."""
    live = vectorizer.live.get(node)
    return loads(vectorizer.func) if live is None else live


def _whole_loop_form(vectorizer: "_Vectorizer", node: ast.For) -> ast.If | None:
    """``node`` as one comparison into the padding mask it fills (``length_masks_to_compares``)
    or as one scatter of its last writes (``last_writes_to_scatters``), reported; None when it
    is neither."""
    live = _live(vectorizer, node)
    whole = length_masks_to_compares.rewrite(node, vectorizer.filled.get(node, {}), live,
                                             vectorizer.ctx) \
        or last_writes_to_scatters.rewrite(node, live, vectorizer.ctx)
    if whole is None:
        return None
    vectorizer.add_loop(node.lineno, True, "batched",
                        whole.why + _runs_when(whole.check, {}, written=vectorizer.getattrs), node)
    return _guarded(whole.check, node.lineno, whole.stmts, clone(node), node)


def _pairs_form(vectorizer: "_Vectorizer", node: ast.For) -> list[ast.stmt] | None:
    """``node`` as the loop over the pairs its inner test selects, that loop vectorized
    (``pair_tests_to_selected_pairs``), reported; None when it is not such a nest or that
    loop is kept (its report entries dropped)."""
    v, ctx = vectorizer, vectorizer.ctx
    pairs = pair_tests_to_selected_pairs.rewrite(node, _live(v, node), ctx)
    if pairs is None:
        return None
    # what holds around the nest holds around the loop standing for it; not a division by
    # the trip count after it, which counts the outer loop's iterations
    for facts in (v.live, v.numbers, v.filled, v.buildable_lists):
        if node in facts:
            facts[pairs.loop] = facts[node]
    mark = (len(ctx.report.loops), set(v.seen), set(v.bound_lists))
    done = v.visit_For(pairs.loop)
    done = done if isinstance(done, list) else [done]
    entry = next((lp for lp in ctx.report.loops[mark[0]:] if lp.lineno == pairs.loop.lineno),
                 None)
    if entry is None or not entry.vectorized:
        del ctx.report.loops[mark[0]:]
        _, v.seen, v.bound_lists = mark
        return None
    v.add_loop(node.lineno, True, entry.strategy, pairs.why + "; when the items the test reads "
               "are of 1-D tensors, in range, else the loops run as written", node)
    # (no mean's flag among them: the loop has no division after it, see above)
    unpack = replace("pi, pj = p", loc=node, pi=pairs.loop.iter.args[0].id,
                     pj=pairs.loop.iter.args[1].id, p=pairs.pairs)
    return [_guarded(pairs.check, node.lineno, unpack + done, clone(node), node)]


def _guarded(check: ast.expr, lineno: int, stmts: list[ast.stmt], original: ast.stmt,
             loc: ast.stmt) -> ast.If:
    """``if <check>: <marker>; <stmts> else: <original>``."""
    marker = ast.Expr(ast.Constant(MARKER.format(lineno)))
    return ast.copy_location(ast.If(test=check, body=[marker] + stmts, orelse=[original]), loc)


def _strategy(plan: LoopPlan) -> str:
    kinds = {e.kind for e in plan.facts.effects.values()}
    if "scan" in kinds:
        fam = {e.family for e in plan.facts.of_kind("scan")}
        return "cumprod" if fam == {"prod"} else "cumsum"
    return "vmap" if plan.unbatched else "batched"


@contextlib.contextmanager
def _in_place_of(func: ast.FunctionDef, node: ast.stmt, twin: ast.stmt):
    """``twin`` in ``node``'s place in ``func`` meanwhile: the analyses of what is read after a
    statement of ``twin`` find it in the function (a statement only a copy holds is in none)."""
    block = _block_of(func, node)
    at = next(k for k, s in enumerate(block) if s is node)
    block[at] = twin
    try:
        yield
    finally:
        block[at] = node


def _block_of(func: ast.FunctionDef, node: ast.stmt) -> list[ast.stmt] | None:
    """The statement list of ``func`` holding ``node``; None for a loop only a copy holds (the
    loop over selected pairs ``_pairs_form`` made)."""
    return next((b for n in walk(func) if isinstance(n, ast.stmt)
                 for b in loop_dataflow.child_blocks(n) if any(s is node for s in b)), None)


def _without_reads(check: ast.expr, names: set[str]) -> ast.expr | None:
    """``check`` without its conjuncts that read ``names`` (a number list's kind, never a
    tensor: such a conjunct always holds), None when none is left."""
    parts = check.values if isinstance(check, ast.BoolOp) and isinstance(check.op, ast.And) \
        else [check]
    kept = [p for p in parts if not loads(p) & names]
    return None if not kept else kept[0] if len(kept) == 1 else ast.BoolOp(ast.And(), kept)


def _why(plan: LoopPlan, ctx: PassContext) -> str:
    """The report's account of what leaves the iterations and how."""
    parts = []
    for e in plan.facts.effects.values():
        if e.name in plan.own_lists:  # a comprehension's own list
            parts.append("items stacked")
            continue
        shown = plan.user_names.get(e.name, e.name)
        if shown in ctx.namer.made:  # e.g. a counter of empty selections
            continue
        family = "mean" if e.name in plan.averaged else e.family
        write = "written as a slice" if e.name not in plan.scattered else \
            "written by advanced indexing" if any(
                is_name(x, plan.iteration.index)
                for x in loop_dataflow.write_entries(write_target(e.stmt))) \
            else "accumulated with index_put_"
        desc = {"acc": f"`{e.name}` {family}-reduced", "scan": f"`{e.name}` running {e.family}",
                "append": f"`{shown}` appends stacked", "write": f"`{shown}` {write}"}
        parts.append(desc[e.kind])
    parts += [f"`{s} / {d}` divided on the device" for s, d in plan.divided.items()
              if s in plan.quotients]
    if plan.uses_where:
        parts.append("tensor conditions as torch.where masks")
    parts += [f"the `{t}` branch for every iteration, its condition checked once (else the loop "
              "runs as written)"
              for t in plan.taken_branches]
    parts += [f"the other branch only as written: {why}" for why in plan.switched_writes]
    if plan.first_item_values:
        names = ", ".join(f"`{n}`" for n in plan.first_item_values)
        parts.append(f"the inner loops' checks on {names} evaluated on the first item (the same "
                     "types and shapes in every iteration; else the loop runs as written)")
    if plan.unbatched:
        parts.append(f"vmap: {plan.unbatched}")
    elif plan.batched_if is not None:  # other ranks or dtypes than the usual
        # the user's names of stacked lists (an attribute's as the attribute)
        users = _without_reads(rename(clone(plan.batched_if), {
            s: plan.user_names.get(n, n) for s, n in plan.stacked.items()}), plan.number_kinds)
        shown = users is not None and plan.quoted(f"`{unparse(users)}`")
        if shown and shown.startswith("`"):
            parts.append(f"vmap where {shown} does not hold")
        elif shown:  # a check on the rewrite's own values (a scan's states, say)
            parts.append("vmap where the batched form's check does not hold")
    return "; ".join(dict.fromkeys(parts)) or "no effects"


def _scan_why(scanned: linear_recurrences_to_scans.Scan, ctx: PassContext) -> str:
    states = ", ".join(f"`{n}`" for n in scanned.states if n not in scanned.sums)
    sums = ", ".join(f"`{n}`" for n in scanned.sums)
    return ((f"{states} = a * {states} + b: every step's state by one parallel scan (log depth); "
             if states else "")
            + (f"{sums} = {sums} + b, read in its step: every step's running sum by one "
               "cumsum; " if sums else "")
            + f"the rest: {_why(scanned.rest, ctx)}"
            + (scan_python_numbers.why() if scanned.numbers else "")
            + (f"; {', '.join(f'`{n}`' for n in scanned.alike)}: scanned when the tensors its "
               "step reads have one floating dtype, else the loop runs as written (factors "
               "multiplied out would round in the narrower one, or raise on a bool mask; after a "
               "reset the loop's states take the narrower one)" if scanned.alike else ""))


def _local_defs(func: ast.FunctionDef) -> dict[str, ast.FunctionDef]:
    """The functions nested in ``func`` by name, each name bound once (by its ``def``)."""
    defs = [n for n in walk(func) if isinstance(n, ast.FunctionDef) and n is not func]
    stores = [n.id for n in walk(func) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)]
    names = [d.name for d in defs]
    return {d.name: clone(d) for d in defs if names.count(d.name) == 1 and d.name not in stores}


def _numbers(init: list[ast.stmt]) -> dict[str, int | float]:
    """The names a comprehension's loop form starts from Python number literals (``sum``'s
    ``_acc = 0``), with their numbers: a sum from one has its items' dtype."""
    return {s.targets[0].id: v for s in init
            if type(v := batch_values.literal(s.value)) in (int, float)}


def _runs_when(check: ast.expr, stacked: dict[str, str],
               gathered: dict[str, str] | None = None, user_names: dict[str, str] | None = None,
               numbers: set[str] = frozenset(), written: frozenset[str] = frozenset(),
               windows: dict[str, str] | None = None, arrays: dict[str, str] | None = None,
               ints: set[str] = frozenset(), floats: set[str] = frozenset()) -> str:
    """The report names what the runtime check needs: for other inputs (a list of heads, say)
    the loop runs as written, and the report must not suggest otherwise. A stacked list is
    named as the user's list, with the Python numbers it may hold too (``numbers``, of them
    ``floats``: floats only; ``ints``), a tensor
    written through an attribute as the attribute, an attribute the rewrite reads with ``getattr``
    as the attribute (a ``getattr`` call of ``written``, the user's own, as written), the view
    of moving slices (``windows``) as the slices, the tensor of a numpy array's ints
    (``arrays``) as the array."""
    user_names = {**(user_names or {}), **(windows or {}), **(arrays or {})}
    shown = [unparse(attribute_writes_to_names.unguarded(x, written))
             for x in proven_tensors(check)]
    found = sorted({user_names.get(n, n) for n in shown})
    gathered = gathered or {}
    slices = [f"`{n}`" for n in found if n in (windows or {}).values()]
    arrays_shown = [f"`{n}`" for n in found if n in (arrays or {}).values()]
    names = [f"`{n}`" for n in found if n not in stacked and n not in gathered
             and f"`{n}`" not in slices + arrays_shown]
    shown = {n: user_names.get(s, s) for n, s in stacked.items()}  # an attribute's list as it
    held = {"": [], "Python numbers all int or all float": [], "Python floats": [],
            "Python ints": []}  # what else the user's list may hold -> the lists
    for n in (n for n in found if n in stacked):
        name = stacked[n]
        held["" if name not in numbers | ints else "Python ints" if name not in numbers
             else "Python floats" if name in floats
             else "Python numbers all int or all float"].append(f"`{shown[n]}`")
    reads = [f"`{gathered[n]}`" for n in found if n in gathered]
    if not names and not any(held.values()) and not reads and not slices and not arrays_shown:
        return ""
    parts = []
    if names:
        parts.append(f"{', '.join(names)} {'is a tensor' if len(names) == 1 else 'are tensors'}")
    for what, lists in ((w, ls) for w, ls in held.items() if ls):
        tensors = "tensors of one shape, dtype and device"
        parts.append(f"{', '.join(lists)} {'is' if len(lists) == 1 else 'are'} a tensor" + (
            f", or a list or tuple of {tensors} or of {what} (stacked)" if what
            else f" or a list or tuple of {tensors} (stacked)"))
    if reads:
        parts.append(f"the items {', '.join(reads)} over the loop are tensors of one shape, dtype "
                     "and device (gathered and stacked)")
    if arrays_shown:
        arrays_are = "is a 1-D numpy array" if len(arrays_shown) == 1 else "are 1-D numpy arrays"
        parts.append(f"{', '.join(arrays_shown)} {arrays_are} of ints (iterated as their int64 "
                     "tensor)")
    if slices:
        parts.append(f"the slices {', '.join(slices)} lie inside their tensor in every iteration "
                     "(one view of them all)")
    return f"; when {' and '.join(parts)}, else the loop runs as written"


class _UseStacked(Transformer):
    """``torch.stack(_items)`` over a comprehension's list -> the stacked values
    (``loop_rules.LIST_CONSUMERS``); ``xs = _items`` -> ``xs = <the stacked values>``, or their
    ``.tolist()`` for host values (Python numbers in the original's list)."""

    def __init__(self, stacked: dict[str, OwnList], ctx: PassContext):
        self.stacked = stacked
        self.ctx = ctx

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in self.stacked:
            own = self.stacked[node.args[0].id]
            table = rules.LIST_CONSUMERS_OF_HOST_VALUES if own.host else rules.LIST_CONSUMERS
            fn = resolve_call(node.func, self.ctx)
            if fn not in table:  # a mean helper's call: it takes the stacked values as they are
                return self.generic_visit(node)
            dim = normalize_comprehensions.joining_dim(node, self.ctx)
            if dim:  # joined along another dim than the stacked one
                at = dim - 1 if dim < 0 and fn == "torch.cat" else dim
                return replace(rules.LIST_CONSUMERS_ALONG_DIM[fn], loc=node, a=ast.Constant(at),
                               b=ast.Constant(at + 1), torch_name=self.ctx.torch_name,
                               v=own.values)
            return replace(table[fn], loc=node, torch_name=self.ctx.torch_name, v=own.values)
        return self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id not in self.stacked:
            return node
        own = self.stacked[node.id]
        return replace("v.tolist()" if own.host else "v", loc=node,
                       torch_name=self.ctx.torch_name, v=own.values)


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
