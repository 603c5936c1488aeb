"""``s += v`` on a name the iteration bound to a Python number writes nothing in place (a number
shares no memory): the per-sample sum of an inner loop's terms (``temp_dice = 0.0``, then
``temp_dice += ...`` per class, SJTU-EE228's nested Dice loss) keeps neither loop
(``inplace_writes_to_functional``); a name bound to the user's tensor still does, and so does
a tensor the iteration made (its in-place sum keeps its dtype). Reasons quote
the user's code, not the names the rewrite made (``lengths[i]``, not ``_lengths_row``)."""
import inspect

import pytest
import torch

from rewrite import assert_equivalent, optimize_loss
from tests.loop_helpers import assert_golden, build, rewrite_source

DTYPES = [torch.float32, torch.float64]


def nested_dice(t, x):
    dice = 0.0
    for s in range(t.shape[0]):
        temp = 0.0
        for c in range(t.shape[1]):
            inter = torch.sum(t[s, c] * x[s, c])
            temp += 2 * inter / (inter + torch.sum(t[s, c]) + torch.sum(x[s, c]))
        dice += temp
    return 1 - dice / t.shape[0]


def nested_onto_a_new_tensor(t, x):
    dice = 0.0
    for s in range(t.shape[0]):
        temp = torch.zeros(())
        for c in range(t.shape[1]):
            temp += torch.sum(t[s, c] * x[s, c]) / torch.sum(x[s, c])
        dice += temp
    return dice


def nested_onto_a_tensor(t, x, start):
    dice = 0.0
    for s in range(t.shape[0]):
        temp = start
        for c in range(t.shape[1]):
            temp += torch.sum(t[s, c] * x[s, c])
        dice += temp
    return dice


def _inputs(dtype):
    g = torch.Generator().manual_seed(0)
    t = (torch.rand(3, 4, 5, 5, generator=g) > 0.5).to(dtype)
    return t, torch.rand(3, 4, 5, 5, generator=g, dtype=dtype).requires_grad_()


def test_both_loops_vectorized_golden():
    """The inner loop's ``temp += _outs[0]`` onto the number ``temp`` becomes a rebinding."""
    assert_golden(inspect.getsource(nested_dice), '''
    def nested_dice(t, x):
        dice = 0.0
        if isinstance(t, torch.Tensor) and t.shape[0] <= t.shape[0] and isinstance(x, torch.Tensor) and (t.shape[0] <= x.shape[0]) and (t.shape[1] <= t.shape[1]) and (t.shape[1] <= x.shape[1]) and isinstance(t.shape[1], int) and (t.shape[1] > 0) and isinstance(t.shape[0], int) and (t.shape[0] > 0):
            'optimize_loss: loop at line 3 vectorized'

            def _body_1(_t_row_1, _x_row_1):
                _dice_part = 0
                temp = 0.0
                if x.dim() == t.dim():
                    _t_row = _t_row_1 if t.shape[1] == t.shape[1] else _t_row_1[0:t.shape[1]:1]
                    _x_row = _x_row_1 if t.shape[1] == x.shape[1] else _x_row_1[0:t.shape[1]:1]
                    _temp_part = _identity_of(temp, 0)
                    _t = _t_row * _x_row
                    inter = _t.sum(tuple(range(1, _t.dim()))) if _t.dim() > 1 else _t.reshape(len(_t), -1).sum(1)
                    _temp_part = _temp_part + (2 * inter / (inter + (_t_row.sum(tuple(range(1, _t_row.dim()))) if _t_row.dim() > 1 else _t_row.reshape(len(_t_row), -1).sum(1)) + (_x_row.sum(tuple(range(1, _x_row.dim()))) if _x_row.dim() > 1 else _x_row.reshape(len(_x_row), -1).sum(1)))).sum(0)
                    _outs = (_temp_part,)
                else:

                    def _body(_t_row, _x_row):
                        _temp_part = _identity_of(temp, 0)
                        inter = torch.sum(_t_row * _x_row)
                        _temp_part = _temp_part + 2 * inter / (inter + torch.sum(_t_row) + torch.sum(_x_row))
                        return (torch.as_tensor(_temp_part),)
                    _outs = _map_in_chunks(_body, in_dims=(0, 0))(_t_row_1 if t.shape[1] == t.shape[1] else _t_row_1[0:t.shape[1]:1], _x_row_1 if t.shape[1] == x.shape[1] else _x_row_1[0:t.shape[1]:1])
                    _outs = (_outs[0].sum(0),)
                temp = temp + _outs[0]
                _dice_part = _dice_part + temp
                return (torch.as_tensor(_dice_part),)
            _outs_1 = _map_in_chunks(_body_1, in_dims=(0, 0))(t if t.shape[0] == t.shape[0] else t[0:t.shape[0]:1], x if t.shape[0] == x.shape[0] else x[0:t.shape[0]:1])
            _outs_1 = (_outs_1[0].sum(0),)
            if _outs_1[0].dtype in (torch.uint8, torch.int8, torch.int16, torch.int32) and torch.result_type(dice, _outs_1[0]) != _outs_1[0].dtype or (isinstance(dice, torch.Tensor) and dice.dtype == torch.bool and (_outs_1[0].dtype == torch.int64)):
                "optimize_loss: as written, the loop at line 3: a sum starts from a value of another dtype than its items': the original adds in the start's wider dtype (a sum of narrower integers may wrap around), or, for bools added to a bool, as a logical or"
                for s in range(t.shape[0]):
                    temp = 0.0
                    if isinstance(t, torch.Tensor) and isinstance(s, int) and (t.shape[1] <= t.shape[1]) and isinstance(x, torch.Tensor) and (t.shape[1] <= x.shape[1]) and isinstance(t.shape[1], int) and (t.shape[1] > 0):
                        'optimize_loss: loop at line 5 vectorized'
                        if x.dim() == t.dim():
                            _t_row = t[s] if t.shape[1] == t.shape[1] else t[s, 0:t.shape[1]:1]
                            _x_row = x[s] if t.shape[1] == x.shape[1] else x[s, 0:t.shape[1]:1]
                            _temp_part = _identity_of(temp, 0)
                            _t = _t_row * _x_row
                            inter = _t.sum(tuple(range(1, _t.dim()))) if _t.dim() > 1 else _t.reshape(len(_t), -1).sum(1)
                            _temp_part = _temp_part + (2 * inter / (inter + (_t_row.sum(tuple(range(1, _t_row.dim()))) if _t_row.dim() > 1 else _t_row.reshape(len(_t_row), -1).sum(1)) + (_x_row.sum(tuple(range(1, _x_row.dim()))) if _x_row.dim() > 1 else _x_row.reshape(len(_x_row), -1).sum(1)))).sum(0)
                            _outs = (_temp_part,)
                        else:

                            def _body(_t_row, _x_row):
                                _temp_part = _identity_of(temp, 0)
                                inter = torch.sum(_t_row * _x_row)
                                _temp_part = _temp_part + 2 * inter / (inter + torch.sum(_t_row) + torch.sum(_x_row))
                                return (torch.as_tensor(_temp_part),)
                            _outs = _map_in_chunks(_body, in_dims=(0, 0))(t[s] if t.shape[1] == t.shape[1] else t[s, 0:t.shape[1]:1], x[s] if t.shape[1] == x.shape[1] else x[s, 0:t.shape[1]:1])
                            _outs = (_outs[0].sum(0),)
                        if _outs[0].dtype in (torch.uint8, torch.int8, torch.int16, torch.int32) and torch.result_type(temp, _outs[0]) != _outs[0].dtype or (isinstance(temp, torch.Tensor) and temp.dtype == torch.bool and (_outs[0].dtype == torch.int64)):
                            "optimize_loss: as written, the loop at line 5: a sum starts from a value of another dtype than its items': the original adds in the start's wider dtype (a sum of narrower integers may wrap around), or, for bools added to a bool, as a logical or"
                            for c in range(t.shape[1]):
                                inter = torch.sum(t[s, c] * x[s, c])
                                temp += 2 * inter / (inter + torch.sum(t[s, c]) + torch.sum(x[s, c]))
                        else:
                            temp += _outs[0]
                    else:
                        for c in range(t.shape[1]):
                            inter = torch.sum(t[s, c] * x[s, c])
                            temp += 2 * inter / (inter + torch.sum(t[s, c]) + torch.sum(x[s, c]))
                    dice += temp
            else:
                dice += _outs_1[0]
        else:
            for s in range(t.shape[0]):
                temp = 0.0
                for c in range(t.shape[1]):
                    inter = torch.sum(t[s, c] * x[s, c])
                    temp += 2 * inter / (inter + torch.sum(t[s, c]) + torch.sum(x[s, c]))
                dice += temp
        return 1 - dice / t.shape[0]
    ''', {5: "batched", 3: "vmap"})


def test_a_name_bound_to_the_users_tensor_keeps_the_outer_loop():
    """``temp = start`` then ``temp += ...`` writes into ``start`` in the original."""
    report = rewrite_source(inspect.getsource(nested_onto_a_tensor))[1]
    outer = next(loop for loop in report.loops if loop.lineno == 3)
    assert not outer.vectorized
    assert outer.reason.startswith("`for c in range(t.shape[1]): ...` writes in place into "
                                   "`temp`, which may share memory"), outer.reason
    assert "_outs" not in outer.reason


@pytest.mark.parametrize("dtype", DTYPES)
def test_equivalent_and_run_vectorized(dtype):
    fast = optimize_loss(nested_dice, compile=False, keep_faster=False)
    t, x = _inputs(dtype)
    assert_equivalent(nested_dice, fast, t, x)
    assert fast(t, x).dtype == nested_dice(t, x).dtype == dtype
    outer = next(loop for loop in fast.report.loops if loop.lineno == nested_dice.__code__.co_firstlineno + 2)
    assert outer.vectorized and outer.vectorized_runs > 0 and outer.original_runs == 0, \
        outer.last_failure


@pytest.mark.parametrize("dtype", DTYPES)
def test_onto_a_new_tensor_equivalent(dtype):
    """``temp += v`` into a float32 tensor keeps float32 where ``temp + v`` would promote: the
    outer loop is kept (the value and dtype are the original's either way)."""
    fast = optimize_loss(nested_onto_a_new_tensor, compile=False, keep_faster=False)
    t, x = _inputs(dtype)
    assert_equivalent(nested_onto_a_new_tensor, fast, t, x)
    assert fast(t, x).dtype == nested_onto_a_new_tensor(t, x).dtype == torch.float32


@pytest.mark.parametrize("dtype", DTYPES)
def test_onto_a_tensor_equivalent(dtype):
    fast = optimize_loss(nested_onto_a_tensor, compile=False, keep_faster=False)
    t, x = _inputs(dtype)
    assert_equivalent(nested_onto_a_tensor, fast, t, x, torch.zeros((), dtype=dtype))


def test_a_row_parameter_is_quoted_as_the_users_item():
    src = '''
def f(scores, labels, lengths):
    loss = 0
    for i in range(scores.shape[1]):
        s = scores[0][i]
        loss += torch.dot(s.flatten()[:lengths[i]].sort()[0], labels[i].flatten()[:lengths[i]])
    return loss
'''
    reason = build(src)[3].loops[0].reason
    assert "`s.flatten()[:lengths[i]]`: slice bound `lengths[i]` varies per iteration" in reason, reason
    assert "_row" not in reason
