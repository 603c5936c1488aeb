"""Calls to small same-module helper functions inside a loop body are inlined, in the body being
vectorized, so the body is straight-line code of known ops (its batched form takes no user calls).

``vectorize_loops`` runs this stage on its copy of a loop body (``LOOP_STAGES``); the loop as written
stays the else of the vectorized form, so the helper is called there as before::

    SMOOTH = 1.0

    def dice(p, t):
        inter = (p * t).sum()
        return 1 - (2 * inter + SMOOTH) / (p.sum() + t.sum() + SMOOTH)

    for c in range(n):                                 for c in range(n):
        loss += dice(probs[:, c], onehot[:, c])   ->       _dice_p = probs[:, c]
                                                           _dice_t = onehot[:, c]
                                                           _dice_inter = (_dice_p * _dice_t).sum()
                                                           _dice = 1 - (2 * _dice_inter + SMOOTH) / (_dice_p.sum() + _dice_t.sum() + SMOOTH)
                                                           loss += _dice

with ``dice is _dice_inlined`` (the function object at rewrite time, a closure binding) added
to the vectorized loop's runtime check: a helper rebound later runs as written. Every argument is
evaluated once, in order (bound to the parameter's fresh name), missing ones take the helper's
constant defaults; keywords are matched by name::

    loss += focal(t=y[i], p=x[i])   ->   _focal_t = y[i]; _focal_p = x[i]; _focal_gamma = 2.0
                                         <focal's statements>; loss += _focal

Every parameter and local of the helper gets a fresh name; globals it reads (``SMOOTH``) are read
by name at run time, as the helper does (a constant annealed later is not frozen). Helpers called
by an inlined helper are inlined too, up to ``MAX_DEPTH`` levels. Inlined statements keep the
helper's own lines (same file), the argument bindings the call's line.

A helper that ends in writes into rows of its parameters instead of a ``return`` (detection
code's ``match(threshold, truths, ..., loc_t, conf_t, idx)`` ending ``loc_t[idx] = loc;
conf_t[idx] = conf``) is inlined where it is called as a statement: the writes go to the caller's
arguments, so the loop sees its own write ``out[i] = e`` (stacked like any other)::

    def encode(x, out, i):                             for i in range(n):
        y = x * 2                                          _encode_x = x[i]
        out[i] = y.sum()                        ->         _encode_y = _encode_x * 2
                                                           out[i] = _encode_y.sum()
    for i in range(n):
        encode(x[i], out, i)

Each written parameter is written once, by one of the final statements, and read nowhere else;
its index is a parameter the helper does not rebind; at the call both are plain names (the index
also a number), so the write names what the helper's would have (the inlined statements bind
only fresh names).

A helper's ``if`` whose test reads only parameters the call binds to constants (literal arguments
and constant defaults; parameters the helper does not rebind) is replaced by the branch they
take, and a ``return`` in it ends the body (``_fold``): flags choose the code per call, as the
original's test would on every call::

    def pick(y, k, same=False):                      num = e[k, pick(y, k, True)]
        if same:                                 ->  _pick_y = y; _pick_k = k; _pick_same = True
            m = y == y[k]                            _pick_m = _pick_y == _pick_y[_pick_k]
        else:                                        _pick_m[_pick_k] = False
            m = torch.ones(len(y), dtype=torch.bool)  _pick = _pick_m
        m[k] = False                                 num = e[k, _pick]
        return m

Items of a local bound only to tensors the helper makes (``makes_new_tensor``, the filled
constructors ``torch.ones``/``zeros``...) may be written (``m[k] = False``): no memory of the
caller's changes; the loop stages judge the write like any in the body.

Refused (the call stays, the loop is mapped with ``torch.vmap``; a note in the report says why):
a helper that is not a plain module-level function of the caller's module and file (methods,
lambdas, closures, nested functions, builtins), has decorators, ``*args``/``**kwargs``, no
source, or a body (its branches decided) other than simple assignments to plain names or tuples
of them (and items of tensors it made) and one final ``return expr`` (loops, an ``if`` on
anything else, ``global``, ``try``/``with``, nested ``def``s, lambdas, comprehensions, walrus, ``yield``), reads a local before binding it, reads ``locals()``-like builtins or mangled
``__names``, calls itself (directly or through the helpers being inlined), has a default that
is not a constant, or reads a global the caller shadows (a parameter, local or closure variable
of the caller); a call with ``*``/``**`` arguments or arguments that do not match; a call
inside a lambda, comprehension, dict or the conditional part of ``and``/``or``/``x if c else
y``/chained comparisons; a statement where a call with side effects ran before the helper's body
(it would run after it), or that has a walrus.
"""
from __future__ import annotations

import ast
import inspect
import types
from dataclasses import dataclass

import torch

from ..errors import Unsupported

from .. import loop_rules as rules
from .. import ops
from ..ast_tools import (PassContext, Transformer, clone, fix_missing_locations, rename, replace,
                        unparse, walk)
from .loop_dataflow import (loads, makes_new_tensor, module_function, resolve_call, stores,
                            stores_in)
from .own_methods import method_owner, own_method
from .plan import LoopPlan

MAX_DEPTH = 3  # helpers called by inlined helpers: inlined down to this depth
# Builtins that observe the frame the code runs in: inlined, they would see the caller's.
FRAME_BUILTINS = frozenset({"locals", "globals", "vars", "dir", "eval", "exec", "super",
                            "__class__", "breakpoint"})
# Statements a helper body may have before its final `return expr` (plain-name targets; not
# `x += e`: on a parameter, that would change the caller's tensor in place).
BODY_STATEMENTS = (ast.Assign,)
# What a refused helper statement is, for its reason (others: "a `<node name>` statement").
_STATEMENT_KINDS = {ast.For: "a `for` loop", ast.AsyncFor: "an `async for` loop",
                    ast.While: "a `while` loop", ast.If: "an `if`", ast.With: "a `with` block",
                    ast.Try: "a `try` block", ast.AugAssign: "an augmented assignment",
                    ast.AnnAssign: "an annotated assignment", ast.Global: "a `global`",
                    ast.Nonlocal: "a `nonlocal`", ast.FunctionDef: "a nested `def`",
                    ast.ClassDef: "a nested `class`", ast.Return: "an early `return`"}
# Expressions a helper body must not have: a scope of their own, or not run exactly once.
BODY_FORBIDDEN = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp,
                  ast.NamedExpr, ast.Yield, ast.YieldFrom, ast.Await)
# Where a call is not run exactly once, in place (lazy, conditional, or evaluated out of
# order): calls there are not inlined. Field name -> the indices that are (None: all).
DEFERRED = {ast.Lambda: {"body": None}, ast.ListComp: {"elt": None, "generators": None},
            ast.SetComp: {"elt": None, "generators": None},
            ast.GeneratorExp: {"elt": None, "generators": None},
            ast.DictComp: {"key": None, "value": None, "generators": None},
            ast.Dict: {"keys": None, "values": None},
            ast.IfExp: {"body": None, "orelse": None},
            ast.BoolOp: {"values": slice(1, None)}, ast.Compare: {"comparators": slice(1, None)}}
# Calls that may run after an inlined helper body although the original ran them before it
# have no side effects: builtins, torch functions and tensor methods without an effect in the op
# registry (allocating uninitialised memory is none), unless in place (a name ending in "_").
NO_EFFECT = (None, "uninitialized")
CONSTANT_TYPES = (int, float, bool, str, complex, type(None))
# The nodes of an ``if`` test a helper's constant arguments decide (``_decided``).
FOLDABLE_TESTS = (ast.Name, ast.Load, ast.Constant, ast.Compare, ast.BoolOp, ast.UnaryOp,
                  ast.Tuple, ast.List, ast.And, ast.Or, ast.Not, ast.Eq, ast.NotEq, ast.Is,
                  ast.IsNot, ast.In, ast.NotIn, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.USub)


@dataclass
class _Helper:
    fn: types.FunctionType
    node: ast.FunctionDef   # the parsed def, with the helper's own line numbers
    body: list[ast.stmt]    # the assignments before the return
    result: ast.expr | None  # the returned expression; None: it ends in row writes
    local: set[str]         # parameters and assigned names (renamed when inlined)
    reads: set[str]         # globals (and builtins) it reads
    writes: tuple[ast.Assign, ...] = ()  # its final `param[index_param] = value` statements


def rewrite(loop: ast.For, body: list[ast.stmt], ctx: PassContext
            ) -> tuple[list[ast.stmt], list[ast.expr]]:
    """``body`` (a copy of ``loop``'s) with helper calls inlined, and the runtime checks that the
    inlined helpers are still what their names are bound to."""
    if ctx.local_names is None:  # which names the function shadows is unknown: inline nothing
        return body, []
    scope = set(ctx.local_names) | ctx.namer.made | set(ctx.bindings) | {
        n.id for n in walk(loop) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)
    } | {
        a.arg for a in walk(loop) if isinstance(a, ast.arg)}
    inliner = _Inliner(ctx, scope, stores_in([loop]))
    return inliner.block(body, 0, ()), inliner.guards


class _Inliner:
    """Single use: inlines the calls of one loop body, collecting the runtime checks."""

    def __init__(self, ctx: PassContext, scope: set[str], rebound: set[str]):
        self.ctx = ctx
        self.scope = scope               # names that do not resolve to the module's globals
        _, this = method_owner(ctx)      # the caller's object, if the loop does not rebind it
        self.this = this if this and this not in rebound else ""
        self.guards: list[ast.expr] = []
        self.checked: set[str] = set()
        # (name, the call's constant arguments) -> helper, or why it is refused
        self.helpers: dict[tuple, _Helper | str] = {}

    def block(self, stmts: list[ast.stmt], depth: int, stack: tuple) -> list[ast.stmt]:
        out = []
        for s in stmts:
            if isinstance(s, ast.If):
                s.body = self.block(s.body, depth, stack)
                s.orelse = self.block(s.orelse, depth, stack)
            out += self.statement(s, depth, stack)
        return out

    def statement(self, s: ast.stmt, depth: int, stack: tuple) -> list[ast.stmt]:
        """``s`` preceded by the inlined bodies of the helper calls it makes."""
        if isinstance(s, ast.If):
            before, field = [], "test"                 # only the test: the branches are blocks
        elif isinstance(s, ast.AugAssign):
            before, field = [s.target], "value"        # the target's parts are read first
        elif isinstance(s, (ast.Assign, ast.Expr, ast.Return)) and s.value is not None:
            before, field = [], "value"                # targets are evaluated after the value
        else:
            return [s]
        run = [getattr(s, field)]
        top = s.value if isinstance(s, ast.Expr) else None  # a call whose value is dropped
        calls = [c for e in run for c in _calls_run_once(e)
                 if self._inlinable(c, depth, stack, c is top) is not None]
        if not calls or any(isinstance(n, ast.NamedExpr) for n in walk(s)) \
                or not self._order_kept(before + run, calls):
            return [s]
        hoisted: list[ast.stmt] = []
        chosen = set(calls)
        setattr(s, field, _Replace(self, chosen, hoisted, depth, stack).visit(run[0]))
        if top is not None and isinstance(s.value, ast.Constant):
            return hoisted  # a row-writing helper's call: its writes are the statement
        return hoisted + [s]

    def _order_kept(self, exprs: list[ast.expr], calls: list[ast.Call]) -> bool:
        """Whether each call with side effects that runs before an inlined helper's body runs
        before it after inlining too: its new place is in the bindings of the innermost inlined
        call whose arguments hold it (else the statement itself), after the bodies of the
        inlined calls that precede that one."""
        order = [n for e in exprs for n in _postorder(e)]
        where = {id(n): k for k, n in enumerate(order)}
        chosen = sorted(where[id(c)] for c in calls)
        owner = {}  # node -> index of the innermost inlined call holding it
        for c in sorted(calls, key=lambda c: -where[id(c)]):  # outermost first: innermost wins
            for n in walk(c):
                if n is not c:
                    owner[id(n)] = where[id(c)]
        for k, n in enumerate(order):
            if isinstance(n, ast.Call) and k not in chosen and not _pure(n, self.ctx, self.scope):
                end = owner.get(id(n), len(order))
                if any(k < c < end for c in chosen):
                    return False
        return True

    def _callee(self, call: ast.Call) -> tuple[types.FunctionType | None, ast.Call]:
        """The helper ``call`` calls and the call as one of a function: a method of the
        caller's own object (``self.pick(k, True)``) takes the object first (``pick(self, k,
        True)``)."""
        fn = module_function(call.func, self.ctx, self.scope)
        if fn is not None or not self.this:
            return fn, call
        fn = own_method(call, self.ctx)
        if fn is None:
            return None, call
        receiver = ast.copy_location(ast.Name(self.this, ast.Load()), call.func)
        func = ast.copy_location(ast.Name(call.func.attr, ast.Load()), call.func)
        return fn, ast.copy_location(ast.Call(func, [receiver] + call.args, call.keywords), call)

    def _inlinable(self, call: ast.Call, depth: int, stack: tuple, dropped: bool
                   ) -> _Helper | None:
        fn, call = self._callee(call) if depth < MAX_DEPTH else (None, call)
        if fn is None:
            return None  # not a user helper of this module: nothing to say
        helper = self._helper(call, fn)
        reason = helper if isinstance(helper, str) else (
            "it calls itself" if fn in stack or fn in self.ctx.rewriting else
            _shadowed(helper, self.scope) or _bad_call(call, helper, dropped))
        if reason:
            note = f"helper {call.func.id} is not inlined: {reason}"
            if note not in self.ctx.report.notes:
                self.ctx.report.notes.append(note)
            return None
        return helper

    def _helper(self, call: ast.Call, fn: types.FunctionType) -> _Helper | str:
        """The helper ``call`` calls, its branches decided by the call's constant arguments."""
        consts = call_constants(call, fn, self.ctx)
        key = (fn, tuple((k, type(v).__name__, v) for k, v in sorted(consts.items())))
        if key not in self.helpers:
            try:
                self.helpers[key] = _parse_helper(fn, self.ctx, consts=consts,
                                                  method=fn.__qualname__ != fn.__name__)
            except Unsupported as exc:
                self.helpers[key] = exc.reason
        return self.helpers[key]

    def inline(self, call: ast.Call, depth: int, stack: tuple
               ) -> tuple[list[ast.stmt], str | None]:
        """The statements of one inlined call, and the name holding its result (None: the
        helper ends in row writes)."""
        fn, call = self._callee(call)
        name = call.func.id
        helper = self._helper(call, fn)
        if name not in self.checked:
            self.checked.add(name)
            ref = next((k for k, v in self.ctx.bindings.items() if v is fn), None)
            if ref is None:
                ref = self.ctx.namer.new(f"{name}_inlined")
                self.ctx.bindings[ref] = fn
            self.guards.append(replace(  # another object or class runs the call as written
                "getattr(type(o), m, None) is ref and m not in getattr(o, '__dict__', ())"
                if fn.__qualname__ != fn.__name__ else "f is ref", loc=call, f=name, ref=ref,
                o=self.this, m=ast.Constant(name)))
        # reports quote an inlined statement in the helper's own names
        fresh = {n: self.ctx.namer.rename(n, f"{name}_{n}") for n in sorted(helper.local)}
        self.scope |= set(fresh.values())
        stmts = []
        given = _arguments(call, helper)
        written = {w.targets[0].value.id for w in helper.writes}
        for param, value in given:
            if param in written:
                continue  # a plain name (`_bad_call`): the writes use it directly
            stmts += replace("p = v", loc=value if isinstance(value, ast.AST) else call,
                             p=fresh[param], v=value if isinstance(value, ast.AST)
                             else ast.Constant(value))
        body = [rename(s, fresh) for s in clone(helper.body)]
        if helper.writes:
            ends, result = [_row_write(w, fresh, dict(given)) for w in helper.writes], None
        else:
            result = self.ctx.namer.new(name)
            ends = [ast.copy_location(ast.Assign([ast.Name(result, ast.Store())],
                                                 rename(clone(helper.result), fresh)),
                                      helper.node.body[-1])]
            fix_missing_locations(ends[0])
        stmts += self.block(body + ends, depth + 1, stack + (fn,))  # its own helper calls
        return stmts, result


class _Replace(Transformer):
    """Replaces the chosen calls (innermost first) by their results; their bodies go to ``out``."""

    def __init__(self, inliner: _Inliner, chosen: set[ast.Call], out: list[ast.stmt], depth: int,
                 stack: tuple):
        self.inliner, self.chosen, self.out, self.depth, self.stack = \
            inliner, chosen, out, depth, stack

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if node not in self.chosen:
            return node
        stmts, result = self.inliner.inline(node, self.depth, self.stack)
        self.out += stmts
        value = ast.Constant(None) if result is None else ast.Name(result, ast.Load())
        return ast.copy_location(value, node)


def _pure(call: ast.Call, ctx: PassContext, scope: set[str]) -> bool:
    """Whether ``call`` certainly has no side effects (``NO_EFFECT``)."""
    root = call.func
    while isinstance(root, ast.Attribute):
        root = root.value
    local_root = root is not call.func and isinstance(root, ast.Name) and root.id in scope
    name = None if local_root else resolve_call(call.func, ctx)
    if name is None:  # a method
        attr = getattr(call.func, "attr", "")
        return hasattr(torch.Tensor, attr) and not attr.endswith("_") \
            and ops.by_call(None, attr).effect in NO_EFFECT
    if ops.is_builtin(name):
        return name not in scope
    return name.startswith("torch.") and not name.endswith("_") \
        and ops.effect(name, None) in NO_EFFECT


def _postorder(node: ast.AST):
    """Evaluation order: operands before the operation that uses them."""
    for child in ast.iter_child_nodes(node):
        yield from _postorder(child)
    yield node


def _calls_run_once(node: ast.AST):
    """The calls in ``node`` that run exactly once, where they are (not in ``DEFERRED`` parts)."""
    if isinstance(node, ast.Call):
        yield node
    deferred = DEFERRED.get(type(node), {})
    for field, value in ast.iter_fields(node):
        items = value if isinstance(value, list) else [value]
        skip = deferred.get(field, False)
        if skip is None:
            continue
        if isinstance(skip, slice):
            items = items[:skip.start]
        for item in items:
            if isinstance(item, ast.AST):
                yield from _calls_run_once(item)


def _parse_helper(fn: types.FunctionType, ctx: PassContext, seen: tuple = (),
                  consts: dict | None = None, method: bool = False) -> _Helper:
    """``fn`` as an inlinable helper; raises ``Unsupported`` with the reason it is not. ``seen``:
    the helpers whose bodies call it (checked first); ``consts``: the parameters a call binds to
    constants, which decide the helper's branches (``_fold``)."""
    if len(seen) > 2 * MAX_DEPTH:
        raise Unsupported("helpers nested too deeply")
    if fn.__name__ == "<lambda>" or fn.__qualname__ != fn.__name__ and not method:
        raise Unsupported("not a module-level function (a lambda, method or nested function)")
    if fn.__closure__ or fn.__code__.co_freevars:
        raise Unsupported("it has free variables (a closure)")
    if fn.__code__.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS):
        raise Unsupported("*args / **kwargs parameters")
    try:
        lines, _ = inspect.getsourcelines(fn)
    except (OSError, TypeError):
        raise Unsupported("source not available") from None
    if lines[0].lstrip().startswith("@"):
        raise Unsupported("it has decorators")
    parsed = ctx.parse_function(fn)
    if parsed.filename != ctx.filename:
        raise Unsupported("defined in another file")
    node = parsed.tree.body[0]
    stmts = node.body[1:] if _is_docstring(node.body[0]) else node.body
    args = node.args
    params = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
    stmts = _fold(stmts, consts or {}, stores_in(stmts))
    node = ast.copy_location(ast.FunctionDef(node.name, node.args, stmts, [], node.returns,
                                             getattr(node, "type_params", [])), node)
    writes = _row_writes(stmts, params)
    if not writes and (not stmts or not isinstance(stmts[-1], ast.Return)
                       or stmts[-1].value is None):
        raise Unsupported("its body does not end with `return <expr>`")
    head = stmts[:len(stmts) - max(len(writes), 1)]
    bound, reads = set(params), set()
    assigned = set().union(*(stores(t) for t in head))
    if {w.targets[0].slice.id for w in writes} & assigned:
        raise Unsupported("it rebinds the index of a row it writes")
    fresh = _fresh_locals(head, params, ctx)
    refused = [s for s in head if not isinstance(s, BODY_STATEMENTS) or not all(
        isinstance(t, ast.Name) or _names_tuple(t) or _root(t) in fresh
        for t in getattr(s, "targets", [getattr(s, "target", None)]))]
    if refused:
        raise Unsupported(f"line {refused[0].lineno}: only assignments to plain names or "
                          f"tuples of them (and to items of tensors it made) before the "
                          f"{'row writes' if writes else 'return'} (no loops, branches on "
                          f"values, global, try/with, nested defs); {_statement_kinds(refused)}")
    for s in stmts:
        for n in walk(s):
            if isinstance(n, BODY_FORBIDDEN):
                raise Unsupported(f"line {s.lineno}: {type(n).__name__} in its body")
            name = n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) \
                else ""
            if name.startswith("__") and not name.endswith("__") or name in FRAME_BUILTINS:
                raise Unsupported(f"line {s.lineno}: `{name}` depends on where the code runs")
            if isinstance(n, ast.Call) and not _pure(n, ctx, params | assigned):
                _check_callee(n, ctx, seen + (fn,))
        used = loads(s)
        if (used & assigned) - bound:
            raise Unsupported(f"line {s.lineno}: a local is read before it is bound")
        reads |= used - assigned - params
        bound |= stores(s)
    return _Helper(fn, node, head, None if writes else stmts[-1].value, bound, reads, writes)


def _fold(stmts: list[ast.stmt], consts: dict, assigned: set[str]) -> list[ast.stmt]:
    """``stmts`` with each ``if`` replaced by the branch the call's constant arguments take
    (``if same:``, ``if reduction == "mean":``, ``if weight is None:``), up to the first
    ``return`` reached (what follows it never runs). Raises ``Unsupported`` for a test that is
    not decided by them: it reads something else, or a parameter the helper rebinds."""
    out: list[ast.stmt] = []
    for s in stmts:
        if isinstance(s, ast.If):
            taken = None if loads(s.test) & assigned else _decided(s.test, consts)
            if taken is None:
                raise Unsupported(f"line {s.lineno}: `if {unparse(s.test)}` is not decided by "
                                  "constant arguments of the call")
            out += _fold(s.body if taken else s.orelse, consts, assigned)
        else:
            out.append(s)
        if out and isinstance(out[-1], ast.Return):
            break
    return out


def _decided(test: ast.expr, consts: dict) -> bool | None:
    """The truth of ``test``, made only of constants, the names in ``consts``, comparisons and
    ``not``/``and``/``or``; else None."""
    if not loads(test) <= consts.keys() or not all(
            isinstance(n, FOLDABLE_TESTS) for n in ast.walk(test)):
        return None
    code = compile(fix_missing_locations(ast.Expression(clone(test))), "<test>", "eval")
    return bool(eval(code, {"__builtins__": {}}, dict(consts)))  # noqa: S307 (checked nodes)


def _statement_kinds(stmts: list[ast.stmt]) -> str:
    """What each of ``stmts`` is, by kind with the user's lines, so a refusal names every
    statement a helper would need changed, not only the first: ``a tuple unpacked at lines 56,
    57; a call for its effect at lines 58, 59; a `for` loop at line 64``."""
    kinds: dict[str, list[int]] = {}
    for s in stmts:
        if isinstance(s, ast.Assign) and any(isinstance(t, (ast.Tuple, ast.List))
                                             for t in s.targets):
            kind = "a tuple unpacked"
        elif isinstance(s, ast.Assign):
            kind = "a write into a value it did not make"
        elif isinstance(s, ast.Expr) and isinstance(s.value, ast.Call):
            kind = "a call for its effect"
        else:
            kind = _STATEMENT_KINDS.get(type(s), f"a `{type(s).__name__}` statement")
        kinds.setdefault(kind, []).append(s.lineno)
    return "; ".join(f"{kind} at line{'s' if len(lines) > 1 else ''} "
                     f"{', '.join(map(str, lines))}" for kind, lines in kinds.items())


def _fresh_locals(head: list[ast.stmt], params: set[str], ctx: PassContext) -> set[str]:
    """Locals every binding of which is a tensor op's result with memory of its own: writing
    into their items changes nothing the caller can see."""
    values: dict[str, list[ast.expr]] = {}
    for s in head:
        for t in getattr(s, "targets", []):
            if isinstance(t, ast.Name):
                values.setdefault(t.id, []).append(s.value)
    return {name for name, vs in values.items() if name not in params
            and all(makes_new_tensor(v, ctx) or _filled(v, ctx) for v in vs)}


def _filled(value: ast.expr, ctx: PassContext) -> bool:
    """``torch.ones(...)`` and the other constructors of ``loop_rules.FILLED_TENSORS``."""
    name = resolve_call(value.func, ctx) if isinstance(value, ast.Call) else None
    return name is not None and name.removeprefix("torch.") in rules.FILLED_TENSORS


def _names_tuple(target: ast.expr) -> bool:
    """``a, b`` or ``[a, b]`` (no starred or nested target): unpacked as written, it binds only
    names (renamed fresh), and raises where the original does."""
    return isinstance(target, (ast.Tuple, ast.List)) \
        and all(isinstance(e, ast.Name) for e in target.elts)


def _root(target: ast.expr) -> str | None:
    """``m`` of ``m[k]`` / ``m[a][b]``."""
    while isinstance(target, ast.Subscript):
        target = target.value
    return target.id if isinstance(target, ast.Name) else None


def call_constants(call: ast.Call, fn: types.FunctionType, ctx: PassContext) -> dict:
    """The parameters of ``fn`` a call binds to constants (literal arguments and defaults)."""
    try:
        node = ctx.parse_function(fn).tree.body[0]
        given = bound_arguments(call, fn, node)
    except (Unsupported, AttributeError, IndexError):
        return {}
    return {p: v.value if isinstance(v, ast.Constant) else v for p, v in given
            if isinstance(v, ast.Constant) or not isinstance(v, ast.AST)}


def _row_writes(stmts: list[ast.stmt], params: set[str]) -> tuple[ast.Assign, ...]:
    """The final statements ``p[q] = e`` of a helper body (``p``, ``q`` parameters) when each
    written ``p`` is named nowhere else in the body, else ()."""
    k = len(stmts)
    while k and isinstance(stmts[k - 1], ast.Assign) and len(stmts[k - 1].targets) == 1 \
            and _is_row(stmts[k - 1].targets[0], params):
        k -= 1
    writes = tuple(stmts[k:])
    named = [n.id for s in stmts for n in walk(s) if isinstance(n, ast.Name)]
    if any(named.count(w.targets[0].value.id) != 1 for w in writes):
        return ()
    return writes


def _is_row(target: ast.expr, params: set[str]) -> bool:
    return isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) \
        and isinstance(target.slice, ast.Name) and target.value.id in params \
        and target.slice.id in params and target.value.id != target.slice.id


def _row_write(write: ast.Assign, fresh: dict[str, str], given: dict) -> ast.Assign:
    """``out[i] = <value>`` at the caller's arguments ``out`` and ``i`` (``_bad_call``)."""
    target = write.targets[0]
    row = ast.Subscript(clone(given[target.value.id]), clone(given[target.slice.id]), ast.Store())
    new = ast.copy_location(ast.Assign([ast.copy_location(row, target)],
                                       rename(clone(write.value), fresh)), write)
    fix_missing_locations(new)
    return new


def inlinable_helper(call: ast.Call, ctx: PassContext) -> ast.FunctionDef | None:
    """The definition of the module-level helper ``call`` calls by name when this stage can
    inline it (so its body has no side effects), else None."""
    fn = module_function(call.func, ctx, ctx.local_names or ())
    if fn is None:
        return None
    try:
        helper = _parse_helper(fn, ctx, consts=call_constants(call, fn, ctx))
    except Unsupported:
        return None
    return None if helper.writes else helper.node


def _check_callee(call: ast.Call, ctx: PassContext, seen: tuple) -> None:
    """A helper's body may call another helper of the module that is itself inlinable (so
    without side effects); it is inlined in turn, up to ``MAX_DEPTH``, else called."""
    callee = module_function(call.func, ctx)
    if callee is None:
        raise Unsupported(f"line {call.lineno}: `{unparse(call.func)}` may have side effects")
    if callee in seen:
        raise Unsupported(f"line {call.lineno}: it calls itself (recursion)")
    if _parse_helper(callee, ctx, seen, call_constants(call, callee, ctx)).writes:
        raise Unsupported(f"line {call.lineno}: `{call.func.id}` writes into its arguments")


def _is_docstring(s: ast.stmt) -> bool:
    return isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) \
        and isinstance(s.value.value, str)


def _shadowed(helper: _Helper, scope: set[str]) -> str:
    names = sorted(helper.reads & scope)
    return f"it reads the global(s) {', '.join(names)}, which the caller binds locally" \
        if names else ""


def _bad_call(call: ast.Call, helper: _Helper, dropped: bool) -> str:
    try:
        given = dict(_arguments(call, helper))
    except Unsupported as exc:
        return exc.reason
    if helper.writes and not dropped:
        return "it writes rows of its arguments, and its value (None) is used"
    for w in helper.writes:
        out, index = given[w.targets[0].value.id], given[w.targets[0].slice.id]
        if not isinstance(out, ast.Name) or not isinstance(index, (ast.Name, ast.Constant)):
            return f"the row it writes, `{unparse(w.targets[0])}`, is not at plain names of the call"
    return ""


def bound_arguments(call: ast.Call, fn: types.FunctionType,
                    node: ast.FunctionDef) -> list[tuple[str, object]]:
    """``_arguments`` of a call of ``fn`` (parsed as ``node``); raises ``Unsupported``."""
    return _arguments(call, _Helper(fn, node, [], node, set(), set()))


def _arguments(call: ast.Call, helper: _Helper) -> list[tuple[str, object]]:
    """(parameter, argument expression or default value), in evaluation order."""
    args, fn = helper.node.args, helper.fn
    positional = [a.arg for a in args.posonlyargs + args.args]
    if any(isinstance(a, ast.Starred) for a in call.args) or any(
            k.arg is None for k in call.keywords):
        raise Unsupported("the call has *args / **kwargs")
    if len(call.args) > len(positional):
        raise Unsupported("too many positional arguments")
    given = list(zip(positional, call.args))
    keyword_ok = set(positional[len(args.posonlyargs):]) | {a.arg for a in args.kwonlyargs}
    for k in call.keywords:
        if k.arg not in keyword_ok or k.arg in dict(given):
            raise Unsupported(f"argument `{k.arg}` does not match the parameters")
        given.append((k.arg, k.value))
    defaults = dict(zip(positional[len(positional) - len(fn.__defaults__ or ()):],
                        fn.__defaults__ or ()))
    defaults.update(fn.__kwdefaults__ or {})
    for param in positional + [a.arg for a in args.kwonlyargs]:
        if param in dict(given):
            continue
        if param not in defaults:
            raise Unsupported(f"argument `{param}` is missing")
        if type(defaults[param]) not in CONSTANT_TYPES:
            raise Unsupported(f"the default of `{param}` is not a constant")
        given.append((param, defaults[param]))
    return given


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    plan.body, checks = rewrite(plan.node, plan.body, ctx)
    plan.helper_checks = plan.helper_checks + checks  # after those of earlier stages
    return plan
