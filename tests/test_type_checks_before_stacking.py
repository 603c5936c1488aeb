"""A module's configuration the loop reads at its index (``self.gamma[i]`` as an exponent: a
tuple of numbers as often as a tensor) is checked to be a tensor before the lists the loop
iterates are stacked (``stack_tensor_lists``): when it is not, the loop runs as written without
stacking its side outputs first for nothing, and the failed check the run reports is that one."""
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from rewrite import assert_equivalent, optimize_loss
from tests.loop_helpers import assert_golden, build

DTYPES = [torch.float32, torch.float64]


def focal_sides(x_list, label, cfg):
    losses = []
    for i, x in enumerate(x_list):
        losses.append(F.binary_cross_entropy(x, label) ** cfg.gamma[i])
    return sum(losses)


class _Config:
    def __init__(self, gamma):
        self.gamma = gamma


class _Stacks(TorchFunctionMode):
    """Counts ``torch.stack`` calls."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.stack
        return func(*args, **(kwargs or {}))


def _inputs(dtype):
    g = torch.Generator().manual_seed(0)
    probs = [torch.rand(2, 1, 4, 4, generator=g, dtype=dtype).clamp(0.01, 0.99).requires_grad_()
             for _ in range(3)]
    return probs, (torch.rand(2, 1, 4, 4, generator=g) > 0.7).to(dtype)


def test_golden():
    assert_golden(inspect.getsource(focal_sides), '''
    def focal_sides(x_list, label, cfg):
        losses = []
        _x_list_stacked = _stack_items(tuple(x_list)) if isinstance(getattr(cfg, 'gamma', None), torch.Tensor) and (type(x_list) is list or (isinstance(x_list, tuple) and type(x_list).__getitem__ is tuple.__getitem__ and (type(x_list).__iter__ is tuple.__iter__) and (type(x_list).__len__ is tuple.__len__))) and (len(x_list) > 0) and all((isinstance(_v, torch.Tensor) and _v.shape == x_list[0].shape and (_v.dtype == x_list[0].dtype) and (_v.device == x_list[0].device) for _v in x_list)) else x_list
        if isinstance(getattr(cfg, 'gamma', None), torch.Tensor) and isinstance(_x_list_stacked, torch.Tensor) and (_x_list_stacked.dim() > 0) and isinstance(len(_x_list_stacked), int) and (len(_x_list_stacked) > 0) and (not _rounds_gradients(label, getattr(cfg, 'gamma', None))):
            'optimize_loss: loop at line 3 vectorized'

            def _body(i, x):
                _losses_item = F.binary_cross_entropy(x, label) ** cfg.gamma[i]
                return (torch.as_tensor(_losses_item),)
            _outs = _map_in_chunks(_body, in_dims=(0, 0))(torch.arange(0, len(_x_list_stacked), 1, device=_x_list_stacked.device), _x_list_stacked)
            losses = _outs[0]
        else:
            for i, x in enumerate(x_list):
                losses.append(F.binary_cross_entropy(x, label) ** cfg.gamma[i])
        return losses.sum(0) if isinstance(losses, torch.Tensor) else sum(losses)
    ''', {3: "vmap"})


def test_a_name_checks_nothing_first():
    """A function's own argument (``gamma[i]``) is no module configuration: stacked as before."""
    src = inspect.getsource(focal_sides).replace("cfg.gamma", "gamma").replace("cfg)", "gamma)")
    code = build(src)[2]
    assert "_x_list_stacked = _stack_items(tuple(x_list)) if (type(x_list) is list" in code


def test_a_tuple_is_not_stacked_for_nothing():
    fast = optimize_loss(focal_sides, compile=False, keep_faster=False)
    probs, label = _inputs(torch.float32)
    with _Stacks() as stacks:
        fast(probs, label, _Config((2.0, 1.0, 0.5)))
    assert stacks.count == 0
    loop = fast.report.loops[0]
    assert (loop.vectorized_runs, loop.original_runs) == (0, 1)
    assert loop.last_failure == "check `isinstance(cfg.gamma, torch.Tensor)` was false"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("as_tensor", [True, False], ids=["tensor", "tuple"])
def test_equivalent(dtype, as_tensor):
    fast = optimize_loss(focal_sides, compile=False, keep_faster=False)
    probs, label = _inputs(dtype)
    gamma = (2.0, 1.0, 0.5)
    cfg = _Config(torch.tensor(gamma, dtype=dtype, requires_grad=True) if as_tensor else gamma)
    assert_equivalent(focal_sides, fast, probs, label, cfg)
    assert fast(probs, label, cfg).dtype == dtype
    loop = fast.report.loops[0]
    assert loop.vectorized
    assert (loop.vectorized_runs > 0) == as_tensor and (loop.original_runs > 0) != as_tensor


class _Weighted:
    def __init__(self, weight):
        self.weight = weight

    def tensor_weights(self, xs):
        loss = 0.0
        for i in range(len(xs)):
            loss = loss + xs[i].sum() * self.weight[i]
        return loss

    def number_weights(self, xs):
        loss = 0.0
        for i in range(len(xs)):
            d = xs[i].sum()
            loss = loss + d * self.weight[i]
        return loss


def _outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - the outcome compared is the exception itself
        return type(exc), str(exc)


@pytest.mark.parametrize("method, weight", [
    ("tensor_weights", torch.tensor([0.2, 0.3, 0.5])), ("number_weights", (0.2, 0.3, 0.5))])
@pytest.mark.parametrize("dtype", DTYPES)
def test_an_attribute_is_read_only_where_the_loop_reads_it(method, weight, dtype):
    fn = getattr(_Weighted, method)
    fast = optimize_loss(fn, compile=False, keep_faster=False, strict=True)
    xs = torch.randn(3, 4, dtype=dtype)
    assert_equivalent(fn, fast, _Weighted(weight), xs.requires_grad_())
    assert fast.report.loops[0].runs()["vectorized"] == 1
    xs = xs.detach()
    for obj, rows in ((object(), xs[:0]), (object(), xs), (_Weighted(None), xs),
                      (_Weighted(None), xs[:0])):  # no iteration: the original reads nothing
        assert _outcome(fast, obj, rows) == _outcome(fn, obj, rows)
