"""Re-roll the loops Dynamo unrolled: N >= ``MIN_COPIES`` isomorphic copies of one subgraph, each
reading ``x[i]`` with its own constant ``i``, combined by an add/subtract chain or a
``stack``/``cat``, become one ``torch.vmap`` over a single copy.

Dynamo runs a Python loop while tracing, so ``for i in range(B): loss += ((pred[i] -
target[i]) ** 2).mean()`` reaches a backend as B copies::

    getitem = pred[0]; getitem_1 = target[0]; sub = getitem - getitem_1; ...; loss = 0 + mean
    getitem_2 = pred[1]; ...;                                               loss += mean_1
    ...                                                                     loss_14 += mean_15

which this pass turns into::

    rerolled_loop = self.rerolled_loop(pred, target)  # vmap of one copy over dim 0 of both
    sum_1 = rerolled_loop.sum(0)
    add = 0 + sum_1

A copy is the value one term of the combination (its *output*) and every node only that value
reads, directly or not. Copies are isomorphic when, node by node in graph order, they call the
same op on the same constants, on the same nodes outside the copies or on corresponding nodes
inside, except for one integer in each *indexing* node (``x[i]``, ``x[:, c]``, ``x.select(d, i)``
on a tensor ``x`` outside the copies) and in each comparison of a tensor with an integer
(``target == c``; ``op_facts.NUMBER_OPERAND_TESTS``). Across copies (in graph order) an index
must count up, ``start + step * n`` with ``start >= 0`` and ``step >= 1``: the copies are then
``body(x[start::step] along that dim)``; a compared integer must change by a fixed step, and
comes to the body as a 0-d tensor from ``torch.arange(start, ..., step)``, which compares
exactly as the number did. The batched value is ``torch.vmap(body, in_dims=dims)(...)``, with
``body`` a graph module made from one copy (``Vmapped``). The combinations, and what replaces
them:

* an add/subtract chain ``((init + v_0) + v_1) + ... + v_N-1`` (``+``, ``+=``, ``torch.add``,
  ``-``, ``-=``, ``torch.sub``; either operand order), with numbers mixed in (``loss = loss + 1
  - dice_c``) and ``init`` optional: ``init + constant + batched.sum(0)``, with ``constant`` the
  numbers' signed sum, and ``-`` for a chain that subtracts every copy;
* ``torch.stack([v_0, ..., v_N-1], dim)``: the vmap's ``out_dims=dim``;
* ``torch.cat([v_0, ..., v_N-1], dim)``: ``out_dims=dim``, then ``flatten(dim, dim + 1)``.

Only a combination whose first copy reads an element ``x[k]`` of a tensor made outside it is a
candidate loop (``a + b + c + d`` is not). What every copy computes alike (nothing of it reads
an indexing node: ``weights / weights.sum()``) stays in the graph, computed once, and reaches
the vmap unbatched. A run of >= ``MIN_COPIES`` matching terms of a longer add chain is re-rolled
on its own; the terms that do not match stay in ``init``.

Left alone, with the reason in ``node.meta[NOT_REROLLED_BECAUSE]`` of the combining node: fewer
than ``MIN_COPIES`` copies; copies that differ in anything else (the op, a constant, an input,
the order of their nodes; also nested loops where both indices change), which the reason names
with the node; an index that does not count up from 0 or more, a compared number without a
fixed step; a chain that adds some copies and subtracts others; a copy with a
random, in-place, global-state or torch.func op (``op_facts`` tables), a call whose vmap form
(below) raises on the copy's values (eager's error functorch's batching rule would not raise:
an int32 class target), or a full
``max()``/``min()``/``median()`` (vmap's batched form gives the gradient at ties to one element,
``pred[i].max()`` splits it among them), a copy's value read outside the combination, and an add
chain that starts by writing into a tensor made before it (``loss = torch.zeros(()); loss +=
...``: re-rolled, the in-place write and its dtype would be lost) unless that tensor is an earlier
sum only the chain reads, or an in-place write of no copy between the copies (an unrolled
``target[i] *= 2`` after ``target[i]`` is read: the re-rolled copies would all read after it).
A running ``torch.maximum`` is no combination here: its gradient at
ties halves at every step of the chain, where ``amax`` would split it evenly. A graph without
any candidate loop gets ``NO_LOOP`` in ``gm.meta[NOT_REROLLED_BECAUSE]``.

The body calls the registry's ``vmap_fn`` of an op that has one (``op_facts.VMAP_FORMS``:
eager's gradient of ``binary_cross_entropy_with_logits`` at an infinite logit, eager's errors
for a class target's dtype), as a vectorized loop's body does.

The replacement node records what it re-rolled in ``node.meta[REROLLED]``. Dynamo's fake
``example_value`` of the new nodes is computed under the graph's fake mode, so later passes see
tensors as before. ``modified`` is True when a loop was re-rolled.
"""
from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
from torch.fx.passes.infra.pass_base import PassResult

from . import op_facts
from .annotate_grad_dependence import user_location
from .meta_keys import NOT_REROLLED_BECAUSE, REROLLED

MIN_COPIES = 4
# Why a graph without a candidate loop is left alone (in ``gm.meta[NOT_REROLLED_BECAUSE]``).
NO_LOOP = ("no loop found: no add/subtract chain, torch.stack or torch.cat in the graph combines "
           "two or more values that read an element x[i] of a tensor")
# Ends the reason for a chain, stack or cat of 2 to MIN_COPIES - 1 such values.
TOO_FEW = f"fewer than {MIN_COPIES} copies, too few to be a loop worth re-rolling"

# Links of an add chain, and those among them that write into their left operand.
_SUB_LINKS = frozenset({operator.sub, operator.isub, torch.sub})  # their right operand counts -1
_SUM_LINKS = frozenset({operator.add, operator.iadd, torch.add}) | _SUB_LINKS
_IN_PLACE_LINKS = frozenset({operator.iadd, operator.isub})
# Functions joining a list of copies' values: the vmap puts the copies' dim where they did.
_JOINS = {torch.stack: "stack", torch.cat: "cat", torch.concat: "cat", torch.concatenate: "cat"}
# Full reductions (no dim) whose gradient at ties vmap changes: on one tensor they split it
# evenly among the tied elements, batched they give it all to one. With a dim they batch exactly.
_TIES_SPLIT = frozenset({"max", "min", "median", "nanmedian"})
# What a copy may not contain, with the reason.
_REFUSED = (
    (op_facts.RANDOM, "a random op: under vmap each copy would not draw its own sample"),
    (op_facts.GLOBAL_STATE, "an op that changes global state"),
    (op_facts.FUNCTORCH, "part of a torch.func transform"),
)


@dataclass
class Loop:
    """N isomorphic copies and how they were combined."""
    node: torch.fx.Node                    # the combining node: its value is replaced
    kind: str                              # "sum", "stack" or "cat"
    outputs: list[torch.fx.Node]           # each copy's value, in graph order
    copies: list[list[torch.fx.Node]]      # each copy's nodes in graph order, same order
    links: list[torch.fx.Node] = field(default_factory=list)  # add chain below ``node``
    init: Any = None                       # the add chain's start value, or None
    init_sign: int = 1                     # it is added (1) or subtracted (-1)
    constant: Any = None                   # the sum of the numbers the chain adds, or None
    sign: int = 1                          # every copy is added (1), subtracted (-1), or mixed (0)
    dim: int = 0                           # the stack/cat dim
    indices: dict = field(default_factory=dict)  # ref node -> per-copy int, ref = copies[0]


class _Mismatch(Exception):
    """Copies are not isomorphic, or not re-rollable: the reason; ``nodes`` need no other try."""

    def __init__(self, reason: str, nodes: list[torch.fx.Node] = ()):
        super().__init__(reason)
        self.nodes = nodes


def run(gm: torch.fx.GraphModule) -> PassResult:
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    loops, seen, refused = [], set(), False
    for node in reversed(list(gm.graph.nodes)):
        if node in seen:
            continue
        try:
            loop = _find(node, order)
            if loop is not None:
                seen.update(loop.links, *loop.copies)
                _check(loop)
                loops.append(loop)
        except _Mismatch as exc:
            node.meta[NOT_REROLLED_BECAUSE] = str(exc)
            seen.update(exc.nodes)
            refused = True
    if not loops and not refused:
        gm.meta[NOT_REROLLED_BECAUSE] = NO_LOOP
    for loop in loops:
        _reroll(gm, loop)
    if loops:
        gm.graph.lint()
        gm.recompile()
    return PassResult(gm, bool(loops))


class Vmapped(torch.nn.Module):
    """``torch.vmap(body, in_dims, out_dims)`` as a module, so that a graph can call it."""

    def __init__(self, body: torch.fx.GraphModule, in_dims: tuple, out_dims: int):
        super().__init__()
        self.body, self.in_dims, self.out_dims = body, in_dims, out_dims

    def forward(self, *args: Any) -> torch.Tensor:
        return torch.vmap(self.body, in_dims=self.in_dims, out_dims=self.out_dims)(*args)


@dataclass
class _Index:
    """How an indexing node of the first copy reads the batch: ``dim`` of the base, from
    ``start`` by ``step``; ``rest`` is what the body still indexes (None: nothing)."""
    dim: int
    start: int
    step: int
    rest: tuple | None


@dataclass
class _Number:
    """The integer operand (argument ``slot``) of a comparison that is ``start + step * n`` in
    copy n: the body gets it as a 0-d tensor, batched from ``torch.arange``."""
    slot: int
    start: int
    step: int
    dim: int = 0


# -- finding loops -------------------------------------------------------------------------------
def _find(node: torch.fx.Node, order: dict) -> Loop | None:
    """The loop combined at ``node``; None when ``node`` combines no values that read x[i]."""
    if _is_link(node):
        return _sum_chain(node, order)
    join = _JOINS.get(node.target) if node.op == "call_function" else None
    terms = node.args[0] if join and node.args else None
    if not isinstance(terms, (list, tuple)) or len(terms) < 2 or not all(
            isinstance(v, torch.fx.Node) for v in terms):
        return None
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    copies = [_cone(v, order) for v in terms]
    if not _reads_element(copies[0]):
        return None
    if len(terms) < MIN_COPIES:
        raise _Mismatch(f"torch.{join} of only {len(terms)} values: {TOO_FEW}")
    return Loop(node, join, list(terms), copies, dim=dim)


def _is_link(node: Any) -> bool:
    return (isinstance(node, torch.fx.Node) and node.op == "call_function"
            and node.target in _SUM_LINKS and len(node.args) == 2 and not node.kwargs)


def _sum_chain(top: torch.fx.Node, order: dict) -> Loop | None:
    """The add/subtract chain ending at ``top``: at each link, the operand isomorphic to the
    top's term is a copy, a number is a constant, the other operand the rest of the chain."""
    reasons: list[str] = []
    most = 0
    signs = (1, -1 if top.target in _SUB_LINKS else 1)  # of the top's operands
    for side in (1, 0):
        first = top.args[side]
        if not isinstance(first, torch.fx.Node) or len(first.users) != 1:
            continue
        ref = _cone(first, order)
        if not _reads_element(ref):
            continue
        walk = _Walk(ref, order)
        walk.terms.append((first, signs[side]))
        walk.down(top.args[1 - side], signs[1 - side])
        if len(walk.terms) >= MIN_COPIES:
            return walk.loop(top)
        reasons += walk.reasons
        most = max(most, len(walk.terms))
    if reasons:
        raise _Mismatch(f"fewer than {MIN_COPIES} terms in a row are copies of one subgraph: "
                        f"{reasons[0]}", _spine(top))
    if most > 1:
        raise _Mismatch(f"only {most} copies of one subgraph: {TOO_FEW}", _spine(top))
    return None


class _Walk:
    """Walks an add/subtract chain down from its top, collecting its terms that are copies of
    ``ref`` with their signs, its number constants, and the value it starts from."""

    def __init__(self, ref: list[torch.fx.Node], order: dict):
        self.ref, self.order = ref, order
        self.terms: list[tuple[torch.fx.Node, int]] = []
        self.links: list[torch.fx.Node] = []
        self.constants: list[tuple[Any, int]] = []
        self.reasons: list[str] = []
        self.init: tuple[Any, int] | None = None  # the start value and its sign

    def down(self, rest: Any, sign: int) -> None:
        """Collect from ``rest``, which the chain adds with ``sign``, down to its start."""
        while True:
            if _misfit(self.ref, rest, self.order) is None:  # the first term: the chain ends
                self.terms.append((rest, sign))
                return
            if not (_is_link(rest) and len(rest.users) == 1):
                self.init = (rest, sign)
                return
            signs = (sign, -sign if rest.target in _SUB_LINKS else sign)
            numbers = [j for j in (1, 0) if _is_number(rest.args[j])]
            if numbers:
                j = numbers[0]
                self.constants.append((rest.args[j], signs[j]))
            else:
                j, why = _term(self.ref, rest, self.order)
                if j is None:
                    self.reasons.append(why)
                    self.init = (rest, sign)
                    return
                self.terms.append((rest.args[j], signs[j]))
            self.links.append(rest)
            rest, sign = rest.args[1 - j], signs[1 - j]

    def loop(self, top: torch.fx.Node) -> Loop:
        signs = {s for _, s in self.terms}
        outputs = sorted((v for v, _ in self.terms), key=self.order.__getitem__)
        loop = Loop(top, "sum", outputs, [_cone(v, self.order) for v in outputs], self.links,
                    sign=signs.pop() if len(signs) == 1 else 0)
        if self.init is not None and _is_number(self.init[0]):
            self.constants.append(self.init)
        elif self.init is not None:
            loop.init, loop.init_sign = self.init
        if self.constants:
            loop.constant = sum(c * s for c, s in self.constants)
        return loop


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _term(ref: list[torch.fx.Node], link: torch.fx.Node, order: dict) -> tuple[int | None, str | None]:
    """Which operand of ``link`` is a copy of ``ref`` (the right one first: ``loss += v``),
    or None and why the right one is not."""
    why = None
    for j in (1, 0):
        reason = _misfit(ref, link.args[j], order)
        if reason is None:
            return j, None
        why = why or reason
    return None, why


def _spine(top: torch.fx.Node) -> list[torch.fx.Node]:
    """The links below ``top`` of the longest add chain it ends."""
    links, node = [], top
    while (node := next((a for a in node.args if _is_link(a) and len(a.users) == 1), None)):
        links.append(node)
    return links


def _reads_element(copy: list[torch.fx.Node]) -> bool:
    """A candidate loop body reads an element of a tensor made outside it (``x[k]``)."""
    inside = set(copy)
    return any(_index_slot(n, inside) is not None for n in copy)


def _misfit(ref: list[torch.fx.Node], value: Any, order: dict) -> str | None:
    """Why ``value`` is not a copy of ``ref``, or None."""
    if not isinstance(value, torch.fx.Node):
        return f"{value!r} is a constant"
    if len(value.users) != 1:
        return f"{value.name} ({_where(value)}) is also read elsewhere"
    try:
        _match(ref, _cone(value, order, len(ref)))
    except _Mismatch as exc:
        return str(exc)
    return None


def _cone(out: torch.fx.Node, order: dict, limit: int | None = None) -> list[torch.fx.Node]:
    """``out`` and every node only it reads, directly or not (all their users inside), in
    graph order; past ``limit`` nodes, some of them (it is not a copy of that size then)."""
    members, todo = {out}, list(out.all_input_nodes)
    while todo and (limit is None or len(members) <= limit):  # retried when a user joins
        n = todo.pop()
        if n not in members and n.op != "placeholder" and all(u in members for u in n.users):
            members.add(n)
            todo += n.all_input_nodes
    return sorted(members, key=order.__getitem__)


# -- matching copies -----------------------------------------------------------------------------
def _match(ref: list[torch.fx.Node], other: list[torch.fx.Node]) -> dict:
    """``other`` is ``ref`` but for one integer per indexing node or compared number: {ref
    node: (where in its arguments, ref's integer, other's integer)} for those that differ.
    Raises ``_Mismatch``."""
    if len(ref) != len(other):
        raise _Mismatch(f"copies differ in size ({len(ref)} and {len(other)} nodes)")
    env = dict(zip(ref, other))
    inside, found = set(ref), {}
    for a, b in zip(ref, other):
        slot = _index_slot(a, inside)
        slot = _number_slot(a) if slot is None else slot
        diffs: list = []
        same = (a.op == b.op and a.target == b.target and len(a.args) == len(b.args)
                and all(_same(x, y, env, diffs if i == slot else None, (i,))
                        for i, (x, y) in enumerate(zip(a.args, b.args)))
                and _same(a.kwargs, b.kwargs, env, None, ()))
        if not same or len(diffs) > 1:
            raise _Mismatch(f"{b.name} ({_where(b)}) differs from {a.name}, its counterpart in "
                            f"another copy, in {_difference(a, b, env, slot)}")
        if diffs:
            found[a] = diffs[0]
    return found


def _difference(a: torch.fx.Node, b: torch.fx.Node, env: dict, slot: int | None) -> str:
    """What makes ``b`` no counterpart of ``a``, in words."""
    if (a.op, a.target) != (b.op, b.target):
        return f"the op ({_op(b)}, not {_op(a)})"
    pairs = [(i, x, y) for i, (x, y) in enumerate(zip(a.args, b.args))] + [
        (k, a.kwargs.get(k), b.kwargs.get(k)) for k in sorted(set(a.kwargs) | set(b.kwargs))]
    for i, x, y in pairs:
        if i == slot:
            continue
        if not _same(x, y, env, None, ()):
            if isinstance(x, torch.fx.Node) or isinstance(y, torch.fx.Node):
                return f"argument {i}: an input that is not the counterpart of {x}"
            note = (": a number that changes per copy may only index a tensor (x[i]) or be "
                    "compared with one (target == i)") if _is_number(x) and _is_number(y) else ""
            return f"argument {i}, the constant {y!r} (not {x!r}){note}"
    return f"the number of arguments, or more than one index at argument {slot}"


def _op(node: torch.fx.Node) -> str:
    return op_facts.op_name(node) or node.op


def _index_slot(node: torch.fx.Node, inside: set) -> int | None:
    """Which argument of an indexing node holds the index, when its base is outside the copy."""
    if not node.args or not isinstance(node.args[0], torch.fx.Node) or node.args[0] in inside:
        return None
    if node.op == "call_function" and node.target is operator.getitem:
        return 1
    if node.target is torch.select or (node.op == "call_method" and node.target == "select"):
        return 2
    return None


def _number_slot(node: torch.fx.Node) -> int | None:
    """Which operand of a comparison (``target == c``) is an integer, when the other is a
    tensor (not a size: ``s0 == 3`` is a Python bool)."""
    if op_facts.op_name(node) not in op_facts.NUMBER_OPERAND_TESTS or len(node.args) != 2:
        return None
    for slot in (1, 0):
        if type(node.args[slot]) is int and isinstance(_value(node.args[1 - slot]), torch.Tensor):
            return slot
    return None


def _same(a: Any, b: Any, env: dict, diffs: list | None, path: tuple) -> bool:
    """``a`` (in the first copy) and ``b`` match; with ``diffs``, integers may differ and are
    listed there as (path, a, b)."""
    if isinstance(a, torch.fx.Node):
        return env.get(a, a) is b
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(
            _same(x, y, env, diffs, path + (i,)) for i, (x, y) in enumerate(zip(a, b)))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            _same(a[k], b[k], env, diffs, path + (k,)) for k in a)
    if diffs is not None and type(a) is int and type(b) is int and a != b:
        diffs.append((path, a, b))
        return True
    return type(a) is type(b) and bool(a == b)


def _match_all(copies: list[list[torch.fx.Node]]) -> dict:
    """{indexing node or comparison of the first copy: (where its integer is, the integer in
    every copy)}."""
    found = [_match(copies[0], c) for c in copies[1:]]
    indices = {}
    for node in [n for n in copies[0] if any(n in f for f in found)]:
        diffs = [f.get(node) for f in found]
        path, first = next((d[0], d[1]) for d in diffs if d)
        if any(d and d[0] != path for d in diffs):
            raise _Mismatch(f"{node.name} ({_where(node)}) changes a different index in other copies")
        indices[node] = (path, [first] + [d[2] if d else first for d in diffs])
    return indices


# -- checking ------------------------------------------------------------------------------------
def _check(loop: Loop) -> None:
    """Raise ``_Mismatch`` unless ``loop`` can be re-rolled; fill ``loop.indices`` and
    normalise ``loop.dim``."""
    for node in (n for copy in loop.copies for n in copy):
        name = op_facts.op_name(node)
        reason = next((r for table, r in _REFUSED if name in table), None)
        if name in _TIES_SPLIT and len(node.args) == 1 and "dim" not in node.kwargs:
            reason = (f"a full {name}(): vmap would give its gradient at ties to one element, "
                      "not split it among them")
        if reason is None and op_facts.is_mutating(node):
            reason = "an in-place op: under vmap it would write into one batch, not N tensors"
        if reason is None and node.op == "call_function" and node.target in op_facts.VMAP_FORMS:
            reason = _raising_form(node)
        if reason:
            raise _Mismatch(f"{node.name} ({_where(node)}) is {reason}")
    write = _write_between(loop)
    if write is not None:
        raise _Mismatch(f"{write.name} ({_where(write)}) writes in place between the copies: "
                        "re-rolled, every copy would read after that write")
    shared = next((v for v in loop.outputs if len(v.users) != 1), None)
    if shared is not None:
        raise _Mismatch(f"{shared.name} ({_where(shared)}), a copy's value, is also read elsewhere")
    if loop.sign == 0 or loop.init_sign < 0:
        raise _Mismatch("the chain adds some copies and subtracts others" if loop.sign == 0 else
                        "the chain subtracts the value it starts from")
    bottom = loop.links[-1] if loop.links else loop.node
    if loop.kind == "sum" and bottom.target in _IN_PLACE_LINKS and not _private_sum(loop.init, loop.outputs[0]):
        raise _Mismatch("the add chain starts by writing into a tensor made before it (+=): "
                        "re-rolled, that write and its dtype would be lost")
    out = _value(loop.outputs[0])
    if not isinstance(out, torch.Tensor) or type(loop.dim) is not int:
        raise _Mismatch("a copy's value is not a tensor, or the join's dim is not a constant")
    if loop.kind != "sum":
        rank = out.dim() + (loop.kind == "stack")
        if rank == 0:
            raise _Mismatch("torch.cat of 0-d tensors")
        loop.dim %= rank
    indices = _match_all(loop.copies)
    if not indices:
        raise _Mismatch("the copies read no x[i] whose i changes between them")
    loop.indices = {n: _index(n, path, ks) if _number_slot(n) is None else _number(n, ks)
                    for n, (path, ks) in indices.items()}


def _write_between(loop: Loop) -> torch.fx.Node | None:
    """An in-place op of no copy between the first copy's first node and the combining node
    (an unrolled ``target[i] *= 2`` after ``target[i]`` is read): the re-rolled copies are
    computed at the combining node, after it, so a copy would read what a later one wrote."""
    position = _position(loop.node.graph)
    ours = set(loop.links) | {loop.node}.union(*loop.copies)
    node = min((copy[0] for copy in loop.copies), key=position)
    while node is not loop.node:
        if node not in ours and op_facts.is_mutating(node):
            return node
        node = node.next
    return None


def _private_sum(init: Any, term: torch.fx.Node) -> bool:
    """``init`` is a sum only the chain reads (an earlier loop's ``loss``), of ``term``'s dtype:
    writing into it in place is invisible, and adding to it gives the same dtype."""
    node = init
    while isinstance(node, torch.fx.Node) and node.target in _IN_PLACE_LINKS and len(node.users) == 1:
        node = node.args[0]  # += returns the tensor it wrote into
    return (_is_link(node) and node.target not in _IN_PLACE_LINKS and len(node.users) == 1
            and getattr(_value(init), "dtype", None) == getattr(_value(term), "dtype", False))


def _number(node: torch.fx.Node, ks: list[int]) -> _Number:
    """How the compared number of ``node`` comes batched, from its value ``ks[n]`` in copy n."""
    step = ks[1] - ks[0]
    if ks != [ks[0] + step * n for n in range(len(ks))]:
        raise _Mismatch(f"{node.name} ({_where(node)}) compares with {ks[:4]}...: not a fixed step")
    return _Number(_number_slot(node), ks[0], step)


def _index(node: torch.fx.Node, path: tuple, ks: list[int]) -> _Index:
    """How the batch of ``node``'s reads is indexed, from the integer ``ks[n]`` of copy n."""
    start, step = ks[0], ks[1] - ks[0]
    if start < 0 or step < 1 or ks != [start + step * n for n in range(len(ks))]:
        raise _Mismatch(f"{node.name} ({_where(node)}) reads index {ks[:4]}...: not counting up "
                        "from 0 or more")
    base = _value(node.args[0])
    if not isinstance(base, torch.Tensor):
        raise _Mismatch(f"{node.name} ({_where(node)}) indexes a {type(base).__name__}, not a tensor")
    if node.target is not operator.getitem:  # select(dim, i)
        return _Index(node.args[1] % base.dim(), start, step, None)
    if len(path) == 1:  # x[i]
        return _Index(0, start, step, None)
    index, p = node.args[1], path[1]
    if len(path) > 2 or not all(x is None or type(x) is int or isinstance(x, slice) for x in index[:p]):
        raise _Mismatch(f"{node.name} ({_where(node)}): an index before the loop's is not basic")
    rest = index[:p] + index[p + 1:]
    plain = all(isinstance(x, slice) and x == slice(None) for x in rest)
    return _Index(sum(x is not None for x in index[:p]), start, step, None if plain else rest)


def _raising_form(node: torch.fx.Node) -> str | None:
    """Why the body may not call ``node``'s vmap form (``op_facts.VMAP_FORMS``): it raises on
    the copy's own values, where the op raises too (an int32 class target) but functorch's
    batching rule would return a value; None when it runs."""
    args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), _value)
    mode = next((v.fake_mode for v in map(_value, node.all_input_nodes)
                 if hasattr(v, "fake_mode")), None)
    try:
        with mode if mode is not None else contextlib.nullcontext():
            op_facts.VMAP_FORMS[node.target](*args, **kwargs)
    except Exception as exc:  # the op's own error, which the graph as traced raises
        return f"a call that raises on its values ({type(exc).__name__}: {exc})"
    return None


def _value(node: Any) -> Any:
    """Dynamo's fake ``example_value`` (or ``val``) of a node; None when unknown."""
    if not isinstance(node, torch.fx.Node):
        return node
    return node.meta.get("example_value", node.meta.get("val"))


def _where(node: torch.fx.Node) -> str:
    return user_location(node.meta.get("stack_trace")) or "unknown line"


# -- rewriting -----------------------------------------------------------------------------------
def _reroll(gm: torch.fx.GraphModule, loop: Loop) -> None:
    body, externals = _body(gm, loop)
    n = len(loop.copies)
    name = _fresh_name(gm, "rerolled_loop")
    in_dims = tuple(i.dim for i in loop.indices.values()) + (None,) * len(externals)
    gm.add_submodule(name, Vmapped(body, in_dims, loop.dim))
    graph, before = gm.graph, set(gm.graph.nodes)
    with graph.inserting_before(loop.node):
        batches = [_batch(graph, node, i, n) for node, i in loop.indices.items()]
        batched = graph.call_module(name, tuple(batches + externals))
        if loop.kind == "sum":
            result = _chain_total(graph, loop, graph.call_method("sum", (batched, 0)))
        elif loop.kind == "cat":
            result = graph.call_method("flatten", (batched, loop.dim, loop.dim + 1))
        else:
            result = batched
    added = [node for node in graph.nodes if node not in before]
    kept = set(loop.copies[0]) - set(_varying(loop))
    batched.meta[REROLLED] = (f"{n} copies of a {len(loop.copies[0])}-node subgraph combined by "
                              f"{loop.kind}, re-rolled into one torch.vmap"
                              + (f" ({len(kept)} nodes the same in every copy computed once)"
                                 if kept else ""))
    loop.node.replace_all_uses_with(result)
    for node in [loop.node, *loop.links] + sorted(
            (m for copy in loop.copies for m in copy if m not in kept), key=_position(graph), reverse=True):
        graph.erase_node(node)
    _fake_values(gm, added, loop.node.meta.get("stack_trace"))


def _chain_total(graph: torch.fx.Graph, loop: Loop, total: torch.fx.Node) -> torch.fx.Node:
    """``init + constant +- total``: what the chain added up, ``total`` the copies' sum."""
    start = loop.init
    if loop.constant is not None:
        start = loop.constant if start is None else graph.call_function(
            operator.add, (start, loop.constant))
    if start is None:
        return total if loop.sign > 0 else graph.call_function(operator.neg, (total,))
    return graph.call_function(operator.add if loop.sign > 0 else operator.sub, (start, total))


def _varying(loop: Loop) -> list[torch.fx.Node]:
    """The nodes of the first copy that depend on its indexing nodes, in graph order; the rest
    is the same in every copy, and stays in the graph, computed once."""
    varying: set[torch.fx.Node] = set()
    for node in loop.copies[0]:
        if node in loop.indices or any(i in varying for i in node.all_input_nodes):
            varying.add(node)
    return [n for n in loop.copies[0] if n in varying]


def _body(gm: torch.fx.GraphModule, loop: Loop) -> tuple[torch.fx.GraphModule, list[torch.fx.Node]]:
    """The varying part of one copy as a graph module: first the batched reads (one per
    indexing node), then the nodes outside it that it reads; and those nodes."""
    ref = _varying(loop)
    inside = set(ref)
    externals: list[torch.fx.Node] = []
    for node in ref:
        skip = node.args[0] if isinstance(loop.indices.get(node), _Index) else None  # batched
        externals += [i for i in node.all_input_nodes
                      if i not in inside and i is not skip and i not in externals]
    graph = torch.fx.Graph()
    batched = {node: graph.placeholder(f"{node.name}_batch") for node in loop.indices}
    env = {node: graph.placeholder(node.name) for node in externals}
    for node, index in loop.indices.items():
        if isinstance(index, _Index):
            env[node] = batched[node] if index.rest is None else graph.call_function(
                operator.getitem, (batched[node], index.rest))
    for node in ref:
        if node not in env:
            env[node] = graph.node_copy(node, env.__getitem__)
            if node in batched:  # a comparison: its number comes batched
                env[node].update_arg(loop.indices[node].slot, batched[node])
            if node.op == "call_function" and node.target in op_facts.VMAP_FORMS:
                env[node].target = op_facts.VMAP_FORMS[node.target]  # eager's, under vmap
    graph.output(env[loop.outputs[0]])
    return torch.fx.GraphModule(gm, graph, class_name="RerolledBody"), externals


def _batch(graph: torch.fx.Graph, node: torch.fx.Node, index: _Index | _Number, n: int) -> torch.fx.Node:
    """The base of indexing ``node`` sliced to the elements the copies read along
    ``index.dim``; for a comparison, the numbers the copies compare with."""
    if isinstance(index, _Number):
        tensor = node.args[1 - index.slot]
        return graph.call_function(torch.arange, (index.start, index.start + index.step * n, index.step),
                                   {"device": _value(tensor).device})
    base = node.args[0]
    size = _value(base).shape[index.dim]
    if index.start == 0 and index.step == 1 and type(size) is int and size == n:
        return base
    span = slice(index.start, index.start + index.step * (n - 1) + 1, index.step)
    return graph.call_function(operator.getitem, (base, (slice(None),) * index.dim + (span,)))


def _fresh_name(gm: torch.nn.Module, stem: str) -> str:
    i = 0
    while hasattr(gm, f"{stem}_{i}"):
        i += 1
    return f"{stem}_{i}"


def _position(graph: torch.fx.Graph):
    order = {n: i for i, n in enumerate(graph.nodes)}
    return order.__getitem__


def _fake_values(gm: torch.fx.GraphModule, nodes: list[torch.fx.Node], stack_trace: str | None) -> None:
    """Set ``example_value`` on new nodes by running them on the graph's fake tensors, and the
    combining node's stack trace, so later passes see them as Dynamo would have."""
    mode = next((v.fake_mode for v in map(_value, (i for n in nodes for i in n.all_input_nodes))
                 if hasattr(v, "fake_mode")), None)
    for node in nodes:
        if stack_trace:
            node.meta["stack_trace"] = stack_trace
        if mode is None:
            continue
        args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), _value)
        if node.op == "call_module":
            fn = gm.get_submodule(node.target)
        elif node.op == "call_method":
            fn, args = getattr(args[0], node.target), args[1:]
        else:
            fn = node.target
        with mode:
            node.meta["example_value"] = fn(*args, **kwargs)
