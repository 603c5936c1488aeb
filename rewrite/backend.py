"""``torch.compile(fn, backend="optimize_loss")``: the FX passes on Dynamo's graph, target-only
work hoisted and cached, the rest compiled by Inductor.

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
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from passes.pipeline import Dump, pass_name, FX_PIPELINE, run_fx_pipeline

from . import hoist
from passes.report import Report


class HoistingBackend:
    """A Dynamo backend: ``FX_PIPELINE``, then ``backend`` (name or callable, with ``mode`` and
    ``dynamic`` as for ``torch.compile``) on the core graph. ``report`` and ``dump`` (the
    decorator's) receive what the passes did and the graph after every pass."""

    def __init__(self, backend: str | Callable = "inductor", mode: str | None = None,
                 dynamic: bool | None = None, report: Report | None = None,
                 dump: Dump | None = None):
        self.backend, self.mode, self.dynamic = backend, mode, dynamic
        self.report, self.dump = report, dump
        self.__name__ = "optimize_loss"  # what torch.compile and Dynamo's logs call it

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[Any], **kwargs: Any) -> Callable:
        inner = _inner(self.backend, kwargs.get("mode", self.mode), self.dynamic)
        filename = self.report.filename if self.report else "<dynamo graph>"
        gm = run_fx_pipeline(gm, filename, [], self.dump)
        if self.report is not None:
            for p in FX_PIPELINE:
                if pass_name(p) not in self.report.passes_run:
                    self.report.passes_run.append(pass_name(p))
            hoist.record(self.report, gm)
        if not hasattr(gm, "target_transform"):
            return inner(gm, example_inputs)
        return hoist.HoistedCall(gm, inner(gm.core, hoist.core_example_inputs(gm, example_inputs)))


def _inner(backend: str | Callable, mode: str | None, dynamic: bool | None) -> Callable:
    """The compiler ``torch.compile(backend=backend, mode=mode, dynamic=dynamic)`` would use."""
    if backend == "inductor":
        return torch._TorchCompileInductorWrapper(mode, None, dynamic)
    return torch._TorchCompileWrapper(backend, mode, None, dynamic)


def optimize_loss_backend(gm: torch.fx.GraphModule, example_inputs: list[Any], **kwargs: Any) -> Callable:
    return HoistingBackend()(gm, example_inputs, **kwargs)
