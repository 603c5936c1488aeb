"""Mutation score of the fast tests over the rule tables and passes (not run in CI).

    python -m tests.mutation_score                  # every module in TARGETS
    python -m tests.mutation_score passes/op_facts.py
    python -m tests.mutation_score --sample 30     # about 30 mutants per module, evenly spread
    python -m tests.mutation_score passes/op_facts.py:59   # the mutants of one line

Each mutant changes one thing in one module: a comparison flipped (``<`` to ``>=``, ``in`` to
``not in``), ``and``/``or`` swapped, ``+``/``-`` and ``*``/``/`` swapped, a ``not`` dropped, a
constant changed (numbers + 1, booleans negated, strings prefixed with "XX"), or one entry dropped
from a dict, list, tuple or set literal (a table row). Docstrings and annotations are left alone.
A baseline run records which test runs which line of the module, and which names the project's
code each test runs reads (``sys.settrace``); a mutant then runs only those tests, ``-x``, in a
forked child of this process (torch stays imported), with the mutated module served in place of
the file. A mutant of a line run at import (a table) runs the tests whose code reads a name that
line binds, or one bound from it in the module (``LIST_CONSUMERS`` also for ``{**LIST_CONSUMERS,
...}``); every test when a module or class body, or code run outside any test, reads one (a
table built from it at import). Killed: a test failed, or the run took over ``TIMEOUT`` times the
baseline. A mutant the selected tests let live runs again with every test of the module, so a
selection that misses a reader (a value cached by an earlier test) costs time, never a kill.
Survived: every test passed, or no test runs the line. Equivalent mutants (no test can tell them
apart) are listed in ``EQUIVALENT`` with the reason and excluded.
"""
from __future__ import annotations

import ast
import copy
import importlib.abc
import importlib.util
import inspect
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch  # noqa: F401 - imported once here, so each forked mutant run starts warm

ROOT = Path(__file__).resolve().parent.parent
# Module -> the fast tests that exercise it.
TARGETS = {
    "passes/loop_rules.py": ["tests/test_loop_stages.py", "tests/test_vectorize_loops.py",
                             "tests/test_batch_loop_bodies.py", "tests/test_rule_tables.py"],
    "passes/op_facts.py": ["tests/test_ops_registry.py", "tests/test_hoist_passes.py",
                           "tests/test_rule_tables.py"],
    "passes/fuse_loss_idioms.py": ["tests/test_fuse_loss_idioms.py", "tests/test_rule_tables.py"],
    "passes/loops/tensor_branches_to_where.py": ["tests/test_tensor_branches_to_where.py",
                                                 "tests/test_vectorize_loops.py", "tests/test_rule_tables.py",
                                                 "tests/test_values_recomputed_under_a_condition.py",
                                                 "tests/test_selections_on_indices_and_in_inner_loops.py"],
}
TIMEOUT = 5
IMPORT = "<import>"  # the baseline's key for lines run outside any test
BODIES = "<bodies>"  # ... for the names module and class bodies read
PROJECT = tuple(str(ROOT / d) + os.sep for d in ("passes", "rewrite", "tests", "examples"))
# (module, line, mutation) -> why no test can tell the mutant from the original.
EQUIVALENT: dict[tuple[str, int, str], str] = {}

FLIPS = {ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt, ast.Eq: ast.NotEq,
         ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn,
         ast.NotIn: ast.In}
SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
         ast.And: ast.Or, ast.Or: ast.And, ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr}
SKIPPED_FIELDS = {"annotation", "returns", "decorator_list"}


def mutations(node: ast.AST) -> list[tuple[str, object]]:
    """(description, replacement node) for each mutant of ``node`` itself."""
    out = []
    if isinstance(node, ast.Compare):
        for j, op in enumerate(node.ops):
            if type(op) in FLIPS:
                new = copy.copy(node)
                new.ops = node.ops[:j] + [FLIPS[type(op)]()] + node.ops[j + 1:]
                out.append((f"{type(op).__name__} -> {FLIPS[type(op)].__name__}", new))
    elif isinstance(node, (ast.BinOp, ast.BoolOp)) and type(node.op) in SWAPS:
        new = copy.copy(node)
        new.op = SWAPS[type(node.op)]()
        out.append((f"{type(node.op).__name__} -> {new.op.__class__.__name__}", new))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        out.append(("drop not", node.operand))
    elif isinstance(node, ast.Constant):
        out += _constant(node)
    elif isinstance(node, ast.Dict):
        for j in range(len(node.keys)):
            new = copy.copy(node)
            new.keys, new.values = node.keys[:j] + node.keys[j + 1:], node.values[:j] + node.values[j + 1:]
            out.append((f"drop entry {j}", new))
    elif isinstance(node, (ast.List, ast.Tuple, ast.Set)) and isinstance(getattr(node, "ctx", ast.Load()), ast.Load):
        for j in range(len(node.elts)):
            new = copy.copy(node)
            new.elts = node.elts[:j] + node.elts[j + 1:]
            out.append((f"drop item {j}", new))
    return out


def _constant(node: ast.Constant) -> list[tuple[str, ast.AST]]:
    v = node.value
    if isinstance(v, bool):
        return [(f"{v} -> {not v}", ast.Constant(not v))]
    if isinstance(v, (int, float)):
        return [(f"{v!r} -> {v + 1!r}", ast.Constant(v + 1))]
    if isinstance(v, str):
        return [(f"{v[:20]!r} -> 'XX'...", ast.Constant("XX" + v))]
    return []


def _children(node: ast.AST):
    """Child nodes in field order, without annotations, docstrings and f-string parts."""
    for field, value in ast.iter_fields(node):
        if field in SKIPPED_FIELDS or isinstance(node, ast.JoinedStr):
            continue
        items = value if isinstance(value, list) else [value]
        for k, item in enumerate(items):
            docstring = (field == "body" and k == 0 and isinstance(item, ast.Expr)
                         and isinstance(item.value, ast.Constant) and isinstance(item.value.value, str))
            if isinstance(item, ast.AST) and not docstring:
                yield item


def sites(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, description) of every mutant, in a fixed pre-order; ``mutant`` takes the index."""
    found = []

    def visit(node):
        found.extend((getattr(node, "lineno", 0), d) for d, _ in mutations(node))
        for child in _children(node):
            visit(child)
    visit(tree)
    return found


def mutant(source: str, index: int) -> ast.Module:
    """The module with mutation number ``index`` (of ``sites``) applied."""
    tree = ast.parse(source)
    count = 0

    def visit(node):
        nonlocal count
        options = mutations(node)
        if count <= index < count + len(options):
            return ast.copy_location(options[index - count][1], node)
        count += len(options)
        for field, value in ast.iter_fields(node):
            if isinstance(value, list):
                setattr(node, field, [visit(v) if v in set(_children(node)) else v for v in value])
            elif isinstance(value, ast.AST) and value in set(_children(node)):
                setattr(node, field, visit(value))
        return node
    return ast.fix_missing_locations(visit(tree))


class _Serve(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the mutated code for one module name."""

    def __init__(self, name: str, code):
        self.name, self.code = name, code

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        return importlib.util.spec_from_file_location(fullname, ROOT / (fullname.replace(".", "/") + ".py"),
                                                      loader=self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(self.code, module.__dict__)


class _LineTracer:
    """pytest plugin: the lines of one file each test runs, and the names (globals and attributes,
    ``co_names``) the project's code it runs reads; module and class bodies' names under
    ``BODIES``, wherever they run."""

    def __init__(self, path: str):
        # lines run outside tests (imports at collection, cached tables) count for every test
        self.path, self.lines, self.names = path, {IMPORT: set()}, {IMPORT: set(), BODIES: set()}
        self.current, self.current_names = self.lines[IMPORT], self.names[IMPORT]
        sys.settrace(self._trace)

    def _trace(self, frame, event, arg):
        code = frame.f_code
        if code.co_filename.startswith(PROJECT):
            body = not code.co_flags & inspect.CO_NEWLOCALS
            if not body:
                self.current_names.update(code.co_names)
            elif code.co_filename != self.path:  # the module's own body binds every name
                self.names[BODIES].update(code.co_names)
        if code.co_filename != self.path:
            return None
        self.current.add(frame.f_lineno)

        def local(frame, event, arg):
            self.current.add(frame.f_lineno)
            return local
        return local

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.current = self.lines.setdefault(item.nodeid, set())
        self.current_names = self.names.setdefault(item.nodeid, set())
        sys.settrace(self._trace)
        yield
        self.current, self.current_names = self.lines[IMPORT], self.names[IMPORT]


class _FirstFailure:
    """pytest plugin: the id of the first failing test."""
    nodeid = ""

    def pytest_runtest_logreport(self, report):
        if report.failed and not self.nodeid:
            self.nodeid = report.nodeid


def _fork(run) -> tuple[int, float]:
    """(exit status, seconds) of ``run()`` in a forked child."""
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)
        code = 1
        try:
            code = run()
        finally:
            os._exit(int(code))
    return pid, start


def _wait(pid: int, start: float, limit: float | None) -> tuple[int | None, float]:
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), time.monotonic() - start
        if limit and time.monotonic() - start > limit:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None, time.monotonic() - start
        time.sleep(0.05)


def _forget_project_modules() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in {"passes", "rewrite", "tests", "examples"} and name != __name__:
            del sys.modules[name]


def _pytest(args: list[str], plugins=()) -> int:
    return pytest.main(["-q", "-x", "-p", "no:cacheprovider", "--no-header", "-o",
                        "addopts=", *args], plugins=list(plugins))


def baseline(path: str, tests: list[str]) -> tuple[dict[str, set[int]], dict[str, set[str]], float]:
    """Lines and names read per test id (``_LineTracer``), from one traced run of ``tests`` (in a
    child), and its duration."""
    out = ROOT / f".mutation_baseline_{os.getpid()}"

    def run():
        _forget_project_modules()
        tracer = _LineTracer(str(ROOT / path))
        code = _pytest(tests, [tracer])
        out.write_text(repr([{k: sorted(v) for k, v in table.items()}
                             for table in (tracer.lines, tracer.names)]))
        return code
    status, seconds = _wait(*_fork(run), None)
    assert status == 0, f"the tests fail without a mutant: {tests}"
    lines, names = ({k: set(v) for k, v in table.items()} for table in ast.literal_eval(out.read_text()))
    out.unlink()
    return lines, names, seconds


def bound_from(tree: ast.Module, line: int) -> set[str]:
    """The names the module's top-level statement at ``line`` binds, with the names later
    top-level statements bind from them (``B = {**A, ...}``)."""
    found: set[str] = set()
    for statement in tree.body:
        targets = ({statement.name} if isinstance(statement, (ast.FunctionDef, ast.ClassDef))
                   else {n.id for n in ast.walk(statement) if isinstance(n, ast.Name)
                         and isinstance(n.ctx, ast.Store)})
        reads = {n.id for n in ast.walk(statement) if isinstance(n, ast.Name)
                 and isinstance(n.ctx, ast.Load)}
        if statement.lineno <= line <= statement.end_lineno or reads & found:
            found |= targets
    return found


def readers(names: dict[str, set[str]], bound: set[str]) -> list[str] | None:
    """The tests whose code reads a name in ``bound``; None (every test) when code run at import
    or a module or class body reads one, or no test's code does."""
    if bound & (names[IMPORT] | names[BODIES]):
        return None
    return [t for t, read in names.items() if t not in (IMPORT, BODIES) and read & bound]


def score(path: str, tests: list[str], sample: int | None = None,
          only: set[int] | None = None) -> tuple[int, int, list[str]]:
    """(killed, counted, survivor descriptions) for one module: every mutant, or about ``sample``
    of them evenly spread (every k-th), when a full run does not fit."""
    source = (ROOT / path).read_text()
    name = path.removesuffix(".py").replace("/", ".")
    lines, names, seconds = baseline(path, tests)
    imported = lines.pop(IMPORT)
    tree = ast.parse(source)
    in_functions = {n.lineno for f in ast.walk(ast.parse(source))
                    if isinstance(f, ast.FunctionDef) for n in ast.walk(f)
                    if hasattr(n, "lineno")}
    killed, counted, survivors = 0, 0, []
    killers: list[str] = []  # tests that killed a mutant, latest first: run first
    all_sites = sites(ast.parse(source))
    step = max(1, len(all_sites) // sample) if sample else 1
    for index, (line, what) in enumerate(all_sites):
        if index % step or (path, line, what) in EQUIVALENT or (only and line not in only):
            continue
        counted += 1
        ids = [t for t, ran in lines.items() if line in ran]
        if line not in in_functions or line in imported:  # tables: the tests that read them
            ids = readers(names, bound_from(tree, line)) or list(lines)
        if not ids:
            survivors.append(f"{path}:{line}: {what} (no test runs this line)")
            continue
        code = compile(mutant(source, index), str(ROOT / path), "exec")
        status = _run_mutant(name, code, ids, killers, TIMEOUT * seconds + 30)
        if status == 0 and set(ids) != set(lines):  # a reader the trace missed: every test
            status = _run_mutant(name, code, list(lines), killers, TIMEOUT * seconds + 30)
        if status == 0:
            survivors.append(f"{path}:{line}: {what}")
        else:
            killed += 1
        print(f"{path}:{line}: {what}: {'survived' if status == 0 else 'killed'} "
              f"({len(ids)} of {len(lines)} tests selected)", flush=True)
    return killed, counted, survivors


def _run_mutant(name: str, code, ids: list[str], killers: list[str], limit: float) -> int | None:
    """The exit status of ``ids`` run on the mutant (None: timed out), the tests that killed a
    mutant before run first; a killer goes to the front of ``killers``."""
    ids = sorted(ids, key=lambda i: killers.index(i) if i in killers else len(killers))
    result = ROOT / f".mutation_killer_{os.getpid()}"

    def run():
        _forget_project_modules()
        sys.meta_path.insert(0, _Serve(name, code))
        recorder = _FirstFailure()
        status = _pytest(ids, [recorder])
        result.write_text(recorder.nodeid)
        return status
    status, _ = _wait(*_fork(run), limit)
    killer = result.read_text() if status != 0 and result.exists() else ""
    killers[:] = [killer] + [k for k in killers if k != killer] if killer else killers
    result.unlink(missing_ok=True)
    return status


def _warm(tests: list[str]) -> None:
    """Import the project and the tests once, then forget the project's modules: the third-party
    modules they pull in (torch._dynamo, hypothesis) stay imported for every forked child."""
    import importlib
    for test in tests:
        importlib.import_module(test.removesuffix(".py").replace("/", "."))
    _forget_project_modules()


def main(paths: list[str], sample: int | None) -> None:
    _warm(sorted({t for p in paths or TARGETS for t in TARGETS[p.partition(":")[0]]}))
    totals = [0, 0]
    report = []
    lines: dict[str, set[int]] = {}  # "module.py:LINE": only that line's mutants
    for spec in paths or list(TARGETS):
        path, _, line = spec.partition(":")
        lines.setdefault(path, set()).update({int(line)} if line else set())
    for path, only in lines.items():
        killed, counted, survivors = score(path, TARGETS[path], sample, only)
        totals[0] += killed
        totals[1] += counted
        report.append(f"{path}: {killed}/{counted} killed ({100 * killed / max(counted, 1):.0f}%)")
        report += [f"  survived: {s}" for s in survivors]
    report.append(f"total: {totals[0]}/{totals[1]} killed ({100 * totals[0] / max(totals[1], 1):.1f}%)")
    print("\n".join(report))


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.stdout.reconfigure(line_buffering=True)
    args = sys.argv[1:]
    sample = int(args.pop(args.index("--sample") + 1)) if "--sample" in args else None
    main([a for a in args if a != "--sample"], sample)
