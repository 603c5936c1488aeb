"""inline_helper_calls: a helper that ends in writes into rows of its parameters (SSD's
``match(..., loc_t, conf_t, idx)``) is inlined where it is called as a statement, its writes
going to the caller's arguments, so the loop's own ``out[i] = e`` is stacked."""
from __future__ import annotations

import ast

import pytest
import torch

from passes.loops import inline_helper_calls
from passes.ast_tools import Namer, PassContext, unparse
from rewrite import Report, assert_equivalent, optimize_loss
from rewrite.frontend import parse_function
from tests.helpers import FRONTEND, load_module

SOURCE = '''
import torch


def encode(x, w, out, counts, i):
    y = x * w
    out[i] = y.amax(1)
    counts[i] = (y > 0).sum()


def rows(x, w):
    out = torch.empty(x.shape[0], x.shape[1], dtype=x.dtype)
    counts = torch.zeros(x.shape[0], dtype=torch.long)
    for i in range(x.shape[0]):
        encode(x[i], w, out, counts, i)
    return (out ** 2).sum() + counts.sum()


def accumulate(x, out, i):
    out[i] = out[i] + x.sum()


def reads_its_output(x):
    out = torch.zeros(x.shape[0], dtype=x.dtype)
    for i in range(x.shape[0]):
        accumulate(x[i], out, i)
    return out.sum()


def shifted(x, out, i):
    i = i + 1
    out[i] = x.sum()


def rebinds_its_index(x):
    out = torch.zeros(x.shape[0] + 1, dtype=x.dtype)
    for i in range(x.shape[0]):
        shifted(x[i], out, i)
    return out.sum()


def fill(x, out, i):
    out[i] = x.sum()


def value_used(x):
    out = torch.zeros(x.shape[0], dtype=x.dtype)
    for i in range(x.shape[0]):
        r = fill(x[i], out, i)
    return out.sum()


def into_a_list_item(x):
    bufs = [torch.zeros(x.shape[0], dtype=x.dtype)]
    for i in range(x.shape[0]):
        fill(x[i], bufs[0], i)
    return bufs[0].sum()


def fill_twice(x, out, i):
    d = fill(x, out, i)
    return x.sum()


def calls_a_writer(x):
    out = torch.zeros(x.shape[0], dtype=x.dtype)
    total = 0
    for i in range(x.shape[0]):
        total = total + fill_twice(x[i], out, i)
    return total + out.sum()
'''

REFUSED = {  # caller -> the note the report gets
    "reads_its_output": "helper accumulate is not inlined: its body does not end with `return <expr>`",
    "rebinds_its_index": "helper shifted is not inlined: it rebinds the index of a row it writes",
    "value_used": "helper fill is not inlined: it writes rows of its arguments, and its value "
                  "(None) is used",
    "into_a_list_item": "helper fill is not inlined: the row it writes, `out[i]`, is not at plain "
                        "names of the call",
    "calls_a_writer": "helper fill_twice is not inlined: line {line}: `fill` writes into its "
                      "arguments",
}


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("row_writers"), SOURCE)


def _inline(fn) -> tuple[str, str, PassContext]:
    """The first loop's body before and after the pass, and the context."""
    parsed = parse_function(fn)
    code = fn.__code__
    ctx = PassContext(parsed.filename, fn.__name__, Namer.for_tree(parsed.tree, set(fn.__globals__)),
                      Report(fn.__name__, parsed.filename, parsed.lineno), fn.__globals__,
                      rewriting=frozenset({fn}), local_names=frozenset(code.co_varnames),
                      **FRONTEND)
    loop = next(n for n in ast.walk(parsed.tree) if isinstance(n, ast.For))
    before = unparse(ast.Module(loop.body, []))
    body, _ = inline_helper_calls.rewrite(loop, loop.body, ctx)
    return before, unparse(ast.Module(body, [])), ctx


def test_golden_the_writes_go_to_the_callers_arguments(user):
    before, after, _ = _inline(user.rows)
    assert before == "encode(x[i], w, out, counts, i)"
    assert after == ast.unparse(ast.parse("""
_encode_x = x[i]
_encode_w = w
_encode_i = i
_encode_y = _encode_x * _encode_w
out[i] = _encode_y.amax(1)
counts[i] = (_encode_y > 0).sum()
"""))


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_golden_refused_writers_come_back_unchanged(user, name):
    before, after, ctx = _inline(getattr(user, name))
    assert after == before
    line = user.fill_twice.__code__.co_firstlineno + 1  # its call of `fill`
    assert REFUSED[name].format(line=line) in ctx.report.notes, ctx.report.notes


def test_a_writer_is_no_helper_without_side_effects(user):
    call = ast.parse("fill(x, out, i)").body[0].value
    _, _, ctx = _inline(user.rows)
    assert inline_helper_calls.inlinable_helper(call, ctx) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_value_gradient_and_dtype_are_equivalent_and_the_loop_runs_vectorized(user, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 4, generator=g, dtype=dtype)
    x[1, 0] = 0.5  # ties in the row maximum: the gradient goes where amax sends it
    x[2, 1, 0], x[3, 2, 3], x[4, 0, 1] = float("nan"), float("inf"), -float("inf")
    w = torch.randn(4, generator=g, dtype=dtype).requires_grad_()
    opt = optimize_loss(user.rows, compile=False)
    assert_equivalent(user.rows, opt, x.requires_grad_(), w)
    [loop] = opt.report.loops
    assert loop.vectorized and loop.vectorized_runs and not loop.failed_runs
    assert opt(x, w).dtype == dtype
