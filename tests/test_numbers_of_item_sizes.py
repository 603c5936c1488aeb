"""Python numbers computed from the items' sizes, the same in every iteration, added up, appended
or written (``s += math.sqrt(o.shape[0])``, ``math.log(len(o))``, ``o.size(1) ** 0.5``,
``1.0 / o.numel()``, ``round(o.shape[0] / 3)``, ``abs(o.shape[0] - 7)``, a name bound to one):
the vectorized form returns the Python int or float the original does, of its value (a float
carried as float64, Python's double). They came back as float32 0-d tensors of a rounded value,
or the vectorized form raised (``'float' object has no attribute 'dtype'``: the original ran),
or the pass failed (``abs`` of a size, ``s = s + o.shape[0] + 0.5``: IndexError); ints and
floats added to one name are a float. A number whose type depends on the data
(``min(o.shape[0], 2.5)``), or a float of the loop index the rewrite computes as a tensor, keeps
the loop. Golden before/after (with the no-change case), and equivalence of the value, every
gradient, the dtype and the Python type in float32 and float64."""
from __future__ import annotations

import math

import pytest
import torch

from rewrite import optimize_loss
from tests.helpers import equivalent_report
from tests.loop_helpers import assert_golden

SOURCES = {
    "sqrt_of_rows": """
        def f(outs):
            s = 0.0
            for o in outs:
                s += math.sqrt(o.shape[0])
            return s
        """,
    # the loop index is a tensor in the vectorized form: its float would be float32
    "index_times_size": """
        def f(outs):
            s = 0.0
            for i in range(len(outs)):
                s += math.sqrt(len(outs[i])) * i
            return s
        """,
}
GOLDEN = {
    "sqrt_of_rows": '''
        def f(outs):
            s = 0.0
            _outs_stacked = _stack_items(tuple(outs)) if (type(outs) is list or (isinstance(outs, tuple) and type(outs).__getitem__ is tuple.__getitem__ and (type(outs).__iter__ is tuple.__iter__) and (type(outs).__len__ is tuple.__len__))) and len(outs) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == outs[0].shape and (_v.dtype == outs[0].dtype) and (_v.device == outs[0].device) for _v in outs)) else outs
            if isinstance(_outs_stacked, torch.Tensor) and _outs_stacked.dim() > 0 and isinstance(len(_outs_stacked), int) and (len(_outs_stacked) > 0):
                'optimize_loss: loop at line 3 vectorized'
                o = _outs_stacked
                _s_part = 0
                _s_part = _summed_in_steps(math.sqrt(o.shape[1]) * len(_outs_stacked), lambda: torch.as_tensor(math.sqrt(o.shape[1])).expand(len(_outs_stacked), *torch.as_tensor(math.sqrt(o.shape[1])).shape).sum(0))
                _outs = (_s_part,)
                s += float(_outs[0])
            else:
                for o in outs:
                    s += math.sqrt(o.shape[0])
            return s
        ''',
    "index_times_size": SOURCES["index_times_size"],
}
EXPECTED = {"sqrt_of_rows": {3: "batched"}, "index_times_size": {3: "kept"}}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_golden(name):
    assert_golden(SOURCES[name], GOLDEN[name], EXPECTED[name])


def sqrt_of_rows(outs):
    s = 0.0
    for o in outs:
        s += math.sqrt(o.shape[0])
    return s


def log_of_lengths(outs):
    s = 0.0
    for i in range(len(outs)):
        s += math.log(len(outs[i]))
    return s


def powers_and_reciprocals(outs):
    s, r = 0.0, 0.0
    for o in outs:
        s += o.size(1) ** 0.5
        r += 1.0 / o.numel()
    return s, r


def rounded(outs):
    n, m, k = 0, 0, 0
    for o in outs:
        n += round(o.shape[0] / 3)
        m += math.floor(o.shape[-1] / 2)
        k += abs(o.shape[0] - 7)
    return n, m, k


def named_size(outs):
    s = 0.0
    for o in outs:
        k = o.shape[-1]
        s += math.sqrt(k) + 0.5 * o.shape[0] + o.shape[0] ** -1
    return s


def scaled_loss(outs):
    loss, norm = 0, 0.0
    for o in outs:
        loss = loss + torch.sigmoid(o).sum() / math.sqrt(o.shape[-1])
        norm += 1.0 / math.sqrt(o.numel())
    return loss / norm, norm


def listed(outs):
    sizes, roots = [], []
    for o in outs:
        sizes.append(o.shape[0] / 3)
        roots.append(math.sqrt(o.shape[0]))
    return sizes, sum(roots), torch.tensor(roots)


def rows_of_a_tensor(x):
    s = 0.0
    for row in x:
        s += 1.0 / len(row) + math.sqrt(row.shape[0])
    return s * x.sum()


def ints_and_floats(outs):
    s, t = 0, 0
    for o in outs:
        s += o.shape[0]
        if o.shape[1] > 2:
            s += math.sqrt(o.shape[1])
        t = t + o.shape[0] + 0.5
    return s, t


def kind_by_data(outs):
    s = 0
    for o in outs:
        s += min(o.shape[0], 2.5)
    return s


def _types(v):
    if isinstance(v, (tuple, list)):
        return type(v), [_types(x) for x in v]
    return (type(v), v.dtype) if isinstance(v, torch.Tensor) else type(v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fn", [sqrt_of_rows, log_of_lengths, powers_and_reciprocals, rounded,
                                named_size, scaled_loss, listed, rows_of_a_tensor])
def test_python_numbers_of_sizes(fn, dtype):
    g = torch.Generator().manual_seed(2)
    if fn is rows_of_a_tensor:
        args = (torch.randn(6, 5, generator=g, dtype=dtype).requires_grad_(),)
    else:
        args = ([torch.randn(5, 3, generator=g, dtype=dtype).requires_grad_() for _ in range(4)],)
    report = equivalent_report(fn, *args)
    [loop] = report.loops
    assert loop.vectorized_runs == 1 and not loop.failed_runs, loop.runs()
    want, got = fn(*args), optimize_loss(fn, compile=False)(*args)
    assert _types(got) == _types(want)
    assert _numbers(got) == pytest.approx(_numbers(want), rel=1e-15, abs=0)


def _numbers(v) -> list:
    """The Python numbers of ``v``, in order (nested lists and tuples flattened)."""
    if isinstance(v, (tuple, list)):
        return [n for x in v for n in _numbers(x)]
    return [] if isinstance(v, torch.Tensor) else [v]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ints_and_floats_added_to_one_name_are_a_float(dtype):
    # the vectorized form adds the ints and the floats apart, in float64: the last bit of the
    # sum may differ from Python's additions in turn (not compared exactly)
    outs = [torch.randn(5, 3, dtype=dtype) for _ in range(4)]
    fn = optimize_loss(ints_and_floats, compile=False)
    got, want = fn(outs), ints_and_floats(outs)
    assert [type(v) for v in got] == [type(v) for v in want] == [float, float]
    assert list(got) == pytest.approx(list(want), rel=1e-15, abs=0)
    [loop] = fn.report.loops
    assert loop.vectorized_runs == 1 and not loop.failed_runs, loop.runs()


def onto_a_half_tensor(outs):
    s = torch.zeros((), dtype=torch.float16)
    for o in outs:
        s += math.sqrt(o.shape[0])
    return s


def test_floats_added_to_a_16_bit_tensor_run_as_written():
    # the original rounds in float16 after each addition: one rounding of the sum differs
    outs = [torch.randn(5, 3) for _ in range(7)]
    fn = optimize_loss(onto_a_half_tensor, compile=False)
    got, want = fn(outs), onto_a_half_tensor(outs)
    assert got.dtype == torch.float16 and got.item() == want.item() == 15.6484375
    [loop] = fn.report.loops
    assert loop.original_runs == 1 and not loop.failed_runs, loop.runs()


def test_a_type_that_depends_on_the_data_keeps_the_loop():
    outs = [torch.randn(5, 3) for _ in range(3)]
    fn = optimize_loss(kind_by_data, compile=False)
    got = fn(outs)
    assert type(got) is float and got == kind_by_data(outs)
    [loop] = fn.report.loops
    assert loop.strategy == "kept" and "depending on the data" in loop.reason
