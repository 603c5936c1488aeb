"""constructor_calls: a module made in the loss runs its rewritten ``__init__`` (SimCLR's
negatives mask, built by a loop of writes at ``[i, n + i]``), behind a check that making the
object would run ``object.__new__`` and that ``__init__``; writes at the loop index plus a fixed
int (effects_to_outputs) are placed in one indexed write, also over ``np.arange`` (iteration)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from passes import constructor_calls
from rewrite import assert_equivalent, optimize_loss
from tests.helpers import equivalent_report, load_module, run_called_helpers_pass
from tests.loop_helpers import build, namespace, strategies

SOURCE = '''
import torch
import torch.nn as nn

class Pairs(nn.Module):
    def __init__(self, n):
        super(Pairs, self).__init__()
        self.mask = self.negatives(n)

    def negatives(self, n):
        mask = torch.ones((2 * n, 2 * n), dtype=bool)
        mask = mask.fill_diagonal_(0)
        for i in range(n):
            mask[i, n + i] = 0
            mask[n + i, i] = 0
        return mask

    def forward(self, z):
        sim = z @ z.t()
        return sim[self.mask].reshape(len(z), -1).logsumexp(1).sum()

class Replaced(Pairs):
    pass

Replaced.__init__ = lambda self, n: Pairs.__init__(self, n + 0)

def constructed(z):
    return Pairs(len(z) // 2)(z)

class Weighted(Pairs):
    def forward(self, z, w):
        total = 0
        for i in range(len(w)):
            total = total + (z[i] * w[i]).sum()
        return total

def named(z, w):
    pairs = Weighted(len(z) // 2)
    return pairs(z, w)

def replaced(z):
    return Replaced(len(z) // 2)(z)
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("constructor"), SOURCE)


def test_golden_constructor_call(user):
    out, ctx = run_called_helpers_pass(user.constructed)
    assert "return _constructed(Pairs, _init___original, _init)(len(z) // 2)(z)" in out, out
    assert ctx.bindings["_constructed"] is constructor_calls.constructed
    assert ctx.bindings["_init___original"] is user.Pairs.__init__
    [loop] = ctx.report.loops
    assert loop.vectorized, loop.reason


def test_an_object_made_by_a_rewritten_init_still_runs_its_rewritten_forward(user):
    # `pairs = Weighted(...)` becomes `pairs = _constructed(Weighted, ...)(...)`: the name
    # still holds a Weighted, whose forward (its loop) is rewritten and reported
    out, ctx = run_called_helpers_pass(user.named)
    assert "_module_forward(pairs, _forward_original, _forward)(z, w)" in out, out
    assert sorted(loop.lineno for loop in ctx.report.loops) == [13, 33], ctx.report.loops


def test_golden_replaced_init_is_reported_not_rewritten(user):
    # Replaced.__init__ is a lambda: no loop of it is reached, the call stays as written
    out, ctx = run_called_helpers_pass(user.replaced)
    assert "_constructed" not in out and not ctx.bindings


def test_constructed_checks_the_class(user):
    init = user.Pairs.__init__
    assert constructor_calls.constructed(user.Pairs, init, init) is not user.Pairs
    assert constructor_calls.constructed(user.Replaced, init, init) is user.Replaced  # own __init__
    assert constructor_calls.constructed(print, init, init) is print


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["constructed", "replaced"])
def test_equivalent(user, name, dtype):
    fn = getattr(user, name)
    fast = optimize_loss(fn, compile=False)
    for seed in range(3):
        z = torch.randn(6, 3, dtype=dtype, generator=torch.Generator().manual_seed(seed))
        z[1, 2], z[4, 0] = float("nan") if seed == 1 else 0.5, float("inf") if seed == 2 else 0.5
        assert_equivalent(fn, fast, z.requires_grad_())
    assert any(loop.vectorized for loop in fast.report.loops) == (name == "constructed")


OFFSET = """
def f(v, n):
    out = torch.zeros(v.shape[0], v.shape[0] + n, dtype=v.dtype)
    for i in range(v.shape[0]):
        out[i, n + i] = v[i] * 2
        out[i, i - n] = v[i]
    return out.sum(0)
"""


def test_golden_offset_write():
    _, _, code, report = build(OFFSET)
    assert strategies(report) == {3: "batched"}, (report, code)
    assert "isinstance(n, int)" in code, code


def test_offset_that_varies_is_kept():
    _, _, code, report = build(OFFSET.replace("out[i, n + i]", "n = n + 1\n        out[i, n + i]"))
    assert strategies(report) == {3: "kept"}, (report, code)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_offset_write_equivalent(dtype):
    original, optimized, _, _ = build(OFFSET)
    v = torch.tensor([1.0, float("nan"), float("inf"), 1.0], dtype=dtype, requires_grad=True)
    for n in (0, 1, 3):
        assert_equivalent(original, optimized, v, n)


SHIFTED = """
def f(v, n):
    out = torch.zeros(v.shape[0] + 2, dtype=v.dtype)
    for i in np.arange(n, v.shape[0] + n):
        out[i - 1] = v[i - n] * 3
    return out
"""


def test_golden_offset_alone_and_numpy_range():
    _, _, code, report = build(SHIFTED, namespace(np=np))
    assert report.loops[0].vectorized, (report, code)
    assert "1 > 0 and n - 1 >= 0" in code and "_out_slot = i - 1" in code, code


@pytest.mark.parametrize("src", [
    SHIFTED.replace("v[i - n] * 3", "v[i - n] * i"),          # a numpy int in arithmetic
    SHIFTED.replace("np.arange(n, v.shape[0] + n)", "np.arange(n, v.shape[0] + n, n)"),
    SHIFTED.replace("    return out", "    return out * i"),   # read after the loop
])
def test_numpy_range_read_outside_an_index_is_kept(src):
    _, _, code, report = build(src, namespace(np=np))
    assert strategies(report) == {3: "kept"}, (report, code)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_offset_alone_equivalent(tmp_path, dtype):
    user = load_module(tmp_path, "import numpy as np\nimport torch\n" + SHIFTED)
    v = torch.tensor([1.0, float("nan"), float("-inf"), 2.0], dtype=dtype, requires_grad=True)
    for n, runs in ((1, (1, 0)), (2, (1, 0)), (0, (0, 1))):  # 0: out[-1] first, as written
        report = equivalent_report(user.f, v, n)
        assert (report.loops[0].vectorized_runs, report.loops[0].original_runs) == runs, n
