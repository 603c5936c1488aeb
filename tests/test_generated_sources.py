"""Golden suite: the code the AST passes generate for every function of every example, with the
loop report, compared byte for byte with ``tests/golden/examples/<name>.txt``.

The snapshot was taken before the vectorizer was restructured into stages; a change to generated
code must be deliberate: regenerate with ``OL_UPDATE_GOLDEN=1 pytest tests/test_generated_sources.py``
and review the diff of the golden files.
"""
from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path

import pytest

from passes.errors import RewriteError, Unsupported
from rewrite.frontend import rewrite_function
from passes.report import Report
from tests.helpers import EXAMPLE_NAMES as NAMES

GOLDEN = Path(__file__).parent / "golden" / "examples"
ROOT = Path(__file__).parent.parent


def generated(name: str) -> str:
    """Every function the example module defines, as the AST passes rewrite it, with its loops."""
    module = importlib.import_module(f"examples.{name}")
    out = []
    for fname, fn in sorted(vars(module).items()):
        # The module's own functions (torch.compile adds ``__resume_at_*`` ones to its globals).
        if not inspect.isfunction(fn) or fn.__module__ != module.__name__ \
                or fname == "make_inputs" or fname.startswith("__"):
            continue
        report = Report(fn.__qualname__, "", 0)
        try:
            _, changed = rewrite_function(fn, report)
        except (Unsupported, RewriteError) as exc:
            out.append(f"### {fname}: not rewritten: {exc}\n")
            continue
        loops = "".join(f"# {loop}\n" for loop in sorted(report.loops, key=lambda l: l.lineno))
        body = report.rewritten_source if changed else "(unchanged)"
        out.append(f"### {fname}\n{loops}{body}\n")
    return "\n".join(out).replace(str(ROOT) + os.sep, "")


@pytest.mark.parametrize("name", NAMES)
def test_generated_source_is_the_golden_one(name):
    path = GOLDEN / f"{name}.txt"
    text = generated(name)
    if os.environ.get("OL_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"no golden file for {name}: run with OL_UPDATE_GOLDEN=1"
    assert text == path.read_text()


def test_every_example_has_a_golden_file_and_no_stale_ones():
    assert sorted(p.stem for p in GOLDEN.glob("*.txt")) == NAMES


def _code_lines(code) -> set[int]:
    lines = {line for _, _, line in code.co_lines() if line is not None}
    return lines.union(*(_code_lines(c) for c in code.co_consts if inspect.iscode(c)))


@pytest.mark.parametrize("name", ["slow_add", "elementwise_fn_loop", "elementwise_if_else"])
def test_generated_code_is_located_at_the_users_lines(name):
    # a template filled with no location kept its own (line 1): a traceback through that code,
    # or a hoisted node's report line, pointed at the first line of the user's file
    fn = importlib.import_module(f"examples.{name}").naive
    rewritten, changed = rewrite_function(fn, Report(fn.__qualname__, "", 0))
    source, start = inspect.getsourcelines(fn)
    assert changed and _code_lines(rewritten.__code__) <= set(range(start, start + len(source)))
