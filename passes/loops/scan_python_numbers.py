"""Scans of per-step Python numbers: a second vectorized branch for a scanned loop.

Part of ``linear_recurrences_to_scans``. RL code keeps its rollouts in Python lists (PPO's
``memory.rewards``, ``memory.is_terminals``) and walks them backwards::

    for reward, is_terminal in zip(reversed(rewards_buffer), reversed(is_terminals)):
        if is_terminal:
            discounted_reward = 0
        discounted_reward = reward + (self.gamma * discounted_reward)
        rewards.insert(0, discounted_reward)

The scan's step loop wants its per-step values as tensors; on lists of floats its check is false
and the loop runs as written. When every per-step factor, term and reset of the recurrences is a
walked list's item itself (``reward``, through names bound once to ``xs[k]``), the scan also
runs on the lists as they are, behind its own check::

    elif _numbers_scan_pays(len(xs), (xs,), (flags,), (self.gamma, discounted_reward)) and ...:
        _s_all = _scan_numbers(self.gamma, xs, discounted_reward, False, True, len(xs), True,
                               flags, True)
        <the rest of the loop as written, reading _s_all[k]>

``_numbers_scan_pays`` (``passes.linear_scan``) holds when the factors and terms are lists or
tuples of Python floats (every state is then a float, as the loop's), the resets lists of
bools, ints and floats or a 1-D tensor (``if c`` is ``c != 0``), the invariants and the state
before the loop Python numbers, and the trip count reaches the one from which the scan beats the
loop (a short scan is slower than the loop: data in ``linear_scan``). ``_scan_numbers`` scans in
float64 and gives a list of Python floats: values within float64 rounding of the loop's, not bit
for bit (``|scan - loop| <= 4 * (trips + 1) * 2**-52 * sum(|term|)``, see ``linear_scan``). Numpy numbers, ints among the factors, tensors among the items: the loop as written.

The loop must step through ``range(len(xs))`` of the walked sequences themselves (what a walk
backwards becomes), so that the steps' items are the whole sequence. Statements the scan needs
before the recurrence besides those bindings (a value read from a written array, a carried one)
keep this branch out: the tensor branch alone handles them.
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, clone, is_int, is_name, is_pure, replace, unparse, walk
from ..linear_scan import NUMBERS_SCAN_MIN_TRIPS, numbers_scan_pays, scan_numbers
from .loop_dataflow import loads, stores
from .plan import Iteration


def branch(parts: dict[str, dict[str, ast.expr]], per_step: set[tuple[str, str]],
           body: list[ast.stmt], it: Iteration, reverse: bool, values: dict[str, str],
           ctx: PassContext, loc: ast.stmt) -> tuple[list[ast.expr], list[ast.stmt]] | None:
    """The checks and the scans of the branch over Python numbers (by state, its ``parts``: the
    ``a``, ``b`` and ``reset`` expressions, ``per_step`` those that vary; ``values``: each
    state's ``_s_all``), or None when a per-step part is no walked sequence's item. The checks:
    ``numbers_scan_pays`` (which proves the sequences are lists, tuples or tensors), then every
    walked sequence as long as the loop's trips (its items are the steps')."""
    if not (is_int(it.start, 0) and is_int(it.step, 1)):
        return None
    groups: dict[str, list[ast.expr]] = {"floats": [], "flags": [], "numbers": []}
    scans = []
    for state, by_part in parts.items():
        if not {(state, "a"), (state, "b")} & per_step:
            return None  # only the resets vary: the states may be ints
        args = {}
        for part in ("a", "b", "reset"):
            expr, steps = by_part.get(part, ast.Constant(0)), (state, part) in per_step
            if steps and (expr := _walked(expr, body, it)) is None:
                return None
            if part in by_part:  # a missing term is the constant 0
                groups[_GROUP[part] if steps else "numbers"].append(expr)
            args[part], args[part + "_steps"] = clone(expr), ast.Constant(steps)
        groups["numbers"].append(ast.Name(state, ast.Load()))
        call = _CALL_WITH_RESETS if "reset" in by_part else _CALL
        scans += replace(call, loc=loc, all_=values[state], s=state, n=clone(it.stop),
                         f=ctx.bind(scan_numbers, "scan_numbers"), r=ast.Constant(reverse),
                         **args)
    walked = {unparse(e): e for e in groups["floats"] + groups["flags"]}
    lengths = [replace("len(xs) == n", xs=clone(e), n=clone(it.stop)) for text, e in walked.items()
               if unparse(it.stop) != f"len({text})"]
    pays = replace("f(n, floats, flags, numbers)", n=clone(it.stop),
                    f=ctx.bind(numbers_scan_pays, "numbers_scan_pays"),
                    **{k: ast.Tuple([clone(e) for e in v], ast.Load()) for k, v in groups.items()})
    return [pays] + lengths, scans


# What a per-step part's sequence must hold (``numbers_scan_pays``'s groups).
_GROUP = {"a": "floats", "b": "floats", "reset": "flags"}
_CALL = "all_ = f(a, b, s, a_steps, b_steps, n, r)"
_CALL_WITH_RESETS = "all_ = f(a, b, s, a_steps, b_steps, n, r, reset, reset_steps)"


def why() -> str:
    """The report's account of the branch."""
    return ("; on lists of Python floats, a scan in float64 from {tensor} steps ({numbers} when "
            "no tensor is walked: a shorter scan is slower than the loop), the rest as written"
            .format(**NUMBERS_SCAN_MIN_TRIPS))


def _walked(e: ast.expr, body: list[ast.stmt], it: Iteration) -> ast.expr | None:
    """``xs`` when ``e`` is ``xs[k]`` of the loop's index ``k`` (``xs`` bound before the loop),
    or a name the body binds once to such a value (through other names
    too; ``_prelude`` has refused a name read before its binding, a carried one); None
    otherwise."""
    seen = set()
    while isinstance(e, ast.Name) and e.id not in seen:
        seen.add(e.id)
        binds = [n for s in body for n in walk(s) if isinstance(n, ast.stmt) and e.id in stores(n)]
        if len(binds) != 1 or not isinstance(binds[0], ast.Assign) or binds[0] not in body \
                or len(binds[0].targets) != 1:
            return None
        e = binds[0].value
    if not (isinstance(e, ast.Subscript) and is_name(e.slice, it.index) and is_pure(e.value)):
        return None
    bound = set().union(*(stores(n) for s in body for n in walk(s) if isinstance(n, ast.stmt)))
    return None if loads(e.value) & bound else e.value
