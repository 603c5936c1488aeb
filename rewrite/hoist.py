"""Target-only hoisting at run time: the cache and the cached call.

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

The same split, done once and offline, is ``rewrite.split`` (``rewrite/offline_split.py``).
"""
from __future__ import annotations

import linecache
import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable, Sequence

import torch
import torch.fx
from torch.utils._pytree import tree_map

from passes import op_facts
from passes.meta_keys import GRAD_DEPENDENCE, HOISTED, NOT_HOISTED_BECAUSE, USER_LOCATION

from passes.report import Report

# Entries per cached call: a fixed style target or class-weight vector needs one; a few more
# cover alternating targets (train/validation); fresh targets every call are evicted as they die.
CACHE_SIZE = 8


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
        plan = Plan(split_gm)
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
    plan = Plan(split_gm)
    full = list(example_inputs) + plan.constants
    hoisted = [n.meta["example_value"] for n in split_gm.core.graph.nodes
               if n.op == "placeholder"][len(plan.core_inputs):]
    return [full[i] for i in plan.core_inputs] + hoisted


class Plan:
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
