"""Differential fuzzer: random loss functions (tests/fuzz_programs.py) run through
``optimize_loss(compile=False, strict=True)`` either vectorized with the original's value, every
gradient, dtype and exception type, or kept with a reason; must-keep programs are kept.

CI runs each test at the profile's example count (100), and a handful of programs compiled with
``backend="aot_eager"``. The long run (2,500 each, 60 compiled with Inductor) is

    OL_FUZZ_STATS=fuzz.jsonl HYPOTHESIS_PROFILE=long pytest -m fuzz tests/test_fuzz_programs.py
    python -m tests.fuzz_programs fuzz.jsonl

where ``OL_FUZZ_STATS`` records each program's outcome, a wrong one with its source and inputs
instead of stopping at the first, and the second command prints the figures. A compiled program
that differs from the eager original exactly as ``torch.compile`` of the original does is counted
as the compiler's (``COMPILERS_OWN``), not wrong: the rewrite changed nothing there.
"""
from __future__ import annotations

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
from tests.fuzz_programs import HEADER, Program, inputs, programs
from tests.helpers import load_module
from tests.loop_helpers import same_python_types

pytestmark = pytest.mark.fuzz


# Programs that hit a bug tests/test_known_bugs.py pins down (by that test's name) are not drawn,
# so the fuzzer looks for new ones; drop an entry when its test starts passing. Each entry:
# test name -> predicate(program source, inputs).
KNOWN_BUGS: dict = {
    "test_product_of_an_item_with_an_infinite_factor_next_to_an_item_with_a_zero":
        lambda source, args: ".prod()" in source and any(
            isinstance(a, torch.Tensor) and a.is_floating_point() and bool(a.isinf().any())
            for a in args),
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


def outcome(directory, program: Program, args: tuple, fast=None, **options) -> str:
    """Check one program on one input; "vectorized", "kept" or "refused" (the checker's reason).
    ``options`` go to ``optimize_loss`` (eager, ``strict=True`` unless they say otherwise), or
    ``fast`` is the caller's ``optimize_loss`` of the program, whose report it reads after."""
    original = load_module(directory, program.source).loss
    if fast is None:
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


def check(directory, program: Program, args: tuple, fast=None, **options) -> str:
    """``outcome``, with the program in the failure message; with ``OL_FUZZ_STATS`` set, a failure
    is recorded as "wrong" (with its message and program) instead of raised, so a long run counts
    every wrong program rather than stopping at the first."""
    stats = os.environ.get("OL_FUZZ_STATS")
    try:
        result = outcome(directory, program, args, fast, **options)
    except (AssertionError, RewriteError, pytest.fail.Exception) as exc:
        if options.get("backend") and _as_compiled_original(directory, program, args, options):
            result = COMPILERS_OWN  # what the user would get from torch.compile alone
        elif not stats:
            raise AssertionError(f"{exc}\nprogram:\n{program.source}\n"
                                 f"inputs: {[a.tolist() for a in args]}") from exc
        else:
            result = "wrong"
            _append(stats, {"error": str(exc)[:500], "source": program.source,
                            "inputs": [a.tolist() for a in args]})
    if stats:
        _append(stats, {"outcome": result, "patterns": program.patterns, "keep": program.keep,
                        "compiled": options.get("backend")})
    return result


COMPILERS_OWN = "as torch.compile of the original"


def _as_compiled_original(directory, program: Program, args: tuple, options: dict) -> bool:
    """Whether the compiled rewrite gives what ``torch.compile`` of the original gives with the
    same backend (value, gradients, dtype): a difference from the eager original that is the
    compiler's own (Inductor's decompositions at NaN, Dynamo's builtin ``min`` of a tensor), not
    the rewrite's."""
    original = load_module(directory, program.source).loss
    fast = rewrite.optimize_loss(original, **{"strict": True, **options})
    try:
        assert_equivalent(torch.compile(original, backend=options["backend"]), fast, *args)
    except Exception:  # noqa: BLE001 - any difference, or an exception on one side only
        return False
    return True


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
    # the check runs this function, and its report is read after: one rewrite, not two (strict
    # only makes a fallback raise, and a refused program fails here either way)
    fast = rewrite.optimize_loss(load_module(directory, program.source).loss, compile=False,
                                 strict=True)
    check(directory, program, args, fast)
    (loop,) = [l for l in fast.report.loops if l.lineno == program.loop_line]
    assert loop.reason, (program.keep, program.source, loop)
    if loop.strategy == "distributed" and "residual loop:" not in loop.reason:
        # a `break` ending a body whose rest vectorizes whole: no residual loop, the iteration
        # that breaks runs as written (distribute_loops._counted_whole)
        assert program.keep == "break" and "the iteration that breaks runs as written" in \
            loop.reason, (program.keep, program.source, loop)
    elif loop.strategy == "distributed":
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


def test_a_difference_torch_compile_of_the_original_makes_too_is_the_compilers(directory):
    # Dynamo's builtin `min` of a tensor propagates NaN where Python's skips it; no loop
    program = Program(HEADER + """
def loss(x):
    return min(min(float("inf"), x[0].sum()), x[1].sum())
""", (), None, 0)
    args = (torch.tensor([[1.0], [float("nan")], [0.5]], requires_grad=True),)
    assert check(directory, program, args, compile=True, backend="aot_eager",
                 verify_compiled=False) == COMPILERS_OWN
