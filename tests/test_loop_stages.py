"""Golden before/after tests of every stage of ``vectorize_loops.LOOP_STAGES``.

Each case: a function whose first loop is planned up to the stage, the plan's fields the stage
writes as readable text before the stage, and after it (or its refusal). Every stage has a case
it changes nothing in, or refuses (except the stages that always fill their field: their second
case shows the other form). ``inline_helper_calls`` needs its helper in a real file: its case is
a test of its own below.
"""
from __future__ import annotations

import pytest

from passes.errors import Unsupported
from passes.loops import (asserts_to_counters, attribute_writes_to_names, batch_both_loop_levels,
                          contradicting_checks,
                          batch_loop_bodies, check_body, check_mapped_body,
                          classify_effects, cleared_positions_to_masks,
                          conditional_expressions_to_branches,
                          conditioned_writes_to_functional, divisions_by_counters,
                          effects_to_outputs, element_slices_to_indices, fold_accumulators,
                          gather_keyed_reads,
                          hoist_calls_under_index_tests, hoist_invariant_checks,
                          helper_effects, host_array_writes_run_as_written,
                          host_roundtrips_to_tensor_ops, inline_helper_calls,
                          inline_inner_loops, rounded_gradients_run_as_written,
                          index_tests_to_selected_indices, index_tuples_to_tensors,
                          index_value_checks_to_ranges,
                          inplace_writes_to_functional,
                          invariant_branches_to_checks, invariant_values_take_no_grad, iteration,
                          last_values_after_loop,
                          masked_selections_to_where, masked_selects_to_selections,
                          masked_writes_to_where,
                          materialize_iterators, merge_branch_appends, no_grad_blocks_to_detach,
                          number_list_operands,
                          data_attributes_to_detach,
                          split_tuple_assignments,
                          module_list_linears, module_loss_calls,
                          class_selections_to_rows, class_selections_to_segments,
                          merge_chained_indexing, outer_dependent_ranges_to_masks, outline_body,
                          picked_rows_to_tables,
                          promoting_folds_run_as_written,
                          excluded_items_to_masks, ragged_slices_to_masks,
                          raise_on_empty_selections, record_items_run_as_written,
                          removed_index_lists_to_masks,
                          rename_rebound_loop_variables, row_index_adds_to_writes,
                          row_slices_to_params, runtime_checks, sliced_selections_to_masks,
                          sink_own_item_selections, sorts_read_at_ends, stack_tensor_lists,
                          tensor_branches_to_where, unit_slices_to_index, vectorize_loops,
                          moving_slices_to_windows, newaxis_to_none, identity_tests_of_items)
from passes.pipeline import pass_name
from tests.helpers import load_module
from tests.loop_helpers import context
from tests.loop_stage_helpers import plan_at, plan_before, show

# (stage, source, fields shown, before the stage, after it)
CASES = [
    (attribute_writes_to_names, """
def f(storage, v):
    for t in range(v.shape[0]):
        storage.returns[t] = v[t] * storage.scale + storage.returns[t]
    return storage.returns
""", ('body', 'prelude'),
     """
# body
storage.returns[t] = v[t] * storage.scale + storage.returns[t]
# prelude
""",
     """
# body
_returns[t] = v[t] * storage.scale + _returns[t]
# prelude
_returns = getattr(storage, 'returns', None)
"""),
    (attribute_writes_to_names, """
def f(storage, v):
    for t in range(v.shape[0]):
        storage.returns[t] = v[t]
        storage.update(t)
    return storage.returns
""", ('body', 'prelude'),
     """
# body
storage.returns[t] = v[t]
storage.update(t)
# prelude
""",
     """
# body
storage.returns[t] = v[t]
storage.update(t)
# prelude
"""),
    (iteration, """
def f(xs, w):
    loss = 0
    for k, x in enumerate(xs, 1):
        loss += x.sum() * k
    return loss
""", ('iteration', 'body'),
     """
# iteration
# body
""",
     """
# iteration
k in range(1, 1 + len(xs), 1); x from xs
# body
loss += x.sum() * k
"""),
    (iteration, """
def f(xs):
    loss = 0
    for x in xs:
        loss += x.sum()
    else:
        loss = 1
    return loss
""", ('iteration', 'body'),
     """
# iteration
# body
""",
     """
Unsupported: `for ... else`
"""),
    (host_array_writes_run_as_written, """
def f(t, h):
    n = len(t)
    R = np.zeros([n, n], dtype=int)
    for i in range(n):
        for j in range(n):
            R[i, j] = t[j] >= t[i]
    return (h - torch.log((torch.exp(h) * torch.FloatTensor(R)).sum(1))).sum()
""", ('iteration',),
     """
# iteration
i in range(0, n, 1)
""",
     """
Unsupported: it writes into `R`, a numpy array (`np.zeros([n, n], dtype=int)`, line 3), not a tensor
"""),
    # a tensor written, or a numpy array the loop binds again: no change
    (host_array_writes_run_as_written, """
def f(t, h):
    n = len(t)
    R = torch.zeros(n, n)
    S = np.zeros(n)
    for i in range(n):
        S = torch.zeros(n)
        S[i] = 2
        R[i] = (t >= t[i]) * S
    return (h - torch.log((torch.exp(h) * R).sum(1))).sum()
""", ('iteration',),
     """
# iteration
i in range(0, n, 1)
""",
     """
# iteration
i in range(0, n, 1)
"""),
    (record_items_run_as_written, """
def f(targets, pred):
    n = 0
    for i in range(len(targets)):
        n += targets[i]["boxes"].shape[0]
    return pred.sum() / n
""", ('iteration', 'body'),
     """
# iteration
i in range(0, len(targets), 1)
# body
n += targets[i]['boxes'].shape[0]
""",
     """
Unsupported: its items are read at the key `'boxes'`: dicts, not tensors
"""),
    (record_items_run_as_written, """
def f(preds, w):
    loss = 0
    for p in preds:
        loss += (p.T @ p).sum() * w["scale"] / p.shape[0]
    return loss
""", ('iteration', 'body'),
     """
# iteration
_i in range(0, len(preds), 1); p from preds
# body
loss += (p.T @ p).sum() * w['scale'] / p.shape[0]
""",
     """
# iteration
_i in range(0, len(preds), 1); p from preds
# body
loss += (p.T @ p).sum() * w['scale'] / p.shape[0]
"""),
    (stack_tensor_lists, """
def f(preds, targets, w):
    loss = 0
    for i, (p, t) in enumerate(zip(preds, targets)):
        loss += ((p - t) ** 2).mean() * w[i]
    return loss
""", ('checks', 'prelude', 'outline'),
     """
# checks
isinstance(w, torch.Tensor) and min(len(preds), len(targets)) <= w.shape[0] and isinstance(preds, torch.Tensor) and preds.dim() > 0 and isinstance(targets, torch.Tensor) and targets.dim() > 0 and isinstance(min(len(preds), len(targets)), int) and min(len(preds), len(targets)) > 0
# prelude
_w_kind = _number_kind(w)
# outline
if targets.dim() == preds.dim() and w.dim() == 1 and (not isinstance(_w_kind, torch.Tensor)) or (not isinstance(_w_kind, torch.Tensor) or (w.dim() >= 2 and w.dim() >= _w_kind.dim() + 1)): ...
loss = _outs[0]
""",
     """
# checks
isinstance(_w_stacked, torch.Tensor) and min(len(_preds_stacked), len(_targets_stacked)) <= _w_stacked.shape[0] and isinstance(_preds_stacked, torch.Tensor) and _preds_stacked.dim() > 0 and isinstance(_targets_stacked, torch.Tensor) and _targets_stacked.dim() > 0 and isinstance(min(len(_preds_stacked), len(_targets_stacked)), int) and min(len(_preds_stacked), len(_targets_stacked)) > 0
# prelude
_w_kind = _number_kind(w)
_preds_stacked = _stack_items(tuple(preds)) if (type(preds) is list or (isinstance(preds, tuple) and type(preds).__getitem__ is tuple.__getitem__ and (type(preds).__iter__ is tuple.__iter__) and (type(preds).__len__ is tuple.__len__))) and len(preds) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == preds[0].shape and (_v.dtype == preds[0].dtype) and (_v.device == preds[0].device) for _v in preds)) else preds
_targets_stacked = _stack_items(tuple(targets)) if (type(targets) is list or (isinstance(targets, tuple) and type(targets).__getitem__ is tuple.__getitem__ and (type(targets).__iter__ is tuple.__iter__) and (type(targets).__len__ is tuple.__len__))) and len(targets) > 0 and all((isinstance(_v_1, torch.Tensor) and _v_1.shape == targets[0].shape and (_v_1.dtype == targets[0].dtype) and (_v_1.device == targets[0].device) for _v_1 in targets)) else targets
_w_stacked = _stack_items(tuple(w)) if (type(w) is list or (isinstance(w, tuple) and type(w).__getitem__ is tuple.__getitem__ and (type(w).__iter__ is tuple.__iter__) and (type(w).__len__ is tuple.__len__))) and len(w) > 0 and all((isinstance(_v_2, torch.Tensor) and _v_2.shape == w[0].shape and (_v_2.dtype == w[0].dtype) and (_v_2.device == w[0].device) for _v_2 in w)) else _number_rows(w)
# outline
if _targets_stacked.dim() == _preds_stacked.dim() and _w_stacked.dim() == 1 and (not isinstance(_w_kind, torch.Tensor)) or (not isinstance(_w_kind, torch.Tensor) or (_w_stacked.dim() >= 2 and _w_stacked.dim() >= _w_kind.dim() + 1)): ...
loss = _outs[0]
"""),
    (stack_tensor_lists, """
def f(preds, targets, heads):
    loss = 0
    for i in range(preds.shape[0]):
        loss += ((preds[i] - targets[i]) * heads).sum()
    return loss + targets.sum()
""", ('prelude',),
     """
# prelude
""",
     """
# prelude
"""),
    (number_list_operands, """
def f(x, weight):
    loss = 0
    for i in range(x.shape[0]):
        d = x[i].sum()
        loss += d * weight[i] + weight[i] / d
    return loss
""", ('body', 'prelude'),
     """
# body
d = x[i].sum()
loss += d * weight[i] + weight[i] / d
# prelude
""",
     """
# body
d = x[i].sum()
loss += _number_op(d, weight[i], _weight_kind, 'mul', False) + _number_op(d, weight[i], _weight_kind, 'truediv', True)
# prelude
_weight_kind = _number_kind(weight)
"""),
    # a module's list of weights: read through a name bound to the attribute
    (number_list_operands, """
def f(x, cfg):
    loss = 0
    for i in range(x.shape[0]):
        d = x[i].sum()
        loss += d * cfg.weight[i]
    return loss
""", ('body', 'prelude'),
     """
# body
d = x[i].sum()
loss += d * cfg.weight[i]
# prelude
""",
     """
# body
d = x[i].sum()
loss += _number_op(d, _weight[i], _weight_kind, 'mul', False)
# prelude
_weight = getattr(cfg, 'weight', None)
_weight_kind = _number_kind(_weight)
"""),
    # ... not when the object is handed to a call (it may bind the attribute again)
    (number_list_operands, """
def f(x, cfg):
    loss = 0
    for i in range(x.shape[0]):
        d = x[i].sum()
        loss += d * cfg.weight[i] + g(cfg)
    return loss
""", ('body', 'prelude'),
     """
# body
d = x[i].sum()
loss += d * cfg.weight[i] + g(cfg)
# prelude
""",
     """
# body
d = x[i].sum()
loss += d * cfg.weight[i] + g(cfg)
# prelude
"""),
    # `1 - weight[i]` is a Python number in the original: the list stays a list
    (number_list_operands, """
def f(x, weight):
    loss = 0
    for i in range(x.shape[0]):
        loss += x[i].sum() * (1 - weight[i])
    return loss
""", ('body', 'prelude'),
     """
# body
loss += x[i].sum() * (1 - weight[i])
# prelude
""",
     """
# body
loss += x[i].sum() * (1 - weight[i])
# prelude
"""),
    (gather_keyed_reads, """
def f(outputs, y):
    part = {i: o for i, o in enumerate(outputs)}
    loss = 0
    for i in range(5):
        loss += ce(part[i + 1], y)
    return loss
""", ('prelude', 'body'),
     """
# prelude
# body
loss += ce(part[i + 1], y)
""",
     """
# prelude
try:
    _part_rows = [part[i + 1] for i in range(5)]
except Exception:
    _part_rows = None
_part_rows = _stack_items(tuple(_part_rows)) if (type(_part_rows) is list or (isinstance(_part_rows, tuple) and type(_part_rows).__getitem__ is tuple.__getitem__ and (type(_part_rows).__iter__ is tuple.__iter__) and (type(_part_rows).__len__ is tuple.__len__))) and len(_part_rows) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == _part_rows[0].shape and (_v.dtype == _part_rows[0].dtype) and (_v.device == _part_rows[0].device) for _v in _part_rows)) else _part_rows
# body
loss += ce(_part_rows[i], y)
"""),
    (gather_keyed_reads, """
def f(outputs, frames, y):
    loss = 0
    for f in frames:
        loss += (outputs[('color', f)] - y).abs().mean()
    return loss
""", ('iteration', 'prelude', 'body'),
     """
# iteration
_i in range(0, len(frames), 1); f from frames
# prelude
# body
loss += (outputs['color', f] - y).abs().mean()
""",
     """
# iteration
_i in range(0, len(frames), 1)
# prelude
try:
    _outputs_rows = [outputs['color', f] for f in frames]
except Exception:
    _outputs_rows = None
_outputs_rows = _stack_items(tuple(_outputs_rows)) if (type(_outputs_rows) is list or (isinstance(_outputs_rows, tuple) and type(_outputs_rows).__getitem__ is tuple.__getitem__ and (type(_outputs_rows).__iter__ is tuple.__iter__) and (type(_outputs_rows).__len__ is tuple.__len__))) and len(_outputs_rows) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == _outputs_rows[0].shape and (_v.dtype == _outputs_rows[0].dtype) and (_v.device == _outputs_rows[0].device) for _v in _outputs_rows)) else _outputs_rows
# body
loss += (_outputs_rows[_i] - y).abs().mean()
"""),
    (gather_keyed_reads, """
def f(x, perm):
    loss = 0
    for k, t in enumerate(perm):
        loss += x[t].sum()
    return loss
""", ('iteration', 'prelude', 'body'),
     """
# iteration
k in range(0, len(perm), 1); t from perm
# prelude
# body
loss += x[t].sum()
""",
     """
# iteration
k in range(0, len(perm), 1); t from perm
# prelude
# body
loss += x[t].sum()
"""),
    (gather_keyed_reads, """
def f(outputs):
    part = {}
    for i in range(6):
        part[i] = outputs[i]
    return part
""", ('prelude',),
     """
# prelude
""",
     """
Unsupported: `part[i] = ...` writes into `part`, a list or dict the function builds: the vectorized form writes tensors only
"""),
    (index_tuples_to_tensors, """
def f(x, n):
    total = 0
    for p in itertools.permutations(range(n)):
        total = total + (x[p[0]] - x[p[1]]).abs().sum() / len(p)
    return total
""", ('prelude', 'node'),
     """
# prelude
# node
for p in itertools.permutations(range(n)):
    total = total + (x[p[0]] - x[p[1]]).abs().sum() / len(p)
""",
     """
# prelude
_tuples = _index_rows(list(itertools.permutations(range(n))))
# node
for p in _tuples:
    total = total + (x[p[0]] - x[p[1]]).abs().sum() / len(p)
"""),
    (index_tuples_to_tensors, """
def f(x, n):
    total = 0
    for p in itertools.permutations(range(n)):
        total = total + x[p].sum()
    return total
""", ('prelude', 'node'),
     """
# prelude
# node
for p in itertools.permutations(range(n)):
    total = total + x[p].sum()
""",
     """
# prelude
# node
for p in itertools.permutations(range(n)):
    total = total + x[p].sum()
"""),
    (index_tuples_to_tensors, """
def f(self, p, d):
    total = 0
    for c in self.idc:
        total = total + (p[:, c] * d[:, c]).mean()
    return total
""", ('prelude', 'node'),
     """
# prelude
# node
for c in self.idc:
    total = total + (p[:, c] * d[:, c]).mean()
""",
     """
# prelude
_items = torch.tensor(self.idc) if (type(self.idc) is list or (isinstance(self.idc, tuple) and type(self.idc).__getitem__ is tuple.__getitem__ and (type(self.idc).__iter__ is tuple.__iter__) and (type(self.idc).__len__ is tuple.__len__))) and len(self.idc) > 0 and all((type(_v) is int for _v in self.idc)) else self.idc
# node
for c in _items:
    total = total + (p[:, c] * d[:, c]).mean()
"""),
    (index_tuples_to_tensors, """
def f(self, p, d):
    total = 0
    for c in self.idc:
        total = total + (p[:, c] * d[:, c]).mean() * c
    return total
""", ('prelude', 'node'),
     """
# prelude
# node
for c in self.idc:
    total = total + (p[:, c] * d[:, c]).mean() * c
""",
     """
# prelude
# node
for c in self.idc:
    total = total + (p[:, c] * d[:, c]).mean() * c
"""),
    (index_tests_to_selected_indices, """
def f(p, t, ignore):
    loss = 0
    for c in range(p.shape[1]):
        if c != ignore:
            loss += dice(p[:, c], t[:, c]) * w[c]
    return loss
""", ('prelude', 'node'),
     """
# prelude
# node
for c in range(p.shape[1]):
    if c != ignore:
        loss += dice(p[:, c], t[:, c]) * w[c]
""",
     """
# prelude
_selected = torch.tensor(_run_eagerly(lambda: [c for c in range(p.shape[1]) if c != ignore]), dtype=torch.int64)
# node
for c in _selected:
    loss += dice(p[:, c], t[:, c]) * w[c]
"""),
    (index_tests_to_selected_indices, """
def f(p, t, ignore):
    loss = 0
    for c in range(p.shape[1]):
        if c == ignore:
            continue
        loss += dice(p[:, c], t[:, c])
    return loss
""", ('prelude', 'node'),
     """
# prelude
# node
for c in range(p.shape[1]):
    if c == ignore:
        continue
    loss += dice(p[:, c], t[:, c])
""",
     """
# prelude
_selected = torch.tensor(_run_eagerly(lambda: [c for c in range(p.shape[1]) if not c == ignore]), dtype=torch.int64)
# node
for c in _selected:
    loss += dice(p[:, c], t[:, c])
"""),
    (index_tests_to_selected_indices, """
def f(p, t, ignore):
    loss = 0
    for c in range(p.shape[1]):
        if c != ignore:
            loss += dice(p[:, c], t[:, c]) * c
    return loss
""", ('prelude', 'node'),
     """
# prelude
# node
for c in range(p.shape[1]):
    if c != ignore:
        loss += dice(p[:, c], t[:, c]) * c
""",
     """
# prelude
# node
for c in range(p.shape[1]):
    if c != ignore:
        loss += dice(p[:, c], t[:, c]) * c
"""),
    (materialize_iterators, """
def mean(values):
    values = iter(values)
    acc = next(values)
    for n, v in enumerate(values, 2):
        acc += v
    return acc / n
""", ('prelude', 'list_names'),
     """
# prelude
# list_names
frozenset()
""",
     """
# prelude
values = list(values)
# list_names
frozenset({'values'})
"""),
    (materialize_iterators, """
def rest(values):
    values = iter(values)
    acc = 0
    for v in values:
        acc += v
    return acc, list(values)
""", ('prelude', 'list_names'),
     """
# prelude
# list_names
frozenset()
""",
     """
# prelude
# list_names
frozenset()
"""),
    (inline_inner_loops, """
def f(x, w, n):
    total = 0
    for i in range(n):
        row = 0
        for j in range(4):
            row = row + w[j] * x[i]
        total = total + row
    return total
""", ('body', 'inner_checks'),
     """
# body
row = 0
if isinstance(w, torch.Tensor) and 4 <= w.shape[0] and (4 > 0) and (not _rounds_gradients(x)):
    'optimize_loss: loop at line 5 vectorized'
    if not isinstance(x[i], torch.Tensor) or (w.dim() >= 2 and w.dim() >= x[i].dim() + 1):
        _w_row = w if 4 == w.shape[0] else w[0:4:1]
        _row_part = 0
        _row_part = _summed_in_steps(_w_row.sum(0) * x[i], lambda: (_w_row * x[i]).sum(0))
        _outs = (_row_part,)
    else:

        def _body(_w_row):
            _row_part = 0
            _row_part = _row_part + _w_row * x[i]
            return (torch.as_tensor(_row_part),)
        _outs = _map_in_chunks(_body, in_dims=(0,))(w if 4 == w.shape[0] else w[0:4:1])
        _outs = (_outs[0].sum(0),)
    if (_outs[0].dtype in (torch.uint8, torch.int8, torch.int16, torch.int32) and torch.result_type(row, _outs[0]) != _outs[0].dtype or (isinstance(row, torch.Tensor) and row.dtype == torch.bool and (_outs[0].dtype == torch.int64))) or _steps_differ(row, _outs[0], 0):
        "optimize_loss: as written, the loop at line 5: a sum starts from a value of another dtype than its items': the original adds in the start's wider dtype (a sum of narrower integers may wrap around), or, for bools added to a bool, as a logical or; float16/bfloat16 items onto a start other than 0 (1 for a product): the original rounds the start plus each item in turn"
        for j in range(4):
            row = row + w[j] * x[i]
    else:
        row = row + _outs[0]
else:
    for j in range(4):
        row = row + w[j] * x[i]
total = total + row
# inner_checks
""",
     """
# body
row = 0
if not isinstance(x[i], torch.Tensor) or (w.dim() >= 2 and w.dim() >= x[i].dim() + 1):
    _w_row = w if 4 == w.shape[0] else w[0:4:1]
    _row_part = 0
    _row_part = _summed_in_steps(_w_row.sum(0) * x[i], lambda: (_w_row * x[i]).sum(0))
    _outs = (_row_part,)
else:

    def _body(_w_row):
        _row_part = 0
        _row_part = _row_part + _w_row * x[i]
        return (torch.as_tensor(_row_part),)
    _outs = _map_in_chunks(_body, in_dims=(0,))(w if 4 == w.shape[0] else w[0:4:1])
    _outs = (_outs[0].sum(0),)
row = row + _outs[0]
total = total + row
# inner_checks
isinstance(w, torch.Tensor); 4 <= w.shape[0]; 4 > 0
"""),
    (inline_inner_loops, """
def f(x, n):
    total = 0
    for i in range(n):
        total = total + x[i]
    return total
""", ('body', 'inner_checks'),
     """
# body
total = total + x[i]
# inner_checks
""",
     """
# body
total = total + x[i]
# inner_checks
"""),
    (merge_branch_appends, """
def f(x, t, n):
    out = []
    for i in range(n):
        if t[i] > 0:
            a = x[i] * 2
            out.append(a.sum())
        elif t[i] < 0:
            out.append(x[i].exp().sum())
        else:
            out.append(x[i].abs().mean())
    return torch.stack(out)
""", ('body',),
     """
# body
if t[i] > 0:
    a = x[i] * 2
    out.append(a.sum())
elif t[i] < 0:
    out.append(x[i].exp().sum())
else:
    out.append(x[i].abs().mean())
""",
     """
# body
if t[i] > 0:
    a = x[i] * 2
    _out_value = a.sum()
elif t[i] < 0:
    _out_value = x[i].exp().sum()
else:
    _out_value = x[i].abs().mean()
out.append(_out_value)
"""),
    (merge_branch_appends, """
def f(x, t, n):
    out = []
    for i in range(n):
        if t[i] > 0:
            out.append(x[i].sum())
        else:
            out.append(x[i].sum())
            x[i].mean()
        if t[i] > 1:
            out.append(x[i].exp().sum())
    return torch.stack(out)
""", ('body',),
     """
# body
if t[i] > 0:
    out.append(x[i].sum())
else:
    out.append(x[i].sum())
    x[i].mean()
if t[i] > 1:
    out.append(x[i].exp().sum())
""",
     """
# body
if t[i] > 0:
    out.append(x[i].sum())
else:
    out.append(x[i].sum())
    x[i].mean()
if t[i] > 1:
    out.append(x[i].exp().sum())
"""),
    # a class's rows read otherwise than summed along the selection: gathered before the loop,
    # padded to the largest class, selected by the class's row of the padding mask
    (class_selections_to_rows, """
def f(feat, labels, centers):
    loss = 0
    for c in range(centers.shape[0]):
        m = labels == c
        loss = loss + (feat[m] - centers[c]).pow(2).sum(1).mean()
    return loss
""", ('prelude', 'body'),
     """
# prelude
# body
m = labels == c
loss = loss + (feat[m] - centers[c]).pow(2).sum(1).mean()
""",
     """
# prelude
_rows, _kept = _class_selection_rows(feat, labels, 0, centers.shape[0], 1)
# body
m = labels == c
loss = loss + (_rows[c][_kept[c]] - centers[c]).pow(2).sum(1).mean()
"""),
    # ... not when masked_selections_to_where would leave the selection (no dense cumsum)
    (class_selections_to_rows, """
def f(feat, labels, centers):
    loss = 0
    for c in range(centers.shape[0]):
        loss = loss + feat[labels == c].cumsum(0).sum()
    return loss
""", ('prelude', 'body'),
     """
# prelude
# body
loss = loss + feat[labels == c].cumsum(0).sum()
""",
     """
# prelude
# body
loss = loss + feat[labels == c].cumsum(0).sum()
"""),
    # ... next to a value the loop does not change (a number, 0-d, [D]): a row operand too
    (masked_selections_to_where, """
def f(feat, labels, mu):
    loss = 0
    for c in range(4):
        m = labels == c
        loss = loss + ((feat[m] - mu) ** 2).sum(dim=1).mean()
    return loss
""", ('body',),
     """
# body
m = labels == c
loss = loss + ((_rows[c][_kept[c]] - mu) ** 2).sum(dim=1).mean()
""",
     """
# body
m = labels == c
_mask_2 = _kept[c]
_keep_2 = _mask_2.reshape(_rows_mask[_mask_2.shape, _rows[c].shape, mu.shape if isinstance(mu, torch.Tensor) else ()])
_rows_2 = ((torch.where(_keep_2, _rows[c], False) - mu) ** 2).sum(dim=1)
_mask_3 = _kept[c]
_keep_3 = _mask_3.reshape(_mask_shape[_mask_3.shape, _rows_2.shape])
_vals_1 = torch.where(_keep_3, _rows_2, False)
loss = loss + torch.where(_keep_3, _vals_1, 0).sum().mean() / _keep_3.expand_as(_vals_1).sum()
"""),
    (masked_selections_to_where, """
def f(pred, target, n):
    total = 0
    for i in range(n):
        m = target[i] > 0
        total = total + pred[i][m].sum()
    return total
""", ('body',),
     """
# body
m = target[i] > 0
total = total + pred[i][m].sum()
""",
     """
# body
m = target[i] > 0
_keep = m.reshape(_mask_shape[m.shape, pred[i].shape])
total = total + torch.where(_keep, pred[i], 0).sum()
"""),
    (masked_selections_to_where, """
def f(x, n):
    total = 0
    for i in range(n):
        total = total + x[i] * 2
    return total
""", ('body',),
     """
# body
total = total + x[i] * 2
""",
     """
# body
total = total + x[i] * 2
"""),
    # a reduction along rows of a selection (distances to the other classes' rows): the rows reduced on the stand-ins,
    # next to the class's row of the centers, the values per row a selection by the same mask
    (masked_selections_to_where, """
def f(feat, labels, centers):
    loss = 0
    for c in range(centers.shape[0]):
        m = labels != c
        loss = loss + ((feat[m] - centers[c]) ** 2).sum(dim=1).mean()
    return loss
""", ('body',),
     """
# body
m = labels != c
loss = loss + ((feat[m] - centers[c]) ** 2).sum(dim=1).mean()
""",
     """
# body
m = labels != c
_keep = m.reshape(_rows_mask[m.shape, feat.shape, centers[c].shape])
_rows = ((torch.where(_keep, feat, False) - centers[c]) ** 2).sum(dim=1)
_keep_1 = m.reshape(_mask_shape[m.shape, _rows.shape])
_vals = torch.where(_keep_1, _rows, False)
loss = loss + torch.where(_keep_1, _vals, 0).sum().mean() / _keep_1.expand_as(_vals).sum()
"""),
    # ... not with a setting that is not a number (the norm's ``p``)
    (masked_selections_to_where, """
def f(feat, labels, centers, p):
    loss = 0
    for c in range(centers.shape[0]):
        m = labels == c
        loss = loss + (feat[m] - centers[c]).norm(p, dim=1).mean()
    return loss
""", ('body',),
     """
# body
m = labels == c
loss = loss + (feat[m] - centers[c]).norm(p, dim=1).mean()
""",
     """
# body
m = labels == c
loss = loss + (feat[m] - centers[c]).norm(p, dim=1).mean()
"""),
    (last_values_after_loop, """
def f(x, y, n):
    total = 0
    for i in range(n):
        d = (x[i] - y[i]).abs()
        total = total + d.sum()
    return total, d, i
""", ('live_after', 'outputs', 'folds'),
     """
# live_after
['d', 'i', 'total']
# outputs
# folds
""",
     """
# live_after
['total']
# outputs
['d']
# folds
d = _outs[0][-1]
i = n - 1
"""),
    (last_values_after_loop, """
def f(x, n):
    total = 0
    for i in range(n):
        c = 3 * i
        total = total + x[i].sum()
    return total + c
""", ('live_after', 'outputs', 'folds'),
     """
# live_after
['c', 'total']
# outputs
# folds
""",
     """
# live_after
['c', 'total']
# outputs
# folds
"""),
    (last_values_after_loop, """
def f(sim, labels):
    total = 0
    for i in range(sim.shape[0]):
        row = sim[i]
        neg = torch.masked_select(row, labels != labels[i])
        if len(neg) < 1:
            continue
        total = total + neg.sum()
    return total, neg.mean()
""", ('live_after', 'folds'),
     """
# live_after
['neg', 'total']
# folds
""",
     """
# live_after
['total']
# folds
i = sim.shape[0] - 1
row = sim[i]
neg = torch.masked_select(row, labels != labels[i])
"""),
    (last_values_after_loop, """
def f(sim, labels):
    total = 0
    for i in range(sim.shape[0]):
        neg = torch.masked_select(sim[i], labels != labels[i])
        if len(neg) < 1:
            continue
        neg = neg[neg > 0]
        total = total + neg.sum()
    return total, neg.mean()
""", ('live_after', 'folds'),
     """
# live_after
['neg', 'total']
# folds
""",
     """
Unsupported: `neg` is read after the loop: the last iteration's selection, whose size varies per iteration, and it is not bound by tensor ops the body starts with
"""),
    (check_body, """
def f(x, n):
    total = 0
    for i in range(n):
        if total > 1:
            break
        total = total + x[i]
    return total
""", ('body',),
     """
# body
if total > 1:
    break
total = total + x[i]
""",
     """
Unsupported: `break`: the trip count depends on the data
"""),
    (check_body, """
def f(x, n):
    total = 0
    for i in range(n):
        total = total + x[i] * 2
    return total
""", ('body',),
     """
# body
total = total + x[i] * 2
""",
     """
# body
total = total + x[i] * 2
"""),
    (host_roundtrips_to_tensor_ops, """
def f(labels, w, n):
    total = 0
    for i in range(n):
        total = total + labels[i].item() * w[i] + int(w.shape[0])
    return total
""", ('body', 'variant'),
     """
# body
total = total + labels[i].item() * w[i] + int(w.shape[0])
# variant
[]
""",
     """
# body
total = total + (labels[i].detach().to(_opmath_type(w[i], labels[i].detach().dtype.is_floating_point and 1.0 or 1)) * w[i].to(_opmath_type(w[i], labels[i].detach().dtype.is_floating_point and 1.0 or 1))).to(torch.result_type(w[i], labels[i].detach().dtype.is_floating_point and 1.0 or 1)) + int(w.shape[0])
# variant
['i', 'total']
"""),
    (host_roundtrips_to_tensor_ops, """
def f(x, n):
    total = 0
    for i in range(n):
        total = total + x[i] * 2
    return total
""", ('body',),
     """
# body
total = total + x[i] * 2
""",
     """
# body
total = total + x[i] * 2
"""),
    (newaxis_to_none, """
def f(preds, targets):
    loss = 0
    for i in range(len(preds)):
        loss = loss + F.cross_entropy(preds[i][np.newaxis, :], targets[np.newaxis, i])
    return loss
""", ('body',),
     """
# body
loss = loss + F.cross_entropy(preds[i][np.newaxis, :], targets[np.newaxis, i])
""",
     """
# body
loss = loss + F.cross_entropy(preds[i][None, :], targets[None, i])
"""),
    # another object's attribute `newaxis` is not numpy's
    (newaxis_to_none, """
def f(preds, grid):
    loss = 0
    for i in range(len(preds)):
        loss = loss + preds[i, grid.newaxis]
    return loss
""", ('body',),
     """
# body
loss = loss + preds[i, grid.newaxis]
""",
     """
# body
loss = loss + preds[i, grid.newaxis]
"""),
    (identity_tests_of_items, """
def f(probs, dens, counts):
    loss = 0
    for k, prob in enumerate(probs):
        if prob is None or prob.numel() == 0:
            est = dens[k].sum()
        else:
            est = (dens[k] * prob).sum() if prob is not None else 0
        loss = loss + (est - counts[k]).abs()
    return loss
""", ('body',),
     """
# body
if prob is None or prob.numel() == 0:
    est = dens[k].sum()
else:
    est = (dens[k] * prob).sum() if prob is not None else 0
loss = loss + (est - counts[k]).abs()
""",
     """
# body
if prob.numel() == 0:
    est = dens[k].sum()
else:
    est = (dens[k] * prob).sum()
loss = loss + (est - counts[k]).abs()
"""),
    # a rebound item (a local since rename_rebound_loop_variables), another name, and the
    # user's own constants stay as written
    (identity_tests_of_items, """
def f(probs, dens, flag):
    loss = 0
    for k, prob in enumerate(probs):
        w = prob is None or False
        if flag is None:
            prob = dens[k]
        loss = loss + prob.sum() * w
    return loss
""", ('body',),
     """
# body
_prob = prob
w = _prob is None or False
if flag is None:
    _prob = dens[k]
loss = loss + _prob.sum() * w
""",
     """
# body
_prob = prob
w = _prob is None or False
if flag is None:
    _prob = dens[k]
loss = loss + _prob.sum() * w
"""),
    (unit_slices_to_index, """
def f(x, n):
    total = 0
    for i in range(n):
        total = total + x[:, i:i + 1].sum() + x[:, i:i + 2].sum()
    return total
""", ('body',),
     """
# body
total = total + x[:, i:i + 1].sum() + x[:, i:i + 2].sum()
""",
     """
# body
total = total + x[:, i].unsqueeze(1).sum() + x[:, i:i + 2].sum()
"""),
    # an int literal before the unit slice takes its dim away; another name may be an index
    # tensor (which would move the dims): it stays
    (unit_slices_to_index, """
def f(x, y, b, n):
    total = 0
    for i in range(n):
        total = total + F.cross_entropy(x[0, :, i:i + 1], y[0, :, i:i + 1]) + x[b, i:i + 1].sum()
    return total
""", ('body',),
     """
# body
total = total + F.cross_entropy(x[0, :, i:i + 1], y[0, :, i:i + 1]) + x[b, i:i + 1].sum()
""",
     """
# body
total = total + F.cross_entropy(x[0, :, i].unsqueeze(1), y[0, :, i].unsqueeze(1)) + x[b, i:i + 1].sum()
"""),
    (unit_slices_to_index, """
def f(x, n):
    total = 0
    for i in range(n):
        total = total + x[i] * 2
    return total
""", ('body',),
     """
# body
total = total + x[i] * 2
""",
     """
# body
total = total + x[i] * 2
"""),
    (moving_slices_to_windows, """
def f(out, q, bs, n):
    total = 0
    for v in range(n):
        total = total + (q * out[bs * v:bs * (v + 1), :].log_softmax(-1)).sum()
    return total
""", ('body', 'prelude', 'windows', 'checks'),
     """
# body
total = total + (q * out[bs * v:bs * (v + 1), :].log_softmax(-1)).sum()
# prelude
# windows
[]
# checks
""",
     """
# body
total = total + (q * _out_windows[v, :, :].log_softmax(-1)).sum()
# prelude
_out_windows = _slice_windows(out, 0, lambda: (0, bs, bs, n))
# windows
['_out_windows']
# checks
isinstance(_out_windows, torch.Tensor)
"""),
    (moving_slices_to_windows, """
def f(out, q, bs, n):
    total = 0
    for v in range(n):
        total = total + (q * out[bs * v:bs * (v + 2) - v, :].log_softmax(-1)).sum()
    return total
""", ('body',),
     """
# body
total = total + (q * out[bs * v:bs * (v + 2) - v, :].log_softmax(-1)).sum()
""",
     """
# body
total = total + (q * out[bs * v:bs * (v + 2) - v, :].log_softmax(-1)).sum()
"""),
    (row_slices_to_params, """
def f(x, n):
    total = 0
    for i in range(n):
        total = total + x[:, 0, i, 1:].sum()
    return total
""", ('body', 'row_slices', 'checks'),
     """
# body
total = total + x[:, 0, i, 1:].sum()
# row_slices
# checks
""",
     """
# body
total = total + _x_row[1:].sum()
# row_slices
x[:, 0, a:b:s] as _x_row
# checks
isinstance(x, torch.Tensor) and n <= x.shape[2]
"""),
    # the rows along the last dim, x[..., i]
    (row_slices_to_params, """
def f(x, t, n):
    total = 0
    for i in range(n):
        total = total + (t - x[..., i]).abs().mean()
    return total
""", ('body', 'row_slices', 'checks'),
     """
# body
total = total + (t - x[..., i]).abs().mean()
# row_slices
# checks
""",
     """
# body
total = total + (t - _x_row).abs().mean()
# row_slices
x[..., a:b:s] as _x_row
# checks
isinstance(x, torch.Tensor) and x.dim() >= 1 and n <= x.shape[-1]
"""),
    # a new dim in front of the index is the row's; one after a fixed slice is not a row read
    (row_slices_to_params, """
def f(x, t, n):
    total = 0
    for i in range(n):
        total = total + F.cross_entropy(x[None, i], t[None, i]) + x[:, None, i].sum()
    return total
""", ('body', 'row_slices', 'checks'),
     """
# body
total = total + F.cross_entropy(x[None, i], t[None, i]) + x[:, None, i].sum()
# row_slices
# checks
""",
     """
# body
total = total + F.cross_entropy(_x_row[None], _t_row[None]) + x[:, None, i].sum()
# row_slices
x[, a:b:s] as _x_row; t[, a:b:s] as _t_row
# checks
isinstance(x, torch.Tensor) and n <= x.shape[0] and isinstance(t, torch.Tensor) and n <= t.shape[0]
"""),
    (row_slices_to_params, """
def f(x, n):
    total = 0
    for i in range(n):
        y = x * 2
        total = total + y[i].sum()
    return total
""", ('body', 'row_slices', 'checks'),
     """
# body
y = x * 2
total = total + y[i].sum()
# row_slices
# checks
""",
     """
# body
y = x * 2
total = total + y[i].sum()
# row_slices
# checks
"""),
    (classify_effects, """
def f(x, out, n):
    total = 0
    m = x[0]
    rows = []
    for i in range(n):
        v = x[i] * 2
        total += v.sum()
        m = torch.maximum(m, v)
        rows.append(v)
        out[i] = v
    return total, m, rows
""", ('body', 'facts'),
     """
# body
v = _x_row * 2
total += v.sum()
m = torch.maximum(m, v)
rows.append(v)
out[i] = v
# facts
""",
     """
# body
v = _x_row * 2
total += v.sum()
m = torch.maximum(m, v)
rows.append(v)
out[i] = v
# facts
acc total sum
acc m max
append rows
write out
"""),
    (classify_effects, """
def f(x, n):
    for i in range(n):
        v = x[i] * 2
    return x
""", ('body', 'facts'),
     """
# body
v = _x_row * 2
# facts
""",
     """
# body
v = _x_row * 2
# facts
"""),
    (row_slices_to_params, """
def f(x, n, m):
    total = 0
    for j in range(n):
        for i in range(m):
            total = total + x[j, i, j] * x[j, i].sum()
    return total
""", ('body', 'row_slices'),
     """
# body
def _body(_x_row):
    _total_part = 0
    _total_part = _total_part + _x_row[j] * _x_row.sum()
    return (torch.as_tensor(_total_part),)
_outs = _map_in_chunks(_body, in_dims=(0,))(x[j] if m == x.shape[1] else x[j, 0:m:1])
_outs = (_outs[0].sum(0),)
total = total + _outs[0]
# row_slices
""",
     """
# body
def _body(_x_row):
    _total_part = 0
    _total_part = _total_part + _x_row[j] * _x_row.sum()
    return (torch.as_tensor(_total_part),)
_outs = _map_in_chunks(_body, in_dims=(0,))(_x_row_1 if m == x.shape[1] else _x_row_1[0:m:1])
_outs = (_outs[0].sum(0),)
total = total + _outs[0]
# row_slices
x[, a:b:s] as _x_row_1
"""),
    (runtime_checks, """
def f(xs, ys, w, out):
    for x, y in zip(xs, ys):
        out.append(x * y + w[0])
    return out
""", ('checks',),
     """
# checks
""",
     """
# checks
isinstance(xs, torch.Tensor) and xs.dim() > 0 and isinstance(ys, torch.Tensor) and ys.dim() > 0 and type(out) is list and isinstance(min(len(xs), len(ys)), int) and min(len(xs), len(ys)) > 0
"""),
    (runtime_checks, """
def f(table, labels, out, n):
    for i in range(1, n):
        out[i] = table[labels[i]]
    return out
""", ('checks',),
     """
# checks
isinstance(labels, torch.Tensor) and n <= labels.shape[0]
""",
     """
# checks
isinstance(labels, torch.Tensor) and n <= labels.shape[0] and isinstance(out, torch.Tensor) and isinstance(table, torch.Tensor) and _apart(out, (labels, table)) and isinstance(n, int) and n > 1
"""),
    (ragged_slices_to_masks, """
def f(x, y, lengths):
    total = 0
    for i in range(len(x)):
        total = total + F.mse_loss(x[i].flatten()[:lengths[i]], y[i].flatten()[:lengths[i]], reduction='sum')
    return total
""", ('body',),
     """
# body
total = total + F.mse_loss(x[i].flatten()[:lengths[i]], y[i].flatten()[:lengths[i]], reduction='sum')
""",
     """
# body
_flat = x[i].flatten()
_pos = torch.arange(_flat.shape[0], device=_flat.device)
_in = _pos < _slice_bound(lengths[i]) + _flat.shape[0] * (_slice_bound(lengths[i]) < 0)
_flat_1 = y[i].flatten()
total = total + F.mse_loss(_flat[_in], _flat_1[_in], reduction='sum')
"""),
    (ragged_slices_to_masks, """
def f(x, y, lengths):
    total = 0
    for i in range(len(x)):
        total = total + F.mse_loss(x[i].flatten(0)[:lengths[i]], y[i].flatten(0)[:lengths[i]], reduction='sum')
    return total
""", ('body',),
     """
# body
total = total + F.mse_loss(x[i].flatten(0)[:lengths[i]], y[i].flatten(0)[:lengths[i]], reduction='sum')
""",
     """
# body
total = total + F.mse_loss(x[i].flatten(0)[:lengths[i]], y[i].flatten(0)[:lengths[i]], reduction='sum')
"""),
    (sliced_selections_to_masks, """
def f(emb, target, classes, k):
    protos = []
    for c in classes:
        protos.append(emb[target == c][:k].mean(0))
    return protos
""", ('body',),
     """
# body
protos.append(emb[target == c][:k].mean(0))
""",
     """
# body
protos.append(emb[_selection_window(target == c, None, k)].mean(0))
"""),
    (sliced_selections_to_masks, """
def f(emb, target, classes, k):
    protos = []
    for c in classes:
        protos.append(emb[target == c][:c].mean(0))
    return protos
""", ('body',),
     """
# body
protos.append(emb[target == c][:c].mean(0))
""",
     """
# body
protos.append(emb[target == c][:c].mean(0))
"""),
    (ragged_slices_to_masks, """
def f(x, lengths):
    total = 0
    for i in range(len(x)):
        L = lengths[i].item()
        total = total + x[i, :L].sum() / L
    return total
""", ('body',),
     """
# body
L = lengths[i].item()
total = total + x[i, :L].sum() / L
""",
     """
# body
L = lengths[i].item()
_pos = torch.arange(x[i].shape[0], device=x[i].device)
_in = _pos < _slice_bound(L) + x[i].shape[0] * (_slice_bound(L) < 0)
total = total + x[i][_in].sum() / L
"""),
    (module_list_linears, """
def f(heads, x):
    total = 0
    for i in range(len(heads)):
        head = heads[i]
        total = total + head(x).sum()
    return total
""", ('body', 'prelude', 'checks'),
     """
# body
head = heads[i]
total = total + head(x).sum()
# prelude
# checks
""",
     """
# body
total = total + torch.nn.functional.linear(x, _heads_weight[i], _heads_bias[i]).sum()
# prelude
_heads_weight, _heads_bias = _linear_parameters(heads)
# checks
_heads_weight is not None
"""),
    (module_list_linears, """
def f(heads, x):
    total = 0
    for i in range(len(heads)):
        head = heads[i]
        total = total + head(x).sum() + head.weight.sum()
    return total
""", ('body', 'prelude'),
     """
# body
head = heads[i]
total = total + head(x).sum() + head.weight.sum()
# prelude
""",
     """
# body
head = heads[i]
total = total + head(x).sum() + head.weight.sum()
# prelude
"""),
    (element_slices_to_indices, """
def f(w, labels):
    total = 0
    for i, y in enumerate(labels):
        total = total + torch.cat((w[i, :y], w[i, y + 1:])).sum() * w[y:y + 1, :].sum()
    return total
""", ('body', 'checks'),
     """
# body
total = total + torch.cat((w[i, :y], w[i, y + 1:])).sum() * w[y:y + 1, :].sum()
# checks
""",
     """
# body
_q = torch.arange(w.shape[1] - 1, device=w.device)
_others = _q + (_q >= y)
total = total + w[i, _others].sum() * w[y, :].unsqueeze(0).sum()
# checks
isinstance(labels, torch.Tensor) and labels.dim() == 1 and (labels.dtype in (torch.int64, torch.int32)) and isinstance(w, torch.Tensor) and (w.dim() > 1) and bool(((labels >= 0) & (labels < w.shape[1])).all()) and isinstance(labels, torch.Tensor) and labels.dim() == 1 and (labels.dtype in (torch.int64, torch.int32)) and isinstance(w, torch.Tensor) and (w.dim() > 0) and bool(((labels >= 0) & (labels < w.shape[0])).all())
"""),
    (element_slices_to_indices, """
def f(w, labels):
    total = 0
    for i, y in enumerate(labels):
        w = w * 2
        total = total + w[y:y + 1, :].sum() + w[i:i + 1].sum()
    return total
""", ('body',),
     """
# body
w = w * 2
total = total + w[y:y + 1, :].sum() + w[i:i + 1].sum()
""",
     """
# body
w = w * 2
total = total + w[y:y + 1, :].sum() + w[i:i + 1].sum()
"""),
    (masked_writes_to_where, """
def f(x):
    total = 0
    for i in range(x.shape[0]):
        d = x[i].clone()
        d[d < 0] = 0
        total = total + d.sum()
    return total
""", ('body',),
     """
# body
d = x[i].clone()
d[d < 0] = 0
total = total + d.sum()
""",
     """
# body
d = x[i].clone()
_d_keep = (d < 0).reshape(_written_mask[(d < 0).shape, d.shape])
d = torch.where(_d_keep, 0, d)
total = total + d.sum()
"""),
    # a row of the input: the original writes into the input too, which a rebound name would not
    (masked_writes_to_where, """
def f(x):
    total = 0
    for i in range(x.shape[0]):
        d = x[i]
        d[d < 0] = 0
        total = total + d.sum()
    return total
""", ('body',),
     """
# body
d = x[i]
d[d < 0] = 0
total = total + d.sum()
""",
     """
# body
d = x[i]
d[d < 0] = 0
total = total + d.sum()
"""),
    (conditioned_writes_to_functional, """
def f(x, target, c):
    loss = 0
    for i in range(x.shape[0]):
        if target[i] == -100:
            continue
        row = torch.full((c,), 0.025)
        row[target[i]] = 0.9
        loss = loss - (row * x[i]).sum()
    return loss
""", ('body',),
     """
# body
if target[i] == -100:
    continue
row = torch.full((c,), 0.025)
row[target[i]] = 0.9
loss = loss - (row * x[i]).sum()
""",
     """
# body
if target[i] == -100:
    continue
row = torch.full((c,), 0.025)
_row_at = torch.arange(row.numel(), device=row.device).view(row.shape)[target[i]]
row = row.flatten().scatter(0, _row_at.flatten(), torch.as_tensor(0.9, dtype=row.dtype, device=row.device).expand(_row_at.shape).flatten()).view(row.shape)
loss = loss - (row * x[i]).sum()
"""),
    # no condition: the write is left for inplace_writes_to_functional
    (conditioned_writes_to_functional, """
def f(x, target, c):
    loss = 0
    for i in range(x.shape[0]):
        row = torch.full((c,), 0.025)
        row[target[i]] = 0.9
        loss = loss - (row * x[i]).sum()
    return loss
""", ('body',),
     """
# body
row = torch.full((c,), 0.025)
row[target[i]] = 0.9
loss = loss - (row * x[i]).sum()
""",
     """
# body
row = torch.full((c,), 0.025)
row[target[i]] = 0.9
loss = loss - (row * x[i]).sum()
"""),
    (cleared_positions_to_masks, """
def f(sim, n):
    loss = 0
    for i in range(n):
        keep = torch.ones(sim.shape[1], dtype=torch.bool, device=sim.device)
        keep[i] = False
        loss = loss + sim[i][keep].exp().sum()
    return loss
""", ('body', 'checks'),
     """
# body
keep = torch.ones(sim.shape[1], dtype=torch.bool, device=sim.device)
keep[i] = False
loss = loss + sim[i][keep].exp().sum()
# checks
""",
     """
# body
_pos = torch.arange(sim.shape[1], device=sim.device)
keep = _pos != i
loss = loss + sim[i][keep].exp().sum()
# checks
n <= sim.shape[1]
"""),
    (cleared_positions_to_masks, """
def f(sim, n):
    loss = 0
    for i in range(n):
        keep = torch.ones(sim.shape[1], dtype=torch.bool)
        keep[i] = 0
        loss = loss + sim[i][keep].exp().sum()
    return loss
""", ('body', 'checks'),
     """
# body
keep = torch.ones(sim.shape[1], dtype=torch.bool)
keep[i] = 0
loss = loss + sim[i][keep].exp().sum()
# checks
""",
     """
# body
keep = torch.ones(sim.shape[1], dtype=torch.bool)
keep[i] = 0
loss = loss + sim[i][keep].exp().sum()
# checks
"""),
    (excluded_items_to_masks, """
def f(s):
    total = 0
    for j in range(len(s)):
        cs = s[j] * 2
        total = total + torch.max(torch.cat((cs[:j], cs[j + 1:])))
    return total
""", ('body',),
     """
# body
cs = s[j] * 2
total = total + torch.max(torch.cat((cs[:j], cs[j + 1:])))
""",
     """
# body
cs = s[j] * 2
_pos = torch.arange(cs.shape[0], device=cs.device)
_in = _pos != j
total = total + torch.max(cs[_in])
"""),
    (excluded_items_to_masks, """
def f(s):
    total = 0
    for j in range(len(s)):
        cs = s[j] * 2
        total = total + torch.max(torch.cat((cs[:j], cs[j + 2:])))
    return total
""", ('body',),
     """
# body
cs = s[j] * 2
total = total + torch.max(torch.cat((cs[:j], cs[j + 2:])))
""",
     """
# body
cs = s[j] * 2
total = total + torch.max(torch.cat((cs[:j], cs[j + 2:])))
"""),
    (sorts_read_at_ends, """
def f(sim, labels):
    total = 0
    for i in range(sim.shape[0]):
        pos = torch.masked_select(sim[i], labels == labels[i])
        pos = torch.sort(pos)[0]
        neg = sim[i].masked_select(labels != labels[i]).sort(descending=True).values
        hard = torch.masked_select(neg, neg + 0.1 > pos[0])
        if len(hard) < 1:
            continue
        total = total + torch.exp(hard).sum() + pos.max() * (neg[-1] > 0)
    return total
""", ('body',),
     """
# body
pos = torch.masked_select(sim[i], labels == labels[i])
pos = torch.sort(pos)[0]
neg = sim[i].masked_select(labels != labels[i]).sort(descending=True).values
hard = torch.masked_select(neg, neg + 0.1 > pos[0])
if len(hard) < 1:
    continue
total = total + torch.exp(hard).sum() + pos.max() * (neg[-1] > 0)
""",
     """
# body
pos = torch.masked_select(sim[i], labels == labels[i])
neg = sim[i].masked_select(labels != labels[i])
hard = torch.masked_select(neg, neg + 0.1 > pos.nan_to_num(torch.inf, torch.inf, -torch.inf).min() * (pos == pos).sum().sign())
if len(hard) < 1:
    continue
total = total + torch.exp(hard).sum() + pos.max() * (neg.nan_to_num(torch.inf, torch.inf, -torch.inf).min() * (neg == neg).sum().sign() > 0)
"""),
    (sorts_read_at_ends, """
def f(sim, labels):
    total = 0
    for i in range(sim.shape[0]):
        pos = torch.sort(torch.masked_select(sim[i], labels == labels[i]))[0]
        total = total + pos[0] + torch.exp(pos).sum()
    return total
""", ('body',),
     """
# body
pos = torch.sort(torch.masked_select(sim[i], labels == labels[i]))[0]
total = total + pos[0] + torch.exp(pos).sum()
""",
     """
# body
pos = torch.sort(torch.masked_select(sim[i], labels == labels[i]))[0]
total = total + pos[0] + torch.exp(pos).sum()
"""),
    (masked_selects_to_selections, """
def f(x, mask):
    total = 0
    for t in range(len(x)):
        m = mask[t]
        total = total + x[t].masked_select(m).sum() + (x[t] * 2).masked_select(x[t] > 0).sum()
    return total
""", ('body', 'checks'),
     """
# body
m = mask[t]
total = total + x[t].masked_select(m).sum() + (x[t] * 2).masked_select(x[t] > 0).sum()
# checks
""",
     """
# body
m = mask[t]
_selected = x[t].expand_as(mask[t])
total = total + _selected[mask[t]].sum() + (x[t] * 2).masked_select(x[t] > 0).sum()
# checks
isinstance(mask, torch.Tensor) and mask.dtype == torch.bool
"""),
    (masked_selects_to_selections, """
def f(x, mask):
    total = 0
    for t in range(len(x)):
        m = mask[t] + 0
        total = total + x[t].masked_select(m).sum()
    return total
""", ('body', 'checks'),
     """
# body
m = mask[t] + 0
total = total + x[t].masked_select(m).sum()
# checks
""",
     """
# body
m = mask[t] + 0
total = total + x[t].masked_select(m).sum()
# checks
"""),
    (removed_index_lists_to_masks, """
def f(x, n):
    total = 0
    for j in range(n):
        idx = [*range(n)]
        idx.remove(j)
        total = total + x[:, idx].sum(1)
    return total
""", ('body', 'checks'),
     """
# body
idx = [*range(n)]
idx.remove(j)
total = total + x[:, idx].sum(1)
# checks
""",
     """
# body
_pos = torch.arange(x.shape[1], device=x.device)
_keep = ((_pos != j) & (_pos < n)).reshape((-1,) + (1,) * (x.dim() - 1 - 1))
total = total + torch.where(_keep, x, False).sum(1)
# checks
isinstance(x, torch.Tensor) and isinstance(n, int) and (x.dim() > 1) and (n <= x.shape[1])
"""),
    (removed_index_lists_to_masks, """
def f(x, n):
    total = 0
    for j in range(n):
        idx = [*range(n)]
        idx.remove(j)
        total = total + x[:, idx].amax(1)
    return total
""", ('body',),
     """
# body
idx = [*range(n)]
idx.remove(j)
total = total + x[:, idx].amax(1)
""",
     """
# body
idx = [*range(n)]
idx.remove(j)
total = total + x[:, idx].amax(1)
"""),
    (ragged_slices_to_masks, """
def f(x, lengths):
    total = 0
    for i in range(len(x)):
        L = lengths[i].item()
        total = total + x[i, :L].cumsum(1).sum()
    return total
""", ('body',),
     """
# body
L = lengths[i].item()
total = total + x[i, :L].cumsum(1).sum()
""",
     """
# body
L = lengths[i].item()
total = total + x[i, :L].cumsum(1).sum()
"""),
    (conditional_expressions_to_branches, """
def f(p, t, alpha):
    total = 0
    for i in range(len(p)):
        w = alpha if t[i] > 0.5 else 1 - alpha
        total = total + w * (p[i].log() if t[i] > 0 else (1 - p[i]).log())
    return total
""", ('body', 'pick_checks'),
     """
# body
w = alpha if t[i] > 0.5 else 1 - alpha
total = total + w * (p[i].log() if t[i] > 0 else (1 - p[i]).log())
# pick_checks
""",
     """
# body
_test = t[i] > 0.5
if _test:
    _pick = torch.full_like(_test, alpha, dtype=torch.float64)
else:
    _pick = torch.full_like(_test, 1 - alpha, dtype=torch.float64)
w = _pick
if t[i] > 0:
    _pick_1 = p[i].log()
else:
    _pick_1 = (1 - p[i]).log()
total = total + w * _pick_1
# pick_checks
isinstance(alpha, float); isinstance(1 - alpha, float)
"""),
    (conditional_expressions_to_branches, """
def f(p, t, flag):
    total = 0
    for i in range(len(p)):
        total = total + (p[i] if flag else -p[i]) * (1.0 if 0 < t[i] < 1 else 2.0)
    return total
""", ('body',),
     """
# body
total = total + (p[i] if flag else -p[i]) * (1.0 if 0 < t[i] < 1 else 2.0)
""",
     """
# body
total = total + (p[i] if flag else -p[i]) * (1.0 if 0 < t[i] < 1 else 2.0)
"""),
    (sink_own_item_selections, """
def f(e, cs, j, w):
    scores = []
    for k in range(cs.shape[0]):
        if k == j:
            c = (cs.sum(0) - e) / 2
        else:
            c = cs[k]
        scores.append(w * F.cosine_similarity(e, c, dim=0))
    return torch.stack(scores)
""", ('first', 'body'),
     """
# first
# body
if k == j:
    c = (cs.sum(0) - e) / 2
else:
    c = cs[k]
scores.append(w * F.cosine_similarity(e, c, dim=0))
""",
     """
# first
_hit = torch.eq(torch.arange(0, cs.shape[0], 1, device=j.device if isinstance(j, torch.Tensor) else torch.as_tensor(e).device), j).any()
_own = F.cosine_similarity(_fixed_operand(_hit, e), (_fixed_operand(_hit, cs).sum(0) - _fixed_operand(_hit, e)) / 2, dim=0)
# body
_sel = k == j
_t = cs[k]
_sim = _cosine_similarity_unless(e, _t, dim=0, deselected=_sel)
_sim = torch.where(_sel, _own, _sim)
scores.append(w * _sim)
"""),
    # an arm computed by ops: its reads masked where the own item is picked, the op on it
    (sink_own_item_selections, """
def f(e, cs, j, w):
    scores = []
    for k in range(cs.shape[0]):
        if k == j:
            c = (cs.sum(0) - e) / 2
        else:
            c = cs[k] * 2
        scores.append(w * F.cosine_similarity(e, c, dim=0))
    return torch.stack(scores)
""", ('first', 'body'),
     """
# first
# body
if k == j:
    c = (cs.sum(0) - e) / 2
else:
    c = cs[k] * 2
scores.append(w * F.cosine_similarity(e, c, dim=0))
""",
     """
# first
_hit = torch.eq(torch.arange(0, cs.shape[0], 1, device=j.device if isinstance(j, torch.Tensor) else torch.as_tensor(e).device), j).any()
_own = F.cosine_similarity(_fixed_operand(_hit, e), (_fixed_operand(_hit, cs).sum(0) - _fixed_operand(_hit, e)) / 2, dim=0)
# body
_sel = k == j
_keep = torch.logical_not(torch.ne(_sel, False))
_t_1 = cs[k]
_t = torch.where(_keep.reshape(_branch_shape[_keep.shape, _t_1.shape]), _t_1, False) * 2
c = torch.where(_keep.reshape(_branch_shape[_keep.shape, _t.shape]), _t, torch.full_like(_t, 1))
_sim = F.cosine_similarity(e, c, dim=0)
_sim = torch.where(_sel, _own, _sim)
scores.append(w * _sim)
"""),
    # a rebound loop item: its default assignment is the branch's `else`
    (sink_own_item_selections, """
def f(e, cs, j, w):
    scores = []
    for k, c in enumerate(cs):
        if k == j:
            c = (cs.sum(0) - e) / 2
        scores.append(w * F.cosine_similarity(e, c, dim=0))
    return torch.stack(scores)
""", ('first', 'body'), """
# first
# body
_c = c
if k == j:
    _c = (cs.sum(0) - e) / 2
scores.append(w * F.cosine_similarity(e, _c, dim=0))
""", """
# first
_hit = torch.eq(torch.arange(0, len(cs), 1, device=j.device if isinstance(j, torch.Tensor) else torch.as_tensor(e).device), j).any()
_own = F.cosine_similarity(_fixed_operand(_hit, e), (_fixed_operand(_hit, cs).sum(0) - _fixed_operand(_hit, e)) / 2, dim=0)
# body
_sel = k == j
_t = c
_sim = _cosine_similarity_unless(e, _t, dim=0, deselected=_sel)
_sim = torch.where(_sel, _own, _sim)
scores.append(w * _sim)
"""),
    # ... a default that computes is not moved under the `else`
    (sink_own_item_selections, """
def f(e, cs, j, w):
    scores = []
    for k, c in enumerate(cs):
        c = c * 2
        if k == j:
            c = (cs.sum(0) - e) / 2
        scores.append(w * F.cosine_similarity(e, c, dim=0))
    return torch.stack(scores)
""", ('first', 'body'), """
# first
# body
_c = c
_c = _c * 2
if k == j:
    _c = (cs.sum(0) - e) / 2
scores.append(w * F.cosine_similarity(e, _c, dim=0))
""", """
# first
# body
_c = c
_c = _c * 2
if k == j:
    _c = (cs.sum(0) - e) / 2
scores.append(w * F.cosine_similarity(e, _c, dim=0))
"""),
    (sink_own_item_selections, """
def f(e, cs, j, w):
    scores = []
    for k in range(cs.shape[0]):
        if k == j:
            c = (cs.sum(0) - e) / 2
        else:
            c = cs[k]
        scores.append(w * (e * c).sum())
    return torch.stack(scores)
""", ('first', 'body'),
     """
# first
# body
if k == j:
    c = (cs.sum(0) - e) / 2
else:
    c = cs[k]
scores.append(w * (e * c).sum())
""",
     """
# first
# body
if k == j:
    c = (cs.sum(0) - e) / 2
else:
    c = cs[k]
scores.append(w * (e * c).sum())
"""),
    (tensor_branches_to_where, """
def f(x, n):
    total = 0
    for i in range(n):
        if x[i] > 0:
            total = total + x[i].sqrt()
    return total
""", ('body', 'masked', 'uses_where'),
     """
# body
if _x_row > 0:
    total = total + _x_row.sqrt()
# masked
# uses_where
False
""",
     """
# body
_cond = torch.ne(_x_row > 0, False)
total = total + torch.where(_cond, torch.where(_cond.reshape(_branch_shape[_cond.shape, _x_row.shape]), _x_row, False), 1).sqrt()
# masked
torch.where(_cond, torch.where(_cond.reshape(_branch_shape[_cond.shape, _x_row.shape]), _x_row, False), 1).sqrt() under _cond
# uses_where
True
"""),
    (tensor_branches_to_where, """
def f(x, n, flag):
    total = 0
    for i in range(n):
        if flag:
            total = total + x[i]
    return total
""", ('body', 'uses_where'),
     """
# body
if flag:
    total = total + _x_row
# uses_where
False
""",
     """
# body
if flag:
    total = total + _x_row
# uses_where
False
"""),
    (effects_to_outputs, """
def f(x, out, n):
    total = 0
    rows = []
    for i in range(n):
        v = x[i] * 2
        total += v.sum()
        rows.append(v)
        out[i] = v
    return total, rows
""", ('body', 'init', 'outputs', 'folds'),
     """
# body
v = _x_row * 2
total += v.sum()
rows.append(v)
out[i] = v
# init
# outputs
# folds
""",
     """
# body
v = _x_row * 2
_total_part = _total_part + v.sum()
_rows_item = v
_out_item = v
# init
_total_part = 0
# outputs
['_total_part', '_rows_item', '_out_item']
# folds
rows.extend(_outs[1].unbind(0))
out[0:n:1] = _outs[2].reshape(_outs[2].shape[:1] + (1,) * (out.dim() - 0 - _outs[2].dim()) + _outs[2].shape[1:]).to(out.dtype if _outs[2].dim() == 1 else _outs[2].dtype)
"""),
    (effects_to_outputs, """
def f(x, n):
    for i in range(n):
        v = x[i] * 2
    return x
""", ('body', 'init', 'outputs', 'folds'),
     """
# body
v = _x_row * 2
# init
# outputs
# folds
""",
     """
# body
v = _x_row * 2
# init
# outputs
# folds
"""),
    (fold_accumulators, """
def f(p, t, B):
    loss = 0
    for i in range(B):
        loss += ((p[i] - t[i]) ** 2).mean()
    return loss / B
""", ('folds', 'averaged'),
     """
# folds
# averaged
[]
""",
     """
# folds
_averaged = True
loss = _outs[0]
# averaged
['loss']
"""),
    (fold_accumulators, """
def f(x, m, n):
    for i in range(n):
        m = max(m, x[i])
    return m
""", ('folds', 'averaged'),
     """
# folds
# averaged
[]
""",
     """
# folds
_m_picked = _outs[0].reshape(len(_outs[0])).nan_to_num(float('-inf'), float('inf'), float('-inf')).argmax(0)
m = max(m, x[_m_picked])
# averaged
[]
"""),
    (fold_accumulators, """
def f(x, n):
    rows = []
    for i in range(n):
        rows.append(x[i] * 2)
    return rows
""", ('folds', 'averaged'),
     """
# folds
rows.extend(_outs[0].unbind(0))
# averaged
[]
""",
     """
# folds
rows.extend(_outs[0].unbind(0))
# averaged
[]
"""),
    (divisions_by_counters, """
def f(logp, target):
    loss = 0.0
    count = 0
    for i in range(target.shape[0]):
        if target[i] != 0:
            loss += -logp[i, target[i]]
            count += 1
    return loss / count
""", ('folds', 'quotients'),
     """
# folds
if isinstance(loss, torch.Tensor) or _outs[2].any():
    loss += _outs[0]
count = int(_outs[1])
# quotients
[]
""",
     """
# folds
_loss_sum = loss
_loss_sum += _outs[0]
_loss_quotient = _loss_sum / _outs[1]
_loss_divided = isinstance(loss, torch.Tensor) or _outs[2].any()
# quotients
['loss']
"""),
    (divisions_by_counters, """
def f(logp, target):
    loss = 0.0
    count = 0
    for i in range(target.shape[0]):
        if target[i] != 0:
            loss += -logp[i, target[i]]
            count += 1
    loss = loss / count
    return loss, count
""", ('folds', 'quotients'),
     """
# folds
if isinstance(loss, torch.Tensor) or _outs[2].any():
    loss += _outs[0]
count = int(_outs[1])
# quotients
[]
""",
     """
# folds
if isinstance(loss, torch.Tensor) or _outs[2].any():
    loss += _outs[0]
count = int(_outs[1])
# quotients
[]
"""),
    (check_mapped_body, """
def f(x, lengths, n):
    total = 0
    for i in range(n):
        L = lengths[i].item()
        total = total + x[i, :L].cumsum(1).sum()
    return total
""", ('body',),
     """
# body
L = _lengths_row.detach()
_total_part = _total_part + _x_row[:L].cumsum(1).sum()
""",
     """
Unsupported: `x[i, :L]`: slice bound `L` varies per iteration (the slice's size would differ between iterations)
"""),
    (check_mapped_body, """
def f(x, t, w_pos, w_neg, n):
    total = 0
    for i in range(n):
        w = w_pos if 0 < t[i] < 0.5 else w_neg
        total = total + w * x[i, :3]
    return total
""", ('body',),
     """
# body
w = w_pos if 0 < _t_row < 0.5 else w_neg
_total_part = _total_part + w * _x_row[:3]
""",
     """
Unsupported: conditional expression on `0 < t[i] < 0.5`, which varies per iteration: a Python condition needs one value
"""),
    (check_mapped_body, """
def f(x, n):
    total = 0
    for i in range(n):
        total = total + x[i, :3].sum()
    return total
""", ('body',),
     """
# body
_total_part = _total_part + _x_row[:3].sum()
""",
     """
# body
_total_part = _total_part + _x_row[:3].sum()
"""),
    (check_mapped_body, """
def f(x, lens, n):
    total = 0
    for i in range(n):
        total = total + x[i].repeat(lens[i], 1).sum()
    return total
""", ('body',),
     """
# body
_total_part = _total_part + _x_row.repeat(_lens_row, 1).sum()
""",
     """
Unsupported: `x[i].repeat(lens[i], 1)`: a size that varies per iteration (`lens[i]`, line 4): the result's shape would differ between iterations
"""),
    (check_mapped_body, """
def f(x, k, n):
    total = 0
    for i in range(n):
        total = total + x[i].repeat(k, 1).view(k, -1).sum() + torch.zeros(x.shape[1]).sum()
    return total
""", ('body',),
     """
# body
_total_part = _total_part + (_x_row.repeat(k, 1).view(k, -1).sum() + torch.zeros(x.shape[1]).sum())
""",
     """
# body
_total_part = _total_part + (_x_row.repeat(k, 1).view(k, -1).sum() + torch.zeros(x.shape[1]).sum())
"""),
    (inplace_writes_to_functional, """
def f(scores, target, n):
    loss = 0
    for i in range(n):
        m = torch.clamp(scores[i] - scores[i, target[i]] + 1, min=0)
        m[target[i]] = 0
        m.clamp_(max=5)
        loss += (m.exp().sum() + 1e-6).log_()
    return loss
""", ('body',),
     """
# body
m = torch.clamp(_scores_row - _scores_row[_target_row] + 1, min=0)
m[_target_row] = 0
m.clamp_(max=5)
_loss_part = _loss_part + (m.exp().sum() + 1e-06).log_()
""",
     """
# body
m = torch.clamp(_scores_row - _scores_row[_target_row] + 1, min=0)
_m_at = torch.arange(m.numel(), device=m.device).view(m.shape)[_target_row]
m = m.flatten().scatter(0, _m_at.flatten(), torch.as_tensor(0, dtype=m.dtype, device=m.device).expand(_m_at.shape).flatten()).view(m.shape)
m = _inplace_result(m, m.clamp(max=5))
_tmp = m.exp().sum() + 1e-06
_loss_part = _loss_part + _inplace_result(_tmp, _tmp.log())
"""),
    # a float tensor of one number the iteration makes (no dtype=): its own, written functionally
    (inplace_writes_to_functional, """
def f(x, y, n):
    loss = 0
    for i in range(n):
        t = torch.zeros(x.shape[1])
        t[y[i]] = 1
        loss += (t * x[i]).sum()
    return loss
""", ('body',),
     """
# body
t = torch.zeros(x.shape[1])
t[_y_row] = 1
_loss_part = _loss_part + (t * _x_row).sum()
""",
     """
# body
t = torch.zeros(x.shape[1])
_t_at = torch.arange(t.numel(), device=t.device).view(t.shape)[_y_row]
t = t.flatten().scatter(0, _t_at.flatten(), torch.as_tensor(1, dtype=t.dtype, device=t.device).expand(_t_at.shape).flatten()).view(t.shape)
_loss_part = _loss_part + (t * _x_row).sum()
"""),
    # ... given a dtype (it may be a boolean mask, which would index under vmap): refused, as before
    (inplace_writes_to_functional, """
def f(x, n):
    loss = 0
    for i in range(n):
        t = torch.zeros(x.shape[1], dtype=x.dtype)
        t[0] = 1
        loss += (t * x[i]).sum()
    return loss
""", ('body',),
     """
# body
t = torch.zeros(x.shape[1], dtype=x.dtype)
t[0] = 1
_loss_part = _loss_part + (t * _x_row).sum()
""",
     """
Unsupported: `t[0] = 1` writes in place into `t`, which may share memory with another value (a functional form would not change that value)
"""),
    (inplace_writes_to_functional, """
def f(x, n):
    loss = 0
    for i in range(n):
        t = x[i]
        t += 1
        loss += t.sum()
    return loss
""", ('body',),
     """
# body
t = _x_row
t += 1
_loss_part = _loss_part + t.sum()
""",
     """
Unsupported: `t += 1` writes in place into `t`, which may share memory with another value (a functional form would not change that value)
"""),
    # a local bound to a row of an outer tensor (a view, whatever the tensor is): written in place
    (inplace_writes_to_functional, """
def f(x, y, centers, n):
    loss = 0
    for i in range(n):
        c = centers[y[i]]
        loss += (x[i] * c).sum()
        c += 0.1 * x[i]
    return loss
""", ('body',),
     """
# body
c = centers[_y_row]
_loss_part = _loss_part + (_x_row * c).sum()
c += 0.1 * _x_row
""",
     """
Unsupported: `c += 0.1 * x[i]` writes in place into `c`, which may share memory with another value (a functional form would not change that value)
"""),
    (inplace_writes_to_functional, """
def f(x, y, centers, n):
    loss = 0
    for i in range(n):
        c = centers[y[i]]
        loss += (x[i] * c).sum()
        c[:] = 0.5 * c
    return loss
""", ('body',),
     """
# body
c = centers[_y_row]
_loss_part = _loss_part + (_x_row * c).sum()
c[:] = 0.5 * c
""",
     """
Unsupported: `c[:] = 0.5 * c` writes in place into `c`, which may share memory with another value (a functional form would not change that value)
"""),
    # ... bound anew to a tensor the iteration makes: its own, written functionally
    (inplace_writes_to_functional, """
def f(x, y, centers, n):
    loss = 0
    for i in range(n):
        c = centers[y[i]]
        c = c * x[i]
        c += 1
        loss += c.sum()
    return loss
""", ('body',),
     """
# body
c = centers[_y_row]
c = c * _x_row
c += 1
_loss_part = _loss_part + c.sum()
""",
     """
# body
c = centers[_y_row]
c = c * _x_row
c = _inplace_result(c, c + 1)
_loss_part = _loss_part + c.sum()
"""),
    (outline_body, """
def f(xs, ys):
    total = 0
    for x, y in zip(xs, ys):
        total = total + (x * y).sum()
    return total
""", ('mapped',),
     """
# mapped
""",
     """
# mapped
def _body(x, y):
    _total_part = 0
    _total_part = _total_part + (x * y).sum()
    return (torch.as_tensor(_total_part),)
_outs = _map_in_chunks(_body, in_dims=(0, 0))(xs if len(xs) == min(len(xs), len(ys)) else xs[:min(len(xs), len(ys))], ys if len(ys) == min(len(xs), len(ys)) else ys[:min(len(xs), len(ys))])
_outs = (_outs[0].sum(0),)
"""),
    # a per-step class-weighted NLL (no batched form for ``t[:, i + 1]``): the registry's vmap_fn,
    # which picks the target entries before weighting them
    (outline_body, """
def f(logps, t, w):
    total = 0
    for i in range(len(logps)):
        total = total + F.nll_loss(logps[i], t[:, i + 1], weight=w)
    return total
""", ('mapped',),
     """
# mapped
""",
     """
# mapped
def _body(i, _logps_row):
    _total_part = 0
    _total_part = _total_part + _nll_loss(_logps_row, t[:, i + 1], weight=w)
    return (torch.as_tensor(_total_part),)
_outs = _map_in_chunks(_body, in_dims=(0, 0))(torch.arange(0, len(logps), 1, device=logps.device), logps if len(logps) == logps.shape[0] else logps[0:len(logps):1])
_outs = (_outs[0].sum(0),)
"""),
    # rows at a mask the function made before the loop: the bound masked_rows (an index_select
    # of its positions under vmap); not at `k`, which the body binds
    (outline_body, """
def f(x, t, w):
    valid = t != 255
    total = 0
    for c in range(x.shape[0]):
        k = c + 1
        total = total + x[c][valid].sum() + w[k][valid].sum()
    return total
""", ('mapped',),
     """
# mapped
""",
     """
# mapped
def _body(c, _x_row):
    _total_part = 0
    k = c + 1
    _total_part = _total_part + (_masked_rows(_x_row, valid).sum() + _masked_rows(w[k], valid).sum())
    return (torch.as_tensor(_total_part),)
_outs = _map_in_chunks(_body, in_dims=(0, 0))(torch.arange(0, x.shape[0], 1, device=x.device), x if x.shape[0] == x.shape[0] else x[0:x.shape[0]:1])
_outs = (_outs[0].sum(0),)
"""),
    # rows at a sort's indices (a mask of two: bound first): index_select; not at indices - 1
    (outline_body, """
def f(x, w):
    total = 0
    for i in range(x.shape[0]):
        s, perm = torch.sort(x[i], descending=True)
        perm = perm.detach()
        order = x[i].sort()[1]
        shifted = order - 1
        total = total + (s * w[perm]).sum() + w[torch.where(s > 0, perm, order)].sum() + w[shifted].sum()
    return total
""", ('mapped',),
     """
# mapped
""",
     """
# mapped
def _body(_x_row):
    _total_part = 0
    s, perm = torch.sort(_x_row, descending=True)
    perm = perm.detach()
    order = _x_row.sort()[1]
    shifted = order - 1
    _positions = torch.where(s > 0, perm, order)
    _total_part = _total_part + ((s * (torch.index_select(w, 0, perm.reshape(-1)).reshape(perm.shape + w.shape[1:]) if w.dim() else w[perm])).sum() + (torch.index_select(w, 0, _positions.reshape(-1)).reshape(_positions.shape + w.shape[1:]) if w.dim() else w[_positions]).sum() + w[shifted].sum())
    return (torch.as_tensor(_total_part),)
_outs = _map_in_chunks(_body, in_dims=(0,))(x if x.shape[0] == x.shape[0] else x[0:x.shape[0]:1])
_outs = (_outs[0].sum(0),)
"""),
    # an item read only as the row it picks of a tensor the body does not bind: a map that
    # evaluates each (iteration, row) pair once where an enclosing map repeats the body
    (picked_rows_to_tables, """
def f(x, rows, picks):
    total = 0
    for p, r in zip(picks, x):
        total = total + (r * rows[p]).sum() + rows[p].max()
    return total
""", ('mapped',),
     """
# mapped
def _body(p, r):
    _total_part = 0
    _total_part = _total_part + ((r * rows[p]).sum() + _max_of_all(rows[p], 0))
    return (torch.as_tensor(_total_part),)
_outs = _map_in_chunks(_body, in_dims=(0, 0))(picks if len(picks) == min(len(picks), len(x)) else picks[:min(len(picks), len(x))], x if len(x) == min(len(picks), len(x)) else x[:min(len(picks), len(x))])
_outs = (_outs[0].sum(0),)
""",
     """
# mapped
def _body(p, r):
    _total_part = 0
    _total_part = _total_part + ((r * rows[p]).sum() + _max_of_all(rows[p], 0))
    return (torch.as_tensor(_total_part),)
_outs = _map_tabulated(_body, in_dims=(0, 0), index=0, tables=(rows,))(picks if len(picks) == min(len(picks), len(x)) else picks[:min(len(picks), len(x))], x if len(x) == min(len(picks), len(x)) else x[:min(len(picks), len(x))])
_outs = (_outs[0].sum(0),)
"""),
    # the item read otherwise too (`* p`): the map stays
    (picked_rows_to_tables, """
def f(x, rows, picks):
    total = 0
    for p, r in zip(picks, x):
        total = total + (r * rows[p]).sum() * p
    return total
""", ('mapped',),
     """
# mapped
def _body(p, r):
    _total_part = 0
    _total_part = _total_part + (r * rows[p]).sum() * p
    return (torch.as_tensor(_total_part),)
_outs = _map_in_chunks(_body, in_dims=(0, 0))(picks if len(picks) == min(len(picks), len(x)) else picks[:min(len(picks), len(x))], x if len(x) == min(len(picks), len(x)) else x[:min(len(picks), len(x))])
_outs = (_outs[0].sum(0),)
""",
     """
# mapped
def _body(p, r):
    _total_part = 0
    _total_part = _total_part + (r * rows[p]).sum() * p
    return (torch.as_tensor(_total_part),)
_outs = _map_in_chunks(_body, in_dims=(0, 0))(picks if len(picks) == min(len(picks), len(x)) else picks[:min(len(picks), len(x))], x if len(x) == min(len(picks), len(x)) else x[:min(len(picks), len(x))])
_outs = (_outs[0].sum(0),)
"""),
    (batch_loop_bodies, """
def f(p, t, n):
    total = 0
    for i in range(n):
        total = total + ((p[i] - t[i]) ** 2).mean()
    return total
""", ('stmts', 'unbatched'),
     """
# stmts
# unbatched
''
""",
     """
# stmts
if t.dim() == p.dim():
    _p_row = p if n == p.shape[0] else p[0:n:1]
    _t_row = t if n == t.shape[0] else t[0:n:1]
    _total_part = 0

    def _items_sum():
        _t = (_p_row - _t_row) ** 2
        return (_t.mean(tuple(range(1, _t.dim()))) if _t.dim() > 1 else _t.reshape(len(_t), -1).mean(1)).sum(0)
    _total_part = _summed_in_steps(((_p_row - _t_row) ** 2).mean() * n, _items_sum)
    _outs = (_total_part,)
else:
    _p_row = p if n == p.shape[0] else p[0:n:1]
    _t_row = t if n == t.shape[0] else t[0:n:1]
    _total_part = 0

    def _items_sum_1():
        _t_1 = (_broadcast_item(_p_row, _t_row) - _broadcast_item(_t_row, _p_row)) ** 2
        return (_t_1.mean(tuple(range(1, _t_1.dim()))) if _t_1.dim() > 1 else _t_1.reshape(len(_t_1), -1).mean(1)).sum(0)
    _total_part = _summed_in_steps(((_broadcast_item(_p_row, _t_row) - _broadcast_item(_t_row, _p_row)) ** 2).mean() * n, _items_sum_1)
    _outs = (_total_part,)
total = _outs[0]
# unbatched
''
"""),
    # per-item tensors whose ranks may differ: as they are, else the lower one lifted (no vmap)
    (batch_loop_bodies, """
def f(x, w):
    out = []
    for i in range(x.shape[0]):
        out.append((x[i] * w[i]).sum())
    return out
""", ('stmts', 'unbatched'),
     """
# stmts
# unbatched
''
""",
     """
# stmts
if w.dim() == x.dim():
    _x_row = x if x.shape[0] == x.shape[0] else x[0:x.shape[0]:1]
    _w_row = w if x.shape[0] == w.shape[0] else w[0:x.shape[0]:1]
    _t = _x_row * _w_row
    _out_item = _t.sum(tuple(range(1, _t.dim()))) if _t.dim() > 1 else _t.reshape(len(_t), -1).sum(1)
    _outs = (_out_item,)
else:
    _x_row = x if x.shape[0] == x.shape[0] else x[0:x.shape[0]:1]
    _w_row = w if x.shape[0] == w.shape[0] else w[0:x.shape[0]:1]
    _t_1 = _broadcast_item(_x_row, _w_row) * _broadcast_item(_w_row, _x_row)
    _out_item = _t_1.sum(tuple(range(1, _t_1.dim()))) if _t_1.dim() > 1 else _t_1.reshape(len(_t_1), -1).sum(1)
    _outs = (_out_item,)
out.extend(_outs[0].unbind(0))
# unbatched
''
"""),
    (batch_loop_bodies, """
def f(x, lengths):
    total = 0
    for i in range(x.shape[0]):
        total = total + x[i, :lengths[i]].sum()
    return total
""", ('stmts', 'unbatched'),
     """
# stmts
# unbatched
''
""",
     """
# stmts
if 2 >= lengths.dim():
    _x_row = x if x.shape[0] == x.shape[0] else x[0:x.shape[0]:1]
    _lengths_row = lengths if x.shape[0] == lengths.shape[0] else lengths[0:x.shape[0]:1]
    _total_part = 0
    _pos = torch.arange(_x_row.shape[1], device=_x_row.device)
    _in = _pos < (_slice_bound(_lengths_row) + _x_row.shape[1] * (_slice_bound(_lengths_row) < 0))[(slice(None),) + (None,) * (-lengths.dim() + 2)]
    _keep_1 = _in.reshape(_in.shape[:1] + _mask_shape[_in.shape[1:], _x_row.shape[1:]])

    def _items_sum():
        _t = torch.where(_keep_1, _x_row, 0)
        return (_t.sum(tuple(range(1, _t.dim()))) if _t.dim() > 1 else _t.reshape(len(_t), -1).sum(1)).sum(0)
    _total_part = _summed_in_steps(torch.where(_keep_1, _x_row, 0).sum(), _items_sum)
    _outs = (_total_part,)
else:

    def _body(_x_row, _lengths_row):
        _total_part = 0
        _pos = torch.arange(_x_row.shape[0], device=_x_row.device)
        _in = _pos < _slice_bound(_lengths_row) + _x_row.shape[0] * (_slice_bound(_lengths_row) < 0)
        _keep_1 = _in.reshape(_mask_shape[_in.shape, _x_row.shape])
        _total_part = _total_part + torch.where(_keep_1, _x_row, 0).sum()
        return (torch.as_tensor(_total_part),)
    _outs = _map_in_chunks(_body, in_dims=(0, 0))(x if x.shape[0] == x.shape[0] else x[0:x.shape[0]:1], lengths if x.shape[0] == lengths.shape[0] else lengths[0:x.shape[0]:1])
    _outs = (_outs[0].sum(0),)
total = _outs[0]
# unbatched
''
"""),
    (batch_loop_bodies, """
def f(a, n):
    total = 0
    for i in range(n):
        total = total + torch.linalg.det(a[i])
    return total
""", ('stmts', 'unbatched'),
     """
# stmts
# unbatched
''
""",
     """
# stmts
def _body(_a_row):
    _total_part = 0
    _total_part = _total_part + torch.linalg.det(_a_row)
    return (torch.as_tensor(_total_part),)
_outs = _map_in_chunks(_body, in_dims=(0,))(a if n == a.shape[0] else a[0:n:1])
_outs = (_outs[0].sum(0),)
total = _outs[0]
# unbatched
'`torch.linalg.det(...)` has no batched form'
"""),
    (batch_both_loop_levels, """
def f(a, b, out):
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = a[i, j] * b[i, j]
    return out
""", ('stmts', 'unbatched'),
     """
# stmts
def _body_1(_a_row_1, _b_row_1):
    if b.dim() == a.dim():
        _a_row = _a_row_1 if a.shape[1] == a.shape[1] else _a_row_1[0:a.shape[1]:1]
        _b_row = _b_row_1 if a.shape[1] == b.shape[1] else _b_row_1[0:a.shape[1]:1]
        _out_item = _a_row * _b_row
        _outs = (_out_item,)
    else:

        def _body(_a_row, _b_row):
            _out_item = _a_row * _b_row
            return (torch.as_tensor(_out_item),)
        _outs = _map_in_chunks(_body, in_dims=(0, 0))(_a_row_1 if a.shape[1] == a.shape[1] else _a_row_1[0:a.shape[1]:1], _b_row_1 if a.shape[1] == b.shape[1] else _b_row_1[0:a.shape[1]:1])
    _out_item_1 = _outs[0].reshape(_outs[0].shape[:1] + (1,) * (out.dim() - 1 - _outs[0].dim()) + _outs[0].shape[1:]).to(out.dtype if _outs[0].dim() == 1 else _outs[0].dtype)
    return (torch.as_tensor(_out_item_1),)
_outs_1 = _map_in_chunks(_body_1, in_dims=(0, 0))(a if a.shape[0] == a.shape[0] else a[0:a.shape[0]:1], b if a.shape[0] == b.shape[0] else b[0:a.shape[0]:1])
out[0:a.shape[0]:1, 0:a.shape[1]:1] = _outs_1[0].reshape(_outs_1[0].shape[:1] + (1,) * (out.dim() - 0 - _outs_1[0].dim()) + _outs_1[0].shape[1:]).to(out.dtype if _outs_1[0].dim() == 1 else _outs_1[0].dtype)
# unbatched
"the inner loop at line 3 picks its batched or vmapped form by its items' shapes at run time, which has no batched form here"
""",
     """
# stmts
if a.dim() >= 2 and b.dim() >= 2 and (b.dim() == a.dim()):
    _a_row = ((a if a.shape[0] == a.shape[0] else a[0:a.shape[0]:1]) if a.shape[1] == a.shape[1] else (a if a.shape[0] == a.shape[0] else a[0:a.shape[0]:1])[:, 0:a.shape[1]:1]).flatten(0, 1)
    _b_row = ((b if a.shape[0] == b.shape[0] else b[0:a.shape[0]:1]) if a.shape[1] == b.shape[1] else (b if a.shape[0] == b.shape[0] else b[0:a.shape[0]:1])[:, 0:a.shape[1]:1]).flatten(0, 1)
    _out_item = _a_row * _b_row
    _outs = (_out_item,)
    _out_item_1 = _outs[0].reshape(_outs[0].shape[:1] + (1,) * (out.dim() - 1 - _outs[0].dim()) + _outs[0].shape[1:]).to(out.dtype if _outs[0].dim() == 1 else _outs[0].dtype)
    _outs_1 = (_out_item_1.unflatten(0, (a.shape[0], a.shape[1])),)
else:

    def _body_1(_a_row_1, _b_row_1):
        if b.dim() == a.dim():
            _a_row = _a_row_1 if a.shape[1] == a.shape[1] else _a_row_1[0:a.shape[1]:1]
            _b_row = _b_row_1 if a.shape[1] == b.shape[1] else _b_row_1[0:a.shape[1]:1]
            _out_item = _a_row * _b_row
            _outs = (_out_item,)
        else:

            def _body(_a_row, _b_row):
                _out_item = _a_row * _b_row
                return (torch.as_tensor(_out_item),)
            _outs = _map_in_chunks(_body, in_dims=(0, 0))(_a_row_1 if a.shape[1] == a.shape[1] else _a_row_1[0:a.shape[1]:1], _b_row_1 if a.shape[1] == b.shape[1] else _b_row_1[0:a.shape[1]:1])
        _out_item_1 = _outs[0].reshape(_outs[0].shape[:1] + (1,) * (out.dim() - 1 - _outs[0].dim()) + _outs[0].shape[1:]).to(out.dtype if _outs[0].dim() == 1 else _outs[0].dtype)
        return (torch.as_tensor(_out_item_1),)
    _outs_1 = _map_in_chunks(_body_1, in_dims=(0, 0))(a if a.shape[0] == a.shape[0] else a[0:a.shape[0]:1], b if a.shape[0] == b.shape[0] else b[0:a.shape[0]:1])
out[0:a.shape[0]:1, 0:a.shape[1]:1] = _outs_1[0].reshape(_outs_1[0].shape[:1] + (1,) * (out.dim() - 0 - _outs_1[0].dim()) + _outs_1[0].shape[1:]).to(out.dtype if _outs_1[0].dim() == 1 else _outs_1[0].dtype)
# unbatched
''
"""),
    (batch_both_loop_levels, """
def f(a, w, out):
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = a[i, j] * w[i]
    return out
""", ('stmts', 'unbatched'),
     """
# stmts
def _body_1(_w_row, _a_row_1):
    if not isinstance(_w_row, torch.Tensor) or (a.dim() >= 3 and a.dim() >= _w_row.dim() + 2):
        _a_row = _a_row_1 if a.shape[1] == a.shape[1] else _a_row_1[0:a.shape[1]:1]
        _out_item = _a_row * _w_row
        _outs = (_out_item,)
    else:

        def _body(_a_row):
            _out_item = _a_row * _w_row
            return (torch.as_tensor(_out_item),)
        _outs = _map_in_chunks(_body, in_dims=(0,))(_a_row_1 if a.shape[1] == a.shape[1] else _a_row_1[0:a.shape[1]:1])
    _out_item_1 = _outs[0].reshape(_outs[0].shape[:1] + (1,) * (out.dim() - 1 - _outs[0].dim()) + _outs[0].shape[1:]).to(out.dtype if _outs[0].dim() == 1 else _outs[0].dtype)
    return (torch.as_tensor(_out_item_1),)
_outs_1 = _map_in_chunks(_body_1, in_dims=(0, 0))(w if a.shape[0] == w.shape[0] else w[0:a.shape[0]:1], a if a.shape[0] == a.shape[0] else a[0:a.shape[0]:1])
out[0:a.shape[0]:1, 0:a.shape[1]:1] = _outs_1[0].reshape(_outs_1[0].shape[:1] + (1,) * (out.dim() - 0 - _outs_1[0].dim()) + _outs_1[0].shape[1:]).to(out.dtype if _outs_1[0].dim() == 1 else _outs_1[0].dtype)
# unbatched
"the inner loop at line 3 picks its batched or vmapped form by its items' shapes at run time, which has no batched form here"
""",
     """
# stmts
def _body_1(_w_row, _a_row_1):
    if not isinstance(_w_row, torch.Tensor) or (a.dim() >= 3 and a.dim() >= _w_row.dim() + 2):
        _a_row = _a_row_1 if a.shape[1] == a.shape[1] else _a_row_1[0:a.shape[1]:1]
        _out_item = _a_row * _w_row
        _outs = (_out_item,)
    else:

        def _body(_a_row):
            _out_item = _a_row * _w_row
            return (torch.as_tensor(_out_item),)
        _outs = _map_in_chunks(_body, in_dims=(0,))(_a_row_1 if a.shape[1] == a.shape[1] else _a_row_1[0:a.shape[1]:1])
    _out_item_1 = _outs[0].reshape(_outs[0].shape[:1] + (1,) * (out.dim() - 1 - _outs[0].dim()) + _outs[0].shape[1:]).to(out.dtype if _outs[0].dim() == 1 else _outs[0].dtype)
    return (torch.as_tensor(_out_item_1),)
_outs_1 = _map_in_chunks(_body_1, in_dims=(0, 0))(w if a.shape[0] == w.shape[0] else w[0:a.shape[0]:1], a if a.shape[0] == a.shape[0] else a[0:a.shape[0]:1])
out[0:a.shape[0]:1, 0:a.shape[1]:1] = _outs_1[0].reshape(_outs_1[0].shape[:1] + (1,) * (out.dim() - 0 - _outs_1[0].dim()) + _outs_1[0].shape[1:]).to(out.dtype if _outs_1[0].dim() == 1 else _outs_1[0].dtype)
# unbatched
"the inner loop at line 3 picks its batched or vmapped form by its items' shapes at run time, which has no batched form here"
"""),
    (raise_on_empty_selections, """
def f(d, lab, n):
    total = 0
    for i in range(n):
        total = total + d[i][lab == lab[i]].max()
    return total
""", ('outline',),
     """
# outline
if lab.dim() >= 1: ...
_empty_max = _empty_max + _outs[0]
total = _outs[1]
""",
     """
# outline
_empty_max = 0
if lab.dim() >= 1: ...
_empty_max = _empty_max + _outs[0]
torch._assert_async(torch.as_tensor(_empty_max == 0), "max(): Expected reduction dim to be specified for input.numel() == 0. Specify the reduction dim with the 'dim' argument.")
total = _outs[1]
"""),
    (raise_on_empty_selections, """
def f(d, n):
    total = 0
    for i in range(n):
        total = total + d[i].max()
    return total
""", ('outline',),
     """
# outline
_d_row = d if n == d.shape[0] else d[0:n:1]
_total_part = 0
_total_part = _max_of_all(_d_row, 1).sum(0)
_outs = (_total_part,)
total = _outs[0]
""",
     """
# outline
_d_row = d if n == d.shape[0] else d[0:n:1]
_total_part = 0
_total_part = _max_of_all(_d_row, 1).sum(0)
_outs = (_total_part,)
total = _outs[0]
"""),
    (inline_inner_loops, """
def f(emb, w):
    total = 0
    for spk in emb:
        c = 0
        for utt in spk:
            c = c + utt * w
        total = total + c.sum()
    return total
""", ('body', 'inner_checks',),
     """
# body
c = 0
if isinstance(spk, torch.Tensor) and spk.dim() > 0 and isinstance(len(spk), int) and (len(spk) > 0) and (not _rounds_gradients(w)):
    'optimize_loss: loop at line 5 vectorized'
    if not isinstance(w, torch.Tensor) or (spk.dim() >= 2 and spk.dim() >= w.dim() + 1):
        utt = spk
        _c_part = 0
        _c_part = _summed_in_steps(utt.sum(0) * w, lambda: (utt * w).sum(0))
        _outs = (_c_part,)
    else:

        def _body(utt):
            _c_part = 0
            _c_part = _c_part + utt * w
            return (torch.as_tensor(_c_part),)
        _outs = _map_in_chunks(_body, in_dims=(0,))(spk)
        _outs = (_outs[0].sum(0),)
    if (_outs[0].dtype in (torch.uint8, torch.int8, torch.int16, torch.int32) and torch.result_type(c, _outs[0]) != _outs[0].dtype or (isinstance(c, torch.Tensor) and c.dtype == torch.bool and (_outs[0].dtype == torch.int64))) or _steps_differ(c, _outs[0], 0):
        "optimize_loss: as written, the loop at line 5: a sum starts from a value of another dtype than its items': the original adds in the start's wider dtype (a sum of narrower integers may wrap around), or, for bools added to a bool, as a logical or; float16/bfloat16 items onto a start other than 0 (1 for a product): the original rounds the start plus each item in turn"
        for utt in spk:
            c = c + utt * w
    else:
        c = c + _outs[0]
else:
    for utt in spk:
        c = c + utt * w
total = total + c.sum()
# inner_checks
""",
     """
# body
c = 0
if not isinstance(w, torch.Tensor) or (spk.dim() >= 2 and spk.dim() >= w.dim() + 1):
    utt = spk
    _c_part = 0
    _c_part = _summed_in_steps(utt.sum(0) * w, lambda: (utt * w).sum(0))
    _outs = (_c_part,)
else:

    def _body(utt):
        _c_part = 0
        _c_part = _c_part + utt * w
        return (torch.as_tensor(_c_part),)
    _outs = _map_in_chunks(_body, in_dims=(0,))(spk)
    _outs = (_outs[0].sum(0),)
c = c + _outs[0]
total = total + c.sum()
# inner_checks
isinstance(emb, torch.Tensor); emb.dim() - 1 > 0; isinstance(emb.shape[1], int); emb.shape[1] > 0
"""),
    (inline_inner_loops, """
def f(x, k, n):
    total = 0
    for i in range(n):
        for j in range(k[i]):
            total = total + x[i, j]
    return total
""", ('body', 'inner_checks',),
     """
# body
if isinstance(x, torch.Tensor) and isinstance(i, int) and (k[i] <= x.shape[1]) and isinstance(k[i], int) and (k[i] > 0):
    'optimize_loss: loop at line 4 vectorized'
    _x_row = x[i] if k[i] == x.shape[1] else x[i, 0:k[i]:1]
    _total_part = 0
    _total_part = _x_row.sum(0)
    _outs = (_total_part,)
    if (_outs[0].dtype in (torch.uint8, torch.int8, torch.int16, torch.int32) and torch.result_type(total, _outs[0]) != _outs[0].dtype or (isinstance(total, torch.Tensor) and total.dtype == torch.bool and (_outs[0].dtype == torch.int64))) or _steps_differ(total, _outs[0], 0):
        "optimize_loss: as written, the loop at line 4: a sum starts from a value of another dtype than its items': the original adds in the start's wider dtype (a sum of narrower integers may wrap around), or, for bools added to a bool, as a logical or; float16/bfloat16 items onto a start other than 0 (1 for a product): the original rounds the start plus each item in turn"
        for j in range(k[i]):
            total = total + x[i, j]
    else:
        total = total + _outs[0]
else:
    for j in range(k[i]):
        total = total + x[i, j]
# inner_checks
""",
     """
Unsupported: the inner loop at line 4 needs a per-iteration runtime check: k[i] <= x.shape[1] (it reads `i`, which differs per iteration)
"""),
    # the inner check on a value the outer body derives from its row: on the first item
    (inline_inner_loops, """
def f(x, y):
    total = 0
    for s in range(x.shape[0]):
        p = x[s] * 2
        for i in range(len(p)):
            total = total + p[i] * y[i]
    return total
""", ('prelude', 'inner_checks'),
     """
# prelude
# inner_checks
""",
     """
# prelude
try:
    _s = 0
    _p = x[_s] * 2
    _first_item_ok = isinstance(x[_s], torch.Tensor) and isinstance(_p, torch.Tensor) and (len(_p) <= _p.shape[0]) and (len(_p) <= y.shape[0]) and isinstance(len(_p), int) and (len(_p) > 0)
except Exception:
    _first_item_ok = False
# inner_checks
isinstance(y, torch.Tensor); _first_item_ok
"""),
    # ... not on a per-item Python number's value
    (inline_inner_loops, """
def f(x, counts):
    total = 0
    for s in range(x.shape[0]):
        n = counts[s].item()
        p = x[s] * 2
        for i in range(n):
            total = total + p[i]
    return total
""", ('prelude', 'inner_checks'),
     """
# prelude
# inner_checks
""",
     """
Unsupported: the inner loop at line 6 needs a per-iteration runtime check: n <= p.shape[0] (it reads the value of `n`, not only its type and shape)
"""),
    (rename_rebound_loop_variables, """
def f(x, centroids):
    loss = 0
    for k, c in enumerate(centroids):
        if k == 0:
            c = c / c.norm()
        loss += (c * x).sum()
    return loss
""", ('body',),
     """
# body
if k == 0:
    c = c / c.norm()
loss += (c * x).sum()
""",
     """
# body
_c = c
if k == 0:
    _c = _c / _c.norm()
loss += (_c * x).sum()
"""),
    (rename_rebound_loop_variables, """
def f(x, centroids):
    loss = 0
    for c in centroids:
        d = c / c.norm()
        loss += (d * x).sum()
    return loss
""", ('body',),
     """
# body
d = c / c.norm()
loss += (d * x).sum()
""",
     """
# body
d = c / c.norm()
loss += (d * x).sum()
"""),
    (hoist_invariant_checks, """
def f(preds, targets, w, n):
    loss = 0
    for i in range(n):
        assert preds[i].shape == targets[i].shape, 'sizes'
        if w is not None:
            assert len(w) == preds[i].shape[-1]
        loss += (preds[i] - targets[i]).abs().sum()
    return loss
""", ('body', 'first', 'checks',),
     """
# body
assert preds[i].shape == targets[i].shape, 'sizes'
if w is not None:
    assert len(w) == preds[i].shape[-1]
loss += (preds[i] - targets[i]).abs().sum()
# first
# checks
""",
     """
# body
loss += (preds[i] - targets[i]).abs().sum()
# first
assert preds[0].shape == targets[0].shape, 'sizes'
if w is not None:
    assert len(w) == preds[0].shape[-1]
# checks
isinstance(preds, torch.Tensor) and isinstance(targets, torch.Tensor)
"""),
    (hoist_invariant_checks, """
def f(preds, n):
    loss = 0
    for i in range(n):
        p = preds[i]
        assert p.dim() == 1
        loss += p.sum()
    return loss
""", ('body', 'first', 'checks',),
     """
# body
p = preds[i]
assert p.dim() == 1
loss += p.sum()
# first
# checks
""",
     """
# body
p = preds[i]
assert p.dim() == 1
loss += p.sum()
# first
# checks
"""),
    (hoist_calls_under_index_tests, """
def f(emb, cens, s, u):
    out = []
    for c, cen in enumerate(cens):
        if s == c:
            cen = own_centroid(emb, s, u)
        out.append(cos(emb[s, u], cen))
    return out
""", ('body', 'first', 'helper_checks'),
     """
# body
_cen = cen
if s == c:
    _cen = own_centroid(emb, s, u)
out.append(cos(emb[s, u], _cen))
# first
# helper_checks
""",
     """
# body
_cen = cen
if s == c:
    _cen = _cen_1
out.append(cos(emb[s, u], _cen))
# first
_cen_1 = own_centroid(emb, s, u)
# helper_checks
any((s == _k for _k in range(0, len(cens), 1)))
"""),
    (hoist_calls_under_index_tests, """
def f(emb, cens, s, u):
    out = []
    for c, cen in enumerate(cens):
        if s == c:
            cen = own_centroid(emb, s, u)
        else:
            cen = cen * 2
        out.append(cos(emb[s, u], cen))
    return out
""", ('body', 'first', 'helper_checks'),
     """
# body
_cen = cen
if s == c:
    _cen = own_centroid(emb, s, u)
else:
    _cen = _cen * 2
out.append(cos(emb[s, u], _cen))
# first
# helper_checks
""",
     """
# body
_cen = cen
if s == c:
    _cen = _cen_1
else:
    _cen = _cen * 2
out.append(cos(emb[s, u], _cen))
# first
_cen_1 = own_centroid(emb, s, u)
# helper_checks
any((s == _k for _k in range(0, len(cens), 1)))
"""),
    (hoist_calls_under_index_tests, """
def f(emb, cens, s, u):
    out = []
    for c in range(len(cens)):
        cen = own_centroid(emb, s, u) if s == c else cens[c]
        out.append(cos(emb[s, u], cen))
    return out
""", ('body', 'first', 'helper_checks'),
     """
# body
cen = own_centroid(emb, s, u) if s == c else cens[c]
out.append(cos(emb[s, u], cen))
# first
# helper_checks
""",
     """
# body
if s == c:
    cen = _cen
else:
    cen = cens[c]
out.append(cos(emb[s, u], cen))
# first
_cen = own_centroid(emb, s, u)
# helper_checks
any((s == _k for _k in range(0, len(cens), 1)))
"""),
    (hoist_calls_under_index_tests, """
def f(emb, cens, s, u):
    out = []
    for c, cen in enumerate(cens):
        if s == c:
            cen = own_centroid(emb, c, u)
        out.append(cos(emb[s, u], cen))
    return out
""", ('body', 'first'),
     """
# body
_cen = cen
if s == c:
    _cen = own_centroid(emb, c, u)
out.append(cos(emb[s, u], _cen))
# first
""",
     """
# body
_cen = cen
if s == c:
    _cen = own_centroid(emb, c, u)
out.append(cos(emb[s, u], _cen))
# first
"""),
    (index_value_checks_to_ranges, """
def f(emb, cens):
    out = emb.new_zeros(emb.shape[0], cens.shape[0])
    for s in range(emb.shape[0]):
        for c, cen in enumerate(cens):
            if s == c:
                cen = own_centroid(emb, s)
            out[s, c] = cen.sum()
    return out
""", ('body', 'helper_checks'),
     """
# body
if isinstance(cens, torch.Tensor) and cens.dim() > 0 and isinstance(out, torch.Tensor) and _apart(out, (cens,)) and isinstance(len(cens), int) and (len(cens) > 0) and any((s == _k for _k in range(0, len(cens), 1))) and isinstance(s, int) and (not _rounds_gradients(emb)):
    'optimize_loss: loop at line 4 vectorized'
    _cen_1 = own_centroid(emb, s)

    def _body(c, cen):
        _cen = cen
        _cond = torch.ne(s == c, False)
        _cen = torch.where(_cond, _merged_shape(_fixed_operand(_cond, _cen_1), _cen), _cen)
        _out_item = _cen.sum()
        return (torch.as_tensor(_out_item),)
    _outs = _map_in_chunks(_body, in_dims=(0, 0))(torch.arange(0, len(cens), 1, device=cens.device), cens)
    out[s, 0:len(cens):1] = _outs[0].reshape(_outs[0].shape[:1] + (1,) * (out.dim() - 1 - _outs[0].dim()) + _outs[0].shape[1:]).to(out.dtype if _outs[0].dim() == 1 else _outs[0].dtype)
else:
    for c, cen in enumerate(cens):
        if s == c:
            cen = own_centroid(emb, s)
        out[s, c] = cen.sum()
# helper_checks
""",
     """
# body
if isinstance(cens, torch.Tensor) and cens.dim() > 0 and isinstance(out, torch.Tensor) and _apart(out, (cens,)) and isinstance(len(cens), int) and (len(cens) > 0) and isinstance(s, int) and (not _rounds_gradients(emb)):
    'optimize_loss: loop at line 4 vectorized'
    _cen_1 = own_centroid(emb, s)

    def _body(c, cen):
        _cen = cen
        _cond = torch.ne(s == c, False)
        _cen = torch.where(_cond, _merged_shape(_fixed_operand(_cond, _cen_1), _cen), _cen)
        _out_item = _cen.sum()
        return (torch.as_tensor(_out_item),)
    _outs = _map_in_chunks(_body, in_dims=(0, 0))(torch.arange(0, len(cens), 1, device=cens.device), cens)
    out[s, 0:len(cens):1] = _outs[0].reshape(_outs[0].shape[:1] + (1,) * (out.dim() - 1 - _outs[0].dim()) + _outs[0].shape[1:]).to(out.dtype if _outs[0].dim() == 1 else _outs[0].dtype)
else:
    for c, cen in enumerate(cens):
        if s == c:
            cen = own_centroid(emb, s)
        out[s, c] = cen.sum()
# helper_checks
_run_eagerly(lambda: all((any((_s == _k for _k in range(0, len(cens), 1))) for _s in range(0, emb.shape[0], 1))))
"""),
    (index_value_checks_to_ranges, """
def f(x, w, n):
    total = 0
    for i in range(n):
        row = 0
        for j in range(4):
            row = row + w[j] * x[i]
        total = total + row
    return total
""", ('body', 'helper_checks'),
     """
# body
row = 0
if isinstance(w, torch.Tensor) and 4 <= w.shape[0] and (4 > 0) and (not _rounds_gradients(x)):
    'optimize_loss: loop at line 5 vectorized'
    if not isinstance(x[i], torch.Tensor) or (w.dim() >= 2 and w.dim() >= x[i].dim() + 1):
        _w_row = w if 4 == w.shape[0] else w[0:4:1]
        _row_part = 0
        _row_part = _summed_in_steps(_w_row.sum(0) * x[i], lambda: (_w_row * x[i]).sum(0))
        _outs = (_row_part,)
    else:

        def _body(_w_row):
            _row_part = 0
            _row_part = _row_part + _w_row * x[i]
            return (torch.as_tensor(_row_part),)
        _outs = _map_in_chunks(_body, in_dims=(0,))(w if 4 == w.shape[0] else w[0:4:1])
        _outs = (_outs[0].sum(0),)
    if (_outs[0].dtype in (torch.uint8, torch.int8, torch.int16, torch.int32) and torch.result_type(row, _outs[0]) != _outs[0].dtype or (isinstance(row, torch.Tensor) and row.dtype == torch.bool and (_outs[0].dtype == torch.int64))) or _steps_differ(row, _outs[0], 0):
        "optimize_loss: as written, the loop at line 5: a sum starts from a value of another dtype than its items': the original adds in the start's wider dtype (a sum of narrower integers may wrap around), or, for bools added to a bool, as a logical or; float16/bfloat16 items onto a start other than 0 (1 for a product): the original rounds the start plus each item in turn"
        for j in range(4):
            row = row + w[j] * x[i]
    else:
        row = row + _outs[0]
else:
    for j in range(4):
        row = row + w[j] * x[i]
total = total + row
# helper_checks
""",
     """
# body
row = 0
if isinstance(w, torch.Tensor) and 4 <= w.shape[0] and (4 > 0) and (not _rounds_gradients(x)):
    'optimize_loss: loop at line 5 vectorized'
    if not isinstance(x[i], torch.Tensor) or (w.dim() >= 2 and w.dim() >= x[i].dim() + 1):
        _w_row = w if 4 == w.shape[0] else w[0:4:1]
        _row_part = 0
        _row_part = _summed_in_steps(_w_row.sum(0) * x[i], lambda: (_w_row * x[i]).sum(0))
        _outs = (_row_part,)
    else:

        def _body(_w_row):
            _row_part = 0
            _row_part = _row_part + _w_row * x[i]
            return (torch.as_tensor(_row_part),)
        _outs = _map_in_chunks(_body, in_dims=(0,))(w if 4 == w.shape[0] else w[0:4:1])
        _outs = (_outs[0].sum(0),)
    if (_outs[0].dtype in (torch.uint8, torch.int8, torch.int16, torch.int32) and torch.result_type(row, _outs[0]) != _outs[0].dtype or (isinstance(row, torch.Tensor) and row.dtype == torch.bool and (_outs[0].dtype == torch.int64))) or _steps_differ(row, _outs[0], 0):
        "optimize_loss: as written, the loop at line 5: a sum starts from a value of another dtype than its items': the original adds in the start's wider dtype (a sum of narrower integers may wrap around), or, for bools added to a bool, as a logical or; float16/bfloat16 items onto a start other than 0 (1 for a product): the original rounds the start plus each item in turn"
        for j in range(4):
            row = row + w[j] * x[i]
    else:
        row = row + _outs[0]
else:
    for j in range(4):
        row = row + w[j] * x[i]
total = total + row
# helper_checks
"""),
    (split_tuple_assignments, """
def f(prob, onehot, ignore):
    ds = []
    for c in range(prob.shape[1]):
        if c == ignore:
            continue
        p, t = prob[:, c], onehot[:, c]
        ds.append((p * t).sum())
    return ds
""", ('body',),
     """
# body
if c == ignore:
    continue
p, t = (prob[:, c], onehot[:, c])
ds.append((p * t).sum())
""",
     """
# body
if c == ignore:
    continue
p = prob[:, c]
t = onehot[:, c]
ds.append((p * t).sum())
"""),
    (split_tuple_assignments, """
def f(x, a, b):
    out = []
    for i in range(x.shape[0]):
        a, b = b, a * x[i]
        out.append(a)
    return out
""", ('body',),
     """
# body
a, b = (b, a * x[i])
out.append(a)
""",
     """
# body
a, b = (b, a * x[i])
out.append(a)
"""),
    (no_grad_blocks_to_detach, """
def f(x, t):
    loss = 0
    for i in range(x.shape[0]):
        with torch.no_grad():
            w = torch.sigmoid(x[i]).mean()
        loss = loss + w * (x[i] - t[i]).pow(2).sum()
    return loss
""", ('body',),
     """
# body
with torch.no_grad():
    w = torch.sigmoid(x[i]).mean()
loss = loss + w * (x[i] - t[i]).pow(2).sum()
""",
     """
# body
w = torch.sigmoid(x[i]).mean()
w = _detached(w)
loss = loss + w * (x[i] - t[i]).pow(2).sum()
"""),
    (no_grad_blocks_to_detach, """
def f(x, centers, y):
    loss = 0
    for i in range(x.shape[0]):
        loss = loss + (x[i] - centers[y[i]]).pow(2).sum()
        with torch.no_grad():
            centers[y[i]] = centers[y[i]] * 0.9 + x[i] * 0.1
    return loss
""", ('body',),
     """
# body
loss = loss + (x[i] - centers[y[i]]).pow(2).sum()
with torch.no_grad():
    centers[y[i]] = centers[y[i]] * 0.9 + x[i] * 0.1
""",
     """
# body
loss = loss + (x[i] - centers[y[i]]).pow(2).sum()
with torch.no_grad():
    centers[y[i]] = centers[y[i]] * 0.9 + x[i] * 0.1
"""),
    (invariant_branches_to_checks, """
def f(sim, labels, hard):
    total = 0
    for i in range(sim.shape[0]):
        neg = sim[i][labels != labels[i]]
        if hard.margin is not None:
            neg = neg[neg + hard.margin > 0]
            if len(neg) < 1:
                continue
        else:
            neg = neg * 2
        total = total + neg.exp().sum()
    return total
""", ('body', 'helper_checks', 'taken_branches'),
     """
# body
neg = sim[i][labels != labels[i]]
if hard.margin is not None:
    neg = neg[neg + hard.margin > 0]
    if len(neg) < 1:
        continue
else:
    neg = neg * 2
total = total + neg.exp().sum()
# helper_checks
# taken_branches
""",
     """
# body
neg = sim[i][labels != labels[i]]
neg = neg[neg + hard.margin > 0]
if len(neg) < 1:
    continue
total = total + neg.exp().sum()
# helper_checks
hard.margin is not None
# taken_branches
['hard.margin is not None']
"""),
    (invariant_branches_to_checks, """
def f(sim, labels, hard):
    total = 0
    for i in range(sim.shape[0]):
        neg = sim[i][labels != labels[i]]
        if hard.get(i):
            continue
        if neg.sum() > 0:
            continue
        total = total + neg.exp().sum()
    return total
""", ('body', 'helper_checks'),
     """
# body
neg = sim[i][labels != labels[i]]
if hard.get(i):
    continue
if neg.sum() > 0:
    continue
total = total + neg.exp().sum()
# helper_checks
""",
     """
# body
neg = sim[i][labels != labels[i]]
if hard.get(i):
    continue
if neg.sum() > 0:
    continue
total = total + neg.exp().sum()
# helper_checks
"""),
    (data_attributes_to_detach, """
def f(x, t):
    loss = 0
    for i in range(x.shape[0]):
        s, perm = torch.sort(x[i], descending=True)
        perm = perm.data
        loss = loss + (s * t[i][perm].data).sum()
    return loss
""", ('body',),
     """
# body
s, perm = torch.sort(x[i], descending=True)
perm = perm.data
loss = loss + (s * t[i][perm].data).sum()
""",
     """
# body
s, perm = torch.sort(x[i], descending=True)
perm = perm.detach()
loss = loss + (s * t[i][perm].detach()).sum()
"""),
    (data_attributes_to_detach, """
def f(x, w):
    loss = 0
    for i in range(x.shape[0]):
        v = x[i] * 2
        v.data.clamp_(min=0)
        v.data[0] = 1
        loss = loss + (v * w).sum()
    return loss
""", ('body',),
     """
# body
v = x[i] * 2
v.data.clamp_(min=0)
v.data[0] = 1
loss = loss + (v * w).sum()
""",
     """
# body
v = x[i] * 2
v.data.clamp_(min=0)
v.data[0] = 1
loss = loss + (v * w).sum()
"""),
    (row_index_adds_to_writes, """
def f(m, l, u, p, b):
    for i in range(m.shape[0]):
        m[i].index_add_(0, l[i], p[i] * (u[i] - b[i]))
        m[i].index_add_(0, u[i], p[i] * (b[i] - l[i]))
    return m
""", ('body',),
     """
# body
m[i].index_add_(0, l[i], p[i] * (u[i] - b[i]))
m[i].index_add_(0, u[i], p[i] * (b[i] - l[i]))
""",
     """
# body
m[i] = m[i].index_add(0, l[i], p[i] * (u[i] - b[i])).index_add(0, u[i], p[i] * (b[i] - l[i]))
"""),
    (row_index_adds_to_writes, """
def f(m, l, p):
    for i in range(m.shape[0]):
        m[i].index_add_(0, l[i], p[i] * m[i, 0])
    return m
""", ('body',),
     """
# body
m[i].index_add_(0, l[i], p[i] * m[i, 0])
""",
     """
# body
m[i].index_add_(0, l[i], p[i] * m[i, 0])
"""),
    (merge_chained_indexing, """
def f(x, out, n):
    for i in range(n):
        out[i][0] = x[i][1:3].sum() + x[i][0][x[i][2].long()]
    return out
""", ('body', 'checks',),
     """
# body
out[i][0] = x[i][1:3].sum() + x[i][0][x[i][2].long()]
# checks
""",
     """
# body
out[i, 0] = x[i, 1:3].sum() + x[i, 0][x[i, 2].long()]
# checks
isinstance(out, torch.Tensor) and isinstance(x, torch.Tensor)
"""),
    (merge_chained_indexing, """
def f(x, mask, lengths, n):
    for i in range(n):
        mask[i][:lengths[i]] = x[i][1:lengths[i] + 1]
    return mask
""", ('body', 'checks',),
     """
# body
mask[i][:lengths[i]] = x[i][1:lengths[i] + 1]
# checks
""",
     """
# body
mask[i, :lengths[i]] = x[i, 1:lengths[i] + 1]
# checks
isinstance(mask, torch.Tensor) and isinstance(x, torch.Tensor)
"""),
    (merge_chained_indexing, """
def f(g, mask, lengths, n):
    for i in range(n):
        mask[i][:g(lengths[i])] = 1
    return mask
""", ('body', 'checks',),
     """
# body
mask[i][:g(lengths[i])] = 1
# checks
""",
     """
# body
mask[i][:g(lengths[i])] = 1
# checks
"""),
    (merge_chained_indexing, """
def f(d, out, n):
    for i in range(n):
        out[0:2][i] = d['key'][i].sum()
    return out
""", ('body', 'checks',),
     """
# body
out[0:2][i] = d['key'][i].sum()
# checks
""",
     """
# body
out[0:2][i] = d['key'][i].sum()
# checks
"""),
    (asserts_to_counters, """
def f(p, n):
    loss = 0
    for i in range(n):
        assert p[i].min() > 0, 'negative'
        loss = loss + p[i].log().sum()
    return loss
""", ('body', 'host_errors',),
     """
# body
assert p[i].min() > 0, 'negative'
loss = loss + p[i].log().sum()
# host_errors
[]
""",
     """
# body
_fails = _fails + ((p[i].min() > 0) == 0)
loss = loss + p[i].log().sum()
# host_errors
['_fails']
"""),
    (asserts_to_counters, """
def f(p, n):
    loss = 0
    for i in range(n):
        assert p[i].min() > 0, f'row {i}'
        loss = loss + p[i].log().sum()
    return loss
""", ('body', 'host_errors',),
     """
# body
assert p[i].min() > 0, f'row {i}'
loss = loss + p[i].log().sum()
# host_errors
[]
""",
     """
# body
assert p[i].min() > 0, f'row {i}'
loss = loss + p[i].log().sum()
# host_errors
[]
"""),
    (inplace_writes_to_functional, """
def f(x, n):
    loss = 0
    for i in range(n):
        s = x[i] * 2
        s.masked_fill_(s > 1, 1.0).mul_(0.5)
        loss += s.sum()
    return loss
""", ('body',),
     """
# body
s = _x_row * 2
s.masked_fill_(s > 1, 1.0).mul_(0.5)
_loss_part = _loss_part + s.sum()
""",
     """
# body
s = _x_row * 2
s = _inplace_result(s, _inplace_result(s, s.masked_fill(s > 1, 1.0)).mul(0.5))
_loss_part = _loss_part + s.sum()
"""),
    # `torch.exp(w)`, `gamma * lam` are the same in every iteration, their derivatives may be inf
    (invariant_values_take_no_grad, """
def f(x, w, gamma, lam):
    s = 0
    for i in range(len(x)):
        s += (x[i] * torch.exp(w)).sum() * (gamma * lam)
    return s
""", ('checks',),
     """
# checks
isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(len(x), int) and len(x) > 0
""",
     """
# checks
isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(len(x), int) and len(x) > 0 and type(lam) in (int, float) and abs(lam) < float('inf') and not (torch.is_grad_enabled() and (not isinstance(w, (int, float, str, type(None))) and getattr(w, 'requires_grad', True)))
"""),
    # a module's constants (the dtype `torch.float64`) take no gradient: only `n` is checked
    (invariant_values_take_no_grad, """
def f(x, n):
    s = 0
    for i in range(len(x)):
        s += (x[i] * torch.ones(n, dtype=torch.float64).exp()).sum()
    return s
""", ('checks',),
     """
# checks
isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(len(x), int) and len(x) > 0
""",
     """
# checks
isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(len(x), int) and len(x) > 0 and not (torch.is_grad_enabled() and (not isinstance(n, (int, float, str, type(None))) and getattr(n, 'requires_grad', True)))
"""),
    # `w` gets a part of its gradient from every iteration (added in 16 bits in turn as written);
    # the rows `x[i]` one each, `n` through a shape only, `lst` only has items appended
    (rounded_gradients_run_as_written, """
def f(x, w, n, lst):
    s = 0
    for i in range(len(x)):
        s = s + x[i] * w + x[i].reshape(n.shape)
        lst.append(x[i])
    return s
""", ('checks',),
     """
# checks
isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and type(lst) is list and isinstance(len(x), int) and len(x) > 0
""",
     """
# checks
isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and type(lst) is list and isinstance(len(x), int) and len(x) > 0 and not _rounds_gradients(w)
"""),
    # rows at the index only, an element, an index read on the host, a module constant: no check
    (rounded_gradients_run_as_written, """
def f(x, y, t):
    s = 0
    for i, r in enumerate(x):
        s = s + r * y[i, 0] + t[i].item() * torch.ones(2, dtype=torch.float16)
    return s
""", ('checks',),
     """
# checks
isinstance(y, torch.Tensor) and len(x) <= y.shape[0] and isinstance(t, torch.Tensor) and len(x) <= t.shape[0] and isinstance(x, torch.Tensor) and x.dim() > 0 and isinstance(len(x), int) and len(x) > 0
""",
     """
# checks
isinstance(y, torch.Tensor) and len(x) <= y.shape[0] and isinstance(t, torch.Tensor) and len(x) <= t.shape[0] and isinstance(x, torch.Tensor) and x.dim() > 0 and isinstance(len(x), int) and len(x) > 0
"""),
    # a range of numbers takes no gradient whatever its bounds (a CRF's `torch.arange(batch)`
    # rows): no check on `n`
    (invariant_values_take_no_grad, """
def f(x, n):
    s = 0
    for i in range(len(x)):
        s += (x[i] * torch.arange(n)).sum()
    return s
""", ('checks',),
     """
# checks
isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(len(x), int) and len(x) > 0
""",
     """
# checks
isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(len(x), int) and len(x) > 0
"""),
    # a bounded derivative (sigmoid), sums and scaling: the same once or per iteration
    (invariant_values_take_no_grad, """
def f(x, w):
    s = 0
    for i in range(len(x)):
        s += (x[i] * torch.sigmoid(w)).sum() + w.sum() * 2
    return s
""", ('checks',),
     """
# checks
isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(len(x), int) and len(x) > 0
""",
     """
# checks
isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(len(x), int) and len(x) > 0
"""),
    (promoting_folds_run_as_written, """
def f(x, y):
    s = torch.zeros(())
    for i in range(len(x)):
        if y[i] < 0:
            s = s + x[i]
    return s
""", ('outline',),
     """
# outline
if x.dim() == y.dim(): ...
if isinstance(s, torch.Tensor) or _outs[1].any(): ...
""",
     """
# outline
if x.dim() == y.dim(): ...
if (_outs[0].dtype in (torch.uint8, torch.int8, torch.int16, torch.int32) and torch.result_type(s, _outs[0]) != _outs[0].dtype or (isinstance(s, torch.Tensor) and s.dtype == torch.bool and (_outs[0].dtype == torch.int64))) or _steps_differ(s, _outs[0], 0) or (isinstance(s, torch.Tensor) and torch.result_type(s, _outs[0]) != s.dtype): ...
"""),
    # no fold that may promote (a sum from the int 0 is its items' sum): no change
    (promoting_folds_run_as_written, """
def f(x):
    s = 0
    for i in range(x.shape[0]):
        s = s + x[i]
    return s
""", ('outline',),
     """
# outline
_x_row = x if x.shape[0] == x.shape[0] else x[0:x.shape[0]:1]
_s_part = 0
_s_part = _x_row.sum(0)
_outs = (_s_part,)
s = _outs[0]
""",
     """
# outline
_x_row = x if x.shape[0] == x.shape[0] else x[0:x.shape[0]:1]
_s_part = 0
_s_part = _x_row.sum(0)
_outs = (_s_part,)
s = _outs[0]
"""),
    (class_selections_to_segments, """
def f(emb, labels, n):
    centers = []
    for c in range(1, n, 2):
        m = labels == c
        centers.append(emb[m].mean(0) * m.sum() + torch.sum(emb[c == labels], dim=0))
    return centers
""", ('body', 'prelude', 'checks'),
     """
# body
m = labels == c
centers.append(emb[m].mean(0) * m.sum() + torch.sum(emb[c == labels], dim=0))
# prelude
# checks
""",
     """
# body
centers.append(_emb_mean[(c - 1) // 2] * _labels_count[(c - 1) // 2] + _emb_sum[(c - 1) // 2])
# prelude
_emb_mean = _class_rows(emb, labels, 1, n, 2, 'mean')
_labels_count = _class_rows(None, labels, 1, n, 2, 'count')
_emb_sum = _class_rows(emb, labels, 1, n, 2, 'sum')
# checks
_emb_mean is not None and _labels_count is not None and _emb_sum is not None
"""),
    # the labels change in the loop: no segments
    (class_selections_to_segments, """
def f(emb, labels, n):
    centers = []
    for c in range(n):
        labels = labels + 1
        centers.append(emb[labels == c].mean(0))
    return centers
""", ('body', 'prelude'),
     """
# body
labels = labels + 1
centers.append(emb[labels == c].mean(0))
# prelude
""",
     """
# body
labels = labels + 1
centers.append(emb[labels == c].mean(0))
# prelude
"""),
    # a max, a mask other than `labels == c`, a keepdim: as they are
    (class_selections_to_segments, """
def f(emb, labels, n):
    centers = []
    for c in range(n):
        centers.append(emb[labels == c].amax(0) + emb[labels > c].sum(0)
                       + emb[labels.eq(c)].mean(0, keepdim=True))
    return centers
""", ('body', 'prelude'),
     """
# body
centers.append(emb[labels == c].amax(0) + emb[labels > c].sum(0) + emb[labels.eq(c)].mean(0, keepdim=True))
# prelude
""",
     """
# body
centers.append(emb[labels == c].amax(0) + emb[labels > c].sum(0) + emb[labels.eq(c)].mean(0, keepdim=True))
# prelude
"""),
    # `.item() / scale` needs `scale` no tensor, `scale[i]` a tensor: the check never holds
    (contradicting_checks, """
def f(x, scale):
    s = 0.0
    t = 0
    for i in range(len(x)):
        s += x[i].sum().item() / scale
        t = t + scale[i] * x[i]
    return s, t
""", ('checks',),
     """
# checks
not isinstance(scale, torch.Tensor) and isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(scale, torch.Tensor) and len(x) <= scale.shape[0] and isinstance(len(x), int) and len(x) > 0 and not _rounds_gradients(scale)
""",
     """
Unsupported: its runtime check can never hold: it needs both `isinstance(scale, torch.Tensor)` and `not isinstance(scale, torch.Tensor)`, which the rewrite assumes for different uses of one value
"""),
    # `scale` only divides: a number, no contradiction
    (contradicting_checks, """
def f(x, scale):
    s = 0.0
    for i in range(len(x)):
        s += x[i].sum().item() / scale
    return s
""", ('checks',),
     """
# checks
not isinstance(scale, torch.Tensor) and isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(len(x), int) and len(x) > 0 and not _rounds_gradients(scale)
""",
     """
# checks
not isinstance(scale, torch.Tensor) and isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(len(x), int) and len(x) > 0 and not _rounds_gradients(scale)
"""),
]

ALWAYS_FILLING = {runtime_checks, outline_body, batch_loop_bodies}


@pytest.mark.parametrize("stage, src, fields, before, after", CASES,
                         ids=[f"{pass_name(c[0])}-{k}" for k, c in enumerate(CASES)])
def test_golden(stage, src, fields, before, after):
    plan, ctx = plan_before(src, stage)
    assert "\n" + show(plan, fields) == before  # the cases' strings start on a new line
    try:
        plan = stage.stage(plan, ctx)
    except Unsupported as exc:
        assert after == f"\nUnsupported: {exc.reason}\n"
    else:
        assert "\n" + show(plan, fields) == after


def test_every_stage_has_a_case_and_a_no_change_case():
    # their own tests: inline_helper_calls and helper_effects below, module_loss_calls in
    # test_module_loss_calls, outer_dependent_ranges_to_masks (an inner loop's stage) in its
    # test module
    stages = set(vectorize_loops.LOOP_STAGES) - {inline_helper_calls, helper_effects,
                                                 module_loss_calls, outer_dependent_ranges_to_masks}
    assert {c[0] for c in CASES} == stages
    unchanged = {c[0] for c in CASES if c[3] == c[4] or c[4].startswith("\nUnsupported")}
    assert stages - unchanged == ALWAYS_FILLING


HELPERS = """
import torch


def sq_err(p, t):
    d = p - t
    return (d * d).mean()


def f(p, t, n):
    total = 0
    for i in range(n):
        total = total + sq_err(p[i], t[i])
    return total


def g(p, t, n):
    total = 0
    for i in range(n):
        total = total + (p[i] - t[i]).abs().mean()
    return total


CALLS = [0]


def counted(p, t):
    CALLS[0] += 1
    return (p - t).mean()


def h(p, t, n):
    total = 0
    for i in range(n):
        total = total + counted(p[i], t[i])
    return total


def ticked(p, t, n, counter, weights):
    total = 0
    for i in range(n):
        total = total + (p[i] - t[i]).mean() * weights.get("w") + counter.tick()
    return total


def read(p, t, n, weights):
    total = 0
    for i in range(n):
        total = total + (p[i] - t[i]).mean() * weights.get("w")
    return total
"""


@pytest.fixture(scope="module")
def helpers(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("stages"), HELPERS)


def _helper_plan(fn):
    from rewrite.frontend import parse_function
    parsed = parse_function(fn)
    ctx = context(parsed.tree, fn.__globals__)
    ctx.filename, ctx.local_names = parsed.filename, frozenset(fn.__code__.co_varnames)
    return plan_at(parsed.tree, ctx, inline_helper_calls), ctx


def test_golden_inline_helper_calls(helpers):
    plan, ctx = _helper_plan(helpers.f)
    assert show(plan, ("body",)) == "# body\ntotal = total + sq_err(p[i], t[i])\n"
    plan = inline_helper_calls.stage(plan, ctx)
    assert show(plan, ("body", "helper_checks")) == (
        "# body\n_sq_err_p = p[i]\n_sq_err_t = t[i]\n_sq_err_d = _sq_err_p - _sq_err_t\n"
        "_sq_err = (_sq_err_d * _sq_err_d).mean()\ntotal = total + _sq_err\n"
        "# helper_checks\nsq_err is _sq_err_inlined\n")


def test_golden_helper_effects(helpers):
    plan, ctx = _helper_plan(helpers.h)
    plan = inline_helper_calls.stage(plan, ctx)  # it keeps `counted`: an augmented assignment
    assert show(plan, ("body",)) == "# body\ntotal = total + counted(p[i], t[i])\n"
    with pytest.raises(Unsupported) as refused:
        helper_effects.stage(plan, ctx)
    assert refused.value.reason == (
        "`counted(p[i], t[i])` calls `counted`, which changes `CALLS[0]` (line 28): the original "
        "does it in every iteration, a vectorized loop once")


def test_helper_effects_of_a_pure_helper_changes_nothing(helpers):
    plan, ctx = _helper_plan(helpers.f)
    before = show(plan, ("body",))
    assert show(helper_effects.stage(plan, ctx), ("body",)) == before


def test_golden_helper_effects_of_a_method_of_an_argument(helpers):
    plan, ctx = _helper_plan(helpers.ticked)
    with pytest.raises(Unsupported) as refused:
        helper_effects.stage(plan, ctx)
    assert (refused.value.reason, refused.value.lineno) == (
        "`counter.tick()` calls `tick`, a method no tensor has, of `counter`, whose source is not "
        "read: what it changes is unknown, and the original calls it in every iteration, a "
        "vectorized loop once", 42)


def test_helper_effects_of_a_reading_method_changes_nothing(helpers):
    plan, ctx = _helper_plan(helpers.read)  # `weights.get("w")`: a dict's, reads only
    before = show(plan, ("body",))
    assert show(helper_effects.stage(plan, ctx), ("body",)) == before


def test_inline_helper_calls_without_calls_changes_nothing(helpers):
    plan, ctx = _helper_plan(helpers.g)
    before = show(plan, ("body", "helper_checks"))
    assert show(inline_helper_calls.stage(plan, ctx), ("body", "helper_checks")) == before
