"""``torch.compile(fn, backend="optimize_loss")``: the FX passes on Dynamo's graph, unrolled loops
re-rolled, target-only work hoisted and cached, the rest compiled by Inductor.

Registered through the ``torch_dynamo_backends`` entry point. Dynamo has already turned the
bytecode into a graph, so the AST passes (loop vectorization) cannot run here: use the
``@optimize_loss`` decorator for those; it compiles through ``HoistingBackend`` too.

Why Dynamo's graph and not a ``symbolic_trace`` of the function: Dynamo guards everything the
graph assumed (Python numbers, module attributes, globals, requires_grad, shapes) and recompiles
when it changes, replays side effects, breaks the graph at data-dependent control flow instead
of failing, and passes parameters and buffers as graph inputs, which makes them cache keys like
any other input. Per compiled graph: ``FX_PIPELINE`` runs; when it split off a
``target_transform``, the graph becomes a ``rewrite.hoist.HoistedCall`` (cached
``target_transform`` under no_grad, then ``core`` compiled by the inner backend); otherwise the
inner backend compiles the whole graph. After a batch-size change Dynamo's automatic dynamic
shapes recompile once with a dynamic batch dimension, so later batch sizes (a smaller last batch)
reuse that graph; the hoisted values' fake tensors carry the same symbolic sizes into ``core``.

Dynamo unrolls Python loops: ``reroll_unrolled_loops`` turns the N copies of a per-sample or
per-class body back into one vmapped computation before the inner compiler sees the graph, so it
compiles one copy, not N. Every graph gets a note in the report: each loop re-rolled, or why
not (too few copies; copies that differ, in what and at which node; ...), or why the graph has
no loop to re-roll; each "not re-rolled" note is also logged once per process (a warning for a
loop left alone, info for a graph without one or with too few copies). A loop whose body breaks the graph
(``.item()``, ``print``) never reaches a backend, neither whole nor as one graph per iteration:
Dynamo skips the whole frame and runs it eagerly. The next time the backend compiles a graph
(in a training step, the code after the loss), it says so once per skipped function, through
the logger and the report, and recommends the decorator, which vectorizes such loops before
Dynamo runs (under the decorator, whose fallback is its own, that the rewrite kept the loop). Dynamo's own signals raised through a backend (retrace requests) pass through: they
are no failure of ours.

``backend(inner, hoist=, reroll=, ...)`` makes a configured backend; ``"optimize_loss"`` is
``backend()``. Neither raises into a training step: when a pass or the inner compiler fails on
the rewritten graph, the inner backend compiles the unmodified graph, with one warning (logger
``"optimize_loss"``, and ``warnings``). ``HoistingBackend``, as the decorator uses it, raises
instead, so that the decorator's own fallback and ``strict=True`` apply.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import re
import warnings
from typing import Any, Callable

import torch
from torch.utils._pytree import tree_flatten

from torch._functorch._aot_autograd import runtime_wrappers

from passes import hoist_target_subgraph, reroll_unrolled_loops
from passes.meta_keys import NOT_REROLLED_BECAUSE, REROLLED, USER_LOCATION
from passes.pipeline import Dump, pass_name, FX_PIPELINE, run_fx_pipeline

from . import hoist
from passes.report import Report

log = logging.getLogger("optimize_loss")

# In Dynamo's count of unsupported constructs: a frame skipped for a graph break in a loop.
_SKIPPED_LOOP = re.compile(r"graph break in loop\n.*?frame skipped: ([^\n]+)", re.S)
_told_skipped: set[str] = set()  # functions already logged, once per process
# What Dynamo expects to come through a backend (retrace with other specializations, a user's
# error to report): signals, not failures of ours; the unmodified graph would raise them too.
_DYNAMO_SIGNALS = (torch._dynamo.exc.RestartAnalysis, torch._dynamo.exc.ShortenTraceback)
_told: set[str] = set()  # "not re-rolled" notes already logged, once per process
# Notes logged as info, not as a warning: no loop was missed (a model's forward has none, and
# ``h[0] + h[1]`` is no loop).
_NO_MISSED_LOOP = (reroll_unrolled_loops.NO_LOOP, reroll_unrolled_loops.TOO_FEW)
# Inner backends that compile a graph that takes gradients into one AOTAutograd
# ``autograd.Function`` (``first_order_functions`` makes it refuse a create_graph backward).
AOT_BACKENDS = frozenset({"inductor", "aot_eager", "aot_eager_decomp_partition"})
# What builds that Function's class (None in a torch without it: then the decorator hooks
# every call's outputs instead, ``first_order_only``).
_FUNCTION_FACTORY = getattr(runtime_wrappers, "_AOTDispatchAutogradFunctionFactory", None)
# How Dynamo's graphs call an ``autograd.Function`` (``holds_autograd_function``).
_AUTOGRAD_FUNCTION_APPLY = torch.ops.higher_order.autograd_function_apply


class HoistingBackend:
    """A Dynamo backend: ``FX_PIPELINE``, then ``backend`` (name or callable, with ``mode`` and
    ``dynamic`` as for ``torch.compile``) on the core graph. ``report`` and ``dump`` (the
    decorator's) receive what the passes did and the graph after every pass. ``hoist=False`` or
    ``reroll=False`` leave out that pass; with ``fallback``, a failure compiles the unmodified
    graph with ``backend`` instead of raising. With ``explain`` (the backend a user picked, not
    the decorator's), every graph gets a note on its loops, re-rolled or why not, even one
    without a loop, and each new "not re-rolled" note is logged once per process. With
    ``first_order`` (a message), a backward with ``create_graph=True`` through a compiled graph
    raises SecondOrderRefused(first_order): with ``backend`` one of ``AOT_BACKENDS`` through
    every graph (``first_order_functions``), with another through a graph holding an
    ``autograd.Function`` (``holds_autograd_function``)."""

    def __init__(self, backend: str | Callable = "inductor", mode: str | None = None,
                 dynamic: bool | None = None, report: Report | None = None,
                 dump: Dump | None = None, hoist: bool = True, reroll: bool = True,
                 fallback: bool = False, explain: bool = False, first_order: str | None = None):
        self.backend, self.mode, self.dynamic = backend, mode, dynamic
        self.first_order = first_order
        self.report, self.dump, self.fallback, self.explain = report, dump, fallback, explain
        skipped = {hoist_target_subgraph: not hoist, reroll_unrolled_loops: not reroll}
        self.passes = [p for p in FX_PIPELINE if not skipped.get(p)]
        self._warned = False
        self._skipped_before = set(_skipped_loops())  # not this backend's business
        self.__name__ = "optimize_loss"  # what torch.compile and Dynamo's logs call it

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[Any], **kwargs: Any) -> Callable:
        if self.first_order is None:
            return self._compile_or_fall_back(gm, example_inputs, **kwargs)
        if not first_order_supported(self.backend):
            held = holds_autograd_function(gm)  # before the passes split the graph
            compiled = self._compile_or_fall_back(gm, example_inputs, **kwargs)
            return first_order_only(compiled, self.first_order) if held else compiled
        with first_order_functions(self.first_order):
            return self._compile_or_fall_back(gm, example_inputs, **kwargs)

    def _compile_or_fall_back(self, gm: torch.fx.GraphModule, example_inputs: list[Any],
                              **kwargs: Any) -> Callable:
        inner = _inner(self.backend, kwargs.get("mode", self.mode), self.dynamic)
        if not self.fallback:
            return self._compile(gm, example_inputs, inner)
        # The passes change gm's graph in place: keep a copy (nodes and meta dicts, not tensors).
        unmodified = torch.fx.GraphModule(gm, copy.deepcopy(gm.graph))
        unmodified.meta.update(gm.meta)
        try:
            return self._compile(gm, example_inputs, inner)
        except _DYNAMO_SIGNALS:
            raise
        except Exception as exc:
            self._warn(f"optimize_loss backend failed ({type(exc).__name__}: {exc}); "
                       f"compiling the unmodified graph with {self.backend!r}")
            return inner(unmodified, example_inputs)

    def _compile(self, gm: torch.fx.GraphModule, example_inputs: list[Any], inner: Callable) -> Callable:
        self._tell_skipped_loops()
        filename = self.report.filename if self.report else "<dynamo graph>"
        gm = run_fx_pipeline(gm, filename, [], self.dump, passes=self.passes)
        if self.report is not None:
            for p in self.passes:
                if pass_name(p) not in self.report.passes_run:
                    self.report.passes_run.append(pass_name(p))
            hoist.record(self.report, gm)
        notes = reroll_notes(gm, self.explain) if reroll_unrolled_loops in self.passes else []
        for note in notes:
            if self.report is not None and note not in self.report.notes:
                self.report.notes.append(note)
            if self.explain and note.startswith("not re-rolled") and note not in _told:
                _told.add(note)
                log.log(logging.INFO if any(q in note for q in _NO_MISSED_LOOP) else logging.WARNING, note)
        if not hasattr(gm, "target_transform"):
            return inner(gm, example_inputs)
        return hoist.HoistedCall(gm, inner(gm.core, hoist.core_example_inputs(gm, example_inputs)))

    def _tell_skipped_loops(self) -> None:
        """Functions Dynamo skipped since this backend was made: most likely its own caller's."""
        # under the decorator (no fallback: its own applies) the loss is decorated already:
        # such a loop is one it kept, and its report says why
        advice = ("decorate the loss with @optimize_loss, which vectorizes such loops before "
                  "Dynamo runs") if self.fallback else \
            "the rewrite kept that loop as written (its report's loops say why)"
        for frame in _skipped_loops():
            if frame not in self._skipped_before:
                note = (f"Dynamo ran {frame} eagerly: a graph break inside a loop (.item(), "
                        "print, data-dependent control flow) skips the whole function, so no "
                        f"backend sees that loop and it cannot be re-rolled; {advice}")
                if self.report is not None and note not in self.report.notes:
                    self.report.notes.append(note)
                if frame not in _told_skipped:
                    _told_skipped.add(frame)
                    log.warning(note)

    def _warn(self, message: str) -> None:
        if self.report is not None:
            self.report.notes.append(message)
        if not self._warned:
            self._warned = True
            log.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)


def _skipped_loops() -> list[str]:
    """``"fn (file line n)"`` of every function Dynamo skipped, so far, for a graph break inside
    a loop."""
    return [frame for message in list(torch._dynamo.utils.counters["unimplemented"])
            for frame in _SKIPPED_LOOP.findall(message)]


def backend(inner: str | Callable = "inductor", hoist: bool = True, reroll: bool = True,
            mode: str | None = None, dynamic: bool | None = None,
            report: Report | None = None) -> HoistingBackend:
    """A backend for ``torch.compile(fn, backend=rewrite.backend(...))``: unrolled loops
    re-rolled (``reroll``), target-only work hoisted and cached (``hoist``), the rest compiled
    by ``inner`` (a backend name or callable; ``mode`` and ``dynamic`` as for
    ``torch.compile``). ``report`` collects what the passes did. Never raises: see the module
    docstring."""
    return HoistingBackend(inner, mode, dynamic, report, hoist=hoist, reroll=reroll, fallback=True,
                           explain=True)


def reroll_notes(gm: torch.fx.GraphModule, graph_note: bool = False) -> list[str]:
    """One note per loop ``reroll_unrolled_loops`` re-rolled or left alone, with the line; with
    ``graph_note``, also why a graph without any candidate loop was left alone."""
    graphs = [gm.graph] + [m.graph for m in gm.children() if isinstance(m, torch.fx.GraphModule)]
    nodes = [n for graph in graphs for n in graph.nodes]
    notes = []
    for node in nodes:
        for key, verb in ((REROLLED, "re-rolled"), (NOT_REROLLED_BECAUSE, "not re-rolled")):
            if key in node.meta:
                notes.append(f"{verb}: {hoist._where(node)} ({node.name}): {node.meta[key]}")
    if graph_note and NOT_REROLLED_BECAUSE in gm.meta:
        first = next((n for n in nodes if n.meta.get(USER_LOCATION)), None)
        where = f"from {hoist._where(first)}" if first else "without a known line"
        notes.append(f"not re-rolled, the graph {where}: {gm.meta[NOT_REROLLED_BECAUSE]}")
    return list(dict.fromkeys(notes))


class SecondOrderRefused(RuntimeError):
    """A backward with ``create_graph=True`` reached a compiled graph, whose backward is not
    differentiable: at any size (a loss that takes a gradient penalty with ``autograd.grad(...,
    create_graph=True)`` in its own body meets it at every call)."""


def first_order_supported(backend: str | Callable) -> bool:
    """``HoistingBackend(backend, first_order=...)`` refuses every create_graph backward through
    what it compiles (this torch builds AOTAutograd's Functions where it can be told)."""
    return _FUNCTION_FACTORY is not None and isinstance(backend, str) and backend in AOT_BACKENDS


def holds_autograd_function(gm: torch.fx.GraphModule) -> bool:
    """Whether ``gm`` calls an ``autograd.Function`` (the rewrite's ``set_distances``,
    ``loop_products``, ..., or the user's): Dynamo's form of it (``autograd_function_apply``)
    saves what its forward computed detached, so a backward with ``create_graph=True`` gives no
    second derivative through it, without a word, even with the eager backend."""
    return any(n.op == "call_function" and n.target is _AUTOGRAD_FUNCTION_APPLY
               for m in gm.modules() if isinstance(m, torch.fx.GraphModule)
               for n in m.graph.nodes)


def first_order_only(compiled: Callable, message: str) -> Callable:
    """``compiled``, whose outputs refuse a backward with ``create_graph=True``
    (SecondOrderRefused(message)): a hook on each output's grad_fn, on every call."""
    def refuse_create_graph(grad_outputs: tuple) -> None:
        if torch.is_grad_enabled():  # the engine runs a create_graph=True backward in grad mode
            raise SecondOrderRefused(message)

    def call(*args: Any, **kwargs: Any) -> Any:
        out = compiled(*args, **kwargs)
        for t in (out,) if isinstance(out, torch.Tensor) else tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                t.grad_fn.register_prehook(refuse_create_graph)
        return out
    return call


def eager_first_order(message: str) -> Callable:
    """The ``"eager"`` backend, whose graphs holding an ``autograd.Function`` refuse a
    create_graph backward (``holds_autograd_function``): for ``hoist=False``, which has no
    ``HoistingBackend``."""
    def compile_graph(gm: torch.fx.GraphModule, example_inputs: list[Any], **kwargs: Any) -> Callable:
        compiled = _inner("eager", None, None)(gm, example_inputs, **kwargs)
        return first_order_only(compiled, message) if holds_autograd_function(gm) else compiled
    return compile_graph


@contextlib.contextmanager
def first_order_functions(message: str) -> Any:
    """While compiling: every ``autograd.Function`` AOTAutograd builds for a graph raises
    SecondOrderRefused(message) in a backward with ``create_graph=True`` (the engine runs such a
    backward in grad mode, where AOTAutograd calls the class's ``_double_backward``, whose own
    Function would give a second derivative of None or raise only when reached). Per compiled
    graph, once: no hook on every call's outputs. A backward that never reaches a compiled
    graph is the eager one, and right. Dynamo compiles one graph at a time (its compile lock),
    so the factory is patched only for this backend's graphs."""
    def refuse(ctx: Any, impl_fn: Callable, all_args: list) -> None:
        raise SecondOrderRefused(message)

    build = _FUNCTION_FACTORY.build

    def build_refusing(factory: Any) -> type:
        function = build(factory)
        function._double_backward = staticmethod(refuse)
        return function
    _FUNCTION_FACTORY.build = build_refusing
    try:
        yield
    finally:
        _FUNCTION_FACTORY.build = build


def _inner(backend: str | Callable, mode: str | None, dynamic: bool | None) -> Callable:
    """The compiler ``torch.compile(backend=backend, mode=mode, dynamic=dynamic)`` would use."""
    if backend == "inductor":
        return torch._TorchCompileInductorWrapper(mode, None, dynamic)
    return torch._TorchCompileWrapper(backend, mode, None, dynamic)


_DEFAULT = backend()


def optimize_loss_backend(gm: torch.fx.GraphModule, example_inputs: list[Any], **kwargs: Any) -> Callable:
    """The ``torch_dynamo_backends`` entry point ``"optimize_loss"``: ``backend()``."""
    return _DEFAULT(gm, example_inputs, **kwargs)
