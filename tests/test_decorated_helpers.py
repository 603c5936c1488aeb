"""optimize_called_helpers through a decorator's wrapper (mmseg's ``@weighted_loss``,
``functools.wraps``): the wrapper of the module is rewritten, its call of the function it wraps
picks that function's rewrite while the free variable holds it; a wrapper of another module runs
as written and the loops of what it wraps are reported kept, with the decorator's file:line."""
from __future__ import annotations

import pytest
import torch

from rewrite import assert_equivalent, optimize_loss
from rewrite.frontend import parse_function, rewrite_function
from rewrite import Report
from tests.helpers import load_module, run_called_helpers_pass

DECORATOR = '''
import functools

def weighted_loss(loss_func):
    @functools.wraps(loss_func)
    def wrapper(pred, target, weight=None, **kwargs):
        loss = loss_func(pred, target, **kwargs)
        return loss.mean() if weight is None else (loss * weight).mean()
    return wrapper
'''

HELPERS = '''
import torch

@weighted_loss
def per_class(pred, target, smooth=1.0):
    total = 0
    for i in range(pred.shape[1]):
        inter = (pred[:, i] * target[:, i]).sum()
        total += 1 - (inter + smooth) / (pred[:, i].sum() + target[:, i].sum() + smooth)
    return total / pred.shape[1]

@weighted_loss
def plain(pred, target):
    return (pred - target).abs()

def loss(pred, target):
    return per_class(pred, target, smooth=1.0)

def plain_loss(pred, target):
    return plain(pred, target)
'''


@pytest.fixture(scope="module")
def same(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("decorated"), DECORATOR + HELPERS)


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    path = tmp_path_factory.mktemp("decorated_other")
    utils = load_module(path, DECORATOR)
    return load_module(path, f"from {utils.__name__} import weighted_loss" + HELPERS)


def _loop_line(module) -> int:
    """The line of per_class's loop (its code starts at the `@weighted_loss` line)."""
    return module.per_class.__wrapped__.__code__.co_firstlineno + 3


def test_golden_call_goes_to_the_rewritten_wrapper(same):
    out, ctx = run_called_helpers_pass(same.loss)
    assert out == "def loss(pred, target):\n    return _per_class(pred, target, smooth=1.0)"
    wrapper_source = ctx.bindings["_per_class"]._optimize_loss_rewrite[0]
    assert ("loss = (_per_class if loss_func is _per_class_original else loss_func)"
            "(pred, target, **kwargs)") in wrapper_source
    assert [(l.lineno, l.vectorized) for l in ctx.report.loops] == [(_loop_line(same), True)]
    assert not ctx.report.notes  # the free variable is resolved, not "resolved at run time"


def test_golden_unchanged_without_a_loop(same):
    out, ctx = run_called_helpers_pass(same.plain_loss)
    assert out == "def plain_loss(pred, target):\n    return plain(pred, target)"
    assert not ctx.bindings and not ctx.report.loops


def test_the_wrapper_is_parsed_as_itself(same):
    # inspect follows __wrapped__ to per_class's source; the wrapper's own code is parsed
    parsed = parse_function(same.per_class)
    assert parsed.tree.body[0].name == "wrapper"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fixture", ["same", "other"])
def test_equivalent(request, fixture, dtype):
    module = request.getfixturevalue(fixture)
    fast = optimize_loss(module.loss, compile=False)
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        pred = torch.rand(2, 5, 4, 4, generator=gen, dtype=dtype, requires_grad=True)
        target = torch.rand(2, 5, 4, 4, generator=gen, dtype=dtype, requires_grad=True)
        assert_equivalent(module.loss, fast, pred, target)
        assert fast(pred, target).dtype == dtype


def test_report_vectorized_same_module(same):
    fast = optimize_loss(same.loss, compile=False)
    fast(torch.rand(2, 5, 4, 4), torch.rand(2, 5, 4, 4))
    loop = next(l for l in fast.report.loops if l.lineno == _loop_line(same))
    assert loop.vectorized and loop.vectorized_runs == 1


def test_report_kept_through_another_modules_decorator(other):
    fast = optimize_loss(other.loss, compile=False)
    loop = next(l for l in fast.report.loops if l.lineno == _loop_line(other))
    utils = other.weighted_loss.__code__
    assert not loop.vectorized
    assert loop.reason.startswith(
        f"not rewritten: called through decorator `weighted_loss` "
        f"({utils.co_filename.rsplit('/', 1)[-1]}:{utils.co_firstlineno + 1}): its wrapper runs "
        f"`per_class` as written")


def test_a_rebound_free_variable_runs_as_written(tmp_path):
    module = load_module(tmp_path, DECORATOR + HELPERS)
    rebuilt, changed = rewrite_function(module.per_class, Report("per_class", "", 0))
    assert changed
    cell = module.per_class.__closure__[module.per_class.__code__.co_freevars.index("loss_func")]
    cell.cell_contents = lambda pred, target, smooth: (pred - target).abs().sum(1) * smooth
    pred, target = torch.rand(2, 5, 4, 4), torch.rand(2, 5, 4, 4)
    assert torch.equal(rebuilt(pred, target, smooth=2.0), module.per_class(pred, target, smooth=2.0))


NO_GRAD = '''
import torch

class Queue(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("queue", torch.zeros(4, 8))

    @torch.no_grad()
    def enqueue(self, keys):
        for j in range(keys.shape[0]):
            self.queue[:, j] = keys[j]

    def forward(self, q, k):
        loss = (q @ self.queue).logsumexp(1).mean()
        self.enqueue(k)
        return loss
'''


def test_a_method_under_torchs_decorator_reports_its_loop_at_the_users_decorator(tmp_path):
    # a MoCo queue filled under `@torch.no_grad()`: the method runs as written through torch's
    # wrapper; its loop is listed, quoting the decorator on the user's `def`, not torch's code
    module = load_module(tmp_path, NO_GRAD)
    fast = optimize_loss(module.Queue(), compile=False)
    fast(torch.randn(3, 4, requires_grad=True), torch.randn(3, 4))
    [loop] = fast.report.loops
    name = module.__file__.rsplit('/', 1)[-1]
    assert (loop.lineno, loop.vectorized) == (11, False)
    assert loop.reason.startswith(f"not rewritten: called through decorator `@torch.no_grad()` "
                                  f"({name}:9): its wrapper runs `Queue.enqueue` as written")
