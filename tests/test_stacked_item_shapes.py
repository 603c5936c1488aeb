"""A sum over a loop of a stacked item's shape (``n_samples += o.shape[0]`` for ``o`` in a list of
equal tensors, Deep SVDD's center initialisation) is that number times the trip count: the
batched value of ``o.shape[0]`` is ``o.shape[1]`` of the stacked items, one Python int, the same
in every iteration. It was summed over the loop as a tensor of items (``.sum(0)`` of an int), so
the vectorized form raised every time and the function ran as the original; a product or a
comparison of two such ints (``o.shape[0] * o.shape[1]``, ``o.shape[1] > 2``) raised in the
rewrite itself. And a count of the items' sizes (``n += len(o)``, ``o.numel()``,
``outs[i].size(-1)``, ``o.size()[0] / 2``, ``float(o.shape[0])``, ``o.shape[0] if o.shape[1] > 2
else 1``), or a list
of them (``sizes.append(o.shape[0])``), stays the Python ints (floats) the original returns: they
came back as 0-d tensors. Golden before/after (with the no-change case), and
equivalence of the value, every gradient, the dtype and the Python type in float32 and float64,
the loop vectorized without raising."""
from __future__ import annotations

import pytest
import torch

from rewrite import optimize_loss
from tests.helpers import equivalent_report
from tests.loop_helpers import assert_golden, build

SOURCES = {
    "item_rows_counted": """
        def f(outs):
            n_samples = 0
            c = torch.zeros(outs[0].shape[1], dtype=outs[0].dtype)
            for o in outs:
                n_samples += o.shape[0]
                c += torch.sum(o.detach(), dim=0)
            c /= n_samples
            return c
        """,
    # printed: the loop runs as written
    "printed": """
        def f(outs):
            n_samples = 0
            for o in outs:
                n_samples += o.shape[0]
                print(n_samples)
            return n_samples
        """,
}
GOLDEN = {
    "item_rows_counted": '''
        def f(outs):
            n_samples = 0
            c = torch.zeros(outs[0].shape[1], dtype=outs[0].dtype)
            _outs_stacked = _stack_items(tuple(outs)) if (type(outs) is list or (isinstance(outs, tuple) and type(outs).__getitem__ is tuple.__getitem__ and (type(outs).__iter__ is tuple.__iter__) and (type(outs).__len__ is tuple.__len__))) and len(outs) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == outs[0].shape and (_v.dtype == outs[0].dtype) and (_v.device == outs[0].device) for _v in outs)) else outs
            if isinstance(_outs_stacked, torch.Tensor) and _outs_stacked.dim() > 0 and isinstance(len(_outs_stacked), int) and (len(_outs_stacked) > 0):
                'optimize_loss: loop at line 4 vectorized'
                if _outs_stacked.dim() >= 2:
                    o = _outs_stacked
                    _n_samples_part = 0
                    _c_part = _identity_of(c, 0)
                    _n_samples_part = _summed_in_steps(o.shape[1] * len(_outs_stacked), lambda: torch.as_tensor(o.shape[1]).expand(len(_outs_stacked), *torch.as_tensor(o.shape[1]).shape).sum(0))
                    _c_part = _c_part + torch.sum(o.detach(), dim=1).sum(0)
                    _outs = (_n_samples_part, _c_part)
                else:

                    def _body(o):
                        _n_samples_part = 0
                        _c_part = _identity_of(c, 0)
                        _n_samples_part = _n_samples_part + o.shape[0]
                        _c_part = _c_part + torch.sum(o.detach(), dim=0)
                        return (torch.as_tensor(_n_samples_part), torch.as_tensor(_c_part))
                    _outs = _map_in_chunks(_body, in_dims=(0,))(_outs_stacked)
                    _outs = (_outs[0].sum(0), _outs[1].sum(0))
                if (_outs[1].dtype in (torch.uint8, torch.int8, torch.int16, torch.int32) and torch.result_type(c, _outs[1]) != _outs[1].dtype or (isinstance(c, torch.Tensor) and c.dtype == torch.bool and (_outs[1].dtype == torch.int64))) or _steps_differ(c, _outs[1], 0):
                    "optimize_loss: as written, the loop at line 4: a sum starts from a value of another dtype than its items': the original adds in the start's wider dtype (a sum of narrower integers may wrap around), or, for bools added to a bool, as a logical or; float16/bfloat16 items onto a start other than 0 (1 for a product): the original rounds the start plus each item in turn"
                    for o in outs:
                        n_samples += o.shape[0]
                        c += torch.sum(o.detach(), dim=0)
                else:
                    n_samples = int(_outs[0])
                    c += _outs[1]
            else:
                for o in outs:
                    n_samples += o.shape[0]
                    c += torch.sum(o.detach(), dim=0)
            c /= n_samples
            return c
        ''',
    "printed": SOURCES["printed"],
}
EXPECTED = {"item_rows_counted": {4: "batched"}, "printed": {3: "kept"}}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_golden(name):
    assert_golden(SOURCES[name], GOLDEN[name], EXPECTED[name])


def svdd_center(outs, eps=0.1):
    """Deep SVDD's center: the mean output, coordinates near 0 pushed to +-eps; the distances."""
    count, center = 0, torch.zeros(outs[0].shape[1], dtype=outs[0].dtype)
    for out in outs:
        count += out.shape[0]
        center += out.detach().sum(0)
    center = center / count
    center[(abs(center) < eps) & (center < 0)] = -eps
    center[(abs(center) < eps) & (center > 0)] = eps
    return sum(torch.sum((out - center) ** 2, dim=1).mean() for out in outs) + count


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_gradients_and_the_loop_ran_vectorized(dtype):
    g = torch.Generator().manual_seed(0)
    outs = [torch.randn(6, 4, generator=g, dtype=dtype) for _ in range(3)]
    outs[1][:, 2] = 0.0
    outs[2][0, 0] = float("inf")
    report = equivalent_report(svdd_center, [o.requires_grad_() for o in outs])
    loop = next(l for l in report.loops if l.lineno == svdd_center.__code__.co_firstlineno + 3)
    assert loop.vectorized_runs == 1 and not loop.failed_runs, loop.runs()
    original, optimized, _, _ = build(SOURCES["item_rows_counted"])
    got, want = optimized(outs), original(outs)
    assert got.dtype == want.dtype == dtype
    torch.testing.assert_close(got, want)


def count_len(outs):
    n = 0
    for o in outs:
        n += len(o)
    return n


def count_numel(outs):
    n = 0
    for o in outs:
        n += o.numel()
    return n


def count_last_dim(outs):
    n = 0
    for i in range(len(outs)):
        n += outs[i].size(-1)
    return n


def halves(outs):
    n = 0.0
    for o in outs:
        n += o.size()[0] / 2
    return n


def converted(outs):
    n, m = 0.0, 0
    for o in outs:
        n += float(o.shape[0])
        m += int(o.shape[1] / 2)
    return n, m


def rows_of_wide_items(outs):
    n = 0
    for o in outs:
        n += o.shape[0] if o.shape[1] > 2 else 1
    return n


def listed_rows(outs):
    sizes = []
    for o in outs:
        sizes.append(o.shape[0])
    return sum(sizes)


def listed_numels(outs):
    sizes = []
    for o in outs:
        sizes.append(o.numel())
    return torch.stack(outs).sum() / len(sizes), sizes


def mean_over_elements(outs):
    s, cnt = 0, 0
    for o in outs:
        s = s + o.sum()
        cnt = cnt + o.shape[0] * o.shape[1]
    return s / cnt, cnt


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fn", [count_len, count_numel, count_last_dim, mean_over_elements,
                                halves, converted, rows_of_wide_items, listed_rows,
                                listed_numels])
def test_counts_of_item_sizes_stay_python_ints(fn, dtype):
    g = torch.Generator().manual_seed(1)
    outs = [torch.randn(5, 3, generator=g, dtype=dtype).requires_grad_() for _ in range(4)]
    report = equivalent_report(fn, outs)
    [loop] = report.loops
    assert loop.vectorized_runs == 1 and not loop.failed_runs, loop.runs()
    want, got = fn(outs), optimize_loss(fn, compile=False)(outs)
    if fn is converted:  # both counts
        assert [type(c) for c in got] == [float, int] and got == want
        return
    count_want, count_got = (want[1], got[1]) if isinstance(want, tuple) else (want, got)
    if isinstance(count_want, list):  # the listed sizes: Python ints, as appended
        assert [type(c) for c in count_got] == [int] * len(outs) and count_got == count_want
    else:
        assert type(count_got) is type(count_want) and count_got == count_want
        assert type(count_want) in (int, float)
