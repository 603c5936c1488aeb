"""Target-only hoisting at run time: the cache, the cached call, and ``split``.

``passes/hoist_target_subgraph.py`` splits a loss graph into ``target_transform`` (the work that
reads only inputs without grad: masks, one-hot and smoothed targets, class weights, a frozen
network on a style image) and ``core``. Here:

* ``HoistedCall`` runs such a split graph: ``target_transform`` under ``torch.no_grad()``, through
  a ``TargetCache``, then ``core``. The Dynamo backend (``rewrite.backend``) returns one per
  compiled graph, so both ``@optimize_loss`` and ``torch.compile(fn, backend="optimize_loss")``
  cache target work across calls.
* ``TargetCache`` keys each input tensor on identity, ``_version``, data pointer, shape, stride,
  dtype and device: an in-place change (``y.add_(1)``, also through a view), a new tensor in reused
  memory, or another dtype, device or shape recomputes. It holds inputs through weak references
  (an entry goes when an input dies) and at most ``CACHE_SIZE`` entries. An input read only for
  its metadata (``pred.new_zeros(c)``) is keyed on shape, stride, dtype and device alone. A cached
  value that ``core`` or the caller changed in place is recomputed (its ``_version`` moved).
  Not seen: writes that bypass the version counter (``t.data.add_()``, numpy or DLPack views).
* ``split(fn, *example_inputs)`` traces ``fn`` once with ``torch.fx.symbolic_trace`` and returns
  ``(target_transform, core_loss)`` with ``core_loss(*grad_args, *target_transform(*target_args))
  == fn(*example_inputs)``: target preprocessing can move into a ``Dataset`` or ``collate_fn``.
  Python values (non-tensor arguments, module attributes, globals) are fixed at split time.

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
import linecache
import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable, Sequence

import torch
import torch.fx
from torch.fx.passes.shape_prop import ShapeProp
from torch.utils._pytree import tree_map

from passes import annotate_grad_dependence, hoist_target_subgraph, op_facts
from passes.meta_keys import GRAD_DEPENDENCE, HOISTED, NOT_HOISTED_BECAUSE, REQUIRES_GRAD, USER_LOCATION

from passes.errors import RewriteError
from passes.report import Report

# Entries per cached call: a fixed style target or class-weight vector needs one; a few more
# cover alternating targets (train/validation); fresh targets every call are evicted as they die.
CACHE_SIZE = 8
_FILENAME = "optimize_loss.filename"  # gm.meta key: the traced function's file, for errors


class TargetCache:
    """Outputs of a target transform, by the identity and state of its inputs."""

    def __init__(self, metadata_only: Sequence[bool], size: int = CACHE_SIZE):
        self._metadata_only = tuple(metadata_only)
        self._size = size
        self._entries: OrderedDict[tuple, tuple] = OrderedDict()  # key -> (refs, values, versions)
        self._dead: list[tuple] = []  # keys whose inputs died; dropped on the next lookup
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, inputs: Sequence[Any], compute: Callable[..., tuple]) -> tuple:
        """``compute(*inputs)``, or its cached result when no input changed since."""
        if torch.is_inference_mode_enabled() or any(
                isinstance(x, torch.Tensor) and x.is_inference() for x in inputs):
            return compute(*inputs)  # inference tensors have no version counter to key on
        key = tuple(map(_key, inputs, self._metadata_only))
        with self._lock:
            while self._dead:
                self._entries.pop(self._dead.pop(), None)
            entry = self._entries.get(key)
            if entry is not None and _still_valid(entry, inputs):
                self._entries.move_to_end(key)
                return entry[1]
        values = compute(*inputs)
        entry = (self._refs(key, inputs), values,
                 tuple(v._version if isinstance(v, torch.Tensor) else None for v in values))
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return values

    def _refs(self, key: tuple, inputs: Sequence[Any]) -> tuple:
        dead = self._dead  # not self: the callback must not keep the cache alive
        return tuple(weakref.ref(x, lambda _, key=key: dead.append(key))
                     if isinstance(x, torch.Tensor) and not meta else None
                     for x, meta in zip(inputs, self._metadata_only))


def _key(x: Any, metadata_only: bool) -> Any:
    if isinstance(x, torch.Tensor):
        if metadata_only:
            return (x.shape, x.stride(), x.dtype, x.device)
        return (id(x), x._version, x.data_ptr(), x.shape, x.stride(), x.dtype, x.device)
    return (type(x), x)  # SymInt inputs of dynamic graphs arrive as ints


def _still_valid(entry: tuple, inputs: Sequence[Any]) -> bool:
    refs, values, versions = entry
    # The same id can belong to a new tensor once the old one died.
    if any(r is not None and r() is not x for r, x in zip(refs, inputs)):
        return False
    return all(v is None or value._version == v for value, v in zip(values, versions))


class HoistedCall:
    """Calls a graph module split by ``hoist_target_subgraph`` with the graph's inputs."""

    def __init__(self, split_gm: torch.fx.GraphModule, core: Callable | None = None):
        plan = _Plan(split_gm)
        self.split_gm = split_gm
        self._plan = plan
        self._transform = split_gm.target_transform
        self._core = core or split_gm.core
        self.cache = TargetCache(plan.metadata_only)

    def __call__(self, *args: Any) -> Any:
        plan = self._plan
        full = args + plan.constants_tuple if plan.constants else args
        hoisted = self.cache.get([full[i] for i in plan.transform_inputs], self._run_transform)
        core_args = [full[i] for i in plan.core_inputs]
        core_args.extend(hoisted)
        out = self._core(*core_args)  # how Dynamo calls what a backend returns
        if plan.returns_target_values:
            # The caller gets its own tensors, never cached ones or views of them (it may write
            # into them, or keep them and expect a new tensor on the next call).
            cached = {v.untyped_storage().data_ptr() for v in hoisted}
            out = tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor)
                           and t.untyped_storage().data_ptr() in cached else t, out)
        return out

    def _run_transform(self, *inputs: Any) -> tuple:
        with torch.no_grad():
            return tuple(self._transform(*inputs))


def core_example_inputs(split_gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> list:
    """Example inputs for compiling ``split_gm.core``: the graph's own, then Dynamo's fake values
    of the hoisted tensors (symbolic sizes included)."""
    plan = _Plan(split_gm)
    full = list(example_inputs) + plan.constants
    hoisted = [n.meta["example_value"] for n in split_gm.core.graph.nodes
               if n.op == "placeholder"][len(plan.core_inputs):]
    return [full[i] for i in plan.core_inputs] + hoisted


class _Plan:
    """Where the two submodules' arguments come from, as indices into
    ``graph inputs + get_attr constants`` (read once from the split graph's top level)."""

    def __init__(self, split_gm: torch.fx.GraphModule):
        nodes = list(split_gm.graph.nodes)
        sources = [n for n in nodes if n.op == "placeholder"] + [n for n in nodes if n.op == "get_attr"]
        self.constants = [_attr(split_gm, n.target) for n in sources if n.op == "get_attr"]
        self.constants_tuple = tuple(self.constants)
        index = {n: i for i, n in enumerate(sources)}
        transform = next(n for n in nodes if n.op == "call_module" and n.target == "target_transform")
        core = next(n for n in nodes if n.op == "call_module" and n.target == "core")
        self.transform_inputs = [index[a] for a in transform.args]
        self.core_inputs = [index[a] for a in core.args if a in index]
        self.num_inputs = sum(n.op == "placeholder" for n in sources)
        transform_phs = [n for n in split_gm.target_transform.graph.nodes if n.op == "placeholder"]
        self.metadata_only = [bool(p.users) and all(op_facts.reads_only_metadata(u, p) for u in p.users)
                              for p in transform_phs]
        output = next(n for n in split_gm.core.graph.nodes if n.op == "output")
        self.returns_target_values = any(n.meta.get(GRAD_DEPENDENCE) != "grad"
                                         for n in output.all_input_nodes)


def _attr(module: torch.nn.Module, target: str) -> Any:
    for part in target.split("."):
        module = getattr(module, part)
    return module


# -- report --------------------------------------------------------------------------------------
def record(report: Report, gm: torch.fx.GraphModule) -> None:
    """Add what the FX passes decided about ``gm`` to ``report``: one ``target_only`` line per
    line of user code with hoisted nodes, one note per root cause of a target-only node kept."""
    graphs = [gm.target_transform.graph, gm.core.graph] if hasattr(gm, "target_transform") else [gm.graph]
    hoisted: dict[str, list[str]] = {}
    for graph in graphs:
        for node in graph.nodes:
            if node.op == "placeholder":
                continue
            if node.meta.get(HOISTED):
                hoisted.setdefault(_where(node), []).append(node.name)
            reason = node.meta.get(NOT_HOISTED_BECAUSE)
            # "reads x, which is not hoisted" follows from x's own reason.
            if reason and not reason.startswith("reads ") and node.meta.get(GRAD_DEPENDENCE) == "target":
                _add(report.notes, f"not hoisted: {_where(node)} ({node.name}): {reason}")
    for where, names in hoisted.items():
        _add(report.target_only, f"{where} ({', '.join(names)})")


def _where(node: torch.fx.Node) -> str:
    """``"file.py:12: mask = target > 0"``: the user's line that made ``node``, when known."""
    where = node.meta.get(USER_LOCATION)
    if not where:
        return "<unknown line>"
    filename, _, line = where.rpartition(":")
    code = linecache.getline(filename, int(line)).strip()
    return f"{where}: {code}" if code else where


def _add(lines: list[str], line: str) -> None:
    if line not in lines:
        lines.append(line)


# -- split ---------------------------------------------------------------------------------------
class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        return False  # trace into every module, so parameters appear as get_attr tensors


class _SplitHalf:
    """Shared by both halves: where each graph input comes from (argument or constant)."""

    def __init__(self, gm: torch.fx.GraphModule, grad_positions: list[int], target_positions: list[int]):
        self._plan = _Plan(gm)
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
    from .decorator import OptimizedModule
    from .runtime import OptimizedFunction, Options

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
