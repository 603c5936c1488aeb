"""Stage: the final body has no form that fails on every call once it is vectorized.

Under ``torch.vmap`` (and in the batched form) a value that varies with the iteration is a
tensor of all iterations: it cannot become a Python value. What the earlier stages could not turn
into tensor ops (``host_roundtrips_to_tensor_ops``, ``tensor_branches_to_where``) keeps the loop as
written, with the reason at the user's line::

    L = lengths[i].item(); x[i, :L]      ->  Unsupported("slice bound `L` varies per iteration ...")
    sum(a if t > 0.5 else b for t in ts[i])  ->  Unsupported("conditional expression on `t > 0.5` ...")

Refused when they vary per iteration: Python conditions (``if``, ``x if c else y``, ``and``/``or``,
``not``, ``in``), slice bounds and steps (the reason says whether the slice's size varies too,
``_same_width``: ``r[i * k:(i + 1) * k]`` only moves), the sizes ops take (the registry's
``sizes``: a repeat
count ``x[i].repeat(lens[i], 1)``, a window length ``torch.hann_window(n_fft)``, a shape
``torch.zeros(n)``; under vmap a tensor, which no op takes as a size), Python numbers made of tensors (``.item()``, ``int(t)``,
``math.log(t)``), rows of boolean masks indexing (``x[i][mask[i]]``, also ``x[i][same[i] &
~eye[i]]``, logic on them, and comparisons) and masks a function of the
module returns indexing (``e[k, pick(y, k, flag)]``, ``_helper_mask``), ops whose result's shape depends on the values (``masked_select``, the
registry's ``data_shape``), tensors made of Python values (``torch.tensor([i])``, the registry's
``from_data``: the item of a tensor, which vmap cannot read), calls of the module's functions that select by a boolean mask or
call such ops in their own bodies (``_helper_selection``: mapped with vmap, they raise on every
call) or that test in Python or make a Python number of a value made of a parameter whose
argument varies (``_helper_test``: ``if t.sum() == 0: return ...`` in a per-class dice helper, or
a method of the object; vmap raises at data-dependent control flow and at ``.item()`` on every
call; ``w is None`` and shape queries are Python values) or that write such a value in place
into a tensor they make filled with one number and another value may share (``first =
neg[:1]``; ``_helper_shared_write``: ``mapped_writes_to_functional`` leaves that write, and the
tensor has no batch dimension under vmap), list methods comparing values
(``lst.remove(t)``), and the loop index (a Python int in the original) handed to a function of
the module that is not known to take it as a tensor (``index_tensor_parameters``), and a Python
number that varies (the index, arithmetic of it, ``int(k[i])``) as the second operand of an op
whose form on two tensors differs (``OpSpec.tensor_pair``): ``torch.max(p[i], i % 2)`` reduces
along a dim as written, and under vmap, the number a tensor, it would be an elementwise max.
Functions the body defines (inner loops' outlined bodies) are checked with the names they see
varying. A row of a tensor of a dtype unknown before the loop runs, as an index
(``scores[q][mask[q]]``, ``mask`` a parameter), is a gather at integer positions: the loop's
check asks that tensor not to be bool or uint8 (``NOT_A_MASK``; a mask, at which vmap raises).
"""
from __future__ import annotations

import ast
from typing import Any

from .. import ast_marks
from .. import loop_rules as rules
from .. import mapped_writes_to_functional, ops
from ..ast_tools import PassContext, clone, unparse, walk, write_target
from ..errors import Unsupported
from . import loop_dataflow
from .index_tensor_parameters import index_tensor_arguments
from .own_methods import own_method
from .moving_slices_to_windows import poly_value
from .loop_dataflow import (UnwrapFixedOperands, call_op, container_names, depends,
                            filled_number, fixed_operand_helpers, float_filled, is_boolean,
                            makes_new_tensor, mask_names, module_function, resolve_call,
                            variant_names, write_entries)
from .plan import LoopPlan

# What a tensor whose rows index must not be (a mask); anything else the other checks decide.
NOT_A_MASK = "not (isinstance(x, torch.Tensor) and x.dtype in (torch.bool, torch.uint8))"
# Methods of Python lists that compare their argument with the items as Python booleans.
_COMPARING_METHODS = frozenset({"remove", "index", "count"})
# Builtins whose truth is a Python fact of a batched tensor as of each of its items.
_TYPE_TESTS = frozenset({"isinstance", "callable", "hasattr"})
# How deep the module functions a mapped call reaches are searched for selections and tests.
MAX_HELPER_DEPTH = 3


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    it = plan.iteration
    seeds = {it.index} | {name for name, _ in it.elements} | {
        r.param for r in plan.row_slices.values()}
    _Check(plan, ctx).block(plan.body, seeds)
    return plan


class _Check:
    def __init__(self, plan: LoopPlan, ctx: PassContext):
        self.plan, self.ctx = plan, ctx
        # rows of the function's boolean masks (``mask[i]``)
        self.masks = {row.param for (name, _), row in plan.row_slices.items()
                      if name in plan.masks}
        # ... and rows of tensors of a dtype not known before the loop runs -> the tensor
        self.rows_of = {row.param: name for (name, _), row in plan.row_slices.items()
                        if name not in plan.masks}
        # `sum(parts)` of a list the body builds adds its items
        self.containers = container_names(ast.Module(plan.body, []))
        self.indices = {plan.iteration.index} | plan.outer_indices
        self.numbers = _python_numbers(plan.body, self.indices)

    def block(self, stmts: list[ast.stmt], seeds: set[str]) -> None:
        variant = variant_names(stmts, seeds, self.ctx)
        self.unbatched_writes(stmts, variant, set())
        todo = stmts[::-1]
        while todo:  # depth first, in source order: the first refusal is the user's first line
            node = todo.pop()
            if isinstance(node, ast.FunctionDef):
                self.block(node.body, variant)
                continue
            self.node(node, variant)
            todo += reversed(list(ast.iter_child_nodes(node)))

    def unbatched_writes(self, stmts: list[ast.stmt], variant: set[str], same: set[str]) -> None:
        """Refuses ``t[k] = v`` where ``t`` was bound in the body to one value for all iterations
        (``keep = torch.ones(n, dtype=torch.bool)``) and ``k`` or ``v`` varies: written in place,
        ``t`` has no batch dimension to hold the iterations' values (vmap's ``index_put_`` raises
        on every call). ``same`` holds such names; a new tensor ``inplace_writes_to_functional``
        rebinds to its written value is not one of them."""
        for s in stmts:
            if isinstance(s, ast.If):
                self.unbatched_writes(s.body, variant, set(same))
                self.unbatched_writes(s.orelse, variant, set(same))
                continue
            target = s.targets[0] if isinstance(s, ast.Assign) and len(s.targets) == 1 else \
                getattr(s, "target", None)
            if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) \
                    and target.value.id in same \
                    and depends(ast.Tuple([target.slice, s.value], ast.Load()), variant, self.ctx):
                self.refuse(f"`{self.quote(s)}` writes a value that varies per iteration into "
                            f"`{target.value.id}`, which is the same in every iteration: an "
                            "in-place write cannot give it a value per iteration", s)
            if isinstance(target, ast.Name):
                same.discard(target.id)
                if isinstance(s, ast.Assign) and self.same_tensor(s.value, variant):
                    same.add(target.id)

    def same_tensor(self, value: ast.expr, variant: set[str]) -> bool:
        """``value`` is a tensor op's result (a torch function's, or a registry op's: not a
        Python list, whose items may vary) that no iteration changes and that
        ``inplace_writes_to_functional`` leaves to be written in place."""
        return isinstance(value, ast.Call) and (
            (resolve_call(value.func, self.ctx) or "").startswith("torch.")
            or call_op(value, self.ctx).aten is not None) \
            and not depends(value, variant, self.ctx) and not makes_new_tensor(value, self.ctx) \
            and not float_filled(value, self.ctx)

    def node(self, node: ast.AST, variant: set[str]) -> None:
        def varies(*exprs) -> bool:
            return any(e is not None and depends(e, variant, self.ctx) for e in exprs)

        if isinstance(node, (ast.If, ast.IfExp)) and varies(node.test):
            what = "`if`" if isinstance(node, ast.If) else "conditional expression"
            self.refuse(f"{what} on `{self.quote(node.test)}`, which varies per iteration: "
                        "a Python condition needs one value", node)
        if isinstance(node, ast.BoolOp) and varies(*node.values) or isinstance(
                node, ast.UnaryOp) and isinstance(node.op, ast.Not) and varies(node.operand):
            self.refuse(f"`{self.quote(node)}`: Python logic on values that vary per iteration "
                        "(use `&`, `|`, `~`)", node)
        if isinstance(node, ast.Compare) and varies(node) \
                and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            self.refuse(f"`{self.quote(node)}`: an `in` test on values that vary per iteration",
                        node)
        entries = node.slice.elts if isinstance(node, ast.Subscript) and isinstance(
            node.slice, ast.Tuple) else [node.slice] if isinstance(node, ast.Subscript) else []
        if any(isinstance(e, ast.Name) and e.id in self.masks
               or varies(e) and self.mask_index(e) for e in entries):
            self.refuse(f"`{self.quote(node)}`: boolean mask indexing (the number of selected "
                        "elements varies per iteration)", node)
        for e in (e for e in entries if isinstance(e, ast.Name) and e.id in self.rows_of):
            # a row indexing: vmap gathers at integer positions; a bool or uint8 row would be a
            # mask, which vmap raises at on every call: the loop runs as written for those
            self.plan.check(NOT_A_MASK, x=ast.Name(self.rows_of[e.id], ast.Load()))
        for call in (e for e in entries if isinstance(e, ast.Call) and varies(e)):
            helper = _helper_mask(call, self.ctx)
            if helper:
                self.refuse(f"`{self.quote(node)}`: boolean mask indexing by what `{helper}` "
                            "returns (the number of selected elements varies per iteration)",
                            node)
        for e in (e for e in entries if isinstance(e, ast.Slice)):
            for bound in (b for b in (e.lower, e.upper, e.step) if varies(b)):
                why = "(vmap takes no slice at a position that varies, though its size is the " \
                    "same)" if _same_width(e, variant) else \
                    "(the slice's size would differ between iterations)"
                self.refuse(f"`{self.quote(node)}`: slice bound `{self.quote(bound)}` varies "
                            f"per iteration {why}", node)
        if isinstance(node, ast.Call):
            self.call(node, varies)

    def mask_index(self, entry: ast.expr) -> bool:
        """``entry`` may be a boolean mask: a row of one, a comparison, or logic on them (``same
        & ~eye``: either side boolean, as a mask made with ``dtype=torch.bool`` is no name of
        ``masks``; an int result would index rows, which keeps the loop for nothing worse)."""
        if isinstance(entry, ast.BinOp) and isinstance(entry.op, (ast.BitAnd, ast.BitOr,
                                                                  ast.BitXor)):
            return self.mask_index(entry.left) or self.mask_index(entry.right)
        if isinstance(entry, ast.UnaryOp) and isinstance(entry.op, ast.Invert):
            return self.mask_index(entry.operand)
        return is_boolean(entry, self.masks, self.ctx)

    def call(self, node: ast.Call, varies) -> None:
        operands = node.args + [k.value for k in node.keywords] + (
            [node.func.value] if isinstance(node.func, ast.Attribute) else [])
        if not varies(*operands):
            return
        op = call_op(node, self.ctx)
        name = resolve_call(node.func, self.ctx) or ""
        of_container = name in rules.ADDS_CONTAINER_ITEMS and len(node.args) == 1 \
            and isinstance(node.args[0], ast.Name) and node.args[0].id in self.containers
        if _makes_host_number(node, self.ctx) and not of_container:
            self.refuse(f"`{self.quote(node)}` makes a Python number of a value that varies per "
                        "iteration", node)
        if op.data_shape:
            self.refuse(f"`{self.quote(node)}`: the size of its result varies per iteration",
                        node)
        data = node.args[0] if op.from_data and node.args else None
        if data is not None and (varies(data) if op.from_data == "any" else isinstance(
                data, (ast.List, ast.Tuple)) and varies(*data.elts)):
            self.refuse(f"`{self.quote(node)}` makes a tensor of Python values, and one that "
                        "varies per iteration is a tensor under vmap, whose item it cannot read",
                        node)
        receiver = [node.func.value] if loop_dataflow.method_name(node, self.ctx) else []
        # a size under a tensor condition is read through ``_fixed_operand(p, n)``: ``n`` itself
        fixed = UnwrapFixedOperands(fixed_operand_helpers(self.ctx))
        size = next((a for a in ops.size_arguments(op, receiver + node.args, {
            k.arg: k.value for k in node.keywords}) if varies(fixed.visit(clone(a)))), None)
        if size is not None:
            self.refuse(f"`{self.quote(node)}`: a size that varies per iteration (`"
                        f"{self.quote(size)}`, line {node.lineno}): the result's shape would "
                        "differ between iterations", node)
        if isinstance(node.func, ast.Attribute) and node.func.attr in _COMPARING_METHODS \
                or name == "range":
            self.refuse(f"`{self.quote(node)}` needs Python values of a value that varies per "
                        "iteration", node)
        pair = loop_dataflow.operands(node, self.ctx)
        if op.tensor_pair and len(pair) == 2 and not node.keywords and varies(pair[1]) \
                and _is_number(pair[1], self.numbers):
            self.refuse(f"`{self.quote(node)}`: `{self.quote(pair[1])}` is a Python number that "
                        "varies per iteration, a dim as written; under vmap it is a tensor, "
                        "which would make it an elementwise comparison", node)
        found = _helper_selection(node, self.ctx, ())
        if found is not None:
            helper, where = found
            self.refuse(f"`{unparse(node.func)}(...)` is mapped with vmap, and `{helper}` selects "
                        f"`{unparse(where)}` (line {where.lineno}): the number of selected "
                        "elements varies per iteration", node)
        if op is ops.UNKNOWN:
            given = self.indices_given(node, varies)
            if given:
                self.refuse(f"`{self.quote(node)}` gets the loop index `{given[0]}`, a Python int "
                            "in the original and a tensor under vmap, which the function is not "
                            "known to take (it may test it in Python)", node)
        written = _helper_shared_write(node, self.ctx, varies)
        if written is not None:
            helper, where = written
            self.refuse(f"`{unparse(node.func)}(...)` is mapped with vmap, and `{helper}` writes "
                        f"`{unparse(where).strip()}` (line {where.lineno}), a value that varies "
                        f"per iteration, in place into a tensor it makes that another value may "
                        "share: the tensor has no batch dimension to hold it", node)
        tested = _helper_test(node, self.ctx, varies)
        if tested is not None:
            helper, what, where = tested
            self.refuse(f"`{unparse(node.func)}(...)` is mapped with vmap, and `{helper}` {what} "
                        f"`{unparse(where)}` (line {where.lineno}), a value that varies per "
                        "iteration", node)

    def indices_given(self, node: ast.Call, varies) -> list[str]:
        """Loop indices (Python ints in the original) that vary here and that ``node``, a call of
        a Python function of the module's globals, passes on, other than those it takes as 0-d
        integer tensors too (``index_tensor_parameters``)."""
        if module_function(node.func, self.ctx, self.ctx.local_names or ()) is None:
            return []
        given = [a.id for a in node.args + [k.value for k in node.keywords]
                 if isinstance(a, ast.Name) and a.id in self.indices and varies(a)]
        return [a for a in given if a not in index_tensor_arguments(node, self.ctx)] if given else []

    def quote(self, node: ast.AST) -> str:
        return self.plan.quote(node)  # the user's code, not renamed ones

    def refuse(self, reason: str, node: ast.AST) -> None:
        raise Unsupported(reason, node.lineno)


def _helper_mask(call: ast.Call, ctx: PassContext) -> str:
    """The name of the function of the caller's module (or method of its object) ``call``
    calls when every value it returns is a boolean mask (``is_boolean``), else ""."""
    fn = module_function(call.func, ctx) or own_method(call, ctx)
    try:
        helper = ctx.parse_function(fn).tree.body[0] if fn else None
    except Unsupported:  # no source
        return ""
    returns = [n.value for n in walk(helper)
               if isinstance(n, ast.Return) and n.value is not None] if helper else []
    if not returns:
        return ""
    masks = mask_names(helper, ctx, made_boolean=True)
    return fn.__name__ if all(is_boolean(r, masks, ctx) for r in returns) else ""


def _helper_selection(call: ast.Call, ctx: PassContext, seen: tuple
                      ) -> tuple[str, ast.expr] | None:
    """(the helper's name, the selection) when ``call`` calls a function of the caller's module
    whose body, or that of a module function it calls (``MAX_HELPER_DEPTH`` deep), selects by a
    boolean mask (a name the helper binds only to masks, ``loop_dataflow.mask_names``, or a
    comparison) or calls an op whose result's size depends on the values (``nonzero``): under
    ``torch.vmap`` that raises on every call. Else None."""
    fn = module_function(call.func, ctx)
    if fn is None or fn in seen or len(seen) >= MAX_HELPER_DEPTH:
        return None
    try:
        helper = ctx.parse_function(fn).tree.body[0]
    except Unsupported:  # no source
        return None
    masks = mask_names(helper, ctx)
    for n in walk(helper):
        if isinstance(n, ast.Subscript) and any(
                is_boolean(e, masks, ctx) for e in write_entries(n)) \
                or isinstance(n, ast.Call) and call_op(n, ctx).data_shape:
            return fn.__name__, n
        if isinstance(n, ast.Call):
            inner = _helper_selection(n, ctx, seen + (fn,))
            if inner is not None:
                return inner
    return None


def _helper_test(call: ast.Call, ctx: PassContext, varies, seen: tuple = ()
                 ) -> tuple[str, str, ast.expr] | None:
    """(the helper's name, what it does, where) when ``call`` calls a function of the caller's
    module that makes a Python number (``.item()``, ``int(t)``) of, reads ``.data`` of (Lovasz's
    ``labels[perm.data]``), or tests in Python (``if``, ``while``, ``assert``, ``x if c else y``,
    ``and``/``or``/``not``), a value made of a parameter
    whose argument varies per iteration (``varies``); also a method of the function's own object
    (``self._dice(p, t)``, ``inline_method_calls.own_method``); or a helper it calls so
    (``MAX_HELPER_DEPTH`` deep). Else None."""
    called = _called_helper(call, ctx, varies, seen)
    if called is None:
        return None
    fn, helper, variant = called
    for n in _outside_for_loops(helper):
        if isinstance(n, ast.Call) and _makes_host_number(n, ctx) and depends(n, variant, ctx):
            return fn.__name__, "makes a Python number of", n
        if isinstance(n, ast.Attribute) and n.attr == "data" and depends(n.value, variant, ctx):
            return fn.__name__, "reads `.data` (which vmap refuses) of", n.value
        inner = _helper_test(n, ctx, lambda *e: any(x is not None and depends(x, variant, ctx)
                                                    for x in e), seen + (fn,)) \
            if isinstance(n, ast.Call) else None
        if inner is not None:
            return inner
        tests = [n.test] if isinstance(n, (ast.If, ast.IfExp, ast.While, ast.Assert)) else \
            n.values if isinstance(n, ast.BoolOp) else \
            [n.operand] if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not) else []
        for test in tests:
            found = next((t for t in _tested_values(test) if depends(t, variant, ctx)), None)
            if found is not None:
                return fn.__name__, "tests in Python", found
    return None


def _called_helper(call: ast.Call, ctx: PassContext, varies, seen: tuple
                   ) -> tuple[Any, ast.FunctionDef, set[str]] | None:
    """(the function, its definition, the names in it that vary per iteration) when ``call``
    calls a function of the caller's module or a method of its object, not in ``seen`` and
    within ``MAX_HELPER_DEPTH``; else None."""
    fn = module_function(call.func, ctx)
    method = own_method(call, ctx) if fn is None else None
    if fn is None and method is None or (fn or method) in seen or len(seen) >= MAX_HELPER_DEPTH:
        return None
    try:
        helper = ctx.parse_function(fn or method).tree.body[0]
    except Unsupported:  # no source
        return None
    variant = variant_names(helper.body, _varying_parameters(call, helper, method is not None,
                                                             varies), ctx)
    return fn or method, helper, variant


def _varying_parameters(call: ast.Call, helper: ast.FunctionDef, method: bool, varies
                        ) -> set[str]:
    """The parameters of ``helper`` (``method``: past ``self``) that ``call`` gives values
    varying per iteration."""
    params = [a.arg for a in helper.args.posonlyargs + helper.args.args][method:]
    if any(isinstance(a, ast.Starred) for a in call.args):
        seeds = set(params)  # which parameter takes which argument is known only at run time
    else:
        seeds = {p for p, a in zip(params, call.args) if varies(a)}
    return seeds | {k.arg for k in call.keywords if k.arg is None or varies(k.value)} & set(params)


def _helper_shared_write(call: ast.Call, ctx: PassContext, varies) -> tuple[str, ast.stmt] | None:
    """(the helper's name, the write) when ``call`` calls a function of the caller's module (or
    a method of its object) that writes a value made of a parameter whose argument varies per
    iteration into a tensor it makes filled with one number (``neg = torch.zeros(n)``, no batch
    dimension under vmap) and that another value may share: ``mapped_writes_to_functional``
    leaves that write in place, and under vmap it raises on every call. Else None."""
    called = _called_helper(call, ctx, varies, ())
    if called is None:
        return None
    fn, helper, variant = called
    filled = {s.targets[0].id for s in walk(helper) if isinstance(s, ast.Assign)
              and isinstance(s.targets[0], ast.Name) and filled_number(s.value, ctx) is not None
              and not depends(s.value, variant, ctx)}
    shared = filled - mapped_writes_to_functional.fresh_names(helper, ctx)
    for s in walk(helper):
        if isinstance(s, ast.stmt) and mapped_writes_to_functional.written_into(s, shared) \
                and depends(ast.Tuple([write_target(s).slice, s.value], ast.Load()), variant, ctx):
            return fn.__name__, s
    return None


def _outside_for_loops(node: ast.AST):
    """The nodes under ``node`` but those of the bodies of its ``for`` loops: the helper's own
    rewrite vectorizes those (``if c == cls`` in a loop over classes becomes a mask), and one
    it keeps fails under vmap and runs the original, as before any check."""
    for child in ast.iter_child_nodes(node):
        yield child
        if isinstance(child, (ast.For, ast.AsyncFor)):
            yield from ast.walk(child.iter)
        else:
            yield from _outside_for_loops(child)


def _python_numbers(body: list[ast.stmt], indices: set[str]) -> set[str]:
    """The loop indices and the names the body binds to Python numbers made of them (any
    binding: a name that is a number in some iterations may be a dim there)."""
    numbers = set(indices)
    while True:
        more = {n for s in walk(ast.Module(body, [])) if isinstance(s, (ast.Assign, ast.AugAssign))
                for n in _bound_names(s) if _is_number(s.value, numbers)} - numbers
        if not more:
            return numbers
        numbers |= more


def _bound_names(s: ast.Assign | ast.AugAssign) -> list[str]:
    targets = s.targets if isinstance(s, ast.Assign) else [s.target]
    return [t.id for t in targets if isinstance(t, ast.Name)]


def _is_number(e: ast.expr, numbers: set[str]) -> bool:
    """``e`` is a Python number as written: a literal, a name of ``numbers``, what
    ``host_roundtrips_to_tensor_ops`` marks as a number made of a tensor, or arithmetic of them."""
    if ast_marks.get(e, ast_marks.HOST_NUMBER):
        return True
    if isinstance(e, ast.Constant):
        return isinstance(e.value, (int, float))
    if isinstance(e, ast.Name):
        return e.id in numbers
    if isinstance(e, ast.BinOp):
        return _is_number(e.left, numbers) and _is_number(e.right, numbers)
    return isinstance(e, ast.UnaryOp) and _is_number(e.operand, numbers)


def _makes_host_number(call: ast.Call, ctx: PassContext) -> bool:
    """``call`` makes a Python number of a tensor (``.item()``, ``int(t)``, ``math.log(t)``, any
    ``math`` function: ``math.pow(b, n)``)."""
    op = call_op(call, ctx)
    return bool(op.host or op.host_number or op.host_pair
                or (resolve_call(call.func, ctx) or "").startswith("math."))


def _tested_values(test: ast.expr) -> list[ast.expr]:
    """The parts of a Python test whose truth is taken of a value (not ``x is None`` or
    ``isinstance(x, T)``, which hold for a batched tensor as for each item)."""
    if isinstance(test, ast.BoolOp):
        return [t for v in test.values for t in _tested_values(v)]
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return _tested_values(test.operand)
    if isinstance(test, ast.Compare) and all(isinstance(o, (ast.Is, ast.IsNot)) for o in test.ops):
        return []
    if isinstance(test, ast.Call) and isinstance(test.func, ast.Name) \
            and test.func.id in _TYPE_TESTS:
        return []
    return [test]



def _same_width(entry: ast.Slice, variant: set[str]) -> bool:
    """``entry`` is ``a:b`` with ``b - a`` the same in every iteration, both bounds sums and
    products of names and ints (``i * k:(i + 1) * k``, ``4 * i:4 * i + 4``): evaluated at two
    iterations, each name that varies a different value in each, for two draws of the others."""
    if entry.step is not None or entry.lower is None or entry.upper is None:
        return False

    def value(n: ast.expr, draw: int, at: int) -> int:
        def of(name: str) -> int:
            code = sum(map(ord, name)) % 97 + 1
            return at * code + code if name in variant else draw * code
        return poly_value(n, of)
    try:
        widths = {(draw, value(entry.upper, draw, at) - value(entry.lower, draw, at))
                  for draw in (3, 11) for at in (2, 5)}
    except ValueError:  # anything but names, ints, +, -, *
        return False
    return len(widths) == 2  # one width per draw, whatever the iteration
