"""The runtime wrapper: rewrite once, specialise per input signature, verify, fall back safely.

Per function: the AST stage runs once, on the first call (or on the first ``.report`` access).
Per input signature (shapes, dtypes, devices, requires_grad, grad mode, the values of str/bool/None
arguments): the callable to run is chosen once and then called directly; that choice is one of

    compiled rewritten function -> eager rewritten function -> original function

and a failure of one step moves that signature to the next, with one warning (or ``RewriteError``
with ``strict=True``). An exception that the original function raises too is the user's own and
is re-raised unchanged.
"""
from __future__ import annotations

import functools
import importlib
import os
import threading
import types
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch

import passes.pipeline
from passes.ast_tools import Namer, PassContext, unparse

from . import frontend
from .errors import RewriteError, Unsupported
from .report import Fallback, Report
from .testing import differences


class RewriteWarning(UserWarning):
    """The original function runs instead of the rewritten one; the message says why."""


@dataclass(frozen=True)
class Options:
    compile: bool = True
    backend: str | Callable = "inductor"
    mode: str | None = None
    dynamic: bool | None = None
    verify: bool = False
    strict: bool = False
    hoist: bool = True
    debug_dir: str | None = None


class OptimizedFunction:
    """What ``optimize_loss(fn)`` returns for a function: call it like ``fn``."""

    def __init__(self, fn: Callable, options: Options):
        functools.update_wrapper(self, fn)
        self._original = fn
        self._options = options
        self._lock = threading.RLock()
        self._rewritten: Callable | None = None
        self._stage_done = False
        self._compiled_fn: Callable | None = None
        self._impls: dict[Any, Callable] = {}
        name, filename, lineno = frontend.describe(fn)
        self._report = Report(name, filename, lineno)

    # -- public -------------------------------------------------------------------------------
    @property
    def report(self) -> Report:
        self._rewrite()
        return self._report

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key = signature_key(args, kwargs)
        impl = self._impls.get(key)
        if impl is None:
            impl = self._specialize(key, args, kwargs)
        try:
            return impl(*args, **kwargs)
        except Exception as exc:
            if impl is self._original:
                raise
            return self._recover(key, impl, exc, args, kwargs)

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        # Decorating a method in a class body: bind like a function does.
        if obj is None:
            return self
        return types.MethodType(self, obj)

    def __reduce__(self):
        # A module-level decorated function pickles by reference, like the function it replaces.
        if _lookup(self.__module__, self.__qualname__) is self:
            return _lookup, (self.__module__, self.__qualname__)
        return OptimizedFunction, (self._original, self._options)

    def __repr__(self) -> str:
        return f"<optimize_loss {self._report.function} at {self._report.filename}:{self._report.lineno}>"

    # -- stages -------------------------------------------------------------------------------
    def _rewrite(self) -> Callable | None:
        """The AST stage, once: the rewritten function, or None when the original must run."""
        with self._lock:
            if not self._stage_done:
                self._rewritten = self._run_ast_stage()  # raises with strict=True
                self._stage_done = True
            return self._rewritten

    def _run_ast_stage(self) -> Callable | None:
        try:
            parsed = frontend.parse_function(self._original)
        except Unsupported as exc:
            self._fall_back(RewriteError(exc.reason, self._report.filename,
                                         exc.lineno or self._report.lineno), exc)
            return None
        report = self._report
        report.filename, report.lineno, report.original_source = (
            parsed.filename, parsed.lineno, parsed.source)
        ctx = PassContext(filename=parsed.filename, func_name=report.function,
                          namer=Namer.for_tree(parsed.tree, set(parsed.fn.__globals__)),
                          report=report, globals=parsed.fn.__globals__,
                          torch_name=parsed.torch_name)
        before = unparse(parsed.tree)
        try:
            tree = passes.pipeline.run_ast_pipeline(parsed.tree, ctx, self._dumper())
            report.rewritten_source = unparse(tree)
            rewritten = frontend.build_function(tree, parsed)
        except RewriteError as exc:
            self._fall_back(exc, exc.__cause__)
            return None
        except Exception as exc:  # recompiling the rewritten source failed: our bug
            self._fall_back(RewriteError(f"rewritten source does not compile: {exc}",
                                         parsed.filename, parsed.lineno), exc)
            return None
        if report.rewritten_source == before and not self._options.compile:
            return None  # nothing to gain: the original runs, with no wrapper cost but the lookup
        return rewritten

    def _specialize(self, key: Any, args: tuple, kwargs: dict) -> Callable:
        with self._lock:
            if key in self._impls:
                return self._impls[key]
            rewritten = self._rewrite()
            impl = self._original if rewritten is None else self._compiled(rewritten)
            if impl is not self._original and self._options.verify:
                problems = self._verify(impl, args, kwargs)
                if problems:
                    self._fall_back(RewriteError("verification failed: " + "; ".join(problems),
                                                 self._report.filename, self._report.lineno),
                                    None, key)
                    impl = self._original
            self._impls[key] = impl
            return impl

    def _verify(self, impl: Callable, args: tuple, kwargs: dict) -> list[str]:
        try:
            return differences(self._original, impl, args, kwargs)
        except Exception as exc:
            self._original(*args, **kwargs)  # when the original raises too, that error is the user's
            return [f"the rewritten function raised {type(exc).__name__}: {exc}"]

    def _compiled(self, rewritten: Callable) -> Callable:
        opts = self._options
        if not opts.compile:
            return rewritten
        if self._compiled_fn is None:
            self._compiled_fn = torch.compile(rewritten, backend=opts.backend, mode=opts.mode,
                                              dynamic=opts.dynamic)
            self._compiled_fn._optimize_loss_eager = rewritten  # next step down if compiling fails
        return self._compiled_fn

    def _recover(self, key: Any, impl: Callable, exc: Exception, args: tuple, kwargs: dict) -> Any:
        """``impl`` raised: re-raise if the original raises too, else step down and warn."""
        try:
            result = self._original(*args, **kwargs)
        except Exception:
            raise exc from None  # not our rewrite's fault: the user sees their own error
        eager = getattr(impl, "_optimize_loss_eager", None)
        step = "torch.compile failed" if eager is not None else "the rewritten function failed"
        self._fall_back(RewriteError(f"{step}: {type(exc).__name__}: {exc}", self._report.filename,
                                     self._report.lineno), exc, key,
                        running="the eager rewritten function" if eager else None)
        self._impls[key] = eager or self._original
        return result

    def _fall_back(self, error: RewriteError, cause: BaseException | None, key: Any = None,
                   running: str | None = None) -> None:
        """Record the fallback; warn once, or raise with ``strict=True``."""
        if self._options.strict:
            raise error from cause
        signature = None if key is None else describe_key(key)
        self._report.fallbacks.append(Fallback(error.message, error.filename or "<unknown>",
                                               error.lineno, error.pass_name, signature))
        what = running or "the original function"
        scope = f" on inputs {signature}" if signature else ""
        warnings.warn_explicit(f"optimize_loss: {what} runs for {self._report.function}{scope}: "
                               f"{error}", RewriteWarning, error.filename or "<unknown>",
                               error.lineno or 0)

    def _dumper(self) -> Callable[[str, str], None] | None:
        directory = self._options.debug_dir
        if directory is None:
            return None
        os.makedirs(directory, exist_ok=True)
        count = [0]

        def dump(step: str, text: str) -> None:
            path = os.path.join(directory, f"{count[0]:02d}_{step}.py")
            with open(path, "w") as f:
                f.write(f"# optimize_loss: {self._report.function} after {step}\n{text}\n")
            count[0] += 1
        return dump


def signature_key(args: tuple, kwargs: dict) -> tuple:
    """What selects a specialisation. Hot path: called on every call."""
    return (tuple(map(_leaf_key, args)),
            tuple((k, _leaf_key(v)) for k, v in kwargs.items()) if kwargs else (),
            torch.is_grad_enabled())


def _leaf_key(a: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return (a.shape, a.dtype, a.device, a.requires_grad)
    if a is None or isinstance(a, (str, bool)):
        return a  # such values usually select code paths (reduction="mean")
    if isinstance(a, (list, tuple)):
        return (type(a), tuple(map(_leaf_key, a)))
    if isinstance(a, dict):
        return (dict, tuple((k, _leaf_key(v)) for k, v in a.items()))
    if isinstance(a, torch.nn.Module):
        return (type(a), id(a), a.training)
    return type(a)


def describe_key(key: tuple) -> str:
    args, kwargs, grad_mode = key
    parts = [_describe_leaf(a) for a in args] + [f"{k}={_describe_leaf(v)}" for k, v in kwargs]
    return "(" + ", ".join(parts) + ")" + ("" if grad_mode else " under no_grad")


def _describe_leaf(leaf: Any) -> str:
    if isinstance(leaf, tuple) and len(leaf) == 4 and isinstance(leaf[0], torch.Size):
        shape, dtype, _, requires_grad = leaf
        return f"{str(dtype).replace('torch.', '')}{list(shape)}" + (":grad" if requires_grad else "")
    if isinstance(leaf, type):
        return leaf.__name__
    return repr(leaf)


def _lookup(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    try:
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        return None
    return obj
