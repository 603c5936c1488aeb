"""Gradient-flow lint: inputs and parameters whose gradient is cut, the op that cut it, and how to fix it.

``lint(fn, *inputs)`` runs ``fn`` once on clones of the inputs under a ``TorchFunctionMode`` that
watches every torch call, then differentiates the output with respect to every input that requires
grad (and every parameter of module inputs). An input that gets no gradient, or an identically zero
one, is reported with the ops that cut its path, found while running:

* an op whose inputs require grad and whose output does not (``.detach()``, ``.data``,
  ``torch.tensor(...)``, ``.item()``, work under ``torch.no_grad()``, ...);
* an op with a zero derivative (round, floor, ceil, sign) on a tensor that requires grad;
* a comparison or an index op (argmax) on such a tensor, once its result is used as a value
  (turned into floats or Python numbers: a mask used for indexing is fine);
* a new leaf tensor created with requires_grad=True, which makes a broken loss look differentiable.

In-place ops are reported whatever the gradients: one that modifies a tensor autograd saved for
backward (found with saved-tensor hooks and version counters), or a leaf that requires grad.

What each kind says and suggests is data, in ``RULES``.
"""
from __future__ import annotations

import os
import sys
import sysconfig
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from passes.annotate_grad_dependence import LIBRARY_DIRS

from . import frontend
from .testing import clone_inputs, differentiable_inputs


@dataclass(frozen=True)
class Rule:
    ops: frozenset[str]   # torch function names (methods and functions) that trigger the rule
    message: str          # what happened; {op} is the op's name
    fix: str
    deferred: bool = False  # the output is integer/bool: reported only once used as a value


RULES: dict[str, Rule] = {
    "detach": Rule(frozenset({"detach", "detach_"}),
                   "`.{op}()` cuts the graph",
                   "remove it on the prediction path; for a target-only look-up, compute it under "
                   "`with torch.no_grad():` instead"),
    "data": Rule(frozenset({"data"}),
                 "`.data` cuts the graph and hides it from autograd",
                 "use the tensor itself; for a target-only look-up, compute it under `with torch.no_grad():`"),
    "python_value": Rule(frozenset({"item", "tolist", "__float__", "__int__", "numpy", "__array__"}),
                         "`{op}` turns the tensor into Python/NumPy values, which carry no gradient",
                         "keep it a tensor (e.g. `t.sum()`, not `t.sum().item()`); use Python numbers "
                         "only for logging and target-only counts"),
    "torch_tensor": Rule(frozenset({"tensor", "as_tensor", "asarray", "new_tensor"}),
                         "`{op}(...)` copies tensors into a new tensor without their graph",
                         "build it with `torch.stack` / `torch.cat` / tensor arithmetic instead"),
    "zero_derivative": Rule(frozenset({"round", "floor", "ceil", "sign", "sgn", "trunc", "fix",
                                       "round_", "floor_", "ceil_", "sign_", "trunc_", "fix_"}),
                            "`{op}` is piecewise constant: its gradient is zero almost everywhere",
                            "a straight-through estimator (`x + (x.round() - x).detach()`), a smooth proxy "
                            "(`torch.sigmoid((x - t) / temperature)`), or a custom "
                            "`torch.autograd.Function` with your gradient formula"),
    "comparison": Rule(frozenset({"gt", "lt", "ge", "le", "eq", "ne", "greater", "less",
                                  "greater_equal", "less_equal", "not_equal", "isclose",
                                  "__gt__", "__lt__", "__ge__", "__le__", "__eq__", "__ne__",
                                  "logical_and", "logical_or", "logical_not", "logical_xor"}),
                       "comparison `{op}` used as a value: a hard threshold has no gradient",
                       "a soft threshold: `torch.sigmoid((x - threshold) / temperature)` instead of "
                       "`(x > threshold).float()`, or a straight-through estimator", deferred=True),
    "argmax": Rule(frozenset({"argmax", "argmin", "argsort", "topk", "sort", "max", "min",
                              "kthvalue", "mode", "median", "nonzero", "unique", "searchsorted",
                              "bucketize", "multinomial"}),
                   "`{op}` returns indices used as a value: indices carry no gradient",
                   "softmax with a temperature (soft-argmax: `(torch.softmax(x / t, -1) * "
                   "torch.arange(n)).sum(-1)`), or a straight-through estimator", deferred=True),
    "no_grad": Rule(frozenset(),
                    "`{op}` runs under `torch.no_grad()` on a tensor that requires grad",
                    "keep only target-only look-ups inside `torch.no_grad()`; compute the "
                    "prediction path outside it"),
    "non_differentiable": Rule(frozenset(),
                               "`{op}` returns a result without gradient from a tensor that requires grad",
                               "a smooth proxy of this op, or a custom `torch.autograd.Function` "
                               "with your gradient formula"),
    "rewrap": Rule(frozenset(),
                   "`{op}` creates a new leaf with requires_grad=True: the loss looks differentiable "
                   "but no gradient reaches the inputs",
                   "remove the re-wrapping and fix the cut it hides (see the other findings)"),
    "inplace_saved": Rule(frozenset(),
                          "in-place `{op}` modifies a tensor that autograd saved for backward "
                          "(by `{saver}` at {saved_at}): backward fails or computes wrong gradients",
                          "use the out-of-place op (`x = x.add(1)`, not `x.add_(1)` / `x += 1`) or "
                          "`.clone()` first"),
    "inplace_leaf": Rule(frozenset(),
                         "in-place `{op}` on a leaf tensor that requires grad",
                         "use the out-of-place op, or `.clone()` the input first"),
    "no_gradient": Rule(frozenset(),
                        "the loss does not depend on it differentiably (unused, or cut by an op "
                        "the lint does not know)",
                        "check that it is used in the loss; for a non-differentiable step, use a "
                        "straight-through estimator or a smooth proxy"),
}
_RULE_OF_OP = {op: kind for kind, rule in RULES.items() for op in rule.ops}
_SETS_REQUIRES_GRAD = frozenset({"requires_grad", "requires_grad_"})  # t.requires_grad = True, t.requires_grad_()


def _shape_only(op: str) -> bool:
    """Ops that read only the shape/dtype of their tensor arguments: no value flows through them."""
    return op.endswith("_like") or (op.startswith("new_") and op != "new_tensor")


@dataclass
class Finding:
    kind: str            # a key of RULES
    message: str
    filename: str
    lineno: int
    fix: str
    inputs: list[str] = field(default_factory=list)  # inputs/parameters without gradient

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno}: [{self.kind}] {self.message}. Fix: {self.fix}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``inspect --json``, ``lint --json``): stable keys."""
        return {"kind": self.kind, "message": self.message, "file": self.filename, "line": self.lineno,
                "fix": self.fix, "inputs": list(self.inputs)}


class GradientFlowWarning(UserWarning):
    """``optimize_loss(lint=True)``: a finding of the gradient-flow lint."""


def lint(fn: Callable, *inputs: Any, **kwinputs: Any) -> list[Finding]:
    """Findings of the gradient-flow lint for ``fn(*inputs, **kwinputs)``; ``fn`` runs once, on
    clones of the inputs (module parameters are used as they are; ``.grad`` is not touched)."""
    args, kwargs = clone_inputs(inputs, kwinputs)
    wrt = _named_inputs(fn, args, kwargs)
    _, home, def_line = frontend.describe(fn.forward if isinstance(fn, torch.nn.Module) else fn)
    tracker = _Tracker({id(t) for t in wrt.values()}, home)
    try:
        # Packing returns the tensor itself: the hooks only record what autograd saved.
        with torch.enable_grad(), tracker, torch.autograd.graph.saved_tensors_hooks(
                tracker.pack, lambda saved: saved):
            out = fn(*args, **kwargs)
    except Exception as exc:
        if exc is not tracker.explained:  # not an error the lint explains: the user's own
            raise
        return tracker.inplace
    grads = _gradients(out, wrt)
    findings = list(tracker.inplace)
    missing = {name: g for name, g in grads.items() if g is None or not g.any()}
    by_place: dict[tuple, Finding] = {}
    for name, grad in missing.items():
        state = "gets no gradient" if grad is None else "gets an identically zero gradient"
        culprits = [e for e in tracker.events if e.used and (not e.leaves or id(wrt[name]) in e.leaves)]
        if not culprits:
            culprits = [_Event("no_gradient", "", (home, def_line), frozenset(), used=True)]
        for event in culprits:
            key = (event.kind, event.where, event.op)
            if key not in by_place:
                by_place[key] = event.finding()
            finding = by_place[key]
            finding.inputs.append(name)
            finding.message = f"{', '.join(finding.inputs)} {state}: {event.describe()}"
    return findings + list(by_place.values())


def warn(fn: Callable, args: tuple, kwargs: dict) -> None:
    """``optimize_loss(lint=True)``: one ``GradientFlowWarning`` per finding, at its file:line."""
    if not torch.is_grad_enabled():
        return  # evaluation: no gradient is wanted
    try:
        findings = lint(fn, *args, **kwargs)
    except Exception:
        return  # the call itself raises the same error to the user, unchanged
    for finding in findings:
        warnings.warn_explicit(str(finding), GradientFlowWarning, finding.filename, finding.lineno)


@dataclass
class _Event:
    """One op that cut (or zeroed) the gradient path of the tensors in ``leaves``."""
    kind: str
    op: str
    where: tuple[str, int]
    leaves: frozenset[int]       # ids of the inputs whose path it cuts; empty: unknown (rewrap)
    used: bool                   # deferred kinds: only once used as a value
    used_at: tuple[str, int] | None = None
    details: dict = field(default_factory=dict)

    def describe(self) -> str:
        text = RULES[self.kind].message.format(op=self.op, **self.details)
        if self.used_at and self.used_at != self.where:
            text += f" (used as a value at line {self.used_at[1]})"
        return text

    def finding(self) -> Finding:
        return Finding(self.kind, self.describe(), self.where[0], self.where[1], RULES[self.kind].fix)


class _Tracker(TorchFunctionMode):
    """Watches every torch call of one run: cuts of the gradient path, and in-place ops."""

    def __init__(self, known_leaves: set[int], home: str):
        super().__init__()
        self.known_leaves = known_leaves
        self.home = home
        self.events: list[_Event] = []
        self.inplace: list[Finding] = []
        self.taint: WeakIdKeyDictionary = WeakIdKeyDictionary()  # no-grad tensor -> deferred _Event
        self.saved: dict[int, list] = {}  # storage ptr -> [(tensor, version, op, where)]
        self.current_op = "?"
        self.explained: BaseException | None = None  # the in-place error the lint reported

    # saved_tensors_hooks: remember what autograd saved, to catch in-place changes to it later
    def pack(self, t: torch.Tensor) -> torch.Tensor:
        self.saved.setdefault(_storage(t), []).append((t, t._version, self.current_op, self.where()))
        return t

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        op = _op_name(func)
        ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        self.current_op = op
        try:
            result = func(*args, **kwargs)
        except RuntimeError as exc:
            if "leaf Variable that requires grad" in str(exc):
                self._inplace("inplace_leaf", op)
                self.explained = exc
            raise
        if _is_inplace(op, kwargs) and ins:
            self._check_saved(op, kwargs.get("out") if kwargs.get("out") is not None else ins[0])
        if op in _SETS_REQUIRES_GRAD:
            if args[0].grad_fn is None and id(args[0]) not in self.known_leaves:
                self._event("rewrap", op, frozenset(), used=True)
        elif not _shape_only(op):
            self._check_flow(op, ins, result)
        return result

    def _check_flow(self, op: str, ins: list, result: Any) -> None:
        outs = [t for t in tree_flatten(result)[0] if isinstance(t, torch.Tensor)]
        # A new leaf that requires grad: torch.tensor(x, requires_grad=True), torch.zeros(..., requires_grad=True)
        new_leaves = [t for t in outs if t.requires_grad and t.grad_fn is None
                      and id(t) not in self.known_leaves and not any(t is i for i in ins)]
        if new_leaves:
            self._event("rewrap", op, frozenset(), used=True)
        grad_in = [t for t in ins if t.requires_grad]
        if grad_in:
            fresh = {id(t) for t in new_leaves}
            self._cut(op, grad_in, [t for t in outs if not t.requires_grad or id(t) in fresh], result)
            return
        tainted = next((self.taint[t] for t in ins if t in self.taint), None)
        if tainted is None:
            return
        for t in outs:
            if not t.requires_grad:
                self.taint[t] = tainted
        # Integers/booleans made into floats or Python numbers: the deferred cut is now a value.
        as_value = not isinstance(result, torch.Tensor) and op in RULES["python_value"].ops
        as_value |= bool(outs) and all(_is_float(t) for t in outs) and not any(map(_is_float, ins))
        if as_value and not tainted.used:
            tainted.used, tainted.used_at = True, self.where()

    def _cut(self, op: str, grad_in: list, cut: list, result: Any) -> None:
        """``op`` took tensors that require grad (``grad_in``); ``cut`` are its outputs without
        a gradient path to them."""
        kind = _RULE_OF_OP.get(op)
        if kind == "zero_derivative" or (kind == "python_value" and not isinstance(result, torch.Tensor)):
            self._event(kind, op, _leaves(grad_in), used=True)
            return
        if not cut:
            return
        if not torch.is_grad_enabled() and kind not in ("detach", "data"):
            kind = "no_grad"
        # Integer/bool outputs (masks, indices) are deferred: a mask used to index is fine.
        event = self._event(kind or "non_differentiable", op, _leaves(grad_in),
                            used=any(map(_is_float, cut)))
        for t in cut:
            self.taint[t] = event

    def _event(self, kind: str, op: str, leaves: frozenset, used: bool) -> _Event:
        event = _Event(kind, op, self.where(), leaves, used)
        for old in self.events:  # the same op in a loop: one event
            if (old.kind, old.op, old.where) == (kind, op, event.where):
                old.leaves |= leaves
                return old
        self.events.append(event)
        return event

    def _check_saved(self, op: str, target: torch.Tensor) -> None:
        for _, version, saver, saved_at in self.saved.get(_storage(target), ()):
            if target._version > version:
                self._inplace("inplace_saved", op, saver=saver, saved_at=f"line {saved_at[1]}")
                return

    def _inplace(self, kind: str, op: str, **details: str) -> None:
        where = self.where()
        if any((f.kind, f.filename, f.lineno) == (kind, *where) for f in self.inplace):
            return
        event = _Event(kind, op, where, frozenset(), True, details=details)
        self.inplace.append(event.finding())

    def where(self) -> tuple[str, int]:
        return caller_location(self.home)


# Frames in these directories are library code, not the user's.
_LIBRARY_DIRS = LIBRARY_DIRS + (sysconfig.get_paths()["stdlib"] + os.sep,)


def caller_location(home: str = "") -> tuple[str, int]:
    """``user_location`` of the current Python stack."""
    frame, frames = sys._getframe(1), []
    while frame is not None:
        frames.append((frame.f_code.co_filename, frame.f_lineno))
        frame = frame.f_back
    return user_location(frames, home)


def user_location(frames: Iterable[tuple[str, int]], home: str = "") -> tuple[str, int]:
    """The innermost (filename, line) of user code among ``frames`` (innermost first): the first in
    ``home`` (the user's file) if any, else the first outside torch, this package and the stdlib."""
    frames = list(frames)
    for filename, lineno in frames:
        if filename == home:
            return filename, lineno
    for filename, lineno in frames:
        if not filename.startswith(_LIBRARY_DIRS) and not filename.startswith("<"):
            return filename, lineno
    return frames[0] if frames else ("<unknown>", 0)


def _named_inputs(fn: Callable, args: tuple, kwargs: dict) -> dict[str, torch.Tensor]:
    """Inputs requiring grad, by parameter name when the signature allows, plus ``fn``'s own
    parameters when it is a module."""
    try:
        named = differentiable_inputs((), frontend.call_signature(fn).bind(*args, **kwargs).arguments)
    except (TypeError, ValueError):
        named = differentiable_inputs(args, kwargs)
    if isinstance(fn, torch.nn.Module):
        named.update({f"parameter {n}": p for n, p in fn.named_parameters() if p.requires_grad})
    return named


def _gradients(out: Any, wrt: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
    values = [v for v in tree_flatten(out)[0] if isinstance(v, torch.Tensor) and v.requires_grad]
    if not wrt or not values:
        return dict.fromkeys(wrt)
    # A random cotangent: summing would zero the gradient of centred outputs (x - x.mean()).
    gen = torch.Generator().manual_seed(0)
    total = sum((v * torch.randn(v.shape, generator=gen, dtype=v.dtype).to(v.device)).sum()
                for v in values)
    found = torch.autograd.grad(total, list(wrt.values()), allow_unused=True)
    return dict(zip(wrt, found))


def _leaves(tensors: list[torch.Tensor]) -> frozenset[int]:
    """Ids of the leaf tensors requiring grad that ``tensors`` were computed from."""
    found, seen = set(), set()
    todo = []
    for t in tensors:
        if t.grad_fn is None:
            found.add(id(t))
        else:
            todo.append(t.grad_fn)
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # AccumulateGrad: the leaf itself
        if variable is not None:
            found.add(id(variable))
        todo.extend(next_fn for next_fn, _ in node.next_functions)
    return frozenset(found)


def _op_name(func: Any) -> str:
    name = getattr(func, "__name__", repr(func))
    if name in ("__get__", "__set__"):  # a property such as Tensor.data or .requires_grad
        return getattr(getattr(func, "__self__", None), "__name__", name)
    return name


def _is_inplace(op: str, kwargs: dict) -> bool:
    return op == "__setitem__" or kwargs.get("out") is not None or (
        op.endswith("_") and not op.startswith("_") and op not in _SETS_REQUIRES_GRAD)


def _is_float(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


def _storage(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except RuntimeError:  # tensors without storage (e.g. sparse)
        return id(t)
