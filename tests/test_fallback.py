"""Fallback policy: exactly one warning and exactly the original result; strict raises."""
from __future__ import annotations

import linecache
import os
import traceback
import warnings

import pytest
import torch

import passes.pipeline
from rewrite import RewriteError, RewriteWarning, assert_equivalent, optimize_loss
from rewrite import frontend
from tests.helpers import AppendPass, Explode, FlipAddToSub, ast_pass, load_module


def _inputs():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, generator=gen, requires_grad=True), torch.randn(4, 3, generator=gen)


def _calls_with_warnings(fn, args, times=3):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [fn(*args) for _ in range(times)]
    return results, [w for w in caught if w.category is RewriteWarning]


def _assert_one_fallback(fn, args, reason):
    results, caught = _calls_with_warnings(fn, args)
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert reason in str(caught[0].message)
    expected = fn.__wrapped__(*args)
    for got in results:
        assert torch.equal(got, expected)
    assert len(fn.report.fallbacks) == 1
    return caught[0]


async def _coroutine(pred, target):
    return pred


def _generator(pred, target):
    yield pred


GLOBAL_STATE = 0


def _rebinds_global(pred, target):
    global GLOBAL_STATE
    GLOBAL_STATE += 1
    return (pred * target).sum()


@pytest.mark.parametrize("make, reason", [
    (lambda: eval("lambda pred, target: (pred * target).sum()"), "source not available"),
    (lambda: _exec_defined(), "source not available"),
    (lambda: torch.mul, "not a Python function"),
    (lambda: _rebinds_global, "`global` statement"),
])
def test_unsupported_functions_run_original_with_one_warning(make, reason):
    _assert_one_fallback(optimize_loss(make(), compile=False), _inputs(), reason)


def test_generator_falls_back():
    fn = optimize_loss(_generator, compile=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert list(fn(1, 2)) == [1] and list(fn(3, 4)) == [3]
    assert ["generator function" in str(w.message) for w in caught] == [True]


def test_async_function_falls_back():
    fn = optimize_loss(_coroutine, compile=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coro = fn(1, 2)
    import asyncio
    assert asyncio.run(coro) == 1
    assert ["async function" in str(w.message) for w in caught] == [True]


def _exec_defined():
    namespace: dict = {}
    exec("def made(pred, target):\n    return (pred * target).sum()\n", namespace)
    return namespace["made"]


def test_source_edited_after_import(tmp_path):
    module = load_module(tmp_path, "def loss(pred, target):\n    return (pred + target).sum()\n")
    path = module.__file__
    with open(path, "w") as f:
        f.write("def loss(pred, target):\n    return (pred * target).sum()\n")
    os.utime(path, (1, 1))  # the edit must be seen even if within the same mtime tick
    linecache.checkcache(path)
    fn = optimize_loss(module.loss, compile=False)
    warning = _assert_one_fallback(fn, _inputs(), "does not match the loaded code")
    assert warning.filename == path and warning.lineno == 1


def test_verify_catches_a_wrong_rewrite_per_signature(monkeypatch, tmp_path):
    monkeypatch.setattr(passes.pipeline, "AST_PIPELINE", [ast_pass("flip_add", FlipAddToSub)])
    module = load_module(tmp_path, "def loss(pred, target):\n    return ((pred + target) ** 2).sum()\n")
    fn = optimize_loss(module.loss, compile=False, verify=True)
    warning = _assert_one_fallback(fn, _inputs(), "verification failed")
    assert "output 0" in str(warning.message)
    assert f"{module.__file__}:1" in str(warning.message)
    # A new signature is verified on its own (and fails on its own).
    wide = (torch.randn(2, 7, requires_grad=True), torch.randn(2, 7))
    _, caught = _calls_with_warnings(fn, wide)
    assert len(caught) == 1 and "float32[2, 7]:grad" in str(caught[0].message)


def test_verify_passes_a_correct_rewrite(monkeypatch, tmp_path):
    monkeypatch.setattr(passes.pipeline, "AST_PIPELINE", [ast_pass("append_pass", AppendPass)])
    module = load_module(tmp_path, "def loss(pred, target):\n    return ((pred + target) ** 2).sum()\n")
    fn = optimize_loss(module.loss, compile=False, verify=True)
    results, caught = _calls_with_warnings(fn, _inputs())
    assert not caught and not fn.report.fallbacks
    assert "pass" in fn.report.rewritten_source


def test_verify_catches_a_wrong_gradient_only(monkeypatch, tmp_path):
    # x * x -> x * x.detach(): same value, half the gradient.
    import ast

    class DetachRight(ast.NodeTransformer):
        def visit_BinOp(self, node):
            node.right = ast.Call(ast.Attribute(node.right, "detach", ast.Load()), [], [])
            return node

    monkeypatch.setattr(passes.pipeline, "AST_PIPELINE", [ast_pass("detach_right", DetachRight)])
    module = load_module(tmp_path, "def loss(pred, target):\n    return (pred * pred).sum()\n")
    fn = optimize_loss(module.loss, compile=False, verify=True)
    warning = _assert_one_fallback(fn, _inputs(), "gradient of argument 0")
    assert "output 0" not in str(warning.message)


def test_strict_raises_with_file_line_and_pass(monkeypatch, tmp_path):
    monkeypatch.setattr(passes.pipeline, "AST_PIPELINE",
                        [ast_pass("append_pass", AppendPass), ast_pass("explode", Explode)])
    module = load_module(tmp_path, "\n\ndef loss(pred, target):\n    return (pred * target).sum()\n")
    fn = optimize_loss(module.loss, compile=False, strict=True)
    with pytest.raises(RewriteError) as info:
        fn(*_inputs())
    err = info.value
    assert err.pass_name == "explode" and err.filename == module.__file__ and err.lineno == 3
    assert "pass explode failed after [append_pass]: ValueError: boom" in str(err)
    assert isinstance(err.__cause__, ValueError)
    with pytest.raises(RewriteError):  # and keeps raising: strict never runs the original silently
        fn(*_inputs())


def test_pass_failure_without_strict_warns_once(monkeypatch, tmp_path):
    monkeypatch.setattr(passes.pipeline, "AST_PIPELINE", [ast_pass("explode", Explode)])
    module = load_module(tmp_path, "def loss(pred, target):\n    return (pred * target).sum()\n")
    fn = optimize_loss(module.loss, compile=False)
    _assert_one_fallback(fn, _inputs(), "pass explode failed after []")
    assert fn.report.fallbacks[0].pass_name == "explode"


def test_strict_verify_raises(monkeypatch, tmp_path):
    monkeypatch.setattr(passes.pipeline, "AST_PIPELINE", [ast_pass("flip_add", FlipAddToSub)])
    module = load_module(tmp_path, "def loss(pred, target):\n    return (pred + target).sum()\n")
    fn = optimize_loss(module.loss, compile=False, verify=True, strict=True)
    with pytest.raises(RewriteError, match="verification failed"):
        fn(*_inputs())


def test_runtime_error_in_rewrite_falls_back(monkeypatch, tmp_path):
    import ast

    class BreakIt(ast.NodeTransformer):  # the rewritten code raises at run time
        def visit_Return(self, node):
            node.value = ast.parse("pred.no_such_method()", mode="eval").body
            return node

    monkeypatch.setattr(passes.pipeline, "AST_PIPELINE", [ast_pass("break_it", BreakIt)])
    module = load_module(tmp_path, "def loss(pred, target):\n    return (pred * target).sum()\n")
    fn = optimize_loss(module.loss, compile=False)
    _assert_one_fallback(fn, _inputs(), "the rewritten function failed: AttributeError")


def test_fallback_is_per_signature(monkeypatch, tmp_path):
    import ast

    class BreakOnTwoRows(ast.NodeTransformer):  # visibly different (doubled); fails on 2 rows
        def visit_Return(self, node):  # with an error about a size: other sizes may work
            node.value = ast.parse("pred.view(7) if pred.shape[0] == 2 else "
                                   "(pred * target).sum() * 2", mode="eval").body
            return node

    monkeypatch.setattr(passes.pipeline, "AST_PIPELINE", [ast_pass("break_it", BreakOnTwoRows)])
    module = load_module(tmp_path, "def loss(pred, target):\n    return (pred * target).sum()\n")
    fn = optimize_loss(module.loss, compile=False, keep_faster=False)  # the rewrite on every call
    pred, target = _inputs()
    rows = {n: (pred[:n], target[:n]) for n in (2, 3, 4)}
    doubled = {n: 2 * module.loss(*args) for n, args in rows.items()}
    assert torch.equal(fn(*rows[4]), doubled[4])  # before any fallback: the one rewritten function
    results, caught = _calls_with_warnings(fn, rows[2])
    assert len(caught) == 1 and all(torch.equal(r, module.loss(*rows[2])) for r in results)
    # After it, only that signature runs the original; others, seen or new, keep the rewrite.
    assert torch.equal(fn(*rows[4]), doubled[4]) and torch.equal(fn(*rows[3]), doubled[3])
    assert "float32[2, 3]" in fn.report.fallbacks[0].signature


def test_users_own_error_is_raised_unchanged(monkeypatch, tmp_path):
    monkeypatch.setattr(passes.pipeline, "AST_PIPELINE", [ast_pass("append_pass", AppendPass)])
    module = load_module(tmp_path, "def loss(pred, target):\n    return (pred @ target).sum()\n")
    fn = optimize_loss(module.loss, compile=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="cannot be multiplied"):
            fn(*_inputs())
    assert not caught and not fn.report.fallbacks


def test_compile_failure_steps_down_to_eager(monkeypatch, tmp_path):
    monkeypatch.setattr(passes.pipeline, "AST_PIPELINE", [ast_pass("append_pass", AppendPass)])
    module = load_module(tmp_path, "def loss(pred, target):\n    return (pred * target).sum()\n")

    def broken_backend(gm, example_inputs):
        raise RuntimeError("backend exploded")

    fn = optimize_loss(module.loss, backend=broken_backend)
    warning = _assert_one_fallback(fn, _inputs(), "torch.compile failed")
    assert "the eager rewritten function runs" in str(warning.message)
    # the report says what runs, as the warning does (it said: the original function)
    (fallback,) = fn.report.fallbacks
    assert f"{fallback.lineno}: eager rewritten function runs for inputs" in str(fallback)
    assert "original function runs" not in str(fn.report)
    assert_equivalent(module.loss, fn, *_inputs())


def test_tracebacks_point_at_the_users_file_and_line(tmp_path):
    source = "def loss(pred, target):\n    scale = 2\n    raise ValueError('user error')\n"
    module = load_module(tmp_path, source)
    parsed = frontend.parse_function(module.loss)
    rebuilt = frontend.build_function(parsed.tree, parsed)
    with pytest.raises(ValueError) as info:
        rebuilt(1, 2)
    last = traceback.extract_tb(info.tb)[-1]
    assert (last.filename, last.lineno) == (module.__file__, 3)
    assert last.line == "raise ValueError('user error')"


# -- the promise holds at run time: same value, same gradients, or the original runs ------------

SCALED_IN_PLACE = '''
import torch
import torch.nn.functional as F

def scaled(pred, target, lengths):
    target /= 10.0
    return _masked(pred, target, lengths)

def aliased(pred, target, lengths):
    t = target
    t.mul_(0.1)
    return _masked(pred, target, lengths)

def logged(pred, target, lengths, log):
    log.append(len(log))
    return _masked(pred, target, lengths)

def reshaped(pred, target, lengths):
    target.unsqueeze_(0)
    return _masked(pred, target[0], lengths)

def halved(pred, target, lengths):
    pred /= 2.0
    return _masked(pred, target, lengths)

class Counting(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, pred, target, lengths):
        self.calls += 1
        self.seen += 1
        return _masked(pred, target, lengths)

class Scaled:  # a callable object: its body is not read, and its `.item()` fails under vmap
    def __call__(self, d, n):
        return d * n.item()

scaled_by = Scaled()

def _masked(pred, target, lengths):
    total = 0
    for i in range(pred.shape[0]):  # the vectorized branch raises
        total = total + scaled_by((pred[i] - target[i]) ** 2, lengths[i]).sum()
    return total

def per_item(pred, target, lengths):
    total = 0
    for i in range(pred.shape[0]):
        total = total + scaled_by((pred[i] - target[i]) ** 2, lengths[i]).sum()
    return total

def class_loss(logits, target):
    total = 0
    for i in range(logits.shape[0]):
        total = total + F.cross_entropy(logits[i], target[i])
    return total
'''


@pytest.fixture
def runtime_user(tmp_path):
    return load_module(tmp_path, SCALED_IN_PLACE)


def _ragged(dtype, width=5, rows=3):
    gen = torch.Generator().manual_seed(3)
    pred = torch.randn(rows, width, generator=gen, dtype=dtype, requires_grad=True)
    target = torch.randn(rows, width, generator=gen, dtype=dtype)
    lengths = torch.randint(1, width + 1, (rows,), generator=gen)
    return pred, target, lengths


def _value_and_gradient(fn, pred, *rest):
    out = fn(pred, *rest)
    return out, torch.autograd.grad(out, pred)[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize("name", ["scaled", "aliased"])
def test_an_argument_changed_in_place_is_changed_once_on_fallback(runtime_user, name, verify, dtype):
    original, fn = getattr(runtime_user, name), optimize_loss(getattr(runtime_user, name),
                                                              compile=False, verify=verify)
    pred, target, lengths = _ragged(dtype)
    want_target = target.clone()
    want, want_grad = _value_and_gradient(original, pred, want_target, lengths)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got, got_grad = _value_and_gradient(fn, pred, target, lengths)
    assert len([w for w in caught if w.category is RewriteWarning]) == 1
    assert torch.equal(target, want_target)  # scaled by 0.1, not 0.01
    assert got.dtype == want.dtype == dtype and torch.equal(got, want)
    assert torch.equal(got_grad, want_grad)


def test_module_state_changed_in_forward_is_changed_once_on_fallback(runtime_user):
    module = runtime_user.Counting()
    fn = optimize_loss(module, compile=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(*_ragged(torch.float32))
    assert len([w for w in caught if w.category is RewriteWarning]) == 1  # the original ran
    assert module.calls == 1 and module.seen.item() == 1


def test_a_size_changed_in_place_is_changed_once_on_fallback(runtime_user):
    fn = optimize_loss(runtime_user.reshaped, compile=False)
    pred, target, lengths = _ragged(torch.float32)
    want = runtime_user.reshaped(pred, target.clone(), lengths)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert torch.equal(fn(pred, target, lengths), want)
    assert target.shape == (1, 3, 5)


def test_an_argument_with_autograd_history_changed_in_place_is_not_run_twice(runtime_user):
    fn = optimize_loss(runtime_user.halved, compile=False)
    pred, target, lengths = _ragged(torch.float32)
    with pytest.raises(RewriteError, match="history cannot be put back"):
        fn(pred * 1, target, lengths)  # not a leaf: dividing it in place is recorded by autograd


def test_a_list_argument_changed_in_place_is_changed_once_on_fallback(runtime_user):
    fn = optimize_loss(runtime_user.logged, compile=False)
    log = []
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        fn(*_ragged(torch.float32), log)
        fn(*_ragged(torch.float32), log)
    assert log == [0, 1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_failure_that_does_not_depend_on_sizes_warns_once(runtime_user, dtype):
    fn = optimize_loss(runtime_user.per_item, compile=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for width in range(3, 13):  # ten sequence lengths, ten input signatures
            args = _ragged(dtype, width)
            got, got_grad = _value_and_gradient(fn, *args)
            want, want_grad = _value_and_gradient(runtime_user.per_item, *args)
            assert got.dtype == dtype and torch.equal(got, want) and torch.equal(got_grad, want_grad)
    assert len([w for w in caught if w.category is RewriteWarning]) == 1
    assert len(fn.report.fallbacks) == 1
    assert "every other size" in fn.report.fallbacks[0].signature
    # another dtype is another structure: tried (and warned) on its own
    other = torch.float64 if dtype is torch.float32 else torch.float32
    _, caught = _calls_with_warnings(fn, _ragged(other), times=2)
    assert len(caught) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_when_both_fail_the_user_gets_the_originals_exception(runtime_user, dtype):
    # vmapped, the rewrite raises RuntimeError ("index 7 is out of bounds for dimension 1");
    # the original raises IndexError ("Target 7 is out of bounds").
    fn = optimize_loss(runtime_user.class_loss, compile=False)
    logits = torch.randn(3, 4, dtype=dtype, requires_grad=True)
    target = torch.tensor([1, 7, 2])
    with pytest.raises(Exception) as want:
        runtime_user.class_loss(logits, target)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(Exception) as got:
            fn(logits, target)
    assert type(got.value) is type(want.value) and str(got.value) == str(want.value)
    assert got.value.__suppress_context__  # the rewrite's error is not shown as its context
    assert not caught and not fn.report.fallbacks


def test_when_both_fail_an_injected_rewrite_error_is_not_shown(monkeypatch, tmp_path):
    import ast

    class FailFirst(ast.NodeTransformer):  # the rewritten code raises its own error first
        def visit_Return(self, node):
            node.value = ast.parse(f"(pred.no_such_method(), {ast.unparse(node.value)})[1]",
                                   mode="eval").body
            return node

    monkeypatch.setattr(passes.pipeline, "AST_PIPELINE", [ast_pass("fail_first", FailFirst)])
    module = load_module(tmp_path, "def loss(pred, target):\n    return (pred @ target).sum()\n")
    fn = optimize_loss(module.loss, compile=False)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        fn(*_inputs())
    assert not fn.report.fallbacks


def test_vmaps_refusal_of_data_is_a_failure_at_every_size():
    # `labels[perm.data]` in a function a vmapped body calls: vmap's message does not start
    # with "vmap:", and each batch size was tried (and warned about) again
    from rewrite.runtime import _size_independent
    for message in ("accessing `data` under vmap transform is not allowed",
                    "mutating directly with `.data` under vmap transform is not allowed."):
        assert _size_independent(RuntimeError(message))
    assert not _size_independent(RuntimeError("index 5 is out of bounds for dimension 0"))
