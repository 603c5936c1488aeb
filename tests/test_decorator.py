"""The decorator in every form users write it, and the rebuilt function's live bindings."""
from __future__ import annotations

import functools
import pickle
import warnings

import pytest
import torch

import passes.pipeline
from rewrite import OptimizedModule, RewriteWarning, assert_equivalent, explain, optimize_loss
from tests.helpers import AppendPass, ast_pass, load_module


@pytest.fixture(autouse=True)
def rebuilt(monkeypatch):
    """Every test here runs the rebuilt function, not the original, via a harmless pass."""
    monkeypatch.setattr(passes.pipeline, "AST_PIPELINE", [ast_pass("append_pass", AppendPass)])


def _inputs(dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(5, 3, generator=gen, dtype=dtype, requires_grad=True)
    return pred, torch.randn(5, 3, generator=gen, dtype=dtype)


def _no_warnings():
    return warnings.catch_warnings(record=True)


def _check_rebuilt(fn, *inputs, **kw):
    """fn is optimized, ran the rebuilt code, and matches its original in value and gradients."""
    with _no_warnings() as caught:
        warnings.simplefilter("always")
        assert_equivalent(fn.__wrapped__, fn, *inputs, **kw)
    assert not [w for w in caught if w.category is RewriteWarning]
    assert "pass" in fn.report.rewritten_source


USER_CODE = '''
import functools
import torch
from rewrite import optimize_loss

SCALE = 2.0

@optimize_loss
def bare(pred, target):
    """Doc of bare."""
    return ((pred - target) ** 2).mean() * SCALE

@optimize_loss(compile=False)
def called(pred, target, weight=1.5, *, power=2):
    return ((pred - target).abs() ** power).sum() * weight

def plain(pred, target, *args, **kwargs):
    total = (pred * target).sum()
    for a in args:
        total = total + a.sum()
    for v in kwargs.values():
        total = total * v
    return total

def make_closure(k):
    state = {"k": k}
    def closed(pred, target):
        return ((pred - target) * state["k"]).sum() * k
    return closed, state

class Weighted(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.linspace(0.5, 1.5, 3))
        self.__power = 2

    @optimize_loss(compile=False)
    def forward(self, pred, target):
        return (self.w * (pred - target).abs() ** self.__power).mean()

class Child(Weighted):
    @optimize_loss(compile=False)
    def forward(self, pred, target):
        return super().forward(pred, target) * 2

class Plain(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))

    def forward(self, pred, target):
        return (self.w * (pred - target) ** 2).sum()

class CallableLoss:
    def __init__(self, power):
        self.power = power

    def __call__(self, pred, target):
        return ((pred - target).abs() ** self.power).sum()

class CallOverride(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((3,), 2.0))

    def __call__(self, pred, target):
        return (self.w * (pred - target).abs()).sum()

class Holder:
    factor = 3.0

    @optimize_loss(compile=False)
    @staticmethod
    def static_outer(pred, target):
        return (pred * target).sum()

    @staticmethod
    @optimize_loss(compile=False)
    def static_inner(pred, target):
        return (pred * target).sum()

    @optimize_loss(compile=False)
    @classmethod
    def class_outer(cls, pred, target):
        return (pred * target).sum() * cls.factor

    @classmethod
    @optimize_loss(compile=False)
    def class_inner(cls, pred, target):
        return (pred * target).sum() * cls.factor
'''


@pytest.fixture
def user(tmp_path):
    return load_module(tmp_path, USER_CODE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bare_decorator_uses_live_globals(user, dtype):
    fn = optimize_loss(user.bare.__wrapped__, compile=False)
    _check_rebuilt(fn, *_inputs(dtype))
    before = fn(*_inputs(dtype))
    user.SCALE = 4.0  # a global changed after decoration is seen: globals are shared, not copied
    assert torch.allclose(fn(*_inputs(dtype)), before * 2)


def test_bare_form_compiles_by_default(user):
    assert user.bare._options.compile is True
    assert user.bare.__doc__ == "Doc of bare."
    assert user.bare.__name__ == "bare" and user.bare.__qualname__ == "bare"
    assert user.bare.__module__ == user.__name__


def test_called_form_defaults_and_kwonly(user):
    fn = user.called
    pred, target = _inputs()
    _check_rebuilt(fn, pred, target)
    _check_rebuilt(fn, pred, target, 0.5, power=3)
    assert torch.equal(fn(pred, target, power=1), fn.__wrapped__(pred, target, power=1))


def test_call_form_varargs_kwargs(user):
    fn = optimize_loss(user.plain, compile=False)
    pred, target = _inputs()
    extra = torch.randn(2, requires_grad=True)
    _check_rebuilt(fn, pred, target, extra, extra * 2, a=torch.tensor(3.0), b=torch.tensor(0.5))


def test_closure_cells_are_live(user):
    closed, state = user.make_closure(2.0)
    fn = optimize_loss(closed, compile=False)
    pred, target = _inputs()
    _check_rebuilt(fn, pred, target)
    first = fn(pred, target)
    state["k"] = 6.0  # mutation through the shared cell is visible
    assert torch.allclose(fn(pred, target), first * 3)


def test_method_in_class_body_with_parameters_and_mangled_names(user):
    loss = user.Weighted()
    pred, target = _inputs()
    _check_rebuilt(type(loss).forward, loss, pred, target)
    out = loss(pred, target)
    out.backward()
    assert loss.w.grad is not None and loss.w.grad.abs().sum() > 0
    assert "Weighted.forward" in str(type(loss).forward.report)


def test_method_using_super(user):
    loss = user.Child()
    pred, target = _inputs()
    parent = user.Weighted()
    assert torch.allclose(loss(pred, target), parent(pred, target) * 2)


def test_module_instance(user):
    module = user.Plain()
    opt = optimize_loss(module, compile=False)
    assert isinstance(opt, OptimizedModule) and opt.module is module
    pred, target = _inputs()
    assert_equivalent(module, opt, pred, target)
    assert list(opt.parameters()) == list(module.parameters())  # shared, not copied
    opt(pred, target).backward()
    assert module.w.grad is not None
    assert "Plain.forward" in str(opt.report)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_module_instance_runs_the_hooks_of_the_module(user, compiled):
    # the optimized module called the rewritten forward directly: hooks registered on the
    # module were skipped without a word (a forward hook's changed result lost)
    module = user.Plain()
    opt = optimize_loss(module, **({"backend": "eager"} if compiled else {"compile": False}))
    pred, target = _inputs()
    seen = []
    pre = module.register_forward_pre_hook(lambda m, args: seen.append("pre"))
    post = module.register_forward_hook(lambda m, args, out: out * 3)
    assert torch.allclose(opt(pred, target), module(pred, target))
    assert seen == ["pre", "pre"]
    pre.remove(), post.remove()
    assert torch.allclose(opt(pred, target) * 3, module(pred, target) * 3)
    assert seen == ["pre", "pre"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_module_defining_call(user, dtype):
    """A module class that defines ``__call__`` and no ``forward`` (timm's losses): calling it runs
    that ``__call__``, and so does the optimized module (was: ``forward``, NotImplementedError)."""
    module = user.CallOverride().to(dtype)
    opt = optimize_loss(module, compile=False)
    pred, target = _inputs(dtype)
    with _no_warnings() as caught:
        warnings.simplefilter("always")
        assert_equivalent(module, opt, pred, target)
    assert not [w for w in caught if w.category is RewriteWarning]
    assert "CallOverride.__call__" in str(opt.report)


@pytest.mark.parametrize("name", ["static_outer", "static_inner", "class_outer", "class_inner"])
def test_static_and_class_methods(user, name):
    pred, target = _inputs()
    expected = (pred * target).sum() * (3.0 if name.startswith("class") else 1.0)
    for owner in (user.Holder, user.Holder()):
        assert torch.allclose(getattr(owner, name)(pred, target), expected)


def test_bound_method(user):
    loss = user.Plain()
    fn = optimize_loss(loss.forward, compile=False)
    pred, target = _inputs()
    assert torch.allclose(fn(pred, target), loss(pred, target))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_callable_object(user, dtype):
    """A loss object of a plain class is optimized through its ``__call__``, bound to it."""
    loss = user.CallableLoss(3)
    fn = optimize_loss(loss, compile=False)
    assert fn.__self__ is loss
    pred, target = _inputs(dtype)
    with _no_warnings() as caught:
        warnings.simplefilter("always")
        assert_equivalent(loss, fn, pred, target)
    assert not [w for w in caught if w.category is RewriteWarning]
    assert "pass" in fn.report.rewritten_source and "CallableLoss.__call__" in str(fn.report)


def test_wraps_metadata_and_pickle(user):
    fn = user.called
    assert fn.__wrapped__.__name__ == "called"
    for attr in functools.WRAPPER_ASSIGNMENTS:
        assert getattr(fn, attr) == getattr(fn.__wrapped__, attr), attr
    assert pickle.loads(pickle.dumps(fn)) is fn
    local = optimize_loss(user.plain, compile=False)  # not the module attribute: pickles by value
    copy = pickle.loads(pickle.dumps(local))
    pred, target = _inputs()
    assert torch.equal(copy(pred, target), local(pred, target))


def test_rejects_non_callables_and_unknown_options():
    with pytest.raises(TypeError, match="function or an nn.Module"):
        optimize_loss(42)
    with pytest.raises(TypeError):
        optimize_loss(lambda x: x, no_such_option=True)


def test_explain_plain_function(user):
    report = explain(user.plain)
    assert report.function == "plain"
    assert report.filename.endswith(".py") and report.lineno > 0
    assert f"{report.filename}:{report.lineno}" in str(report)
    assert "append_pass" in report.passes_run


def test_compile_with_eager_backend(user):
    fn = optimize_loss(user.called.__wrapped__, backend="eager")
    _check_rebuilt(fn, *_inputs())
