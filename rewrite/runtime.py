"""The runtime wrapper: rewrite once, specialise per input signature, verify, fall back safely.

Per function: the AST stage runs once, on the first call (or on the first ``.report`` access).
Per input signature (shapes, dtypes, devices, requires_grad, grad mode, the values of str/bool/None
arguments): the callable to run is chosen once and then called directly; that choice is one of

    compiled rewritten function -> eager rewritten function -> original function

and a failure of one step moves that signature to the next, with one warning (or ``RewriteError``
with ``strict=True``). A failure whose cause does not depend on sizes (``_size_independent``) moves
every signature that differs only in sizes, with that one warning. When the original raises too,
its exception is the user's own and is re-raised unchanged. With ``keep_faster=True`` (the
default) a few calls after a signature's first time the rewritten function against the original,
and the faster one runs for every signature of its band (``rewrite.keep_faster``: never slower
than the original; a close choice is checked again at spaced calls); at the band's first call,
eager, each loop that ran vectorized is timed alone and one clearly slower so runs as written
for the band (``rewrite.loop_choice``). Arguments the function may change in
place (``passes.mutated_arguments``) are saved before every call that may still fall back, and put
back before the next step runs. With ``compile=True`` the first call of a signature also compares
the compiled function with the eager rewritten one on cloned inputs (``verify_compiled``); what
such a check's run (and the lint's, ``lint=True``) changes in a module or an object among the
arguments is put back after it.
"""
from __future__ import annotations

import ast
import contextlib
import copy
import functools
import importlib
import inspect
import operator
import os
import threading
import time
import types
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch
from torch._dynamo.eval_frame import _debug_get_cache_entry_list
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.checkpoint import _StopRecomputationError

from passes import loop_regions, loop_run_counters
from passes.ast_tools import clone
from passes.loops_as_written import as_written
from passes.errors import RewriteError, Unsupported
from passes.mutated_arguments import function_node, mutated_parameters
from passes.report import Fallback, FormChoice, LoopReport, Report
from passes.storage_checks import tensors_in
from passes.tabulated_maps import with_index_ints

from . import frontend, loop_choice
from .backend import (HoistingBackend, SecondOrderRefused, eager_first_order, first_order_only,
                      first_order_supported)
from .keep_faster import BAND, LOOP_FORMS, FormTrial, elements, size_band
from .lint import warn as lint_warn
from .loop_choice import aliases_kept, copied_state, module_state, shared_views
from .testing import compare, outputs_and_gradients


def keep_faster_default() -> bool:
    """``keep_faster``'s default: on, unless the environment sets ``OPTIMIZE_LOSS_KEEP_FASTER=0``
    (a test suite, or a run that must not depend on timings: the rewritten function always runs
    where nothing says ``keep_faster=True``)."""
    return os.environ.get("OPTIMIZE_LOSS_KEEP_FASTER", "1") != "0"


class RewriteWarning(UserWarning):
    """The original function runs instead of the rewritten one; the message says why."""


@dataclass(frozen=True)
class Options:
    compile: bool = True
    backend: str | Callable = "inductor"
    mode: str | None = None
    dynamic: bool | None = None
    verify: bool = False
    verify_compiled: bool = True  # first call per signature: compiled vs eager rewritten function
    strict: bool = False
    hoist: bool = True           # target-only work outside autograd, cached; on torch.compile's graphs
    # Arguments treated as constants: detached on every call, so no gradient reaches them. A
    # semantic change the user opts into (distillation teachers, target networks).
    stop_gradient: tuple[str, ...] = ()
    debug_dir: str | None = None
    lint: bool = False           # run the gradient-flow lint once per input signature; warn findings
    # per band of signatures (same structure, sizes within a power of 4): time rewritten vs
    # original over a few calls, keep the faster (``rewrite.keep_faster``); the default is the
    # environment's (``keep_faster_default``)
    keep_faster: bool = field(default_factory=keep_faster_default)
    example_inputs: Any = None   # argument tuple (or a callable returning one) for the CLI


class VmappedRegion(ValueError):
    """``OptimizedFunction.loop_region``: the region runs inside a vmapped body (a helper's loop
    that a vectorized loop's body calls): the caller's region holds it."""


@dataclass(frozen=True)
class LoopRegion:
    """A vectorized loop's region (``OptimizedFunction.loop_region``): the guard of the loop at
    ``line``, as it runs (``vectorized``: its check, then the vectorized form) and with the loops
    as written (``as_written``), each a function of the names ``live_ins`` holds what a call
    read (tensors detached, requiring grad as they did) returning its locals, among them the
    names of ``live_outs``, which the function reads after the region. A live-in whose
    attributes the region writes (``written``) holds those as they were when the region began."""
    line: int
    live_ins: dict[str, Any]
    live_outs: frozenset[str]
    vectorized: Callable[..., dict[str, Any]]
    as_written: Callable[..., dict[str, Any]]
    # the attributes the region writes, by live-in: each call runs on a ``copied_state`` of them
    written: dict[str, frozenset[str]] = field(default_factory=dict)
    # per module live-in, its parameters and buffers as the call had them (``module_state``:
    # ``functional_call`` swaps them in only during the call): each call runs with them
    module_states: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


class OptimizedFunction:
    """What ``optimize_loss(fn)`` returns for a function: call it like ``fn``."""

    def __init__(self, fn: Callable, options: Options):
        functools.update_wrapper(self, fn)
        self._original = fn
        self._options = options
        self.example_inputs = options.example_inputs  # what `optimize-loss inspect` runs without --input
        self._lock = threading.RLock()
        self._rewritten: Callable | None = None
        self._stage_done = False
        self._compiled_fn: Callable | None = None
        self._impls: dict[Any, Callable] = {}
        # keep_faster: per band (``_form_of_band``), its ``FormTrial`` or the form it chose
        self._bands: dict[Any, Callable] = {}
        # What runs for every signature that differs only in sizes from one whose failure did not
        # depend on sizes: keyed by the signature with sizes erased.
        self._by_structure: dict[Any, Callable] = {}
        self._mutated: tuple[str, ...] = ()  # parameters the function may change in place
        self._signature: inspect.Signature | None = None  # to find them among the arguments
        self._counting: Callable | None = None  # the rewritten function counting its loops' runs
        self._limit_warned = False  # Dynamo's recompile limit reached: said once
        # The one implementation for every input signature, while nothing is decided per signature
        # (no verify, no lint, no timed choice of form, no fallback yet): calls skip the key.
        self._uniform: Callable | None = None
        # The original, when it is that one implementation and no argument is detached: calls
        # go straight to it (inside the user's torch.compile too, where it is what runs).
        self._fast: Callable | None = None
        self._per_signature = (options.verify or options.lint
                               or (options.compile and options.verify_compiled))
        self._dump_count = [0]
        _PENDING.add(self)
        name, filename, lineno = frontend.describe(fn)
        self._report = Report(name, filename, lineno)
        stop = options.stop_gradient
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        self._stopped = _stop_gradient_positions(fn, stop)
        if stop:
            self._report.notes.append(f"stop_gradient: no gradient flows to {', '.join(stop)} "
                                      f"(detached on every call)")

    # -- public -------------------------------------------------------------------------------
    @property
    def report(self) -> Report:
        self._rewrite()
        return self._report

    def rewritten_function(self) -> Callable:
        """The function after the AST passes, uncompiled; the original when nothing was rewritten
        or the rewrite fell back."""
        return self._rewrite() or self._original

    def rewritten_with_loops_as_written(self, lines: Iterable[int]) -> Callable:
        """The uncompiled rewritten function with its vectorized loops at ``lines`` (in it and
        its rewritten helpers) run as written: the forms the choice of form times per loop
        (``rewrite.keep_faster``), for measuring what one loop's vectorized form gains."""
        rewritten = self._rewrite()
        if rewritten is None:
            raise ValueError(f"{self._report.function}: nothing was rewritten")
        return self._as_written(rewritten, frozenset(lines))

    def loop_region(self, lines: Iterable[int], *args: Any, **kwargs: Any) -> LoopRegion:
        """The region of the vectorized loops at ``lines`` (in the rewritten function or its
        rewritten helpers) as two functions of its own, to time a loop alone: the guard of the
        first of them that a call with ``args`` reaches (the outermost: an inner loop's guard runs
        inside the outer one's, a helper's inside its caller's), with what it read in that call
        (``passes.loop_regions``). Raises ValueError when no such guard ran, or its region is
        not a block of its own."""
        rewritten = self._rewrite()
        if rewritten is None:
            raise ValueError(f"{self._report.function}: nothing was rewritten")
        lines, seen = frozenset(lines), {}
        guards = self._region_guards(rewritten, lines)

        def record(line: int, values: dict[str, Any] | None) -> None:
            if values is None:  # the guard is done
                return
            if not seen and torch._C._functorch.maybe_current_level() is not None:
                raise VmappedRegion(f"the loop at line {line} runs inside a vmapped function")
            if not seen:  # copies: the rest of the call may change them in place
                found = guards.get(line)
                seen[line] = found and _region_values(values, found[0], found[2])
        self._copy(rewritten, functools.partial(loop_regions.probe, lines=lines, recorder=_PROBE),
                   {_PROBE: record})(*args, **kwargs)
        if not seen:
            raise ValueError(f"{self._report.function}: no vectorized loop at lines "
                             f"{sorted(lines)} ran")
        [(line, found)] = seen.items()
        if found is None:
            raise ValueError(f"the loop at line {line} runs inside a function nested in the "
                             f"rewritten one")
        return _built_region(line, found, guards[line], lines)

    def _judging(self, rewritten: Callable, signature: str
                 ) -> tuple[Callable, Callable[[frozenset[int]], dict[int, float]] | None]:
        """For a band's first call: the counting copy of ``rewritten`` (``_counts``) that also
        records what each vectorized guard read the first time it ran outside a vmapped body
        (``passes.loop_regions.probe``; not a guard that prints or logs), and the judge of the
        loops that ran vectorized in that call (``FormTrial.counted``): each one's region timed
        alone (``loop_choice.judge``); a clearly slower one is noted in the report. No judge
        when the counting copy is ``rewritten`` itself (nothing to count)."""
        report = self._report
        if self._counts(rewritten) is rewritten:
            return rewritten, None
        lines = frozenset(loop.lineno for loop in report.loops if loop.vectorized)
        guards, seen, started = self._region_guards(rewritten, lines), {}, {}

        def record(line: int, values: dict[str, Any] | None) -> None:
            if values is None:  # its first run is done: what it cost the call
                if isinstance(started.get(line), loop_choice.Clock):
                    started[line] = started[line].seconds()
                return
            if line in seen or torch._C._functorch.maybe_current_level() is not None:
                return
            seen[line] = None  # never raises into the user's call: such a loop stays as it is
            found = guards.get(line)
            if found is not None and loop_regions.io_call(found[0]) is None \
                    and loop_regions.opaque_call(found[0], _namespace(*found[3:])) is None:
                with contextlib.suppress(Exception):
                    seen[line] = _region_values(values, found[0], found[2])
            started[line] = loop_choice.Clock(cpu=True)

        def judge(ran: frozenset[int]) -> dict[int, float]:
            kept, cheap = {}, {line for line, s in started.items() if loop_choice.cheap(s)}
            for line in sorted(ran & cheap & {l for l, found in seen.items() if found})[:LOOP_FORMS]:
                loop = next(l for l in report.loops if l.lineno == line and l.vectorized)
                try:
                    verdict = loop_choice.judge(_built_region(line, seen[line], guards[line],
                                                              frozenset({line})), loop.iterations)
                except Exception:  # a region that cannot run alone: its loop stays as it is
                    continue
                if verdict is not None:
                    kept[line] = verdict[0]
                    _note_kept(loop, signature, *verdict)
            seen.clear()  # the captured values are not kept
            return kept
        probed = self._copy(rewritten, lambda tree: loop_run_counters.instrument(
            loop_regions.probe(tree, lines, _PROBE), _COUNTER, report.original_source,
            {frontend.TORCH_ALIAS: "torch"}), {_COUNTER: report, _PROBE: record})
        return probed, judge

    def _region_guards(self, rewritten: Callable, lines: frozenset[int]) -> dict[int, tuple]:
        """Per line of ``lines`` whose vectorized guard is in the rewritten function or a helper
        of it (not in a function nested in one): the guard, its function, the names free in that
        function (closure cells, bound helpers: not the region's arguments), and what builds it
        (``_parts``)."""
        guards = {}
        main = self._parts(rewritten, _unchanged)
        for tree, parsed, bindings in [main, *_helper_parts(main[2])]:
            for line in lines - guards.keys():
                found = loop_regions.find_guard(tree, line)
                if found is not None:
                    free = set(bindings) | set(parsed.fn.__code__.co_freevars)
                    guards[line] = (*found, free, parsed, bindings)
        return guards

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fast = self._fast
        if fast is not None:  # the original for every call, whatever the inputs: nothing to check
            return fast(*args, **kwargs)
        if self._stopped:  # before everything, so the original, the fallbacks and verify agree
            args, kwargs = _detach_named(self._stopped, args, kwargs)
        if torch.compiler.is_compiling():
            # Inside the user's own torch.compile: a plain call Dynamo traces through, no lock,
            # no AST work, no state written (any would break the user's graph). The rewrite ran
            # when that compile started (``_rewrite_pending``); the user's compile is the compile.
            return (self._rewritten or self._original)(*args, **kwargs)
        impl = self._uniform
        if impl is None or (impl is not self._original and _on_meta(args, kwargs)):
            key = signature_key(args, kwargs)
            impl = self._impls.get(key)
            if impl is None:
                if _saved_tensors_hooked():
                    return self._original(*args, **kwargs)
                impl = self._specialize(key, args, kwargs)
        if type(impl) is FormTrial and _saved_tensors_hooked():
            return impl.steady(*args, **kwargs)
        if impl is self._original or type(impl) is FormTrial:  # a trial guards its rewritten form
            return impl(*args, **kwargs)
        return self._guarded(impl, *args, **kwargs)

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

    def _guarded(self, impl: Callable, *args: Any, **kwargs: Any) -> Any:
        """``impl``, a rewritten form; when it raises, the next step down runs on the arguments as
        they were (``_recover``)."""
        saved = _Saved(self._signature, self._mutated, args, kwargs) if self._mutated else None
        if saved is not None and saved.aliased:
            # a compiled graph does not see which arguments share memory (Dynamo does not guard
            # on it): the eager rewritten function, whose loops check it (``storage_checks``)
            impl = getattr(impl, "_optimize_loss_eager", impl)
        try:
            return impl(*args, **kwargs)
        except _SIGNALS:
            raise
        except Exception as exc:
            return self._recover(signature_key(args, kwargs), impl, exc, args, kwargs, saved)

    # -- stages -------------------------------------------------------------------------------
    def _rewrite(self) -> Callable | None:
        """The AST stage, once: the rewritten function, or None when the original must run."""
        with self._lock:
            if not self._stage_done:
                _PENDING.discard(self)
                self._rewritten = self._run_ast_stage()  # raises with strict=True
                self._stage_done = True
            return self._rewritten

    def _run_ast_stage(self) -> Callable | None:
        report = self._report
        try:
            rewritten, changed = frontend.rewrite_function(self._original, report, self._dumper())
        except Unsupported as exc:
            self._fall_back(RewriteError(exc.reason, report.filename,
                                         exc.lineno or report.lineno), exc)
            return None
        except RewriteError as exc:
            self._fall_back(exc, exc.__cause__)
            return None
        if not changed and not self._options.compile:
            return None  # nothing to gain: the original runs, with no wrapper cost but the lookup
        self._mutated = self._mutated_parameters()
        return rewritten

    def _mutated_parameters(self) -> tuple[str, ...]:
        """``passes.mutated_arguments`` on the original's source; every parameter when that
        source does not parse on its own."""
        signature = inspect.signature(self._original)
        try:
            func = function_node(ast.parse(self._report.original_source))
        except SyntaxError:  # a lambda's line that parses only within its statement
            func = None
        names = signature.parameters if func is None else mutated_parameters(
            func, self._original.__globals__)
        self._signature = signature
        return tuple(sorted(names))

    def _specialize(self, key: Any, args: tuple, kwargs: dict) -> Callable:
        with self._lock:
            if key in self._impls:
                return self._impls[key]
            if _on_meta(args, kwargs):
                # No data: the original's reads of values raise there, the rewrite's
                # device-side checks (torch._assert_async) cannot run. The original decides.
                self._remember(key, self._original)
                return self._original
            if self._options.lint:
                with self._state_kept(args, kwargs):
                    lint_warn(self._original, args, kwargs)
            rewritten = self._rewrite()
            counted_from = self._report.iterations  # the compiled path counts in _check_compiled
            impl = self._by_structure.get(_erase_sizes(key)) if self._by_structure else None
            if impl is None:
                impl = self._original if rewritten is None else self._compiled(rewritten)
                if impl is self._compiled_fn:
                    self._warn_at_recompile_limit(key, rewritten)
                if impl not in (rewritten, self._original) and self._options.verify_compiled:
                    impl = self._check_compiled(key, impl, args, kwargs)
            if impl is not self._original and self._options.verify:
                problems = self._verify(impl, args, kwargs)
                if problems:
                    self._fall_back(self._error("verification failed: " + "; ".join(problems)),
                                    None, key)
                    impl = self._original
            self._remember(key, impl)
            # The timed choice of form is per band of signatures, unless nothing was rewritten.
            timed = self._options.keep_faster and rewritten is not None
            self._uniform = None if self._per_signature or timed else impl
            if self._uniform is self._original and not self._stopped:
                self._fast = self._original
            form, new_band = None, False
            if impl is not self._original and self._options.keep_faster:
                form, new_band = self._form_of_band(key, impl, args, kwargs,
                                                    self._report.iterations - counted_from)
                self._impls[key] = form
                compiles = impl is self._compiled_fn and not self._options.verify_compiled
                if form is self._original or not (new_band or compiles):
                    # A known band: its trial or its chosen form runs this first call too, so
                    # that lengths changing at every step still finish the trial.
                    return form
            # This first call of an eager signature counts what its loops run (the same code;
            # compiled: counted by _check_compiled's run); a band's first judges its loops too.
            if impl is rewritten and not self._options.compile:
                if not new_band:
                    return self._counts(rewritten)
                counting, judge = self._judging(rewritten, form.signature)
                return form.counted(counting, self._report, judge)
            return impl

    def _form_of_band(self, key: Any, impl: Callable, args: tuple, kwargs: dict,
                      trips: int) -> tuple[Callable, bool]:
        """What runs for ``key``: the form its band chose, or the band's ``FormTrial``; and
        whether ``key`` is the band's first signature (which makes the trial, with the ``trips``
        its first call's counting already found)."""
        band = (_erase_sizes(key), size_band(args, kwargs))
        form = self._bands.get(band)
        if form is None:
            low = BAND ** band[1]
            # The rewritten forms are timed with the wrapper's work for them (``_guarded``)
            as_written = None if impl is not self._rewritten else (
                lambda lines: functools.partial(self._guarded, self._as_written(impl, lines)))
            trial = self._bands[band] = FormTrial(
                functools.partial(self._guarded, impl), self._original,
                f"{describe_key(key)} and every other size of them with {low}-{BAND * low - 1} "
                f"tensor elements", functools.partial(self._keep, band),
                elements(args, kwargs), trips, as_written)
            return trial, True
        return form, False

    def _keep(self, band: Any, chosen: int, choice: FormChoice, final: bool) -> None:
        """The ``FormTrial`` of ``band`` chose its form ``chosen`` (0: the rewritten function,
        1: the original, from 2: the rewritten function with some loops as written) for the reason ``choice``, which replaces the band's earlier one in the report. When the
        choice is ``final``, every signature the trial runs (unless a fallback settled one
        meanwhile) runs that form from now on, without the trial."""
        with self._lock:
            forms = self._report.forms
            forms[:] = [c for c in forms if c.signature != choice.signature] + [choice]
            del forms[:-FORMS_SHOWN]  # bounded, whatever the number of bands
            if not final:
                return
            trial = self._bands[band]
            form = trial.forms[chosen]
            if form is not self._original:  # a rewritten form, guarded: the guard goes back on
                form = form.args[0]
            self._bands[band] = form
            for key, impl in self._impls.items():
                if impl is trial:
                    self._impls[key] = form

    def _verify(self, impl: Callable, args: tuple, kwargs: dict) -> list[str]:
        # The original first, on its own clones: when it raises, that error is the user's.
        want = self._beside(self._original, args, kwargs)
        try:
            got = self._beside(impl, args, kwargs)
        except Exception as exc:
            return [f"the rewritten function raised {type(exc).__name__}: {exc}"]
        return compare(want, got)

    def _check_compiled(self, key: Any, compiled: Callable, args: tuple, kwargs: dict) -> Callable:
        """The compiled function against the eager rewritten one, each on its own clones: a
        compiler that miscompiles (values or gradients) makes this signature run eagerly.
        ``report.check_seconds`` adds what the check costs beyond compiling: the eager run and
        the comparison (the compiled run on clones compiles what the call then runs)."""
        eager = compiled._optimize_loss_eager
        start = time.perf_counter()
        try:
            want = self._beside(self._counts(eager), args, kwargs)
        except Exception:
            return eager  # fails by itself: the call itself steps down to the original
        finally:
            self._report.check_seconds += time.perf_counter() - start
        try:
            got = self._beside(compiled, args, kwargs)
        except Exception as exc:
            return self._step_down(key, "torch.compile failed", exc, eager)
        start = time.perf_counter()
        problems = compare(want, got)
        self._report.check_seconds += time.perf_counter() - start
        if problems:
            self._fall_back(self._error("the compiled function differs from the eager rewritten "
                                        "function: " + "; ".join(problems)),
                            None, key, running=_EAGER)
            return eager
        return compiled

    def _beside(self, fn: Callable, args: tuple, kwargs: dict) -> tuple:
        """``outputs_and_gradients`` of a run beside the call (a check's), on clones of the
        tensors, the arguments' state kept (``_state_kept``). The warnings the loss gives
        (``F.mse_loss``'s broadcast warning, the user's own) are the call's to give, once: of
        the run's, only the compiler's (compiling happens here, once) and fallbacks' are given again."""
        with self._state_kept(args, kwargs), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return outputs_and_gradients(fn, args, kwargs)
            finally:
                caught = [w for w in caught if w.filename.startswith(_COMPILER_FILES)
                          or issubclass(w.category, RewriteWarning)]
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)

    @contextlib.contextmanager
    def _state_kept(self, args: tuple, kwargs: dict) -> Iterator[None]:
        """What a run beside the call changes in the arguments (a module's ``self.center = ...``
        or buffer, an object's attribute) is put back after it, so that the call changes them
        once, as the original does, and every run starts from the same state. Every argument
        the run shares with the call (``_shared``): a method the function calls on a module or
        an object (``self.update_center(t)``) may change it, which ``_mutated`` does not follow;
        tensors and containers of them the run gets as clones (``clone_inputs``) are not copied
        again."""
        signature = inspect.signature(self._original)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:  # the call fails before the body runs: nothing can change
            bound = None
        else:
            bound.apply_defaults()
        names = () if bound is None else tuple(
            name for name, value in bound.arguments.items() if _shared(value))
        saved = _Saved(signature, names, args, kwargs)
        try:
            yield
        finally:
            if not saved.restore():
                raise self._error("a check's run changed an argument that requires grad in "
                                  "place; its autograd history cannot be put back")

    def _warn_at_recompile_limit(self, key: Any, rewritten: Callable) -> None:
        """A new signature when Dynamo holds as many graphs of the function as its recompile
        limit: Dynamo runs it, and every later new one, uncompiled. Still correct, but slow
        where the user expects compiled code: say so once."""
        graphs = len(_debug_get_cache_entry_list(rewritten.__code__))
        limit = torch._dynamo.config.recompile_limit
        if graphs < limit or self._limit_warned:
            return
        self._limit_warned = True
        self._fall_back(self._error(f"torch.compile's recompile limit ({limit} graphs, "
                                    f"torch._dynamo.config.recompile_limit) is reached: new input "
                                    f"signatures are not compiled"), None, key,
                        running="the uncompiled rewritten function")

    def _compiled(self, rewritten: Callable) -> Callable:
        opts = self._options
        if not opts.compile:
            return rewritten
        if self._compiled_fn is None:
            backend, mode = opts.backend, opts.mode
            # AOTAutograd's backward is not differentiable: a create_graph backward raises,
            # decided when each graph compiles where the backend can tell, else on every call;
            # the eager backend's is, but for a graph holding an autograd.Function
            refused = _second_order_refused(self._report.function)
            first_order = opts.hoist and (first_order_supported(backend) or backend == "eager")
            if opts.hoist:  # Dynamo's graphs get the FX passes, then go to opts.backend
                backend, mode = HoistingBackend(
                    backend, mode, opts.dynamic, self._report, self._dumper(),
                    first_order=refused if first_order else None), None
            elif backend == "eager":
                backend, first_order = eager_first_order(refused), True
            compiled = torch.compile(rewritten, backend=backend, mode=mode, dynamic=opts.dynamic)
            if not first_order:
                compiled = first_order_only(compiled, refused)
            compiled._optimize_loss_eager = rewritten  # next step down if compiling fails
            self._compiled_fn = compiled
        return self._compiled_fn

    def _counts(self, rewritten: Callable) -> Callable:
        """An eager copy of ``rewritten`` that counts its vectorized loops' runs into the report
        (``passes.loop_run_counters``); ``rewritten`` itself when no loop is vectorized."""
        report = self._report
        if self._original.__name__ == "<lambda>" or not any(l.vectorized for l in report.loops):
            return rewritten  # (a lambda's rewritten source reads `def <lambda>`: no Python)
        with self._lock:
            if self._counting is None:
                self._counting = self._copy(rewritten, functools.partial(
                    loop_run_counters.instrument, counter=_COUNTER), {_COUNTER: report})
            return self._counting

    def _as_written(self, rewritten: Callable, lines: frozenset[int]) -> Callable:
        """A copy of the eager ``rewritten`` whose vectorized loops at ``lines`` (in it and its
        rewritten helpers) run as written (``passes.loops_as_written``)."""
        return self._copy(rewritten, functools.partial(as_written, lines=lines), {}, mapped=False)

    def _copy(self, rewritten: Callable, transform: Callable[[ast.Module], ast.Module],
              extra: dict[str, Any], mapped: bool = True) -> Callable:
        """``rewritten`` built again from its source after ``transform``, and so are the rewritten
        helpers it calls (``mapped``: those for a vmapped body too); ``extra``: names the
        transformed code uses."""
        tree, parsed, bindings = self._parts(rewritten, transform)
        return frontend.build_function(
            tree, parsed, {**_transformed_helpers(bindings, transform, extra, mapped), **extra})

    def _parts(self, rewritten: Callable, transform: Callable[[ast.Module], ast.Module]
               ) -> tuple[ast.Module, frontend.ParsedFunction, dict[str, Any]]:
        """What builds ``rewritten`` again: its tree after ``transform``, the function it was
        parsed from, and the names bound into it (the rewritten helpers among them)."""
        report = self._report
        tree = _transformed(rewritten, transform)
        own = set(self._original.__code__.co_freevars)
        cells = zip(rewritten.__code__.co_freevars, rewritten.__closure__ or ())
        bindings = {name: cell.cell_contents for name, cell in cells if name not in own}
        parsed = frontend.ParsedFunction(self._original, tree, report.filename,
                                         report.lineno, report.original_source, "torch")
        return tree, parsed, bindings

    def _recover(self, key: Any, impl: Callable, exc: Exception, args: tuple, kwargs: dict,
                 saved: _Saved | None) -> Any:
        """``impl`` raised: step down (compiled, eager rewritten, original), putting back what it
        changed in the arguments first; when the original raises too, its error is the user's."""
        eager = getattr(impl, "_optimize_loss_eager", None)
        if eager is not None:
            self._put_back(saved, exc)
            try:
                result = eager(*args, **kwargs)
            except Exception as eager_exc:
                exc = eager_exc
            else:
                self._settle(key, self._step_down(key, "torch.compile failed", exc, eager))
                return result
        self._put_back(saved, exc)
        try:
            result = self._original(*args, **kwargs)
        except Exception as original_exc:
            raise original_exc from None  # not our rewrite's fault: the user sees their own error
        self._settle(key, self._step_down(key, "the rewritten function failed", exc, self._original))
        return result

    def _put_back(self, saved: _Saved | None, exc: Exception) -> None:
        if saved is not None and not saved.restore():
            raise self._error(f"the rewritten function failed ({type(exc).__name__}: {exc}) after "
                              f"changing an argument that requires grad in place; its autograd "
                              f"history cannot be put back, so the original cannot run on it") from exc

    def _step_down(self, key: Any, step: str, exc: Exception, impl: Callable) -> Callable:
        """Warn that ``impl`` runs for this signature (and every size of it, when the failure
        does not depend on sizes); return it."""
        every_size = _size_independent(exc)
        self._fall_back(self._error(f"{step}: {type(exc).__name__}: {exc}"), exc, key,
                        running=None if impl is self._original else _EAGER, every_size=every_size)
        if every_size:
            with self._lock:
                self._by_structure[_erase_sizes(key)] = impl
        return impl

    def _settle(self, key: Any, impl: Callable) -> None:
        with self._lock:
            self._remember(key, impl)
            self._per_signature, self._uniform, self._fast = True, None, None

    def _remember(self, key: Any, impl: Callable) -> None:
        """What runs for ``key``, in a table of at most ``SIGNATURES_KEPT`` signatures that run a
        rewritten form (fresh shapes every step must not grow it): the oldest such one is
        forgotten, and decided again (verified, timed) when it comes back. Signatures running the
        original stay: each has its fallback recorded, and deciding again would warn again."""
        self._impls[key] = impl
        if len(self._impls) > SIGNATURES_KEPT:
            old = next((k for k, v in self._impls.items() if v is not self._original), None)
            if old is not None and old != key:
                del self._impls[old]

    def _error(self, message: str) -> RewriteError:
        return RewriteError(message, self._report.filename, self._report.lineno)

    def _fall_back(self, error: RewriteError, cause: BaseException | None, key: Any = None,
                   running: str | None = None, every_size: bool = False) -> None:
        """Record the fallback; warn once, or raise with ``strict=True``."""
        if self._options.strict:
            raise error from cause
        signature = None if key is None else describe_key(key)
        if signature and every_size:
            signature += " and every other size of them"
        what = running or "the original function"
        self._report.fallbacks.append(Fallback(error.message, error.filename or "<unknown>",
                                               error.lineno, error.pass_name, signature, what))
        scope = f" on inputs {signature}" if signature else ""
        warnings.warn_explicit(f"optimize_loss: {what} runs for {self._report.function}{scope}: "
                               f"{error}", RewriteWarning, error.filename or "<unknown>",
                               error.lineno or 0)

    def _dumper(self) -> Callable[[str, str], None] | None:
        directory = self._options.debug_dir
        if directory is None:
            return None
        os.makedirs(directory, exist_ok=True)
        count = self._dump_count  # shared by the AST stage and every Dynamo graph's FX passes

        def dump(step: str, text: str) -> None:
            path = os.path.join(directory, f"{count[0]:02d}_{step}.py")
            with open(path, "w") as f:
                f.write(f"# optimize_loss: {self._report.function} after {step}\n{text}\n")
            count[0] += 1
        return dump


_EAGER = "the eager rewritten function"
# Where the warnings of compiling come from: this package's runtime and backend, and torch's
# compiler stack (not the loss's ops, whose warnings the call itself gives).
_COMPILER_FILES = tuple(os.path.join(os.path.dirname(m.__file__), "") for m in (
    importlib.import_module(n) for n in (
        "rewrite.runtime", "torch._dynamo", "torch._inductor", "torch._functorch", "torch.fx",
        "torch._subclasses")))
# What torch raises through a call on purpose, not a failure of the rewrite: a non-reentrant
# checkpoint's recomputation stops (by default) once it has the tensors backward needs. Running
# the original after it would recompute past that stop, which the checkpoint asserts against.
_SIGNALS = (_StopRecomputationError,)

# Decorated functions whose AST stage has not run. When any torch.compile starts (a training
# step that calls one of them, say), they are rewritten first, outside Dynamo's trace, so that
# the trace meets a finished function instead of AST work, which would break the user's graph.
_PENDING: "weakref.WeakSet[OptimizedFunction]" = weakref.WeakSet()


@torch._dynamo.callback.on_compile_start
def _rewrite_pending(_: Any) -> None:
    for fn in list(_PENDING):
        # Never wait for a function's lock here: its holder may be compiling it right now and
        # waiting for Dynamo's callback lock, which this callback holds. It is being rewritten.
        if not fn._lock.acquire(blocking=False):
            continue
        try:
            fn._rewrite()
        except RewriteError:
            pass  # strict=True: raised again where the function is called
        finally:
            fn._lock.release()
_COUNTER = "_optimize_loss_counts"  # the report, as the instrumented copy's closure binding
_PROBE = "_optimize_loss_probe"  # what records a loop region's live-ins, in the probed copy


def _shared(value: Any) -> bool:
    """Whether a run on ``clone_inputs`` of ``value`` shares part of it with the call: a leaf
    that is no tensor (cloned), number, string or None (a module, another object)."""
    return any(not isinstance(leaf, (torch.Tensor, int, float, complex, str, type(None)))
               for leaf in tree_flatten(value)[0])


def _saved_tensors_hooked() -> bool:
    """Whether saved-tensor hooks are on, as in a non-reentrant ``torch.utils.checkpoint``'s
    forward and in its recomputation during backward. The two must save the same tensors, so
    such a call runs what an earlier call settled: never a first call's checks beside it, a
    timed trial's turn of another form, nor a form the recomputation would not run (a signature
    first met so runs the original, and stays unsettled)."""
    return torch._C._autograd._top_saved_tensors_default_hooks(True) is not None


def _transformed_helpers(bindings: dict[str, Any], transform: Callable[[ast.Module], ast.Module],
                         extra: dict[str, Any], mapped: bool = True) -> dict[str, Any]:
    """``bindings`` with the rewritten helpers among them (``frontend.REWRITE_OF``) replaced by
    copies built after ``transform`` (counting their loops' runs into the report, which lists
    the helpers' loops too; or running some as written). ``mapped=False`` leaves the helpers
    rewritten for a vmapped body as they are: a loop of theirs as written would run under
    ``torch.vmap``, where its Python tests of a batched index (``if k != i:``) raise."""
    copies = {}
    for name, value in bindings.items():
        rewrite_of = getattr(value, frontend.REWRITE_OF, None)
        if rewrite_of is None or not mapped and getattr(value, frontend.MAPPED_REWRITE, False):
            copies[name] = value
            continue
        _, parsed, own = rewrite_of
        copies[name] = frontend.build_function(
            _transformed(value, transform), parsed,
            {**_transformed_helpers(own, transform, extra, mapped), **extra})
    return copies


def _helper_parts(bindings: dict[str, Any]) -> Iterator[tuple[ast.Module, frontend.ParsedFunction,
                                                                dict[str, Any]]]:
    """``OptimizedFunction._parts`` of the rewritten helpers among ``bindings``, and of theirs."""
    for value in bindings.values():
        rewrite_of = getattr(value, frontend.REWRITE_OF, None)
        if rewrite_of is not None:
            _, parsed, own = rewrite_of
            yield _transformed(value, _unchanged), parsed, own
            yield from _helper_parts(own)


def _unchanged(tree: ast.Module) -> ast.Module:
    return tree


def _built_region(line: int, found: tuple, guard: tuple, lines: frozenset[int]) -> LoopRegion:
    """The ``LoopRegion`` of the guard at ``line`` (``guard``: ``_region_guards``' entry) from
    what the probe ``found`` before it (``_region_values``), with the loops at ``lines`` as
    written in its as-written form."""
    (values, written, states), (node, func, free, parsed, bindings) = found, guard
    params = sorted(loop_regions.uses(node) & values.keys() - free)
    module = loop_regions.region_function(node, func, params)
    kept = functools.partial(as_written, lines=lines)
    return LoopRegion(line, {name: values[name] for name in params},
                      frozenset(loop_regions.live_outs(node, func)),
                      frontend.build_function(module, parsed, bindings),
                      frontend.build_function(kept(clone(module)), parsed,
                                              _transformed_helpers(bindings, kept, {}, mapped=False)),
                      {name: frozenset(attrs) for name, attrs in written.items()},
                      {name: state for name, state in states.items() if name in params})


def _note_kept(loop: LoopReport, signature: str, slowdown: float, rounds: int) -> None:
    """``loop`` runs as written for the band ``signature``: said in its run note."""
    loop.kept_at_run_time = (
        f"kept as written at run time for inputs {signature}: its vectorized form took "
        f"{slowdown:.2g}x the loop's time (the loop's region alone, medians of {rounds} rounds)")


def _namespace(parsed: frontend.ParsedFunction, bindings: dict[str, Any]) -> dict[str, Any]:
    """What the names of a rewritten function resolve to: the original's globals and closure
    cells, and the names bound into the rewrite."""
    fn, held = parsed.fn, {}
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        with contextlib.suppress(ValueError):  # a cell not bound yet
            held[name] = cell.cell_contents
    return {**fn.__globals__, **held, **bindings}


def _region_values(values: dict[str, Any], guard: ast.If, free: set[str]) -> tuple:
    """What a region's calls start from, as the probe found ``values`` before ``guard``: the
    values (tensors detached, one copy of a tensor bound to two names, views of a tensor
    requiring grad that several of them view views of its copy, ``shared_views``; the objects
    whose attributes it writes copied with those attributes), those attributes by name, and the
    parameters and buffers of the modules among them (``module_state``)."""
    written = loop_regions.written_attributes(guard, values.keys() - free)
    modules = [v for v in values.values() if isinstance(v, torch.nn.Module)]
    captured = aliases_kept(_captured, shared_views(
        [t for t in tree_flatten(values)[0] if isinstance(t, torch.Tensor)]
        + [t for m in modules for t in (*m.parameters(), *m.buffers())]))
    copies = {name: copied_state(value, written[name], captured) if name in written
              else tree_map(captured, value) for name, value in values.items()}
    states = {name: module_state(value, captured) for name, value in values.items()
              if isinstance(value, torch.nn.Module) and name not in free}
    return copies, written, states


def _captured(value: Any) -> Any:
    """A tensor's copy outside the call's graph, requiring grad as it did; other values as they are."""
    if isinstance(value, torch.Tensor):
        return with_index_ints(value.detach().clone().requires_grad_(value.requires_grad), value)
    return value


def _transformed(rebuilt: Callable, transform: Callable[[ast.Module], ast.Module]) -> ast.Module:
    """A copy of the rewritten tree of ``rebuilt`` (``frontend.rewrite_function``'s), with the
    user's line numbers, after ``transform``."""
    return transform(clone(getattr(rebuilt, frontend.REWRITTEN_TREE)))


def _second_order_refused(name: str) -> str:
    return (f"optimize_loss: second-order gradients (backward with create_graph=True) "
            f"through the compiled {name} are not supported: torch.compile's backward is not "
            f"differentiable (with backend=\"eager\", that of an autograd.Function, the "
            f"rewrite's or yours). Use optimize_loss(..., compile=False) for this loss.")


class _Saved:
    """The state of the arguments a function may change in place: tensors (values, sizes and
    strides), lists, dicts, sets and the tensors in them, modules' attributes and buffers, other
    objects' attributes; ``restore`` puts it back into the same objects (a tensor whose version
    counter did not move is left as it is)."""

    def __init__(self, signature: inspect.Signature, names: tuple[str, ...], args: tuple,
                 kwargs: dict):
        self.items: list[tuple[Any, Any]] = []
        self.aliased = False  # a tensor it may change shares memory with another argument
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return  # the call fails before the body runs: nothing can change
        bound.apply_defaults()
        self.aliased = _shares_written_memory(bound.arguments, names)
        todo, seen = [bound.arguments[n] for n in names if n in bound.arguments], set()
        while todo:
            value = todo.pop()
            if id(value) in seen:
                continue
            seen.add(id(value))
            if isinstance(value, torch.Tensor):
                self.items.append((value, (value.detach().clone(), value.size(), value.stride(),
                                           value.storage_offset(), value.grad_fn,
                                           None if value.is_inference() else value._version)))
            elif isinstance(value, (list, dict, set)):
                self.items.append((value, copy.copy(value)))
                todo += value.values() if isinstance(value, dict) else value
            elif isinstance(value, tuple):
                todo += value
            elif isinstance(value, torch.nn.Module):
                self.items.append((value, dict(vars(value))))
                todo += [value._buffers, *value._modules.values()]
            elif hasattr(value, "__dict__") and not isinstance(value, (type, types.ModuleType)):
                self.items.append((value, dict(vars(value))))

    def restore(self) -> bool:
        """Put everything back; False when a tensor that requires grad was changed in place under
        autograd (its values can be put back, its autograd history cannot)."""
        for obj, state in self.items:
            if isinstance(obj, torch.Tensor):
                values, size, stride, offset, grad_fn, version = state
                if version is not None and obj._version == version:
                    # Written without a version bump (batch_norm's kernel updates its running
                    # statistics so), or unchanged: put back the same way, since a copy that
                    # bumps the version breaks a backward that saved the tensor.
                    if not torch.equal(obj, values):
                        with torch.no_grad(), torch.autograd._unsafe_preserve_version_counter(obj):
                            obj.copy_(values)
                    continue
                if obj.requires_grad and obj.grad_fn is not grad_fn:
                    return False
                with torch.no_grad():
                    if (obj.size(), obj.stride(), obj.storage_offset()) != (size, stride, offset):
                        obj.as_strided_(size, stride, offset)  # ``unsqueeze_``, ``t_``, ...
                    obj.copy_(values)
            elif isinstance(obj, list):
                obj[:] = state
            elif isinstance(obj, (dict, set)):
                obj.clear()
                obj.update(state)
            else:
                vars(obj).clear()
                vars(obj).update(state)
        return True


def _shares_written_memory(arguments: dict, written: tuple[str, ...]) -> bool:
    """A tensor argument of ``written`` (or one in a list or tuple there) shares its storage
    with a tensor of another argument, or of another place in the same one (``f(a, a)``,
    ``f(a[:-1], a[1:])``)."""
    places = [(name, t) for name, value in arguments.items() for t in tensors_in(value)]
    if len(places) < 2:
        return False
    storages = [t.untyped_storage().data_ptr() for _, t in places]
    return any(name in written and storages.count(storage) > 1
               for (name, _), storage in zip(places, storages))


# Exception types that name a construct, not a size: the same code fails the same way at any size
# (a compiled graph's backward refuses create_graph at any size).
_SIZE_INDEPENDENT = (TypeError, AttributeError, NameError, NotImplementedError, SecondOrderRefused)


def _size_independent(exc: BaseException) -> bool:
    """The failure does not depend on sizes: ``torch.vmap`` refusing an operation of a loop body
    (``.item()``, data-dependent control flow, random ops, in-place writes into an unbatched
    tensor: its messages start with "vmap:"; ``.data``: "... under vmap transform is not
    allowed"), or an exception type of ``_SIZE_INDEPENDENT``."""
    return isinstance(exc, _SIZE_INDEPENDENT) or "vmap: " in str(exc) \
        or "under vmap transform" in str(exc)


def _erase_sizes(key: Any) -> Any:
    """A signature key with every tensor's sizes replaced by its rank."""
    if isinstance(key, torch.Size):
        return len(key)
    if isinstance(key, tuple):
        return tuple(map(_erase_sizes, key))
    return key


def _stop_gradient_positions(fn: Callable, names: tuple[str, ...]) -> frozenset[str | int]:
    """Positions and keywords of the ``stop_gradient`` arguments of ``fn``."""
    if not names:
        return frozenset()
    params = list(inspect.signature(fn).parameters.values())
    unknown = set(names) - {p.name for p in params}
    if unknown:
        raise TypeError(f"stop_gradient names no argument of {frontend.describe(fn)[0]}: "
                        f"{', '.join(sorted(unknown))}")
    return frozenset(names) | {i for i, p in enumerate(params) if p.name in names
                               and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _detach_named(stopped: frozenset[str | int], args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    args = tuple(_detached(a) if i in stopped else a for i, a in enumerate(args))
    return args, {k: _detached(v) if k in stopped else v for k, v in kwargs.items()}


def _detached(value: Any) -> Any:
    return tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, value)


# The report keeps the latest choices of form (one per band of signatures).
FORMS_SHOWN = 16
# A list or tuple of at most this many items is keyed by every item, a longer one by its
# length, first and last item (``signature_key``).
ITEMS_KEYED = 4
# Input signatures whose decision (verified, compiled and checked, timed) is kept.
SIGNATURES_KEPT = 1024


def _on_meta(args: tuple, kwargs: dict) -> bool:
    """A meta tensor among the arguments (top level only: this runs on every call)."""
    return any(isinstance(t, torch.Tensor) and t.is_meta
               for t in (*args, *kwargs.values()))


def signature_key(args: tuple, kwargs: dict) -> tuple:
    """What selects a specialisation. Hot path: called on every call, so a list or tuple of more
    than ``ITEMS_KEYED`` items is keyed by its length and its first and last items only: keying
    hundreds of tensors (a list per step of a rollout) costs a good part of what a loss over
    them does, and such lists hold items of one kind, the last one sometimes shorter (a last
    chunk). A list that differs in its middle only shares its ends' specialisation; the rewrite's
    own checks still hold, and the original is right whatever the items. A tensor argument's
    key is read in one C call (``_tensor_key``), without a Python frame per argument."""
    return (tuple([_tensor_key(a) if isinstance(a, torch.Tensor) else _leaf_key(a) for a in args]),
            tuple((k, _leaf_key(v)) for k, v in kwargs.items()) if kwargs else (),
            torch.is_grad_enabled())


# A tensor's facts that select a specialisation, read afresh on every call: each can change in
# place (resize_, requires_grad_, ``.data =``), so none is cached by the tensor's identity.
_tensor_key = operator.attrgetter("shape", "dtype", "device", "requires_grad")


def _leaf_key(a: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return _tensor_key(a)
    if a is None or isinstance(a, (str, bool)):
        return a  # such values usually select code paths (reduction="mean")
    if isinstance(a, (list, tuple)):
        if len(a) > ITEMS_KEYED:  # its length and its ends: see ``signature_key``
            return (type(a), len(a), _leaf_key(a[0]), _leaf_key(a[-1]))
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
    if isinstance(leaf, tuple) and len(leaf) == 3 and isinstance(leaf[0], type) and issubclass(
            leaf[0], torch.nn.Module):
        cls, _, training = leaf  # keyed by its identity, which says nothing to the reader
        return f"a {cls.__name__} module" + ("" if training else " in eval mode")
    if isinstance(leaf, tuple) and len(leaf) == 4 and leaf[0] in (list, tuple):
        kind, length, first, last = leaf  # a long list keyed by its length and its ends
        first, last = _describe_leaf(first), _describe_leaf(last)
        return (f"{kind.__name__}[{length} x {first}]" if first == last
                else f"{kind.__name__}[{length} items: {first}, ..., {last}]")
    if isinstance(leaf, tuple) and len(leaf) == 2 and leaf[0] in (list, tuple, dict):
        kind, items = leaf  # a container: its items' keys (a dict's as (key, item key) pairs)
        shown = [f"{k!r}: {_describe_leaf(v)}" for k, v in items] if kind is dict else list(map(
            _describe_leaf, items))
        return f"{kind.__name__}[{', '.join(shown)}]"
    return repr(leaf)


def _lookup(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    try:
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        return None
    return obj
