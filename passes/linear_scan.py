"""The parallel scan of a first-order linear recurrence, run by generated code.

``linear_scan(a, b, s0, a_steps, b_steps, trips, reverse)`` returns every state of
``s_t = a_t * s_(t-1) + b_t`` for ``t = 0 .. trips-1`` from ``s_(-1) = s0``, stacked along a new
dim 0. ``a`` and ``b`` are per-step values stacked along dim 0 when ``a_steps`` / ``b_steps``,
else one value for every step (a Python number or a tensor). With ``reverse`` the steps run from
the last to the first (``s_t = a_t * s_(t+1) + b_t``, a loop over ``reversed(range(...))``); the
states are still stacked in the order of ``t``.

Method: Hillis-Steele over the affine maps ``s -> A * s + B``. After round ``r`` each step holds
the composition of the ``2**r`` maps ending there, so ``ceil(log2(trips))`` rounds of elementwise
ops give every prefix; the states are then ``A_t * s0 + B_t``. Only products and sums: no
division by a cumulative product, which underflows (or is zero, ``1 - done``) on long sequences.
The sums are formed in another order than the loop's, so values agree within the dtype's
rounding, not bit for bit; gradients are autograd's through these ops. float16 and bfloat16
states are computed step by step instead (``_ROUNDED_EVERY_STEP``): the loop's rounding at every
step moves its states by more than that (a long EMA stagnates), and no scan reproduces it.

dtype and shape are those of the original's states: the first state ``a_0 * s0 + b_0`` is
computed as the loop computes it, and every step is cast to its dtype and broadcast to its shape
(a state's shape is fixed by the first step: later steps broadcast to it or the loop would have
raised, and the check of the rewritten loop keeps the shapes it vectorizes alike).

A running sum (``a`` the number 1, no resets) is one ``torch.cumsum`` from the first state, in
the states' dtype (an integer sum is not widened to int64): the loop's additions in the loop's
order (CPU's float64 cumsum gives the loop's bits; its float32 one accumulates in double, within
the loop's rounding).

Resets, ``if c: s = 0`` right before the step (``resets``: every step's ``c``, stacked when
``resets_steps``): a step whose ``c`` is true (nonzero, or NaN, as ``bool``) computes
``a_t * 0 + b_t``, whatever came before. The scan carries a flag per prefix ("a reset is in
it") and selects, before and after each product, instead of multiplying the earlier states by a
zero factor: ``0 * inf`` would be NaN where the loop starts cleanly again, and the gradient
reaching the discarded states is zero, not ``0 * inf``. The step-by-step path selects alike.

``previous_states(states, s0, reverse)``: what a step reads of a value the step before set (a
name assigned at the end of the body, read before), ``s0`` at the first step.

``scan_numbers(...)``: ``linear_scan`` of Python numbers (``passes.loops.scan_python_numbers``):
per-step lists of floats and the invariants in float64 (a Python float is a double), the states
a list of Python floats in the order of ``t``. The loop rounds every step to a double, the scan
sums in another order: every state is within float64 rounding of the loop's,
``|scan - loop| <= 4 * (trips + 1) * 2**-52 * sum(|term|)`` over the state's terms (``b_k``
times its factors), inf and NaN where the loop's are. ``numbers_scan_pays(...)`` is the check its branch runs behind.
"""
from __future__ import annotations

import torch

# The dtypes whose rounding at every step the loop's states depend on beyond the dtype's
# precision (a 0.999-EMA in bfloat16 stagnates: a step adding under half an ulp adds nothing):
# their states are computed step by step, as the loop computes them.
_ROUNDED_EVERY_STEP = (torch.float16, torch.bfloat16)

# From which trip count the scan of Python numbers beats the loop walking them, by what the loop
# walks: a tensor yields a 0-d tensor per step (its `if flag` a `bool()` of a tensor, ~3 us a
# step), a list of numbers a number (~0.2 us a step, and `insert(0, ...)` moving the list). The
# scan costs ~1.5 ms at any length on this CPU (its log2(trips) rounds of ops). Measured on the
# PPO returns loop (examples/real/rl_ppo_mc_returns.py's, returning the list), the loop as
# written against the scan (this threshold at 1), optimize_loss(compile=False,
# keep_faster=False), median CPU time, one thread, alternating in one process:
#   trips                    128      512      2048     8192
#   loop, tensor of flags    0.33 ms  1.41 ms  6.27 ms  36.6 ms
#   scan                     1.49     1.99     3.25     5.89
#   loop, list of bools      0.03     0.14     1.24     17.5
#   scan                     1.65     2.04     3.54     7.83
# (1.9x at 2048 walking a tensor, 2.2x at 8192 walking lists.) Below these, the loop as written.
NUMBERS_SCAN_MIN_TRIPS = {"tensor": 1024, "numbers": 8192}

# The Python numbers a double holds exactly (an int beyond, converted, would round or overflow
# where the loop's arithmetic would not).
_EXACT_INT = 2 ** 53


def linear_scan(a, b, s0, a_steps: bool, b_steps: bool, trips: int,
                reverse: bool, resets=None, resets_steps: bool = False) -> torch.Tensor:
    if reverse:
        a, b = (a.flip(0) if a_steps else a), (b.flip(0) if b_steps else b)
        resets = resets.flip(0) if resets_steps else resets
    first = (a[0] if a_steps else a) * s0 + (b[0] if b_steps else b)
    R = None if resets is None else _reset_flags(resets, resets_steps, first, trips)
    if R is not None:  # the first state as the loop computes it at a reset
        first = (a[0] if a_steps else a) * _dropped(s0, R[0], first) + (b[0] if b_steps else b)
    if first.dtype in _ROUNDED_EVERY_STEP:
        return _step_by_step(a, b, first, a_steps, b_steps, trips, reverse, R)
    B = _steps(b, b_steps, first, trips, full=True)
    if R is None and not a_steps and type(a) in (int, float) and a == 1:  # a running sum
        states = torch.cat([first[None], B[1:]]).cumsum(0, dtype=first.dtype)
        return states.flip(0) if reverse else states
    A = _steps(a, a_steps, first, trips, full=False)
    if R is not None:
        return _scan_with_resets(A, B, s0, R, reverse)
    offset = 1
    while offset < trips:  # both updates read the previous round's A
        A, B = (torch.cat([A[:offset], A[offset:] * A[:-offset]]),
                torch.cat([B[:offset], A[offset:] * B[:-offset] + B[offset:]]))
        offset *= 2
    states = A * s0 + B
    return states.flip(0) if reverse else states


def _scan_with_resets(A, B, s0, R, reverse: bool) -> torch.Tensor:
    """The scan above where ``R`` marks the steps that start again from 0: a reset step's map is
    ``s -> A * 0 + B``; composing a later map with a reset in it drops the earlier one."""
    B = torch.where(R, A * 0 + B, B)
    offset = 1
    while offset < B.shape[0]:
        later = R[offset:]
        kept = A[offset:] * torch.where(later, 0, B[:-offset]) + B[offset:]
        A, B, R = (torch.cat([A[:offset], A[offset:] * A[:-offset]]),
                   torch.cat([B[:offset], torch.where(later, B[offset:], kept)]),
                   torch.cat([R[:offset], later | R[:-offset]]))
        offset *= 2
    states = torch.where(R, B, A * _dropped(s0, R, B) + B)
    return states.flip(0) if reverse else states


def _dropped(s0, R: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``s0``, 0 where ``R``: selected before the product, so no ``0 * inf`` reaches a value or
    a gradient. A Python number converted straight to the states' dtype (not through float32)."""
    if not isinstance(s0, torch.Tensor):
        s0 = torch.as_tensor(s0, dtype=like.dtype, device=like.device)
    return torch.where(R, 0, s0)


def _reset_flags(resets, per_step: bool, first: torch.Tensor, trips: int) -> torch.Tensor:
    """Every step's reset as a bool aligned with the states' dims: ``c != 0`` is ``bool(c)``
    for numbers and one-element tensors (NaN is true). A step's ``c`` of several elements makes
    ``if c`` raise: raised here with the loop's message."""
    r = torch.as_tensor(resets, device=first.device)
    if r.dim() > (1 if per_step else 0):
        bool(r[0] if per_step else r)
    r = r.reshape(trips if per_step else 1, *[1] * first.dim()) != 0
    return r.expand(trips, *[1] * first.dim())


def _step_by_step(a, b, first: torch.Tensor, a_steps: bool, b_steps: bool, trips: int,
                  reverse: bool, R: torch.Tensor | None) -> torch.Tensor:
    """Every state as the loop computes it (``a`` and ``b`` as given, steps in run order);
    a step of another dtype or shape (only where the check allows broadcasting) is brought to
    the first's, as in the scan. Steps taken by ``unbind``: indexing costs more than the ops."""
    a_t = a[1:].unbind(0) if a_steps else [a] * (trips - 1)
    b_t = b[1:].unbind(0) if b_steps else [b] * (trips - 1)
    r_t = R[1:].unbind(0) if R is not None else [None] * (trips - 1)
    states = [first]
    for at, bt, rt in zip(a_t, b_t, r_t):
        previous = states[-1] if rt is None else torch.where(rt, 0, states[-1])
        state = at * previous + bt
        if state.dtype != first.dtype or state.shape != first.shape:
            state = state.to(first.dtype).expand(first.shape)
        states.append(state)
    states = torch.stack(states)
    return states.flip(0) if reverse else states


def _steps(v, per_step: bool, first: torch.Tensor, trips: int, full: bool) -> torch.Tensor:
    """``v`` as ``trips`` steps of the state's dtype, its dims aligned with the state's last
    dims; ``full``: broadcast to the state's shape (else a constant factor stays one number per
    step: its products cost nothing). A Python number is converted straight to that dtype
    (through float32 it would lose digits in float64)."""
    v = torch.as_tensor(v, dtype=first.dtype, device=first.device)
    step = v.shape[1:] if per_step else v.shape
    v = v.reshape(trips if per_step else 1, *[1] * (first.dim() - len(step)), *step)
    return v.expand(trips, *(first.shape if full else v.shape[1:]))


def computed_alike(*values, bools: bool = False) -> bool:
    """Whether a scan's multiplied-out parts are computed in the dtype the loop computes them in.
    The loop computes ``c * (a * s + b)`` in the state's dtype; the scan takes ``c * a`` and
    ``c * b``, computed in the dtype of ``c`` and ``a``: a float32 mask times a float64 state
    rounds to float32 there, where the loop keeps float64 (values off by float32 rounding in a
    float64 loss). ``values`` are what the recurrence reads (its tensors, also as the first item
    of a list or tuple: the scan stacks only items of one dtype, and Python numbers need no
    check; and its state before the loop): every floating tensor among them of one dtype
    makes every such product of that dtype (a ``torch.dtype`` among them: one the step converts
    a value to, ``m[t].float()``); integer tensors only beside the default dtype or no
    floating tensor (their products with Python floats are of the default dtype); bool tensors as integers with ``bools``, else no
    (``b - m * s`` is scanned with the factor ``-m``, which torch refuses for a bool ``m``);
    complex no. A reset to 0 (``if done: s = 0``) makes the loop's next state of the parts'
    dtype alone: the same as the state before the loop's when they are alike."""
    floats, ints = set(), False
    for v in values:
        for t in (v[:1] if type(v) in (list, tuple) else (v,)):  # stacked: one dtype
            dtype = t.dtype if isinstance(t, torch.Tensor) else t  # a dtype the step converts to
            if not isinstance(dtype, torch.dtype):
                continue
            if dtype.is_complex or dtype == torch.bool and not bools:
                return False
            if dtype.is_floating_point:
                floats.add(dtype)
            else:
                ints = True
    return len(floats) <= 1 and (not ints or floats <= {torch.get_default_dtype()})


def previous_states(states: torch.Tensor, s0, reverse: bool) -> torch.Tensor:
    """Every step's value of a name the step before gave it (``states`` stacked in the order of
    the steps' index), ``s0`` (a Python number) at the first step: the state of the step before
    in the order the loop runs, converted to the states' dtype and shape."""
    first = torch.full_like(states[:1], s0)
    return torch.cat([states[1:], first]) if reverse else torch.cat([first, states[:-1]])


# Python-number scans and their check run outside a compiled graph: Dynamo would trace each
# item of the lists as a graph input (a graph the size of the list, compiled again per list).
@torch.compiler.disable
def numbers_scan_pays(trips, floats: tuple, flags: tuple, numbers: tuple) -> bool:
    """Whether ``scan_numbers`` computes the loop's states and pays: ``floats`` (the per-step
    factors and terms) non-empty lists or tuples of Python floats alone (so every state is a
    float, as the loop's), ``flags`` (per-step resets) lists or tuples of bools, ints and floats
    (``if c`` is ``c != 0``, NaN true) or 1-D tensors, ``numbers`` (the invariants and the state
    before the loop) Python numbers a double holds exactly; and ``trips`` at least the trip count
    from which the scan beats the loop (``NUMBERS_SCAN_MIN_TRIPS``). Numpy numbers, tensors
    among the items and the like: the loop runs as written. Sets of types: one pass in C."""
    walks_tensor = any(isinstance(f, torch.Tensor) for f in flags)
    if trips < NUMBERS_SCAN_MIN_TRIPS["tensor" if walks_tensor else "numbers"]:
        return False
    return all(type(x) in (list, tuple) and set(map(type, x)) == {float} for x in floats) \
        and all(_flags(f) for f in flags) and all(
            type(v) in (bool, float) or type(v) is int and abs(v) <= _EXACT_INT for v in numbers)


def _flags(f) -> bool:
    if isinstance(f, torch.Tensor):
        return f.dim() == 1
    kinds = set(map(type, f)) if type(f) in (list, tuple) else {None}
    return kinds <= {bool, int, float} and (int not in kinds or (
        -_EXACT_INT <= min(f) and max(f) <= _EXACT_INT))


@torch.compiler.disable
def scan_numbers(a, b, s0, a_steps: bool, b_steps: bool, trips: int, reverse: bool,
                 resets=None, resets_steps: bool = False) -> list:
    """``linear_scan`` of Python numbers (see ``numbers_scan_pays``): the per-step lists as
    float64 tensors, the states as a list of Python floats."""
    def f64(v, steps):
        return torch.tensor(v, dtype=torch.float64) if steps and type(v) in (list, tuple) else v
    return linear_scan(f64(a, a_steps), f64(b, b_steps), s0, a_steps, b_steps, trips, reverse,
                       f64(resets, resets_steps), resets_steps).tolist()
