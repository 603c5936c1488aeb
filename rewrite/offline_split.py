"""``split(fn, *example_inputs)``: target preprocessing split off a loss, once and offline.

``split`` traces ``fn`` once with ``torch.fx.symbolic_trace`` and returns
``(target_transform, core_loss)`` with ``core_loss(*grad_args, *target_transform(*target_args))
== fn(*example_inputs)``: target preprocessing can move into a ``Dataset`` or ``collate_fn``.
Python values (non-tensor arguments, module attributes, globals) are fixed at split time. The
graph is split by ``passes/hoist_target_subgraph.py``, as the runtime's hoisting is
(``rewrite.hoist``).

Benchmark baseline "an expert precomputes the target branch by hand"::

    target_transform, core = rewrite.split(naive, *inputs)
    grad_args = [a for a in inputs if isinstance(a, torch.Tensor) and a.requires_grad]
    target_args = [a for a in inputs if isinstance(a, torch.Tensor) and not a.requires_grad]
    fixed = target_transform(*target_args)            # once, outside the timed loop
    step = lambda: core(*grad_args, *fixed).backward()  # timed: only the gradient path runs
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Sequence

import torch
import torch.fx
from torch.fx.passes.shape_prop import ShapeProp

from passes import annotate_grad_dependence, hoist_target_subgraph
from passes.errors import RewriteError
from passes.meta_keys import GRAD_DEPENDENCE, NOT_HOISTED_BECAUSE, REQUIRES_GRAD

from .decorator import OptimizedModule
from .hoist import Plan
from .runtime import OptimizedFunction, Options

_FILENAME = "optimize_loss.filename"  # gm.meta key: the traced function's file, for errors


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        return False  # trace into every module, so parameters appear as get_attr tensors


class _SplitHalf:
    """Shared by both halves: where each graph input comes from (argument or constant)."""

    def __init__(self, gm: torch.fx.GraphModule, grad_positions: list[int], target_positions: list[int]):
        self._plan = Plan(gm)
        self._grad_positions = grad_positions      # graph input index of each grad argument
        self._target_positions = target_positions  # graph input index of each target argument

    def _inputs(self, positions: list[int], values: Sequence[Any]) -> list[Any]:
        full: list[Any] = [None] * self._plan.num_inputs + self._plan.constants
        for i, value in zip(positions, values, strict=True):
            full[i] = value
        return full

    def _passed(self) -> list[int]:
        """Target arguments ``core`` reads as they are: ``target_transform`` passes them on."""
        return [i for i in self._plan.core_inputs if i in self._target_positions]


class TargetTransform(_SplitHalf):
    """``target_transform(*target_args) -> tuple``: what ``core_loss`` takes after the grad args.
    Picklable, for DataLoader workers."""

    def __init__(self, gm: torch.fx.GraphModule, grad_positions: list[int], target_positions: list[int]):
        super().__init__(gm, grad_positions, target_positions)
        self._transform = gm.target_transform

    def __call__(self, *target_args: torch.Tensor) -> tuple:
        full = self._inputs(self._target_positions, target_args)
        with torch.no_grad():
            hoisted = tuple(self._transform(*[full[i] for i in self._plan.transform_inputs]))
        return tuple(full[i] for i in self._passed()) + hoisted


class CoreLoss(_SplitHalf):
    """``core_loss(*grad_args, *transformed)``: the loss on the gradient path only."""

    def __init__(self, gm: torch.fx.GraphModule, grad_positions: list[int], target_positions: list[int]):
        super().__init__(gm, grad_positions, target_positions)
        self._core = gm.core

    def __call__(self, *args: torch.Tensor) -> Any:
        n_grad, passed = len(self._grad_positions), self._passed()
        full = self._inputs(self._grad_positions + passed, args[:n_grad + len(passed)])
        return self._core(*[full[i] for i in self._plan.core_inputs], *args[n_grad + len(passed):])


def split(fn: Callable, *example_inputs: Any) -> tuple[TargetTransform, CoreLoss]:
    """Split ``fn`` into ``(target_transform, core_loss)`` such that
    ``core_loss(*grad_args, *target_transform(*target_args)) == fn(*example_inputs)``, where
    ``grad_args`` are the tensor arguments that require grad and ``target_args`` the other tensor
    arguments, each in argument order. Non-tensor arguments are fixed to their example values.

    ``fn`` is a loss function or ``nn.Module`` (optimized or not); the AST rewrite runs first. Raises
    ``RewriteError`` when ``fn`` cannot be traced or has no target-only work to split off.
    """
    gm = trace(fn, *example_inputs)
    filename = gm.meta[_FILENAME]
    # Not the FX_PIPELINE: target_transform gets the target arguments only, so whatever reads a
    # grad argument at all, even just its shape, stays in core_loss.
    annotate_grad_dependence.run(gm)
    for node in gm.graph.nodes:
        if node.op != "placeholder" and any(i.meta[GRAD_DEPENDENCE] == "grad" for i in node.all_input_nodes):
            node.meta[GRAD_DEPENDENCE] = "grad"
    gm = hoist_target_subgraph.run(gm).graph_module
    if not hasattr(gm, "target_transform"):
        reasons = sorted({n.meta[NOT_HOISTED_BECAUSE] for n in gm.graph.nodes
                          if NOT_HOISTED_BECAUSE in n.meta and not n.meta[NOT_HOISTED_BECAUSE].startswith("reads ")})
        raise RewriteError("nothing to split off: no tensor work reads only the target arguments"
                           + (f" ({'; '.join(reasons)})" if reasons else ""), filename)
    tensors = [a for a in example_inputs if isinstance(a, torch.Tensor)]
    grad = [i for i, t in enumerate(tensors) if t.requires_grad]
    target = [i for i, t in enumerate(tensors) if not t.requires_grad]
    return TargetTransform(gm, grad, target), CoreLoss(gm, grad, target)


def trace(fn: Callable, *example_inputs: Any) -> torch.fx.GraphModule:
    """``fn`` (AST-rewritten when possible) traced with ``torch.fx`` on ``example_inputs``, ready
    for the FX passes: tensor arguments are placeholders with ``REQUIRES_GRAD`` set, other
    arguments are fixed, module parameters and buffers are ``get_attr`` nodes, every node has
    its stack trace and ShapeProp's value ``type``. Raises ``RewriteError`` (with the user's
    file:line) when ``fn`` cannot be traced."""
    call, module, names, filename = _rewritten(fn)
    gm = _trace(call, module, names, example_inputs, filename)
    gm.meta[_FILENAME] = filename
    tensors = [a for a in example_inputs if isinstance(a, torch.Tensor)]
    for ph, t in zip((n for n in gm.graph.nodes if n.op == "placeholder"), tensors):
        ph.meta[REQUIRES_GRAD] = t.requires_grad
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        ShapeProp(gm).propagate(*tensors)  # value types: only tensors cross between the halves
    return gm


def _rewritten(fn: Callable) -> tuple[Callable, torch.nn.Module | None, list[str], str]:
    """The callable to trace (AST-rewritten when possible), the module it is bound to, its
    argument names and its file."""
    module = None
    if isinstance(fn, OptimizedModule):
        module, opt = fn.module, fn._forward
    elif isinstance(fn, torch.nn.Module):
        module, opt = fn, OptimizedFunction(type(fn).forward, Options(compile=False))
    elif isinstance(fn, OptimizedFunction):
        opt = fn
    else:
        opt = OptimizedFunction(fn, Options(compile=False))
    call = opt.rewritten_function()
    names = list(inspect.signature(opt._original).parameters)
    if module is not None:
        call = functools.partial(call, module)
        names = names[1:]
    return call, module, names, opt.report.filename


def _trace(call: Callable, module: torch.nn.Module | None, names: list[str], example_inputs: tuple,
           filename: str) -> torch.fx.GraphModule:
    """Trace ``call(*example_inputs)`` with the tensors as placeholders (named after ``call``'s
    parameters) and everything else fixed to its example value."""
    names = [n if i < len(names) and n.isidentifier() else f"arg{i}"
             for i, n in enumerate(names + [""] * (len(example_inputs) - len(names)))][:len(example_inputs)]
    params = [n for n, a in zip(names, example_inputs) if isinstance(a, torch.Tensor)]
    passed = [n if isinstance(a, torch.Tensor) else f"__fixed[{i}]" for i, (n, a) in enumerate(zip(names, example_inputs))]
    # FX names placeholders after the traced function's parameters, and records stack traces
    # below a frame named "forward": hence a generated forward with the user's parameter names.
    namespace = {"__call": call, "__fixed": example_inputs}
    exec(compile(f"def forward(self, {', '.join(params)}):\n    return __call({', '.join(passed)})",
                 "<optimize_loss split>", "exec"), namespace)
    root = type("SplitRoot", (torch.nn.Module,), {"forward": namespace["forward"]})()
    if module is not None:
        root.add_module("loss", module)  # its parameters and buffers become get_attr nodes
    tracer = _Tracer()
    tracer.record_stack_traces = True
    rng = torch.random.get_rng_state()
    with torch.random.fork_rng(devices=[]):
        try:
            graph = tracer.trace(root)
        except Exception as exc:
            raise RewriteError(f"cannot trace with torch.fx: {type(exc).__name__}: {exc}",
                               *_user_frame(exc, filename)) from exc
        drew = not torch.equal(torch.random.get_rng_state(), rng)
    if drew:  # a random op ran with constant arguments: its sample would be frozen in the graph
        raise RewriteError("random numbers drawn while tracing (a random op on constant arguments)", filename)
    return torch.fx.GraphModule(tracer.root, graph)


def _user_frame(exc: BaseException, filename: str) -> tuple[str, int | None]:
    """The innermost traceback frame in the user's file: where tracing failed."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return filename, line
