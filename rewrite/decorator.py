"""``optimize_loss``: the decorator, in all the forms users write it."""
from __future__ import annotations

import types
from typing import Any, Callable

import torch

from passes.optimize_called_helpers import module_forward
from passes.report import Report
from .runtime import OptimizedFunction, Options


def optimize_loss(fn: Any = None, /, **options: Any) -> Any:
    """Make a naive loss fast: ``@optimize_loss``, ``@optimize_loss(**options)`` or
    ``optimize_loss(fn_or_module, **options)``; a loss object of a plain class is optimized
    through its ``__call__``.

    Options: ``compile=True`` (torch.compile the rewritten function; ``backend``, ``mode``,
    ``dynamic`` are passed through), ``verify=False`` (compare value and gradients with the
    original on the first call per input signature; fall back on mismatch), ``verify_compiled=True``
    (with ``compile=True``: compare the compiled function with the eager rewritten one on the
    first call per input signature; run the eager one on mismatch), ``strict=False``
    (raise ``RewriteError`` instead of falling back), ``hoist=True`` (run target-only work outside
    autograd, cached across calls; needs ``compile=True``, it works on torch.compile's graphs),
    ``stop_gradient=()`` (names of arguments to detach on every call: an opt-in semantic change
    for distillation teachers and target networks), ``debug_dir=None`` (dump the code after every pass there), ``lint=False`` (run the
    gradient-flow lint once per input signature and warn each finding as a ``GradientFlowWarning``),
    ``keep_faster=True`` (per band of input signatures, the same structure with sizes within a
    power of 4, time the rewritten function against the original, forward+backward, in up to
    four rounds of one call of each, compared by the median of their ratios within a round and
    by their best calls (none
    of the original when its loop iterations, counted on the first call, already make it twice
    as slow; a form per loop that ran vectorized several times in one call, with that loop as
    written, which goes back as written when faster), keep the original unless the rewritten
    form is 10% faster, and check
    a close choice again at a few spaced calls; ``report.forms`` says which and why; ``False``:
    the rewritten function always runs; the environment's ``OPTIMIZE_LOSS_KEEP_FASTER=0`` makes
    ``False`` the default, as the test suite runs),
    ``example_inputs=None`` (an argument tuple, or a callable returning one, that
    ``optimize-loss inspect|verify|lint`` use when no inputs are given on the command line).
    """
    opts = Options(**options)  # unknown options are a TypeError here, at decoration time
    if fn is None:
        return lambda f: optimize_loss(f, **options)
    if isinstance(fn, (staticmethod, classmethod)):
        return type(fn)(optimize_loss(fn.__func__, **options))
    if isinstance(fn, OptimizedFunction):
        fn = fn.__wrapped__
    if isinstance(fn, types.MethodType):
        return types.MethodType(OptimizedFunction(fn.__func__, opts), fn.__self__)
    if isinstance(fn, torch.nn.Module):
        return OptimizedModule(fn, opts)
    if isinstance(getattr(type(fn), "__call__", None), types.FunctionType):
        # A loss object of a plain class (``criterion = DiceBCE(); criterion(p, t)``): its
        # ``__call__`` is the loss, rewritten as a method bound to the object.
        return types.MethodType(OptimizedFunction(type(fn).__call__, opts), fn)
    if not callable(fn):
        raise TypeError(f"optimize_loss needs a function or an nn.Module, got {type(fn).__name__}")
    return OptimizedFunction(fn, opts)


class OptimizedModule(torch.nn.Module):
    """An ``nn.Module`` loss whose ``forward`` (or the ``__call__`` its class defines) runs optimized; parameters are shared with
    ``.module`` (so ``state_dict`` keys gain a ``module.`` prefix, as with DataParallel)."""

    def __init__(self, module: torch.nn.Module, options: Options):
        super().__init__()
        self.module = module
        # A module class defining its own ``__call__`` (timm's losses override it, not
        # ``forward``) runs that when called: it is the loss.
        call = type(module).__call__
        forward = type(module).forward if call is torch.nn.Module.__call__ else call
        self._forward = forward if isinstance(forward, OptimizedFunction) else OptimizedFunction(forward, options)
        # ``forward`` as ``nn.Module.__call__`` would run it (None for a class's own __call__)
        self._class_forward = forward if call is torch.nn.Module.__call__ else None

    @property
    def report(self) -> Report:
        return self._forward.report

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # Calling the module would run more than its class's forward (its or every module's
        # hooks, a forward set on the object, its own compile): the module runs, as called,
        # with its original forward. Its hooks were skipped, a forward hook's result lost.
        if self._class_forward is not None:
            return module_forward(self.module, self._class_forward,
                                  self._forward)(*args, **kwargs)
        return self._forward(self.module, *args, **kwargs)


def explain(fn: Callable) -> Report:
    """The report of an optimized function or module; for a plain function, what optimize_loss
    would do to it (the AST passes run, nothing is compiled)."""
    found = getattr(fn, "report", None)
    if isinstance(found, Report):
        return found
    return optimize_loss(fn, compile=False).report
