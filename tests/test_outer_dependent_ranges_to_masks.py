"""Inner ranges whose bounds read the outer index (``for j in range(i + 1, n)``): golden plans of
the stage (with no-change cases), the nested loops vectorized as one, and equivalence (value,
every gradient, dtype; float32 and float64; label ties, NaN/inf where no iteration reads,
one and two rows), with the run-time counts showing the vectorized branch ran; and how the outer
loop inlines such an inner loop (``inline_inner_loops``)."""
from __future__ import annotations

import ast
import warnings

import pytest
import torch

from passes.loops import inline_inner_loops, iteration, outer_dependent_ranges_to_masks
from passes.loops.plan import new_plan
from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module
from tests.loop_helpers import context, dedent, namespace, rewrite_source, strategies
from tests.loop_stage_helpers import plan_before, show

DTYPES = [torch.float32, torch.float64]


def _inner_plan(src: str) -> str:
    """The inner loop's iteration and body after this stage, its outer loop's bounds known."""
    tree = ast.parse(dedent(src))
    ctx = context(tree, namespace())
    outer = next(s for s in tree.body[0].body if isinstance(s, ast.For))
    inner = next(s for s in outer.body if isinstance(s, ast.For))
    plan = new_plan(inner, set(), ctx,
                    outer_bounds=outer_dependent_ranges_to_masks.index_bounds(outer, ctx))
    for stage in (iteration, outer_dependent_ranges_to_masks):
        plan = stage.stage(plan, ctx)
    return show(plan, ("iteration", "body"))


GOLDEN = [
    ("""
def f(e, n):
    for i in range(n):
        for j in range(i + 1, n):
            loss = loss + (e[i] - e[j]).norm()
""", """# iteration
j in range(1, n, 1)
# body
if i + 1 <= j:
    loss = loss + (e[i] - e[j]).norm()
"""),
    ("""
def f(x, n):
    for i in range(1, n):
        for j in range(i):
            loss = loss + x[i, j]
""", """# iteration
j in range(0, n - 1, 1)
# body
if j < i:
    loss = loss + x[i, j]
"""),
    ("""
def f(x, w):
    for i in range(x.shape[0]):
        for j in range(i, min(i + w, x.shape[0])):
            total += x[j]
""", """# iteration
j in range(0, min(x.shape[0] - 1 + w, x.shape[0]), 1)
# body
if i <= j:
    if j < i + w:
        total += x[j]
"""),
]

NO_CHANGE = [
    """
def f(x, lengths, n):
    for i in range(n):
        for j in range(lengths[i], n):
            loss = loss + x[j]
""",  # a bound read from data: nothing bounds it
    """
def f(x, n):
    for i in range(n):
        for j in range(n - i, n):
            loss = loss + x[j]
""",  # shrinks as i grows: smallest at the last i, not the first
    """
def f(x, n):
    for i in range(n):
        n = n - 1
        for j in range(i, n):
            loss = loss + x[j]
""",  # the outer body rebinds its range's bound
    """
def f(x, n):
    for i in range(0, n, 2):
        for j in range(i, n):
            loss = loss + x[j]
""",  # an outer step: i's last value is not n - 1
]


@pytest.mark.parametrize("src, golden", GOLDEN)
def test_golden_plans(src, golden):
    assert _inner_plan(src) == golden


@pytest.mark.parametrize("src", NO_CHANGE)
def test_bounds_it_cannot_bound_are_left_as_written(src):
    inner = next(s for s in ast.parse(dedent(src)).body[0].body[-1].body if isinstance(s, ast.For))
    it = ast.unparse(inner.iter).replace("range(", "").rstrip(")")
    start, stop = (it.split(", ") + [""])[:2]
    assert _inner_plan(src).startswith(f"# iteration\nj in range({start}, {stop}, 1)\n")


def test_a_data_bound_keeps_the_outer_loop_with_the_reason():
    _, report = rewrite_source("""
def f(x, lengths):
    loss = 0
    for i in range(x.shape[0]):
        for j in range(lengths[i], x.shape[0]):
            loss = loss + x[j].sum()
    return loss
""")
    outer = next(loop for loop in report.loops if loop.lineno == 3)
    assert outer.strategy in ("kept", "distributed")
    assert "needs a per-iteration runtime check: lengths[i]" in outer.reason


USER_CODE = '''
import torch
import torch.nn.functional as F


def pair_contrastive(e, y, margin=1.0):
    n = e.shape[0]
    loss = 0
    cnt = 0
    for i in range(n):
        for j in range(i + 1, n):
            d = (e[i] - e[j]).norm()
            if y[i] == y[j]:
                loss = loss + d ** 2
            else:
                loss = loss + F.relu(margin - d) ** 2
            cnt += 1
    return loss / cnt


def lower_triangle(a):
    loss = 0
    for i in range(1, a.shape[0]):
        for j in range(i):
            loss = loss + a[i, j].exp() * a[i, i]
    return loss


def lifted_pairs(score, target, margin=1):
    loss = 0
    counter = 0
    dist = torch.cdist(score, score).clamp(min=1e-6)
    for i in range(score.size(0)):
        t_i = target[i].item()
        for j in range(i + 1, score.size(0)):
            t_j = target[j].item()
            if t_i == t_j:
                l_ni = ((margin - dist[i]).exp() * (target != t_i)).sum()
                l_nj = ((margin - dist[j]).exp() * (target != t_j)).sum()
                loss += F.relu((l_ni + l_nj).log() + dist[i, j]) ** 2
                counter += 1
    return loss / (2 * counter)


def band(x, w):
    total = x.new_zeros(())
    for i in range(x.shape[0]):
        for j in range(i, min(i + w, x.shape[0])):
            total += (x[i] - x[j]).abs().sum()
    return total
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("outer_ranges"), USER_CODE)


def _inputs(name: str, n: int, dtype: torch.dtype) -> tuple:
    g = torch.Generator().manual_seed(n)
    if name == "pair_contrastive":  # labels with ties
        return (torch.randn(n, 3, generator=g, dtype=dtype).requires_grad_(),
                torch.arange(n) % 2)
    if name == "lower_triangle":  # NaN and inf above the diagonal, where no iteration reads
        a = torch.randn(n, n, generator=g, dtype=dtype)
        upper = torch.ones(n, n, dtype=torch.bool).triu(1)
        a = a.masked_fill(upper, float("nan"))
        if n > 2:
            a[0, 2] = float("inf")
        return (a.requires_grad_(),)
    if name == "lifted_pairs":  # host labels (`.item()`), every class twice
        return (torch.randn(n, 3, generator=g, dtype=dtype).requires_grad_(),
                torch.arange(n) % (n // 2))
    return torch.randn(n, 3, generator=g, dtype=dtype).requires_grad_(), 2


CASES = [("pair_contrastive", n) for n in (2, 3, 6)] + \
    [("lower_triangle", n) for n in (1, 2, 5)] + [("band", n) for n in (1, 2, 6)] + \
    [("lifted_pairs", n) for n in (2, 6)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name, n", CASES)
def test_equivalent(user, name, n, dtype):
    original = getattr(user, name)
    fast = optimize_loss(original, compile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback warns
        assert_equivalent(original, fast, *_inputs(name, n, dtype))


# not lifted_pairs: its inner loop's invariant `(margin - dist[i]).exp() * ...` now runs vectorized
# only when nothing takes a gradient (a check on the outer item `t_i`), so the outer loop is kept
@pytest.mark.parametrize("name", ["pair_contrastive", "lower_triangle", "band"])
def test_the_nested_loops_run_vectorized_as_one(user, name):
    fast = optimize_loss(getattr(user, name), compile=False)
    fast(*_inputs(name, 6, torch.float64))
    outer, inner = sorted(fast.report.loops, key=lambda loop: loop.lineno)
    assert outer.vectorized and inner.vectorized, fast.report
    assert outer.vectorized_runs == 1 and not outer.original_runs, fast.report


def test_the_inner_loop_alone_is_vectorized_over_the_fixed_range():
    code, report = rewrite_source("""
def f(x, n):
    loss = 0
    for i in range(n):
        for j in range(i + 1, n):
            loss = loss + (x[i] * x[j]).sum()
    return loss
""")
    assert strategies(report) == {3: "vmap", 4: "batched"}
    assert "torch.arange(1, n, 1" in code and "i + 1 <= j" in code


INLINED = """
def f(x):
    loss = 0
    for i in range(1, x.shape[0]):
        for j in range(i):
            loss = loss + x[i, j]
    return loss
"""


def test_the_outer_loop_inlines_the_vmap_form_and_the_folds():
    plan, ctx = plan_before(INLINED, inline_inner_loops)
    before = show(plan, ("body",))
    assert "if not isinstance(i, torch.Tensor)" in before  # the batched form, dead under i
    assert "as written, the loop at line 4" in before       # the promotion bail
    plan = inline_inner_loops.stage(plan, ctx)
    assert show(plan, ("body", "uses_where")) == """# body
def _body(j, _x_row):
    _loss_part = 0
    _cond = torch.ne(j < i, False)
    _loss_part = _loss_part + torch.where(_cond, torch.where(_cond.reshape(_branch_shape[\
_cond.shape, _x_row.shape]), _x_row, False), 0)
    return (torch.as_tensor(_loss_part),)
_outs = _map_in_chunks(_body, in_dims=(0, 0))(torch.arange(0, x.shape[0] - 1, 1, device=x.device), \
x[i] if x.shape[0] - 1 == x.shape[1] else x[i, 0:x.shape[0] - 1:1])
_outs = (_outs[0].sum(0),)
loss = loss + _outs[0]
# uses_where
True
"""


def test_an_inner_loop_without_masks_is_inlined_as_before():
    plan, ctx = plan_before(INLINED.replace("range(i)", "range(x.shape[1])"), inline_inner_loops)
    plan = inline_inner_loops.stage(plan, ctx)
    assert "as written" not in show(plan, ("body",)) and not plan.uses_where
