"""The loop plan: what the stages of ``vectorize_loops.LOOP_STAGES`` know about one loop.

Each stage is ``stage(plan, ctx) -> plan``: it reads the fields earlier stages filled, fills its
own, and raises ``Unsupported(reason, lineno)`` when the loop must run as written. The plan works
on a copy of the loop body, so a refusal at any stage leaves the function unchanged.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from ..ast_tools import Checks, Namer, PassContext, is_int, replace, unparse
from ..errors import Unsupported
from .loop_dataflow import LoopFacts


@dataclass
class Iteration:
    """What a loop iterates: an index over ``range(start, stop, step)`` and/or elements."""
    index: str
    start: ast.expr
    stop: ast.expr
    step: ast.expr
    elements: list[tuple[str, ast.expr]] = field(default_factory=list)  # (name, iterable)
    index_is_user: bool = True

    def trips(self, plan: "LoopPlan") -> ast.expr:
        """The number of iterations, as an expression of the vectorized branch (where
        ``runs_at_all`` holds). With step 1 it is plain arithmetic on the bounds: under
        torch.compile, ``len(range(...))`` of a size would make Dynamo specialise that size and
        compile one graph per batch size."""
        if not is_int(self.step, 1):
            return plan.sub("len(range(a, b, s))", a=self.start, b=self.stop, s=self.step)
        if is_int(self.start, 0):
            return plan.sub("b", b=self.stop)
        return plan.sub("b - a", a=self.start, b=self.stop)

    def runs_at_all(self, plan: "LoopPlan") -> list[ast.expr]:
        """At least one iteration, as conditions. With step 1: int bounds (what ``range`` takes,
        sizes traced as symbols included; anything else runs the loop as written, which raises
        as before) and ``stop > start``, no ``len(range(...))`` (see ``trips``)."""
        if not is_int(self.step, 1):
            return [plan.sub("len(range(a, b, s)) > 0", a=self.start, b=self.stop, s=self.step)]
        ints = [plan.sub("isinstance(x, int)", x=x) for x in (self.start, self.stop)
                if not (isinstance(x, ast.Constant) and type(x.value) is int)]
        return ints + [plan.sub("b > a", a=self.start, b=self.stop)]


@dataclass
class Accumulator:
    """An accumulator ``s`` of the loop: each iteration gives one value, folded after the loop."""
    part: str                    # per-iteration name: the partial (sum/prod) or the step value
    family: str                  # rules.FAMILY_*
    stacked: ast.expr            # the stacked per-iteration values (``_outs[k]``)
    kinds: set[str]              # what the original added: "int", "float" or "tensor"
    rebound: bool = False        # updated by ``s = s + e``, not ``s += e``
    masks: list[str | None] = field(default_factory=list)  # each update's mask (None: none)
    guarded: set[str] = field(default_factory=set)  # the kinds added under a Python condition
    flags: set[str] = field(default_factory=set)  # ... those set under a Python condition
    # ... those that are inner loops' counters of the iterations selecting their updates
    counters: set[str] = field(default_factory=set)
    # the original makes several additions (products) of it per iteration: two updates, a
    # chain `s + a + b`, an inner loop's fold (a float16/bfloat16 one rounds after each)
    several: bool = False
    # ... those that are inner loops' Python tests on loop indices: name -> the test
    selected_when: dict[str, ast.expr] = field(default_factory=dict)
    # every value added is a Python number in the vectorized body too (an item's sizes:
    # ``number_kinds.on_host``)
    on_host: bool = True


@dataclass
class RowSlice:
    """``x[prefix..., a:b:s]`` handed to the body as one parameter, mapped over the loop axis."""
    param: str
    # full slices and fixed ints (which drop their dims), or only ``...``: the last dim's rows
    prefix: list[ast.expr]

    @property
    def from_end(self) -> bool:
        """``x[..., a:b:s]``: the rows along the last dim."""
        return any(isinstance(x, ast.Constant) and x.value is Ellipsis for x in self.prefix)

    @property
    def axis(self) -> int:
        """The dim of ``x[prefix]`` the loop goes along."""
        return -1 if self.from_end else sum(isinstance(x, ast.Slice) for x in self.prefix)

    @property
    def fixed(self) -> int:
        """The fixed ints before that dim, each dropping a dim."""
        return 0 if self.from_end else sum(not isinstance(x, ast.Slice) for x in self.prefix)


@dataclass
class BodyParam:
    """A parameter of the outlined body, bound to ``value``: all iterations' values, the loop
    axis in front. ``rows_of``: the tensor its rows come from (None for the index), with
    ``fixed`` int entries before the loop axis (they drop dims)."""
    name: str
    value: ast.expr
    rows_of: ast.expr | None = None
    fixed: int = 0


@dataclass
class OwnList:
    """The stacked values of a comprehension's own list (``_items``)."""
    values: ast.expr
    host: str | None             # the Python number kind of its items, None for tensors


MARKER = "optimize_loss: loop at line {} vectorized"  # leads a vectorized loop's statements


def is_vectorized_guard(node: ast.AST) -> bool:
    """The ``if <check>: <vectorized> else: <original>`` a vectorized loop stands as."""
    return (isinstance(node, ast.If) and len(node.orelse) == 1 and bool(node.body)
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
            and isinstance(node.body[0].value.value, str)
            and node.body[0].value.value.startswith("optimize_loss: loop at line"))


def _as_written(node: ast.AST) -> list[ast.AST]:
    """The nodes of ``node`` the user wrote: of an inner loop vectorized before it, standing as
    its guard (``is_vectorized_guard``), the loop as written (its else) only."""
    if is_vectorized_guard(node):
        return _as_written(node.orelse[0])
    return [node] + [n for child in ast.iter_child_nodes(node) for n in _as_written(child)]


_COMPUTED = "a value the rewrite computes"  # where a reason would quote a generated value


@dataclass
class LoopPlan:
    """One loop on its way to vectorized statements (field groups in the order stages fill them)."""
    node: ast.For                                   # the loop as written (never modified)
    live_after: set[str]                            # names read after the loop
    zeros: set[str] = field(default_factory=set)    # bound to the int 0 when the loop starts
    numbers: dict[str, int | float] = field(default_factory=dict)  # ... to a number literal: it
    divided: dict[str, str] = field(default_factory=dict)  # divided after the loop: by what
    sole_divisors: set[str] = field(default_factory=set)  # ... read by that division only
    masks: set[str] = field(default_factory=set)    # bound to boolean tensors only (comparisons)
    outer_indices: set[str] = field(default_factory=set)  # enclosing loops' range/enumerate ints
    # enclosing ``range`` loops' indices -> their first and last values
    outer_bounds: dict[str, tuple[ast.expr, ast.expr]] = field(default_factory=dict)
    torch_name: str = "torch"                       # how generated code spells torch
    inner: bool = False          # inside another loop: its statements join the outer body
    outer_binds: set[str] = field(default_factory=set)  # ... whose other statements bind these
    host_arrays: dict[str, ast.expr] = field(default_factory=dict)  # bound to new numpy arrays
    # Lists: a comprehension's own (its `_items = []`), `lst = []` lists the loop may bind to
    # its stacked items, and those it does bind.
    own_lists: set[str] = field(default_factory=set)
    buildable_lists: set[str] = field(default_factory=set)
    # appended to, read in part after the loop: the op that may have a NaN/inf derivative
    lists_read_in_part: dict[str, str] = field(default_factory=dict)
    bound_lists: set[str] = field(default_factory=set)
    own_list_values: dict[str, OwnList] = field(default_factory=dict)
    # Names the function may hold as lists of tensors; those stacked in front of the guard
    # (``stack_tensor_lists``): the stacked name -> the list's, and the statements stacking them.
    list_names: frozenset[str] = frozenset()
    stacked: dict[str, str] = field(default_factory=dict)
    # ... and those that may be lists of Python numbers, stacked as a tensor of them too
    # (``number_list_operands``).
    number_lists: set[str] = field(default_factory=set)
    number_kinds: set[str] = field(default_factory=set)  # ... their kinds (never tensors)
    number_labels: set[str] = field(default_factory=set)  # ... int labels they are read at
    float_lists: set[str] = field(default_factory=set)  # ... those that must hold no ints
    # ... and those that may be lists of Python ints the loop uses only as indices, stacked as
    # an int64 tensor (``stack_tensor_lists``)
    index_lists: set[str] = field(default_factory=set)
    # Names held as lists, tuples or dicts, never tensors (displays, parameters indexed by a
    # string); their reads gathered in front of the guard (``gather_keyed_reads``): the rows'
    # name -> the read.
    host_containers: frozenset[str] = frozenset()
    gathered: dict[str, str] = field(default_factory=dict)
    # Views of all the windows a slice moving with the index reads (``moving_slices_to_windows``):
    # the view's name -> the slice as written.
    windows: dict[str, str] = field(default_factory=dict)
    # Elements iterated over the int64 tensor of a numpy array's ints (``index_tuples_to_tensors``)
    # -> the name of those ints as Python ints, which count the windows they pick.
    item_ints: dict[str, str] = field(default_factory=dict)
    # ... and the int64 tensor of them -> the array as written (the report names it)
    arrays: dict[str, str] = field(default_factory=dict)
    # Names the prelude binds to a 1-D tensor, or to a value the check refuses: iterated, their
    # items are 0-d (``torch.unique(labels)``, the tensor of ``e.tolist()``'s ints)
    one_d: set[str] = field(default_factory=set)
    # Generated names the effects go to in place of the user's values (a tensor written through
    # an attribute, ``attribute_writes_to_names``; a list filled at its front) -> as written.
    user_names: dict[str, str] = field(default_factory=dict)
    # Bound to iterators only (``iter(...)``) -> where the function reads them last.
    iterators: dict[str, tuple[int, int]] = field(default_factory=dict)
    local_defs: dict[str, ast.FunctionDef] = field(default_factory=dict)  # defined once, nested
    prelude: list[ast.stmt] = field(default_factory=list)
    # The body (a copy of the loop's), rewritten stage by stage; ``written``: as the user wrote
    # it (inner loops and helpers inlined), which the check reads so reasons quote their code.
    iteration: Iteration | None = None
    body: list[ast.stmt] = field(default_factory=list)
    written: list[ast.stmt] = field(default_factory=list)
    variant: set[str] = field(default_factory=set)  # names that vary with the iteration
    row_slices: dict[tuple[str, str], RowSlice] = field(default_factory=dict)  # (x, prefix)
    facts: LoopFacts | None = None                  # the final body's effects
    # Checks on shapes and arguments hoisted from the body: run once, before the vectorized form.
    first: list[ast.stmt] = field(default_factory=list)
    # Runtime checks: ``checks`` is the loop's; the others are collected by early stages and
    # join it in ``runtime_checks``.
    checks: Checks = field(default_factory=Checks)
    inner_checks: list[ast.expr] = field(default_factory=list)
    helper_checks: list[ast.expr] = field(default_factory=list)
    # Python conditions whose branch the body takes for all iterations (invariant_branches_to_checks)
    taken_branches: list[str] = field(default_factory=list)
    # Why the branches not taken for an in-place write run only as written (the refusal)
    switched_writes: list[str] = field(default_factory=list)
    # Values the body derives whose inner-loop checks run on the first item (first_item_checks)
    first_item_values: list[str] = field(default_factory=list)
    selection_checks: list[ast.expr] = field(default_factory=list)
    # Lists appended dense stand-ins of selections -> the name of their mask (per iteration).
    selection_appends: dict[str, str] = field(default_factory=dict)
    # Names bound to dense stand-ins of selections: no per-iteration value of the original.
    stand_ins: frozenset[str] = frozenset()
    selections_kept: str = ""  # why the body's selections stay as written, if they do
    pick_checks: list[ast.expr] = field(default_factory=list)  # Python numbers picked per item
    # Counters of empty max/min selections -> the error the original raised; where the
    # statements checking them are located.
    empty_selections: dict[str, str] = field(default_factory=dict)
    empty_selections_at: ast.stmt | None = None
    # Counters of iterations where a host function raised -> (its exception, the call).
    host_errors: dict[str, tuple[str, ast.AST]] = field(default_factory=dict)
    # Sums of host numbers -> their float64 twin (Python sums floats in double precision).
    wide: dict[str, str] = field(default_factory=dict)
    # Effects under masks: statement -> (its value made safe under the mask, the mask or None).
    masked: dict[ast.stmt, tuple[ast.expr, str | None]] = field(default_factory=dict)
    index_masks: set[str] = field(default_factory=set)  # ... of conditions on loop indices only
    index_tests: dict[str, ast.expr] = field(default_factory=dict)  # ... as the Python tests
    uses_where: bool = False
    # an inner fold of 16-bit items onto a start the outer body binds again, not to zeros
    restarted_steps: bool = False
    # What leaves an iteration: returned as ``outs``, folded / stored after the loop by ``folds``.
    init: list[ast.stmt] = field(default_factory=list)    # top of the body: partials' identities
    outs: str = ""
    outputs: list[str] = field(default_factory=list)
    # Outputs only an index pick reads (a builtin max/min's items, the picked one evaluated
    # again): returned detached, so no backward runs for them, not even one of zero cotangents
    # (0 * NaN/inf) that torch.compile runs for a graph output.
    detached: set[str] = field(default_factory=set)
    # Appended or written values that are Python floats in the vectorized body too (an item's
    # sizes: ``number_kinds.on_host``): returned as float64, Python's double (see python_floats)
    float_items: set[str] = field(default_factory=set)
    folds: list[ast.stmt] = field(default_factory=list)
    accumulators: dict[str, Accumulator] = field(default_factory=dict)
    # Conditions, with their reasons, under which a fold would change an accumulator's dtype
    # (which the original changes only when an iteration is selected) or wrap an integer sum:
    # the loop then runs as written (``promoting_folds_run_as_written``).
    promotions: list[tuple[ast.expr, str]] = field(default_factory=list)
    # An inner loop's sum and product partials -> the accumulator whose value at the loop they
    # fold onto (the outer body may bind it again, wider: reduced in the dtype of that fold)
    fold_starts: dict[str, str] = field(default_factory=dict)
    running: dict[str, str] = field(default_factory=dict)    # scanned accumulator -> running
    last_write: dict[str, str] = field(default_factory=dict)  # write target -> item last written
    scattered: set[str] = field(default_factory=set)          # written at data-dependent slots
    averaged: set[str] = field(default_factory=set)  # sums divided by the trip count: means
    averaged_flag: str = ""                          # set when the loop left means
    # sums divided by a counter on the device -> (the quotient, the flag set when it holds)
    quotients: dict[str, tuple[str, str]] = field(default_factory=dict)
    # The body outlined as a function of one iteration: its parameters with the loop inputs
    # they are bound to, and the statements mapping it with vmap.
    params: list[BodyParam] = field(default_factory=list)
    mapped: list[ast.stmt] = field(default_factory=list)
    # The vectorized statements: the batched form (behind ``batched_if``), else the vmap one.
    stmts: list[ast.stmt] = field(default_factory=list)
    unbatched: str = ""                                # why the body is mapped with vmap
    no_grad_reason: str = ""  # the report's: while what (invariant_values_take_no_grad), why
    batched_if: ast.expr | None = None
    namer: Namer | None = None  # the function's: which names are the user's (``quoted``)

    def sub(self, template: str, **subs) -> object:
        """``template`` filled, at the loop's location."""
        return replace(template, loc=self.node, torch_name=self.torch_name, **subs)

    def quote(self, node: ast.AST) -> str:
        """``node`` as the user wrote it: the node of the loop as written at its place, of its
        type, else the outermost one there (a row parameter ``_x_row`` stands where ``x[i]``
        stood); a statement a vectorized inner loop left (``temp += _outs[0]``), or a node
        at that whole loop's place (``losses.extend(...)`` of its appends), is that loop's
        header. ``node`` itself when none is there."""
        start = _span(node)[:2]
        there = [n for n in _as_written(self.node) if _span(n)[:2] == start and None not in start]
        exact = [n for n in there if _span(n) == _span(node)]
        # a statement where a loop starts was made of that loop (its vectorized guard too)
        loops = [n for n in there if isinstance(n, (ast.For, ast.While)) and n is not node
                 and (isinstance(node, ast.stmt) or _span(n) == _span(node))] \
            if not isinstance(node, (ast.For, ast.While)) else []
        found = loops[0] if loops else next((n for n in exact if type(n) is type(node)),
                                            (exact or [node])[0])
        if isinstance(found, ast.For) and found is not node:
            return f"for {unparse(found.target)} in {unparse(found.iter)}: ..."
        if isinstance(found, ast.While) and found is not node:
            return f"while {unparse(found.test)}: ..."
        return unparse(found)

    def quoted(self, reason: str) -> str:
        """``reason``, given on the rewritten body, with each piece of code it quotes that names
        a generated value (``_x_row.shape``) as the user's code where that node stands
        (``quote``); else, when nothing of theirs stands there, without that code. A renamed
        variable of the user's (``_npair`` of a comprehension's ``npair``) is spelled as theirs;
        the user's names are the namer's (those of their function and globals), else the loop's."""
        written = self.namer.written if self.namer else \
            {n.id for n in ast.walk(self.node) if isinstance(n, ast.Name)}
        renamed = self.namer.renamed if self.namer else {}

        def spelled(code: str) -> str:
            return re.sub(r"(?<![\w.])_\w*", lambda m: renamed.get(m.group(0), m.group(0)), code)

        def generated(code: str) -> bool:
            return any(n not in written for n in re.findall(r"(?<![\w.])_\w*", spelled(code)))

        def spelt(code: str, nodes: list[ast.AST]) -> bool:
            """Some node of ``nodes`` is ``code`` (a call ``f(...)``: its function is ``f``)."""
            return any(unparse(n) == code or isinstance(n, ast.Call)
                       and f"{unparse(n.func)}(...)" == code for n in nodes)

        def user_code(m: re.Match) -> str:
            code = m.group(1)
            nodes = list(ast.walk(ast.Module(self.body, [])))
            # code of the user's names that a stage made (``s.numel()`` of a functional write
            # ``s[k] = v``) where the loop as written has none: quoted as what stands there
            if not generated(code) and (not spelt(code, nodes)
                                        or spelt(code, _as_written(self.node))):
                return f"`{spelled(code)}`"
            calls = [n for n in nodes
                     if isinstance(n, ast.Call) and f"{unparse(n.func)}(...)" == code]
            found = [self.quote(n) for n in nodes if unparse(n) == code] + [
                f"{self.quote(n.func)}(...)" for n in calls  # its arguments left out
                if self.quote(n.func) != self.quote(n)] + [self.quote(n) for n in calls]
            quoted = next((spelled(q) for q in found if not generated(q)), None)
            return f"`{quoted}`" if quoted else _COMPUTED
        # "when _a, _b, `x` are tensors": one mention of the values the rewrite computes
        return re.sub(rf"({_COMPUTED}, )+{_COMPUTED}", "values the rewrite computes",
                      re.sub(r"`([^`]+)`", user_code, reason))

    def check(self, template: str, **subs) -> None:
        """Add ``template`` (filled) to the runtime check."""
        self.checks.add(self.sub(template, **subs))

    def need_plain_range(self) -> None:
        """Slices a:b:s select the same indices as range(a, b, s) when a >= 0 and s > 0; a step
        or start that is a literal int failing that would make a check that is never true."""
        it = self.iteration
        for what, x, least in (("step", it.step, 1), ("start", it.start, 0)):
            value = _literal_int(x)
            if value is not None and value < least:
                raise Unsupported(f"its rows are read by slices, and the range's {what} is "
                                  f"{value}: a slice reads rows in increasing order from "
                                  "row 0 up", self.node.lineno)
        if not (isinstance(it.start, ast.Constant) and isinstance(it.start.value, int)
                and it.start.value >= 0):
            self.check("a >= 0", a=it.start)
        if not (isinstance(it.step, ast.Constant) and isinstance(it.step.value, int)
                and it.step.value > 0):
            self.check("s > 0", s=it.step)

    def summed_parts(self) -> frozenset[str]:
        """The partials of sum accumulators: both forms leave them summed over the loop."""
        return frozenset(a.part for a in self.accumulators.values() if a.family == "sum")

    def python_floats(self) -> frozenset[str]:
        """The outputs that are Python floats in each iteration of the vectorized body (an
        item's sizes), which ``torch.as_tensor`` would round to float32: taken as float64."""
        return frozenset(a.part for a in self.accumulators.values() if a.on_host
                         and "float" in a.kinds and a.kinds <= {"int", "float"}) | self.float_items

    def averaged_parts(self) -> frozenset[str]:
        return frozenset(self.accumulators[name].part for name in self.averaged)

    def output(self, name: str) -> ast.expr:
        """Return ``name`` from each iteration; the stacked values' expression."""
        self.outputs.append(name)
        return self.sub(f"o[{len(self.outputs) - 1}]", o=self.outs)


def _literal_int(x: ast.expr) -> int | None:
    """The int ``x`` spells (``2``, ``-1``), or None."""
    if isinstance(x, ast.UnaryOp) and isinstance(x.op, ast.USub):
        inner = _literal_int(x.operand)
        return None if inner is None else -inner
    return x.value if isinstance(x, ast.Constant) and type(x.value) is int else None


def new_plan(node: ast.For, live_after: set[str], ctx: PassContext, **known) -> LoopPlan:
    """The plan of ``node``; ``known``: what the function's analysis knows about the loop
    (``zeros``, ``divided``, ``masks``, ``own_lists``, ``buildable_lists``, ``list_names``,
    ``host_containers``, ``iterators``)."""
    return LoopPlan(node, live_after, outs=ctx.namer.new("outs"), torch_name=ctx.torch_name,
                    namer=ctx.namer, **known)


def _span(node: ast.AST) -> tuple:
    """Where ``node`` stands in the source (None where it has no place)."""
    return tuple(getattr(node, a, None)
                 for a in ("lineno", "col_offset", "end_lineno", "end_col_offset"))
