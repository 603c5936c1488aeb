"""Instrumentation: count which branch of each vectorized loop's runtime check runs.

Not a pipeline pass: the runtime applies it to a copy of the rewritten function that it calls
only on the first call of an input signature (never on the steady path, never compiled), with
``counter`` a closure binding to the function's ``Report``::

    if a and b:                                      if a and b:
        'optimize_loss: loop at line 7 vectorized'       'optimize_loss: loop at line 7 vectorized'
        <vectorized>                          ->         counter.loop_ran(7, True, trips=lambda: (xs,))
    else:                                                try:
        for x in xs: ...                                     <vectorized>
                                                         except Exception as error:
                                                             counter.loop_failed(7, error)
                                                             raise
                                                     else:
                                                         counter.loop_ran(7, False,
                                                             'check `a` was false' if not a else
                                                             'check `b` was false')
                                                         <the original loop>

A vectorized branch that runs the loop as written after all (``AS_WRITTEN``, its leading string)
counts that run as written instead.

The reason re-evaluates the check's conjuncts in order, each only when those before it held, as
the check itself did. ``trips`` gives the sequences the original loop iterates in step (``zip``'s
and ``enumerate``'s arguments), so that the counter knows how many iterations the vectorized
branch stood for (``rewrite.keep_faster`` uses it to tell a slow original without running it).
"""
from __future__ import annotations

import ast
import re

from .ast_tools import Transformer, clone, is_name, rename, replace, unparse, walk
from .linear_scan import computed_alike
from .loops.attribute_writes_to_names import unguarded, written_getattrs
from .loops.runtime_checks import AS_WRITTEN, guard_line, is_vectorized_guard
from .loops.stack_tensor_lists import stacked_sources

_AS_WRITTEN = re.compile(re.escape(AS_WRITTEN).replace(re.escape("{}"), r"(\d+)", 1)
                         .replace(re.escape("{}"), "(.*)"))
ERROR = "_optimize_loss_error"  # the caught exception, in the instrumented copy only
_SHOWN = 80  # characters of a conjunct quoted in the reason
# A scan's dtype check as generated code names it (``PassContext.bind``: ``_<stem>``, ``_<stem>_1``)
_ALIKE = re.compile(rf"_{computed_alike.__name__}(_\d+)?")


def instrument(tree: ast.Module, counter: str, source: str = "",
               spelled: dict[str, str] | None = None) -> ast.Module:
    """Every vectorized guard of ``tree`` counts its runs into ``counter`` (see the docstring);
    its reasons quote the user's ``source`` only, a generated name of ``spelled`` as it says
    (the alias of torch as ``torch``)."""
    return _Count(counter, stacked_sources(tree), _Written(source, spelled or {})).visit(tree)


class _Written:
    """The user's code a reason may quote: the names and ``getattr`` calls of their source."""

    def __init__(self, source: str, spelled: dict[str, str]):
        self.getattrs = written_getattrs(source)
        self.names = set(re.findall(r"\w+", source)) | set(spelled.values())
        self.spelled = spelled

    def text(self, conjunct: ast.expr) -> str | None:
        """``conjunct`` as the user wrote it; None when it names a value the rewrite made."""
        text = unparse(rename(unguarded(conjunct, self.getattrs), self.spelled))
        made = [n for n in re.findall(r"(?<![\w.])_\w*", text) if n not in self.names]
        return None if made else text


class _Count(Transformer):
    def __init__(self, counter: str, stacked: dict[str, str], written: _Written):
        self.counter = counter
        self.stacked = stacked  # generated name -> the user's list it stacks
        self.written = written

    def visit_If(self, node: ast.If) -> ast.If:
        self.generic_visit(node)  # inner loops first: in the vectorized body and in the original
        if not is_vectorized_guard(node):
            return node
        line = guard_line(node)
        marker, body = node.body[0], node.body[1:]
        ran = replace(f"c.loop_ran({line}, True)", loc=node, c=self.counter)
        sequences = _iterated(node.orelse)
        if sequences is not None:  # evaluated by the counter, which catches what it raises
            ran.keywords.append(ast.keyword("trips", ast.Lambda(_no_args(), sequences)))
            ast.fix_missing_locations(ran)  # the new nodes take the guard's line
        guarded = replace(f"try:\n    pass\nexcept Exception as {ERROR}:\n"
                          f"    c.loop_failed({line}, {ERROR})\n    raise", loc=node, c=self.counter)
        guarded[0].body = body
        kept = replace(f"c.loop_ran({line}, False, reason)", loc=node, c=self.counter,
                       reason=_first_false(node.test, self.stacked, self.counter,
                                           self.written))
        _count_vmap_forms(body, line, self.counter)
        node.body = [marker, ast.Expr(ran)] + guarded
        node.orelse = [ast.Expr(kept)] + node.orelse
        return node

    def visit_Expr(self, node: ast.Expr) -> ast.stmt:
        """The vectorized branch runs the loop as written after all (``AS_WRITTEN``)."""
        found = isinstance(node.value, ast.Constant) and isinstance(node.value.value, str) \
            and _AS_WRITTEN.fullmatch(node.value.value)
        if not found:
            return node
        return ast.Expr(replace(f"c.loop_ran_as_written({found.group(1)}, r)", loc=node,
                                c=self.counter, r=ast.Constant(found.group(2))))


def _count_vmap_forms(body: list[ast.stmt], line: int, counter: str) -> None:
    """The choice of a batched loop's form, ``if <check>: <batched> else: def _body ...`` (the
    vmap form, ``batch_loop_bodies``) in the vectorized branch ``body``: its else counts a run
    by vmap, so that the report names the form that ran (``LoopReport.ran_as``)."""
    for s in body:
        if isinstance(s, ast.If) and any(isinstance(t, ast.FunctionDef) for t in s.orelse):
            s.orelse.insert(0, ast.Expr(replace(f"c.loop_ran_by_vmap({line})", loc=s,
                                                c=counter)))


def _iterated(original: list[ast.stmt]) -> ast.Tuple | None:
    """Per level of the original loop nest (the guard's else branch, then each loop its body
    runs unconditionally over sequences that do not depend on the outer loops' variables), the
    sequences it iterates in step; the product of each level's shortest length is its trip
    count. None for a comprehension, or when evaluating them again could run user code."""
    if not isinstance(original[0], ast.For):
        return None
    levels, loop, bound = [], original[0], set()
    while loop is not None:
        level = _sequences(loop)
        if level is None or bound & {n.id for n in walk(level) if isinstance(n, ast.Name)}:
            break
        levels.append(level)
        bound |= {n.id for n in walk(loop.target) if isinstance(n, ast.Name)}
        loop = next((s for s in loop.body if isinstance(s, ast.For)), None)
    return ast.Tuple(levels, ast.Load()) if levels else None


def _sequences(loop: ast.For) -> ast.Tuple | None:
    """The sequences ``loop`` iterates in step: ``zip``'s and ``enumerate``'s arguments, else
    the iterated value itself; None when evaluating them again could run user code."""
    it = loop.iter
    if (isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and not it.keywords
            and it.func.id in ("zip", "enumerate") and it.args):
        parts = it.args if it.func.id == "zip" else it.args[:1]
    else:
        parts = [it]
    if not all(_pure(p) for p in parts):
        return None
    return ast.Tuple([clone(p) for p in parts], ast.Load())


_PURE_CALLS = {"range", "len", "min", "max", "int"}
_PURE_METHODS = {"size", "dim", "numel", "flatten", "view", "reshape", "unbind", "t"}  # of tensors


def _pure(expr: ast.expr) -> bool:
    """Evaluating ``expr`` again changes nothing: names, attributes, subscripts, arithmetic,
    calls of ``_PURE_CALLS`` and of tensors' shape and view methods only (a generator or another
    method could run user code twice)."""
    for node in ast.walk(expr):
        if isinstance(node, ast.Call):
            func = node.func
            if not ((isinstance(func, ast.Name) and func.id in _PURE_CALLS)
                    or (isinstance(func, ast.Attribute) and func.attr in _PURE_METHODS)):
                return False
        elif isinstance(node, (ast.Lambda, ast.GeneratorExp, ast.ListComp, ast.SetComp,
                               ast.DictComp, ast.NamedExpr, ast.Await, ast.Yield,
                               ast.YieldFrom)):
            return False
    return True


def _no_args() -> ast.arguments:
    return ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[],
                         kwarg=None, defaults=[])


def _first_false(test: ast.expr, stacked: dict[str, str], counter: str,
                 written: _Written) -> ast.expr:
    """An expression naming the first conjunct of ``test`` that is false (``test`` is false);
    the conjuncts of a conjunct (``a and (b and c)``) each on its own."""
    conjuncts = _conjuncts(test)
    reason = _why(conjuncts[-1], stacked, counter, written)
    for conjunct in reversed(conjuncts[:-1]):
        reason = ast.IfExp(ast.UnaryOp(ast.Not(), clone(conjunct)),
                           _why(conjunct, stacked, counter, written), reason)
    return reason


def _conjuncts(test: ast.expr) -> list[ast.expr]:
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return [c for v in test.values for c in _conjuncts(v)]
    return [test]


def _why(conjunct: ast.expr, stacked: dict[str, str], counter: str,
         written: _Written) -> ast.expr:
    """The reason a false ``conjunct`` gives; a stacked list's own check in the user's words
    (its generated name means nothing to them), with what kept the list from stacking, asked
    of the user's list when the check runs (``Report.not_stacked``), its other checks on it by
    its name; a check on a value the rewrite made, without its code."""
    if (isinstance(conjunct, ast.Call) and is_name(conjunct.func, "isinstance")
            and len(conjunct.args) == 2 and isinstance(conjunct.args[0], ast.Name)
            and conjunct.args[0].id in stacked):
        name = stacked[conjunct.args[0].id]
        return replace("c.not_stacked(n, x)", loc=conjunct, c=counter, n=ast.Constant(name),
                       x=name)
    if isinstance(conjunct, ast.Call) and isinstance(conjunct.func, ast.Name) and \
            _ALIKE.fullmatch(conjunct.func.id):
        shown = ", ".join(f"`{written.text(a) or '...'}`" for a in conjunct.args)
        return ast.Constant(f"{shown} hold tensors of several dtypes (or bool or complex ones): "
                            "the scan's factors or states would take another dtype than the "
                            "loop's, or raise")
    # a stacked list's other checks (``_pos_stacked.dim() == 1``) by the user's list's name
    text = written.text(rename(clone(conjunct), stacked))
    if text is None:
        return ast.Constant("a check on a value the rewrite computes was false")
    shown = text if len(text) <= _SHOWN else text[:_SHOWN - 3] + "..."
    return ast.Constant(f"check `{shown}` was false")
