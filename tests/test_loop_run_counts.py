"""The report says what runs: per vectorized loop, run-time counts from the first call of each
input signature (an instrumented eager copy; the steady path runs the plain rewrite)."""
from __future__ import annotations

import ast
import textwrap
import warnings

import pytest
import torch

from passes.loop_run_counters import instrument
from passes.report import Report
from rewrite import assert_equivalent, optimize_loss
from tests.helpers import load_module

USER_CODE = '''
import warnings
import torch

def summed(pred, target):
    total = 0
    for i in range(len(pred)):
        total = total + ((pred[i] - target[i]) ** 2).sum()
    return total

class Scaled:  # a callable object: its body is not read, and its `.item()` fails under vmap
    def __call__(self, d, n):
        return d * n.item()

scaled = Scaled()

def warned(pred, target, reduce=None):
    total = 0
    for i in range(pred.shape[0]):
        total = total + ((pred[i] - target[i]) ** 2).sum()
    if reduce is not None:
        warnings.warn("reduce is deprecated", DeprecationWarning)
    return total

def per_item(pred, target, lengths):
    total = 0
    for i in range(pred.shape[0]):
        total = total + scaled((pred[i] - target[i]) ** 2, lengths[i]).sum()
    return total
'''


@pytest.fixture
def user(tmp_path):
    return load_module(tmp_path, USER_CODE)


def _inputs(dtype, rows=3):
    gen = torch.Generator().manual_seed(2)
    return (torch.randn(rows, 4, generator=gen, dtype=dtype, requires_grad=True),
            torch.randn(rows, 4, generator=gen, dtype=dtype))


def _loop(fn):
    [loop] = fn.report.loops
    return loop


def test_instrument_golden():
    source = textwrap.dedent('''
        def f(x):
            if isinstance(x, torch.Tensor) and x.dim() == 2:
                'optimize_loss: loop at line 3 vectorized'
                y = x.sum()
            else:
                y = 0
            return y
    ''')
    expected = textwrap.dedent('''
        def f(x):
            if isinstance(x, torch.Tensor) and x.dim() == 2:
                'optimize_loss: loop at line 3 vectorized'
                counts.loop_ran(3, True)
                try:
                    y = x.sum()
                except Exception as _optimize_loss_error:
                    counts.loop_failed(3, _optimize_loss_error)
                    raise
            else:
                counts.loop_ran(3, False, 'check `isinstance(x, torch.Tensor)` was false' if not isinstance(x, torch.Tensor) else 'check `x.dim() == 2` was false')
                y = 0
            return y
    ''')
    assert ast.unparse(instrument(ast.parse(source), "counts")) == ast.unparse(ast.parse(expected))
    plain = "def f(x):\n    if x:\n        y = 1\n    else:\n        y = 0\n    return y"
    assert ast.unparse(instrument(ast.parse(plain), "counts")) == plain  # no guard: unchanged


@pytest.mark.parametrize("header, sequences", [("for i in range(x.shape[0]):", "((range(x.shape[0]),),)"),
                                               ("for a, b in zip(xs, ys):", "((xs, ys),)"),
                                               ("for i, a in enumerate(xs):", "((xs,),)"),
                                               ("for i in range(x.size(0)):", "((range(x.size(0)),),)"),
                                               ("for i in range(2):\n    for j in range(x.shape[1]):",
                                                "((range(2),), (range(x.shape[1]),))"),
                                               ("for i in range(2):\n    for j in range(i):", "((range(2),),)"),
                                               ("for a in make(xs):", None),
                                               ("for a in zip(xs, (y for y in ys)):", None)])
def test_instrument_golden_trip_counts(header, sequences):
    """The counter is given the sequences the original loop iterates in step."""
    loops = header.split("\n")
    source = "\n".join(["def f(x, xs, ys):", "    if isinstance(x, torch.Tensor):",
                        "        'optimize_loss: loop at line 3 vectorized'", "        y = x.sum()",
                        "    else:", *("        " + line for line in loops),
                        "        " + "    " * len(loops) + "y = y + 1", "    return y"])
    got = ast.unparse(instrument(ast.parse(source), "counts"))
    if sequences is None:  # evaluating it again could run user code: no trip count
        assert "counts.loop_ran(3, True)" in got
    else:
        assert f"counts.loop_ran(3, True, trips=lambda: {sequences})" in got


def test_iterations_count_the_trips_of_vectorized_runs(user):
    fn = optimize_loss(user.summed, compile=False)
    fn(*_inputs(torch.float32))
    assert fn.report.iterations == _inputs(torch.float32)[0].shape[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eager_first_call_counts_and_steady_calls_do_not(user, dtype):
    fn = optimize_loss(user.summed, compile=False)
    assert_equivalent(user.summed, fn, *_inputs(dtype))  # the counting copy: same value, gradients
    assert_equivalent(user.summed, fn, *_inputs(dtype))
    loop = _loop(fn)
    assert (loop.vectorized_runs, loop.original_runs, loop.failed_runs) == (1, 0, 0)
    assert "[ran: vectorized 1, as written 0]" in str(fn.report)


def test_compiled_signatures_count_what_runs(user):
    fn = optimize_loss(user.summed, backend="eager")
    fn(*_inputs(torch.float32))
    pred, target = _inputs(torch.float32)
    fn(list(pred), list(target))  # a list of rows of one shape: stacked, vectorized
    rows = [pred[0], pred[1, :3]]  # rows of different lengths: the loop runs as written
    fn(rows, [r.detach() for r in rows])
    loop = _loop(fn)
    assert (loop.vectorized_runs, loop.original_runs) == (2, 1)
    # The stacked list's check in the user's names, not the generated one's.
    why = ("`pred` was not a tensor or a list or tuple of tensors of one shape, dtype and device: "
           "its items differ in shape: [4] (item 0), [3] (item 1)")
    assert loop.last_failure == why
    assert (f"as written 1; last: {why}"
            in str(fn.report))


def test_a_vectorized_branch_that_raises_is_reported(user):
    fn = optimize_loss(user.per_item, compile=False)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        fn(*_inputs(torch.float32), torch.tensor([1, 2, 3]))
    loop = _loop(fn)
    assert (loop.vectorized_runs, loop.failed_runs) == (1, 1)
    assert loop.last_failure.startswith("raised RuntimeError: vmap: It looks like you're calling .item()")
    assert "(1 raised)" in str(fn.report)


def test_a_lambda_with_a_vectorized_comprehension_runs(tmp_path):
    module = load_module(tmp_path, "import torch\nloss = lambda p, t: sum(((p[i] - t[i]) ** 2).sum() "
                                   "for i in range(len(p)))\n")
    fn = optimize_loss(module.loss, compile=False)
    assert _loop(fn).vectorized  # the rewritten source reads `def <lambda>`: it is not counted
    assert_equivalent(module.loss, fn, *_inputs(torch.float64))


def test_inspect_shows_the_counts(user):
    from rewrite.tools import inspection
    data = inspection.collect(user.summed, _inputs(torch.float32), {}, repeat=1)
    assert data["loops"][0]["runs"] == {"vectorized": 1, "failed": 0, "as_written": 0,
                                        "last_failure": "", "kept_at_run_time": ""}
    assert "[ran: vectorized 1, as written 0]" in inspection.format_text(data)


NESTED = '''
import torch

def nested(x):
    total = 0
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            total = total + (x[i, j] ** 2).sum()
    return total

def beside(x):
    total = 0
    for i in range(x.shape[0]):
        total = total + x[i].sum()
    return total

def nested_lists(rows):
    total = 0
    for i in range(len(rows)):
        for j in range(len(rows[i])):
            total = total + rows[i][j].abs().mean()
    return total
'''


def test_an_inner_loop_runs_vectorized_inside_its_outer_loops_form(tmp_path):
    # the inner loop is part of the outer one's vectorized form: it counts no run of its own,
    # and runs vectorized because the loop around it did
    module = load_module(tmp_path, NESTED)
    fn = optimize_loss(module.nested, compile=False)
    fn(torch.randn(3, 4, 5, requires_grad=True))
    outer, inner = sorted(fn.report.loops, key=lambda loop: loop.lineno)
    assert (outer.vectorized_runs, inner.vectorized_runs) == (1, 0)
    assert fn.report.ran_vectorized(outer) == fn.report.ran_vectorized(inner) == {outer.lineno}


def test_the_report_says_an_inner_loop_ran_only_within_its_outer_loops_form(tmp_path):
    module = load_module(tmp_path, NESTED)
    fn = optimize_loss(module.nested, compile=False)
    fn(torch.randn(3, 4, 5, requires_grad=True))
    text = str(fn.report)
    assert "[ran: only within the vectorized form of line 6, which ran vectorized 1, as written 0]" in text
    # a list of lists of maps of different shapes: the outer loop runs as written, and the
    # report does not leave the inner loop's "vectorized" without saying it never ran so
    rows = [[torch.randn(2, 3, requires_grad=True), torch.randn(4)] for _ in range(2)]
    fn = optimize_loss(module.nested_lists, compile=False)
    assert_equivalent(module.nested_lists, fn, rows)
    outer, inner = sorted(fn.report.loops, key=lambda loop: loop.lineno)
    assert (inner.vectorized, inner.vectorized_runs, inner.original_runs) == (True, 0, 0)
    assert (f":{inner.lineno}: loop vectorized" in str(fn.report)
            and f"[ran: only within the vectorized form of line {outer.lineno}, which ran "
                "vectorized 0, as written 1]" in str(fn.report))
    assert "[ran: only" not in str(optimize_loss(module.beside, compile=False).report)


TRIPLETS = """
import torch


def all_triplets(d, labels, margin):
    loss = 0.0
    for a in range(len(labels)):
        for p in range(len(labels)):
            if p == a or labels[p] != labels[a]:
                continue
            for q in range(len(labels)):
                if labels[q] == labels[a]:
                    continue
                loss = loss + torch.relu(d[a, p] - d[a, q] + margin)
    return loss
"""


def test_a_loop_two_levels_in_names_only_the_loop_whose_form_holds_it(tmp_path):
    """The innermost of three loops runs inside the pair loop's form, which runs inside the
    outer one's: its report names the loop around it that ran, once (it named both)."""
    module = load_module(tmp_path, TRIPLETS)
    fn = optimize_loss(module.all_triplets, compile=False)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    assert_equivalent(module.all_triplets, fn, torch.rand(6, 6, requires_grad=True), labels, 0.2)
    inner = max(fn.report.loops, key=lambda loop: loop.lineno)
    line = next(l for l in str(fn.report).splitlines() if f":{inner.lineno}: loop" in l)
    assert line.count("[ran: only within") == 1 and "vectorized form of line 8," in line, line


def test_what_runs_vectorized_when_the_outer_loop_raised_or_is_kept(tmp_path):
    module = load_module(tmp_path, NESTED)
    report = Report("nested", module.__file__, 4)
    outer = report.add_loop(6, True, "vmap", "")
    inner = report.add_loop(7, True, "batched", "")
    outer.vectorized_runs, outer.failed_runs = 1, 1  # it raised: the original ran
    assert report.ran_vectorized(outer) == report.ran_vectorized(inner) == frozenset()
    outer.failed_runs = 0
    assert report.ran_vectorized(inner) == {6}
    outer.vectorized = False  # kept, its inner loop vectorized by itself
    outer.vectorized_runs, inner.vectorized_runs = 0, 2
    assert report.ran_vectorized(outer) == frozenset() and report.ran_vectorized(inner) == {7}
    elsewhere = Report("f", "<string>", 1)  # no file to find the loops around it in
    loop = elsewhere.add_loop(3, True, "vmap", "")
    assert elsewhere.ran_vectorized(loop) == frozenset()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_counted_first_call_runs_at_the_users_lines(user, dtype):
    # the counting copy was built from the rewritten text: a warning of the first call of each
    # signature came from a line of that text (past the end of the user's function), not the
    # user's `warnings.warn` line; tracebacks alike
    fn = optimize_loss(user.warned, compile=False, keep_faster=False)
    pred = torch.randn(5, 3, dtype=dtype, requires_grad=True)
    target = torch.randn(5, 3, dtype=dtype)
    lines = []
    for f in (user.warned, fn, fn):  # the original, the counted first call, a steady call
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            f(pred, target, reduce=True)
        lines.append([(w.filename, w.lineno) for w in caught if w.category is DeprecationWarning])
    assert lines[0] == lines[1] == lines[2] and len(lines[0]) == 1, lines
    assert fn.report.loops[0].vectorized_runs == 1
