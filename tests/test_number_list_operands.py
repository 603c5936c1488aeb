"""Items of a list or tuple of Python numbers read as operands of arithmetic with a tensor of the
iteration (class weights ``weight = [1] * n_classes``, level weights ``[1.0, 0.5, 0.25]``) run
vectorized (``number_list_operands``) with the original's values, gradients and dtypes: each
operation in ``result_type(t, w[k])``; bools, mixed types, a tensor among the items: as written;
a list shorter than the loop: the original's ``IndexError``."""
import inspect
import sys

import pytest
import torch
import torch.nn.functional as F

from rewrite import assert_equivalent, optimize_loss
from tests.loop_helpers import assert_golden, build

DTYPES = [torch.float32, torch.float64]



def weighted(x, weight=None):
    if weight is None:
        weight = [1] * x.shape[0]
    loss = 0.0
    for i in range(x.shape[0]):
        d = x[i].sum()
        loss += d * weight[i]
    return loss / x.shape[0]


def every_operator(x, w):
    loss = 0
    for i in range(x.shape[0]):
        d = x[i] * 2
        loss = loss + (w[i] * d + d / w[i] - (w[i] - d) + (d + w[i]) / (w[i] / d)).sum()
    return loss


def every_operator_of_bools(x, w):
    loss = 0
    for i in range(x.shape[0]):
        d = x[i] | True
        loss = loss + (w[i] * d + d / w[i] + (d + w[i]) / (w[i] / d)).sum()  # bools: no `-`
    return loss


def zipped_levels(outs, target, weights=None):
    """FlowNet's multi-scale EPE: level weights zipped with the outputs (a list of the
    function's own by default; zip stops at the shorter)."""
    if weights is None:
        weights = [0.005, 0.01, 0.02, 0.08, 0.32]
    loss = 0.0
    for out, w in zip(outs, weights):
        loss += w * torch.norm(target - out, 2, 1).sum() / out.shape[0]
    return loss


# the medical-segmentation DiceLoss's loop (TransUNet's utils.py), its default class weights
WEIGHTED = inspect.getsource(weighted)


def _runs_vectorized(fn, x, weight):
    """Value, every gradient and dtype of the original, from the loop's vectorized form."""
    fast = optimize_loss(fn, compile=False, keep_faster=False)
    assert_equivalent(fn, fast, x, weight)
    assert fast(x, weight).dtype == fn(x, weight).dtype
    loop = fast.report.loops[0]
    assert loop.vectorized_runs > 0 and loop.original_runs == 0, loop.last_failure


def test_weighted_golden():
    assert_golden(WEIGHTED, '''
    def weighted(x, weight=None):
        if weight is None:
            weight = [1] * x.shape[0]
        loss = 0.0
        _weight_kind = _number_kind(weight)
        _weight_stacked = _stack_items(tuple(weight)) if (type(weight) is list or (isinstance(weight, tuple) and type(weight).__getitem__ is tuple.__getitem__ and (type(weight).__iter__ is tuple.__iter__) and (type(weight).__len__ is tuple.__len__))) and len(weight) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == weight[0].shape and (_v.dtype == weight[0].dtype) and (_v.device == weight[0].device) for _v in weight)) else _number_rows(weight)
        if isinstance(x, torch.Tensor) and x.shape[0] <= x.shape[0] and isinstance(_weight_stacked, torch.Tensor) and (x.shape[0] <= _weight_stacked.shape[0]) and isinstance(x.shape[0], int) and (x.shape[0] > 0):
            'optimize_loss: loop at line 5 vectorized'
            if _weight_stacked.dim() == 1 and (not isinstance(_weight_kind, torch.Tensor)) or (not isinstance(_weight_kind, torch.Tensor) or (_weight_stacked.dim() >= 2 and _weight_stacked.dim() >= _weight_kind.dim() + 1)):
                if _weight_stacked.dim() == 1 and (not isinstance(_weight_kind, torch.Tensor)):
                    _x_row = x if x.shape[0] == x.shape[0] else x[0:x.shape[0]:1]
                    _weight_row = _weight_stacked if x.shape[0] == _weight_stacked.shape[0] else _weight_stacked[0:x.shape[0]:1]
                    _loss_part = 0
                    d = _x_row.sum(tuple(range(1, _x_row.dim()))) if _x_row.dim() > 1 else _x_row.reshape(len(_x_row), -1).sum(1)
                    _loss_part = _number_op(d, _weight_row, _weight_kind, 'mul', False).sum(0)
                    _outs = (_loss_part,)
                else:
                    _x_row = x if x.shape[0] == x.shape[0] else x[0:x.shape[0]:1]
                    _weight_row = _weight_stacked if x.shape[0] == _weight_stacked.shape[0] else _weight_stacked[0:x.shape[0]:1]
                    _loss_part = 0
                    d = _x_row.sum(tuple(range(1, _x_row.dim()))) if _x_row.dim() > 1 else _x_row.reshape(len(_x_row), -1).sum(1)
                    _loss_part = _number_op(_broadcast_item(d, _weight_row), _weight_row, _weight_kind, 'mul', False).sum(0)
                    _outs = (_loss_part,)
            else:

                def _body(_x_row, _weight_row):
                    _loss_part = 0
                    d = _x_row.sum()
                    _loss_part = _loss_part + _number_op(d, _weight_row, _weight_kind, 'mul', False)
                    return (torch.as_tensor(_loss_part),)
                _outs = _map_in_chunks(_body, in_dims=(0, 0))(x if x.shape[0] == x.shape[0] else x[0:x.shape[0]:1], _weight_stacked if x.shape[0] == _weight_stacked.shape[0] else _weight_stacked[0:x.shape[0]:1])
                _outs = (_outs[0].sum(0),)
            if _outs[0].dtype in (torch.uint8, torch.int8, torch.int16, torch.int32) and torch.result_type(loss, _outs[0]) != _outs[0].dtype or (isinstance(loss, torch.Tensor) and loss.dtype == torch.bool and (_outs[0].dtype == torch.int64)):
                "optimize_loss: as written, the loop at line 5: a sum starts from a value of another dtype than its items': the original adds in the start's wider dtype (a sum of narrower integers may wrap around), or, for bools added to a bool, as a logical or"
                for i in range(x.shape[0]):
                    d = x[i].sum()
                    loss += d * weight[i]
            else:
                loss += _outs[0]
        else:
            for i in range(x.shape[0]):
                d = x[i].sum()
                loss += d * weight[i]
        return loss / x.shape[0]
    ''', {5: "batched"})


def test_an_item_that_stays_a_number_changes_nothing():
    """``w[i] ** 2`` is a Python number in the original, and ``d ** w[i]`` is no operation
    ``number_op`` computes: the list is not read as rows."""
    for expr in ("d * w[i] ** 2", "d ** w[i]"):
        src = f'''
def f(x, w):
    loss = 0
    for i in range(x.shape[0]):
        d = x[i].sum()
        loss += {expr}
    return loss
'''
        code = build(src)[2]
        assert "_number_op" not in code and "_number_rows" not in code, expr


def _weights():
    return {"int": [1, 2, 3, 4], "float": [0.2, 0.3, 1 / 3, 7.0], "tuple": (0.2, 0.3, 1 / 3, 7.0),
            "negative int": (-3, 1, 2, 5)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", list(_weights()))
@pytest.mark.parametrize("fn", [weighted, every_operator], ids=["weighted", "every_operator"])
def test_equivalent(fn, kind, dtype):
    _runs_vectorized(fn, torch.randn(4, 3, dtype=dtype, requires_grad=True), _weights()[kind])


@pytest.mark.parametrize("tdtype, weight", [(torch.int32, [0.5, 2.0, 3.0]), (torch.int32, [1, 2, 3]),
                                            (torch.int64, (2, 3, 4))])
def test_integer_tensors_take_the_numbers_dtype_rule(tdtype, weight):
    """An int tensor with float weights gives the default float dtype, with int weights its
    own, as a Python number does (a bool tensor: int64)."""
    _runs_vectorized(every_operator, torch.randint(1, 5, (3, 4)).to(tdtype), weight)
    _runs_vectorized(every_operator_of_bools, torch.randint(0, 2, (3, 4)).bool(), weight)


@pytest.mark.parametrize("weight", [[True, False, True, True], [0.5, 1, 2.0, 3.0],
                                    [torch.tensor(0.5), 1.0, 2.0, 3.0]],
                         ids=["bools", "mixed", "a tensor among numbers"])
def test_other_items_run_as_written(weight):
    fast = optimize_loss(weighted, compile=False, keep_faster=False)
    x = torch.randn(4, 3, requires_grad=True)
    assert_equivalent(weighted, fast, x, weight)
    loop = fast.report.loops[0]
    assert (loop.vectorized_runs, loop.original_runs) == (0, 1)


@pytest.mark.parametrize("weight", [None, [0.2, 0.8, 0.5, 1.0], (1, 2, 3, 4)],
                         ids=["default", "float list", "int tuple"])
def test_runs_vectorized(weight):
    _runs_vectorized(weighted, torch.randn(4, 3, dtype=torch.float64, requires_grad=True), weight)


def test_a_short_list_raises_the_original_index_error():
    fast = optimize_loss(weighted, compile=False, keep_faster=False)
    with pytest.raises(IndexError, match="list index out of range"):
        fast(torch.randn(4, 3), [0.2, 0.8])


def test_the_report_names_lists_of_numbers():
    reason = build(WEIGHTED)[3].loops[0].reason
    assert reason.endswith("`weight` is a tensor, or a list or tuple of tensors of one shape, "
                           "dtype and device or of Python numbers all int or all float (stacked), "
                           "else the loop runs as written")


# DSS-pytorch's deep-supervision loss (hovnatan/DSS-pytorch, loss.py): the side outputs' weights
# are a tuple the module holds, read as ``self.weight[i]``
def side_outputs(x_list, label, cfg):
    losses = []
    for i, x in enumerate(x_list):
        losses.append(cfg.weight[i] * F.binary_cross_entropy(x, label))
    return sum(losses)


class _Config:
    def __init__(self, weight):
        self.weight = weight


def _side_inputs(dtype, n=7):
    g = torch.Generator().manual_seed(0)
    probs = [torch.rand(2, 1, 4, 4, generator=g, dtype=dtype).clamp(0.01, 0.99).requires_grad_()
             for _ in range(n)]
    return probs, (torch.rand(2, 1, 4, 4, generator=g) > 0.7).to(dtype)


def test_attribute_list_golden():
    """``cfg.weight`` is read through a name bound to it in front of the guard, stacked as a
    list of numbers is; the loop as written keeps reading the attribute."""
    assert_golden(inspect.getsource(side_outputs), '''
    def side_outputs(x_list, label, cfg):
        losses = []
        _weight = getattr(cfg, 'weight', None)
        _weight_kind = _number_kind(_weight)
        _weight_stacked = _stack_items(tuple(_weight)) if (type(_weight) is list or (isinstance(_weight, tuple) and type(_weight).__getitem__ is tuple.__getitem__ and (type(_weight).__iter__ is tuple.__iter__) and (type(_weight).__len__ is tuple.__len__))) and len(_weight) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == _weight[0].shape and (_v.dtype == _weight[0].dtype) and (_v.device == _weight[0].device) for _v in _weight)) else _number_rows(_weight)
        _x_list_stacked = _stack_items(tuple(x_list)) if (type(x_list) is list or (isinstance(x_list, tuple) and type(x_list).__getitem__ is tuple.__getitem__ and (type(x_list).__iter__ is tuple.__iter__) and (type(x_list).__len__ is tuple.__len__))) and len(x_list) > 0 and all((isinstance(_v_1, torch.Tensor) and _v_1.shape == x_list[0].shape and (_v_1.dtype == x_list[0].dtype) and (_v_1.device == x_list[0].device) for _v_1 in x_list)) else x_list
        if isinstance(_weight_stacked, torch.Tensor) and len(_x_list_stacked) <= _weight_stacked.shape[0] and isinstance(_x_list_stacked, torch.Tensor) and (_x_list_stacked.dim() > 0) and isinstance(len(_x_list_stacked), int) and (len(_x_list_stacked) > 0) and (not _rounds_gradients(getattr(cfg, 'weight', None), label)):
            'optimize_loss: loop at line 3 vectorized'

            def _body(x, _weight_row):
                _losses_item = _number_op(F.binary_cross_entropy(x, label), _weight_row, _weight_kind, 'mul', True)
                return (torch.as_tensor(_losses_item),)
            _outs = _map_in_chunks(_body, in_dims=(0, 0))(_x_list_stacked, _weight_stacked if len(_x_list_stacked) == _weight_stacked.shape[0] else _weight_stacked[0:len(_x_list_stacked):1])
            losses = _outs[0]
        else:
            for i, x in enumerate(x_list):
                losses.append(cfg.weight[i] * F.binary_cross_entropy(x, label))
        return losses.sum(0) if isinstance(losses, torch.Tensor) else sum(losses)
    ''', {3: "vmap"})


def test_an_attribute_read_otherwise_changes_nothing():
    """``x ** cfg.w[i]`` keeps a Python number a number in the original: not read as rows."""
    src = '''
def f(x_list, label, cfg):
    losses = []
    for i, x in enumerate(x_list):
        losses.append(F.binary_cross_entropy(x, label) ** cfg.weight[i])
    return sum(losses)
'''
    code = build(src)[2]
    assert "_number_op" not in code and "_weight =" not in code


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight", [(0.5, 0.5, 0.5, 0.8, 0.8, 1.0, 2.0), [1, 2, 3, 1, 1, 1, 2]],
                         ids=["float tuple", "int list"])
def test_attribute_list_runs_vectorized(weight, dtype):
    """Value, every gradient and dtype of the original, the loop run vectorized, reported so."""
    fn = side_outputs
    fast = optimize_loss(fn, compile=False, keep_faster=False)
    probs, label = _side_inputs(dtype)
    assert_equivalent(fn, fast, probs, label, _Config(weight))
    assert fast(probs, label, _Config(weight)).dtype == dtype
    loop = fast.report.loops[0]
    assert loop.vectorized and loop.vectorized_runs > 0 and loop.original_runs == 0, \
        loop.last_failure
    assert "`cfg.weight` is a tensor, or a list or tuple" in loop.reason


@pytest.mark.parametrize("weight", [(True, False) * 3 + (True,), (0.5, 1, 1, 1, 1, 1, 1)],
                         ids=["bools", "mixed"])
def test_attribute_list_of_other_items_runs_as_written(weight):
    fast = optimize_loss(side_outputs, compile=False, keep_faster=False)
    probs, label = _side_inputs(torch.float64)
    assert_equivalent(side_outputs, fast, probs, label, _Config(weight))
    loop = fast.report.loops[0]
    assert (loop.vectorized_runs, loop.original_runs) == (0, 1)


def test_the_report_names_an_attributes_list_as_the_attribute():
    src = '''
def f(x, cfg):
    loss = 0
    for i in range(x.shape[0]):
        d = x[i].sum()
        loss += d * cfg.weight[i]
    return loss
'''
    reason = build(src)[3].loops[0].reason
    assert "`cfg.weight` is a tensor, or a list" in reason  # (its rank: lifted where lower)
    assert "_weight.dim()" not in reason and "_weight_stacked" not in reason


# A module's list of class weights, read through a name bound to the item (a per-class dice
# weighted as a CE_DiceLoss does): the loop ran as written at every call before, its guard
# asking for `CLASS_WEIGHTS` to be a tensor.
CLASS_WEIGHTS = [0.1, 0.3, 0.3, 0.3]


def module_weights_bound(inp, target):
    loss = 0.
    for c in range(inp.shape[1]):
        iflat = inp[:, c].reshape(-1)
        tflat = target[:, c].reshape(-1)
        inter = (iflat * tflat).sum()
        w = CLASS_WEIGHTS[c]
        loss += w * (1 - (2. * inter + 1) / (iflat.sum() + tflat.sum() + 1))
    return loss


def parameter_weights_bound(inp, target, weights=(1, 2, 3, 4)):
    loss = 0.
    for c in range(inp.shape[1]):
        d = ((inp[:, c] - target[:, c]) ** 2).mean()
        w = weights[c]
        loss = loss + d / w
    return loss


def bound_weight_tested(inp, target):
    loss = 0.
    for c in range(inp.shape[1]):
        d = ((inp[:, c] - target[:, c]) ** 2).mean()
        w = CLASS_WEIGHTS[c]
        if w > 0.2:
            loss = loss + d * w
    return loss


def _dice_inputs(dtype):
    g = torch.Generator().manual_seed(3)
    return (torch.rand(2, 4, 5, generator=g, dtype=dtype).requires_grad_(),
            (torch.rand(2, 4, 5, generator=g) > 0.5).to(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", [module_weights_bound, parameter_weights_bound])
def test_a_name_bound_to_an_item_of_a_module_or_parameter_list_runs_vectorized(fn, dtype):
    from tests.helpers import optimized_and_vectorized
    optimized_and_vectorized(fn, *_dice_inputs(dtype))


def test_the_module_list_is_read_at_every_call(monkeypatch):
    opt = optimize_loss(module_weights_bound, compile=False)
    x, t = _dice_inputs(torch.float64)
    assert_equivalent(module_weights_bound, opt, x, t)
    monkeypatch.setattr(sys.modules[__name__], "CLASS_WEIGHTS", [2.0, 0.5, 1.0, 3.0])
    assert_equivalent(module_weights_bound, opt, x, t)
    monkeypatch.setattr(sys.modules[__name__], "CLASS_WEIGHTS", [0.1, 0.3])
    with pytest.raises(IndexError):
        opt(x, t)


def test_a_bound_item_read_otherwise_keeps_the_item_a_number():
    opt = optimize_loss(bound_weight_tested, compile=False)
    x, t = _dice_inputs(torch.float32)
    assert_equivalent(bound_weight_tested, opt, x, t)
    assert "CLASS_WEIGHTS` is a tensor, or" not in opt.report.loops[0].reason


# A focal loss's per-class alpha, negated where it is read (``-ALPHA[c] * (1 - p) ** g * log p``)
ALPHA = [0.25, 0.5, 0.75]


def negated_alpha(logits, target, gamma=2.0):
    prob = logits.softmax(1)
    loss = 0
    for c in range(logits.shape[1]):
        fg = (target == c).to(logits.dtype)
        pc = prob[:, c]
        lc = -ALPHA[c] * (1 - pc) ** gamma * torch.log(pc.clamp_min(1e-6)) * fg
        loss = loss + lc.sum() / fg.sum().clamp_min(1)
    return loss


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_negated_item_is_an_operand_too(dtype):
    from tests.helpers import optimized_and_vectorized
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 4, 4, generator=g, dtype=dtype).requires_grad_()
    optimized_and_vectorized(negated_alpha, logits, torch.randint(0, 3, (2, 4, 4), generator=g))


@pytest.mark.parametrize("fn", [negated_alpha, weighted])
def test_the_vmap_condition_reads_no_generated_kind(fn):
    from rewrite import explain
    reason = explain(fn).loops[0].reason
    assert "_kind" not in reason, reason


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weights, levels", [(None, 5), (None, 3), ((1, 2, 3), 4), ([0.5, 2.0], 2)],
                         ids=["own list", "fewer outputs", "int tuple", "float list"])
def test_zipped_weights_are_read_as_items(weights, levels, dtype):
    g = torch.Generator().manual_seed(0)
    outs = [torch.randn(2, 2, 3, 3, generator=g, dtype=dtype, requires_grad=True)
            for _ in range(levels)]
    target = torch.randn(2, 2, 3, 3, generator=g, dtype=dtype)
    fast = optimize_loss(zipped_levels, compile=False, keep_faster=False)
    assert_equivalent(zipped_levels, fast, outs, target, weights)
    assert fast(outs, target, weights).dtype == dtype
    loop = fast.report.loops[0]
    assert loop.vectorized_runs > 0 and loop.original_runs == 0, loop.last_failure


def number_over_tensor(x, w):
    out = []
    for i in range(x.shape[0]):
        d = x[i] * 2
        out.append(w[i] / d)
    return torch.stack(out)


@pytest.mark.parametrize("dtype", DTYPES + [torch.float16, torch.bfloat16], ids=str)
def test_a_number_over_a_tensor_is_its_reciprocal_times_the_number(dtype):
    """``w[i] / d`` is ``Tensor.__rtruediv__``, ``d.reciprocal() * w[i]``: bit for bit the
    original's values and gradients (a division rounds once where it rounds twice)."""
    fast = optimize_loss(number_over_tensor, compile=False, keep_faster=False)
    x = torch.rand(4, 300, generator=torch.Generator().manual_seed(0)).add(0.5).to(dtype)
    runs = []
    for fn in (number_over_tensor, fast):
        xr = x.clone().requires_grad_()
        value = fn(xr, [0.3, 1.0039, 2.7, 0.1234567])
        value.sum().backward()
        runs.append((value, xr.grad))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert fast.report.loops[0].vectorized_runs == 1


# Pinball losses (pytorch-forecasting's TFT, neural_prophet, TorchCP): the quantiles a list of
# floats the module holds, iterated with enumerate, read in Python arithmetic with literals
class QuantileLoss(torch.nn.Module):
    def __init__(self, quantiles):
        super().__init__()
        self.quantiles = quantiles

    def forward(self, preds, target):
        losses = []
        for i, q in enumerate(self.quantiles):
            errors = target - preds[:, i]
            losses.append(torch.max((q - 1) * errors, q * errors).unsqueeze(1))
        return torch.mean(torch.sum(torch.cat(losses, dim=1), dim=1))


def literal_arithmetic(x, w):
    loss = 0
    for i in range(x.shape[0]):
        d = x[i] * 2
        loss = loss + ((1 - w[i]) * d + d / (0.5 * w[i] + 2) - d * -(w[i] - 3) / 4).sum()
    return loss


def _quantile_inputs(dtype):
    g = torch.Generator().manual_seed(5)
    preds = torch.randn(8, 3, generator=g, dtype=dtype)
    target = torch.randn(8, generator=g, dtype=dtype)
    preds[0, 1] = target[0]  # a tie of the two branches of the max
    preds[1, 2], target[2] = float("nan"), float("inf")
    return preds.requires_grad_(), target


@pytest.mark.parametrize("dtype", DTYPES + [torch.bfloat16], ids=str)
@pytest.mark.parametrize("quantiles", [[0.1, 0.5, 0.9], (0.25, 0.75, 1 / 3),
                                       torch.tensor([0.1, 0.5, 0.9])], ids=["list", "tuple",
                                                                            "tensor"])
def test_arithmetic_of_an_iterated_attribute_list_runs_vectorized(quantiles, dtype):
    module = QuantileLoss(quantiles)
    fast = optimize_loss(module, compile=False, keep_faster=False)
    assert_equivalent(module, fast, *_quantile_inputs(dtype))
    assert fast(*_quantile_inputs(dtype)).dtype == dtype
    loop = fast.report.loops[0]
    assert (loop.vectorized_runs, loop.original_runs) == (1, 0), loop.last_failure
    assert "`self.quantiles` is a tensor, or a list or tuple of tensors of one shape, dtype and " \
        "device or of Python floats (stacked)" in loop.reason, loop.reason


@pytest.mark.parametrize("dtype", DTYPES + [torch.float16], ids=str)
@pytest.mark.parametrize("w", [[0.2, 0.3, 1 / 3, 7.0], [1e20, -0.5, 3.0, 2.5]])
def test_arithmetic_of_items_with_literals_runs_vectorized(w, dtype):
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(6), dtype=dtype)
    fast = optimize_loss(literal_arithmetic, compile=False, keep_faster=False)
    assert_equivalent(literal_arithmetic, fast, x.requires_grad_(), w)
    loop = fast.report.loops[0]
    assert (loop.vectorized_runs, loop.original_runs) == (1, 0), loop.last_failure


@pytest.mark.parametrize("w", [[1, 2, 3, 4], [2 ** 63 - 1, -2 ** 63, 1, 0]])
def test_arithmetic_of_int_items_runs_as_written(w):
    """On an int64 row ``0.5 * w[i]`` is float32 and ``w[i] - 3`` may wrap, where Python's int
    arithmetic does neither: ints run as written."""
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    fast = optimize_loss(literal_arithmetic, compile=False, keep_faster=False)
    assert_equivalent(literal_arithmetic, fast, x.requires_grad_(), w)
    loop = fast.report.loops[0]
    assert (loop.vectorized_runs, loop.original_runs) == (0, 1), loop.last_failure


def reciprocal_of_item(x, w):
    loss = 0
    for i in range(x.shape[0]):
        d = x[i] * 2
        loss = loss + ((1 / (w[i] - 0.5)) * d).sum()
    return loss


def test_a_division_by_an_item_keeps_pythons_zero_division_error():
    """``1 / (w[i] - 0.5)`` raises ZeroDivisionError at 0.5 in Python, where the float64 row's
    division gives inf: no number expression divides by the item (or by 0)."""
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    fast = optimize_loss(reciprocal_of_item, compile=False, keep_faster=False)
    with pytest.raises(ZeroDivisionError):
        fast(x.requires_grad_(), [0.25, 0.5, 2.0])
    assert_equivalent(reciprocal_of_item, fast, x, [0.25, 1.0, 2.0])


def huge_int_literal(x, w):
    loss = 0
    for i in range(x.shape[0]):
        d = x[i] * 2
        loss = loss + (d * (w[i] * 123456789012345678901)).sum()
    return loss


def test_an_int_literal_past_float64s_exact_ints_keeps_the_item_a_number():
    # torch refuses an int past int64 ("int too big to convert"), which Python converts to float
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    fast = optimize_loss(huge_int_literal, compile=False, keep_faster=False, strict=True)
    assert_equivalent(huge_int_literal, fast, x.requires_grad_(), [0.25, 1.0, 2.0])
