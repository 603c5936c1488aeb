"""Op sweep: per-sample loop losses over PyTorch's op database (tests/op_sweep.py) run through
``optimize_loss(compile=False, strict=True)``: each is vectorized with the original's value, every
gradient and exception type, or kept / refused with a reason; none is wrong.

CI runs one sample of every 12th op (by name). The full run, every op with up to three samples, is

    OL_OPSWEEP_STATS=opsweep.jsonl pytest -m opsweep tests/test_op_sweep.py
    python -m tests.op_sweep opsweep.jsonl

where ``OL_OPSWEEP_STATS`` records each program's outcome and reason (a wrong one with its source).
"""
from __future__ import annotations

import json
import os
import warnings

import pytest
import torch

import rewrite
from passes.errors import RewriteError
from rewrite.testing import differences
from tests.helpers import load_module
from tests.op_sweep import Case, cases, differentiable_ops, op_id

CI_STRIDE = 12

# Programs the sweep finds wrong that tests/test_known_bugs.py pins down (by that test's name);
# drop an entry when its test starts passing.
KNOWN_WRONG: dict[str, str] = {}


def outcome(directory, case: Case) -> tuple[str, str]:
    """(outcome, reason): "vectorized", "kept", "refused", "fell back at run time" (the vectorized
    form failed where it ran: ``strict=True`` raises where the default runs the original),
    "original raises" (and the rewritten function raised the same type), or "wrong"."""
    original = load_module(directory, case.source).loss
    fast = rewrite.optimize_loss(original, compile=False, strict=True)
    try:
        (loop,) = fast.report.loops
    except RewriteError as exc:
        return "refused", exc.message
    try:
        original(*case.args)
    except Exception as exc:  # noqa: BLE001 - the rewritten function must raise the same
        try:
            fast(*case.args)
        except RewriteError as got:  # strict=True: what raises instead of running the original
            return "fell back at run time", got.message
        except Exception as got:  # noqa: BLE001
            same = type(got) is type(exc)
            return (("original raises", type(exc).__name__) if same
                    else ("wrong", f"raised {got!r}, not {exc!r}"[:400]))
        return "wrong", f"did not raise {exc!r}"[:400]
    try:
        problems = differences(original, fast, case.args, {})
    except RewriteError as exc:  # strict=True: what raises instead of running the original
        return "fell back at run time", exc.message
    except Exception as exc:  # noqa: BLE001 - the original ran, so the rewritten one must
        return "wrong", f"raised {exc!r}"[:400]
    if problems:
        return "wrong", "; ".join(problems)[:400]
    (loop,) = fast.report.loops
    if not loop.vectorized:
        return "kept", loop.reason
    return ("vectorized", "") if loop.vectorized_runs else ("fell back at run time", loop.last_failure)


def sweep(directory, ops: list, samples: int) -> list[tuple[Case, str, str]]:
    """Every case of ``ops`` with its outcome; recorded in ``OL_OPSWEEP_STATS`` when set."""
    stats = os.environ.get("OL_OPSWEEP_STATS")
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of the ops themselves
        for op in ops:
            built, _ = cases(op, samples)
            for case in built:
                result, reason = outcome(directory, case)
                results.append((case, result, reason))
                if stats:
                    entry = {"op": case.op, "variant": case.variant, "outcome": result,
                             "reason": reason}
                    entry.update({"source": case.source} if result == "wrong" else {})
                    with open(stats, "a") as f:
                        f.write(json.dumps(entry) + "\n")
    return results


def assert_none_wrong(results) -> None:
    wrong = [(c, r) for c, result, r in results
             if result == "wrong" and c.op not in KNOWN_WRONG]
    assert not wrong, "\n\n".join(f"{c.op} ({c.variant}): {r}\n{c.source}" for c, r in wrong)


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    return tmp_path_factory.mktemp("op_sweep")


def test_a_deterministic_sample_of_op_db(directory):
    ops = sorted(differentiable_ops(), key=op_id)[::CI_STRIDE]
    results = sweep(directory, ops, samples=1)
    assert_none_wrong(results)
    # the sweep tests something: most of these programs run, and some vectorize
    assert sum(result == "vectorized" for _, result, _ in results) >= len(ops) // 3


@pytest.mark.opsweep
def test_all_of_op_db(directory):
    assert_none_wrong(sweep(directory, sorted(differentiable_ops(), key=op_id), samples=3))


def test_a_sample_becomes_the_programs_described():
    op = next(op for op in differentiable_ops() if op.name == "sum" and not op.variant_test_name)
    sample = next(s for s in op.sample_inputs("cpu", torch.float64, requires_grad=True)
                  if s.kwargs.get("dim") is not None)
    (first, second), _ = cases(op, 1)
    assert first.variant == "sum" and second.variant == "stack"
    assert "total = total + torch.sum(x[i]" in first.source and "outs.append(torch.sum(x[i]" in second.source
    assert first.args[0].shape[0] == 2 and first.args[0].requires_grad
    assert sample.kwargs  # samples with keywords exist, so the keyword spelling is exercised


@pytest.mark.parametrize("call", ["torch.as_strided(x[i], (2, 2), (1, 2), 1)",
                                  "torch.as_strided_copy(x[i], (2, 2), (2, 1))",
                                  "x[i].as_strided((3,), (2,))"])
def test_a_loop_over_rows_with_as_strided_is_kept(directory, call):
    """Strides and offsets address the storage of the whole batch, not the row: vmap's per-row
    reading gave other values (found by the sweep)."""
    source = f"import torch\n\n\ndef loss(x):\n    total = 0\n    for i in range(x.shape[0]):\n" \
             f"        total = total + {call}.sum()\n    return total\n"
    original = load_module(directory, source).loss
    fast = rewrite.optimize_loss(original, compile=False, strict=True)
    x = torch.randn(3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert not differences(original, fast, (x,), {})
    (loop,) = fast.report.loops
    assert not loop.vectorized and "strides and offset" in loop.reason
