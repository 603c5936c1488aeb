"""Split the target-only part of a loss graph into its own submodule, to run it outside autograd
and cache it (``rewrite.hoist`` does both). Needs ``annotate_grad_dependence`` first.

This graph, where part of the work only reads inputs that do not require grad::

    def forward(self, pred, target, class_weights):
        w = class_weights / class_weights.sum()        # target-only
        onehot = one_hot(target, 5).float()            # target-only
        return -(w[target] * (onehot * pred.log_softmax(1)).sum(1)).mean()

is converted to a graph module with two graph-module children, called in order::

    def forward(self, pred, target, class_weights):
        target_transform = self.target_transform(target, class_weights)
        getitem, getitem_1 = target_transform[0], target_transform[1]
        return self.core(pred, target, getitem, getitem_1)

``target_transform(<its inputs>) -> tuple`` returns the hoisted values ``core`` reads;
``core(<inputs it reads>, <hoisted values>)`` is the rest, with the original output. Inputs
(placeholders, then ``get_attr`` tensors) keep their order in both.

A node is hoisted (``node.meta[HOISTED]``) when it is target-only and none of these holds (the
reason goes to ``node.meta[NOT_HOISTED_BECAUSE]``):

* the graph changes a tensor in place anywhere: moving reads across the write could change what
  they see, so nothing is hoisted;
* the op is random, reads uninitialised memory, changes global state, belongs to a torch.func
  transform or reads running statistics its train-mode kernel writes without a version bump
  (batch_norm in eval mode: a train-mode call in between goes unseen by the cache; ``op_facts``
  tables);
* the node has no users: it runs for its side effect (an assert, a grad-mode switch);
* it is a ``get_attr`` of a module: a higher-order op's subgraph (an autograd.Function's
  forward and backward), code that stays with the op calling it (``core`` gets its own copy);
* it reads a node that is not hoisted;
* it is not a tensor but ``core`` would need it: only tensors cross (a Python number would be
  baked into the compiled core and force a recompile whenever it changes).

What ``core`` reads that is made only of cheap ops (``op_facts.RECOMPUTED``: comparisons,
logic, ``where``, views, one-hot, ``+``, ``-``, ``*``) from graph inputs is recomputed in
``core`` instead of cached: with ``mask = target > 0``, ``core`` computes ``target > 0`` itself
and a compiler fuses it into the kernel that reads ``target`` anyway (``1 - onehot`` likewise). ``target_transform`` still computes the mask when a cached
value needs it (``mask.sum()``).

Nothing changes (``modified=False``) when no hoisted value reaches ``core``, or when the graph
module already has a ``target_transform`` (the pass ran).
"""
from __future__ import annotations

import operator

import torch
import torch.fx
from torch.fx.passes.infra.pass_base import PassResult

from . import op_facts
from .meta_keys import GRAD_DEPENDENCE, HOISTED, NOT_HOISTED_BECAUSE, USER_LOCATION

# Reason a target-only node stays in core, by op table.
_REFUSED = (
    (op_facts.RANDOM, "random op: a cached value would repeat one sample"),
    (op_facts.UNINITIALIZED, "uninitialised memory"),
    (op_facts.GLOBAL_STATE, "changes global state (grad mode, autocast, RNG)"),
    (op_facts.FUNCTORCH, "part of a torch.func transform (vmap, grad): only valid inside it"),
    (op_facts.UNVERSIONED, "reads or writes running statistics, which batch_norm's kernel "
                           "updates without moving the version counter the cache keys on"),
)


def run(gm: torch.fx.GraphModule) -> PassResult:
    if hasattr(gm, "target_transform"):
        return PassResult(gm, False)
    inputs = [n for n in gm.graph.nodes if _is_input(gm, n)]
    nodes = [n for n in gm.graph.nodes if n not in inputs and n.op != "output"]
    blocked = _first_mutation(nodes)
    reasons = {n: _refusal(n, blocked) for n in nodes}
    hoisted = {n for n, reason in reasons.items()
               if reason is None and n.meta[GRAD_DEPENDENCE] == "target"}
    _shrink(nodes, set(inputs), hoisted, reasons)
    cheap = _cheap(nodes, set(inputs), hoisted)
    read = [n for n in nodes if n in hoisted and any(u not in hoisted for u in n.users)]
    recomputed = _ancestors([n for n in read if n in cheap], cheap)
    boundary = [n for n in read if n not in cheap]
    hoisted = _ancestors(boundary, hoisted)  # without what only the core reads, recomputed
    for n in recomputed - hoisted:
        reasons[n] = "cheaper to recompute in the core (fused there) than to cache"
    for n in gm.graph.nodes:
        n.meta[HOISTED] = n in hoisted
        if reasons.get(n):
            n.meta[NOT_HOISTED_BECAUSE] = reasons[n]
    if not boundary:
        return PassResult(gm, False)
    return PassResult(_split(gm, inputs, hoisted, boundary, recomputed), True)


def _is_input(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    """A placeholder, or a ``get_attr`` of a tensor. A ``get_attr`` of a module is a higher-order
    op's subgraph (an autograd.Function's forward and backward, a ``cond``'s branches): part of
    the code, copied into the graph that calls the op, never passed in as a value."""
    return node.op == "placeholder" or (
        node.op == "get_attr" and not isinstance(_attr(gm, node.target), torch.nn.Module))


def _first_mutation(nodes: list[torch.fx.Node]) -> torch.fx.Node | None:
    return next((n for n in nodes if op_facts.is_mutating(n)), None)


def _refusal(node: torch.fx.Node, blocked: torch.fx.Node | None) -> str | None:
    """Why a target-only ``node`` may not be hoisted on its own merits, or None."""
    if node.meta.get(GRAD_DEPENDENCE) != "target":
        return None if node.meta.get(GRAD_DEPENDENCE) == "grad" else "not classified"
    if blocked is not None:
        where = blocked.meta.get(USER_LOCATION, "")
        return f"the function changes a tensor in place ({op_facts.op_name(blocked)}" + (
            f" at {where})" if where else ")")
    if node.op == "call_module":
        return "module call: its contents are unknown"
    if node.op == "get_attr":
        return "a higher-order op's subgraph: code, not a value"
    name = op_facts.op_name(node)
    for table, reason in _REFUSED:
        if name in table:
            return reason
    if not node.users:
        return "no users: it runs for a side effect"
    return None


def _shrink(nodes: list[torch.fx.Node], inputs: set[torch.fx.Node], hoisted: set[torch.fx.Node],
            reasons: dict) -> None:
    """Drop whatever reads a node left in core or hands core a non-tensor, until nothing changes
    (unhoisting a non-tensor makes its inputs cross instead)."""
    changed = True
    while changed:
        changed = False
        for n in nodes:
            if n not in hoisted:
                continue
            reader = next((i for i in n.all_input_nodes if i not in inputs and i not in hoisted), None)
            if reader is not None:
                reasons[n] = f"reads {reader.name}, which is not hoisted"
            elif any(u not in hoisted for u in n.users) and not _is_tensor(n):
                reasons[n] = "not a tensor, and the core graph needs it"
            else:
                continue
            hoisted.discard(n)
            changed = True


def _cheap(nodes: list[torch.fx.Node], inputs: set[torch.fx.Node],
           hoisted: set[torch.fx.Node]) -> set[torch.fx.Node]:
    """Hoisted tensors made by ``op_facts.RECOMPUTED`` ops from graph inputs and each other."""
    cheap: set[torch.fx.Node] = set()
    for n in nodes:  # in graph order: a node's inputs come first
        if n in hoisted and op_facts.op_name(n) in op_facts.RECOMPUTED and _is_tensor(n) and all(
                i in inputs or i in cheap for i in n.all_input_nodes):
            cheap.add(n)
    return cheap


def _ancestors(roots: list[torch.fx.Node], within: set[torch.fx.Node]) -> set[torch.fx.Node]:
    """``roots`` and the nodes of ``within`` they are computed from."""
    found, todo = set(), list(roots)
    while todo:
        n = todo.pop()
        if n not in found:
            found.add(n)
            todo += [i for i in n.all_input_nodes if i in within]
    return found


def _is_tensor(node: torch.fx.Node) -> bool:
    """From Dynamo's fake ``example_value``, or ShapeProp's ``type``; unknown counts as not."""
    for key in ("example_value", "val"):
        if key in node.meta:
            return isinstance(node.meta[key], torch.Tensor)
    kind = node.meta.get("type")
    return isinstance(kind, type) and issubclass(kind, torch.Tensor)


def _split(gm: torch.fx.GraphModule, inputs: list[torch.fx.Node], hoisted: set[torch.fx.Node],
           boundary: list[torch.fx.Node], recomputed: set[torch.fx.Node]) -> torch.fx.GraphModule:
    # The core: the recomputed nodes (of inputs only, so they can go first), then the rest.
    elsewhere = hoisted | recomputed
    rest = [n for n in gm.graph.nodes if n in recomputed] + [
        n for n in gm.graph.nodes if n not in inputs and n not in elsewhere]
    transform, transform_inputs = _subgraph(inputs, [n for n in gm.graph.nodes if n in hoisted],
                                            boundary, [])
    core, core_inputs = _subgraph(inputs, rest, None, boundary)

    top = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    for n in inputs:
        env[n] = top.node_copy(n) if n.op == "placeholder" else top.get_attr(n.target)
    call = top.call_module("target_transform", tuple(env[n] for n in transform_inputs))
    values = [top.call_function(operator.getitem, (call, i)) for i in range(len(boundary))]
    out = top.call_module("core", tuple(env[n] for n in core_inputs) + tuple(values))
    top.output(out)
    attrs = {n.target: _attr(gm, n.target) for n in inputs if n.op == "get_attr"}
    split = torch.fx.GraphModule({**attrs, "target_transform": torch.fx.GraphModule(gm, transform),
                                  "core": torch.fx.GraphModule(gm, core)}, top)
    split.meta.update(gm.meta)
    return split


def _subgraph(inputs: list[torch.fx.Node], body: list[torch.fx.Node],
              outputs: list[torch.fx.Node] | None,
              extra_inputs: list[torch.fx.Node]) -> tuple[torch.fx.Graph, list[torch.fx.Node]]:
    """A graph of ``body`` whose placeholders are the ``inputs`` it reads, then ``extra_inputs``;
    it returns ``outputs`` as a tuple, or ends with ``body``'s own output node."""
    members = set(body)
    used = [n for n in inputs if any(u in members for u in n.users)]
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    for n in used + extra_inputs:
        env[n] = graph.placeholder(n.name)
        env[n].meta = dict(n.meta)
    for n in body:
        env[n] = graph.node_copy(n, env.__getitem__)
    if outputs is not None:
        graph.output(tuple(env[n] for n in outputs))
    return graph, used


def _attr(gm: torch.nn.Module, target: str):
    for part in target.split("."):
        gm = getattr(gm, part)
    return gm
