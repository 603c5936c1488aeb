"""Classify every node of an FX graph: on the gradient path, or target-only.

An analysis pass: the graph is not changed, each node gets facts in ``node.meta``:

* ``GRAD_DEPENDENCE``: ``"grad"`` when the node's value depends on an input that requires grad
  (a parameter, or a tensor with ``requires_grad``), ``"target"`` when it depends only on inputs
  that do not and on constants. In::

      def loss(pred, target):
          mask = target > 0                     # target
          soft = pred.detach().argmax(1)        # grad: depends on pred, even though detached
          zeros = pred.new_zeros(3)             # target: reads only pred's dtype and device
          return ((pred - target)[mask] ** 2).mean()   # grad

  A node reading an input only for its metadata (``op_facts.METADATA_ONLY``) does not depend on
  it; a factory called with ``requires_grad=True`` starts a gradient path.
* ``REQUIRES_GRAD`` on placeholders and ``get_attr`` tensors. For Dynamo graphs it is read from
  the ``"example_value"`` fake tensor; for ``symbolic_trace`` graphs the caller sets it from the
  real inputs. A placeholder with neither is assumed to require grad: never hoist what might.
* ``USER_LOCATION``: ``"file:line"`` of the user's code that made the node, from its stack trace.

``modified`` is True when any of these facts changed, so a second run reports False.
"""
from __future__ import annotations

import os
import re

import torch
import torch.fx
from torch.fx.passes.infra.pass_base import PassResult

from . import op_facts
from .meta_keys import GRAD_DEPENDENCE, REQUIRES_GRAD, USER_LOCATION

# Frames in these directories are library code, not the user's: torch's and this package's (the
# generated code's helpers, ``chunked_maps``' vmap: their ops are the user's line's that calls them).
LIBRARY_DIRS = tuple(d + os.sep for d in (
    os.path.dirname(torch.__file__), os.path.dirname(__file__),
    os.path.join(os.path.dirname(os.path.dirname(__file__)), "rewrite")))
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def run(gm: torch.fx.GraphModule) -> PassResult:
    modified = False
    grad: set[torch.fx.Node] = set()
    for node in gm.graph.nodes:
        facts = {}
        if node.op in ("placeholder", "get_attr"):
            facts[REQUIRES_GRAD] = _requires_grad(gm, node)
            depends = facts[REQUIRES_GRAD]
        else:
            depends = op_facts.creates_grad(node) or any(
                i in grad and not op_facts.reads_only_metadata(node, i) for i in node.all_input_nodes)
        if depends:
            grad.add(node)
        facts[GRAD_DEPENDENCE] = "grad" if depends else "target"
        location = user_location(node.meta.get("stack_trace"))
        if location:
            facts[USER_LOCATION] = location
        for key, value in facts.items():
            if node.meta.get(key, not value) != value:
                node.meta[key] = value
                modified = True
    return PassResult(gm, modified)


def _requires_grad(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    if node.op == "get_attr":
        value = gm
        for part in node.target.split("."):
            value = getattr(value, part)
        return isinstance(value, torch.Tensor) and value.requires_grad
    if REQUIRES_GRAD in node.meta:
        return node.meta[REQUIRES_GRAD]
    example = node.meta.get("example_value", node.meta.get("val"))
    if example is None:
        return True
    return isinstance(example, torch.Tensor) and example.requires_grad


def user_location(stack_trace: str | None) -> str | None:
    """The innermost frame of ``stack_trace`` outside torch, as ``"file:line"``."""
    if not stack_trace:
        return None
    frames = [(f, line) for f, line in _FRAME.findall(stack_trace) if not f.startswith(LIBRARY_DIRS)]
    return f"{frames[-1][0]}:{frames[-1][1]}" if frames else None
