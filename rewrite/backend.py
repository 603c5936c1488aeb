"""``torch.compile(fn, backend="optimize_loss")``: the FX passes on Dynamo's graph, then Inductor.

Registered through the ``torch_dynamo_backends`` entry point. Dynamo has already turned the
bytecode into a graph, so the AST passes (loop vectorization) cannot run here: use the
``@optimize_loss`` decorator for those.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from passes.pipeline import run_fx_pipeline


def optimize_loss_backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable:
    from torch._inductor.compile_fx import compile_fx

    gm = run_fx_pipeline(gm, "<dynamo graph>", [])
    return compile_fx(gm, example_inputs)
