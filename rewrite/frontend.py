"""Frontend: read a function's source, parse it, and rebuild a function from a rewritten tree.

The rebuilt function shares the original's globals dict and closure cells (live, not copies),
defaults and kwdefaults, and its code is compiled under the user's filename with the user's line
numbers, so tracebacks and reports point at the user's file:line.
"""
from __future__ import annotations

import __future__
import ast
import dis
import inspect
import textwrap
import types
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch

import passes.pipeline
from passes.ast_tools import (Namer, PassContext, clone, closed_values, fix_missing_locations,
                              unparse, walk)
from passes.pipeline import Dump

from passes.errors import RewriteError, Unsupported
from passes.report import Report

# Name generated code uses for torch when the function's own `torch` is not the torch module.
TORCH_ALIAS = "_optimize_loss_torch"  # one underscore: in a class body two would be name-mangled

_FUTURE_FLAGS = [getattr(__future__, f).compiler_flag for f in __future__.all_feature_names]


@dataclass
class ParsedFunction:
    fn: types.FunctionType
    tree: ast.Module      # body[0] is the FunctionDef, with the user's line numbers
    filename: str
    lineno: int           # line of the `def` (or lambda) in the user's file
    source: str           # the dedented source as read
    torch_name: str       # how generated code spells torch inside this function


def describe(fn: Any) -> tuple[str, str, int]:
    """(name, filename, line) of anything callable, for reports and warnings before parsing."""
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    code = getattr(fn, "__code__", None)
    if code is None:
        return name, "<unknown>", 0
    return name, code.co_filename, code.co_firstlineno


def call_signature(fn: Callable) -> inspect.Signature:
    """How ``fn`` is called: a module's ``forward`` (without self), else ``fn`` itself."""
    return inspect.signature(fn.forward if isinstance(fn, torch.nn.Module) else fn)


def parse_function(fn: Any) -> ParsedFunction:
    """Parse ``fn``'s source; raise ``Unsupported`` with a reason when it cannot be rewritten."""
    if not isinstance(fn, types.FunctionType):
        raise Unsupported(f"{type(fn).__name__} is not a Python function (builtin, C function or "
                          f"callable object): no source to rewrite")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise Unsupported("generator function")
    if inspect.iscoroutinefunction(fn):
        raise Unsupported("async function")
    code = fn.__code__
    try:
        # of its code: inspect follows a decorator's ``__wrapped__`` (functools.wraps) from the
        # function, to the source of the function the wrapper calls
        lines, start = inspect.getsourcelines(code)
    except (OSError, TypeError) as exc:
        raise Unsupported(f"source not available ({exc}); typed in a REPL or made by exec?") from None
    filename = inspect.getsourcefile(code) or code.co_filename
    raw = "".join(lines)
    # Not textwrap.dedent: that would also change multi-line string constants (docstrings).
    indented = raw[:1].isspace()
    try:
        module = ast.parse("if True:\n" + raw if indented else raw)
    except SyntaxError:
        # A lambda inside a larger expression: getsource returns partial lines.
        raise Unsupported("source of this lambda cannot be parsed on its own") from None
    if indented:
        module.body = module.body[0].body
    ast.increment_lineno(module, start - 1 - indented)
    source = textwrap.dedent(raw)
    func = _find_definition(module, fn)
    tree = ast.Module(body=[func], type_ignores=[])
    torch_name = _torch_name(fn)
    if not _same_code(compile_function(tree, fn), code):
        raise Unsupported("source on disk does not match the loaded code (file edited after import?)",
                          code.co_firstlineno)
    return ParsedFunction(fn, tree, filename, func.lineno, source, torch_name)


def _find_definition(module: ast.Module, fn: types.FunctionType) -> ast.FunctionDef:
    if fn.__name__ == "<lambda>":
        lambdas = [n for n in walk(module) if isinstance(n, ast.Lambda)]
        if len(lambdas) != 1:
            raise Unsupported("lambda shares its source line with other lambdas")
        lam = lambdas[0]
        func = ast.FunctionDef(name="<lambda>", args=lam.args, body=[ast.Return(lam.body)],
                               decorator_list=[], returns=None, type_comment=None)
        return fix_missing_locations(ast.copy_location(func, lam))
    for node in module.body:
        # co_name: functools.wraps gives a wrapper the name of the function it wraps
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                and node.name == fn.__code__.co_name:
            node.decorator_list = []  # the decorators already ran; re-running them would recurse
            return node
    raise Unsupported(f"no definition of {fn.__code__.co_name} found in its source")


def _torch_name(fn: types.FunctionType) -> str:
    code = fn.__code__
    local = set(code.co_varnames) | set(code.co_cellvars) | set(code.co_freevars)
    if fn.__globals__.get("torch") is torch and "torch" not in local:
        return "torch"
    return TORCH_ALIAS


def compile_function(tree: ast.Module, fn: types.FunctionType,
                     bound: Iterable[str] = ()) -> types.CodeType:
    """Compile the FunctionDef in ``tree`` as ``fn`` was compiled: same free variables (plus the
    ``bound`` names generated code may use), name mangling of the class it was defined in,
    ``__future__`` flags; returns its code object."""
    func = tree.body[0]
    name = "__optimize_loss_fn" if func.name == "<lambda>" else func.name
    func = ast.FunctionDef(**{**{f: getattr(func, f) for f in func._fields}, "name": name})
    ast.copy_location(func, tree.body[0])
    inner: ast.stmt = func
    owner = _defining_class(fn)
    if owner:  # private names (self.__x) are mangled with the class name
        inner = ast.ClassDef(name=owner, bases=[], keywords=[], body=[func], decorator_list=[])
    # Free variables become parameters of a factory so the compiler emits closure loads for them.
    freevars = list(fn.__code__.co_freevars)
    freevars += [name for name in bound if name not in freevars]
    factory = ast.FunctionDef(
        name="__optimize_loss_factory",
        args=ast.arguments(posonlyargs=[], args=[ast.arg(v) for v in freevars], kwonlyargs=[],
                           kw_defaults=[], defaults=[]),
        body=[inner, ast.Return(ast.Constant(None))], decorator_list=[], returns=None)
    # The def (and class) statement binds its name in the factory; without this, a recursive
    # call or a reference to the class would compile to a closure load instead of a global one.
    shadowed = sorted({name, owner or name} - set(freevars))
    if shadowed:
        factory.body.insert(0, ast.Global(names=shadowed))
    module = ast.Module(body=[factory], type_ignores=[])
    for node in walk(module):  # the wrappers and generated nodes take the function's own line
        if "lineno" in node._attributes and not hasattr(node, "lineno"):
            ast.copy_location(node, func)
    fix_missing_locations(module)
    flags = sum(f for f in _FUTURE_FLAGS if fn.__code__.co_flags & f)
    code = compile(module, fn.__code__.co_filename, "exec", flags=flags, dont_inherit=True)
    found = _find_code(code, name)
    if found is None:
        raise Unsupported(f"compiled source has no function {name}")
    return found.replace(co_name=fn.__code__.co_name)


def _defining_class(fn: types.FunctionType) -> str | None:
    parts = fn.__qualname__.split(".")
    if len(parts) >= 2 and parts[-2] != "<locals>":
        return parts[-2]
    return None


def _find_code(code: types.CodeType, name: str) -> types.CodeType | None:
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            if const.co_name == name:
                return const
            found = _find_code(const, name)
            if found is not None:
                return found
    return None


def _same_code(new: types.CodeType, old: types.CodeType) -> bool:
    return new.co_code == old.co_code or _fingerprint(new) == _fingerprint(old)


# Layout, not behaviour: jump offsets, and EXTENDED_ARG, which carries their high bits (a long
# loop body whose jumps cross 256 code units between two builds would differ only there).
_LAYOUT = frozenset(dis.hasjrel) | frozenset(dis.hasjabs) | {dis.opmap["EXTENDED_ARG"]}


def _fingerprint(code: types.CodeType) -> tuple:
    """What the code does, without what differs between builds of the same Python (specialised
    opcodes, jump offsets): every name, constant, local and operator it uses, in order."""
    return (code.co_varnames, code.co_freevars, tuple(
        _fingerprint(i.argval) if isinstance(i.argval, types.CodeType) else i.argval
        for i in dis.get_instructions(code) if i.opcode not in _LAYOUT and i.arg is not None))


# Attribute of a rebuilt function: (its rewritten source, its ParsedFunction, its bindings).
REWRITE_OF = "_optimize_loss_rewrite"
# Attribute of a rebuilt function: its rewritten tree, with the user's line numbers (copies the
# runtime builds of it, counting or running loops as written, keep them: tracebacks and the
# graphs' source lines point at the user's code, not at lines of the rewritten text).
REWRITTEN_TREE = "_optimize_loss_tree"
# Attribute of a rebuilt helper rewritten for calls under torch.vmap (``PassContext.mapped``): True.
MAPPED_REWRITE = "_optimize_loss_mapped"


def build_function(tree: ast.Module, parsed: ParsedFunction,
                   bindings: dict[str, Any] | None = None) -> Callable:
    """A function from the (rewritten) ``tree`` sharing ``parsed.fn``'s globals, cells, defaults;
    ``bindings`` are extra names generated code uses (bound as closure cells, not globals)."""
    fn = parsed.fn
    bindings = {TORCH_ALIAS: torch, **(bindings or {})}
    code = compile_function(tree, fn, bindings)
    cells = dict(zip(fn.__code__.co_freevars, fn.__closure__ or ()))
    for name, value in bindings.items():
        cells.setdefault(name, types.CellType(value))
    closure = tuple(cells[v] for v in code.co_freevars)
    new = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, closure)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__qualname__ = fn.__qualname__
    new.__module__ = fn.__module__
    new.__doc__ = fn.__doc__
    new.__annotations__ = fn.__annotations__
    return new


def rewrite_function(fn: Any, report: Report, dump: Dump | None = None,
                     rewriting: frozenset = frozenset(), mapped: bool = False
                     ) -> tuple[Callable, bool]:
    """The AST stage: parse ``fn``, run the AST pipeline, rebuild. Returns the rebuilt function
    and whether the passes changed anything; fills ``report``. ``rewriting`` holds the functions
    whose rewrite is in progress (a pass may rewrite the helpers a function calls); ``mapped``:
    ``fn`` is rewritten for calls under ``torch.vmap`` (``PassContext.mapped``).

    Raises ``Unsupported`` when ``fn`` cannot be parsed, ``RewriteError`` when a pass fails or
    the result does not compile.
    """
    def rewrite_helper(helper: Any, helper_report: Report, rewriting: frozenset = frozenset(),
                       mapped: bool = False):
        # A helper's code after each pass goes to the same dump, its steps named after it.
        named = dump and (lambda step, text: dump(f"{helper_report.function}.{step}", text))
        return rewrite_function(helper, helper_report, named, rewriting, mapped)

    parsed = parse_function(fn)
    report.filename, report.lineno, report.original_source = (
        parsed.filename, parsed.lineno, parsed.source)
    ctx = PassContext(filename=parsed.filename, func_name=report.function,
                      namer=Namer.for_tree(parsed.tree, set(fn.__globals__)), report=report,
                      globals=fn.__globals__, torch_name=parsed.torch_name,
                      rewriting=rewriting | {fn}, mapped=mapped, local_names=frozenset(
                          fn.__code__.co_varnames + fn.__code__.co_cellvars + fn.__code__.co_freevars),
                      closure=closed_values(fn),
                      parse_function=parse_function, rewrite_function=rewrite_helper)
    before = unparse(parsed.tree)
    tree = passes.pipeline.run_ast_pipeline(parsed.tree, ctx, dump)
    report.rewritten_source = unparse(tree)
    try:
        rebuilt = build_function(tree, parsed, ctx.bindings)
    except Exception as exc:  # our bug: a pass produced code that does not compile
        raise RewriteError(f"rewritten source does not compile: {exc}", parsed.filename,
                           parsed.lineno) from exc
    # what the runtime needs to build a copy counting the loops' runs (a helper's too)
    setattr(rebuilt, REWRITE_OF, (report.rewritten_source, parsed, dict(ctx.bindings)))
    setattr(rebuilt, REWRITTEN_TREE, clone(tree))
    if mapped:
        setattr(rebuilt, MAPPED_REWRITE, True)
    return rebuilt, report.rewritten_source != before
