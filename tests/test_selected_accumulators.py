"""Accumulators that only a condition feeds (``fold_accumulators``): when no iteration is
selected the original's Python number stays that number (its type and value, no gradient), and
so does the rewrite's, through one host sync after the loop; when some are, the fold is the
original's tensor (value, every gradient, dtype). Golden folds with and without the guard,
behaviour through the decorator (float32 and float64, NaN/inf rows, eager and compiled) and the
refusal of numbers and tensors added under conditions to one name."""
from __future__ import annotations

import pytest
import torch

import rewrite
from rewrite.testing import assert_equivalent
from tests.helpers import load_module
from tests.loop_helpers import rewrite_source, same_python_types

INF, NAN = float("inf"), float("nan")

# name -> the body of `f(x, th)`; every update of `s` (and `p`) is under a tensor condition
FORMS = {
    "rebound": """
    s = 0
    for i in range(x.shape[0]):
        v = x[i].sum()
        if v > th:
            s = s + v
    return s""",
    "augmented": """
    s = 0
    for a in x:
        if a.sum() > th:
            s += a.sum()
    return s""",
    "subtracted_from_float": """
    s = 0.0
    for a in x:
        if a.sum() > th:
            s -= a.mean()
    return s""",
    "nonzero_start": """
    s = 5
    for a in x:
        if a.sum() > th:
            s = s + a.sum() * 2
    return s""",
    "counter_next_to_it": """
    s = 0
    n = 0
    for a in x:
        if a.sum() > th:
            s += a.sum()
            n += 1
    return s, n""",
    "product": """
    p = 1
    for a in x:
        if a.sum() > th:
            p = p * a.sum()
    return p""",
    "both_branches": """
    s = 0
    for a in x:
        if a.sum() > th:
            s += a.sum()
        elif a[0] > 0:
            s -= a.mean()
    return s""",
    "nested": """
    s = 0
    for a in x:
        if a.sum() > th:
            if a[0] > -10:
                s += a.sum()
    return s""",
    "continue": """
    s = 0.0
    for a in x:
        if a.sum() <= th:
            continue
        s += a.sum()
    return s""",
    "conditional_expression": """
    s = 0
    for a in x:
        s += a.sum() if a.sum() > th else a.mean()
    return s""",
    "zero_arm": """
    s = 0
    for a in x:
        s = s + (a.sum() if a.sum() > th else 0)
    return s""",
    "zero_arm_first": """
    s = 0.0
    for a in x:
        s -= 0 if a.sum() <= th else a.mean()
    return s""",
    "invariant_condition": """
    s = 0
    for a in x:
        if x.min() > th:
            s += a.sum()
    return s""",
    "python_condition": """
    s = 0.0
    for a in x:
        if th < 0:
            s -= a.sum()
            if a.sum() > 0:
                s += a.mean()
    return s""",
    "host_number": """
    s = 0
    for a in x:
        if a.sum() > th:
            s += a.sum().item()
    return s""",
    "float_literal": """
    s = 0
    for a in x:
        if a.sum() > th:
            s += 0.5
    return s""",
    "averaged": """
    s = 0
    for i in range(x.shape[0]):
        if x[i].sum() > th:
            s += x[i].sum()
    return s / x.shape[0]""",
}

ROWS = {
    "plain": [[1.0, 2.0], [3.0, -1.0], [0.5, 0.25]],
    "nan_inf": [[NAN, 2.0], [INF, 1.0], [0.5, 0.25]],   # NaN > th is False: never selected
    "ties": [[1.0, 1.0], [1.0, 1.0], [2.0, 0.0]],
}
# (threshold, rows): none selected, some, some of NaN/inf rows, all at ties
CASES = {"none": (100.0, ROWS["plain"]), "some": (2.5, ROWS["plain"]),
         "some_nan_inf": (2.5, ROWS["nan_inf"]), "all_ties": (-100.0, ROWS["ties"])}


def optimized(tmp_path, body: str, **options):
    fn = load_module(tmp_path, f"import torch\n\ndef f(x, th):{body}\n").f
    return fn, rewrite.optimize_loss(fn, **{"compile": False, "strict": True, **options})


def assert_same(original, fast, *args):
    """The same Python types (a number stays a number of its type), values, gradients, dtypes."""
    want, got = original(*args), fast(*args)
    assert same_python_types(want, got), (want, got)
    assert want == got or not isinstance(want, (int, float)), (want, got)
    assert_equivalent(original, fast, *args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_the_original_type_and_value_whichever_iterations_are_selected(tmp_path, form, case,
                                                                      dtype):
    th, rows = case
    original, fast = optimized(tmp_path, form)
    assert fast.report.loops[0].vectorized, fast.report.loops[0].reason
    assert_same(original, fast, torch.tensor(rows, dtype=dtype, requires_grad=True), th)


def test_none_selected_stays_a_number_the_caller_cannot_backward(tmp_path):
    original, fast = optimized(tmp_path, FORMS["rebound"])
    x = torch.tensor([[0.1], [0.2]], requires_grad=True)
    assert original(x, 5.0) == 0 and type(fast(x, 5.0)) is int
    with pytest.raises(AttributeError):
        fast(x, 5.0).backward()


@pytest.mark.parametrize("form", ["augmented", "nonzero_start", "counter_next_to_it",
                                  "host_number"])
@pytest.mark.parametrize("th", [100.0, 2.5], ids=["none", "some"])
def test_under_torch_compile_the_sync_breaks_the_graph_and_results_stay(tmp_path, form, th):
    original, fast = optimized(tmp_path, FORMS[form], compile=True, backend="aot_eager",
                               verify_compiled=False)
    for dtype in (torch.float32, torch.float64):
        assert_same(original, fast, torch.tensor(ROWS["plain"], dtype=dtype, requires_grad=True),
                    th)


def test_a_tensor_accumulator_keeps_its_dtype_and_aliases(tmp_path):
    fn = load_module(tmp_path, """import torch

def f(x, th):
    s = torch.zeros((), dtype=torch.float64)
    alias = s
    for a in x:
        if a.sum() > th:
            s += a.sum()
    return s, alias
""").f
    fast = rewrite.optimize_loss(fn, compile=False, strict=True)
    for th in (100.0, 2.5):
        assert_same(fn, fast, torch.tensor(ROWS["plain"], requires_grad=True), th)


def test_golden_the_fold_waits_for_a_selected_iteration():
    code, _ = rewrite_source("""
    def f(x, th):
        s = 0.0
        for a in x:
            if a.sum() > th:
                s = s + a.sum()
        return s
    """)
    lines = [line.strip() for line in code.splitlines()]
    k = lines.index("elif isinstance(s, torch.Tensor) or _outs[1].any():")
    assert lines[k + 1] == "s = s + _outs[0]"
    assert "_outs = (_s_part, _cond)" in lines


@pytest.mark.parametrize("src", [
    # a counter from the int 0 stays an int either way
    "n = 0\n    for a in x:\n        if a.sum() > th:\n            n += 1\n    return n",
    # ... and in both branches of a Python condition
    "s = 0\n    for a in x:\n        if th:\n            s += a.sum()\n        else:\n"
    "            s -= a.mean()\n    return s",
    # an update outside any condition makes it a tensor in every call
    "s = 0\n    for a in x:\n        s += a.sum()\n        if a.sum() > th:\n"
    "            s += a.mean()\n    return s",
])
def test_golden_unchanged_folds_that_need_no_guard(src):
    code, _ = rewrite_source(f"def f(x, th):\n    {src}\n")
    assert "vectorized" in code and ".any()" not in code and "_taken" not in code


def test_numbers_and_tensors_added_under_conditions_to_one_name_run_as_written(tmp_path):
    # refused by fold_accumulators (`s` a number or a tensor, by the data); distribution then
    # keeps the `if` as written
    original, fast = optimized(tmp_path, """
    s = 0
    for a in x:
        if a.sum() > th:
            s += a.sum()
        else:
            s += 1
    return s""")
    loop = fast.report.loops[0]  # split: the accumulation stays in the residual loop
    assert loop.strategy == "distributed" and "accumulates into `s`" in loop.reason
    for th in (100.0, 2.5):
        assert_same(original, fast, torch.tensor(ROWS["plain"], requires_grad=True), th)


def test_golden_an_added_int_0_arm_is_no_update():
    code, _ = rewrite_source("""
    def f(x, th):
        s = 0
        for a in x:
            s += a.sum() if a.sum() > th else 0
        return s
    """)
    lines = [line.strip() for line in code.splitlines()]
    assert "_outs = (_s_part, _cond)" in lines and "_pick" not in code  # a masked update
    assert lines[lines.index("if _outs[1].any():") + 1] == "s = _outs[0]"


@pytest.mark.parametrize("arm", ["0.0", "1"])
def test_golden_unchanged_other_number_arms_are_picks(arm):
    # adding 0.0 makes an int a float, adding 1 changes the sum: the pick stays
    code, _ = rewrite_source(f"""
    def f(x, th):
        s = 0
        for a in x:
            s += a.sum() if a.sum() > th else {arm}
        return s
    """)
    assert "_pick" in code and ".any()" not in code
