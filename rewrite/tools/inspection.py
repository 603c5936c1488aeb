"""``optimize-loss inspect | verify | lint FILE.py:FUNC``: offline inspection of a rewrite.

``inspect --json`` prints one object with these keys (stable; new keys may be added):

    version       1
    function, file, line          the function and where its ``def`` is
    inputs        the input signature, e.g. "(float32[64, 10]:grad, int64[64])"
    passes        AST passes that ran
    loops         [{file, line, vectorized, strategy, reason, runs}]  one per loop of the source
    fallbacks     [{reason, file, line, pass, signature, running}]  what runs instead
    notes         [str]
    forms         [str]  per input signature timed: which form runs (rewritten or original), why
    target_only   [str]  FX nodes the hoisting passes moved out of autograd
    source        {original, rewritten, diff}  (original as normalised by ast.unparse;
                  rewritten "" when the AST stage fell back; diff is a unified diff)
    graph         {traced, tracer, error, fx_passes, dot, nodes}; tracer: "symbolic_trace"
                  (torch-level, with the user's lines), "make_fx" (aten-level, for these input
                  shapes: used when symbolic tracing fails) or null; error: why symbolic tracing
                  failed (file:line), or what else went wrong; fx_passes: the FX passes that ran
        nodes     [{name, op, target, args, inputs, class, location, not_hoisted_because,
                  dtype, shape}]; inputs: names of the nodes it reads; class is one of
                  input, output,
                  grad     on the gradient path,
                  hoisted  target-only (no input that requires grad reaches it), moved out of
                           autograd by the hoisting pass,
                  target   target-only but kept in the core graph (not_hoisted_because says why),
                  nondiff  a tensor computed from the gradient path that has no gradient,
                  meta     not a tensor: shapes, Python values
    lint          [{kind, message, file, line, fix, inputs}]  see ``rewrite.lint.RULES``
    timings_ms    {repeat, original, optimized, compiled}  median fwd+bwd time; optimized runs
                  the rewritten function eagerly; compiled is null without --compile
"""
from __future__ import annotations

import argparse
import difflib
import inspect
import json
import statistics
import sys
import time
import traceback
import warnings
from typing import Any, Callable

import torch
import torch.fx
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torch.utils._pytree import tree_flatten, tree_unflatten

from passes.ast_tools import unparse
from passes.errors import Unsupported
from passes.meta_keys import GRAD_DEPENDENCE, HOISTED, NOT_HOISTED_BECAUSE, REQUIRES_GRAD, USER_LOCATION
from passes.pipeline import run_fx_pipeline
from passes.report import describe_runs

from .. import frontend, keep_faster
from ..decorator import optimize_loss
from ..lint import caller_location, lint, user_location
from ..runtime import OptimizedFunction, describe_key, signature_key
from ..testing import clone_inputs, differences, differentiable_inputs, outputs_and_gradients
from .html_report import CLASS_COLOURS, render_html
from .inputs import SPEC_HELP, InputError, build_inputs, load_target

JSON_VERSION = 1


# -- arguments --------------------------------------------------------------------------------
def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = SPEC_HELP
    parser.add_argument("target", metavar="FILE.py:FUNC", help="the loss function to look at")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=SPEC",
                        help="one argument of FUNC (repeat for each); SPEC grammar below")
    parser.add_argument("--inputs", metavar="MODULE:FACTORY",
                        help="FACTORY() returns the argument tuple (or a dict of keyword arguments)")


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument("--json", action="store_true", help="print everything as one JSON object")
    parser.add_argument("--html", metavar="OUT.html", help="write a self-contained HTML report")
    parser.add_argument("--dot", metavar="OUT.dot", help="write the classified graph as graphviz DOT")
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile'd version")
    parser.add_argument("--repeat", type=int, default=10, help="timing repeats (median; default 10)")


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument("--compile", action="store_true",
                        help="verify the torch.compile'd version (default: the eager rewritten one)")


def add_lint_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument("--json", action="store_true", help="print the findings as a JSON list")


# -- commands ---------------------------------------------------------------------------------
def run_inspect(args: argparse.Namespace) -> int:
    def body(fn: Callable, call: tuple[tuple, dict]) -> int:
        data = collect(fn, *call, repeat=args.repeat, compile=args.compile)
        if args.dot:
            _write(args.dot, data["graph"]["dot"] or "")
        if args.html:
            _write(args.html, render_html(data))
        print(json.dumps(data, indent=2) if args.json else format_text(data))
        return 0
    return _command(args, body)


def run_verify(args: argparse.Namespace) -> int:
    def body(fn: Callable, call: tuple[tuple, dict]) -> int:
        call_args, call_kwargs = call
        optimized = optimize_loss(fn, compile=args.compile)
        want_values, want_grads = outputs_and_gradients(fn, call_args, call_kwargs)
        got_values, got_grads = outputs_and_gradients(optimized, call_args, call_kwargs)
        rows = [(f"output {i}", w, g) for i, (w, g) in enumerate(zip(want_values, got_values))]
        rows += [(f"gradient of {name}", want_grads[name], got_grads[name]) for name in want_grads]
        report = optimized.report
        print(f"verify {report.function} ({report.filename}:{report.lineno}) on "
              f"{describe_key(signature_key(call_args, call_kwargs))}")
        for fallback in report.fallbacks:
            print(f"  note: {fallback}")
        print(f"  {'':<44} {'max abs diff':>12} {'max rel diff':>12}")
        for what, want, got in rows:
            abs_diff, rel_diff = _max_diffs(want, got)
            print(f"  {what:<44} {abs_diff:>12.3g} {rel_diff:>12.3g}")
        problems = differences(fn, optimized, call_args, call_kwargs)
        if problems:
            print("NOT equivalent:\n  " + "\n  ".join(problems))
            return 1
        print("equivalent (value and every gradient within tolerance)")
        return 0
    return _command(args, body)


def run_lint(args: argparse.Namespace) -> int:
    def body(fn: Callable, call: tuple[tuple, dict]) -> int:
        if not differentiable_inputs(*call):
            raise InputError(f"nothing to lint: no input of {frontend.describe(fn)[0]} requires grad "
                             f"(mark one with :grad, e.g. --input NAME=float32[8]:grad)")
        findings = lint(fn, *call[0], **call[1])
        if args.json:
            print(json.dumps([f.to_dict() for f in findings], indent=2))
        else:
            print("\n".join(map(str, findings)) or f"{frontend.describe(fn)[0]}: no gradient-flow problems found")
        return 1 if findings else 0
    return _command(args, body)


def _command(args: argparse.Namespace, body: Callable[[Callable, tuple[tuple, dict]], int]) -> int:
    """Load FUNC and its inputs and run ``body``; any failure is one line on stderr and exit 2."""
    try:
        fn, example = _load(args.target)
        call = build_inputs(fn, args.input, args.inputs, example)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fallbacks and lint findings are in the output already
            return body(fn, call)
    except InputError as exc:
        print(f"optimize-loss {args.command}: {exc}", file=sys.stderr)
    except Exception as exc:  # mostly the user's function raising on these inputs: say where
        frames = [(f.filename, f.lineno) for f in reversed(traceback.extract_tb(exc.__traceback__))]
        filename, lineno = user_location(frames)
        print(f"optimize-loss {args.command}: {filename}:{lineno}: {type(exc).__name__}: {_one_line(exc)}",
              file=sys.stderr)
    return 2


def _load(target: str) -> tuple[Callable, Any]:
    """The original function named by ``target`` and its decorator's ``example_inputs``."""
    loaded = load_target(target)
    if isinstance(loaded, OptimizedFunction):
        return loaded.__wrapped__, loaded.example_inputs
    if inspect.isclass(loaded) or not callable(loaded):
        raise InputError(f"{target} is not a function (name a function or a loss instance)")
    return loaded, None


# -- inspect ----------------------------------------------------------------------------------
def collect(fn: Callable, args: tuple, kwargs: dict, repeat: int = 10, compile: bool = False) -> dict:
    """Everything ``inspect`` shows, as the JSON object documented in this module's docstring."""
    if isinstance(fn, torch.nn.Module):
        raise InputError(f"inspect needs a function, not a {type(fn).__name__} module "
                         f"(verify and lint take modules)")
    optimized = optimize_loss(fn, compile=False)  # its timed calls show the choice of form
    report = optimized.report
    rewritten = optimized.rewritten_function()
    original = _normalised_source(fn, report.original_source)
    diff = "".join(line + "\n" for line in difflib.unified_diff(
        original.splitlines(), (report.rewritten_source or original).splitlines(), "original",
        "rewritten", lineterm=""))
    timings = {"repeat": repeat, "original": fwd_bwd_ms(fn, args, kwargs, repeat),
               "optimized": fwd_bwd_ms(optimized, args, kwargs, repeat), "compiled": None}
    if compile:
        timings["compiled"] = fwd_bwd_ms(optimize_loss(fn), args, kwargs, repeat)
    return {
        "version": JSON_VERSION,
        "function": report.function, "file": report.filename, "line": report.lineno,
        "inputs": describe_key(signature_key(args, kwargs)),
        "passes": list(report.passes_run),
        "loops": [{"file": loop.filename, "line": loop.lineno, "vectorized": loop.vectorized,
                   "strategy": loop.ran_as(), "reason": loop.reason, "runs": loop.runs()}
                  for loop in sorted(report.loops, key=lambda loop: loop.lineno)],
        "fallbacks": [{"reason": f.reason, "file": f.filename, "line": f.lineno, "pass": f.pass_name,
                       "signature": f.signature, "running": f.running} for f in report.fallbacks],
        "notes": list(report.notes),
        "forms": [str(f) for f in report.forms],
        "target_only": list(report.target_only),
        "source": {"original": original, "rewritten": report.rewritten_source, "diff": diff},
        "graph": graph_data(rewritten, args, kwargs, report.filename),
        "lint": [f.to_dict() for f in lint(fn, *args, **kwargs)],
        "timings_ms": timings,
    }


def _normalised_source(fn: Callable, fallback: str) -> str:
    """The source as ast.unparse prints it, so the diff shows what the passes changed, not formatting."""
    try:
        return unparse(frontend.parse_function(fn).tree)
    except Unsupported:
        return fallback


def fwd_bwd_ms(fn: Callable, args: tuple, kwargs: dict, repeat: int) -> float:
    """Median wall time of forward + backward (w.r.t. every input requiring grad), in ms, on one
    thread; the first calls (compilation, caches, an optimized function's timed choice of form,
    ``rewrite.keep_faster``) are not timed."""
    args, kwargs = clone_inputs(args, kwargs)
    wrt = list(differentiable_inputs(args, kwargs).values())

    def once() -> None:
        out = [v for v in tree_flatten(fn(*args, **kwargs))[0]
               if isinstance(v, torch.Tensor) and v.requires_grad]
        if out and wrt:
            torch.autograd.grad(sum(v.sum() for v in out), wrt, allow_unused=True)

    # One intra-op thread: with two, a busy neighbour process makes every op wait for the pool
    # (seen here: 16 ms medians for a 0.7 ms loss), hiding the difference being measured.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(2 + keep_faster.TRIAL_CALLS):  # the first, the trial's, the deciding one
            once()
        times = []
        for _ in range(max(repeat, 1)):
            start = time.perf_counter()
            once()
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times) * 1e3


def _max_diffs(want: Any, got: Any) -> tuple[float, float]:
    if not (isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor)) or want.shape != got.shape:
        return (0.0, 0.0) if want == got else (float("inf"), float("inf"))
    want, got = want.detach().double(), got.detach().double()
    if want.numel() == 0:
        return 0.0, 0.0
    diff = (got - want).abs()
    rel = diff / want.abs().clamp_min(torch.finfo(torch.float64).tiny)
    return diff.max().item(), torch.where(diff == 0, 0.0, rel).max().item()


# -- graph ------------------------------------------------------------------------------------
class _UserTracer(torch.fx.Tracer):
    """Records, per node, the user's file:line that created it."""

    def __init__(self, home: str):
        super().__init__()
        self.home = home

    def create_node(self, *args: Any, **kwargs: Any) -> torch.fx.Node:
        node = super().create_node(*args, **kwargs)
        filename, lineno = caller_location(self.home)
        if filename == self.home:
            node.meta[USER_LOCATION] = f"{filename}:{lineno}"
        return node


def graph_data(fn: Callable, args: tuple, kwargs: dict, home: str) -> dict:
    """The traced FX graph of ``fn`` after the FX passes, every node classified; or why not.

    ``symbolic_trace`` gives the readable torch-level graph with the user's lines; it fails on
    shape-dependent Python (loops over ``x.shape[0]``, the rewritten code's shape guards), and
    then ``make_fx`` traces the aten-level graph for these inputs' concrete shapes."""
    data: dict[str, Any] = {"traced": False, "tracer": None, "error": None, "fx_passes": [],
                            "nodes": [], "dot": None}
    try:
        gm, values = _symbolic_trace(fn, args, kwargs, home), _flat_inputs(fn, args, kwargs)
        data["tracer"] = "symbolic_trace"
    except Exception as exc:
        frames = [(f.filename, f.lineno) for f in reversed(traceback.extract_tb(exc.__traceback__))]
        filename, lineno = user_location(frames, home)
        data["error"] = (f"symbolic tracing failed at {filename}:{lineno}: {type(exc).__name__}: "
                         f"{_one_line(exc)}")
        try:
            gm, values = _concrete_trace(fn, args, kwargs)
            data["tracer"] = "make_fx"
        except Exception as exc:
            data["error"] += f"; make_fx failed too: {type(exc).__name__}: {_one_line(exc)}"
            return data
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for node, value in zip(placeholders, values):
        node.meta[REQUIRES_GRAD] = isinstance(value, torch.Tensor) and value.requires_grad
    try:
        ShapeProp(gm).propagate(*values)  # dtypes, shapes, requires_grad: the hoisting pass reads them too
        # The passes annotate (GRAD_DEPENDENCE, HOISTED) the nodes of `gm` itself, then return a
        # split copy: the picture shows `gm`, where every node is still in one graph.
        run_fx_pipeline(gm, home, data["fx_passes"])
    except Exception as exc:
        data["error"] = f"{data['error'] + '; ' if data['error'] else ''}{type(exc).__name__}: {_one_line(exc)}"
    data["traced"] = True
    data["nodes"] = [_node_dict(n) for n in gm.graph.nodes]
    data["dot"] = to_dot(data["nodes"], frontend.describe(fn)[0])
    return data


def _symbolic_trace(fn: Callable, args: tuple, kwargs: dict, home: str) -> torch.fx.GraphModule:
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    concrete = {k: v for k, v in bound.arguments.items() if not isinstance(v, torch.Tensor)}
    tracer = _UserTracer(home)
    graph = tracer.trace(fn, concrete_args=concrete)
    return torch.fx.GraphModule(tracer.root, graph)


def _flat_inputs(fn: Callable, args: tuple, kwargs: dict) -> list:
    """The values of ``symbolic_trace``'s placeholders: every parameter, defaults included."""
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return list(bound.arguments.values())


def _concrete_trace(fn: Callable, args: tuple, kwargs: dict) -> tuple[torch.fx.GraphModule, list]:
    """``make_fx`` of ``fn`` with its tensor inputs as placeholders, everything else fixed."""
    flat, spec = tree_flatten((args, kwargs))
    where = [i for i, v in enumerate(flat) if isinstance(v, torch.Tensor)]

    def call(*tensors: torch.Tensor) -> Any:
        values = list(flat)
        for i, t in zip(where, tensors):
            values[i] = t
        call_args, call_kwargs = tree_unflatten(values, spec)
        return fn(*call_args, **call_kwargs)

    tensors = [flat[i] for i in where]
    return make_fx(call, tracing_mode="real")(*tensors), tensors


def _node_class(node: torch.fx.Node) -> str:
    if node.op in ("placeholder", "output"):
        return "input" if node.op == "placeholder" else "output"
    meta = node.meta.get("tensor_meta")
    if not isinstance(meta, TensorMetadata):
        return "meta"
    if node.meta.get(GRAD_DEPENDENCE) == "target":
        return "hoisted" if node.meta.get(HOISTED) else "target"
    return "grad" if meta.requires_grad else "nondiff"


def _node_dict(node: torch.fx.Node) -> dict:
    meta = node.meta.get("tensor_meta")
    tensor = isinstance(meta, TensorMetadata)
    return {"name": node.name, "op": node.op, "target": _target_name(node.target),
            "args": _args_text(node), "inputs": [n.name for n in node.all_input_nodes],
            "class": _node_class(node),
            "location": node.meta.get(USER_LOCATION),
            "not_hoisted_because": node.meta.get(NOT_HOISTED_BECAUSE),
            "dtype": str(meta.dtype).replace("torch.", "") if tensor else None,
            "shape": list(meta.shape) if tensor else None}


def _target_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None)
    module = {"_operator": "operator", "builtins": None, "torch._ops.aten": "aten"}.get(module, module)
    name = getattr(target, "__name__", repr(target))
    return f"{module}.{name}" if module else name


class _Ref(str):
    """A node argument printed as its name."""
    def __repr__(self) -> str:
        return str(self)


def _args_text(node: torch.fx.Node) -> str:
    args = torch.fx.node.map_arg(node.args, lambda n: _Ref(n.name))
    kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: _Ref(n.name))
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return ", ".join(parts)


def to_dot(nodes: list[dict], title: str) -> str:
    """The classified graph as graphviz DOT, nodes filled by class, with a legend."""
    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"digraph {quote(title)} {{", "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];']
    for node in nodes:
        label = node["name"] if node["op"] in ("placeholder", "output") else f"{node['name']}\n{node['target']}"
        if node["shape"] is not None:
            label += f"\n{node['dtype']}{node['shape']}"
        lines.append(f"  {quote(node['name'])} [label={quote(label)}, "
                     f"fillcolor={quote(CLASS_COLOURS[node['class']][0])}];")
    for node in nodes:
        lines += [f"  {quote(src)} -> {quote(node['name'])};" for src in node["inputs"]]
    lines.append('  subgraph cluster_legend { label="legend"; fontname="Helvetica";')
    for cls, (colour, text) in CLASS_COLOURS.items():
        lines.append(f"    {quote('legend_' + cls)} [label={quote(text)}, fillcolor={quote(colour)}];")
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- text output ------------------------------------------------------------------------------
def format_text(data: dict) -> str:
    out = [f"optimize_loss inspect: {data['function']} ({data['file']}:{data['line']})",
           f"inputs: {data['inputs']}", "", "loops:"]
    out += [f"  {l['file']}:{l['line']}: " + (f"vectorized ({l['strategy']})" if l["vectorized"] else "kept")
            + f": {l['reason']}{describe_runs(l['runs'])}" for l in data["loops"]] or ["  no loops"]
    out += [f"  fallback: {f['file']}:{f['line']}: {f['reason']}" for f in data["fallbacks"]]
    out += [f"  note: {n}" for n in data["notes"]]
    out += [f"  form: {f}" for f in data["forms"]]
    out += ["", "source diff (original -> rewritten):"]
    diff = data["source"]["diff"]
    out += ["  " + line for line in diff.splitlines()] if diff else [
        "  (not rewritten)" if not data["source"]["rewritten"] else "  (unchanged)"]
    graph = data["graph"]
    passes_done = f", after {', '.join(graph['fx_passes'])}" if graph["fx_passes"] else ""
    out += ["", f"graph (rewritten function, traced by {graph['tracer'] or 'nothing'}{passes_done}):"]
    if graph["error"]:
        out.append(f"  {graph['error']}")
    for node in graph["nodes"]:
        text = _node_line(node)
        if node["class"] == "target" and node["not_hoisted_because"]:
            text += f"   (kept: {node['not_hoisted_because']})"
        out.append(f"  {node['class']:<8} {text}" + (f"   # {node['location']}" if node["location"] else ""))
    out += ["", "lint:"]
    out += [f"  {f['file']}:{f['line']}: [{f['kind']}] {f['message']}. Fix: {f['fix']}"
            for f in data["lint"]] or ["  no gradient-flow problems found"]
    t = data["timings_ms"]
    timing = f"original {t['original']:.3f} ms, optimized {t['optimized']:.3f} ms ({t['original'] / t['optimized']:.2f}x)"
    if t["compiled"] is not None:
        timing += f", compiled {t['compiled']:.3f} ms ({t['original'] / t['compiled']:.2f}x)"
    out += ["", f"timings (fwd+bwd, median of {t['repeat']}, 1 thread): {timing}"]
    return "\n".join(out)


def _node_line(node: dict) -> str:
    if node["op"] == "placeholder":
        return node["name"]
    if node["op"] == "output":
        return f"return {node['args']}"
    if node["op"] == "call_method":
        first, _, rest = node["args"].partition(", ")
        return f"{node['name']} = {first}.{node['target']}({rest})"
    if node["op"] == "get_attr":
        return f"{node['name']} = self.{node['target']}"
    return f"{node['name']} = {node['target']}({node['args']})"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from None

