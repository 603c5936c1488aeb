"""Differential fuzzer: random loss functions (tests/fuzz_programs.py) run through
``optimize_loss(compile=False, strict=True)`` either vectorized with the original's value, every
gradient, dtype and exception type, or kept with a reason; must-keep programs are kept.

CI runs each test at the profile's example count (100), and a handful of programs compiled with
``backend="aot_eager"``. The long run (2,500 each, 60 compiled with Inductor) is

    OL_FUZZ_STATS=fuzz.jsonl HYPOTHESIS_PROFILE=long pytest -m fuzz tests/test_fuzz_programs.py
    python -m tests.fuzz_programs fuzz.jsonl

where ``OL_FUZZ_STATS`` records each program's outcome, a wrong one with its source and inputs
instead of stopping at the first, and the second command prints the figures.
"""
from __future__ import annotations

import ast
import builtins
import json
import os

import pytest
import torch
from torch.utils._pytree import tree_flatten, tree_unflatten
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import rewrite
from passes.errors import RewriteError
from rewrite.testing import assert_equivalent
from tests.fuzz_programs import Program, inputs, programs
from tests.helpers import load_module
from tests.loop_helpers import same_python_types

pytestmark = pytest.mark.fuzz


def _computed_twice(src: str, args: tuple) -> bool:
    """A call (not of a builtin) or an operator written twice in ``loss``, helpers' arguments
    included: share_common_subexpressions may compute it once."""
    loss = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "loss")
    written = [ast.unparse(n) for n in ast.walk(loss) if isinstance(n, ast.BinOp)
               or isinstance(n, ast.Call) and not (isinstance(n.func, ast.Name)
                                                   and hasattr(builtins, n.func.id))]
    return len(written) != len(set(written))


def _builtin_min_next_to_a_graph_break(src: str, args: tuple) -> bool:
    """A builtin `min` accumulator in a loop that also converts a tensor to a Python number (under
    torch.compile, the counter's `int` or an `.item()` splits the graph; eager draws of these are
    skipped too)."""
    return "lo = min(lo," in src and any(k in src for k in ("n += 1", ".item()", "float("))


def _full_max_in_a_conditional_expression(src: str, args: tuple) -> bool:
    return any(isinstance(n, ast.IfExp) and ".max()" in ast.unparse(n)
               for n in ast.walk(ast.parse(src)))


# Programs that hit a bug tests/test_known_bugs.py pins down (by that test's name) are not drawn,
# so the fuzzer looks for new ones; drop an entry when its test starts passing. Each entry:
# test name -> predicate(program source, inputs).
KNOWN_BUGS: dict = {
    "test_a_value_computed_twice_at_an_infinite_derivative": _computed_twice,
    "test_unpicked_builtin_min_items_under_torch_compile_next_to_a_counter":
        _builtin_min_next_to_a_graph_break,
    "test_conditional_expression_with_a_full_max_at_nan_under_torch_compile":
        _full_max_in_a_conditional_expression,
}


def not_a_known_bug(program: Program, args: tuple) -> None:
    """Reject (``assume``) a draw that hits a known bug; counted as "known" in the stats file."""
    known = next((name for name, hit in KNOWN_BUGS.items() if hit(program.source, args)), None)
    if known and os.environ.get("OL_FUZZ_STATS"):
        _append(os.environ["OL_FUZZ_STATS"], {"outcome": "known", "bug": known})
    assume(known is None)


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz_programs")


def outcome(directory, program: Program, args: tuple, **options) -> str:
    """Check one program on one input; "vectorized", "kept" or "refused" (the checker's reason).
    ``options`` go to ``optimize_loss`` (eager, ``strict=True`` unless they say otherwise)."""
    original = load_module(directory, program.source).loss
    fast = rewrite.optimize_loss(original, **{"compile": False, "strict": True, **options})
    try:
        loops = fast.report.loops
    except RewriteError as exc:
        assert exc.message, program.source
        return "refused"
    assert all(loop.reason for loop in loops), program.source
    try:
        want = original(*args)
    except Exception as exc:  # noqa: BLE001 - the rewritten function must raise the same
        with pytest.raises(type(exc)) as got:
            fast(*args)
        assert type(got.value) is type(exc), (program.source, got.value, exc)
        return _verdict(loops)
    got = fast(*args)
    want, got = (want, got) if isinstance(want, tuple) else ((want,), (got,))
    # An accumulator that only a branch feeds tensors stays a Python number when no iteration
    # took that branch, in both.
    assert all(same_python_types(a, b) for a, b in zip(want, got)), (program.source, want, got)
    # Where the original returns a Python number, both sides' outputs become float64 tensors:
    # compared with a tolerance and NaN == NaN, as tensors are (rewrite.testing compares Python
    # numbers exactly); their types were checked above.
    numbers = {k for k, v in enumerate(tree_flatten(want)[0]) if isinstance(v, (int, float))}
    assert_equivalent(_as_float64(original, numbers), _as_float64(fast, numbers), *args)
    return _verdict(loops)


def _as_float64(fn, positions: set):
    def run(*args):
        flat, spec = tree_flatten(fn(*args))
        return tree_unflatten([torch.as_tensor(v).double() if k in positions else v
                               for k, v in enumerate(flat)], spec)
    return run


def _verdict(loops) -> str:
    return "vectorized" if any(loop.vectorized for loop in loops) else "kept"


def check(directory, program: Program, args: tuple, **options) -> str:
    """``outcome``, with the program in the failure message; with ``OL_FUZZ_STATS`` set, a failure
    is recorded as "wrong" (with its message and program) instead of raised, so a long run counts
    every wrong program rather than stopping at the first."""
    stats = os.environ.get("OL_FUZZ_STATS")
    try:
        result = outcome(directory, program, args, **options)
    except (AssertionError, RewriteError, pytest.fail.Exception) as exc:
        if not stats:
            raise AssertionError(f"{exc}\nprogram:\n{program.source}\n"
                                 f"inputs: {[a.tolist() for a in args]}") from exc
        result = "wrong"
        _append(stats, {"error": str(exc)[:500], "source": program.source,
                        "inputs": [a.tolist() for a in args]})
    if stats:
        _append(stats, {"outcome": result, "patterns": program.patterns, "keep": program.keep,
                        "compiled": options.get("backend")})
    return result


def _append(path: str, entry: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")


@given(program=programs(), data=st.data(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_claimed_patterns_vectorize_or_keep_with_the_same_result(directory, program, data, dtype):
    args = data.draw(inputs(dtype))
    not_a_known_bug(program, args)
    check(directory, program, args)


@given(program=programs(keep=True), data=st.data())
def test_must_keep_programs_are_kept(directory, program, data):
    args = data.draw(inputs(torch.float64))
    not_a_known_bug(program, args)
    check(directory, program, args)
    fast = rewrite.optimize_loss(load_module(directory, program.source).loss, compile=False)
    (loop,) = [l for l in fast.report.loops if l.lineno == program.loop_line]
    assert loop.reason, (program.keep, program.source, loop)
    if loop.strategy == "distributed":
        # Distribution may vectorize the rest; the construct (first in the body) stays in the
        # residual loop, which runs in the original order.
        assert f":{program.loop_line + 1} `" in loop.reason.split("residual loop:", 1)[1], (
            program.keep, program.source, loop)
    else:
        assert not loop.vectorized, (program.keep, program.source, loop)


# Compiled: the rewritten function through torch.compile, checked against the original directly
# (verify_compiled=False: that check would run the eager rewrite on a mismatch and hide it).
# aot_eager and a handful in CI; Inductor in the long run.
LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
COMPILED_BACKEND = "inductor" if LONG else "aot_eager"


@settings(max_examples=60 if LONG else 4)
@given(program=programs(), data=st.data(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_compiled_programs_give_the_original_result(directory, program, data, dtype):
    args = data.draw(inputs(dtype))
    not_a_known_bug(program, args)
    torch._dynamo.reset()  # each program is a new function: free the last one's graphs
    check(directory, program, args, compile=True, backend=COMPILED_BACKEND, verify_compiled=False)
