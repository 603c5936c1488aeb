"""Inputs for the CLI: ``FILE.py:FUNC`` loading and the input SPEC grammar.

SPEC grammar (one value per ``--input NAME=SPEC``)::

    float32[64,10]        random normal tensor of that dtype and shape
    float32[64,10]:grad   ... with requires_grad=True (floating dtypes only)
    float32[64]:0..1      uniform in [0, 1)
    int64[64]:0..10       random integers in [0, 10) (integers without a range: [0, 10))
    bool[64]              random booleans
    float64[]             a 0-d (scalar) tensor
    0.5  3  True  None    a Python number, bool or None
    mean  'mean'          a string (a bare word that is not a dtype name)

Every problem is an ``InputError`` with a one-line message naming the SPEC or parameter.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import os
import re
import sys
from typing import Any, Callable

import torch

from .. import frontend

SPEC_HELP = """\
input SPEC grammar (--input NAME=SPEC, NAME a parameter of FUNC):
  float32[64,10]       random normal tensor     float32[64,10]:grad  ... with requires_grad
  float32[64]:0..1     uniform in [0, 1)        int64[64]:0..10      integers in [0, 10)
  bool[64]             random booleans          float64[]            0-d (scalar) tensor
  0.5, 3, True, None   Python values            mean                 a string
--inputs MODULE:FACTORY calls FACTORY() for the argument tuple (MODULE a module or a .py file);
without inputs on the command line, FUNC's @optimize_loss(example_inputs=...) is used."""

_TENSOR = re.compile(r"^(\w+)\[([^\]]*)\]((?::[^:]*)*)$")
_RANGE = re.compile(r"^(-?[\d.e+-]+)\.\.(-?[\d.e+-]+)$")
_DEFAULT_INT_RANGE = (0, 10)


class InputError(Exception):
    """A bad SPEC, FILE.py:FUNC or missing input: the CLI prints the message and exits 2."""


def parse_spec(spec: str, generator: torch.Generator | None = None) -> Any:
    """The value a SPEC stands for (random tensors come from ``generator``)."""
    text = spec.strip()
    match = _TENSOR.match(text)
    if match is None:
        return _parse_plain(text, spec)
    dtype_name, dims, modifiers = match.groups()
    dtype = getattr(torch, dtype_name, None)
    if not isinstance(dtype, torch.dtype):
        raise InputError(f"bad input spec {spec!r}: unknown dtype {dtype_name!r}")
    try:
        shape = [int(d) for d in dims.split(",") if d.strip()]
    except ValueError:
        raise InputError(f"bad input spec {spec!r}: dimensions must be integers, e.g. float32[64,10]") from None
    if any(d < 0 for d in shape):
        raise InputError(f"bad input spec {spec!r}: negative dimension")
    grad, bounds = False, None
    for mod in filter(None, modifiers.split(":")):
        if mod == "grad":
            grad = True
        elif (found := _RANGE.match(mod)) is not None:
            bounds = _bounds(found, dtype, spec)
        else:
            raise InputError(f"bad input spec {spec!r}: unknown suffix ':{mod}' (expected :grad or :LO..HI)")
    if grad and not (dtype.is_floating_point or dtype.is_complex):
        raise InputError(f"bad input spec {spec!r}: only floating dtypes can take :grad")
    value = _random(dtype, shape, bounds, generator, spec)
    return value.requires_grad_() if grad else value


def _bounds(found: re.Match, dtype: torch.dtype, spec: str) -> tuple[float, float]:
    cast = float if dtype.is_floating_point else int
    try:
        lo, hi = cast(found.group(1)), cast(found.group(2))
    except ValueError:
        raise InputError(f"bad input spec {spec!r}: range of {dtype} needs {cast.__name__} bounds") from None
    if not lo < hi:
        raise InputError(f"bad input spec {spec!r}: empty range {lo}..{hi}")
    return lo, hi


def _random(dtype: torch.dtype, shape: list[int], bounds: tuple | None,
            generator: torch.Generator | None, spec: str) -> torch.Tensor:
    if dtype == torch.bool:
        if bounds is not None:
            raise InputError(f"bad input spec {spec!r}: bool takes no range")
        return torch.rand(shape, generator=generator) < 0.5
    if dtype.is_floating_point or dtype.is_complex:
        if bounds is None:
            return torch.randn(shape, generator=generator, dtype=dtype)
        lo, hi = bounds
        return torch.rand(shape, generator=generator, dtype=dtype) * (hi - lo) + lo
    lo, hi = bounds or _DEFAULT_INT_RANGE
    return torch.randint(lo, hi, shape, generator=generator, dtype=dtype)


def _parse_plain(text: str, spec: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    if isinstance(getattr(torch, text, None), torch.dtype):
        raise InputError(f"bad input spec {spec!r}: a tensor needs dimensions, e.g. {text}[64] or {text}[] for a scalar")
    if text.isidentifier():
        return text
    raise InputError(f"bad input spec {spec!r}: expected DTYPE[DIMS][:grad][:LO..HI], a number, or a word")


def load_target(target: str) -> Callable:
    """The callable named by ``FILE.py:FUNC`` (FUNC may be dotted, e.g. ``Class.method``)."""
    path, sep, name = target.rpartition(":")
    if not sep or not path or not name:
        raise InputError(f"bad target {target!r}: expected FILE.py:FUNC")
    module = _load_module(path, target)
    return _attribute(module, name, path)


def load_factory(spec: str) -> Callable:
    """The factory named by ``MODULE:FACTORY`` (MODULE a dotted module name or a .py file)."""
    module_name, sep, name = spec.rpartition(":")
    if not sep or not module_name or not name:
        raise InputError(f"bad --inputs {spec!r}: expected MODULE:FACTORY")
    module = _load_module(module_name, spec)
    factory = _attribute(module, name, module_name)
    if not callable(factory):
        raise InputError(f"--inputs {spec}: {name} is not callable")
    return factory


def _load_module(path: str, what: str) -> Any:
    try:
        if not path.endswith(".py"):
            return importlib.import_module(path)
        if not os.path.isfile(path):
            raise InputError(f"{what}: no such file {path}")
        full = os.path.abspath(path)
        # Like running the file as a script: its own directory is importable (sibling helpers).
        folder = os.path.dirname(full)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        name = "_optimize_loss_cli_" + re.sub(r"\W", "_", full)
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, full)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look the module up by name
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{what}: cannot load {path}: {type(exc).__name__}: {_one_line(exc)}") from None


def _attribute(module: Any, dotted: str, where: str) -> Any:
    obj = module
    for part in dotted.split("."):
        if not hasattr(obj, part):
            raise InputError(f"{where} has no {dotted!r}")
        obj = getattr(obj, part)
    return obj


def build_inputs(fn: Callable, specs: list[str], factory: str | None, example: Any,
                 seed: int = 0) -> tuple[tuple, dict]:
    """(args, kwargs) for ``fn``: from ``--inputs`` and ``--input NAME=SPEC`` (which override the
    factory's values by name), else from ``example`` (the decorator's ``example_inputs``)."""
    generator = torch.Generator().manual_seed(seed)
    if factory is None and not specs:
        if example is None:
            raise InputError(f"no inputs for {frontend.describe(fn)[0]}: give --input NAME=SPEC for each of "
                             f"{', '.join(_required(fn)) or 'its parameters'}, or --inputs MODULE:FACTORY")
        return _as_call(example() if callable(example) else example, "example_inputs")
    args, kwargs = (), {}
    if factory is not None:
        try:
            produced = load_factory(factory)()
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"--inputs {factory} raised {type(exc).__name__}: {_one_line(exc)}") from None
        args, kwargs = _as_call(produced, f"--inputs {factory}")
    given: dict[str, Any] = {}
    for item in specs:
        name, sep, spec = item.partition("=")
        if not sep or not name.strip():
            raise InputError(f"bad --input {item!r}: expected NAME=SPEC, e.g. pred=float32[64,10]:grad")
        given[name.strip()] = parse_spec(spec, generator)
    return _bind(fn, args, kwargs, given)


def _as_call(value: Any, what: str) -> tuple[tuple, dict]:
    if isinstance(value, dict):
        return (), dict(value)
    if isinstance(value, (tuple, list)):
        return tuple(value), {}
    raise InputError(f"{what} must give a tuple of arguments or a dict of keyword arguments, "
                     f"got {type(value).__name__}")


def _bind(fn: Callable, args: tuple, kwargs: dict, given: dict[str, Any]) -> tuple[tuple, dict]:
    """Merge positional ``args``, ``kwargs`` and named ``given`` values into one call of ``fn``."""
    try:
        params = frontend.call_signature(fn).parameters
    except (TypeError, ValueError):
        raise InputError(f"cannot read the signature of {frontend.describe(fn)[0]}") from None
    unknown = [n for n in given if n not in params or params[n].kind in (
        inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    if unknown:
        raise InputError(f"{frontend.describe(fn)[0]} has no parameter {unknown[0]!r} (parameters: {', '.join(params)})")
    positional = [p for p in params.values() if p.kind in (
        inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    values = dict(zip((p.name for p in positional), args))
    values.update(kwargs)
    values.update(given)
    missing = [n for n in _required(fn) if n not in values]
    if missing:
        raise InputError(f"missing input for parameter {missing[0]!r} of {frontend.describe(fn)[0]}: "
                         f"give --input {missing[0]}=SPEC")
    extra_args = tuple(args[len(positional):])  # for *args
    call_args = [values.pop(p.name) for p in positional if p.kind == inspect.Parameter.POSITIONAL_ONLY]
    if extra_args:  # *args needs every positional parameter passed positionally
        call_args += [values.pop(p.name) for p in positional if p.name in values]
        call_args += extra_args
    return tuple(call_args), values


def _required(fn: Callable) -> list[str]:
    try:
        params = frontend.call_signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.default is inspect.Parameter.empty
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
