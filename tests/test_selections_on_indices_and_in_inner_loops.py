"""Python-number accumulators that no iteration selects keep the original's number where the
selection is made by an inner loop (its fold carries a counter of the selecting iterations,
which the outermost vectorized loop sums and guards its fold by) or by conditions on loop
indices only (tested on the host as the original does: no device read, no host sync the
original does not make). Golden folds, behaviour through the decorator (float32 and float64,
value, gradients, dtype, Python type, exception), and a refusal."""
from __future__ import annotations

import pytest
import torch

import rewrite
from rewrite.testing import assert_equivalent
from tests.helpers import load_module
from tests.loop_helpers import rewrite_source, same_python_types

# name -> (parameters, body): every update of the accumulator is conditional
FORMS = {
    "token_nll": ("p, gold, pad", """
    total, n = 0, 0
    for b in range(gold.shape[0]):
        for t in range(gold.shape[1]):
            if gold[b][t] != pad:
                total += -torch.log(p[b][t][int(gold[b][t])])
                n += 1
    return total, n"""),
    "inner_index_condition": ("p, k", """
    s = 0
    for i in range(p.shape[0]):
        for j in range(p.shape[0]):
            if i != j + k:
                s = s + (p[i] - p[j]).pow(2).sum()
    return s"""),
    "index_condition_continue": ("p, k", """
    s = 0
    for i in range(p.shape[0]):
        if i == k:
            continue
        s += p[i].sum()
    return s"""),
    "triangular": ("p, k", """
    s = 0
    for i in range(p.shape[0]):
        for j in range(i + 1 + k, p.shape[0]):
            s = s + (p[i] * p[j]).sum()
    return s"""),
    "three_levels": ("p, k", """
    s = 0.0
    for a in range(p.shape[0]):
        for b in range(p.shape[1]):
            for c in range(p.shape[2]):
                if p[a, b, c] > k:
                    s += p[a, b, c] * 2
    return s"""),
    "three_levels_on_indices": ("p, k", """
    s = 0
    for a in range(p.shape[0]):
        for b in range(p.shape[1]):
            for c in range(p.shape[2]):
                if a + b + c > k:
                    s += p[a, b, c] * 2
    return s"""),
    "under_a_python_condition": ("p, k", """
    s = 0
    for i in range(p.shape[0]):
        if k < 50:
            for j in range(p.shape[1]):
                if p[i, j].sum() > k:
                    s = s + p[i, j].sum()
    return s"""),
    "index_and_tensor_conditions": ("p, k", """
    s = 0
    for i in range(p.shape[0]):
        if i == k:
            s = s + p[i].sum()
        if p[i].sum() > k:
            s = s - p[i].mean()
    return s"""),
}


def inputs(form: str, dtype: torch.dtype, none: bool) -> tuple:
    """Arguments with no iteration selected (``none``) or some."""
    g = torch.Generator().manual_seed(0)
    if form == "token_nll":
        p = torch.rand(2, 3, 4, generator=g, dtype=dtype).softmax(-1).requires_grad_()
        gold = torch.zeros(2, 3, dtype=torch.long) if none else torch.tensor([[1, 0, 2], [0, 0, 3]])
        return p, gold, 0
    shape = {"inner_index_condition": (1, 2) if none else (3, 2), "three_levels": (2, 3, 2),
             "three_levels_on_indices": (2, 3, 2)}.get(form, (3, 2, 2))
    p = torch.randn(shape, generator=g, dtype=dtype).requires_grad_()
    k = {"inner_index_condition": 0, "index_condition_continue": 0 if none else 1,
         "triangular": 5 if none else 0}.get(form, 100 if none else 0)
    if form == "index_condition_continue" and none:
        p = p[:1].detach().requires_grad_()  # one iteration, the skipped one
    return p, k


def optimized(tmp_path, form: str, **options):
    params, body = FORMS[form]
    fn = load_module(tmp_path, f"import torch\n\ndef f({params}):{body}\n").f
    return fn, rewrite.optimize_loss(fn, **{"compile": False, "strict": True, **options})


def assert_same(original, fast, *args):
    want, got = original(*args), fast(*args)
    assert same_python_types(want, got), (want, got)
    assert_equivalent(original, fast, *args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("none", [True, False], ids=["none_selected", "some_selected"])
@pytest.mark.parametrize("form", FORMS)
def test_the_original_type_and_value_whichever_iterations_are_selected(tmp_path, form, none,
                                                                      dtype):
    original, fast = optimized(tmp_path, form)
    args = inputs(form, dtype, none)
    assert_same(original, fast, *args)
    assert all(loop.vectorized for loop in fast.report.loops), fast.report.loops
    if none and form != "index_and_tensor_conditions":
        assert not isinstance(fast(*args), torch.Tensor)


def test_nested_number_accumulator_when_no_iteration_is_selected(tmp_path):
    # the token NLL's `total / n` with nothing selected: 0 / 0 in the original, not tensor(nan)
    fn = load_module(tmp_path, """import torch

def f(p, gold):
    total, n = 0, 0
    for b in range(gold.shape[0]):
        for t in range(gold.shape[1]):
            if gold[b][t] != 0:
                total += -torch.log(p[b][t][int(gold[b][t])])
                n += 1
    return total / n
""").f
    fast = rewrite.optimize_loss(fn, compile=False, strict=True)
    p = torch.rand(2, 3, 4).softmax(-1).requires_grad_()
    with pytest.raises(ZeroDivisionError):
        fn(p, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ZeroDivisionError):
        fast(p, torch.zeros(2, 3, dtype=torch.long))
    assert_equivalent(fn, fast, p, torch.tensor([[1, 0, 2], [0, 0, 3]]))


def test_number_accumulator_under_an_index_condition_no_iteration_meets(tmp_path):
    original, fast = optimized(tmp_path, "inner_index_condition")
    x = torch.randn(1, 3, requires_grad=True)
    assert original(x, 0) == 0 and type(fast(x, 0)) is int


@pytest.mark.parametrize("none", [True, False], ids=["none_selected", "some_selected"])
@pytest.mark.parametrize("form", ["token_nll", "inner_index_condition"])
def test_under_torch_compile_results_stay(tmp_path, form, none):
    original, fast = optimized(tmp_path, form, compile=True, backend="aot_eager",
                               verify_compiled=False)
    for dtype in (torch.float32, torch.float64):
        assert_same(original, fast, *inputs(form, dtype, none))


def test_golden_an_inner_loop_counts_its_selections_and_the_outer_loop_guards():
    code, _ = rewrite_source("def f(p, gold, pad):" + FORMS["token_nll"][1] + "\n")
    lines = [line.strip() for line in code.splitlines()]
    assert "_total_selected = 0" in lines  # zeroed once, before the outer loop's vmap
    assert "_total_selected_part = _total_selected_part + _outs[2].sum()" in lines
    # (`total` is known to be the int 0 there: no tensor test, the fold is the loop's sum)
    k = lines.index("if _total_selected.any():")
    assert lines[k - 1] == "_total_selected = _total_selected + _outs_1[2]"
    assert lines[k + 1] == "total = _outs_1[0]"


def test_golden_an_index_condition_is_tested_on_the_host():
    code, _ = rewrite_source("def f(p, k):" + FORMS["inner_index_condition"][1] + "\n")
    lines = [line.strip() for line in code.splitlines()]
    # (an `elif` after the check that runs the loops as written for 16-bit items)
    k = lines.index("elif _run_eagerly(lambda: any((any((i != j + k for j in range(0, p.shape[0], "
                    "1))) for i in range(0, p.shape[0], 1)))):")
    assert lines[k + 1] == "s = _outs_1[0]" and ".any()" not in code


def test_golden_a_tensor_accumulator_skips_the_host_test():
    code, _ = rewrite_source("""
    def f(p, k):
        s = torch.zeros(())
        for i in range(p.shape[0]):
            if i != k:
                s += p[i].sum()
        return s
    """)
    lines = [line.strip() for line in code.splitlines()]
    # (an `elif` after the wider-start check of `loop_sums_keep_dtypes`)
    assert "elif isinstance(s, torch.Tensor) or _run_eagerly(lambda: len(range(0, p.shape[0], 1)) " \
           "> 1 and isinstance(k, torch.Tensor) and (k.numel() == 1) or any((i != k for i in " \
           "range(0, p.shape[0], 1)))):" in lines


def test_an_inner_host_test_under_a_python_condition_runs_as_written(tmp_path):
    # whether an iteration selects is the outer body's flag and the inner's host test: not
    # known on the host without the flags
    fn = load_module(tmp_path, """import torch

def f(p, k):
    s = 0
    for i in range(p.shape[0]):
        if k < 50:
            for j in range(p.shape[1]):
                if j != k:
                    s = s + p[i, j]
    return s
""").f
    fast = rewrite.optimize_loss(fn, compile=False)
    outer = next(loop for loop in fast.report.loops if loop.lineno == 5)
    assert not outer.vectorized and "not known on the host" in outer.reason
    for k in (0, 1, 60):
        assert_same(fn, fast, torch.tensor([[1.0], [-3.0]], requires_grad=True), k)


def test_an_inner_host_test_reading_the_outer_element_runs_as_written(tmp_path):
    # `range(a.shape[0])` of the outer element is no value after the outer loop
    fn = load_module(tmp_path, """import torch

def f(x, n):
    s = 0.0
    for a in x:
        for j in range(a.shape[0]):
            if j == n:
                s += a[j]
    return s
""").f
    fast = rewrite.optimize_loss(fn, compile=False)
    outer = next(loop for loop in fast.report.loops if loop.lineno == 5)
    assert not outer.vectorized and "reads values of this loop" in outer.reason
    for rows, n in ((1, 5), (3, 1)):
        for dtype in (torch.float32, torch.float64):
            assert_same(fn, fast, torch.randn(rows, 3, dtype=dtype, requires_grad=True), n)
