"""Each loop on its own time: at a band's first call, a loop that ran vectorized is timed alone,
and one whose vectorized form is clearly slower runs as written for that band.

The choice of form (``rewrite.keep_faster``) times whole calls, which cannot tell a loop that
costs 1% of a call: a vectorized form 4x slower than its loop leaves the call about as fast,
and the report would say "vectorized" of a loop that costs the user time. So the band's first
call (eager, where the trial's forms with loops as written exist) also records what each
vectorized guard read the first time it ran (``OptimizedFunction`` probes it: tensors detached
and copied), and after it each loop whose vectorized form ran there by itself, in less than about
``EXPENSIVE_S`` forward and backward (``cheap``: a costlier loop is a share of the call that the
whole call's time shows), is timed as its
region (``passes.loop_regions``: the guard ``if <check>: <vectorized> else: <the loop>`` as a
function of those values) against its loop as written, forward+backward (``region_steps``, as
the per-loop bench does):

- one run of each form first (its first runs are not its cost), the vectorized form's first:
  when one takes ``EXPENSIVE_S`` or more, nothing more is run and the vectorized form stays.
  Such a loop is a share of the call that the whole call's time shows (the choice of form
  decides it), the loop as written, or its vectorized form, would cost the first call much
  again, and a loop as written that costly with a cheaper vectorized form is not faster;
- then ``PAIRS`` rounds, each form run in a block of calls (of about ``BLOCK_S``: a region of
  microseconds is not timed by one call), which goes first turning every round; the CPU time
  on the CPU (another process taking the core does not count), a round the vectorized form wins
  ``CLEAR`` times over ends them: it stays;
- the loop runs as written when its vectorized form is ``MARGIN`` slower both ways the choice of
  form compares: the median over rounds of the ratio within a round, and the best blocks.

Running a region more must change nothing the user sees: it runs on copies of what the guard
read (and of the objects whose attributes it writes, ``copied_state``), with the modules'
parameters as captured swapped in, on the user's thread, after the user's call is done, with
every random number generator put back after it (``untouched``); a region that prints, logs or
writes files is not run (``passes.loop_regions.io_call``), nor one calling what may change state
no copy holds (``opaque_call``), nor one whose state cannot be copied.
Its backward is ``torch.autograd.grad`` of its own leaves: nothing accumulates in ``.grad``.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import random
import statistics
import sys
import warnings
from typing import Any, Callable, Iterable

import torch
from torch.nn.utils.stateless import _reparametrize_module
from torch.utils._pytree import tree_flatten, tree_map

from passes.tabulated_maps import with_index_ints

from . import keep_faster
from .keep_faster import CLEAR, EXPENSIVE_S, MARGIN, PAIRS, _devices, _sync
from .keep_faster import _Clock as Clock

# A loop of more iterations is not judged: running it as written once costs the first call its
# iterations again, at a cost per iteration nothing bounds (per_sample_ce_fn's 4096 cross
# entropies over 1000 classes: 19 s), and a vectorized form of that many is what the rewrite is
# for (the choice of form still times whole calls). The loops found slower vectorized in the
# corpus run 2 to 17 iterations.
JUDGED_ITERATIONS = 64
BLOCK_S = 1e-3   # a timed block of region calls lasts about this long ...
BLOCK_RUNS = 16  # ... of at most this many calls


def cheap(seconds: Any) -> bool:
    """A region whose first run took ``seconds`` in the user's call (a ``Clock`` still running
    when it did not end) is cheap enough to judge: less than ``EXPENSIVE_S``, forward and
    backward (about twice the forward). A costlier one is a share of the call that the whole
    call's time shows, and running its forms again would cost the first call much."""
    return isinstance(seconds, float) and 2 * seconds < EXPENSIVE_S


def judge(region: Any, iterations: int = 0) -> tuple[float, int] | None:
    """``slowdown`` of the loop of ``region`` (a ``runtime.LoopRegion``), every random number
    generator put back after it (``untouched``); ``iterations``: those its vectorized form
    stood for, each at least ``keep_faster.iteration_floor`` as written. None without running
    anything when they are more than ``JUDGED_ITERATIONS``, or at least ``EXPENSIVE_S`` as
    written (``slowdown`` would keep the vectorized form after running them)."""
    devices = _devices(_tensors([region.live_ins, region.module_states]))
    floor_s = iterations * keep_faster.iteration_floor() if iterations else 0.0
    if iterations > JUDGED_ITERATIONS or floor_s >= EXPENSIVE_S:
        return None  # not even the runs ``region_steps`` makes to see what the forms change
    with untouched(devices):
        vectorized, as_written, _ = region_steps(region)
        return slowdown({"vectorized": vectorized, "as_written": as_written}, devices, floor_s)


def slowdown(steps: dict[str, Callable[[], Any]], devices: set[torch.device],
             floor_s: float = 0.0) -> tuple[float, int] | None:
    """The vectorized form's time over the loop's as written (median over rounds) and the
    rounds, when it is clearly slower (see the docstring); None when it stays vectorized.
    ``steps``: the forms' forward+backward calls, "vectorized" and "as_written", on
    ``devices`` (the CPU's not among them). A loop whose iterations alone (``floor_s``) take
    ``CLEAR`` times its vectorized form's first run is not run as written: a slow Python loop
    (thousands of iterations, seconds) would cost the first call that much again."""
    first = {"vectorized": timed_runs(steps["vectorized"], 1, "vectorized", devices)}
    if first["vectorized"] >= EXPENSIVE_S or floor_s >= CLEAR * first["vectorized"]:
        return None
    first["as_written"] = timed_runs(steps["as_written"], 1, "as_written", devices)
    if first["as_written"] >= EXPENSIVE_S:
        return None
    runs = max(1, min(BLOCK_RUNS, int(BLOCK_S / max(min(first.values()), 1e-9))))
    rounds: list[dict[str, float]] = []
    order = list(steps.items())
    for n in range(PAIRS):
        rounds.append({form: timed_runs(step, runs, form, devices)
                       for form, step in (order if n % 2 == 0 else order[::-1])})
        if CLEAR * rounds[-1]["vectorized"] <= rounds[-1]["as_written"]:
            return None
    ratio = statistics.median(r["vectorized"] / max(r["as_written"], 1e-12) for r in rounds)
    best = min(r["vectorized"] for r in rounds) / max(min(r["as_written"] for r in rounds), 1e-12)
    return (ratio, len(rounds)) if min(ratio, best) > 1 + MARGIN else None


def timed_runs(step: Callable[[], Any], runs: int, form: str, devices: set[torch.device]) -> float:
    """Seconds per call of ``runs`` calls of ``step``, waiting for ``devices`` at both ends
    (``keep_faster``'s clock: with none, the lesser of wall and CPU time). ``form`` names the
    step: tests replace this with a fake clock."""
    _sync(devices)
    clock = Clock(cpu=not devices)
    for _ in range(runs):
        step()
    _sync(devices)
    return clock.seconds() / runs


@contextlib.contextmanager
def untouched(devices: Iterable[torch.device]):
    """Every random number generator (torch's on the CPU and on ``devices``, Python's, NumPy's
    when loaded) as it was before the block, after it; no warning shown from within it (the
    user's call showed its own)."""
    numpy = sys.modules.get("numpy")
    state, np_state = random.getstate(), numpy.random.get_state() if numpy else None
    try:
        with torch.random.fork_rng(devices=[d for d in devices if d.type == "cuda"]), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        random.setstate(state)
        if numpy:
            numpy.random.set_state(np_state)


def region_steps(region: Any) -> tuple[Callable[[], tuple], Callable[[], tuple], list[str]]:
    """A loop region's forward+backward, vectorized and as written, and its outputs: the
    live-outs both forms bind, the live-ins either form changes (a tensor written in place, a
    list appended to) and the attributes it writes (``self.acc``). Each call runs its form on
    arguments made from the captured live-ins (a tensor that either form changes in place is
    copied for every call, and so is an object whose attributes the region writes, with those
    attributes as they were captured: calls do not add to what the last one left; the others
    are shared; those requiring grad, or the tensors they view, are the leaves), then the
    leaves' gradients from the output tensors that require grad, with fixed random cotangents
    (seeded: the same for outputs of the same shapes); it returns the outputs and the gradients.
    A module live-in runs with its parameters and buffers as captured (``module_states``,
    leaves too)."""
    values, written, states = region.live_ins, region.written, region.module_states
    leaves = _roots([t for t in _tensors([values, states]) if t.requires_grad])
    forms, changed, names, outs = (region.vectorized, region.as_written), set(), set(), []
    for form in forms:  # once with every tensor copied, to see what a form changes
        args = _arguments(values, None, written)
        before = {name: tree_flatten(value)[0] for name, value in args.items()}
        with _swapped_in(states, args):
            outs.append(_with_attributes(form(**args), args, written))
        changed |= {id(t) for t, a in zip(_tensors(values), _tensors(args)) if a._version}
        names |= {n for n, items in before.items() if _changed(items, tree_flatten(outs[-1][n])[0])}
    attributes = {n for n in outs[0] if "." in n and all(n in out for out in outs)}
    names = sorted(names | attributes | {n for n in region.live_outs if all(n in out for out in outs)})
    changed |= _written_tensors(values, written)

    def step(form: Callable) -> Callable[[], tuple]:
        cotangents: list[torch.Tensor] = []

        def call() -> tuple:
            args = _arguments(values, changed, written)
            with _swapped_in(states, args):
                out = _with_attributes(form(**args), args, written)
            results = [t for t in _tensors([out[n] for n in names]) if t.requires_grad]
            if not cotangents:
                cotangents.extend(cotangent(t, i) for i, t in enumerate(results))
            grads = torch.autograd.grad(results, leaves, cotangents, allow_unused=True) \
                if leaves and results else ()
            return {n: out[n] for n in names}, grads
        return call
    return step(forms[0]), step(forms[1]), names


def cotangent(t: torch.Tensor, seed: int) -> torch.Tensor:
    """Fixed random numbers of ``t``'s shape (its own generator: no global stream moves)."""
    return torch.randn(t.shape, dtype=t.dtype, device=t.device,
                       generator=torch.Generator(t.device).manual_seed(seed))


def copied_state(obj: Any, attributes: Iterable[str], copy_value: Callable[[Any], Any]) -> Any:
    """A shallow copy of ``obj`` whose ``attributes`` hold ``copy_value`` of what they hold (in
    fresh containers; ``copy_value`` is called on every leaf), so that writing them leaves
    ``obj`` as it was. Raises ValueError for an object whose attributes are not its own
    ``__dict__`` (an ``nn.Module`` keeps parameters and buffers in dicts a copy shares)."""
    if isinstance(obj, torch.nn.Module) or not hasattr(obj, "__dict__"):
        raise ValueError(f"the region writes attributes of a {type(obj).__name__}, which a "
                         f"shallow copy shares with the original")
    new = copy.copy(obj)
    for name in set(attributes) & vars(obj).keys():  # the others the region creates
        vars(new)[name] = tree_map(copy_value, vars(obj)[name])
    return new


def module_state(module: torch.nn.Module, copy_value: Callable[[Any], Any]) -> dict[str, Any]:
    """``copy_value`` of each parameter and buffer of ``module``, by qualified name."""
    named = [*module.named_parameters(remove_duplicate=False),
             *module.named_buffers(remove_duplicate=False)]
    return {name: copy_value(value) for name, value in named}


def aliases_kept(copy_value: Callable[[torch.Tensor], torch.Tensor],
                 views: Iterable[torch.Tensor] = ()) -> Callable[[Any], Any]:
    """``copy_value`` of a tensor (other values as they are), the same copy each time it meets
    the same tensor: names bound to one tensor (``_r = self.returns`` before a region that
    writes ``_r``, or ``self.returns``) are bound to one copy. Views of a tensor are copied
    apart, except those ``views`` holds (``shared_views``): each the same view of one copy of
    the tensor it views (``_view_of_copy``)."""
    memo: dict[int, tuple[torch.Tensor, Any]] = {}
    kept = set(views)  # tensors hash by identity

    def copied(value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        if id(value) not in memo:  # the tensor kept with its copy: its id is not reused
            view = _view_of_copy(value, value._base, copied(value._base)) if value in kept \
                else None
            memo[id(value)] = (value, copy_value(value) if view is None else view)
        return memo[id(value)][1]
    return copied


def shared_views(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """The views among ``tensors`` a region's copy keeps as views of one copy (``aliases_kept``):
    those each made by a view op of its own (a ``grad_fn`` of its own: rows ``weight[i]``), of
    a tensor requiring grad that two or more of them view. As ``functional_call``'s heads are
    rows of one weight in the call, each row's backward fills a gradient of the whole weight,
    which a loop over them pays once per row and a copy of each row apart never does. Not the
    chunks of one ``split``/``unbind`` (one backward node for all, run once in the call
    whatever reads them), nor a single view (its backward runs once in the call, outside the
    region, whatever the loop's form)."""
    views = [t for t in dict.fromkeys(tensors) if t._base is not None
             and t._base.requires_grad and t.grad_fn is not None]
    nodes = collections.Counter(t.grad_fn for t in views)
    own = [t for t in views if nodes[t.grad_fn] == 1 and t.output_nr == 0]
    bases = collections.Counter(t._base for t in own)
    return [t for t in own if bases[t._base] > 1]


def _view_of_copy(view: torch.Tensor, base: torch.Tensor,
                  copy: torch.Tensor) -> torch.Tensor | None:
    """``view`` of ``base`` as the same view of ``copy``, a copy of ``base`` laid out alike;
    None when it is not a plain strided view of it (another dtype, conj/neg bits, a copy in
    another layout, functorch's wrapped tensors)."""
    if view.dtype != base.dtype or view.is_conj() != base.is_conj() \
            or view.is_neg() != base.is_neg() or copy.stride() != base.stride() \
            or type(view) is not torch.Tensor or copy.storage_offset() != base.storage_offset():
        return None
    return copy.as_strided(view.size(), view.stride(), view.storage_offset())


def _roots(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """``tensors`` with each view replaced by the tensor it views, each once: a region's views
    of a captured tensor take their gradients through it (``aliases_kept``'s ``views``)."""
    return list(dict.fromkeys(t if t._base is None else t._base for t in tensors))


def _changed(before: list, after: list) -> bool:
    """A live-in's leaves after a call are not those before it, or a tensor among them was
    written in place."""
    return len(before) != len(after) or any(
        a is not b or isinstance(a, torch.Tensor) and a._version for a, b in zip(after, before))


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _arguments(values: dict[str, Any], copied: set[int] | None,
               written: dict[str, frozenset[str]]) -> dict[str, Any]:
    """``values`` with fresh containers (a form may append to a list), copies of the tensors
    whose ids are in ``copied`` (of every tensor, when None; one copy of a tensor bound to two
    names), and of the objects whose attributes ``written`` names, with the tensors in those
    attributes copied (``_written_tensors``: in ``copied`` too)."""
    clone = aliases_kept(lambda t: with_index_ints(t.clone(), t))
    args = tree_map(lambda t: clone(t) if isinstance(t, torch.Tensor) and (
        copied is None or id(t) in copied) else t, values)
    return {**args, **{name: copied_state(values[name], attrs, clone)
                       for name, attrs in written.items()}}


@contextlib.contextmanager
def _swapped_in(states: dict[str, dict[str, torch.Tensor]], args: dict[str, Any]):
    """The modules among ``args`` with the parameters and buffers ``states`` holds for them, as
    ``torch.func.functional_call`` swaps them in (its context manager)."""
    with contextlib.ExitStack() as stack:
        for name, state in states.items():
            stack.enter_context(_reparametrize_module(args[name], state))
        yield


def _written_tensors(values: dict[str, Any], written: dict[str, frozenset[str]]) -> set[int]:
    """The ids of the tensors in the attributes ``written`` names of the objects in ``values``:
    a live-in bound to one of them is copied with it, not left to see the last call's writes."""
    return {id(t) for name, attrs in written.items() for attr in attrs
            for t in _tensors(vars(values[name]).get(attr))}


def _with_attributes(out: dict[str, Any], args: dict[str, Any],
                     written: dict[str, frozenset[str]]) -> dict[str, Any]:
    """A form's locals ``out`` and the attributes it wrote (``"self.acc"``) of the objects in
    ``args``, those it set."""
    return {**out, **{f"{name}.{attr}": vars(args[name])[attr] for name, attrs in written.items()
                      for attr in attrs if attr in vars(args[name])}}
